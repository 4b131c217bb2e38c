//! The static fragmentation experiment, after Weng et al., "Beware of Fragmentation: Scheduling
//! GPU-Sharing Workloads with Fragmentation Gradient Descent" (USENIX ATC '23): pods drawn
//! from a mix of shapes arrive one after another until they ask for `arrive` (130%) of the
//! fleet's GPUs, and none ends. Each policy places the same sequence through the real engine
//! (a [`NodeScore`]); measured is the share of GPU capacity allocated when the first pod
//! fails, and when all have arrived.
//!
//! [`reference_fleet`] and [`reference_mix`] are a synthetic heterogeneous cluster and pod
//! mix made to resemble the production cluster of that paper (see their documentation).

use crate::rng::Rng;
use model::fleet::Location;
use model::{
    CapacityPool, Fleet, FleetBuilder, GangRequest, GpuModel, NodeState, PricingKind, Resources,
    WorkloadId,
};
use sched::{Engine, MixShape, NodeScore};
use serde::Serialize;

/// One kind of pod in the mix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodKind {
    /// Whole GPUs (0 for a share or CPU work).
    pub gpus: u8,
    /// Thousandths of one GPU (0 for whole GPUs or CPU work).
    pub gpu_milli: u16,
    /// CPU millicores.
    pub cpu_millis: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Models it may run on (empty: any model of the fleet).
    pub models: Vec<GpuModel>,
    /// How often it arrives, relative to the others.
    pub weight: f64,
}

impl PodKind {
    /// GPU thousandths it asks.
    pub fn gpu_demand_milli(&self) -> u64 {
        if self.gpu_milli > 0 {
            u64::from(self.gpu_milli)
        } else {
            u64::from(self.gpus) * 1000
        }
    }
}

/// A placement policy of the experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// A node chosen at random among those that fit.
    Random,
    /// Alignment of free resources with the ask (Tetris's dot product).
    DotProduct,
    /// Partly used GPUs first, then partly used nodes.
    Packing,
    /// The engine's default: the fullest domain, node and device that fit.
    BestFit,
    /// Fragmentation gradient descent, the mix weighted by how often each kind arrives.
    Fragmentation,
    /// Stargrid's scoring (`NodeScore::PackedGradient`): packing first, then the fewest
    /// wholly free devices, then the fragmentation gradient with the mix weighted by the GPU
    /// capacity each kind takes.
    Stargrid,
}

impl Policy {
    /// Every policy, in the order of the table.
    pub const ALL: [Policy; 6] = [
        Policy::Random,
        Policy::DotProduct,
        Policy::Packing,
        Policy::BestFit,
        Policy::Fragmentation,
        Policy::Stargrid,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Random => "random",
            Policy::DotProduct => "dot-product",
            Policy::Packing => "packing",
            Policy::BestFit => "best-fit",
            Policy::Fragmentation => "fgd",
            Policy::Stargrid => "stargrid",
        }
    }

    /// The policy named `s`.
    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The engine's node score for this policy over `mix` on `fleet_models`.
    fn score(self, mix: &[PodKind], fleet_models: &[GpuModel], seed: u64) -> NodeScore {
        let shapes = |by_demand: bool| {
            mix.iter()
                .flat_map(|k| {
                    let models = if k.models.is_empty() {
                        fleet_models.to_vec()
                    } else {
                        k.models.clone()
                    };
                    // Work of several models counts towards each (its weight split evenly).
                    let share = k.weight / models.len().max(1) as f64;
                    models.into_iter().map(move |gpu| {
                        let shape = MixShape {
                            gpu,
                            gpus: k.gpus,
                            gpu_milli: k.gpu_milli,
                            cpu_millis: k.cpu_millis,
                            memory_mib: k.memory_mib,
                            weight: share,
                        };
                        if by_demand {
                            shape.weighted_by_demand()
                        } else {
                            shape
                        }
                    })
                })
                .collect()
        };
        match self {
            Policy::Random => NodeScore::Random { seed },
            Policy::DotProduct => NodeScore::DotProduct,
            Policy::Packing => NodeScore::Packing,
            Policy::BestFit => NodeScore::BestFit,
            Policy::Fragmentation => NodeScore::Fragmentation(shapes(false)),
            Policy::Stargrid => NodeScore::PackedGradient(shapes(true)),
        }
    }
}

