//! Engine state: what is free on every node, per-domain counters and their indexes, live
//! allocations, node states. Placement itself lives in `gang.rs` and `sandbox.rs`.

use crate::gang::GangPlacement;
use crate::sandbox::{SandboxPlacement, SandboxRun};
use crate::share::{NodeScore, SharedDevice};
use model::{
    Fleet, GangRequest, GpuModel, NodeId, NodeState, PricingKind, Resources, SandboxRequest,
    TopoId, TopoKind, WorkloadId,
};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

mod books;
mod holds;
mod invariants;

/// Virtual or wall time in seconds, always given by the caller.
pub type Time = u64;

/// The per-node ask of each of a gang's slots, spares after them: the parts' asks for a unit
/// (which has no spares), else `per_node` for every slot.
pub(crate) fn slot_asks<'a>(
    request: &'a GangRequest,
    per_node: &'a Resources,
) -> impl Iterator<Item = Resources> + 'a {
    let uniform = (!request.is_unit()).then_some(*per_node);
    request
        .is_unit()
        .then(|| request.node_asks())
        .into_iter()
        .flatten()
        .chain(uniform.into_iter().flat_map(std::iter::repeat))
}

/// Marks "no domain" in per-node domain indexes.
pub(crate) const NO_DOMAIN: u32 = u32::MAX;

/// Free resources of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Free {
    /// Bit i set: device i is free.
    pub gpu_mask: u32,
    pub cpu_millis: u32,
    pub memory_mib: u32,
}

impl Free {
    fn full(cap: &Resources) -> Free {
        Free {
            gpu_mask: mask_of(cap.gpus),
            cpu_millis: cap.cpu_millis,
            memory_mib: cap.memory_mib,
        }
    }

    pub fn gpus(&self) -> u32 {
        self.gpu_mask.count_ones()
    }

    pub fn holds(&self, ask: &Resources) -> bool {
        self.gpus() >= u32::from(ask.gpus)
            && self.cpu_millis >= ask.cpu_millis
            && self.memory_mib >= ask.memory_mib
    }
}

pub(crate) fn mask_of(gpus: u8) -> u32 {
    if gpus >= 32 {
        u32::MAX
    } else {
        (1u32 << gpus) - 1
    }
}

/// Counters of one NVLink domain, over its schedulable nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DomainState {
    pub topo: TopoId,
    pub model: GpuModel,
    pub first_node: u32,
    pub end_node: u32,
    /// What one node of the domain offers (domains are homogeneous).
    pub capacity: Resources,
    pub free_gpus: u32,
    pub whole_free: u32,
    /// Nodes that take new work (ready and not held).
    pub open_nodes: u32,
    /// Cost tier of its capacity pool: 0 committed (already paid for), then on-demand and
    /// spot pools from the cheapest GPU-hour up. Placement tries lower tiers first.
    pub tier: u8,
    /// The keys under which the domain currently sits in the two indexes.
    indexed_free_gpus: u32,
    indexed_whole_free: u32,
}

impl DomainState {
    pub fn node_count(&self) -> u32 {
        self.end_node - self.first_node
    }
}

/// One node's share of a gang: which node and which devices on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSlot {
    /// The node.
    pub node: NodeId,
    /// Devices taken (bit i = device i).
    pub gpu_mask: u32,
}

/// What a live workload holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Allocation {
    /// A gang: the same per-node ask on each node.
    Gang {
        /// What was asked.
        request: GangRequest,
        /// Where it runs.
        slots: Vec<NodeSlot>,
        /// Idle spares in its domains (reserved for it, replacing failed slots).
        spares: Vec<NodeSlot>,
        /// CPU and memory taken per node.
        per_node: Resources,
        /// When it was placed.
        placed_at: Time,
    },
    /// A sandbox batch: runs of consecutive sandbox indices per host.
    Sandboxes {
        /// What was asked.
        request: SandboxRequest,
        /// Where they run.
        runs: Vec<SandboxRun>,
        /// Bit i set: sandbox i is still live.
        live: Vec<u64>,
        /// Number of live sandboxes.
        live_count: u32,
        /// When it was placed.
        placed_at: Time,
    },
}

