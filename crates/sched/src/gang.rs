//! Gang placement: all-or-nothing, topology-aware, best fit.
//!
//! A gang is cut into segments (Slurm's `--segment`): each segment lies inside one NVLink
//! domain. A gang that fits one domain is one segment. Otherwise segments default to whole
//! domains, and all segments go under the lowest network node that can hold them (never
//! across zones). Among candidates, the one with the least room that still fits wins (best
//! fit), so that whole free domains and whole free spines stay whole.

use crate::engine::{index_of, mask_of, Allocation, Engine, NodeSlot, Time, Unplaceable};
use model::{GangRequest, Resources, TopoId, TopoKind, WorkloadId};
use serde::Serialize;

/// How good a gang's placement is against the best possible on an empty fleet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Quality {
    /// NVLink domains the gang spans.
    pub domains_spanned: u32,
    /// Fewest domains it could span on an empty fleet.
    pub min_domains: u32,
    /// Height above the domains of the lowest element holding every node (0 = one domain).
    pub levels_spanned: u8,
    /// The same, at best, on an empty fleet.
    pub min_levels: u8,
    /// Path of the lowest element holding every node.
    pub common_ancestor: String,
    /// 1.0 = as compact as possible; lower is worse.
    pub score: f64,
}

impl Quality {
    /// The quality of spanning `domains_spanned` domains (at best `min_domains`) and
    /// `levels` = (levels spanned, fewest possible) under `common_ancestor`.
    pub(crate) fn new(
        domains_spanned: u32,
        min_domains: u32,
        levels: (u8, u8),
        common_ancestor: String,
    ) -> Quality {
        let (levels_spanned, min_levels) = levels;
        let score = f64::from(min_domains.min(domains_spanned))
            / f64::from(domains_spanned.max(1))
            / (1.0 + f64::from(levels_spanned.saturating_sub(min_levels)));
        Quality {
            domains_spanned,
            min_domains,
            levels_spanned,
            min_levels,
            common_ancestor,
            score,
        }
    }
}

/// A placed gang: one slot per node, in segment order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GangPlacement {
    /// Node and devices of each gang member.
    pub slots: Vec<NodeSlot>,
    /// Idle spare nodes in the gang's domains.
    pub spares: Vec<NodeSlot>,
    /// Placement quality.
    pub quality: Quality,
}

/// A gang request cut into segments.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Nodes per segment.
    seg: u32,
    /// Number of full segments.
    full: u32,
    /// Nodes of the last, shorter segment (0: none).
    rem: u32,
}

impl Shape {
    fn segments(&self) -> u32 {
        self.full + u32::from(self.rem > 0)
    }
}

/// Per-domain room for a request: eligible nodes.
struct Room {
    domain: u32,
    eligible: u32,
    tier: u8,
}

impl Engine {
    fn per_node_ask(request: &GangRequest) -> Resources {
        Resources {
            gpu_model: Some(request.gpu),
            gpus: request.gpus_per_node,
            cpu_millis: request.cpu_millis_per_node,
            memory_mib: request.memory_mib_per_node,
            disk_gib: 0,
        }
    }

    /// Nodes of domain `d` that can take `ask` now.
    fn eligible_nodes(&self, d: u32, ask: &Resources) -> u32 {
        let ds = &self.domains[d as usize];
        if !ds.capacity.holds(ask) {
            return 0;
        }
        if ask.gpus == ds.capacity.gpus {
            // A wholly free node has no work at all, so it holds any ask its capacity holds.
            return ds.whole_free;
        }
        if ds.free_gpus < u32::from(ask.gpus) {
            return 0;
        }
        (ds.first_node..ds.end_node)
            .filter(|&n| self.open(n) && self.free[n as usize].holds(ask))
            .count() as u32
    }

    fn shape(&self, request: &GangRequest) -> Result<Shape, Unplaceable> {
        let model = request.gpu;
        let max_dom = self.model_max_domain[model.index()];
        if request.nodes == 0 || request.gpus_per_node == 0 {
            return Err(Unplaceable::new(
                "a gang needs at least one node and at least one GPU per node",
            ));
        }
        if max_dom == 0 {
            return Err(Unplaceable::new(format!("the fleet has no {model} nodes")));
        }
        let seg = match request.segment {
            Some(0) => return Err(Unplaceable::new("segment must be at least 1 node")),
            Some(s) => s.min(request.nodes),
            None if request.nodes.saturating_add(request.spares) <= max_dom => request.nodes,
            None => max_dom,
        };
        if seg > max_dom {
            return Err(Unplaceable::new(format!(
                "segment of {seg} nodes is larger than the largest {model} NVLink domain ({max_dom} nodes)"
            )));
        }
        Ok(Shape {
            seg,
            full: request.nodes / seg,
            rem: request.nodes % seg,
        })
    }

