//! GPU shares and scored single-node placement.
//!
//! A share (`GangRequest.gpu_milli`, 1–999 thousandths of one device) takes part of one GPU,
//! and several shares pack onto one device. The engine keeps, per partly used device, the
//! thousandths taken (`Engine.shared`) and, per GPU model, an ordered index of the room left
//! on each such device (`Engine.share_room`), so the tightest device that fits a share is a
//! range query. A shared device is not free in its node's device mask, so whole-device
//! placement never sees it; it is whole again when its last share leaves.
//!
//! CPU work may run on one GPU host beside GPU work (`gpus_per_node` 0, `is_cpu_only`).
//!
//! Work on one node (a share, CPU work, or one node of whole devices) may be placed under a
//! node score ([`NodeScore`]) instead of the engine's default best fit: the fragmentation
//! gradient of Weng et al. (USENIX ATC '23) against the mix of shapes that arrive, and the
//! baselines the static fragmentation experiment compares it with. A scored placement looks
//! at no more than [`MAX_SCORED_NODES`] nodes, cheapest cost tier first: for a share, the
//! nodes of partly used devices with room (tightest first), then domains with a free device;
//! for other work, the domains with the devices it asks, fullest first.

use crate::engine::{index_of, Engine, Unplaceable, NO_DOMAIN};
use crate::gang::{GangPlacement, Quality};
use crate::NodeSlot;
use model::{GangRequest, GpuModel, NodeId, TopoId};
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

/// Thousandths in one device.
pub const DEVICE_MILLI: u16 = 1000;

/// Most nodes one scored placement evaluates (bounds the work per placement on a big fleet).
pub const MAX_SCORED_NODES: usize = 4096;

/// Most partly used devices the best-fit share search tries before taking a fresh device.
const MAX_SHARE_TRIES: usize = 512;

/// A device partly taken by shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedDevice {
    /// Device index on its node.
    pub device: u8,
    /// Thousandths taken by the shares on it (1–1000).
    pub used_milli: u16,
}

/// One shape in the mix of work that arrives, with its weight (how often it arrives).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixShape {
    /// GPU model it runs on.
    pub gpu: GpuModel,
    /// Whole devices (0 for a share).
    pub gpus: u8,
    /// Thousandths of one device (0 for whole devices).
    pub gpu_milli: u16,
    /// CPU millicores.
    pub cpu_millis: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Relative frequency (any positive scale).
    pub weight: f64,
}

impl MixShape {
    /// This shape weighted by the GPU capacity one such job takes (a share its fraction), as
    /// the packed gradient weighs the mix; at least a tenth, so CPU work still counts.
    pub fn weighted_by_demand(mut self) -> MixShape {
        let gpus = if self.gpu_milli > 0 {
            f64::from(self.gpu_milli) / 1000.0
        } else {
            f64::from(self.gpus)
        };
        self.weight *= gpus.max(0.1);
        self
    }
}

/// How single-node work chooses its node and device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum NodeScore {
    /// The engine's default: the fullest domain and node that hold the ask; a share takes the
    /// partly used device with the least room that fits it, else a fresh device so.
    #[default]
    BestFit,
    /// Fragmentation gradient descent: the choice that least increases the node's expected
    /// fragmented GPU capacity for the mix of shapes that arrive. Ties go to the fullest.
    Fragmentation(Vec<MixShape>),
    /// Packing first, then the gradient: a share goes to a partly used device, other work to
    /// a node whose GPUs are already in use, when one fits; among those (or among empty
    /// nodes, when none does) the node with the fewest wholly free devices, and among equals
    /// the least increase of expected fragmented capacity for the mix. Empty nodes stay empty
    /// for the largest shapes as long as possible; the nodes in use fill without stranding
    /// capacity.
    PackedGradient(Vec<MixShape>),
    /// GPU packing: partly used devices first, then nodes with devices in use, then the node
    /// with the fewest free devices.
    Packing,
    /// Alignment (Tetris): the node whose free CPU, memory and GPU, each as a share of the
    /// node's capacity, have the largest dot product with the ask.
    DotProduct,
    /// A node chosen at random among those that fit (a fixed seeded mix, so still pure).
    Random {
        /// The seed.
        seed: u64,
    },
}

/// What one node has free, device by device, for scoring.
#[derive(Clone, Copy, Debug)]
struct NodeView {
    /// Free thousandths of each device (1000 wholly free, 0 wholly taken).
    free: [u16; 32],
    devices: u8,
    cpu_millis: u32,
    memory_mib: u32,
}

