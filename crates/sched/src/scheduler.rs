//! The queue: decides *when* and *whom* to place; the [`Engine`] decides *where*.
//!
//! One [`Scheduler::schedule`] pass, at a time given by the caller:
//! 1. preemptions whose grace period has ended stop their victims (requeued from their last
//!    checkpoint), and preemptors waiting on them start on the capacity held for them;
//! 2. pending jobs are taken by priority class (highest first), then by weighted dominant
//!    resource share of their tenant (lowest first), then by submission order;
//! 3. each job is admitted only if its tenant's quota (or idle quota borrowed from its cohort)
//!    covers it *and* the engine can place it now — quota and topology in one step;
//! 4. a job that cannot be placed may preempt lower-priority work (or work borrowed from its
//!    cohort), whole gangs only, cheapest first, and only if the preemption makes it fit;
//! 5. the first job that can neither be placed nor preempt for gets a reservation on concrete
//!    nodes at its earliest start (from running jobs' time limits); those nodes are held;
//! 6. backfill: pending jobs whose time limit ends before the reservation may use held nodes.
//!
//! Every pending job keeps a reason a person can read ([`Scheduler::pending_reason`]).

use crate::engine::{Allocation, Engine, EngineError, NodeSlot, Scope, Time};
use model::{
    GangRequest, JobSpec, NodeId, NodeState, PriorityClass, ResourceVec, TenantId, TenantSpec,
    WorkloadId,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use std::collections::BTreeSet;

/// Tunables of the queue.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedConfig {
    /// Seconds a preempted job gets to checkpoint before it is stopped.
    pub grace_period: Time,
    /// A job is preempted at most this many times (no thrash); then it is protected.
    pub max_preemptions: u32,
    /// A job that started less than this many seconds ago is not preempted.
    pub min_runtime: Time,
    /// Preemption searches per pass (each may release many victims tentatively).
    pub preemption_searches_per_pass: u32,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            grace_period: 120,
            max_preemptions: 3,
            min_runtime: 600,
            preemption_searches_per_pass: 8,
        }
    }
}

/// Where a job is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum JobState {
    /// Waiting to be placed.
    Pending,
    /// Placed and running since `since`.
    Running {
        /// Start time.
        since: Time,
    },
    /// Told to checkpoint and stop by `deadline`, to make room for `by`.
    Preempting {
        /// Start time of the current run.
        since: Time,
        /// When it is stopped.
        deadline: Time,
        /// The job it makes room for.
        by: WorkloadId,
    },
    /// Ended by itself.
    Finished,
    /// Cancelled by its owner.
    Cancelled,
}

/// A job and its accounting.
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    /// Identity.
    pub id: WorkloadId,
    /// What was asked.
    #[serde(skip)]
    pub spec: JobSpec,
    /// Submission time.
    pub submitted: Time,
    /// Life state.
    pub state: JobState,
    /// Last reported checkpoint (restarts resume from it).
    pub last_checkpoint: Option<Time>,
    /// Admitted on idle quota borrowed from its cohort.
    pub borrowed: bool,
    /// Times it was preempted.
    pub preemptions: u32,
    /// Times it was requeued (preemption or failure).
    pub restarts: u32,
    /// GPU-hours of work lost to preemption and failures (since the last checkpoint).
    pub lost_gpu_hours: f64,
    /// Why it is not running, when it is pending.
    pub reason: Option<String>,
    seq: u64,
    /// Nodes held for it while its victims finish their grace period.
    hold: Vec<NodeId>,
    /// `Scheduler::changes` when a preemption search for it last found nothing.
    no_victims_at: Option<u64>,
    /// Victims it waits for.
    waiting_for: Vec<WorkloadId>,
}

impl Job {
    fn gpus(&self) -> u64 {
        self.spec.gang.total_gpus()
    }

    fn running_since(&self) -> Option<Time> {
        match self.state {
            JobState::Running { since } | JobState::Preempting { since, .. } => Some(since),
            _ => None,
        }
    }

    /// End of the current run by its time limit.
    fn limit_end(&self) -> Option<Time> {
        self.running_since()
            .map(|s| s.saturating_add(self.spec.time_limit))
    }

    /// GPU-hours of work done since its last checkpoint (lost if stopped now).
    fn unsaved_gpu_hours(&self, now: Time) -> f64 {
        let Some(since) = self.running_since() else {
            return 0.0;
        };
        let from = self.last_checkpoint.map_or(since, |c| c.max(since));
        now.saturating_sub(from) as f64 * self.gpus() as f64 / 3600.0
    }
}