    /// Decides where a gang would go, without changing anything.
    pub fn plan_gang(&self, request: &GangRequest) -> Result<GangPlacement, Unplaceable> {
        self.plan_gang_in(request, &|_| true)
    }

    /// Like [`Engine::plan_gang`], using only NVLink domains for which `allowed` holds (spread
    /// rules of inference services).
    pub fn plan_gang_in(
        &self,
        request: &GangRequest,
        allowed: &dyn Fn(TopoId) -> bool,
    ) -> Result<GangPlacement, Unplaceable> {
        debug_assert!(self.deferred.is_none(), "planning on unsettled domains");
        if request.is_unit() {
            return self.plan_unit_in(request, allowed);
        }
        if self.single_node_scored(request) {
            return self.plan_single(request, allowed);
        }
        if !request.models.is_empty() {
            // Each acceptable model in order of preference; the first that holds it wins.
            let mut first_err = None;
            for model in request.acceptable_models() {
                match self.plan_gang_in(&request.on_model(model), allowed) {
                    Ok(p) => return Ok(p),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            return Err(first_err.unwrap_or_else(|| Unplaceable::new("no model to try")));
        }
        let shape = self.shape(request)?;
        let ask = Self::per_node_ask(request);
        let biggest = self
            .domains_of(request)
            .map(|d| self.domains[d as usize].capacity);
        if !biggest.clone().any(|c| c.holds(&ask)) {
            let cap = biggest.map(|c| c.gpus).max().unwrap_or(0);
            return Err(Unplaceable::new(format!(
                "asks {} GPUs, {} CPU millicores and {} MiB per node; no {} node is that large (at most {} GPUs)",
                ask.gpus, ask.cpu_millis, ask.memory_mib, request.gpu, cap
            )));
        }
        let segments = if shape.full == 1 && shape.rem == 0 {
            vec![(self.best_single_domain(request, &ask, allowed)?, shape.seg)]
        } else {
            self.plan_segments(request, &ask, shape, allowed)?
        };
        let mut slots = Vec::with_capacity(request.nodes as usize);
        for (d, count) in &segments {
            self.pick_nodes(*d, &ask, *count, &mut slots);
        }
        let spares = self.pick_spares(request, &ask, &segments, &slots)?;
        let quality = self.quality(request, shape, &segments);
        Ok(GangPlacement {
            slots,
            spares,
            quality,
        })
    }

    fn domains_of<'a>(&'a self, request: &GangRequest) -> impl Iterator<Item = u32> + Clone + 'a {
        self.model_domains[request.gpu.index()].iter().copied()
    }

    /// The fullest domain that still holds the whole gang.
    fn best_single_domain(
        &self,
        request: &GangRequest,
        ask: &Resources,
        allowed: &dyn Fn(TopoId) -> bool,
    ) -> Result<u32, Unplaceable> {
        let m = request.gpu.index();
        // Spares live in the gang's own domain.
        let n = request.nodes.saturating_add(request.spares);
        let whole_node = self.model_node_gpus[m] == Some(ask.gpus);
        // Cheapest tier first; within a tier, the fullest domain that holds the gang.
        let found = (0..self.model_tiers[m]).find_map(|tier| {
            if whole_node {
                self.by_whole_free[index_of(request.gpu, tier)]
                    .range((n, 0)..)
                    .map(|&(_, d)| d)
                    .find(|&d| {
                        self.domains[d as usize].capacity.holds(ask)
                            && allowed(self.domains[d as usize].topo)
                    })
            } else {
                let need_gpus = n.saturating_mul(u32::from(ask.gpus));
                self.by_free_gpus[index_of(request.gpu, tier)]
                    .range((need_gpus, 0)..)
                    .map(|&(_, d)| d)
                    .find(|&d| {
                        self.eligible_nodes(d, ask) >= n && allowed(self.domains[d as usize].topo)
                    })
            }
        });
        found.ok_or_else(|| self.explain_single(request, ask))
    }

