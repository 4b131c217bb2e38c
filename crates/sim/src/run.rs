//! The event loop: trace arrivals (jobs, services, sandbox batches), job ends, sandbox ends,
//! autoscaling ticks, faults, drains, repairs and deliveries in virtual time; after the
//! events of each instant, one scheduling pass of the real queue; its decisions become new
//! events (a start schedules an end at the speed its placement allows; a preemption or a
//! reservation schedules a pass at its deadline).
//!
//! A node may be down for several reasons at once (a random failure inside a failed region,
//! or not yet delivered): the loop counts the reasons per node and tells the queue only when
//! a node's first reason comes or its last one goes.

mod check;
mod ending;
mod measure;
mod nodes;
mod sandboxes;

pub use measure::{fair_deviation, max_min_fair};
use measure::{heights, levels_spanned};

use crate::faults::{ChangeKind, FaultPlan, ResolvedPlan};
use crate::fit::Shapes;
use crate::report::{Report, Sample, Tally};
use crate::rng::Rng;
use crate::speed::SpeedModel;
use crate::trace::Trace;
use model::{
    Fleet, GangRequest, GpuModel, JobSpec, NodeId, NodeState, ResourceVec, SandboxRequest,
    ServiceSpec, TenantId, TenantSpec, TopoId, WorkloadId,
};
use rustc_hash::FxHashMap;
use sched::autoscale::{AutoscalePolicy, Autoscaler, Load};
use sched::{Allocation, Decision, Engine, NodeSlot, SchedConfig, Scheduler, Scope, Time};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::ops::Range;

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
    /// Faults, drains and capacity ramps.
    pub faults: FaultPlan,
    /// Seed of the random faults and sandbox lifetimes.
    pub seed: u64,
    /// Seconds between utilisation samples.
    pub sample_interval: Time,
    /// Seconds between autoscaling decisions of each service.
    pub autoscale_interval: Time,
    /// Sandbox ends are rounded up to a multiple of this many seconds (one event per tick
    /// and chunk, not per sandbox).
    pub sandbox_tick: Time,
    /// Check every invariant of the queue and engine after each instant (slow; for tests).
    pub check_invariants: bool,
    /// Commitments the report measures the run's spend against.
    pub commitments: Vec<model::commitment::Commitment>,
    /// The date of time 0, as Unix seconds (commitments are dated).
    pub epoch: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            policy: "stargrid".into(),
            sched: SchedConfig::default(),
            speed: SpeedModel::default(),
            faults: FaultPlan::default(),
            seed: 1,
            sample_interval: 3600,
            autoscale_interval: 300,
            sandbox_tick: 60,
            check_invariants: false,
            commitments: Vec::new(),
            epoch: 0,
        }
    }
}

/// Workload ids from here up name sandbox chunks (below the replica ids).
const SANDBOX_BASE: u64 = 1 << 61;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Step `1` of ramp `0` arrives (first: capacity before work at one instant).
    Deliver(u32, u32),
    /// A node comes back from a random failure.
    Repair(u32),
    /// Timed change `0` ends (repair or undrain).
    ChangeEnds(u32),
    /// A node fails at random.
    Fail(u32),
    /// Timed change `0` begins.
    ChangeBegins(u32),
    /// A job's current run ends (job index, run epoch).
    Finish(u32, u32),
    /// Sandboxes of chunk `0` from position `1` of its end list end.
    SandboxEnd(u32, u32),
    /// A service is deleted.
    ServiceEnd(u32),
    /// A trace job arrives.
    Submit(u32),
    /// A service is created.
    ServiceStart(u32),
    /// A sandbox batch arrives.
    SandboxSubmit(u32),
    /// A service's autoscaler looks at its load.
    Autoscale(u32),
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
    /// The model its latest run got (work of several models).
    on_model: Option<GpuModel>,
    /// The thousandths of GPUs it holds while it runs.
    gpu_milli: u64,
}

/// A placed part of a sandbox batch.
struct Chunk {
    batch: u32,
    /// `(end time, index in the chunk)`, sorted; emptied once all have ended.
    ends: Vec<(Time, u32)>,
}

/// A service's scaler and counts.
struct ServiceRun {
    scaler: Autoscaler,
    live: bool,
    desired: u32,
    gpus_per_replica: u64,
}