/// A decision of the queue, for the caller to act on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum Decision {
    /// Start the job on these nodes.
    Start {
        /// Job.
        job: WorkloadId,
        /// Nodes and devices.
        slots: Vec<NodeSlot>,
    },
    /// Tell the job to checkpoint and stop by `deadline`, to make room for `by`.
    Preempt {
        /// Victim.
        job: WorkloadId,
        /// Preemptor.
        by: WorkloadId,
        /// Stop time.
        deadline: Time,
    },
    /// The job stopped (preempted or its node failed) and is queued again.
    Requeue {
        /// Job.
        job: WorkloadId,
        /// GPU-hours lost since its last checkpoint.
        lost_gpu_hours: f64,
    },
    /// Nodes are held for the job from `start` on.
    Reserve {
        /// Job.
        job: WorkloadId,
        /// Earliest start.
        start: Time,
        /// Nodes held.
        nodes: usize,
    },
}

/// A request the queue refuses (bad input at its edge).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    /// A field is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// Reason.
        reason: String,
    },
    /// No such job.
    #[error("job {0} is not known")]
    UnknownJob(WorkloadId),
    /// The id is taken.
    #[error("job {0} already exists")]
    DuplicateJob(WorkloadId),
    /// The job is not in a state that allows this.
    #[error("job {id} is {state}; {reason}")]
    WrongState {
        /// Job.
        id: WorkloadId,
        /// Its state.
        state: String,
        /// Why that refuses the request.
        reason: &'static str,
    },
}

#[derive(Clone)]
struct TenantState {
    spec: TenantSpec,
    usage: ResourceVec,
    lost_gpu_hours: f64,
}

/// The reservation of this pass: nodes held for one job from `start`.
#[derive(Clone, Debug)]
struct Reservation {
    job: WorkloadId,
    start: Time,
    nodes: Vec<NodeId>,
    /// `Scheduler::stops` when it was computed: it can only move earlier after a stop.
    stops_at: u64,
}

/// Tenant figures for reports and tests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantReport {
    /// Name.
    pub name: String,
    /// Resources its running jobs hold.
    pub usage: ResourceVec,
    /// Weighted dominant share (usage / fleet total / weight).
    pub dominant_share: f64,
    /// GPU-hours lost to preemption and failures.
    pub lost_gpu_hours: f64,
}

/// The queue over an [`Engine`].
#[derive(Clone)]
pub struct Scheduler {
    engine: Engine,
    config: SchedConfig,
    tenants: Vec<TenantState>,
    jobs: FxHashMap<WorkloadId, Job>,
    pending: BTreeSet<(u64, WorkloadId)>,
    running: BTreeSet<WorkloadId>,
    fleet_total: ResourceVec,
    next_seq: u64,
    reservation: Option<Reservation>,
    /// The last reservation announced, so that a pass only reports changes.
    last_reserved: Option<(WorkloadId, Time, Vec<NodeId>)>,
    /// Counts jobs stopping and node state changes (what can make a reservation earlier).
    stops: u64,
    /// Counts every start and stop (what can change the set of preemption victims).
    changes: u64,
}

impl Scheduler {
    /// A queue over `engine` with tenants `tenants` (their index is their [`TenantId`]).
    pub fn new(
        engine: Engine,
        tenants: Vec<TenantSpec>,
        config: SchedConfig,
    ) -> Result<Self, SchedError> {
        let mut names = FxHashSet::default();
        for t in &tenants {
            if t.name.is_empty() || !names.insert(t.name.clone()) {
                return Err(SchedError::Invalid {
                    field: "tenants.name",
                    reason: format!("'{}' is empty or declared twice", t.name),
                });
            }
            if !(t.weight.is_finite() && t.weight > 0.0) {
                return Err(SchedError::Invalid {
                    field: "tenants.weight",
                    reason: format!("tenant '{}': weight must be a finite number > 0", t.name),
                });
            }
        }
        let mut fleet_total = ResourceVec::default();
        for n in engine.fleet().nodes() {
            if let Some(m) = n.capacity.gpu_model {
                fleet_total.gpus[m.index()] += u64::from(n.capacity.gpus);
            }
            fleet_total.cpu_millis += u64::from(n.capacity.cpu_millis);
            fleet_total.memory_mib += u64::from(n.capacity.memory_mib);
        }
        Ok(Scheduler {
            engine,
            config,
            tenants: tenants
                .into_iter()
                .map(|spec| TenantState {
                    spec,
                    usage: ResourceVec::default(),
                    lost_gpu_hours: 0.0,
                })
                .collect(),
            jobs: FxHashMap::default(),
            pending: BTreeSet::new(),
            running: BTreeSet::new(),
            fleet_total,
            next_seq: 0,
            reservation: None,
            last_reserved: None,
            stops: 0,
            changes: 0,
        })
    }