/// What one run of one policy measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StaticRun {
    /// Pods that arrived.
    pub pods: u64,
    /// Pods that could not be placed.
    pub failed: u64,
    /// Share of the fleet's GPU capacity allocated when the first pod failed (the end's, if
    /// none failed).
    pub allocated_at_first_failure: f64,
    /// GPU capacity asked for up to the first failure, as a share of the fleet's.
    pub arrived_at_first_failure: f64,
    /// Share of GPU capacity allocated when every pod had arrived.
    pub allocated_at_end: f64,
}

/// Errors of the experiment's inputs.
#[derive(Debug, thiserror::Error)]
pub enum FragError {
    /// The mix cannot be drawn from.
    #[error("mix: {0}")]
    Mix(String),
    /// The fleet cannot take the experiment.
    #[error("fleet: {0}")]
    Fleet(String),
    /// The engine's books disagree with its allocations after a run (a bug).
    #[error("engine invariant broken {0}")]
    Invariant(String),
}

/// The fleet's GPU models, most GPUs first.
fn models_of(fleet: &Fleet) -> Vec<GpuModel> {
    let mut gpus = vec![0u64; GpuModel::ALL.len()];
    for n in fleet.nodes() {
        if let Some(m) = n.capacity.gpu_model {
            gpus[m.index()] += u64::from(n.capacity.gpus);
        }
    }
    let mut models: Vec<GpuModel> = GpuModel::ALL
        .into_iter()
        .filter(|m| gpus[m.index()] > 0)
        .collect();
    models.sort_by_key(|m| std::cmp::Reverse(gpus[m.index()]));
    models
}

/// The sequence of pods one seed draws: until they ask for `arrive` of the fleet's GPUs.
pub fn draw(
    mix: &[PodKind],
    fleet: &Fleet,
    arrive: f64,
    seed: u64,
) -> Result<Vec<usize>, FragError> {
    let total: f64 = mix.iter().map(|k| k.weight).sum();
    if mix.is_empty() || !(total.is_finite() && total > 0.0) || mix.iter().any(|k| k.weight < 0.0) {
        return Err(FragError::Mix(
            "weights must be non-negative with a positive sum".into(),
        ));
    }
    if mix
        .iter()
        .all(|k| k.gpu_demand_milli() == 0 || k.weight == 0.0)
    {
        return Err(FragError::Mix("no kind asks for GPUs".into()));
    }
    if !(arrive.is_finite() && arrive > 0.0 && arrive <= 10.0) {
        return Err(FragError::Mix(
            "arrive must be above 0 and at most 10".into(),
        ));
    }
    let capacity: u64 = fleet
        .nodes()
        .iter()
        .map(|n| u64::from(n.capacity.gpus) * 1000)
        .sum();
    if capacity == 0 {
        return Err(FragError::Fleet("has no GPUs".into()));
    }
    let goal = (capacity as f64 * arrive) as u64;
    let mut rng = Rng::new(seed);
    let (mut asked, mut out) = (0u64, Vec::new());
    while asked < goal {
        let mut x = rng.unit() * total;
        let pick = mix
            .iter()
            .position(|k| {
                x -= k.weight;
                x < 0.0
            })
            .unwrap_or(mix.len() - 1);
        asked += mix[pick].gpu_demand_milli();
        out.push(pick);
    }
    Ok(out)
}