/// Runs `trace` on `fleet` under `config`; `progress(done, total)` is called now and then
/// with workloads (jobs, sandbox batches, services with an end) finished.
pub fn simulate(
    fleet: Fleet,
    trace: &Trace,
    config: &SimConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, String> {
    let plan = config.faults.resolve(&fleet)?;
    let mut sim = Sim::new(fleet, trace, config, plan)?;
    sim.run(progress)?;
    Ok(sim.report())
}

/// The state of one run.
struct Sim<'a> {
    trace: &'a Trace,
    config: &'a SimConfig,
    plan: ResolvedPlan,
    s: Scheduler,
    heap: BinaryHeap<Reverse<(Time, Event)>>,
    fault_rng: Rng,
    life_rng: Rng,
    /// The run's GPU model and node sizes: the gangs trace work becomes.
    shapes: Shapes,
    heights: Vec<u8>,
    domain_gpus: u64,
    tenant_ids: BTreeMap<String, TenantId>,
    tenant_of_job: Vec<usize>,
    // Training jobs.
    runs: Vec<JobRun>,
    jobs_done: u64,
    pending_gpus: Vec<u64>,
    // Services.
    services: Vec<ServiceRun>,
    running_replicas: FxHashMap<WorkloadId, u64>,
    services_to_end: u64,
    services_ended: u64,
    desired_replicas: u64,
    replica_seconds_wanted: f64,
    replica_seconds_short: f64,
    // Sandboxes.
    chunks: Vec<Chunk>,
    backlog: VecDeque<(u32, u32)>,
    sandboxes_total: u64,
    sandboxes_ended: u64,
    batch_left: Vec<u32>,
    batches_done: u64,
    latency: Vec<(f64, u64)>,
    busy_cpu: u64,
    cpu_room_changed: bool,
    // Nodes.
    down: Vec<u8>,
    /// A random failure holds the node down, and its repair is queued.
    repairing: Vec<bool>,
    /// Events queued that do not recur (see [`Event::recurs`]).
    finite_queued: u64,
    /// Of those, the queue's wake-ups (a pass due).
    wakes_queued: u64,
    /// The progress count (starts and ends) at the last sample that saw it change, and when
    /// (see [`Sim::only_the_impossible_left`]).
    stalled_since: Option<(u64, Time)>,
    drained: Vec<u8>,
    gpus_up: u64,
    cpu_up: u64,
    /// Busy GPU capacity in thousandths (a share counts its part of a device).
    busy_gpus: u64,
    /// The same per model, and their integral (by [`GpuModel::index`]).
    busy_by_model: Vec<u64>,
    /// The model each busy workload holds.
    busy_on: FxHashMap<WorkloadId, GpuModel>,
    busy_model_seconds: Vec<f64>,
    // Metrics.
    tally: Tally,
    samples: Vec<Sample>,
    busy_gpu_seconds: f64,
    up_gpu_seconds: f64,
    busy_cpu_seconds: f64,
    up_cpu_seconds: f64,
    last_t: Time,
    // Failovers: scopes that failed at this instant, and what each failure displaced.
    failing_now: Vec<String>,
    failovers: Vec<crate::cost::Failover>,
}