    /// The engine (read-only: every change goes through the queue).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A job.
    pub fn job(&self, id: WorkloadId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    /// Why a pending job is not running.
    pub fn pending_reason(&self, id: WorkloadId) -> Option<&str> {
        self.jobs.get(&id).and_then(|j| j.reason.as_deref())
    }

    /// Pending jobs, in submission order.
    pub fn pending_jobs(&self) -> Vec<WorkloadId> {
        self.pending.iter().map(|(_, id)| *id).collect()
    }

    /// Running (and preempting) jobs, by id.
    pub fn running_jobs(&self) -> Vec<WorkloadId> {
        self.running.iter().copied().collect()
    }

    /// The current reservation: (job, start, nodes held).
    pub fn reservation(&self) -> Option<(WorkloadId, Time, &[NodeId])> {
        self.reservation
            .as_ref()
            .map(|r| (r.job, r.start, r.nodes.as_slice()))
    }

    /// Per-tenant usage, share and losses.
    pub fn tenant_report(&self) -> Vec<TenantReport> {
        self.tenants
            .iter()
            .map(|t| TenantReport {
                name: t.spec.name.clone(),
                usage: t.usage,
                dominant_share: t.usage.dominant_share(&self.fleet_total) / t.spec.weight,
                lost_gpu_hours: t.lost_gpu_hours,
            })
            .collect()
    }

    /// Queues a job.
    pub fn submit(&mut self, id: WorkloadId, spec: JobSpec, now: Time) -> Result<(), SchedError> {
        spec.validate().map_err(|e| SchedError::Invalid {
            field: e.field,
            reason: e.reason,
        })?;
        if spec.tenant.0 as usize >= self.tenants.len() {
            return Err(SchedError::Invalid {
                field: "tenant",
                reason: format!("no tenant with id {}", spec.tenant.0),
            });
        }
        if self.jobs.contains_key(&id) {
            return Err(SchedError::DuplicateJob(id));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.jobs.insert(
            id,
            Job {
                id,
                spec,
                submitted: now,
                state: JobState::Pending,
                last_checkpoint: None,
                borrowed: false,
                preemptions: 0,
                restarts: 0,
                lost_gpu_hours: 0.0,
                reason: Some("not yet considered by a scheduling pass".into()),
                seq,
                hold: Vec::new(),
                no_victims_at: None,
                waiting_for: Vec::new(),
            },
        );
        self.pending.insert((seq, id));
        Ok(())
    }

    /// Records a job's checkpoint: a restart resumes from here.
    pub fn checkpoint(&mut self, id: WorkloadId, now: Time) -> Result<(), SchedError> {
        let job = self.jobs.get_mut(&id).ok_or(SchedError::UnknownJob(id))?;
        if job.running_since().is_none() {
            return Err(SchedError::WrongState {
                id,
                state: format!("{:?}", job.state),
                reason: "only a running job checkpoints",
            });
        }
        job.last_checkpoint = Some(now);
        Ok(())
    }

    /// A running job ended by itself.
    pub fn finish(&mut self, id: WorkloadId, _now: Time) -> Result<(), SchedError> {
        let job = self.jobs.get(&id).ok_or(SchedError::UnknownJob(id))?;
        if job.running_since().is_none() {
            return Err(SchedError::WrongState {
                id,
                state: format!("{:?}", job.state),
                reason: "only a running job finishes",
            });
        }
        self.stop(id);
        if let Some(j) = self.jobs.get_mut(&id) {
            j.state = JobState::Finished;
        }
        Ok(())
    }

    /// Cancels a job wherever it is.
    pub fn cancel(&mut self, id: WorkloadId, _now: Time) -> Result<(), SchedError> {
        let job = self.jobs.get(&id).ok_or(SchedError::UnknownJob(id))?;
        match job.state {
            JobState::Finished | JobState::Cancelled => {
                return Err(SchedError::WrongState {
                    id,
                    state: format!("{:?}", job.state),
                    reason: "it has already ended",
                })
            }
            JobState::Pending => {
                let key = (job.seq, id);
                let hold = job.hold.clone();
                self.pending.remove(&key);
                self.engine.unhold(&hold);
            }
            _ => self.stop(id),
        }
        if let Some(j) = self.jobs.get_mut(&id) {
            j.state = JobState::Cancelled;
            j.hold.clear();
            j.reason = None;
        }
        Ok(())
    }

    /// Releases a running job's resources and usage (state is set by the caller).
    fn stop(&mut self, id: WorkloadId) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        // A victim that stops (for whatever reason) is no longer waited for.
        if let JobState::Preempting { by, .. } = job.state {
            if let Some(p) = self.jobs.get_mut(&by) {
                p.waiting_for.retain(|v| *v != id);
            }
        }
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let usage = ResourceVec::of_gang(&job.spec.gang);
        let tenant = job.spec.tenant.0 as usize;
        let _ = self.engine.release(id);
        self.running.remove(&id);
        self.stops += 1;
        self.changes += 1;
        let t = &mut self.tenants[tenant];
        t.usage = t.usage.minus(&usage);
    }

    /// Stops a running job and queues it again from its last checkpoint.
    fn requeue(&mut self, id: WorkloadId, now: Time, out: &mut Vec<Decision>) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let lost = job.unsaved_gpu_hours(now);
        let tenant = job.spec.tenant.0 as usize;
        self.stop(id);
        self.tenants[tenant].lost_gpu_hours += lost;
        if let Some(j) = self.jobs.get_mut(&id) {
            j.state = JobState::Pending;
            j.lost_gpu_hours += lost;
            j.restarts += 1;
            j.borrowed = false;
            j.reason = Some("requeued; waiting for the next pass".into());
            self.pending.insert((j.seq, id));
        }
        out.push(Decision::Requeue {
            job: id,
            lost_gpu_hours: lost,
        });
    }