/// The gang request a pod kind becomes on `fleet_models`.
fn request(kind: &PodKind, fleet_models: &[GpuModel]) -> GangRequest {
    let models = if kind.models.is_empty() {
        fleet_models
    } else {
        &kind.models[..]
    };
    let first = models.first().copied().unwrap_or(GpuModel::H100);
    GangRequest {
        class: Default::default(),
        gpu: first,
        nodes: 1,
        gpus_per_node: if kind.gpu_milli > 0 { 1 } else { kind.gpus },
        cpu_millis_per_node: kind.cpu_millis,
        memory_mib_per_node: kind.memory_mib,
        segment: None,
        spares: 0,
        parts: Vec::new(),
        gpu_milli: kind.gpu_milli,
        models: models.iter().skip(1).copied().collect(),
    }
}

/// Places `pods` (indexes into `mix`) in order on an empty `fleet` under `policy`.
pub fn run_static(
    fleet: &Fleet,
    mix: &[PodKind],
    pods: &[usize],
    policy: Policy,
    seed: u64,
) -> Result<StaticRun, FragError> {
    let models = models_of(fleet);
    let requests: Vec<GangRequest> = mix.iter().map(|k| request(k, &models)).collect();
    for (i, r) in requests.iter().enumerate() {
        r.validate()
            .map_err(|e| FragError::Mix(format!("kind {i}: {e}")))?;
    }
    let mut engine = Engine::new(fleet.clone());
    engine.set_explanations(false);
    engine.set_node_score(policy.score(mix, &models, seed));
    let (capacity, _) = engine.gpu_milli_usage();
    let share = |e: &Engine| {
        let (total, free) = e.gpu_milli_usage();
        (total - free) as f64 / total.max(1) as f64
    };
    let mut run = StaticRun {
        pods: pods.len() as u64,
        failed: 0,
        allocated_at_first_failure: 0.0,
        arrived_at_first_failure: 0.0,
        allocated_at_end: 0.0,
    };
    let mut asked = 0u64;
    let mut first_failure = None;
    for (i, &k) in pods.iter().enumerate() {
        let kind = mix
            .get(k)
            .ok_or_else(|| FragError::Mix(format!("pod {i} names kind {k}")))?;
        asked += kind.gpu_demand_milli();
        if engine
            .place_gang(WorkloadId(i as u64), &requests[k], 0)
            .is_err()
        {
            run.failed += 1;
            if first_failure.is_none() {
                first_failure = Some((share(&engine), asked as f64 / capacity.max(1) as f64));
            }
        }
    }
    run.allocated_at_end = share(&engine);
    // Every run checks the engine's books from scratch: shares, devices, CPU and memory.
    engine
        .check_invariants()
        .map_err(|v| FragError::Invariant(format!("under {}: {v}", policy.name())))?;
    (run.allocated_at_first_failure, run.arrived_at_first_failure) =
        first_failure.unwrap_or((run.allocated_at_end, asked as f64 / capacity.max(1) as f64));
    Ok(run)
}

/// One policy's results over several seeds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyResult {
    /// The policy.
    pub policy: Policy,
    /// Mean share allocated at the first failure.
    pub allocated_at_first_failure: f64,
    /// Lowest and highest over the seeds.
    pub first_failure_range: (f64, f64),
    /// Mean share allocated at the end.
    pub allocated_at_end: f64,
    /// Mean pods that failed.
    pub failed: f64,
    /// Each seed's run.
    pub runs: Vec<StaticRun>,
}