impl<'a> Sim<'a> {
    fn new(
        fleet: Fleet,
        trace: &'a Trace,
        config: &'a SimConfig,
        plan: ResolvedPlan,
    ) -> Result<Sim<'a>, String> {
        // The fleet's GPU model and node sizes: the gangs trace work becomes (every job and
        // service could fit, see `fit::check`).
        let shapes = match Shapes::of(&fleet) {
            Some(s) => s,
            None if trace.jobs.is_empty() && trace.services.is_empty() => {
                Shapes::single(GpuModel::H100, vec![8])
            }
            None => return Err("the trace has GPU work but the fleet has no GPU nodes".into()),
        };
        if let Some(b) = trace.sandboxes.first() {
            let hosts: Vec<(u32, u32)> = fleet
                .nodes()
                .iter()
                .filter(|n| n.capacity.gpus == 0)
                .map(|n| (n.capacity.cpu_millis, n.capacity.memory_mib))
                .collect();
            // Host by host: one with less CPU may have the memory another lacks.
            let fits = |b: &crate::trace::TraceSandboxes| {
                hosts
                    .iter()
                    .any(|&(c, m)| b.cpu_millis <= c && b.memory_mib <= m)
            };
            if hosts.is_empty() {
                return Err(format!(
                    "sandboxes {}: the fleet has no CPU hosts to run them",
                    b.id
                ));
            }
            if let Some(b) = trace.sandboxes.iter().find(|b| !fits(b)) {
                return Err(format!(
                    "sandboxes {}: one sandbox is larger than any CPU host",
                    b.id
                ));
            }
        }
        if trace.jobs.is_empty()
            && trace.sandboxes.is_empty()
            && trace.services.iter().all(|v| v.end.is_none())
            && !trace.services.is_empty()
        {
            return Err("the trace has only services without an end: give them an end".into());
        }
        let heights = heights(&fleet);
        let domain_gpus = fleet
            .domains()
            .iter()
            .map(|d| {
                let t = fleet.topo_node(*d);
                t.nodes
                    .clone()
                    .map(|n| u64::from(fleet.node(model::NodeId(n)).capacity.gpus))
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);
        // Tenants from the trace, equal weights, quotas that never bind (traces have none).
        let mut tenant_ids: BTreeMap<String, TenantId> = BTreeMap::new();
        let names = trace
            .jobs
            .iter()
            .map(|j| &j.tenant)
            .chain(trace.services.iter().map(|v| &v.tenant))
            .chain(trace.sandboxes.iter().map(|b| &b.tenant));
        for name in names {
            let next = TenantId(tenant_ids.len() as u32);
            tenant_ids.entry(name.clone()).or_insert(next);
        }
        let unlimited = ResourceVec {
            gpus: [u64::MAX / 64; GpuModel::ALL.len()],
            cpu_millis: u64::MAX / 64,
            memory_mib: u64::MAX / 64,
        };
        let tenants: Vec<TenantSpec> = tenant_ids
            .keys()
            .map(|name| TenantSpec {
                name: name.clone(),
                weight: 1.0,
                cohort: None,
                quota: unlimited,
            })
            .collect();
        let (gpus_up, cpu_up) = fleet.nodes().iter().fold((0, 0), |(g, c), n| {
            if n.capacity.gpus > 0 {
                (g + u64::from(n.capacity.gpus), c)
            } else {
                (g, c + u64::from(n.capacity.cpu_millis))
            }
        });
        let node_count = fleet.nodes().len();
        let s = Scheduler::new(Engine::new(fleet), tenants, config.sched.clone())
            .map_err(|e| e.to_string())?;
        let tenant_of_job = trace
            .jobs
            .iter()
            .map(|j| tenant_ids[&j.tenant].0 as usize)
            .collect();
        let services = trace
            .services
            .iter()
            .map(|v| ServiceRun {
                scaler: Autoscaler::new(AutoscalePolicy {
                    min_replicas: v.min_replicas,
                    max_replicas: v.max_replicas,
                    target_inflight_per_replica: Some(v.inflight_per_replica),
                    target_p95_ms: None,
                    scale_up_window: 0,
                    scale_down_window: 600,
                }),
                live: false,
                desired: 0,
                gpus_per_replica: shapes.replica_gang(v).total_gpus(),
            })
            .collect();
        let runs = trace
            .jobs
            .iter()
            .map(|j| JobRun {
                remaining: j.duration as f64,
                gpu_milli: shapes.job_gang(j).total_gpu_milli(),
                ..JobRun::default()
            })
            .collect();
        Ok(Sim {
            trace,
            config,
            plan,
            s,
            heap: BinaryHeap::new(),
            fault_rng: Rng::new(config.seed),
            life_rng: Rng::new(config.seed ^ 0x5A4D_B0C5),
            shapes,
            heights,
            domain_gpus,
            pending_gpus: vec![0; tenant_ids.len()],
            tenant_ids,
            tenant_of_job,
            runs,
            jobs_done: 0,
            services,
            running_replicas: FxHashMap::default(),
            services_to_end: trace.services.iter().filter(|v| v.end.is_some()).count() as u64,
            services_ended: 0,
            desired_replicas: 0,
            replica_seconds_wanted: 0.0,
            replica_seconds_short: 0.0,
            chunks: Vec::new(),
            backlog: VecDeque::new(),
            sandboxes_total: trace.sandboxes.iter().map(|b| u64::from(b.count)).sum(),
            sandboxes_ended: 0,
            batch_left: trace.sandboxes.iter().map(|b| b.count).collect(),
            batches_done: 0,
            latency: Vec::new(),
            busy_cpu: 0,
            cpu_room_changed: false,
            down: vec![0; node_count],
            repairing: vec![false; node_count],
            finite_queued: 0,
            wakes_queued: 0,
            stalled_since: None,
            drained: vec![0; node_count],
            gpus_up,
            cpu_up,
            busy_gpus: 0,
            busy_by_model: vec![0; GpuModel::ALL.len()],
            busy_on: FxHashMap::default(),
            busy_model_seconds: vec![0.0; GpuModel::ALL.len()],
            tally: Tally::default(),
            samples: Vec::new(),
            busy_gpu_seconds: 0.0,
            up_gpu_seconds: 0.0,
            busy_cpu_seconds: 0.0,
            up_cpu_seconds: 0.0,
            last_t: 0,
            failing_now: Vec::new(),
            failovers: Vec::new(),
        })
    }