    /// Nodes of a scope go down: every job on them is requeued from its last checkpoint.
    pub fn fail(&mut self, scope: Scope, now: Time) -> Vec<Decision> {
        let change = self.engine.set_state(scope, NodeState::Down);
        self.stops += 1;
        let mut out = Vec::new();
        for id in change.affected {
            if self.running.contains(&id) {
                self.requeue(id, now, &mut out);
            }
        }
        out
    }

    /// Nodes of a scope come back (or are cordoned, drained...): no job is moved by this.
    pub fn set_state(&mut self, scope: Scope, state: NodeState) -> Vec<WorkloadId> {
        self.stops += 1;
        self.engine.set_state(scope, state).affected
    }

    fn tenant_share(&self, t: TenantId) -> f64 {
        let ts = &self.tenants[t.0 as usize];
        ts.usage.dominant_share(&self.fleet_total) / ts.spec.weight
    }

    /// Quota check: Ok(borrowed?) or the reason it is refused.
    fn admit(&self, job: &Job) -> Result<bool, String> {
        let ask = ResourceVec::of_gang(&job.spec.gang);
        let t = &self.tenants[job.spec.tenant.0 as usize];
        let after = t.usage.plus(&ask);
        if after.fits_in(&t.spec.quota) {
            return Ok(false);
        }
        let Some(cohort) = &t.spec.cohort else {
            let (what, want, have) = after.first_excess(&t.spec.quota).unwrap_or_default();
            return Err(format!(
                "tenant '{}' quota: would use {want} {what}, quota is {have} (no cohort to borrow from)",
                t.spec.name
            ));
        };
        // Idle quota of the cohort: the sum of members' quotas minus the sum of their usage.
        let (mut quota, mut usage) = (ResourceVec::default(), ResourceVec::default());
        for m in self
            .tenants
            .iter()
            .filter(|m| m.spec.cohort.as_ref() == Some(cohort))
        {
            quota = quota.plus(&m.spec.quota);
            usage = usage.plus(&m.usage);
        }
        let cohort_after = usage.plus(&ask);
        if cohort_after.fits_in(&quota) {
            return Ok(true);
        }
        let (what, want, have) = cohort_after.first_excess(&quota).unwrap_or_default();
        Err(format!(
            "tenant '{}' quota: cohort '{cohort}' would use {want} {what}, its quotas total {have}",
            t.spec.name
        ))
    }

