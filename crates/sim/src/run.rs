//! The event loop: trace arrivals, job ends, faults and repairs in virtual time; after the
//! events of each instant, one scheduling pass of the real queue; its decisions become new
//! events (a start schedules an end at the speed its placement allows; a preemption or a
//! reservation schedules a pass at its deadline).

use crate::report::{Report, Sample, Tally};
use crate::rng::Rng;
use crate::speed::SpeedModel;
use crate::trace::TraceJob;
use model::{
    Fleet, GangRequest, GpuModel, JobSpec, NodeId, NodeState, ResourceVec, TenantId, TenantSpec,
    TopoId, WorkloadId,
};
use sched::{Decision, Engine, NodeSlot, SchedConfig, Scheduler, Scope, Time};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Random node failures: each node fails after an exponential time with mean `node_mtbf`
/// and comes back `repair` seconds later.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSpec {
    /// Mean time between failures of one node, seconds.
    pub node_mtbf: f64,
    /// Seconds a failed node stays down.
    pub repair: Time,
}

/// How to run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Name of the policy (for the report).
    pub policy: String,
    /// The queue's configuration.
    pub sched: SchedConfig,
    /// Placement-sensitive speed.
    pub speed: SpeedModel,
    /// Random faults, if any.
    pub faults: Option<FaultSpec>,
    /// Seed of the faults.
    pub seed: u64,
    /// Seconds between utilisation samples.
    pub sample_interval: Time,
    /// Check every invariant of the queue and engine after each instant (slow; for tests).
    pub check_invariants: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            policy: "stargrid".into(),
            sched: SchedConfig::default(),
            speed: SpeedModel::default(),
            faults: None,
            seed: 1,
            sample_interval: 3600,
            check_invariants: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A node comes back (first: repairs before failures at one instant).
    Repair(u32),
    /// A node fails.
    Fail(u32),
    /// A job's current run ends (job index, run epoch).
    Finish(u32, u32),
    /// A trace job arrives.
    Submit(u32),
    /// A pass is due (preemption deadline, reservation start).
    Wake,
    /// Take a sample.
    Sample,
}

/// Per-job state of the simulation.
#[derive(Clone, Debug, Default)]
struct JobRun {
    /// Work left, in seconds at full speed.
    remaining: f64,
    /// Run number: end events of earlier runs are ignored.
    epoch: u32,
    started: Option<Time>,
    rate: f64,
    first_start: Option<Time>,
    finished: Option<Time>,
    levels: u8,
}

/// The gang a trace job becomes on a fleet whose nodes carry `per_node` GPUs of `model`.
pub fn gang_for(gpus: u32, model: GpuModel, per_node: u8) -> GangRequest {
    let per_node = u32::from(per_node.max(1));
    let nodes = gpus.div_ceil(per_node).max(1);
    let gpn = gpus.div_ceil(nodes).clamp(1, per_node) as u8;
    GangRequest {
        class: Default::default(),
        gpu: model,
        nodes,
        gpus_per_node: gpn,
        cpu_millis_per_node: 0,
        memory_mib_per_node: 0,
        segment: None,
        spares: 0,
    }
}

/// Height above the domains of each topology node (domain = 0).
fn heights(fleet: &Fleet) -> Vec<u8> {
    let topo = fleet.topo();
    let mut h = vec![0u8; topo.len()];
    for i in (1..topo.len()).rev() {
        if let Some(p) = topo[i].parent {
            let v = h[i].saturating_add(1);
            h[p.0 as usize] = h[p.0 as usize].max(v);
        }
    }
    h
}

/// Levels spanned by a placement: height of the lowest element holding all its domains.
fn levels_spanned(fleet: &Fleet, heights: &[u8], slots: &[NodeSlot]) -> (u8, usize) {
    let mut domains: Vec<TopoId> = slots
        .iter()
        .filter_map(|s| fleet.domain_of(s.node))
        .collect();
    domains.sort_unstable();
    domains.dedup();
    let (Some(lo), Some(hi)) = (domains.first(), domains.last()) else {
        return (0, 0);
    };
    let hi_idx = fleet.domains().binary_search(hi).unwrap_or(0) as u32;
    let lca = fleet
        .ancestors(*lo)
        .find(|a| fleet.topo_node(*a).domains.contains(&hi_idx))
        .unwrap_or(TopoId(0));
    (heights[lca.0 as usize], domains.len())
}