/// The whole experiment: `runs` seeds from `seed`, every policy on the same pods per seed.
pub fn experiment(
    fleet: &Fleet,
    mix: &[PodKind],
    policies: &[Policy],
    arrive: f64,
    runs: u32,
    seed: u64,
) -> Result<Vec<PolicyResult>, FragError> {
    let mut by_policy: Vec<Vec<StaticRun>> = vec![Vec::new(); policies.len()];
    for r in 0..u64::from(runs.max(1)) {
        let pods = draw(mix, fleet, arrive, seed.wrapping_add(r))?;
        for (i, p) in policies.iter().enumerate() {
            by_policy[i].push(run_static(fleet, mix, &pods, *p, seed.wrapping_add(r))?);
        }
    }
    Ok(policies
        .iter()
        .zip(by_policy)
        .map(|(p, runs)| {
            let n = runs.len().max(1) as f64;
            let first: Vec<f64> = runs.iter().map(|r| r.allocated_at_first_failure).collect();
            PolicyResult {
                policy: *p,
                allocated_at_first_failure: first.iter().sum::<f64>() / n,
                first_failure_range: (
                    first.iter().copied().fold(f64::INFINITY, f64::min),
                    first.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ),
                allocated_at_end: runs.iter().map(|r| r.allocated_at_end).sum::<f64>() / n,
                failed: runs.iter().map(|r| r.failed as f64).sum::<f64>() / n,
                runs,
            }
        })
        .collect())
}

/// A node group of the reference fleet: how many hosts of one shape.
struct Group {
    hosts: u32,
    model: GpuModel,
    gpus: u8,
    cpus: u32,
    memory_gib: u32,
}

/// A synthetic heterogeneous GPU cluster shaped like the production cluster of the paper, as
/// its public node list describes it: 1,213 GPU nodes and 6,212 GPUs in fifteen host shapes
/// (8-GPU hosts with 96 CPUs hold 71% of the GPUs; many 2-GPU hosts, a few 1- and 4-GPU
/// hosts; CPUs per GPU from 4 to 128). Models as there where this project knows them (T4,
/// V100 — its 16 and 32 GB kinds and the P100s stand as V100 — and A10); the undisclosed
/// G2 and G3 stand as A100 and H100. The mix takes any model, so the names change nothing.
pub fn reference_fleet() -> Result<Fleet, model::FleetError> {
    let group = |hosts, model, gpus, cpus, memory_gib| Group {
        hosts,
        model,
        gpus,
        cpus,
        memory_gib,
    };
    let groups = [
        group(549, GpuModel::A100, 8, 96, 384),
        group(387, GpuModel::T4, 2, 104, 512),
        group(107, GpuModel::V100, 2, 16, 120),
        group(39, GpuModel::H100, 8, 128, 768),
        group(28, GpuModel::V100, 4, 32, 128),
        group(22, GpuModel::V100, 2, 64, 256),
        group(21, GpuModel::V100, 8, 96, 768),
        group(19, GpuModel::V100, 1, 8, 32),
        group(17, GpuModel::T4, 4, 96, 384),
        group(9, GpuModel::V100, 4, 48, 368),
        group(7, GpuModel::V100, 8, 64, 256),
        group(3, GpuModel::V100, 1, 8, 60),
        group(2, GpuModel::V100, 2, 8, 60),
        group(2, GpuModel::A10, 1, 128, 1024),
        group(1, GpuModel::V100, 8, 82, 336),
    ];
    let mut b = FleetBuilder::new();
    let mut host = 0u32;
    for (i, g) in groups.iter().enumerate() {
        let pool = b.add_pool(CapacityPool {
            name: format!("group{i}"),
            cloud: "onprem".into(),
            region: "site".into(),
            instance_type: "custom".into(),
            pricing: PricingKind::Committed,
            price_per_hour: 0.0,
        })?;
        let cap = Resources {
            gpu_model: Some(g.model),
            gpus: g.gpus,
            cpu_millis: g.cpus * 1000,
            memory_mib: g.memory_gib * 1024,
            disk_gib: 0,
        };
        for _ in 0..g.hosts {
            let loc = Location {
                zone: "zone0".into(),
                network: vec![format!("rack{}", host / 32)],
                domain: None,
            };
            b.add_node(&format!("n{host:04}"), pool, &loc, cap, NodeState::Ready)?;
            host += 1;
        }
    }
    b.build()
}