    fn units_total(&self) -> u64 {
        self.trace.jobs.len() as u64 + self.trace.sandboxes.len() as u64 + self.services_to_end
    }

    fn units_done(&self) -> u64 {
        self.jobs_done + self.batches_done + self.services_ended
    }

    fn all_done(&self) -> bool {
        self.units_done() == self.units_total()
    }

    fn gang(&self, i: usize) -> GangRequest {
        self.shapes.job_gang(&self.trace.jobs[i])
    }

    fn run(&mut self, progress: &mut dyn FnMut(u64, u64)) -> Result<(), String> {
        let trace = self.trace;
        for (i, j) in trace.jobs.iter().enumerate() {
            self.push(j.submit, Event::Submit(i as u32));
        }
        for (i, v) in trace.services.iter().enumerate() {
            self.push(v.submit, Event::ServiceStart(i as u32));
            if let Some(end) = v.end {
                self.push(end, Event::ServiceEnd(i as u32));
            }
        }
        for (i, b) in trace.sandboxes.iter().enumerate() {
            self.push(b.submit, Event::SandboxSubmit(i as u32));
        }
        if let Some(f) = &self.config.faults.random {
            for n in 0..self.down.len() as u32 {
                let at = self.fault_rng.exp(f.node_mtbf) as Time;
                self.push(at, Event::Fail(n));
            }
        }
        let changes: Vec<Time> = self.plan.changes.iter().map(|(c, _)| c.at).collect();
        for (i, at) in changes.into_iter().enumerate() {
            self.push(at, Event::ChangeBegins(i as u32));
        }
        // Committed capacity is paid for from the start of the run.
        self.s.open_books(0);
        // Ramped capacity is out of service until its step arrives.
        let ramps: Vec<(Time, Time, Vec<Range<u32>>)> = self
            .plan
            .ramps
            .iter()
            .map(|(r, steps)| (r.start, r.every, steps.clone()))
            .collect();
        let mut decisions = Vec::new();
        for (r, (start, every, steps)) in ramps.into_iter().enumerate() {
            for (k, nodes) in steps.into_iter().enumerate() {
                for n in nodes.clone() {
                    self.s.set_delivered(NodeId(n), false, 0);
                }
                self.take_down(nodes, 0, &mut decisions);
                let at = start.saturating_add(every.saturating_mul(k as u64));
                self.push(at, Event::Deliver(r as u32, k as u32));
            }
        }
        self.push(0, Event::Sample);
        let total = self.units_total();
        while let Some((now, first)) = self.pop() {
            if self.all_done() {
                break;
            }
            self.advance(now);
            let mut events = vec![first];
            while let Some(Reverse((t, _))) = self.heap.peek().copied() {
                if t != now {
                    break;
                }
                if let Some((_, e)) = self.pop() {
                    events.push(e);
                }
            }
            // At a sample with nothing but recurring events at the same instant, the run may
            // be over.
            if events.contains(&Event::Sample)
                && events.iter().all(Event::recurs)
                && self.only_the_impossible_left(now)
            {
                // What is left can never start: the run ends, and the report counts it.
                self.sample(now);
                break;
            }
            let mut changed = false;
            for e in events {
                changed |= self.apply(e, now, &mut decisions)?;
            }
            if self.cpu_room_changed {
                self.cpu_room_changed = false;
                self.place_backlog(now);
            }
            if changed {
                decisions.extend(self.s.schedule(now));
            }
            if !self.failing_now.is_empty() {
                self.record_failover(now, &decisions);
            }
            for d in decisions.drain(..) {
                self.act(d, now);
            }
            let done = self.units_done();
            if done != self.tally.progress_reported && (done.is_multiple_of(1024) || done == total)
            {
                self.tally.progress_reported = done;
                progress(done, total);
            }
            if self.config.check_invariants {
                self.check(now)?;
            }
        }
        Ok(())
    }

