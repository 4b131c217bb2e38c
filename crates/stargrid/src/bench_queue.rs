//! The queue's figures for `stargrid bench engine`: the fleet filled through the scheduler,
//! 100,000 more jobs queued, passes timed as running jobs end, a full pass, and a network
//! failure's requeue. Then the same on a fleet of two GPU models (the first provider's trays
//! GB300, the rest GB200), once with every job on one model and once with half the jobs also
//! accepting the other: what admitting, placing, preempting and reserving across models costs a
//! pass, side by side with the same jobs on one model each.

use crate::bench::{bar, gang, Rng, MIX};
use crate::fleet_cmd::GenArgs;
use anyhow::{Context, Result};
use fleet::generate::generate;
use model::{GpuModel, InstanceCatalog, WorkloadClass, WorkloadId};
use sched::Engine;
use serde_json::{json, Value};
use std::time::Instant;

/// What one queue run measured.
pub(crate) struct QueueFigures {
    pub pass_ms: f64,
    pub first_pass_ms: f64,
    pub full_pass_ms: f64,
    pub failure_ms: f64,
    pub details: Value,
}

/// Which GPU models the fleet has and the queued jobs accept.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ModelMix {
    /// The fleet as generated (the reference fleet is all GB200), every job on GB200.
    OneModel,
    /// The first provider's trays are GB300: each job asks for one of the two models at
    /// random, and this share of the jobs also accepts the other.
    TwoModels { accepting_both: f64 },
}

/// The instance type that makes the first provider's trays GB300 in the two-model runs.
const GB300_TRAY: &str = "p6e-gb300.36xlarge";

/// The two-model runs, as `bench engine` prints them under `queue_models`: null when the
/// fleet has a single provider (then there is no second model to mix in).
pub(crate) fn two_models(a: &crate::bench::EngineArgs, quiet: bool) -> Result<Value> {
    if a.fleet.spec()?.clouds.len() < 2 {
        return Ok(Value::Null);
    }
    let mut runs = serde_json::Map::new();
    let mut gpus = json!(null);
    for (name, accepting_both) in [("each_on_one", 0.0), ("half_accept_both", 0.5)] {
        let q = bench_queue(a, quiet, ModelMix::TwoModels { accepting_both })?;
        gpus = q.details["gpus_by_model"].clone();
        runs.insert(
            name.into(),
            json!({
                "pass_ms": q.pass_ms,
                "first_pass_ms": q.first_pass_ms,
                "full_pass_ms": q.full_pass_ms,
                "pass_ms_all": q.details["pass_ms_all"],
                "pending_after": q.details["pending_after"],
                "running": q.details["running"],
                "gpu_in_use": q.details["gpu_in_use"],
            }),
        );
    }
    runs.insert("gpus_by_model".into(), gpus);
    Ok(Value::Object(runs))
}

/// The fleet `args` describe, with the first provider's trays GB300 for a two-model mix.
fn fleet_for(args: &GenArgs, mix: ModelMix) -> Result<model::Fleet> {
    let mut spec = args.spec()?;
    if let (ModelMix::TwoModels { .. }, Some(first)) = (mix, spec.clouds.first_mut()) {
        first.gpu_type = GB300_TRAY.into();
    }
    generate(&spec, &InstanceCatalog::builtin()).context("generating the fleet")
}