/// A synthetic pod mix shaped like the paper's production trace (8,152 pods, as its public
/// pod list describes them), none tied to a model:
/// - 13% CPU-only pods (8 to 32 CPUs, 30 to 56 GiB);
/// - 38% GPU shares, in eight sizes from 0.15 to 0.81 of a GPU (0.81 and 0.47 the most
///   common), each with one of four CPU and memory asks (3 CPUs and 5.5 GiB the most common);
/// - 48% single-GPU pods (most with about 11 CPUs and 47 GiB);
/// - a tail of 2-, 4- and 8-GPU pods (1% of pods, 7% of the GPUs asked).
pub fn reference_mix() -> Vec<PodKind> {
    let kind = |gpus: u8, gpu_milli: u16, cpu_millis: u32, memory_gib: f64, weight: f64| PodKind {
        gpus,
        gpu_milli,
        cpu_millis,
        memory_mib: (memory_gib * 1024.0) as u32,
        models: Vec::new(),
        weight,
    };
    let mut mix = vec![
        // CPU-only pods.
        kind(0, 0, 12_500, 56.0, 364.0),
        kind(0, 0, 32_000, 48.0, 284.0),
        kind(0, 0, 8_000, 29.8, 163.0),
        kind(0, 0, 16_000, 50.0, 277.0),
        // Single GPUs.
        kind(1, 0, 11_400, 47.0, 2991.0),
        kind(1, 0, 3_152, 5.5, 470.0),
        kind(1, 0, 18_708, 63.0, 255.0),
        kind(1, 0, 9_810, 40.6, 195.0),
        // Several GPUs.
        kind(2, 0, 16_200, 65.0, 16.0),
        kind(4, 0, 32_200, 129.0, 15.0),
        kind(8, 0, 88_000, 320.0, 22.0),
        kind(8, 0, 64_200, 257.0, 22.0),
    ];
    // Shares: each size with each CPU and memory ask, in proportion to both.
    let sizes = [
        (810u16, 1079.0),
        (470, 899.0),
        (320, 341.0),
        (650, 253.0),
        (230, 207.0),
        (570, 147.0),
        (150, 106.0),
        (370, 47.0),
    ];
    let asks = [
        (3_152u32, 5.5, 1122.0),
        (11_908, 46.0, 625.0),
        (8_000, 29.8, 486.0),
        (4_000, 20.0, 371.0),
    ];
    let ask_total: f64 = asks.iter().map(|a| a.2).sum();
    for (milli, count) in sizes {
        for (cpu, gib, w) in asks {
            mix.push(kind(0, milli, cpu, gib, count * w / ask_total));
        }
    }
    mix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_fleet_has_the_papers_size() {
        let f = reference_fleet().unwrap();
        let gpus: u64 = f.nodes().iter().map(|n| u64::from(n.capacity.gpus)).sum();
        assert_eq!((f.nodes().len(), gpus), (1213, 6212));
    }

    #[test]
    fn draws_reach_the_arrival_goal_and_repeat_by_seed() {
        let f = reference_fleet().unwrap();
        let mix = reference_mix();
        let a = draw(&mix, &f, 1.3, 5).unwrap();
        assert_eq!(a, draw(&mix, &f, 1.3, 5).unwrap());
        assert_ne!(a, draw(&mix, &f, 1.3, 6).unwrap());
        let asked: u64 = a.iter().map(|&k| mix[k].gpu_demand_milli()).sum();
        assert!(asked >= 6_212_000 * 13 / 10);
        assert!(asked - mix[*a.last().unwrap()].gpu_demand_milli() < 6_212_000 * 13 / 10);
    }

    #[test]
    fn bad_mixes_are_refused() {
        let f = reference_fleet().unwrap();
        let mut mix = reference_mix();
        assert!(draw(&mix, &f, 0.0, 1).is_err());
        mix.iter_mut().for_each(|k| k.weight = 0.0);
        assert!(draw(&mix, &f, 1.3, 1).is_err());
        assert!(draw(&[], &f, 1.3, 1).is_err());
    }
}