/// Mean absolute deviation of active tenants' shares of the busy GPUs from an equal share
/// (a tenant is active with work running or waiting).
fn fair_deviation(s: &Scheduler, pending_by_tenant: &[u64]) -> f64 {
    let report = s.tenant_report();
    let busy: Vec<u64> = report.iter().map(|t| t.usage.gpus.iter().sum()).collect();
    let total: u64 = busy.iter().sum();
    let active: Vec<usize> = (0..busy.len())
        .filter(|i| busy[*i] > 0 || pending_by_tenant.get(*i).is_some_and(|p| *p > 0))
        .collect();
    if total == 0 || active.len() < 2 {
        return 0.0;
    }
    let fair = 1.0 / active.len() as f64;
    active
        .iter()
        .map(|i| (busy[*i] as f64 / total as f64 - fair).abs())
        .sum::<f64>()
        / active.len() as f64
}

/// Runs `jobs` on `fleet` under `config`; `progress(done, total)` is called now and then.
pub fn simulate(
    fleet: Fleet,
    jobs: &[TraceJob],
    config: &SimConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, String> {
    // The fleet's GPU model and GPUs per node (a trace is one kind of gang).
    let gpu_node = fleet
        .nodes()
        .iter()
        .find(|n| n.capacity.gpus > 0)
        .ok_or("the fleet has no GPU nodes")?;
    let model = gpu_node
        .capacity
        .gpu_model
        .ok_or("GPU node without a model")?;
    let per_node = gpu_node.capacity.gpus;
    let heights = heights(&fleet);
    let domain_gpus = fleet
        .domains()
        .iter()
        .map(|d| fleet.topo_node(*d).nodes.len() as u64 * u64::from(per_node))
        .max()
        .unwrap_or(0);
    let node_count = fleet.nodes().len() as u32;
    // Tenants from the trace, equal weights, quotas that never bind (the trace has none).
    let mut tenant_ids: BTreeMap<&str, TenantId> = BTreeMap::new();
    for j in jobs {
        let next = TenantId(tenant_ids.len() as u32);
        tenant_ids.entry(j.tenant.as_str()).or_insert(next);
    }
    let unlimited = ResourceVec {
        gpus: [u64::MAX / 64; GpuModel::ALL.len()],
        cpu_millis: u64::MAX / 64,
        memory_mib: u64::MAX / 64,
    };
    let tenants: Vec<TenantSpec> = tenant_ids
        .keys()
        .map(|name| TenantSpec {
            name: name.to_string(),
            weight: 1.0,
            cohort: None,
            quota: unlimited,
        })
        .collect();
    let mut s = Scheduler::new(Engine::new(fleet), tenants, config.sched.clone())
        .map_err(|e| e.to_string())?;
    let mut heap: BinaryHeap<Reverse<(Time, Event)>> = BinaryHeap::new();
    for (i, j) in jobs.iter().enumerate() {
        heap.push(Reverse((j.submit, Event::Submit(i as u32))));
    }
    let mut rng = Rng::new(config.seed);
    if let Some(f) = &config.faults {
        for n in 0..node_count {
            heap.push(Reverse((rng.exp(f.node_mtbf) as Time, Event::Fail(n))));
        }
    }
    heap.push(Reverse((0, Event::Sample)));
    let mut runs: Vec<JobRun> = jobs
        .iter()
        .map(|j| JobRun {
            remaining: j.duration as f64,
            ..JobRun::default()
        })
        .collect();
    let mut tally = Tally::default();
    let tenant_of: Vec<usize> = jobs
        .iter()
        .map(|j| tenant_ids[j.tenant.as_str()].0 as usize)
        .collect();
    let mut pending_by_tenant = vec![0u64; tenant_ids.len()];
    let mut samples = Vec::new();
    let total = jobs.len() as u64;
    let mut done = 0u64;
    let mut busy_gpu_seconds = 0.0f64;
    let (total_gpus, _) = s.engine().gpu_usage();
    // Busy GPUs, kept by the loop itself (the engine's totals walk every node).
    let mut busy_gpus = 0u64;
    let mut last_t = 0;
    let mut last_busy = 0u64;
    while let Some(Reverse((now, first))) = heap.pop() {
        if done == total && !matches!(first, Event::Finish(..)) {
            break;
        }
        // Integrate busy GPUs over time for the utilisation mean.
        busy_gpu_seconds += (now - last_t) as f64 * last_busy as f64;
        last_t = now;
        let mut events = vec![first];
        while let Some(Reverse((t, e))) = heap.peek().copied() {
            if t != now {
                break;
            }
            heap.pop();
            events.push(e);
        }
        let mut changed = false;
        let mut decisions = Vec::new();
        for e in events {
            match e {
                Event::Submit(i) => {
                    let j = &jobs[i as usize];
                    let spec = JobSpec {
                        tenant: tenant_ids[j.tenant.as_str()],
                        priority: j.priority,
                        gang: gang_for(j.gpus, model, per_node),
                        time_limit: j.time_limit.clamp(1, JobSpec::MAX_TIME_LIMIT),
                    };
                    pending_by_tenant[tenant_of[i as usize]] += 1;
                    s.submit(WorkloadId(i as u64), spec, now)
                        .map_err(|e| format!("job {}: {e}", j.id))?;
                    changed = true;
                }
                Event::Finish(i, epoch) => {
                    let r = &mut runs[i as usize];
                    if r.epoch == epoch && r.finished.is_none() && r.started.is_some() {
                        s.finish(WorkloadId(i as u64), now)
                            .map_err(|e| e.to_string())?;
                        busy_gpus -= gang_for(jobs[i as usize].gpus, model, per_node).total_gpus();
                        r.finished = Some(now);
                        r.started = None;
                        r.remaining = 0.0;
                        done += 1;
                        tally.finished += 1;
                        changed = true;
                        if done.is_multiple_of(1024) || done == total {
                            progress(done, total);
                        }
                    }
                }
                Event::Fail(n) => {
                    // Report checkpoints of the jobs on the node, then fail it.
                    for w in s.engine().workloads_on(NodeId(n)) {
                        let i = w.0 as usize;
                        if let (Some(start), Some(every)) = (
                            runs.get(i).and_then(|r| r.started),
                            jobs.get(i).and_then(|j| j.checkpoint_interval),
                        ) {
                            let r = &runs[i];
                            let done_work = (now - start) as f64 * r.rate;
                            let saved = (done_work / every as f64).floor() * every as f64;
                            if saved > 0.0 {
                                let at = start + (saved / r.rate).ceil() as Time;
                                let _ = s.checkpoint(w, at.min(now));
                            }
                        }
                    }
                    tally.failures += 1;
                    decisions.extend(s.fail(Scope::Node(NodeId(n)), now));
                    if let Some(f) = &config.faults {
                        heap.push(Reverse((now + f.repair, Event::Repair(n))));
                    }
                    changed = true;
                }
                Event::Repair(n) => {
                    s.set_state(Scope::Node(NodeId(n)), NodeState::Ready);
                    if let Some(f) = &config.faults {
                        let next = now + f.repair.max(1) + rng.exp(f.node_mtbf) as Time;
                        heap.push(Reverse((next, Event::Fail(n))));
                    }
                    changed = true;
                }
                Event::Wake => changed = true,
                Event::Sample => {
                    samples.push(Sample {
                        t: now,
                        gpu_util: if total_gpus > 0 {
                            busy_gpus as f64 / total_gpus as f64
                        } else {
                            0.0
                        },
                        // No CPU workloads in these traces yet: CPU hosts stay idle.
                        cpu_util: 0.0,
                        queue_len: s.pending_count() as u64,
                        running: s.running_count() as u64,
                        whole_free_domains: s.engine().whole_free_domains(),
                        fair_dev: fair_deviation(&s, &pending_by_tenant),
                    });
                    if done < total {
                        heap.push(Reverse((
                            now + config.sample_interval.max(1),
                            Event::Sample,
                        )));
                    }
                }
            }
        }
        if changed {
            decisions.extend(s.schedule(now));
        }
        for d in decisions {
            match d {
                Decision::Start { job, slots } => {
                    pending_by_tenant[tenant_of[job.0 as usize]] -= 1;
                    let i = job.0 as usize;
                    let (levels, ndomains) = levels_spanned(s.engine().fleet(), &heights, &slots);
                    let r = &mut runs[i];
                    r.rate = config.speed.factor(levels);
                    r.started = Some(now);
                    r.first_start.get_or_insert(now);
                    r.levels = levels;
                    r.epoch += 1;
                    let end = now + (r.remaining / r.rate).ceil().max(1.0) as Time;
                    heap.push(Reverse((end, Event::Finish(i as u32, r.epoch))));
                    tally.starts += 1;
                    busy_gpus += gang_for(jobs[i].gpus, model, per_node).total_gpus();
                    let gpus = u64::from(jobs[i].gpus);
                    if gpus <= domain_gpus {
                        tally.small_gangs += 1;
                        tally.small_in_one_domain += u64::from(ndomains <= 1);
                    }
                    tally.levels_sum += u64::from(levels);
                }
                Decision::Requeue { job, .. } | Decision::Replace { job, .. } => {
                    if matches!(d, Decision::Requeue { .. }) {
                        pending_by_tenant[tenant_of[job.0 as usize]] += 1;
                    }
                    let i = job.0 as usize;
                    let restart_in_place = matches!(d, Decision::Replace { .. });
                    let r = &mut runs[i];
                    if let Some(start) = r.started {
                        let done_work = (now - start) as f64 * r.rate;
                        let saved = match jobs[i].checkpoint_interval {
                            Some(every) => (done_work / every as f64).floor() * every as f64,
                            None => 0.0,
                        };
                        r.remaining = (r.remaining - saved).max(1.0);
                    }
                    r.epoch += 1;
                    tally.restarts += 1;
                    if !restart_in_place && r.started.is_some() {
                        busy_gpus -= gang_for(jobs[i].gpus, model, per_node).total_gpus();
                    }
                    if restart_in_place {
                        r.started = Some(now);
                        let end = now + (r.remaining / r.rate).ceil().max(1.0) as Time;
                        heap.push(Reverse((end, Event::Finish(i as u32, r.epoch))));
                    } else {
                        r.started = None;
                    }
                }
                Decision::Preempt { deadline, .. } => heap.push(Reverse((deadline, Event::Wake))),
                Decision::Reserve { start, .. } => {
                    heap.push(Reverse((start.max(now + 1), Event::Wake)))
                }
                Decision::SandboxesMoved { .. } | Decision::SandboxesLost { .. } => {}
            }
        }
        last_busy = busy_gpus;

        if config.check_invariants {
            let (_, free) = s.engine().gpu_usage();
            s.check_invariants().map_err(|v| format!("t={now}: {v}"))?;
            // Busy + free = total, from the runs' side: GPUs of running jobs match the engine.
            let running_gpus: u64 = s
                .running_jobs()
                .iter()
                .map(|id| gang_for(jobs[id.0 as usize].gpus, model, per_node).total_gpus())
                .sum();
            let ready_gpus: u64 = s
                .engine()
                .fleet()
                .nodes()
                .iter()
                .filter(|n| n.state == NodeState::Ready)
                .map(|n| u64::from(n.capacity.gpus))
                .sum();
            if running_gpus != busy_gpus {
                return Err(format!(
                    "t={now}: loop counts {busy_gpus} busy GPUs, jobs hold {running_gpus}"
                ));
            }
            if running_gpus + free != ready_gpus {
                return Err(format!(
                    "t={now}: {running_gpus} busy + {free} free != {ready_gpus} on ready nodes"
                ));
            }
            let running_runs = runs.iter().filter(|r| r.started.is_some()).count();
            if running_runs != s.running_jobs().len() {
                return Err(format!(
                    "t={now}: {running_runs} runs in progress but the queue runs {}",
                    s.running_jobs().len()
                ));
            }
        }
    }
    if done < total {
        return Err(format!(
            "{} of {total} jobs never finished (some ask for more than the fleet can ever give)",
            total - done
        ));
    }
    let lost: f64 = s.tenant_report().iter().map(|t| t.lost_gpu_hours).sum();
    let per_job: Vec<(Time, Time, Time, String, u64)> = jobs
        .iter()
        .zip(&runs)
        .map(|(j, r)| {
            (
                j.submit,
                r.first_start.unwrap_or(j.submit),
                r.finished.unwrap_or(j.submit),
                j.tenant.clone(),
                u64::from(j.gpus) * j.duration,
            )
        })
        .collect();
    Ok(Report::build(
        &config.policy,
        &per_job,
        &tally,
        samples,
        busy_gpu_seconds,
        total_gpus,
        lost,
    ))
}