/// Why a workload cannot be placed now, in words a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{reason}")]
pub struct Unplaceable {
    /// One sentence: the constraint, and the best candidate measured against it.
    pub reason: String,
    /// Further facts (nodes out of service, fleet-wide free capacity, ...).
    pub details: Vec<String>,
}

impl Unplaceable {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Unplaceable {
            reason: reason.into(),
            details: Vec::new(),
        }
    }
}

/// Errors of engine operations other than placement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The id is not a live workload.
    #[error("workload {0} is not placed")]
    UnknownWorkload(WorkloadId),
    /// The id is already live.
    #[error("workload {0} is already placed")]
    DuplicateWorkload(WorkloadId),
    /// A sandbox index outside the batch, or a gang id given where a batch is expected.
    #[error("workload {id}: {reason}")]
    BadRelease {
        /// The workload.
        id: WorkloadId,
        /// What is wrong.
        reason: String,
    },
    /// A placement that could not be made.
    #[error(transparent)]
    Unplaceable(#[from] Unplaceable),
}

/// What a state change applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One node.
    Node(NodeId),
    /// Every node under a topology element (domain, block, spine, zone, region, cloud).
    Subtree(TopoId),
}

/// Result of a cordon / drain / down / ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateChange {
    /// Nodes whose state changed.
    pub nodes_changed: u32,
    /// Live workloads with at least one node in the scope, sorted.
    pub affected: Vec<WorkloadId>,
}

/// Most cost tiers placement tells apart (pricier pools share the last one).
pub(crate) const MAX_TIERS: u8 = 8;

/// The position of a (GPU model, cost tier) pair's index.
pub(crate) fn index_of(model: GpuModel, tier: u8) -> usize {
    model.index() * usize::from(MAX_TIERS) + usize::from(tier)
}

/// Each pool's cost tier: committed capacity (already paid for) is tier 0; on-demand and spot
/// pools follow from the cheapest price per GPU-hour (per node-hour for CPU hosts) up.
pub(crate) fn cost_tiers(fleet: &Fleet) -> Vec<u8> {
    let mut units = vec![0u64; fleet.pools().len()];
    for n in fleet.nodes() {
        let u = &mut units[n.pool.0 as usize];
        *u = (*u).max(u64::from(n.capacity.gpus).max(1));
    }
    let unit_price = |i: usize| fleet.pools()[i].price_per_hour / units[i].max(1) as f64;
    let mut paid: Vec<f64> = (0..fleet.pools().len())
        .filter(|&i| fleet.pools()[i].pricing != PricingKind::Committed)
        .map(unit_price)
        .collect();
    paid.sort_by(f64::total_cmp);
    paid.dedup();
    (0..fleet.pools().len())
        .map(|i| {
            if fleet.pools()[i].pricing == PricingKind::Committed {
                return 0;
            }
            let rank = paid.partition_point(|p| *p < unit_price(i));
            (rank + 1).min(usize::from(MAX_TIERS - 1)) as u8
        })
        .collect()
}