    /// Integrates busy and in-service capacity up to `now`.
    fn advance(&mut self, now: Time) {
        let dt = (now - self.last_t) as f64;
        self.busy_gpu_seconds += dt * self.busy_gpus as f64;
        for (seconds, busy) in self.busy_model_seconds.iter_mut().zip(&self.busy_by_model) {
            *seconds += dt * *busy as f64;
        }
        self.up_gpu_seconds += dt * self.gpus_up as f64;
        self.busy_cpu_seconds += dt * self.busy_cpu as f64;
        self.up_cpu_seconds += dt * self.cpu_up as f64;
        let running = self.running_replicas.len() as f64;
        let wanted = self.desired_replicas as f64;
        self.replica_seconds_wanted += dt * wanted;
        self.replica_seconds_short += dt * (wanted - running).max(0.0);
        self.last_t = now;
    }

    /// Applies one event; returns whether the queue should run a pass.
    fn apply(&mut self, e: Event, now: Time, out: &mut Vec<Decision>) -> Result<bool, String> {
        let trace = self.trace;
        match e {
            Event::Submit(i) => {
                let j = &trace.jobs[i as usize];
                let spec = JobSpec {
                    tenant: self.tenant_ids[&j.tenant],
                    priority: j.priority,
                    gang: self.gang(i as usize),
                    time_limit: j.time_limit.clamp(1, JobSpec::MAX_TIME_LIMIT),
                    placement: j.placement.as_deref().cloned().unwrap_or_default(),
                };
                self.pending_gpus[self.tenant_of_job[i as usize]] += spec.gang.total_gpu_milli();
                self.s
                    .submit(WorkloadId(u64::from(i)), spec, now)
                    .map_err(|e| format!("job {}: {e}", j.id))?;
            }
            Event::Finish(i, epoch) => {
                let r = &self.runs[i as usize];
                if r.epoch != epoch || r.finished.is_some() || r.started.is_none() {
                    return Ok(false);
                }
                self.s
                    .finish(WorkloadId(u64::from(i)), now)
                    .map_err(|e| e.to_string())?;
                let gpus = self.runs[i as usize].gpu_milli;
                self.count_busy(WorkloadId(u64::from(i)), gpus, false);
                let r = &mut self.runs[i as usize];
                r.finished = Some(now);
                r.started = None;
                r.remaining = 0.0;
                self.jobs_done += 1;
                self.tally.finished += 1;
            }
            Event::ServiceStart(k) => {
                let v = &trace.services[k as usize];
                let spec = ServiceSpec {
                    tenant: self.tenant_ids[&v.tenant],
                    priority: v.priority,
                    replica: self.shapes.replica_gang(v),
                    min_replicas: v.min_replicas,
                    max_replicas: v.max_replicas,
                    spread: v.spread,
                    placement: v.placement.clone(),
                    min_providers: v.min_providers,
                };
                self.s
                    .create_service(u64::from(k), spec, now)
                    .map_err(|e| format!("service {}: {e}", v.id))?;
                let svc = &mut self.services[k as usize];
                svc.live = true;
                svc.desired = v.min_replicas;
                self.desired_replicas += u64::from(v.min_replicas);
                self.autoscale(k, now)?;
            }
            Event::Autoscale(k) => {
                if !self.services[k as usize].live {
                    return Ok(false);
                }
                return self.autoscale(k, now);
            }
            Event::ServiceEnd(k) => {
                let svc = &mut self.services[k as usize];
                if !svc.live {
                    return Ok(false);
                }
                svc.live = false;
                self.desired_replicas -= u64::from(svc.desired);
                let stopped = self
                    .s
                    .delete_service(u64::from(k), now)
                    .map_err(|e| e.to_string())?;
                self.forget_replicas(&stopped);
                self.services_ended += 1;
            }
            Event::SandboxSubmit(b) => {
                self.backlog.push_back((b, 0));
                self.cpu_room_changed = true;
                return Ok(false);
            }
            Event::SandboxEnd(c, pos) => {
                self.end_sandboxes(c, pos, now)?;
                return Ok(false);
            }
            Event::Fail(n) => {
                self.tally.failures += 1;
                self.take_down(n..n + 1, now, out);
                if let Some(f) = &self.config.faults.random {
                    self.repairing[n as usize] = true;
                    self.push(now + f.repair, Event::Repair(n));
                }
            }
            Event::Repair(n) => {
                self.repairing[n as usize] = false;
                self.bring_up(n..n + 1);
                if let Some(f) = &self.config.faults.random {
                    let next = now + f.repair.max(1) + self.fault_rng.exp(f.node_mtbf) as Time;
                    self.push(next, Event::Fail(n));
                }
            }
            Event::ChangeBegins(i) => {
                let (c, nodes) = self.plan.changes[i as usize].clone();
                match c.kind {
                    ChangeKind::Fail => {
                        self.tally.failures += 1;
                        self.failing_now.push(c.scope.clone());
                        self.take_down(nodes, now, out);
                    }
                    ChangeKind::Drain => self.drain(nodes, true),
                }
                if let Some(lasts) = c.lasts {
                    self.push(now.saturating_add(lasts), Event::ChangeEnds(i));
                }
            }
            Event::ChangeEnds(i) => {
                let (c, nodes) = self.plan.changes[i as usize].clone();
                match c.kind {
                    ChangeKind::Fail => self.bring_up(nodes),
                    ChangeKind::Drain => self.drain(nodes, false),
                }
            }
            Event::Deliver(r, k) => {
                let nodes = self.plan.ramps[r as usize].1[k as usize].clone();
                for n in nodes.clone() {
                    self.s.set_delivered(NodeId(n), true, now);
                }
                self.bring_up(nodes);
            }
            Event::Wake => {}
            Event::Sample => {
                self.sample(now);
                if !self.all_done() {
                    self.push(now + self.config.sample_interval.max(1), Event::Sample);
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One autoscaling decision for service `k`, and the next tick.
    fn autoscale(&mut self, k: u32, now: Time) -> Result<bool, String> {
        let v = &self.trace.services[k as usize];
        let load = Load {
            inflight: v.load.at(now),
            p95_ms: None,
        };
        let svc = &mut self.services[k as usize];
        let current = svc.desired;
        let want = svc.scaler.observe(now, current, &load);
        let mut changed = false;
        if want != current {
            let scaled = self
                .s
                .scale_service(u64::from(k), want, now)
                .map_err(|e| e.to_string())?;
            let svc = &mut self.services[k as usize];
            self.desired_replicas =
                self.desired_replicas - u64::from(svc.desired) + u64::from(scaled.desired);
            svc.desired = scaled.desired;
            self.forget_replicas(&scaled.stopped);
            changed = true;
        }
        let next = now + self.config.autoscale_interval.max(1);
        if v.end.is_none_or(|e| next < e) {
            self.push(next, Event::Autoscale(k));
        }
        Ok(changed)
    }

    /// Running replicas the queue stopped (a scale-down or a deletion).
    fn forget_replicas(&mut self, stopped: &[WorkloadId]) {
        for id in stopped {
            if let Some(g) = self.running_replicas.remove(id) {
                self.count_busy(*id, g, false);
            }
        }
    }

    /// A training job about to lose a node reports the last checkpoint its progress reached.
    fn report_checkpoint(&mut self, w: WorkloadId, now: Time) {
        let i = w.0 as usize;
        let (Some(run), Some(job)) = (self.runs.get(i), self.trace.jobs.get(i)) else {
            return;
        };
        let (Some(start), Some(every)) = (run.started, job.checkpoint_interval) else {
            return;
        };
        let done_work = (now - start) as f64 * run.rate;
        let saved = (done_work / every as f64).floor() * every as f64;
        if saved > 0.0 {
            let at = start + (saved / run.rate).ceil() as Time;
            let _ = self.s.checkpoint(w, at.min(now));
        }
    }

    /// Acts on one decision of the queue.
    fn act(&mut self, d: Decision, now: Time) {
        match d {
            Decision::Start { job, slots } => {
                if job.as_replica().is_some() {
                    let gpus = self.s.job(job).map_or(0, |j| j.spec.gang.total_gpu_milli());
                    self.running_replicas.insert(job, gpus);
                    self.count_busy(job, gpus, true);
                    self.tally.replica_starts += 1;
                    return;
                }
                let i = job.0 as usize;
                let gpus = self.runs[i].gpu_milli;
                self.pending_gpus[self.tenant_of_job[i]] -= gpus;
                self.runs[i].on_model = self.s.job(job).map(|j| j.spec.gang.gpu);
                let (levels, ndomains) =
                    levels_spanned(self.s.engine().fleet(), &self.heights, &slots);
                let on = self.runs[i].on_model.unwrap_or_else(|| self.model_of(job));
                let model_speed = self.config.speed.model_factor(on);
                let r = &mut self.runs[i];
                r.rate = self.config.speed.factor(levels) * model_speed;
                r.started = Some(now);
                r.first_start.get_or_insert(now);
                r.epoch += 1;
                let end = now + (r.remaining / r.rate).ceil().max(1.0) as Time;
                let epoch = r.epoch;
                self.push(end, Event::Finish(i as u32, epoch));
                self.tally.starts += 1;
                self.count_busy(job, gpus, true);
                if u64::from(self.trace.jobs[i].gpus) <= self.domain_gpus {
                    self.tally.small_gangs += 1;
                    self.tally.small_in_one_domain += u64::from(ndomains <= 1);
                }
                self.tally.levels_sum += u64::from(levels);
            }
            Decision::Requeue { job, .. } | Decision::Replace { job, .. } => {
                let in_place = matches!(d, Decision::Replace { .. });
                if job.as_replica().is_some() {
                    if !in_place {
                        if let Some(g) = self.running_replicas.remove(&job) {
                            self.count_busy(job, g, false);
                        }
                    }
                    self.tally.restarts += 1;
                    return;
                }
                let i = job.0 as usize;
                let gpus = self.runs[i].gpu_milli;
                if !in_place {
                    self.pending_gpus[self.tenant_of_job[i]] += gpus;
                }
                let every = self.trace.jobs[i].checkpoint_interval;
                let r = &mut self.runs[i];
                let was_running = r.started.is_some();
                if let Some(start) = r.started {
                    let done_work = (now - start) as f64 * r.rate;
                    let saved = match every {
                        Some(every) => (done_work / every as f64).floor() * every as f64,
                        None => 0.0,
                    };
                    r.remaining = (r.remaining - saved).max(1.0);
                }
                r.epoch += 1;
                self.tally.restarts += 1;
                if in_place {
                    r.started = Some(now);
                    let end = now + (r.remaining / r.rate).ceil().max(1.0) as Time;
                    let epoch = r.epoch;
                    self.push(end, Event::Finish(i as u32, epoch));
                } else {
                    r.started = None;
                    if was_running {
                        self.count_busy(job, gpus, false);
                    }
                }
            }
            Decision::Preempt { deadline, .. } => self.push(deadline, Event::Wake),
            Decision::Reserve { start, .. } => self.push(start.max(now + 1), Event::Wake),
            Decision::SandboxesLost { batch, count, .. } => {
                let c = (batch.0 - SANDBOX_BASE) as usize;
                let b = self.chunks[c].batch as usize;
                self.busy_cpu -= u64::from(count) * u64::from(self.trace.sandboxes[b].cpu_millis);
                self.tally.sandboxes_lost += u64::from(count);
            }
            Decision::SandboxesMoved { count, .. } => {
                self.tally.sandboxes_moved += u64::from(count);
            }
        }
    }
}