/// The queue on the generated fleet: filled to the target through the scheduler, then
/// 100,000 more jobs queued; a pass is timed after 1% of running jobs end, five times.
pub(crate) fn bench_queue(
    a: &crate::bench::EngineArgs,
    quiet: bool,
    mix: ModelMix,
) -> Result<QueueFigures> {
    use model::{JobSpec, PriorityClass, ResourceVec, TenantId, TenantSpec};
    use sched::{SchedConfig, Scheduler, Scope};
    let fleet = fleet_for(&a.fleet, mix)?;
    let mut gpus_by_model = [0u64; GpuModel::ALL.len()];
    for n in fleet.nodes() {
        if let Some(m) = n.capacity.gpu_model {
            gpus_by_model[m.index()] += u64::from(n.capacity.gpus);
        }
    }
    let total_gpus: u64 = gpus_by_model.iter().sum();
    let tenants: Vec<TenantSpec> = (0..20)
        .map(|i| {
            let mut quota = ResourceVec {
                cpu_millis: u64::MAX / 64,
                memory_mib: u64::MAX / 64,
                ..ResourceVec::default()
            };
            for (q, g) in quota.gpus.iter_mut().zip(gpus_by_model) {
                *q = g / 10;
            }
            TenantSpec {
                name: format!("team{i:02}"),
                weight: f64::from(1 + i % 3),
                cohort: Some(format!("org{}", i / 5)),
                quota,
            }
        })
        .collect();
    let mut s = Scheduler::new(Engine::new(fleet), tenants, SchedConfig::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut rng = Rng(a.seed ^ 0x5EED);
    let mut next = 0u64;
    let mut submit = |s: &mut Scheduler, rng: &mut Rng, now: u64| {
        let (gpus, per_node, class) = *rng.pick(&MIX);
        let priority = match class {
            WorkloadClass::InferenceReplica => PriorityClass::ProductionInference,
            WorkloadClass::Training => *rng.pick(&[
                (1, PriorityClass::Preemptible),
                (3, PriorityClass::Research),
                (2, PriorityClass::Training),
            ]),
        };
        next += 1;
        let mut gang = gang(gpus, per_node, class);
        if let ModelMix::TwoModels { accepting_both } = mix {
            // Both draws always, so the two runs queue the same jobs.
            let (first, other) = if rng.below(2) == 0 {
                (GpuModel::Gb200, GpuModel::Gb300)
            } else {
                (GpuModel::Gb300, GpuModel::Gb200)
            };
            gang.gpu = first;
            if (rng.below(1000) as f64) < accepting_both * 1000.0 {
                gang.models = vec![other];
            }
        }
        let spec = JobSpec {
            tenant: TenantId(rng.below(20) as u32),
            priority,
            gang,
            time_limit: 3600 * (1 + rng.below(48)),
            placement: Default::default(),
        };
        let _ = s.submit(WorkloadId(next), spec, now);
    };
    // Fill to the target through the queue itself.
    let target = (total_gpus as f64 * a.fill) as u64;
    let mut now = 0u64;
    let pb = bar(target, "filling through queue", quiet);
    loop {
        for _ in 0..500 {
            submit(&mut s, &mut rng, now);
        }
        now += 60;
        s.schedule(now);
        let (_, free) = s.engine().gpu_usage();
        let used = total_gpus - free;
        pb.set_position(used.min(target));
        if used >= target || now > 60 * 10_000 {
            break;
        }
    }
    pb.finish_and_clear();
    // 100,000 more jobs wait in the queue.
    for _ in 0..100_000 {
        submit(&mut s, &mut rng, now);
    }
    now += 60;
    let start = Instant::now();
    s.schedule(now);
    let first_pass_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut passes = Vec::new();
    for _ in 0..5 {
        let running = s.running_jobs();
        for _ in 0..running.len() / 100 {
            let id = running[rng.below(running.len() as u64) as usize];
            let _ = s.finish(id, now);
        }
        now += 60;
        let start = Instant::now();
        s.schedule(now);
        passes.push(start.elapsed().as_secs_f64() * 1e3);
    }
    // A full pass (every pending job considered): one is due every `full_pass_interval`.
    for _ in 0..s.running_jobs().len() / 100 {
        let running = s.running_jobs();
        let id = running[rng.below(running.len() as u64) as usize];
        let _ = s.finish(id, now);
    }
    now += sched::SchedConfig::default().full_pass_interval;
    let start = Instant::now();
    s.schedule(now);
    let full_pass_ms = start.elapsed().as_secs_f64() * 1e3;
    passes.sort_by(f64::total_cmp);
    let pending = s.pending_jobs().len();
    let running = s.running_jobs().len();
    let (_, free) = s.engine().gpu_usage();
    let gpu_in_use = (total_gpus - free) as f64 / total_gpus.max(1) as f64;
    // A failure of network nodes holding at least 1% of the GPUs.
    let fleet = s.engine().fleet();
    let mut doomed = Vec::new();
    let mut doomed_gpus = 0u64;
    for (i, t) in fleet.topo().iter().enumerate() {
        if t.kind == (model::TopoKind::Network { level: 1 }) && !t.domains.is_empty() {
            doomed.push(model::TopoId(i as u32));
            doomed_gpus += fleet.nodes()[t.nodes.start as usize..t.nodes.end as usize]
                .iter()
                .map(|n| u64::from(n.capacity.gpus))
                .sum::<u64>();
            if doomed_gpus * 100 >= total_gpus {
                break;
            }
        }
    }
    let start = Instant::now();
    let mut requeued = 0;
    for t in &doomed {
        requeued += s.fail(Scope::Subtree(*t), now).len();
    }
    let failure_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    s.schedule(now + 1);
    let after_failure_pass_ms = start.elapsed().as_secs_f64() * 1e3;
    let by_model: serde_json::Map<String, Value> = GpuModel::ALL
        .iter()
        .filter(|m| gpus_by_model[m.index()] > 0)
        .map(|m| (m.to_string(), json!(gpus_by_model[m.index()])))
        .collect();
    Ok(QueueFigures {
        pass_ms: passes[passes.len() / 2],
        first_pass_ms,
        full_pass_ms,
        failure_ms,
        details: json!({
            "pending_after": pending,
            "running": running,
            "gpu_in_use": gpu_in_use,
            "gpus_by_model": by_model,
            "pass_ms_all": passes,
            "failed_gpus": doomed_gpus,
            "jobs_requeued": requeued,
            "pass_after_failure_ms": after_failure_pass_ms,
        }),
    })
}
