//! Unit gangs: a replica made of several parts with different per-node asks (e.g. one
//! prefill worker of 8 GPUs and two decode workers of 4), placed all or nothing.
//!
//! A unit goes inside one NVLink domain when one holds it (cheapest tier first, then the
//! fullest domain that does: best fit). Otherwise it goes under the lowest network node that
//! holds it in the cheapest cost tiers, each worker (a part's `segment` of nodes) inside one
//! domain. Parts are fitted largest per-node ask first, each worker into the first domain that
//! takes it (the cheapest, then the fullest, first) and onto its fullest nodes. Several
//! workers of one unit may share a node when its devices allow (two decode workers on one
//! 8-GPU host). The search tries a bounded number of domains and network nodes, each fit
//! looks at a bounded number of domains, and a failed worker ends a try: beyond one walk over
//! the model's domains and the topology (as a multi-domain gang's), its cost does not grow
//! with the fleet.

use crate::engine::{index_of, Engine, Free, NodeSlot, Unplaceable};
use crate::gang::{lowest_bits, GangPlacement, Quality};
use model::{GangRequest, Resources, TopoId};
use rustc_hash::FxHashMap;

/// Single domains tried, per cost tier, before looking under network nodes.
const DOMAIN_TRIES: usize = 64;
/// Network nodes tried.
const NETWORK_TRIES: usize = 16;
/// Domains one network node's fit looks at (the cheapest and fullest first).
const DOMAINS_PER_CANDIDATE: usize = 512;

/// One worker to place: `nodes` nodes of one ask, in one domain.
#[derive(Clone, Copy)]
struct Worker {
    part: usize,
    nodes: u32,
    ask: Resources,
}

impl Engine {
    /// Decides where a unit gang would go, using only domains for which `allowed` holds.
    pub(crate) fn plan_unit_in(
        &self,
        request: &GangRequest,
        allowed: &dyn Fn(TopoId) -> bool,
    ) -> Result<GangPlacement, Unplaceable> {
        let m = request.gpu.index();
        if self.model_domains[m].is_empty() {
            return Err(Unplaceable::new(format!(
                "the fleet has no {} nodes",
                request.gpu
            )));
        }
        let workers = workers_of(request);
        // The node shapes of the model (few: domains are homogeneous).
        let mut shapes: Vec<Resources> = Vec::new();
        for &d in &self.model_domains[m] {
            let c = self.domains[d as usize].capacity;
            if !shapes.contains(&c) {
                shapes.push(c);
            }
        }
        for w in &workers {
            if !shapes.iter().any(|c| c.holds(&w.ask)) {
                return Err(Unplaceable::new(format!(
                    "part {} asks {} GPUs, {} CPU millicores and {} MiB per node; no {} node is that large",
                    w.part + 1,
                    w.ask.gpus,
                    w.ask.cpu_millis,
                    w.ask.memory_mib,
                    request.gpu
                )));
            }
        }
        let total = u32::try_from(request.total_gpus()).unwrap_or(u32::MAX);
        for tier in 0..self.model_tiers[m] {
            let fullest_first = self.by_free_gpus[index_of(request.gpu, tier)].range((total, 0)..);
            for &(_, d) in fullest_first.take(DOMAIN_TRIES) {
                if !allowed(self.domains[d as usize].topo) {
                    continue;
                }
                if let Some(slots) = self.fit_workers(request, &workers, &[d]) {
                    return Ok(self.unit_placement(request, slots));
                }
            }
        }
        self.plan_unit_under_network(request, &workers, total, allowed)
    }

    /// The unit under the lowest network node whose domains hold it, in its cheapest cost
    /// tiers.
    fn plan_unit_under_network(
        &self,
        request: &GangRequest,
        workers: &[Worker],
        total: u32,
        allowed: &dyn Fn(TopoId) -> bool,
    ) -> Result<GangPlacement, Unplaceable> {
        let topo = self.fleet.topo();
        let m = request.gpu.index();
        let tiers = usize::from(self.model_tiers[m]).max(1);
        let smallest = workers.iter().map(|w| w.ask.gpus).min().unwrap_or_default();
        // Free GPUs per (topology node, cost tier), over the domains that could help.
        let mut room = vec![0u32; topo.len() * tiers];
        let mut useful: Vec<(u8, u32, u32)> = Vec::new();
        for &d in &self.model_domains[m] {
            let ds = &self.domains[d as usize];
            if ds.free_gpus < u32::from(smallest) || !allowed(ds.topo) {
                continue;
            }
            let tier = ds.tier.min(tiers as u8 - 1);
            useful.push((tier, ds.free_gpus, d));
            for &t in self.domain_chain[d as usize].iter() {
                let r = &mut room[t as usize * tiers + usize::from(tier)];
                *r = r.saturating_add(ds.free_gpus);
            }
        }
        // Network nodes only (one domain was tried already): the lowest first, then the
        // cheapest tiers that hold the unit, then the least room (best fit).
        let mut candidates: Vec<(u8, u8, u32, usize)> = Vec::new();
        for t in 0..topo.len() {
            if self.topo_height[t] == 0 || !self.within_zone(topo[t].kind) {
                continue;
            }
            let mut sum = 0u32;
            for k in 0..tiers {
                sum = sum.saturating_add(room[t * tiers + k]);
                if sum >= total {
                    candidates.push((self.topo_height[t], k as u8, sum, t));
                    break;
                }
            }
        }
        candidates.sort_unstable();
        useful.sort_unstable();
        for &(_, max_tier, _, t) in candidates.iter().take(NETWORK_TRIES) {
            let range = topo[t].domains.clone();
            // The cheapest, then the fullest, domains first; a bounded number of them.
            let inside: Vec<u32> = useful
                .iter()
                .filter(|(tier, _, d)| *tier <= max_tier && range.contains(d))
                .map(|&(_, _, d)| d)
                .take(DOMAINS_PER_CANDIDATE)
                .collect();
            if let Some(slots) = self.fit_workers(request, workers, &inside) {
                return Ok(self.unit_placement(request, slots));
            }
        }
        let best = candidates.first().map(|&(_, _, r, t)| (r, t));
        let mut u = Unplaceable::new(if !self.explain {
            String::new()
        } else {
            match best {
                Some((r, t)) => format!(
                    "needs its {} GPUs ({} parts) inside one NVLink domain or under one network node; \
                     {} {} has {r} free but not in the shapes the parts ask",
                    request.total_gpus(),
                    request.parts.len(),
                    self.level_label(TopoId(t as u32)),
                    self.path(TopoId(t as u32))
                ),
                None => format!(
                    "needs its {} GPUs ({} parts) inside one NVLink domain or under one network node; none has that many free",
                    request.total_gpus(),
                    request.parts.len()
                ),
            }
        });
        if self.explain {
            u.details.push(format!(
                "{} {} GPUs are free fleet-wide",
                self.open_free_gpus[request.gpu.index()],
                request.gpu
            ));
        }
        Err(u)
    }