impl NodeView {
    fn free_milli(&self) -> u32 {
        self.free[..usize::from(self.devices)]
            .iter()
            .map(|&f| u32::from(f))
            .sum()
    }

    fn whole_free(&self) -> u32 {
        self.free[..usize::from(self.devices)]
            .iter()
            .filter(|&&f| f == DEVICE_MILLI)
            .count() as u32
    }

    /// GPU capacity (thousandths) on this node that `shape` could not use: all of it when the
    /// shape does not fit the node at all, else the devices too small for one of its devices.
    fn fragment(&self, shape: &MixShape) -> u32 {
        let devices = &self.free[..usize::from(self.devices)];
        let all = self.free_milli();
        if shape.cpu_millis > self.cpu_millis || shape.memory_mib > self.memory_mib {
            return all;
        }
        if shape.gpus == 0 && shape.gpu_milli == 0 {
            return 0; // CPU work that fits uses no device, so leaves none stranded
        }
        let need = if shape.gpu_milli > 0 {
            shape.gpu_milli
        } else {
            DEVICE_MILLI
        };
        let usable = devices.iter().filter(|&&f| f >= need).count() as u32;
        if usable < u32::from(shape.gpus.max(1)) {
            return all;
        }
        devices
            .iter()
            .filter(|&&f| f < need)
            .map(|&f| u32::from(f))
            .sum()
    }

    /// Expected fragmented capacity over the mix (only shapes of the node's model).
    fn fragmentation(&self, mix: &[MixShape], model: GpuModel) -> f64 {
        mix.iter()
            .filter(|s| s.gpu == model)
            .map(|s| s.weight * f64::from(self.fragment(s)))
            .sum()
    }

    /// The view after taking `milli` of each device in `mask` and the CPU and memory.
    fn after(&self, mask: u32, milli: u16, cpu_millis: u32, memory_mib: u32) -> NodeView {
        let mut v = *self;
        for d in 0..usize::from(self.devices) {
            if mask >> d & 1 == 1 {
                v.free[d] -= milli.min(v.free[d]);
            }
        }
        v.cpu_millis -= cpu_millis.min(v.cpu_millis);
        v.memory_mib -= memory_mib.min(v.memory_mib);
        v
    }
}