/// The placement engine. See the crate documentation for its invariants.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Engine {
    pub(crate) fleet: Fleet,
    pub(crate) free: Vec<Free>,
    pub(crate) node_domain: Vec<u32>,
    pub(crate) domains: Vec<DomainState>,
    /// Per GPU model: domain indices of that model, in pre-order.
    pub(crate) model_domains: Vec<Vec<u32>>,
    /// Per GPU model: largest domain in nodes.
    pub(crate) model_max_domain: Vec<u32>,
    /// Per GPU model: devices per node when every node of that model has the same count.
    pub(crate) model_node_gpus: Vec<Option<u8>>,
    /// Per GPU model and cost tier (`index_of`): (free GPUs on schedulable nodes, domain).
    pub(crate) by_free_gpus: Vec<BTreeSet<(u32, u32)>>,
    /// Per GPU model and cost tier (`index_of`): (wholly free schedulable nodes, domain).
    pub(crate) by_whole_free: Vec<BTreeSet<(u32, u32)>>,
    /// Per GPU model: cost tiers in use (highest tier + 1).
    pub(crate) model_tiers: Vec<u8>,
    /// Per GPU model: free GPUs on nodes that take new work (the sum of the domains' counts).
    pub(crate) open_free_gpus: Vec<u64>,
    /// Height of each topology node above the domains (domain = 0).
    pub(crate) topo_height: Vec<u8>,
    /// Per domain index: the domain and its ancestors up to and including its zone (the
    /// multi-domain search walks these for every candidate domain).
    pub(crate) domain_chain: Vec<Box<[u32]>>,
    /// Lowest height at which an empty fleet holds a shape: (model, segment, full segments,
    /// last segment) → height. Depends only on the fleet's structure.
    #[serde(skip)]
    pub(crate) min_levels_cache: std::cell::RefCell<FxHashMap<(usize, u32, u32, u32), u8>>,
    pub(crate) allocations: FxHashMap<WorkloadId, Allocation>,
    /// Live workloads on each node (short lists).
    pub(crate) node_work: Vec<Vec<WorkloadId>>,
    /// CPU-only hosts that take sandboxes, in fleet order.
    pub(crate) cpu_hosts: Vec<u32>,
    /// Bit i: `cpu_hosts[i]` is schedulable and has some CPU and memory free.
    pub(crate) host_room: Vec<u64>,
    /// Where the next sandbox search starts (next-fit keeps batches cheap).
    pub(crate) host_cursor: usize,
    /// Holds on each node (reservations, preemption, spread rules): a held node takes no
    /// new work until every hold is lifted.
    pub(crate) holds: Vec<u16>,
    /// Whether a failed plan writes its explanation (a queue pass turns this off and asks
    /// later, only for the jobs someone asks about).
    pub(crate) explain: bool,
    /// While tentative releases and reinstates are batched (preemption and reservation
    /// probes): domains whose counters and index entries are not brought up to date until
    /// [`Engine::settle`]. Many probe steps touch a domain and undo it again.
    pub(crate) deferred: Option<Vec<u32>>,
    /// Devices partly taken by GPU shares, per node (only nodes that have some).
    #[serde(default)]
    pub(crate) shared: FxHashMap<u32, Vec<SharedDevice>>,
    /// Per GPU model: (room in thousandths, node, device) of every partly used device with
    /// room left, so the tightest device that fits a share is a range query.
    #[serde(default)]
    pub(crate) share_room: Vec<BTreeSet<(u16, u32, u8)>>,
    /// How single-node work chooses its node and device.
    #[serde(default)]
    pub(crate) node_score: NodeScore,
}