    /// Running jobs `job` may preempt, cheapest first.
    fn victims_for(&self, job: &Job, within_own_quota: bool, now: Time) -> Vec<WorkloadId> {
        let cohort = self.tenants[job.spec.tenant.0 as usize]
            .spec
            .cohort
            .as_ref();
        let mut cands: Vec<(f64, PriorityClass, WorkloadId)> = self
            .running
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .filter(|v| matches!(v.state, JobState::Running { .. }))
            .filter(|v| v.spec.gang.gpu == job.spec.gang.gpu)
            .filter(|v| {
                let lower = v.spec.priority < job.spec.priority;
                let reclaim = within_own_quota
                    && v.borrowed
                    && v.spec.tenant != job.spec.tenant
                    && cohort.is_some()
                    && self.tenants[v.spec.tenant.0 as usize].spec.cohort.as_ref() == cohort;
                lower || reclaim
            })
            .filter(|v| {
                v.preemptions < self.config.max_preemptions
                    && v.running_since()
                        .is_some_and(|s| now.saturating_sub(s) >= self.config.min_runtime)
            })
            .map(|v| (v.unsaved_gpu_hours(now), v.spec.priority, v.id))
            .collect();
        cands.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        cands.into_iter().map(|c| c.2).collect()
    }

    /// Finds the shortest prefix of `order` whose release lets `gang` be placed; returns its
    /// length and the nodes the gang would get. The engine is left exactly as it was.
    fn shortest_release_prefix(
        &mut self,
        order: &[WorkloadId],
        gang: &GangRequest,
    ) -> Option<(usize, Vec<NodeSlot>)> {
        let mut released: Vec<(WorkloadId, Allocation)> = Vec::new();
        let probe =
            |engine: &mut Engine, k: usize, released: &mut Vec<(WorkloadId, Allocation)>| {
                while released.len() < k {
                    let id = order[released.len()];
                    match engine.release(id) {
                        Ok(a) => released.push((id, a)),
                        Err(_) => return None,
                    }
                }
                while released.len() > k {
                    if let Some((id, a)) = released.pop() {
                        // Exact: it was released a moment ago and nothing else changed.
                        let _ = engine.reinstate(id, a);
                    }
                }
                engine.plan_gang(gang).ok().map(|p| p.slots)
            };
        // Exponential steps, then binary search between the last failure and the first success.
        let n = order.len();
        let (mut lo, mut hi) = (0usize, None);
        let mut k = 1usize;
        while k <= n {
            if probe(&mut self.engine, k, &mut released).is_some() {
                hi = Some(k);
                break;
            }
            lo = k;
            if k == n {
                break;
            }
            k = (k * 2).min(n);
        }
        let mut result = None;
        if let Some(mut hi) = hi {
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                if probe(&mut self.engine, mid, &mut released).is_some() {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            result = probe(&mut self.engine, hi, &mut released).map(|slots| (hi, slots));
        }
        let _ = probe(&mut self.engine, 0, &mut released);
        result
    }

    /// Tries to make room for `id` by preemption. Returns the decisions, or None.
    fn try_preempt(
        &mut self,
        id: WorkloadId,
        within_own_quota: bool,
        now: Time,
    ) -> Option<Vec<Decision>> {
        let job = self.jobs.get(&id)?;
        let gang = job.spec.gang.clone();
        let order = self.victims_for(job, within_own_quota, now);
        if order.is_empty() {
            return None;
        }
        // Never preempt for a gang that would still not fit.
        let (k, slots) = self.shortest_release_prefix(&order, &gang)?;
        let plan_nodes: FxHashSet<NodeId> = slots.iter().map(|s| s.node).collect();
        let victims: Vec<WorkloadId> = order[..k]
            .iter()
            .copied()
            .filter(|v| match self.engine.allocation(*v) {
                Some(Allocation::Gang { slots, .. }) => {
                    slots.iter().any(|s| plan_nodes.contains(&s.node))
                }
                _ => false,
            })
            .collect();
        let deadline = now + self.config.grace_period;
        let mut out = Vec::new();
        for v in &victims {
            if let Some(j) = self.jobs.get_mut(v) {
                let since = j.running_since().unwrap_or(now);
                j.state = JobState::Preempting {
                    since,
                    deadline,
                    by: id,
                };
                j.preemptions += 1;
                out.push(Decision::Preempt {
                    job: *v,
                    by: id,
                    deadline,
                });
            }
        }
        let hold: Vec<NodeId> = {
            let mut v: Vec<NodeId> = plan_nodes.into_iter().collect();
            v.sort_unstable();
            v
        };
        self.engine.hold(&hold);
        if let Some(j) = self.jobs.get_mut(&id) {
            j.hold = hold;
            j.waiting_for = victims;
            j.reason = Some(format!(
                "waiting for preemption grace of {} until t={deadline}",
                list(&j.waiting_for)
            ));
        }
        Some(out)
    }

    /// Earliest start of `gang` from running jobs' time limits, and the nodes it would get.
    fn earliest_start(&mut self, gang: &GangRequest, now: Time) -> Option<(Time, Vec<NodeSlot>)> {
        let mut order: Vec<(Time, WorkloadId)> = self
            .running
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .filter(|j| j.spec.gang.gpu == gang.gpu)
            .map(|j| {
                let end = match j.state {
                    JobState::Preempting { deadline, .. } => deadline,
                    _ => j.limit_end().unwrap_or(now),
                };
                (end.max(now), j.id)
            })
            .collect();
        order.sort_unstable();
        let ids: Vec<WorkloadId> = order.iter().map(|o| o.1).collect();
        let (k, slots) = self.shortest_release_prefix(&ids, gang)?;
        Some((order[k - 1].0, slots))
    }

    fn try_start(
        &mut self,
        id: WorkloadId,
        now: Time,
        borrowed: bool,
        out: &mut Vec<Decision>,
    ) -> Result<(), EngineError> {
        let Some(job) = self.jobs.get(&id) else {
            return Ok(());
        };
        let gang = job.spec.gang.clone();
        let tenant = job.spec.tenant.0 as usize;
        let placement = self.engine.place_gang(id, &gang, now)?;
        let t = &mut self.tenants[tenant];
        t.usage = t.usage.plus(&ResourceVec::of_gang(&gang));
        if let Some(j) = self.jobs.get_mut(&id) {
            self.pending.remove(&(j.seq, id));
            j.state = JobState::Running { since: now };
            j.borrowed = borrowed;
            j.reason = None;
        }
        self.running.insert(id);
        self.changes += 1;
        out.push(Decision::Start {
            job: id,
            slots: placement.slots,
        });
        Ok(())
    }

    /// One scheduling pass at time `now`.
    pub fn schedule(&mut self, now: Time) -> Vec<Decision> {
        let mut out = Vec::new();
        // 1. Preemptions whose grace has ended.
        let expired: Vec<WorkloadId> = self
            .running
            .iter()
            .filter(|id| matches!(self.jobs.get(id).map(|j| &j.state), Some(JobState::Preempting { deadline, .. }) if *deadline <= now))
            .copied()
            .collect();
        for id in expired {
            self.requeue(id, now, &mut out);
        }
        // A reservation outlives passes (so that nothing queued ahead can take its nodes) until
        // its job starts, leaves the queue, or a higher-priority job needs it.
        let stale = self.reservation.as_ref().is_some_and(|r| {
            self.jobs
                .get(&r.job)
                .is_none_or(|j| j.state != JobState::Pending)
        });
        if stale {
            if let Some(r) = self.reservation.take() {
                self.engine.unhold(&r.nodes);
            }
        }
        // 2. Order: priority class, weighted dominant share, submission.
        let shares: Vec<f64> = (0..self.tenants.len())
            .map(|t| self.tenant_share(TenantId(t as u32)))
            .collect();
        let mut order: Vec<(std::cmp::Reverse<PriorityClass>, f64, u64, WorkloadId)> = self
            .pending
            .iter()
            .filter_map(|(_, id)| self.jobs.get(id))
            .map(|j| {
                (
                    std::cmp::Reverse(j.spec.priority),
                    shares[j.spec.tenant.0 as usize],
                    j.seq,
                    j.id,
                )
            })
            .collect();
        order.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut searches = 0;
        // Shapes that failed this pass: (gpu, gpus/node, cpu, mem, segment) → fewest nodes that failed.
        let mut failed: FxHashMap<ShapeKey, (u32, WorkloadId)> = FxHashMap::default();
        let mut backfill: Vec<WorkloadId> = Vec::new();
        for &(_, _, _, id) in &order {
            // The reserved job itself gets its nodes back to try them (and a fresh reservation).
            let mut previous: Option<Reservation> = None;
            if self.reservation.as_ref().is_some_and(|r| r.job == id) {
                if let Some(r) = self.reservation.take() {
                    self.engine.unhold(&r.nodes);
                    failed.clear(); // capacity grew: earlier failures say nothing now
                    previous = Some(r);
                }
            }
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            // A preemptor whose victims are gone starts on the capacity held for it.
            if !job.hold.is_empty() {
                let waiting = job.waiting_for.iter().any(|v| self.running.contains(v));
                if waiting {
                    continue;
                }
                let hold = job.hold.clone();
                let admitted = self.admit(job);
                self.engine.unhold(&hold);
                failed.clear();
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.hold.clear();
                    j.waiting_for.clear();
                }
                // Quota is checked again: other work of the tenant may have started meanwhile.
                if let Ok(borrowed) = admitted {
                    if self.try_start(id, now, borrowed, &mut out).is_ok() {
                        continue;
                    }
                }
            }
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            let borrowed = match self.admit(job) {
                Ok(b) => b,
                Err(reason) => {
                    if let Some(j) = self.jobs.get_mut(&id) {
                        j.reason = Some(reason);
                    }
                    continue;
                }
            };
            let g = &job.spec.gang;
            let shape = (
                g.gpu.index(),
                g.gpus_per_node,
                g.cpu_millis_per_node,
                g.memory_mib_per_node,
                g.segment,
            );
            let known_fail = failed
                .get(&shape)
                .filter(|(n, _)| g.nodes >= *n)
                .map(|(_, by)| *by);
            let placed = match known_fail {
                Some(_) => Err(None),
                None => self.try_start(id, now, borrowed, &mut out).map_err(Some),
            };
            let Err(err) = placed else { continue };
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            let g = job.spec.gang.clone();
            let shape = (
                g.gpu.index(),
                g.gpus_per_node,
                g.cpu_millis_per_node,
                g.memory_mib_per_node,
                g.segment,
            );
            failed
                .entry(shape)
                .and_modify(|e| {
                    if g.nodes < e.0 {
                        *e = (g.nodes, id)
                    }
                })
                .or_insert((g.nodes, id));
            // 4. Preemption (not searched again while nothing started or stopped).
            let searched_in_vain = job.no_victims_at == Some(self.changes);
            if searches < self.config.preemption_searches_per_pass && !searched_in_vain {
                searches += 1;
                if let Some(decisions) = self.try_preempt(id, !borrowed, now) {
                    out.extend(decisions);
                    continue;
                }
                let changes = self.changes;
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.no_victims_at = Some(changes);
                }
            }
            // A reservation nothing could have moved earlier is kept as it was.
            if let Some(r) =
                previous.filter(|r| r.stops_at == self.stops && self.reservation.is_none())
            {
                self.engine.hold(&r.nodes);
                self.reservation = Some(r);
                continue;
            }
            // 5. Reservation for the first job that could not be placed (or a more urgent one).
            let priority = g_priority(&self.jobs, id);
            let takes_over = match &self.reservation {
                None => true,
                Some(r) => g_priority(&self.jobs, r.job) < priority,
            };
            if takes_over {
                if let Some(r) = self.reservation.take() {
                    self.engine.unhold(&r.nodes);
                    failed.clear();
                }
                if let Some((start, slots)) = self.earliest_start(&g, now) {
                    let mut nodes: Vec<NodeId> = slots.iter().map(|s| s.node).collect();
                    nodes.sort_unstable();
                    self.engine.hold(&nodes);
                    let unchanged = self
                        .last_reserved
                        .as_ref()
                        .is_some_and(|(j, t, n)| *j == id && *t == start && *n == nodes);
                    if !unchanged {
                        out.push(Decision::Reserve {
                            job: id,
                            start,
                            nodes: nodes.len(),
                        });
                        self.last_reserved = Some((id, start, nodes.clone()));
                    }
                    if let Some(j) = self.jobs.get_mut(&id) {
                        j.reason = Some(format!(
                            "reserved {} nodes from t={start} (when running jobs reach their time limits)",
                            nodes.len()
                        ));
                    }
                    self.reservation = Some(Reservation {
                        job: id,
                        start,
                        nodes,
                        stops_at: self.stops,
                    });
                    continue;
                }
            }
            let reason = match (err, known_fail) {
                (_, Some(by)) => {
                    format!("a job of the same shape ({by}) could not be placed in this pass")
                }
                (Some(EngineError::Unplaceable(u)), _) => u.reason,
                (Some(e), _) => e.to_string(),
                (None, None) => "could not be placed".into(),
            };
            let reason = match &self.reservation {
                Some(r) => format!(
                    "{reason}; {} nodes are held for {}'s reservation until t={}",
                    r.nodes.len(),
                    r.job,
                    r.start
                ),
                None => reason,
            };
            if let Some(j) = self.jobs.get_mut(&id) {
                j.reason = Some(reason);
            }
            backfill.push(id);
        }
        // 6. Backfill onto reserved nodes: only jobs that end before the reservation starts.
        if let Some(r) = self.reservation.clone() {
            self.engine.unhold(&r.nodes);
            for id in backfill {
                let Some(j) = self.jobs.get(&id) else {
                    continue;
                };
                let fits_before = j.state == JobState::Pending
                    && j.hold.is_empty()
                    && now + j.spec.time_limit <= r.start;
                // Quota again: work started since the main loop counts.
                if let (true, Ok(borrowed)) = (fits_before, self.admit(j)) {
                    let _ = self.try_start(id, now, borrowed, &mut out);
                }
            }
            self.engine.hold(&r.nodes);
        }
        out
    }
}