    fn explain_single(&self, request: &GangRequest, ask: &Resources) -> Unplaceable {
        if !self.explain {
            return Unplaceable::new("");
        }
        let mut best: Option<(u32, u32)> = None;
        let mut total = 0u64;
        for d in self.domains_of(request) {
            let e = self.eligible_nodes(d, ask);
            total += u64::from(e);
            if best.is_none_or(|(_, b)| e > b) {
                best = Some((d, e));
            }
        }
        let label = best.map_or_else(|| "NVLink".into(), |(d, _)| self.domain_label(d));
        let mut u = Unplaceable::new(match best {
            Some((d, e)) => format!(
                "needs {} {} nodes with {} free GPUs each in one {label} domain; best domain {} has {e}",
                request.nodes,
                request.gpu,
                ask.gpus,
                self.path(self.domains[d as usize].topo)
            ),
            None => format!("the fleet has no {} domains", request.gpu),
        });
        u.details.push(format!(
            "{total} such nodes are free fleet-wide, spread over domains that each have fewer"
        ));
        self.add_unschedulable_detail(request, &mut u);
        u.details
            .push("set a smaller `segment` to let the gang span several domains".into());
        u
    }

    fn add_unschedulable_detail(&self, request: &GangRequest, u: &mut Unplaceable) {
        let out: u64 = self
            .domains_of(request)
            .map(|d| {
                let ds = &self.domains[d as usize];
                u64::from(ds.node_count() - ds.open_nodes)
            })
            .sum();
        if out > 0 {
            u.details.push(format!(
                "{out} {} nodes are cordoned, draining, down or held",
                request.gpu
            ));
        }
    }