impl Engine {
    /// Creates an engine over an empty fleet (nothing placed).
    pub fn new(fleet: Fleet) -> Engine {
        let nodes = fleet.nodes();
        let free: Vec<Free> = nodes.iter().map(|n| Free::full(&n.capacity)).collect();
        let mut node_domain = vec![NO_DOMAIN; nodes.len()];
        let mut domains = Vec::with_capacity(fleet.domains().len());
        let models = GpuModel::ALL.len();
        let mut model_domains = vec![Vec::new(); models];
        let mut model_max_domain = vec![0u32; models];
        let mut model_node_gpus: Vec<Option<Option<u8>>> = vec![None; models];
        let pool_tier = cost_tiers(&fleet);
        let mut model_tiers = vec![1u8; models];
        for (i, &d) in fleet.domains().iter().enumerate() {
            let t = fleet.topo_node(d);
            let first = &nodes[t.nodes.start as usize];
            let Some(model) = first.capacity.gpu_model else {
                continue; // builder guarantees domains hold GPU nodes
            };
            for n in t.nodes.clone() {
                node_domain[n as usize] = i as u32;
            }
            model_domains[model.index()].push(i as u32);
            let uniform = &mut model_node_gpus[model.index()];
            *uniform = match *uniform {
                None => Some(Some(first.capacity.gpus)),
                Some(Some(g)) if g == first.capacity.gpus => Some(Some(g)),
                Some(_) => Some(None),
            };
            let count = t.nodes.end - t.nodes.start;
            model_max_domain[model.index()] = model_max_domain[model.index()].max(count);
            let tier = pool_tier[first.pool.0 as usize];
            model_tiers[model.index()] = model_tiers[model.index()].max(tier + 1);
            domains.push(DomainState {
                topo: d,
                tier,
                model,
                first_node: t.nodes.start,
                end_node: t.nodes.end,
                capacity: first.capacity,
                free_gpus: 0,
                whole_free: 0,
                open_nodes: 0,
                indexed_free_gpus: 0,
                indexed_whole_free: 0,
            });
        }
        // Heights: a parent is one above its highest child; pre-order lets us go backwards.
        let topo = fleet.topo();
        let mut topo_height = vec![0u8; topo.len()];
        for i in (1..topo.len()).rev() {
            if let Some(p) = topo[i].parent {
                let h = topo_height[i].saturating_add(1);
                let ph = &mut topo_height[p.0 as usize];
                *ph = (*ph).max(h);
            }
        }
        let cpu_hosts: Vec<u32> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.capacity.gpus == 0)
            .map(|(i, _)| i as u32)
            .collect();
        let within_zone = |k: TopoKind| {
            matches!(
                k,
                TopoKind::Zone | TopoKind::Network { .. } | TopoKind::Domain
            )
        };
        let domain_chain = domains
            .iter()
            .map(|d| {
                fleet
                    .ancestors(d.topo)
                    .take_while(|a| within_zone(fleet.topo_node(*a).kind))
                    .map(|a| a.0)
                    .collect()
            })
            .collect();
        let mut engine = Engine {
            domain_chain,
            min_levels_cache: Default::default(),
            node_work: vec![Vec::new(); nodes.len()],
            host_room: vec![0; cpu_hosts.len().div_ceil(64)],
            cpu_hosts,
            host_cursor: 0,
            holds: vec![0; nodes.len()],
            explain: true,
            deferred: None,
            shared: FxHashMap::default(),
            share_room: vec![BTreeSet::new(); models],
            node_score: NodeScore::BestFit,
            free,
            node_domain,
            domains,
            model_domains,
            model_max_domain,
            model_node_gpus: model_node_gpus.into_iter().map(Option::flatten).collect(),
            by_free_gpus: vec![BTreeSet::new(); models * usize::from(MAX_TIERS)],
            by_whole_free: vec![BTreeSet::new(); models * usize::from(MAX_TIERS)],
            model_tiers,
            open_free_gpus: vec![0; models],
            topo_height,
            allocations: FxHashMap::default(),
            fleet,
        };
        for d in 0..engine.domains.len() {
            engine.recount_domain(d as u32);
            let ds = &engine.domains[d];
            let m = ds.model.index();
            let i = index_of(ds.model, ds.tier);
            engine.by_free_gpus[i].insert((ds.free_gpus, d as u32));
            engine.open_free_gpus[m] += u64::from(ds.free_gpus);
            engine.by_whole_free[i].insert((ds.whole_free, d as u32));
            let ds = &mut engine.domains[d];
            ds.indexed_free_gpus = ds.free_gpus;
            ds.indexed_whole_free = ds.whole_free;
        }
        for i in 0..engine.cpu_hosts.len() {
            engine.refresh_host_room(i);
        }
        engine
    }

    /// The fleet, with current node states.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Free resources of a node: (free GPU mask, free CPU millicores, free memory MiB).
    pub fn node_free(&self, id: NodeId) -> (u32, u32, u32) {
        let f = self.free[id.0 as usize];
        (f.gpu_mask, f.cpu_millis, f.memory_mib)
    }

    /// A live workload's allocation.
    pub fn allocation(&self, id: WorkloadId) -> Option<&Allocation> {
        self.allocations.get(&id)
    }

    /// Number of live workloads.
    pub fn live_workloads(&self) -> usize {
        self.allocations.len()
    }

    /// Live workloads on a node, sorted.
    pub fn workloads_on(&self, id: NodeId) -> Vec<WorkloadId> {
        let mut v = self.node_work[id.0 as usize].clone();
        v.sort_unstable();
        v
    }

    /// Total and free GPUs on schedulable nodes, fleet-wide.
    pub fn gpu_usage(&self) -> (u64, u64) {
        let mut total = 0u64;
        let mut free = 0u64;
        for (n, f) in self.fleet.nodes().iter().zip(&self.free) {
            total += u64::from(n.capacity.gpus);
            if n.state.schedulable() {
                free += u64::from(f.gpus());
            }
        }
        (total, free)
    }

    /// Total and free CPU millicores on CPU hosts, fleet-wide.
    pub fn cpu_host_usage(&self) -> (u64, u64) {
        let mut total = 0u64;
        let mut free = 0u64;
        for &h in &self.cpu_hosts {
            let n = &self.fleet.nodes()[h as usize];
            total += u64::from(n.capacity.cpu_millis);
            if n.state.schedulable() {
                free += u64::from(self.free[h as usize].cpu_millis);
            }
        }
        (total, free)
    }

    /// Number of NVLink domains whose every node is ready and wholly free.
    pub fn whole_free_domains(&self) -> u64 {
        self.domains
            .iter()
            .filter(|d| d.whole_free == d.node_count())
            .count() as u64
    }

    pub(crate) fn ensure_new(&self, id: WorkloadId) -> Result<(), EngineError> {
        if self.allocations.contains_key(&id) {
            Err(EngineError::DuplicateWorkload(id))
        } else {
            Ok(())
        }
    }

    /// Places a gang whole, or returns why not (and changes nothing).
    pub fn place_gang(
        &mut self,
        id: WorkloadId,
        request: &GangRequest,
        now: Time,
    ) -> Result<GangPlacement, EngineError> {
        self.place_gang_in(id, request, now, &|_| true)
    }

    /// Places a gang whole using only domains for which `allowed` holds (spread rules).
    pub fn place_gang_in(
        &mut self,
        id: WorkloadId,
        request: &GangRequest,
        now: Time,
        allowed: &dyn Fn(TopoId) -> bool,
    ) -> Result<GangPlacement, EngineError> {
        self.ensure_new(id)?;
        let placement = self.plan_gang_in(request, allowed)?;
        self.commit_planned(id, request, placement, now)
    }

    /// Takes what a plan of `request` (made on this very state) names, for workload `id`.
    pub(crate) fn commit_planned(
        &mut self,
        id: WorkloadId,
        request: &GangRequest,
        placement: GangPlacement,
        now: Time,
    ) -> Result<GangPlacement, EngineError> {
        self.ensure_new(id)?;
        // A plan short of nodes is a bug in a planner; it must never reach the state.
        let want = request.nodes as usize + request.spares as usize;
        if placement.slots.len() + placement.spares.len() != want {
            debug_assert!(false, "plan of {} slots for {want}", placement.slots.len());
            return Err(Unplaceable::new("internal: the plan is short of nodes").into());
        }
        self.commit_gang(id, request, &placement, now);
        Ok(placement)
    }

    /// Turns explanations of failed plans on or off (off: the error's reason is empty).
    pub fn set_explanations(&mut self, on: bool) {
        self.explain = on;
    }

    /// Why `request` cannot be placed now (None: it can), with explanations on.
    pub fn explain_gang(
        &self,
        request: &GangRequest,
        allowed: &dyn Fn(TopoId) -> bool,
    ) -> Option<Unplaceable> {
        if self.explain {
            return self.plan_gang_in(request, allowed).err();
        }
        let mut me = self.clone();
        me.explain = true;
        me.plan_gang_in(request, allowed).err()
    }

    /// Places a sandbox batch whole, or returns why not (and changes nothing).
    pub fn place_sandboxes(
        &mut self,
        id: WorkloadId,
        request: &SandboxRequest,
        now: Time,
    ) -> Result<SandboxPlacement, EngineError> {
        self.ensure_new(id)?;
        let placement = self.plan_sandboxes(request)?;
        self.commit_sandboxes(id, request, &placement, now);
        Ok(placement)
    }

    /// Releases everything a workload holds; capacity comes back exactly.
    pub fn release(&mut self, id: WorkloadId) -> Result<Allocation, EngineError> {
        let alloc = self
            .allocations
            .remove(&id)
            .ok_or(EngineError::UnknownWorkload(id))?;
        match &alloc {
            Allocation::Gang {
                request,
                slots,
                spares,
                per_node,
                ..
            } => {
                let all: Vec<NodeSlot> = slots.iter().chain(spares).copied().collect();
                self.charge_slots(id, &all, request, per_node, false);
            }
            Allocation::Sandboxes {
                request,
                runs,
                live,
                ..
            } => {
                for run in runs {
                    let alive = count_live(live, run.first, run.count);
                    self.return_sandboxes(run.node, alive, request);
                    if alive > 0 {
                        self.node_work[run.node.0 as usize].retain(|w| *w != id);
                    }
                }
            }
        }
        Ok(alloc)
    }

    pub(crate) fn return_sandboxes(&mut self, node: NodeId, n: u32, request: &SandboxRequest) {
        let f = &mut self.free[node.0 as usize];
        f.cpu_millis += n * request.cpu_millis;
        f.memory_mib += n * request.memory_mib;
        if let Some(i) = self.host_index(node.0) {
            self.refresh_host_room(i);
        }
    }

    /// Sets the state of a node or of every node in a subtree (cordon, drain, down, ready).
    pub fn set_state(&mut self, scope: Scope, state: NodeState) -> StateChange {
        let range = match scope {
            Scope::Node(n) => n.0..n.0 + 1,
            Scope::Subtree(t) => self.fleet.topo_node(t).nodes.clone(),
        };
        let mut changed = 0u32;
        let mut affected = Vec::new();
        let mut touched = Vec::new();
        for n in range {
            let id = NodeId(n);
            if self.fleet.node(id).state != state {
                self.fleet.set_node_state(id, state);
                changed += 1;
                let d = self.node_domain[n as usize];
                if d != NO_DOMAIN && touched.last() != Some(&d) {
                    touched.push(d);
                }
                if let Some(i) = self.host_index(n) {
                    self.refresh_host_room(i);
                }
            }
            affected.extend_from_slice(&self.node_work[n as usize]);
        }
        for d in touched {
            self.reindex_domain(d);
        }
        affected.sort_unstable();
        affected.dedup();
        StateChange {
            nodes_changed: changed,
            affected,
        }
    }

    /// Human name of a domain's kind, e.g. `NVL72` for 18 trays of 4 GPUs.
    pub(crate) fn domain_label(&self, d: u32) -> String {
        let ds = &self.domains[d as usize];
        if ds.node_count() > 1 {
            format!("NVL{}", ds.node_count() * u32::from(ds.capacity.gpus))
        } else {
            "single-host".into()
        }
    }

    /// Path of a topology node (for explanations).
    pub(crate) fn path(&self, t: TopoId) -> String {
        self.fleet.topo_path(t)
    }

    /// Label of a topology level for explanations ("spine", "zone", ...).
    pub(crate) fn level_label(&self, t: TopoId) -> String {
        match self.fleet.topo_node(t).kind {
            TopoKind::Network { level } => format!("level-{level} network node"),
            k => k.label(),
        }
    }
}

/// Number of set bits in `bits[first .. first + count]`.
pub(crate) fn count_live(bits: &[u64], first: u32, count: u32) -> u32 {
    let (mut i, end) = (first as usize, (first + count) as usize);
    let mut total = 0;
    while i < end {
        let (w, b) = (i / 64, i % 64);
        let take = (64 - b).min(end - i);
        let mask = if take == 64 {
            u64::MAX
        } else {
            ((1u64 << take) - 1) << b
        };
        total += (bits[w] & mask).count_ones();
        i += take;
    }
    total
}