impl Scheduler {
    /// Checks the queue's invariants from scratch; returns the first violation.
    ///
    /// The engine's own invariants; every running job holds exactly its gang and every other
    /// job holds nothing (so no two gangs can each hold part of what the other needs); tenant
    /// usage is the sum of their running jobs; work admitted on a tenant's own quota fits it;
    /// every hold on a node belongs to the reservation or to a preemptor waiting on victims.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.engine.check_invariants()?;
        let mut ids: Vec<&WorkloadId> = self.jobs.keys().collect();
        ids.sort_unstable();
        let mut usage = vec![ResourceVec::default(); self.tenants.len()];
        let mut own = vec![ResourceVec::default(); self.tenants.len()];
        let mut holds = vec![0u32; self.engine.fleet().nodes().len()];
        for id in ids {
            let j = &self.jobs[id];
            let alloc = self.engine.allocation(*id);
            let running = j.running_since().is_some();
            if running != self.running.contains(id) {
                return Err(format!(
                    "{id}: running set disagrees with state {:?}",
                    j.state
                ));
            }
            if (j.state == JobState::Pending) != self.pending.contains(&(j.seq, *id)) {
                return Err(format!(
                    "{id}: pending set disagrees with state {:?}",
                    j.state
                ));
            }
            match (running, alloc) {
                (true, Some(Allocation::Gang { request, .. })) if *request == j.spec.gang => {}
                (false, None) => {}
                _ => {
                    return Err(format!(
                        "{id}: state {:?} but allocation {:?}",
                        j.state,
                        alloc.is_some()
                    ))
                }
            }
            if running {
                let t = j.spec.tenant.0 as usize;
                let u = ResourceVec::of_gang(&j.spec.gang);
                usage[t] = usage[t].plus(&u);
                if !j.borrowed {
                    own[t] = own[t].plus(&u);
                }
            }
            if !j.hold.is_empty() && j.state != JobState::Pending {
                return Err(format!("{id}: holds nodes but is not pending"));
            }
            for n in &j.hold {
                holds[n.0 as usize] += 1;
            }
            for v in &j.waiting_for {
                let victim_ok = self.jobs.get(v).is_some_and(|x| match x.state {
                    JobState::Preempting { by, .. } => by == *id,
                    _ => true, // already stopped: the preemptor starts at its next turn
                });
                if !victim_ok {
                    return Err(format!("{id}: waits for {v} which is not preempted for it"));
                }
            }
        }
        for (i, t) in self.tenants.iter().enumerate() {
            if t.usage != usage[i] {
                return Err(format!(
                    "tenant {}: usage {:?} but jobs hold {:?}",
                    t.spec.name, t.usage, usage[i]
                ));
            }
            if !own[i].fits_in(&t.spec.quota) {
                return Err(format!(
                    "tenant {}: own-quota work exceeds its quota",
                    t.spec.name
                ));
            }
        }
        if let Some(r) = &self.reservation {
            for n in &r.nodes {
                holds[n.0 as usize] += 1;
            }
        }
        for (i, h) in holds.iter().enumerate() {
            let actual = u32::from(self.engine.is_held(NodeId(i as u32)));
            if actual != u32::from(*h > 0) {
                return Err(format!("node {i}: held {actual} but {h} holders"));
            }
        }
        Ok(())
    }
}

/// A gang's shape apart from its node count: (GPU model, GPUs/node, CPU, memory, segment).
type ShapeKey = (usize, u8, u32, u32, Option<u32>);

fn g_priority(jobs: &FxHashMap<WorkloadId, Job>, id: WorkloadId) -> PriorityClass {
    jobs.get(&id)
        .map_or(PriorityClass::Preemptible, |j| j.spec.priority)
}

fn list(ids: &[WorkloadId]) -> String {
    let v: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    v.join(", ")
}