    /// Segments under the lowest network node that holds them all; best fit at each step.
    fn plan_segments(
        &self,
        request: &GangRequest,
        ask: &Resources,
        shape: Shape,
        allowed: &dyn Fn(TopoId) -> bool,
    ) -> Result<Vec<(u32, u32)>, Unplaceable> {
        let topo = self.fleet.topo();
        let mut full_room = vec![0u32; topo.len()];
        let mut rem_fits = vec![false; topo.len()];
        let mut touched: Vec<usize> = Vec::new();
        let mut rooms = Vec::new();
        // Per (topology node, cost tier): room for whole segments and for the shorter one.
        let tiers = usize::from(self.model_tiers[request.gpu.index()]);
        let mut tier_full = if tiers > 1 {
            vec![0u32; topo.len() * tiers]
        } else {
            Vec::new()
        };
        let mut tier_rem = vec![false; tier_full.len()];
        // A domain helps only with room for a segment, or for the shorter last one.
        let min_useful = if shape.rem > 0 {
            shape.rem.min(shape.seg)
        } else {
            shape.seg
        };
        let m = request.gpu.index();
        // Whole-node asks: the index of wholly free nodes lists exactly the useful domains
        // (few on a busy fleet); otherwise every domain of the model is looked at.
        let candidates: Vec<u32> = if self.model_node_gpus[m] == Some(ask.gpus) {
            (0..self.model_tiers[m])
                .flat_map(|tier| {
                    self.by_whole_free[index_of(request.gpu, tier)]
                        .range((min_useful, 0)..)
                        .map(|&(_, d)| d)
                })
                .collect()
        } else {
            self.domains_of(request).collect()
        };
        for d in candidates {
            if !allowed(self.domains[d as usize].topo) {
                continue;
            }
            let eligible = self.eligible_nodes(d, ask);
            if eligible < min_useful {
                continue;
            }
            let full = eligible / shape.seg;
            let rem_ok = shape.rem > 0 && eligible % shape.seg >= shape.rem;
            let tier = if tiers > 1 {
                self.domains[d as usize].tier
            } else {
                0
            };
            rooms.push(Room {
                domain: d,
                eligible,
                tier,
            });
            for &t in self.domain_chain[d as usize].iter() {
                let t = t as usize;
                if full_room[t] == 0 && !rem_fits[t] {
                    touched.push(t);
                }
                full_room[t] += full;
                rem_fits[t] |= rem_ok;
                if tiers > 1 {
                    tier_full[t * tiers + usize::from(tier)] += full;
                    tier_rem[t * tiers + usize::from(tier)] |= rem_ok;
                }
            }
        }
        let fits = |f: u32, rem: bool| {
            f >= shape.full + u32::from(shape.rem > 0) || (f >= shape.full && rem)
        };
        // The cheapest tiers (0..=k) whose capacity alone holds the gang under `t`, and the
        // room they leave.
        let cheapest = |t: usize| -> Option<(u8, u32)> {
            if tiers <= 1 {
                return fits(full_room[t], rem_fits[t]).then_some((0, full_room[t]));
            }
            let (mut f, mut rem) = (0u32, false);
            for k in 0..tiers {
                f += tier_full[t * tiers + k];
                rem |= tier_rem[t * tiers + k];
                if fits(f, rem) {
                    return Some((k as u8, f));
                }
            }
            None
        };
        // Lowest height first (topology), then the cheapest tiers (cost), then the least room
        // (best fit), then tree order.
        let mut best: Option<(u8, u8, u32, usize)> = None;
        for &t in &touched {
            if (full_room[t] == 0 && !rem_fits[t]) || !self.within_zone(topo[t].kind) {
                continue;
            }
            let Some((tier, room)) = cheapest(t) else {
                continue;
            };
            let key = (self.topo_height[t], tier, room, t);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        let Some((_, max_tier, _, root)) = best else {
            return Err(self.explain_segments(request, ask, shape, &full_room));
        };
        let range = topo[root].domains.clone();
        let mut inside: Vec<&Room> = rooms
            .iter()
            .filter(|r| range.contains(&r.domain) && r.tier <= max_tier)
            .collect();
        inside.sort_by_key(|r| (r.tier, r.eligible, r.domain));
        let mut segments: Vec<(u32, u32)> = Vec::with_capacity(shape.segments() as usize);
        let mut taken = vec![0u32; inside.len()];
        let mut left = shape.full;
        for (i, r) in inside.iter().enumerate() {
            if left == 0 {
                break;
            }
            let k = (r.eligible / shape.seg).min(left);
            for _ in 0..k {
                segments.push((r.domain, shape.seg));
            }
            taken[i] = k * shape.seg;
            left -= k;
        }
        if shape.rem > 0 {
            // The shorter segment goes where it leaves the least room unused.
            let pick = inside
                .iter()
                .enumerate()
                .filter(|(i, r)| r.eligible - taken[*i] >= shape.rem)
                .min_by_key(|(i, r)| (r.tier, r.eligible - taken[*i], r.domain));
            match pick {
                Some((_, r)) => segments.push((r.domain, shape.rem)),
                None => return Err(self.explain_segments(request, ask, shape, &full_room)),
            }
        }
        if left > 0 {
            return Err(self.explain_segments(request, ask, shape, &full_room));
        }
        // Several segments in one domain become one run of nodes.
        segments.sort_by_key(|&(d, _)| d);
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(segments.len());
        for (d, c) in segments {
            match merged.last_mut() {
                Some((ld, lc)) if *ld == d => *lc += c,
                _ => merged.push((d, c)),
            }
        }
        Ok(merged)
    }

    pub(crate) fn within_zone(&self, kind: TopoKind) -> bool {
        matches!(
            kind,
            TopoKind::Zone | TopoKind::Network { .. } | TopoKind::Domain
        )
    }

    fn explain_segments(
        &self,
        request: &GangRequest,
        ask: &Resources,
        shape: Shape,
        full_room: &[u32],
    ) -> Unplaceable {
        if !self.explain {
            return Unplaceable::new("");
        }
        let topo = self.fleet.topo();
        let label = self
            .domains_of(request)
            .find(|&d| self.domains[d as usize].node_count() >= shape.seg)
            .map_or_else(|| "NVLink".into(), |d| self.domain_label(d));
        let whole = self
            .domains_of(request)
            .next()
            .is_some_and(|d| self.domains[d as usize].node_count() == shape.seg);
        let need = shape.segments();
        let mut best_zone: Option<(u32, usize)> = None;
        let mut best_net: Option<(u32, usize)> = None;
        for (t, node) in topo.iter().enumerate() {
            let slot = match node.kind {
                TopoKind::Zone => &mut best_zone,
                TopoKind::Network { .. } => &mut best_net,
                _ => continue,
            };
            if slot.is_none_or(|(r, _)| full_room[t] > r) {
                *slot = Some((full_room[t], t));
            }
        }
        let gpu = request.gpu;
        let what = match (whole, shape.rem > 0) {
            (true, false) => format!("{need} whole {label} domains of {gpu} nodes"),
            (true, true) => format!(
                "{} whole {label} domains of {gpu} nodes plus {} in one more domain",
                shape.full,
                plural(shape.rem, "node")
            ),
            (false, false) => format!(
                "{need} segments of {} {gpu} nodes, each inside one {label} domain",
                shape.seg
            ),
            (false, true) => format!(
                "{} segments of {} {gpu} nodes plus one of {}, each inside one {label} domain",
                shape.full,
                shape.seg,
                plural(shape.rem, "node")
            ),
        };
        let mut reason = format!(
            "needs {what}, all under one network node, with {} free GPUs per node",
            ask.gpus
        );
        match best_net.or(best_zone) {
            Some((r, t)) => reason.push_str(&format!(
                "; best {} {} has room for {r}",
                self.level_label(TopoId(t as u32)),
                self.path(TopoId(t as u32))
            )),
            None => reason.push_str("; no network node has any"),
        }
        let mut u = Unplaceable::new(reason);
        if let Some((r, t)) = best_zone {
            u.details.push(format!(
                "gangs never span zones; best zone {} has room for {r}",
                self.path(TopoId(t as u32))
            ));
        }
        self.add_unschedulable_detail(request, &mut u);
        u
    }

    /// Chooses `count` nodes in domain `d` for `ask`: wholly free nodes in order for
    /// whole-node asks; otherwise the nodes with the fewest free devices that fit.
    fn pick_nodes(&self, d: u32, ask: &Resources, count: u32, out: &mut Vec<NodeSlot>) {
        let ds = &self.domains[d as usize];
        let full = mask_of(ds.capacity.gpus);
        let usable = |n: &u32| self.open(*n) && self.free[*n as usize].holds(ask);
        if ask.gpus == ds.capacity.gpus {
            out.extend(
                (ds.first_node..ds.end_node)
                    .filter(|n| usable(n) && self.free[*n as usize].gpu_mask == full)
                    .take(count as usize)
                    .map(|n| NodeSlot {
                        node: model::NodeId(n),
                        gpu_mask: full,
                    }),
            );
            return;
        }
        let mut cands: Vec<u32> = (ds.first_node..ds.end_node).filter(usable).collect();
        cands.sort_by_key(|&n| (self.free[n as usize].gpus(), n));
        out.extend(cands.into_iter().take(count as usize).map(|n| NodeSlot {
            node: model::NodeId(n),
            gpu_mask: lowest_bits(self.free[n as usize].gpu_mask, ask.gpus),
        }));
    }

    /// Spare nodes in the domains a gang uses, taken round-robin over those domains.
    fn pick_spares(
        &self,
        request: &GangRequest,
        ask: &Resources,
        segments: &[(u32, u32)],
        slots: &[NodeSlot],
    ) -> Result<Vec<NodeSlot>, Unplaceable> {
        if request.spares == 0 {
            return Ok(Vec::new());
        }
        let taken: rustc_hash::FxHashSet<u32> = slots.iter().map(|s| s.node.0).collect();
        let mut per_domain: Vec<Vec<NodeSlot>> = segments
            .iter()
            .map(|(d, _)| {
                let ds = &self.domains[*d as usize];
                let full = mask_of(ds.capacity.gpus);
                let whole = ask.gpus == ds.capacity.gpus;
                (ds.first_node..ds.end_node)
                    .filter(|n| !taken.contains(n) && self.open(*n))
                    .filter(|n| {
                        let f = &self.free[*n as usize];
                        f.holds(ask) && (!whole || f.gpu_mask == full)
                    })
                    .map(|n| NodeSlot {
                        node: model::NodeId(n),
                        gpu_mask: lowest_bits(self.free[n as usize].gpu_mask, ask.gpus),
                    })
                    .rev()
                    .collect()
            })
            .collect();
        let mut spares = Vec::with_capacity(request.spares as usize);
        while spares.len() < request.spares as usize {
            let before = spares.len();
            for cands in per_domain.iter_mut() {
                if spares.len() == request.spares as usize {
                    break;
                }
                if let Some(s) = cands.pop() {
                    spares.push(s);
                }
            }
            if spares.len() == before {
                let max_dom = self.model_max_domain[request.gpu.index()];
                return Err(Unplaceable::new(format!(
                    "needs {} spare nodes inside its NVLink domains; its best placement leaves room for {}; \
                     a segment smaller than the domain (e.g. segment = {}) leaves room in each domain",
                    request.spares,
                    before,
                    max_dom.saturating_sub(1).max(1)
                )));
            }
        }
        Ok(spares)
    }

    pub(crate) fn commit_gang(
        &mut self,
        id: WorkloadId,
        request: &GangRequest,
        placement: &GangPlacement,
        now: Time,
    ) {
        // Work that accepts several models records the one it got.
        let placed_model = placement
            .slots
            .first()
            .and_then(|s| self.fleet.nodes()[s.node.0 as usize].capacity.gpu_model);
        let request = &match placed_model {
            Some(m) if !request.models.is_empty() => request.placed_on(m),
            _ => request.clone(),
        };
        let per_node = Self::per_node_ask(request);
        let all: Vec<NodeSlot> = placement
            .slots
            .iter()
            .chain(&placement.spares)
            .copied()
            .collect();
        self.charge_slots(id, &all, request, &per_node, true);
        self.allocations.insert(
            id,
            Allocation::Gang {
                request: request.clone(),
                slots: placement.slots.clone(),
                spares: placement.spares.clone(),
                per_node,
                placed_at: now,
            },
        );
    }

    fn quality(&self, request: &GangRequest, shape: Shape, segments: &[(u32, u32)]) -> Quality {
        let max_dom = self.model_max_domain[request.gpu.index()];
        let per_domain = (max_dom / shape.seg).max(1);
        let mut min_domains = shape.full.div_ceil(per_domain);
        if shape.rem > 0 {
            let used_last = shape.full % per_domain;
            let leftover = if shape.full == 0 {
                0
            } else if used_last == 0 {
                max_dom - per_domain * shape.seg
            } else {
                max_dom - used_last * shape.seg
            };
            if leftover < shape.rem {
                min_domains += 1;
            }
        }
        let used: Vec<u32> = segments.iter().map(|(d, _)| *d).collect();
        let lca = self.common_ancestor(&used);
        let levels = self.topo_height[lca.0 as usize];
        let min_levels = self.min_levels(request, shape);
        Quality::new(
            segments.len() as u32,
            min_domains,
            (levels, min_levels),
            self.path(lca),
        )
    }

    /// The lowest topology node whose subtree holds every one of `domains`.
    pub(crate) fn common_ancestor(&self, domains: &[u32]) -> TopoId {
        let (Some(&lo), Some(&hi)) = (domains.iter().min(), domains.iter().max()) else {
            return TopoId(0);
        };
        self.fleet
            .ancestors(self.domains[lo as usize].topo)
            .find(|a| self.fleet.topo_node(*a).domains.contains(&hi))
            .unwrap_or(TopoId(0))
    }

    /// Lowest height at which an empty fleet could hold the gang.
    fn min_levels(&self, request: &GangRequest, shape: Shape) -> u8 {
        if shape.segments() == 1 {
            return 0; // one segment always fits one domain of an empty fleet
        }
        let key = (request.gpu.index(), shape.seg, shape.full, shape.rem);
        if let Some(h) = self.min_levels_cache.borrow().get(&key) {
            return *h;
        }
        let topo = self.fleet.topo();
        let mut room = vec![0u32; topo.len()];
        let mut rem_fits = vec![false; topo.len()];
        for d in self.domains_of(request) {
            let n = self.domains[d as usize].node_count();
            for &t in self.domain_chain[d as usize].iter() {
                room[t as usize] += n / shape.seg;
                rem_fits[t as usize] |= shape.rem > 0 && n % shape.seg >= shape.rem;
            }
        }
        let h = (0..topo.len())
            .filter(|&t| {
                room[t] >= shape.full + u32::from(shape.rem > 0)
                    || (room[t] >= shape.full && rem_fits[t])
            })
            .map(|t| self.topo_height[t])
            .min()
            .unwrap_or(0);
        self.min_levels_cache.borrow_mut().insert(key, h);
        h
    }
}

/// The `count` lowest set bits of `mask`.
pub(crate) fn lowest_bits(mut mask: u32, count: u8) -> u32 {
    let mut out = 0;
    for _ in 0..count {
        let bit = mask & mask.wrapping_neg();
        out |= bit;
        mask &= !bit;
    }
    out
}

/// "1 node", "2 nodes".
pub(crate) fn plural(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