/// A fixed mix of bits (SplitMix64's finaliser).
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Engine {
    /// Sets how single-node work chooses its node (applies to placements from now on).
    pub fn set_node_score(&mut self, score: NodeScore) {
        self.node_score = score;
    }

    /// How single-node work chooses its node.
    pub fn node_score(&self) -> &NodeScore {
        &self.node_score
    }

    /// Devices of a node partly taken by shares, in device order.
    pub fn shared_devices(&self, node: NodeId) -> &[SharedDevice] {
        self.shared.get(&node.0).map_or(&[], Vec::as_slice)
    }

    /// GPU capacity in thousandths: (on every node, free on nodes that take work). A device
    /// partly taken counts its room as free.
    pub fn gpu_milli_usage(&self) -> (u64, u64) {
        let mut total = 0u64;
        let mut free = 0u64;
        for (i, n) in self.fleet.nodes().iter().enumerate() {
            total += u64::from(n.capacity.gpus) * u64::from(DEVICE_MILLI);
            if n.state.schedulable() {
                free += u64::from(self.node_view(i as u32).free_milli());
            }
        }
        (total, free)
    }

    /// Whether `request` is placed by the single-node path of this module.
    pub(crate) fn single_node_scored(&self, request: &GangRequest) -> bool {
        !request.is_unit()
            && request.nodes == 1
            && request.spares == 0
            && (request.is_share()
                || request.is_cpu_only()
                || !matches!(self.node_score, NodeScore::BestFit))
    }

    fn node_view(&self, n: u32) -> NodeView {
        let f = &self.free[n as usize];
        let devices = self.fleet.nodes()[n as usize].capacity.gpus.min(32);
        let mut free = [0u16; 32];
        for (d, slot) in free.iter_mut().enumerate().take(usize::from(devices)) {
            if f.gpu_mask >> d & 1 == 1 {
                *slot = DEVICE_MILLI;
            }
        }
        for s in self.shared_devices(NodeId(n)) {
            free[usize::from(s.device)] = DEVICE_MILLI - s.used_milli.min(DEVICE_MILLI);
        }
        NodeView {
            free,
            devices,
            cpu_millis: f.cpu_millis,
            memory_mib: f.memory_mib,
        }
    }

    /// Takes (`take`) or gives back `milli` of the device in `mask` on node `n`.
    pub(crate) fn charge_share(&mut self, n: u32, mask: u32, milli: u16, take: bool) {
        let device = mask.trailing_zeros() as u8;
        let model = self.fleet.nodes()[n as usize].capacity.gpu_model;
        let list = self.shared.entry(n).or_default();
        let pos = list.iter().position(|s| s.device == device);
        let before = pos.map(|p| list[p].used_milli);
        let after = match (before, take) {
            (Some(used), true) => used.saturating_add(milli).min(DEVICE_MILLI),
            (None, true) => milli,
            (Some(used), false) => used.saturating_sub(milli),
            (None, false) => 0,
        };
        match (pos, after) {
            (Some(p), 0) => {
                list.remove(p);
            }
            (Some(p), used) => list[p].used_milli = used,
            (None, 0) => {}
            (None, used) => {
                // Kept in device order, so that the same shares give the same list.
                let at = list.partition_point(|s| s.device < device);
                list.insert(
                    at,
                    SharedDevice {
                        device,
                        used_milli: used,
                    },
                );
            }
        }
        if list.is_empty() {
            self.shared.remove(&n);
        }
        let f = &mut self.free[n as usize];
        match (before, after) {
            (None, a) if a > 0 => f.gpu_mask &= !mask,
            (Some(_), 0) => f.gpu_mask |= mask,
            _ => {}
        }
        if let Some(model) = model {
            let index = &mut self.share_room[model.index()];
            if let Some(used) = before.filter(|&u| u < DEVICE_MILLI) {
                index.remove(&(DEVICE_MILLI - used, n, device));
            }
            if after > 0 && after < DEVICE_MILLI {
                index.insert((DEVICE_MILLI - after, n, device));
            }
        }
    }

    /// Shared devices: no device both shared and wholly taken, none over 1000 thousandths, and
    /// the per-device sums and the room index exactly as the shares say. Marks shared devices
    /// as taken in `used_gpu`.
    pub(crate) fn check_shares(
        &self,
        sums: &std::collections::BTreeMap<(u32, u8), u32>,
        used_gpu: &mut [u32],
    ) -> Result<(), String> {
        let nodes = self.fleet.nodes();
        let mut have: Vec<(u32, u8, u16)> = self
            .shared
            .iter()
            .flat_map(|(n, list)| list.iter().map(|s| (*n, s.device, s.used_milli)))
            .collect();
        have.sort_unstable();
        let want: Vec<(u32, u8, u16)> = sums
            .iter()
            .map(|(&(n, d), &m)| (n, d, m.min(u32::from(u16::MAX)) as u16))
            .collect();
        for &(n, d, m) in &want {
            let name = &nodes[n as usize].name;
            if m > DEVICE_MILLI {
                return Err(format!(
                    "{name}: device {d} shared beyond one GPU ({m}/1000)"
                ));
            }
            if used_gpu[n as usize] >> d & 1 == 1 {
                return Err(format!("{name}: device {d} both shared and wholly taken"));
            }
            used_gpu[n as usize] |= 1 << d;
        }
        if have != want {
            return Err(format!("shared devices {have:?} but shares say {want:?}"));
        }
        let mut index: Vec<(u16, u32, u8)> = self
            .share_room
            .iter()
            .flat_map(|set| set.iter().copied())
            .collect();
        index.sort_unstable_by_key(|&(r, n, d)| (n, d, r));
        let expect: Vec<(u16, u32, u8)> = want
            .iter()
            .filter(|&&(_, _, m)| m < DEVICE_MILLI)
            .map(|&(n, d, m)| (DEVICE_MILLI - m, n, d))
            .collect();
        if index != expect {
            return Err("share room index out of date".into());
        }
        Ok(())
    }

    /// Room left on device `device` of node `n` for a share: 1000 when wholly free.
    pub(crate) fn device_room(&self, n: u32, device: u8) -> u16 {
        self.node_view(n).free[usize::from(device.min(31))]
    }

    /// Plans single-node work: a share, or one node under a node score.
    pub(crate) fn plan_single(
        &self,
        request: &GangRequest,
        allowed: &dyn Fn(TopoId) -> bool,
    ) -> Result<GangPlacement, Unplaceable> {
        if request.is_share() && matches!(self.node_score, NodeScore::BestFit) {
            return self.plan_share_best_fit(request, allowed);
        }
        let models: Vec<GpuModel> = request
            .acceptable_models()
            .filter(|m| !self.model_domains[m.index()].is_empty())
            .collect();
        if models.is_empty() {
            return Err(Unplaceable::new(format!(
                "the fleet has no {} nodes",
                request.gpu
            )));
        }
        // Shares look at partly used devices with room first (tightest first), then at
        // domains with a free device; other work at domains with the devices it asks.
        let need = if request.is_share() {
            1
        } else {
            u32::from(request.gpus_per_node)
        };
        let mut looked = 0usize;
        let mut seen: FxHashSet<u32> = FxHashSet::default();
        let tiers = models
            .iter()
            .map(|m| self.model_tiers[m.index()])
            .max()
            .unwrap_or(0);
        // Cheapest tier first over every acceptable model; the best score in it wins.
        for tier in 0..tiers {
            let mut best: Option<(f64, u32, u32)> = None;
            let mut consider = |n: u32, ask: &GangRequest, looked: &mut usize| {
                // Only a share can come to a node twice (its index, then its domain).
                if !self.open(n) || (request.is_share() && !seen.insert(n)) {
                    return;
                }
                *looked += 1;
                for (score, mask) in self.choices(n, ask) {
                    if best.is_none_or(|(b, _, _)| score < b) {
                        best = Some((score, n, mask));
                    }
                }
            };
            for &model in models.iter().filter(|m| tier < self.model_tiers[m.index()]) {
                let ask = request.on_model(model);
                // (Other work reads none of the index.)
                let shared = self.share_room[model.index()]
                    .range((request.gpu_milli.max(1), 0, 0)..)
                    .take(if request.is_share() {
                        4 * MAX_SCORED_NODES
                    } else {
                        0
                    });
                for &(_, n, _) in shared {
                    let d = self.node_domain[n as usize];
                    if looked >= MAX_SCORED_NODES {
                        break;
                    }
                    if d != NO_DOMAIN
                        && self.domains[d as usize].tier == tier
                        && allowed(self.domains[d as usize].topo)
                    {
                        consider(n, &ask, &mut looked);
                    }
                }
                for &(_, d) in self.by_free_gpus[index_of(model, tier)].range((need, 0)..) {
                    if looked >= MAX_SCORED_NODES {
                        break;
                    }
                    let ds = &self.domains[d as usize];
                    if !allowed(ds.topo) {
                        continue;
                    }
                    for n in ds.first_node..ds.end_node {
                        if looked >= MAX_SCORED_NODES {
                            break;
                        }
                        consider(n, &ask, &mut looked);
                    }
                }
            }
            if let Some((_, n, mask)) = best {
                return Ok(self.single_placement(n, mask));
            }
        }
        Err(self.explain_share(request))
    }

    /// The device choices on node `n` that fit `request`, each with its score (lower wins).
    fn choices(&self, n: u32, request: &GangRequest) -> Vec<(f64, u32)> {
        let view = self.node_view(n);
        let (cpu, mem) = (request.cpu_millis_per_node, request.memory_mib_per_node);
        if view.cpu_millis < cpu || view.memory_mib < mem {
            return Vec::new();
        }
        let devices = &view.free[..usize::from(view.devices)];
        let mut masks: Vec<(u32, u16)> = Vec::new();
        if request.is_share() {
            let milli = request.gpu_milli;
            // Every partly used device with room, and one wholly free device.
            for (d, &f) in devices.iter().enumerate() {
                if f >= milli && f < DEVICE_MILLI {
                    masks.push((1 << d, milli));
                }
            }
            if let Some(d) = devices.iter().position(|&f| f == DEVICE_MILLI) {
                masks.push((1 << d, milli));
            }
        } else {
            let whole = self.free[n as usize].gpu_mask;
            if whole.count_ones() >= u32::from(request.gpus_per_node) {
                masks.push((
                    crate::gang::lowest_bits(whole, request.gpus_per_node),
                    DEVICE_MILLI,
                ));
            }
        }
        let capacity = self.fleet.nodes()[n as usize].capacity;
        let before = match &self.node_score {
            NodeScore::Fragmentation(mix) | NodeScore::PackedGradient(mix) => {
                view.fragmentation(mix, request.gpu)
            }
            _ => 0.0,
        };
        let node_used = view.free_milli() < u32::from(view.devices) * u32::from(DEVICE_MILLI);
        masks
            .into_iter()
            .map(|(mask, milli)| {
                let after = view.after(mask, milli, cpu, mem);
                let score = match &self.node_score {
                    // Only CPU work comes here under best fit: the host whose GPUs are
                    // fullest (its CPU is idle beside them), then the least CPU left.
                    NodeScore::BestFit => {
                        f64::from(after.free_milli()) * 1e7 + f64::from(after.cpu_millis)
                    }
                    NodeScore::Fragmentation(mix) => after.fragmentation(mix, request.gpu) - before,
                    NodeScore::PackedGradient(mix) => {
                        let device_used = devices
                            .iter()
                            .enumerate()
                            .any(|(d, &f)| mask >> d & 1 == 1 && f < DEVICE_MILLI);
                        let class = if device_used {
                            0.0
                        } else if node_used {
                            1.0
                        } else {
                            2.0
                        };
                        // Gradients are at most 32,000 thousandths times the mix's weights;
                        // the class is worth more than any of them.
                        class * 1e15
                            + f64::from(view.whole_free()) * 1e12
                            + after.fragmentation(mix, request.gpu)
                            - before
                    }
                    NodeScore::Packing => {
                        let device_used = devices
                            .iter()
                            .enumerate()
                            .any(|(d, &f)| mask >> d & 1 == 1 && f < DEVICE_MILLI);
                        f64::from(u32::from(!device_used)) * 1e6
                            + f64::from(u32::from(!node_used)) * 1e3
                            + f64::from(view.whole_free())
                    }
                    NodeScore::DotProduct => {
                        let share = |free: u32, cap: u32| f64::from(free) / f64::from(cap.max(1));
                        let gpu_cap = u32::from(capacity.gpus) * u32::from(DEVICE_MILLI);
                        let asked_gpu = mask.count_ones() * u32::from(milli);
                        -(share(view.cpu_millis, capacity.cpu_millis)
                            * share(cpu, capacity.cpu_millis)
                            + share(view.memory_mib, capacity.memory_mib)
                                * share(mem, capacity.memory_mib)
                            + share(view.free_milli(), gpu_cap) * share(asked_gpu, gpu_cap))
                    }
                    NodeScore::Random { seed } => {
                        let key = seed
                            ^ u64::from(n) << 8
                            ^ u64::from(mask)
                            ^ (self.allocations.len() as u64) << 40;
                        (mix64(key) >> 11) as f64
                    }
                };
                (score, mask)
            })
            .collect()
    }

    /// Best fit for a share: the partly used device with the least room that fits it (and a
    /// node with the CPU and memory), else a fresh device chosen as for one whole GPU.
    fn plan_share_best_fit(
        &self,
        request: &GangRequest,
        allowed: &dyn Fn(TopoId) -> bool,
    ) -> Result<GangPlacement, Unplaceable> {
        let milli = request.gpu_milli;
        // The tightest partly used device of the first acceptable model that has one.
        let found = request.acceptable_models().find_map(|model| {
            self.share_room[model.index()]
                .range((milli, 0, 0)..)
                .take(MAX_SHARE_TRIES)
                .find(|&&(_, n, _)| {
                    let f = &self.free[n as usize];
                    let d = self.node_domain[n as usize];
                    self.open(n)
                        && f.cpu_millis >= request.cpu_millis_per_node
                        && f.memory_mib >= request.memory_mib_per_node
                        && d != crate::engine::NO_DOMAIN
                        && allowed(self.domains[d as usize].topo)
                })
                .copied()
        });
        if let Some((_, n, device)) = found {
            return Ok(self.single_placement(n, 1 << device));
        }
        let mut whole = request.clone();
        whole.gpu_milli = 0;
        self.plan_gang_in(&whole, allowed)
            .map_err(|_| self.explain_share(request))
    }

    fn single_placement(&self, n: u32, mask: u32) -> GangPlacement {
        let d = self.node_domain[n as usize];
        let path = self.path(self.domains[d as usize].topo);
        GangPlacement {
            slots: vec![NodeSlot {
                node: NodeId(n),
                gpu_mask: mask,
            }],
            spares: Vec::new(),
            quality: Quality::new(1, 1, (0, 0), path),
        }
    }

    fn explain_share(&self, request: &GangRequest) -> Unplaceable {
        if !self.explain {
            return Unplaceable::new("");
        }
        let what = if request.is_share() {
            format!("{}/1000 of one {} GPU", request.gpu_milli, request.gpu)
        } else if request.is_cpu_only() {
            format!("CPU on one {} host", request.gpu)
        } else {
            format!("{} {} GPUs on one node", request.gpus_per_node, request.gpu)
        };
        let mut u = Unplaceable::new(format!(
            "asks {what} with {} CPU millicores and {} MiB; no open node has that much free at once",
            request.cpu_millis_per_node, request.memory_mib_per_node
        ));
        let (total, free) = self.gpu_milli_usage();
        u.details.push(format!(
            "{:.1} of {:.1} GPUs are free fleet-wide (all models)",
            free as f64 / 1000.0,
            total as f64 / 1000.0
        ));
        u
    }
}