    /// Fits every worker into `domains` (largest ask first, each into the fullest domain and
    /// onto the fullest nodes that take it), or `None`. Slots come back in part order.
    fn fit_workers(
        &self,
        request: &GangRequest,
        workers: &[Worker],
        domains: &[u32],
    ) -> Option<Vec<NodeSlot>> {
        // What earlier workers of this unit took, by node.
        let mut taken: FxHashMap<u32, Free> = FxHashMap::default();
        let free_of = |taken: &FxHashMap<u32, Free>, n: u32| {
            taken.get(&n).copied().unwrap_or(self.free[n as usize])
        };
        let mut order: Vec<usize> = (0..workers.len()).collect();
        order.sort_by_key(|&i| {
            let a = workers[i].ask;
            (
                std::cmp::Reverse((a.gpus, workers[i].nodes, a.cpu_millis, a.memory_mib)),
                i,
            )
        });
        let mut placed: Vec<Vec<NodeSlot>> = vec![Vec::new(); workers.len()];
        for i in order {
            let w = workers[i];
            let nodes_in = |d: u32, taken: &FxHashMap<u32, Free>| -> Vec<u32> {
                let ds = &self.domains[d as usize];
                let mut v: Vec<u32> = (ds.first_node..ds.end_node)
                    .filter(|&n| self.open(n) && free_of(taken, n).holds(&w.ask))
                    .collect();
                v.sort_by_key(|&n| (free_of(taken, n).gpus(), n));
                v
            };
            // The first domain that takes it, in the order given (cheapest, fullest first).
            let need = w.nodes.saturating_mul(u32::from(w.ask.gpus));
            let fit = domains.iter().find_map(|&d| {
                let ds = &self.domains[d as usize];
                if ds.node_count() < w.nodes || ds.free_gpus < need || !ds.capacity.holds(&w.ask) {
                    return None;
                }
                let fit = nodes_in(d, &taken);
                (fit.len() >= w.nodes as usize).then_some(fit)
            })?;
            for &n in fit.iter().take(w.nodes as usize) {
                let mut f = free_of(&taken, n);
                let mask = lowest_bits(f.gpu_mask, w.ask.gpus);
                f.gpu_mask &= !mask;
                f.cpu_millis -= w.ask.cpu_millis;
                f.memory_mib -= w.ask.memory_mib;
                taken.insert(n, f);
                placed[i].push(NodeSlot {
                    node: model::NodeId(n),
                    gpu_mask: mask,
                });
            }
        }
        let slots: Vec<NodeSlot> = placed.into_iter().flatten().collect();
        debug_assert_eq!(slots.len(), request.nodes as usize);
        Some(slots)
    }

    fn unit_placement(&self, request: &GangRequest, slots: Vec<NodeSlot>) -> GangPlacement {
        let mut used: Vec<u32> = slots
            .iter()
            .map(|s| self.node_domain[s.node.0 as usize])
            .collect();
        used.sort_unstable();
        used.dedup();
        let lca = self.common_ancestor(&used);
        let levels = self.topo_height[lca.0 as usize];
        let m = request.gpu.index();
        let domain_gpus = u64::from(self.model_max_domain[m])
            * u64::from(self.model_node_gpus[m].unwrap_or(request.gpus_per_node));
        let min_domains = request.total_gpus().div_ceil(domain_gpus.max(1)).max(1) as u32;
        let min_levels = u8::from(min_domains > 1);
        GangPlacement {
            slots,
            spares: Vec::new(),
            quality: Quality::new(
                used.len() as u32,
                min_domains,
                (levels, min_levels),
                self.path(lca),
            ),
        }
    }
}

/// A unit's workers, part by part.
fn workers_of(request: &GangRequest) -> Vec<Worker> {
    request
        .parts
        .iter()
        .enumerate()
        .flat_map(|(part, p)| {
            let ask = Resources {
                gpu_model: Some(request.gpu),
                gpus: p.gpus_per_node,
                cpu_millis: p.cpu_millis_per_node,
                memory_mib: p.memory_mib_per_node,
                disk_gib: 0,
            };
            let seg = p.segment.max(1);
            (0..p.nodes / seg).map(move |_| Worker {
                part,
                nodes: seg,
                ask,
            })
        })
        .collect()
}
