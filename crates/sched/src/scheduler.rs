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

use crate::cost::{allocation_units, Ledger, Owner, SpendClass, SpendReport};
use crate::engine::{Allocation, Engine, EngineError, NodeSlot, Scope, Time};
mod outcome;
mod pass;
mod sandboxes;
mod services;

pub use outcome::{
    BatchRecord, GangSlots, JobRecord, LiveBatch, LiveJob, Outcome, ReservationChange,
    ReservationRecord, RestoreError, ServiceRecord,
};

pub use services::{Scaled, ServiceStatus, MAX_SERVICES};

use model::{
    GangRequest, JobSpec, NodeId, NodeState, PriorityClass, ResourceVec, TenantId, TenantSpec,
    TopoId, WorkloadId,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Place of a pending job in the queue order: two order-specific keys, the submission
/// sequence, the id.
type QueueKey = (u64, u64, u64, WorkloadId);

/// What a pass needs to know of a pending job to pass it over: its shape, size, limit and class,
/// and when its last preemption search found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Brief {
    shape: ShapeKey,
    nodes: u32,
    time_limit: Time,
    priority: PriorityClass,
    tenant: TenantId,
    no_victims_at: Option<VainSearch>,
}

/// A preemption search that found nothing: the job searches again only after something started
/// or stopped and `retry_at` has passed. Each fruitless search in a row doubles the wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct VainSearch {
    /// `Scheduler::changes` at the search.
    changes: u64,
    retry_at: Time,
    /// Fruitless searches in a row before this one.
    streak: u8,
}

/// Tunables of the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedConfig {
    /// Seconds a preempted job gets to checkpoint before it is stopped.
    pub grace_period: Time,
    /// A job is preempted at most this many times (no thrash); then it is protected.
    pub max_preemptions: u32,
    /// A job that started less than this many seconds ago is not preempted.
    pub min_runtime: Time,
    /// Preemption searches per pass (each may release many victims tentatively).
    pub preemption_searches_per_pass: u32,
    /// Order in which pending jobs are considered.
    pub order: QueueOrder,
    /// Reserve for the first blocked job and backfill around it.
    pub backfill: bool,
    /// Let blocked jobs preempt lower classes (and reclaim lent quota).
    pub preemption: bool,
    /// Stop a pass at the first job that cannot start (strict FIFO).
    pub head_of_line_blocking: bool,
    /// Keep gangs on NVLink domains and low network nodes; `false` lets them scatter node by
    /// node (segment = 1).
    pub topology: bool,
    /// A reservation is recomputed (to move it earlier) at most this often, in seconds; in
    /// between it is kept as it was, which never delays it.
    pub reservation_refresh: Time,
    /// A job whose preemption search found nothing searches again only after something
    /// started or stopped *and* this many seconds passed; the wait doubles with each fruitless
    /// search in a row, up to `preemption_retry_max`.
    pub preemption_retry: Time,
    /// The longest wait between two preemption searches of one job, in seconds.
    pub preemption_retry_max: Time,
    /// A pass considers at most this many pending jobs, in queue order (a deep queue costs
    /// a pass no more than this); the rest wait for the next full pass.
    pub pass_depth: usize,
    /// A pass is full (considers every pending job) at least this often, in seconds.
    pub full_pass_interval: Time,
}

/// Orders the queue can use (the policies users know, for comparison in the simulator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueOrder {
    /// Priority class, then weighted dominant-resource share, then submission (Stargrid).
    PriorityFairShare,
    /// Priority class, then submission (Slurm's multifactor without fair share).
    PriorityFifo,
    /// Submission only.
    Fifo,
    /// Shortest declared time limit first (an oracle when limits are the true durations).
    ShortestLimitFirst,
    /// Two queues by attained service (GPU-seconds so far), FIFO within each; with preemption
    /// on, a first-queue job preempts second-queue jobs of its class (Tiresias-style).
    LeastAttained {
        /// GPU-seconds after which a job moves to the second queue.
        threshold_gpu_seconds: u64,
    },
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            grace_period: 120,
            max_preemptions: 3,
            min_runtime: 600,
            preemption_searches_per_pass: 8,
            order: QueueOrder::PriorityFairShare,
            backfill: true,
            preemption: true,
            head_of_line_blocking: false,
            topology: true,
            reservation_refresh: 60,
            preemption_retry: 60,
            preemption_retry_max: 960,
            pass_depth: 500,
            full_pass_interval: 300,
        }
    }
}

impl SchedConfig {
    /// Names of the built-in policies.
    pub const POLICIES: [&'static str; 6] =
        ["stargrid", "fifo", "first-fit", "slurm", "sjf", "las"];

    /// A built-in policy by name: `stargrid` (the default), `fifo` (strict, head-of-line
    /// blocking), `first-fit` (FIFO order, any job that fits starts, no topology), `slurm`
    /// (priority + backfill), `sjf` (shortest time limit first), `las` (two-queue least
    /// attained service).
    pub fn policy(name: &str) -> Option<SchedConfig> {
        let base = SchedConfig::default();
        let plain = SchedConfig {
            backfill: false,
            preemption: false,
            ..base.clone()
        };
        Some(match name {
            "stargrid" => base,
            "fifo" => SchedConfig {
                order: QueueOrder::Fifo,
                head_of_line_blocking: true,
                ..plain
            },
            "first-fit" => SchedConfig {
                order: QueueOrder::Fifo,
                topology: false,
                ..plain
            },
            "slurm" => SchedConfig {
                order: QueueOrder::PriorityFifo,
                backfill: true,
                ..plain
            },
            "sjf" => SchedConfig {
                order: QueueOrder::ShortestLimitFirst,
                ..plain
            },
            "las" => SchedConfig {
                order: QueueOrder::LeastAttained {
                    threshold_gpu_seconds: 3600 * 8,
                },
                preemption: true,
                ..plain
            },
            _ => return None,
        })
    }
}

/// Where a job is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// Identity.
    pub id: WorkloadId,
    /// What was asked.
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
    /// GPU-seconds of service received over all its runs so far.
    pub attained_gpu_seconds: u64,
    /// Why it is not running, when it is pending (rendered by [`Scheduler::pending_reason`]).
    pub reason: Option<Reason>,
    seq: u64,
    /// Nodes held for it while its victims finish their grace period.
    hold: Vec<NodeId>,
    /// When a preemption search for it last found nothing, and when it may search again.
    no_victims_at: Option<VainSearch>,
    /// The inference service it is a replica of.
    pub service: Option<u64>,
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

    /// GPU-hours of work done since its last checkpoint (lost if stopped now).
    fn unsaved_gpu_hours(&self, now: Time) -> f64 {
        let Some(since) = self.running_since() else {
            return 0.0;
        };
        let from = self.last_checkpoint.map_or(since, |c| c.max(since));
        now.saturating_sub(from) as f64 * self.gpus() as f64 / 3600.0
    }
}

/// Why a job is pending. Kept compact (a pass may set 100,000 of them) and rendered into
/// words only when asked, by [`Scheduler::pending_reason`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum Reason {
    /// Submitted after the last pass.
    NotConsidered,
    /// Stopped (preemption or failure) and queued again.
    Requeued,
    /// Its tenant's quota (or its cohort's) does not cover it.
    Quota {
        /// The resource that runs out.
        what: model::ResourceKind,
        /// What usage would be with this job.
        want: u64,
        /// The quota (or the cohort's total).
        have: u64,
        /// Whether the limit is the cohort's.
        cohort: bool,
    },
    /// The engine's explanation (shared by jobs of one shape in a pass).
    Unplaceable {
        /// The explanation; `None`: the engine's, worked out when asked (a pass does not
        /// spend time writing explanations nobody may read).
        text: Option<Arc<str>>,
        /// A reservation holding nodes for another job at the time, if any.
        held_for: Option<HeldFor>,
    },
    /// A job of the same shape but no more nodes could not be placed in the same pass.
    SameShape {
        /// That job.
        like: WorkloadId,
        /// A reservation holding nodes for another job at the time, if any.
        held_for: Option<HeldFor>,
    },
    /// It preempted work and waits for the victims' grace period.
    WaitingForPreemption {
        /// End of the grace period.
        until: Time,
    },
    /// Strict FIFO: a job ahead of it cannot start.
    BehindHead {
        /// The job at the head of the queue.
        head: WorkloadId,
    },
    /// It holds a reservation.
    Reserved {
        /// Earliest start.
        start: Time,
        /// Nodes held.
        nodes: usize,
    },
}

/// A decision of the queue, for the caller to act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// A failed node of the job was replaced by a spare of its domain; the rest of the gang
    /// stays where it is and restarts from its last checkpoint.
    Replace {
        /// Job.
        job: WorkloadId,
        /// The failed node.
        failed: NodeId,
        /// The spare now in its place.
        replacement: NodeId,
        /// GPU-hours lost since the last checkpoint.
        lost_gpu_hours: f64,
    },
    /// Sandboxes of a batch were moved off a failed host.
    SandboxesMoved {
        /// Batch.
        batch: WorkloadId,
        /// The failed host.
        from: NodeId,
        /// Sandboxes moved.
        count: u32,
    },
    /// Sandboxes of a batch on a failed host ended (retries spent or no room elsewhere).
    SandboxesLost {
        /// Batch.
        batch: WorkloadId,
        /// The failed host.
        from: NodeId,
        /// Sandboxes lost.
        count: u32,
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

impl Decision {
    /// One line a person can read, naming nodes by their host names.
    pub fn describe(&self, fleet: &model::Fleet) -> String {
        match self {
            Decision::Start { job, slots } => {
                let mut names: Vec<&str> =
                    slots.iter().map(|x| &*fleet.node(x.node).name).collect();
                names.sort_unstable();
                format!(
                    "start {job} on {} nodes: {}",
                    slots.len(),
                    model::hostlist::compress(&names)
                )
            }
            Decision::Preempt { job, by, deadline } => {
                format!("preempt {job} for {by}; it stops at t={deadline}")
            }
            Decision::Requeue {
                job,
                lost_gpu_hours,
            } => format!("requeue {job} (lost {lost_gpu_hours:.2} GPU-h)"),
            Decision::Replace {
                job,
                failed,
                replacement,
                lost_gpu_hours,
            } => format!(
                "replace {} by spare {} in {job} (lost {lost_gpu_hours:.2} GPU-h)",
                fleet.node(*failed).name,
                fleet.node(*replacement).name
            ),
            Decision::Reserve { job, start, nodes } => {
                format!("reserve {nodes} nodes for {job} from t={start}")
            }
            Decision::SandboxesMoved { batch, from, count } => {
                format!(
                    "moved {count} sandboxes of {batch} off {}",
                    fleet.node(*from).name
                )
            }
            Decision::SandboxesLost { batch, from, count } => format!(
                "lost {count} sandboxes of {batch} on {} (retries spent or no room)",
                fleet.node(*from).name
            ),
        }
    }
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
    /// The fleet has no room for it now (for requests that are placed at once or refused).
    #[error("{field}: {reason}")]
    NoRoom {
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

#[derive(Clone, Serialize, Deserialize)]
struct TenantState {
    spec: TenantSpec,
    usage: ResourceVec,
    lost_gpu_hours: f64,
    /// Index into `Scheduler::cohorts`.
    cohort: Option<usize>,
}

/// Sums over the members of a cohort, kept up to date as jobs start and stop.
#[derive(Clone, Serialize, Deserialize)]
struct CohortState {
    quota: ResourceVec,
    usage: ResourceVec,
}

/// The reservation of this pass: nodes held for one job from `start`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Reservation {
    job: WorkloadId,
    start: Time,
    nodes: Vec<NodeId>,
    /// `Scheduler::stops` when it was computed: it can only move earlier after a stop.
    stops_at: u64,
    /// Priority of its job (a higher one takes the reservation over).
    priority: PriorityClass,
    /// When it was computed.
    computed_at: Time,
}

impl Reservation {
    /// What a pending job's reason says of this reservation.
    fn held_for(&self) -> HeldFor {
        HeldFor {
            job: self.job,
            start: self.start,
            nodes: self.nodes.len(),
        }
    }
}

/// A reservation as a pending job's reason mentions it: nodes held for another job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldFor {
    /// The job the nodes are held for.
    pub job: WorkloadId,
    /// From when.
    pub start: Time,
    /// How many nodes.
    pub nodes: usize,
}

/// The last reservation a pass announced (a pass reports only changes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Announced {
    job: WorkloadId,
    start: Time,
    nodes: Vec<NodeId>,
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
#[derive(Clone, Serialize, Deserialize)]
pub struct Scheduler {
    engine: Engine,
    config: SchedConfig,
    tenants: Vec<TenantState>,
    cohorts: Vec<CohortState>,
    jobs: FxHashMap<WorkloadId, Job>,
    /// Pending jobs by (submission, id), with what ordering needs (no job lookups to sort).
    /// Pending jobs by (submission sequence, id), with their place in `ordered`.
    pending: BTreeMap<(u64, WorkloadId), QueueKey>,
    /// Pending jobs in queue order (under fair share, tenants are ranked at each pass), each
    /// with what a pass needs to pass it over without reading its record.
    ordered: BTreeMap<QueueKey, Brief>,
    /// Pending preemptors holding nodes while their victims stop.
    holding: FxHashSet<WorkloadId>,
    /// Shapes that failed in the last pass (renders the reason of jobs it passed over).
    last_failed: FxHashMap<ShapeKey, pass::ShapeFailure>,
    /// Preemption searches that found nothing lately: a job of that shape with as many nodes
    /// or more and no higher class does not search until then (when its victims are exactly
    /// the lower classes). Thousands of queued jobs of a few shapes would otherwise each repeat
    /// the same fruitless search.
    vain_searches: Vec<pass::VainShape>,
    /// When the next pass must consider every pending job.
    next_full_pass: Time,
    running: BTreeSet<WorkloadId>,
    /// The running jobs again, by priority class (victim searches look only below their own).
    running_by_class: [BTreeSet<WorkloadId>; 4],
    /// Jobs that ended (finished or cancelled): only their final state is kept, so that the
    /// queue's memory follows the live jobs, not every job ever submitted.
    ended: FxHashMap<WorkloadId, JobState>,
    /// Victims told to stop, by deadline (entries of jobs that ended earlier are skipped).
    preempting: BTreeSet<(Time, WorkloadId)>,
    /// Per GPU model: running jobs with a time limit by the time they end at the latest (their
    /// limit, or a preemption deadline); reservations read the earliest ends from here.
    running_ends: Vec<BTreeSet<(Time, WorkloadId)>>,
    fleet_total: ResourceVec,
    next_seq: u64,
    reservation: Option<Reservation>,
    /// The last reservation announced, so that a pass only reports changes.
    last_reserved: Option<Announced>,
    /// Inference services by id.
    services: BTreeMap<u64, services::ServiceState>,
    /// Live sandbox batches by id.
    batches: BTreeMap<WorkloadId, sandboxes::Batch>,
    /// Counts jobs stopping and node state changes (what can make a reservation earlier).
    stops: u64,
    /// Counts every start and stop (what can change the set of preemption victims).
    changes: u64,
    /// What the capacity handed out costs, per pool and owner, over time.
    ledger: Ledger,
    /// Domains each placement rule in use keeps jobs off (a memo, rebuilt as rules arrive).
    #[serde(skip)]
    rule_ranges: FxHashMap<model::PlacementRule, Arc<[(TopoId, TopoId)]>>,
    /// Workloads a change touched since the last `take_outcome`.
    #[serde(skip)]
    touched: BTreeSet<WorkloadId>,
    /// Services a change touched since the last `take_outcome`.
    #[serde(skip)]
    touched_services: BTreeSet<u64>,
    /// The reservation as the last outcome reported it.
    #[serde(default)]
    journaled_reservation: Option<ReservationRecord>,
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
        let mut cohorts: Vec<String> = Vec::new();
        for t in &tenants {
            if let Some(c) = &t.cohort {
                if !cohorts.contains(c) {
                    cohorts.push(c.clone());
                }
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
        let ledger = Ledger::new(engine.fleet(), Ledger::DAY);
        Ok(Scheduler {
            engine,
            config,
            cohorts: cohorts
                .iter()
                .map(|name| CohortState {
                    quota: tenants
                        .iter()
                        .filter(|t| t.cohort.as_ref() == Some(name))
                        .fold(ResourceVec::default(), |acc, t| acc.plus(&t.quota)),
                    usage: ResourceVec::default(),
                })
                .collect(),
            tenants: tenants
                .into_iter()
                .map(|spec| TenantState {
                    cohort: spec
                        .cohort
                        .as_ref()
                        .and_then(|c| cohorts.iter().position(|x| x == c)),
                    spec,
                    usage: ResourceVec::default(),
                    lost_gpu_hours: 0.0,
                })
                .collect(),
            jobs: FxHashMap::default(),
            pending: BTreeMap::new(),
            ordered: BTreeMap::new(),
            holding: FxHashSet::default(),
            last_failed: FxHashMap::default(),
            vain_searches: Vec::new(),
            next_full_pass: 0,
            running: BTreeSet::new(),
            running_by_class: Default::default(),
            preempting: BTreeSet::new(),
            ended: FxHashMap::default(),
            running_ends: vec![BTreeSet::new(); model::GpuModel::ALL.len()],
            fleet_total,
            next_seq: 0,
            reservation: None,
            last_reserved: None,
            services: BTreeMap::new(),
            batches: BTreeMap::new(),
            stops: 0,
            changes: 0,
            ledger,
            rule_ranges: FxHashMap::default(),
            touched: BTreeSet::new(),
            touched_services: BTreeSet::new(),
            journaled_reservation: None,
        })
    }

    /// The rules in force.
    pub fn config(&self) -> &SchedConfig {
        &self.config
    }

    /// Changes the rules from now on (a new build's defaults, an operator's choice): what was
    /// decided stands; pending jobs are put in the new queue order.
    pub fn set_config(&mut self, config: SchedConfig) {
        self.config = config;
        let pending: Vec<WorkloadId> = self.pending.keys().map(|(_, id)| *id).collect();
        self.pending.clear();
        self.ordered.clear();
        for id in pending {
            self.queue_insert(id);
        }
    }

    /// The engine (read-only: every change goes through the queue).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A live job (pending or running); ended jobs are forgotten but for their final state
    /// ([`Scheduler::ended_state`]).
    pub fn job(&self, id: WorkloadId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    /// `Finished` or `Cancelled` for a job that ended.
    pub fn ended_state(&self, id: WorkloadId) -> Option<&JobState> {
        self.ended.get(&id)
    }

    /// Why a pending job is not running.
    pub fn pending_reason(&self, id: WorkloadId) -> Option<String> {
        let job = self.jobs.get(&id)?;
        let held = |h: &Option<HeldFor>| match h {
            Some(h) => format!(
                "; {} nodes are held for {}'s reservation until t={}",
                h.nodes, h.job, h.start
            ),
            None => String::new(),
        };
        let tenant = &self.tenants[job.spec.tenant.0 as usize];
        let like = self.failed_like(job);
        Some(match job.reason.as_ref()? {
            Reason::NotConsidered | Reason::Requeued if like.is_some() => format!(
                "a job of the same shape ({}) could not be placed in the last pass",
                like.map_or_else(String::new, |l| l.to_string())
            ),
            Reason::NotConsidered => "not yet considered by a scheduling pass".into(),
            Reason::Requeued => "requeued; waiting for the next pass".into(),
            Reason::Quota { what, want, have, cohort: false } => format!(
                "tenant '{}' quota: would use {want} {what}, quota is {have} (no cohort to borrow from)",
                tenant.spec.name
            ),
            Reason::Quota { what, want, have, cohort: true } => format!(
                "tenant '{}' quota: cohort '{}' would use {want} {what}, its quotas total {have}",
                tenant.spec.name,
                tenant.spec.cohort.as_deref().unwrap_or("?")
            ),
            Reason::Unplaceable { text, held_for } => {
                let text = match text {
                    Some(t) => t.to_string(),
                    None => {
                        let spread = self.spread_filter(id);
                        match self.engine.explain_gang(&job.spec.gang, &|t| spread.allows(t)) {
                            Some(u) => u.reason,
                            None => "it fits now; it starts at the next pass".into(),
                        }
                    }
                };
                format!("{text}{}", held(held_for))
            }
            Reason::SameShape { like, held_for } => format!(
                "a job of the same shape ({like}) could not be placed in this pass{}",
                held(held_for)
            ),
            Reason::WaitingForPreemption { until } => format!(
                "waiting for preemption grace of {} until t={until}",
                list(&job.waiting_for)
            ),
            Reason::BehindHead { head } => {
                format!("first in, first out: waiting behind {head}, which cannot start")
            }
            Reason::Reserved { start, nodes } => format!(
                "reserved {nodes} nodes from t={start} (when running jobs reach their time limits)"
            ),
        })
    }

    /// A job a pass passed over (its shape had already failed) has no fresh reason: the job of
    /// its shape, no larger, that failed in the last pass.
    fn failed_like(&self, job: &Job) -> Option<WorkloadId> {
        self.last_failed
            .get(&shape_of(&job.spec))
            .filter(|f| job.spec.gang.nodes >= f.nodes)
            .map(|f| f.job)
    }

    /// Like [`Scheduler::pending_reason`], but a job passed over because a job of its shape
    /// failed gets that job's reason (followed a few steps), naming it.
    pub fn pending_root_reason(&self, id: WorkloadId) -> Option<String> {
        let mut at = id;
        for _ in 0..4 {
            let job = self.jobs.get(&at)?;
            let like = match job.reason.as_ref()? {
                Reason::SameShape { like, .. } => Some(*like),
                Reason::NotConsidered | Reason::Requeued => self.failed_like(job),
                _ => None,
            };
            match like {
                Some(l) if l != at && self.jobs.contains_key(&l) => at = l,
                _ => break,
            }
        }
        let reason = self.pending_reason(at)?;
        Some(if at == id {
            reason
        } else {
            format!("as for {at}, a job of its shape: {reason}")
        })
    }

    /// Pending jobs, in submission order.
    pub fn pending_jobs(&self) -> Vec<WorkloadId> {
        self.pending.keys().map(|(_, id)| *id).collect()
    }

    /// Number of pending jobs.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Number of running (and preempting) jobs.
    pub fn running_count(&self) -> usize {
        self.running.len()
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
        if id.0 >= REPLICA_IDS {
            return Err(SchedError::Invalid {
                field: "id",
                reason: format!(
                    "job ids must be below {REPLICA_IDS} (the rest name service replicas)"
                ),
            });
        }
        self.enqueue(id, spec, now, None)
    }

    /// Queues a job a journal accepted before, without checking it again: a later build's
    /// stricter checks must not refuse history.
    pub fn submit_recorded(
        &mut self,
        id: WorkloadId,
        spec: JobSpec,
        now: Time,
    ) -> Result<(), SchedError> {
        self.enqueue(id, spec, now, None)
    }

    /// Adds a job to the queue (no validation: callers have done it).
    fn enqueue(
        &mut self,
        id: WorkloadId,
        spec: JobSpec,
        now: Time,
        service: Option<u64>,
    ) -> Result<(), SchedError> {
        if self.jobs.contains_key(&id)
            || self.batches.contains_key(&id)
            || self.ended.contains_key(&id)
        {
            return Err(SchedError::DuplicateJob(id));
        }
        self.prepare_rule(&spec.placement);
        let mut spec = spec;
        if !self.config.topology {
            spec.gang.segment = Some(1);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.touch(id);
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
                attained_gpu_seconds: 0,
                reason: Some(Reason::NotConsidered),
                seq,
                hold: Vec::new(),
                no_victims_at: None,
                service,
                waiting_for: Vec::new(),
            },
        );
        self.queue_insert(id);
        Ok(())
    }

    /// Where a pending job sits in the persistent queue order.
    fn queue_key(&self, j: &Job) -> QueueKey {
        let class = 3 - j.spec.priority as u64;
        let (first, second) = match self.config.order {
            QueueOrder::PriorityFairShare => (class, u64::from(j.spec.tenant.0)),
            QueueOrder::PriorityFifo => (class, 0),
            QueueOrder::Fifo => (0, 0),
            QueueOrder::ShortestLimitFirst => (0, j.spec.time_limit),
            QueueOrder::LeastAttained {
                threshold_gpu_seconds,
            } => (
                u64::from(j.attained_gpu_seconds >= threshold_gpu_seconds),
                0,
            ),
        };
        (first, second, j.seq, j.id)
    }

    /// Puts a job (now pending) into the queue.
    fn queue_insert(&mut self, id: WorkloadId) {
        let Some(j) = self.jobs.get(&id) else {
            return;
        };
        let key = self.queue_key(j);
        let g = &j.spec.gang;
        let brief = Brief {
            shape: shape_of(&j.spec),
            nodes: g.nodes,
            time_limit: j.spec.time_limit,
            priority: j.spec.priority,
            tenant: j.spec.tenant,
            no_victims_at: j.no_victims_at,
        };
        self.pending.insert((j.seq, id), key);
        self.ordered.insert(key, brief);
    }

    /// Records a fruitless preemption search on the job and beside its place in the queue.
    fn note_no_victims(&mut self, id: WorkloadId, now: Time) {
        let (changes, retry, max) = (
            self.changes,
            self.config.preemption_retry,
            self.config
                .preemption_retry_max
                .max(self.config.preemption_retry),
        );
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        let streak = j
            .no_victims_at
            .map_or(0, |v| v.streak.saturating_add(1).min(16));
        let wait = retry.saturating_mul(1 << streak).min(max);
        let at = VainSearch {
            changes,
            retry_at: now.saturating_add(wait),
            streak,
        };
        j.no_victims_at = Some(at);
        if let Some(b) = self
            .pending
            .get(&(j.seq, id))
            .and_then(|k| self.ordered.get_mut(k))
        {
            b.no_victims_at = Some(at);
        }
    }

    /// Takes a job out of the queue.
    fn queue_remove(&mut self, seq: u64, id: WorkloadId) {
        if let Some(key) = self.pending.remove(&(seq, id)) {
            self.ordered.remove(&key);
        }
    }

    /// Where a running job sits in `running_ends`, if it has a time limit.
    fn end_key(j: &Job) -> Option<(usize, (Time, WorkloadId))> {
        if j.spec.time_limit >= NO_LIMIT {
            return None;
        }
        let end = match j.state {
            JobState::Preempting { deadline, .. } => deadline,
            JobState::Running { since } => since.saturating_add(j.spec.time_limit),
            _ => return None,
        };
        Some((j.spec.gang.gpu.index(), (end, j.id)))
    }

    /// Adds (`true`) or removes a running job's entry in `running_ends`.
    fn index_end(&mut self, id: WorkloadId, add: bool) {
        if let Some((m, key)) = self.jobs.get(&id).and_then(Self::end_key) {
            if add {
                self.running_ends[m].insert(key);
            } else {
                self.running_ends[m].remove(&key);
            }
        }
    }

    /// Records a job's checkpoint: a restart resumes from here.
    pub fn checkpoint(&mut self, id: WorkloadId, now: Time) -> Result<(), SchedError> {
        self.ensure_running(id, "only a running job checkpoints")?;
        if let Some(job) = self.jobs.get_mut(&id) {
            job.last_checkpoint = Some(now);
        }
        self.touch(id);
        Ok(())
    }

    /// Ok when `id` is running (or preempting), else why `reason` refuses the request.
    fn ensure_running(&self, id: WorkloadId, reason: &'static str) -> Result<(), SchedError> {
        if let Some(state) = self.ended.get(&id) {
            return Err(SchedError::WrongState {
                id,
                state: format!("{state:?}"),
                reason,
            });
        }
        let job = self.jobs.get(&id).ok_or(SchedError::UnknownJob(id))?;
        if job.running_since().is_none() {
            return Err(SchedError::WrongState {
                id,
                state: format!("{:?}", job.state),
                reason,
            });
        }
        Ok(())
    }

    /// A running job ended by itself.
    pub fn finish(&mut self, id: WorkloadId, now: Time) -> Result<(), SchedError> {
        self.ensure_running(id, "only a running job finishes")?;
        self.stop(id, now);
        self.jobs.remove(&id);
        self.ended.insert(id, JobState::Finished);
        self.touch(id);
        Ok(())
    }

    /// Cancels a job wherever it is.
    pub fn cancel(&mut self, id: WorkloadId, now: Time) -> Result<(), SchedError> {
        if let Some(state) = self.ended.get(&id) {
            return Err(SchedError::WrongState {
                id,
                state: format!("{state:?}"),
                reason: "it has already ended",
            });
        }
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
                let seq = job.seq;
                let hold = job.hold.clone();
                self.queue_remove(seq, id);
                self.engine.unhold(&hold);
            }
            _ => self.stop(id, now),
        }
        self.jobs.remove(&id);
        self.holding.remove(&id);
        self.ended.insert(id, JobState::Cancelled);
        self.touch(id);
        Ok(())
    }

    /// Releases a running job's resources and usage (state is set by the caller).
    fn stop(&mut self, id: WorkloadId, now: Time) {
        self.index_end(id, false);
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let state = job.state.clone();
        self.touch(id);
        // A victim that stops (for whatever reason) is no longer waited for.
        if let JobState::Preempting { by, .. } = state {
            self.touch(by);
            if let Some(p) = self.jobs.get_mut(&by) {
                p.waiting_for.retain(|v| *v != id);
            }
        }
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let usage = ResourceVec::of_gang(&job.spec.gang);
        let tenant = job.spec.tenant.0 as usize;
        let class = job.spec.priority as usize;
        let served = job.running_since().map_or(0, |since| {
            now.saturating_sub(since).saturating_mul(job.gpus())
        });
        if let Some(j) = self.jobs.get_mut(&id) {
            j.attained_gpu_seconds = j.attained_gpu_seconds.saturating_add(served);
        }
        let released = self.engine.release(id).ok();
        self.ledger.release(id, now);
        if let (Some(sid), Some(Allocation::Gang { slots, .. })) = (
            self.jobs.get(&id).and_then(|j| j.service),
            released.as_ref(),
        ) {
            if let Some(first) = slots.first() {
                self.count_replica(sid, first.node, false);
            }
        }
        self.running.remove(&id);
        self.running_by_class[class].remove(&id);
        self.stops += 1;
        self.changes += 1;
        self.add_usage(tenant, &usage, false);
    }

    /// Adds (`true`) or takes away a running gang's usage from its tenant and cohort.
    fn add_usage(&mut self, tenant: usize, usage: &ResourceVec, add: bool) {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        t.usage = if add {
            t.usage.plus(usage)
        } else {
            t.usage.minus(usage)
        };
        if let Some(c) = t.cohort {
            let c = &mut self.cohorts[c];
            c.usage = if add {
                c.usage.plus(usage)
            } else {
                c.usage.minus(usage)
            };
        }
    }

    /// Stops a running job and queues it again from its last checkpoint.
    fn requeue(&mut self, id: WorkloadId, now: Time, out: &mut Vec<Decision>) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let lost = job.unsaved_gpu_hours(now);
        let tenant = job.spec.tenant.0 as usize;
        self.stop(id, now);
        self.tenants[tenant].lost_gpu_hours += lost;
        if let Some(j) = self.jobs.get_mut(&id) {
            j.state = JobState::Pending;
            j.lost_gpu_hours += lost;
            j.restarts += 1;
            j.borrowed = false;
            j.reason = Some(Reason::Requeued);
            j.no_victims_at = None;
        }
        self.queue_insert(id);
        out.push(Decision::Requeue {
            job: id,
            lost_gpu_hours: lost,
        });
    }

    /// Nodes of a scope go down. A job that lost only nodes its spares can cover has them
    /// replaced in place (same NVLink domain; the rest does not move); any other job on them
    /// is requeued from its last checkpoint. Lost GPU-hours are counted either way.
    pub fn fail(&mut self, scope: Scope, now: Time) -> Vec<Decision> {
        let change = self.engine.set_state(scope, NodeState::Down);
        self.stops += 1;
        let mut out = Vec::new();
        for id in change.affected {
            self.touch(id);
            if self.batches.contains_key(&id) {
                self.recover_batch(id, now, &mut out);
                continue;
            }
            if !self.running.contains(&id) {
                continue;
            }
            let down = |engine: &Engine, slots: &[NodeSlot]| -> Vec<NodeId> {
                slots
                    .iter()
                    .map(|s| s.node)
                    .filter(|n| engine.fleet().node(*n).state == NodeState::Down)
                    .collect()
            };
            let (down_active, down_spares) = match self.engine.allocation(id) {
                Some(Allocation::Gang { slots, spares, .. }) => {
                    (down(&self.engine, slots), down(&self.engine, spares))
                }
                _ => continue,
            };
            for n in down_spares {
                self.engine.drop_spare(id, n);
            }
            if down_active.is_empty() {
                // Only spares went: it is charged for what it still holds.
                self.charge(id, now);
                continue;
            }
            let mut replaced = Vec::new();
            let mut all = true;
            for n in &down_active {
                match self.engine.replace_with_spare(id, *n) {
                    Ok(slot) => replaced.push((*n, slot.node)),
                    Err(_) => {
                        all = false;
                        break;
                    }
                }
            }
            if !all {
                self.requeue(id, now, &mut out);
                continue;
            }
            self.charge(id, now);
            self.index_end(id, false);
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let lost = job.unsaved_gpu_hours(now);
            job.lost_gpu_hours += lost;
            job.restarts += 1;
            let gpus = job.gpus();
            if let JobState::Running { since } = &mut job.state {
                let served = now.saturating_sub(*since).saturating_mul(gpus);
                job.attained_gpu_seconds = job.attained_gpu_seconds.saturating_add(served);
                *since = now; // restarted in place from its last checkpoint
            }
            let tenant = job.spec.tenant.0 as usize;
            self.index_end(id, true);
            self.tenants[tenant].lost_gpu_hours += lost;
            for (i, (failed, replacement)) in replaced.into_iter().enumerate() {
                out.push(Decision::Replace {
                    job: id,
                    failed,
                    replacement,
                    lost_gpu_hours: if i == 0 { lost } else { 0.0 },
                });
            }
        }
        out
    }

    /// Nodes of a scope come back (or are cordoned, drained...): no job is moved by this.
    pub fn set_state(&mut self, scope: Scope, state: NodeState) -> Vec<WorkloadId> {
        self.stops += 1;
        self.engine.set_state(scope, state).affected
    }

    /// Charges workload `id` for what the engine gives it now (a gang's slots and spares, a
    /// batch's live sandboxes), replacing what it was charged for.
    pub(crate) fn charge(&mut self, id: WorkloadId, now: Time) {
        let units = allocation_units(self.engine.fleet(), self.engine.allocation(id));
        let owner = match self.jobs.get(&id) {
            Some(j) => Owner {
                tenant: Some(j.spec.tenant),
                class: if j.service.is_some() {
                    SpendClass::Inference
                } else {
                    SpendClass::Training
                },
            },
            None => Owner {
                tenant: self.batches.get(&id).and_then(|b| b.tenant),
                class: SpendClass::Sandboxes,
            },
        };
        self.ledger.hold(id, owner, units, now);
    }

    /// What was spent from time 0 to `now`: per pool and owner, and committed capacity left
    /// idle, in total and per day.
    pub fn spend(&self, now: Time) -> SpendReport {
        self.ledger.report(self.engine.fleet(), now, &|t| {
            self.tenants
                .get(t.0 as usize)
                .map_or_else(|| format!("tenant {}", t.0), |s| s.spec.name.clone())
        })
    }

    /// Marks a node delivered (its committed capacity is paid for) or not yet delivered from
    /// `now`. Every node counts as delivered until told otherwise.
    pub fn set_delivered(&mut self, node: model::NodeId, delivered: bool, now: Time) {
        self.ledger
            .set_delivered(self.engine.fleet(), node, delivered, now);
    }

    /// Opens the spend books at `at` (committed capacity is paid for from then) unless they
    /// are open already; otherwise they open at the first start, stop or delivery.
    pub fn open_books(&mut self, at: Time) {
        self.ledger.open(at);
    }

    /// The spend ledger (read-only).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn tenant_share(&self, t: TenantId) -> f64 {
        let ts = &self.tenants[t.0 as usize];
        ts.usage.dominant_share(&self.fleet_total) / ts.spec.weight
    }

    /// Quota check: Ok(borrowed?) or the reason it is refused.
    fn admit(&self, job: &Job) -> Result<bool, Reason> {
        admit_with(&self.tenants, &self.cohorts, job)
    }

    /// Running jobs `job` may preempt, cheapest first, and the GPUs they hold together.
    fn victims_for(&self, job: &Job, within_own_quota: bool, now: Time) -> (Vec<WorkloadId>, u64) {
        let cohort = self.tenants[job.spec.tenant.0 as usize]
            .spec
            .cohort
            .as_ref();
        // Only lower classes can be victims, unless a cohort reclaim or least-attained
        // service lets the job's own class be.
        let own_class_too = !Self::monotone_search(&self.config.order, within_own_quota, cohort);
        let classes = if own_class_too {
            &self.running_by_class[..=job.spec.priority as usize]
        } else {
            &self.running_by_class[..job.spec.priority as usize]
        };
        let mut cands: Vec<(f64, PriorityClass, WorkloadId, u64)> = classes
            .iter()
            .flatten()
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
                // Least attained service: a job of the first queue preempts one that has had
                // more than the threshold, in the same class.
                let las = match self.config.order {
                    QueueOrder::LeastAttained {
                        threshold_gpu_seconds: t,
                    } => {
                        let served = v.attained_gpu_seconds.saturating_add(
                            v.running_since()
                                .map_or(0, |s| now.saturating_sub(s).saturating_mul(v.gpus())),
                        );
                        v.spec.priority == job.spec.priority
                            && job.attained_gpu_seconds < t
                            && served >= t
                    }
                    _ => false,
                };
                lower || reclaim || las
            })
            .filter(|v| {
                v.preemptions < self.config.max_preemptions
                    && v.running_since()
                        .is_some_and(|s| now.saturating_sub(s) >= self.config.min_runtime)
            })
            .map(|v| (v.unsaved_gpu_hours(now), v.spec.priority, v.id, v.gpus()))
            .collect();
        cands.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let gpus = cands.iter().map(|c| c.3).sum();
        (cands.into_iter().map(|c| c.2).collect(), gpus)
    }

    /// Whether a job's victims are exactly the running jobs of lower classes: then a search that
    /// failed also fails, in the same pass, for any job of its shape with as many nodes or more
    /// and no higher class.
    fn monotone_search(
        order: &QueueOrder,
        within_own_quota: bool,
        cohort: Option<&String>,
    ) -> bool {
        let least_attained = matches!(order, QueueOrder::LeastAttained { .. });
        let reclaim = within_own_quota && cohort.is_some();
        !least_attained && !reclaim
    }

    /// Finds the shortest prefix of `order` whose release lets `gang` be placed; returns its
    /// length and the nodes the gang would get. The engine is left exactly as it was.
    fn shortest_release_prefix(
        &mut self,
        order: &[WorkloadId],
        gang: &GangRequest,
        spread: &SpreadFilter,
    ) -> Option<(usize, Vec<NodeSlot>)> {
        let mut released: Vec<(WorkloadId, Allocation)> = Vec::new();
        let probe =
            |engine: &mut Engine, k: usize, released: &mut Vec<(WorkloadId, Allocation)>| {
                engine.defer_reindex();
                while released.len() < k {
                    let id = order[released.len()];
                    match engine.release(id) {
                        Ok(a) => released.push((id, a)),
                        Err(_) => {
                            engine.settle();
                            return None;
                        }
                    }
                }
                while released.len() > k {
                    if let Some((id, a)) = released.pop() {
                        // Exact: it was released a moment ago and nothing else changed.
                        let _ = engine.reinstate(id, a);
                    }
                }
                engine.settle();
                engine
                    .plan_gang_in(gang, &|t| spread.allows(t))
                    .ok()
                    .map(|p| p.slots)
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
        let (order, releasable) = self.victims_for(job, within_own_quota, now);
        if order.is_empty() {
            return None;
        }
        // Even every victim gone would not free enough GPUs: no need to try.
        let free = self.engine.open_free_gpus[gang.gpu.index()];
        if free + releasable < gang.total_gpus() {
            return None;
        }
        let spread = self.spread_filter(id);
        // Never preempt for a gang that would still not fit.
        let (k, slots) = self.shortest_release_prefix(&order, &gang, &spread)?;
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
        self.touch(id);
        for v in &victims {
            self.touch(*v);
            self.index_end(*v, false);
            if let Some(j) = self.jobs.get_mut(v) {
                let since = j.running_since().unwrap_or(now);
                j.state = JobState::Preempting {
                    since,
                    deadline,
                    by: id,
                };
                self.preempting.insert((deadline, *v));
                if let Some((m, key)) = Self::end_key(j) {
                    self.running_ends[m].insert(key);
                }
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
            self.holding.insert(id);
            j.waiting_for = victims;
            j.reason = Some(Reason::WaitingForPreemption { until: deadline });
        }
        Some(out)
    }

    /// Earliest start of `gang` from running jobs' time limits, and the nodes it would get.
    fn earliest_start(
        &mut self,
        gang: &GangRequest,
        spread: &SpreadFilter,
        now: Time,
    ) -> Option<(Time, Vec<NodeSlot>)> {
        let order: Vec<(Time, WorkloadId)> = self.running_ends[gang.gpu.index()]
            .iter()
            .map(|&(end, id)| (end.max(now), id))
            .collect();
        let ids: Vec<WorkloadId> = order.iter().map(|o| o.1).collect();
        let (k, slots) = self.shortest_release_prefix(&ids, gang, spread)?;
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
        let spread = self.spread_filter(id);
        let placement = self
            .engine
            .place_gang_in(id, &gang, now, &|t| spread.allows(t))
            .map_err(|e| match e {
                // Name the spread rule when it is what stands in the way.
                EngineError::Unplaceable(_) if spread.restricts() => {
                    match self.engine.plan_gang(&gang) {
                        Ok(_) => EngineError::Unplaceable(crate::engine::Unplaceable::new(
                            spread.explanation(),
                        )),
                        Err(_) => e,
                    }
                }
                _ => e,
            })?;
        let usage = ResourceVec::of_gang(&gang);
        self.add_usage(tenant, &usage, true);
        self.touch(id);
        if let Some(seq) = self.jobs.get(&id).map(|j| j.seq) {
            self.queue_remove(seq, id);
        }
        if let Some(j) = self.jobs.get_mut(&id) {
            j.state = JobState::Running { since: now };
            j.borrowed = borrowed;
            j.reason = None;
            self.running_by_class[j.spec.priority as usize].insert(id);
        }
        self.index_end(id, true);
        self.running.insert(id);
        self.changes += 1;
        self.charge(id, now);
        if let (Some(sid), Some(first)) = (
            self.jobs.get(&id).and_then(|j| j.service),
            placement.slots.first(),
        ) {
            self.count_replica(sid, first.node, true);
        }
        out.push(Decision::Start {
            job: id,
            slots: placement.slots,
        });
        Ok(())
    }

    /// One scheduling pass at time `now`.
    pub fn schedule(&mut self, now: Time) -> Vec<Decision> {
        // Explanations are worked out when asked for, not for every job of every pass.
        self.engine.set_explanations(false);
        let out = self.pass(now);
        self.engine.set_explanations(true);
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
        self.ledger.check(&self.engine)?;
        for id in self.running.iter().chain(self.batches.keys()) {
            let want = allocation_units(self.engine.fleet(), self.engine.allocation(*id));
            let have = self
                .ledger
                .held(*id)
                .map(|h| h.1.clone())
                .unwrap_or_default();
            if !want.is_empty() && have.is_empty() {
                return Err(format!("{id} holds {want:?} but is not charged for it"));
            }
        }
        let mut ends = vec![BTreeSet::new(); self.running_ends.len()];
        for j in self.jobs.values() {
            if let Some((m, key)) = Self::end_key(j) {
                ends[m].insert(key);
            }
        }
        if ends != self.running_ends {
            return Err("the index of running jobs' ends is out of date".into());
        }
        if self.ordered.len() != self.pending.len() {
            return Err(format!(
                "{} jobs in queue order but {} pending",
                self.ordered.len(),
                self.pending.len()
            ));
        }
        let mut ids: Vec<&WorkloadId> = self.jobs.keys().collect();
        ids.sort_unstable();
        let mut usage = vec![ResourceVec::default(); self.tenants.len()];
        let mut own = vec![ResourceVec::default(); self.tenants.len()];
        let mut holds = vec![0u32; self.engine.fleet().nodes().len()];
        for id in ids {
            let j = &self.jobs[id];
            let alloc = self.engine.allocation(*id);
            let running = j.running_since().is_some();
            if running != self.running.contains(id)
                || running != self.running_by_class[j.spec.priority as usize].contains(id)
            {
                return Err(format!(
                    "{id}: running sets disagree with state {:?}",
                    j.state
                ));
            }
            let queued = self.pending.get(&(j.seq, *id)).is_some_and(|k| {
                *k == self.queue_key(j)
                    && self.ordered.get(k).is_some_and(|b| {
                        b.no_victims_at == j.no_victims_at
                            && b.shape == shape_of(&j.spec)
                            && b.nodes == j.spec.gang.nodes
                    })
            });
            if self.holding.contains(id) == j.hold.is_empty() {
                return Err(format!("{id}: holding set disagrees with its hold"));
            }
            if (j.state == JobState::Pending) != queued {
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
        self.check_services()?;
        self.check_batches()?;
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

/// Job ids from here up name inference-service replicas.
pub const REPLICA_IDS: u64 = WorkloadId::REPLICA_BASE;

/// Time limit of work that has none (service replicas): never counted on to end.
pub const NO_LIMIT: Time = u64::MAX / 4;

/// Where a service replica may go under its spread rule: domains outside `blocked` ranges
/// (pre-order topology ids of subtrees that already hold as many replicas as allowed).
#[derive(Clone, Debug)]
pub(crate) struct SpreadFilter {
    blocked: Vec<(TopoId, TopoId)>,
    explain: String,
    /// Domains the job's placement rule refuses (sorted disjoint ranges).
    excluded: Arc<[(TopoId, TopoId)]>,
    /// Why the placement rule stands in the way, when it excludes anything.
    rule: String,
}

impl Default for SpreadFilter {
    fn default() -> Self {
        SpreadFilter {
            blocked: Vec::new(),
            explain: String::new(),
            excluded: Arc::from(Vec::new()),
            rule: String::new(),
        }
    }
}

impl SpreadFilter {
    fn allows(&self, domain: TopoId) -> bool {
        let i = self.excluded.partition_point(|r| r.1 < domain);
        if self.excluded.get(i).is_some_and(|r| r.0 <= domain) {
            return false;
        }
        !self
            .blocked
            .iter()
            .any(|(lo, hi)| *lo <= domain && domain <= *hi)
    }

    /// Whether it refuses anything.
    fn restricts(&self) -> bool {
        !(self.blocked.is_empty() && self.excluded.is_empty())
    }

    /// Why it stood in the way, when the fleet would hold the job without it.
    fn explanation(&self) -> String {
        match (self.rule.is_empty(), self.blocked.is_empty()) {
            (false, true) => self.rule.clone(),
            (false, false) => format!("{}, or {}", self.rule, self.explain),
            _ => self.explain.clone(),
        }
    }
}

/// Whether a fruitless preemption search is too recent to repeat: nothing changed since, or
/// less than `retry` seconds passed.
fn searched_recently(last: Option<VainSearch>, changes: u64, now: Time) -> bool {
    last.is_some_and(|v| v.changes == changes || now < v.retry_at)
}

/// A gang's shape apart from its node count: jobs of one shape (and one placement rule) fail
/// and succeed together, the smaller first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct ShapeKey {
    /// Index of the GPU model.
    gpu: usize,
    gpus_per_node: u8,
    cpu_millis_per_node: u32,
    memory_mib_per_node: u32,
    segment: Option<u32>,
    /// A fingerprint of the placement rule (0: no rule).
    rule: u64,
}

/// The shape of a job: jobs of one shape (and one placement rule) fail and succeed together,
/// the smaller first.
fn shape_of(spec: &JobSpec) -> ShapeKey {
    let g = &spec.gang;
    let rule = if spec.placement == model::PlacementRule::default() {
        0
    } else {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        spec.placement.hash(&mut h);
        h.finish() | 1
    };
    ShapeKey {
        gpu: g.gpu.index(),
        gpus_per_node: g.gpus_per_node,
        cpu_millis_per_node: g.cpu_millis_per_node,
        memory_mib_per_node: g.memory_mib_per_node,
        segment: g.segment,
        rule,
    }
}

/// Quota check against a tenant table: Ok(borrowed?) or the reason it is refused.
fn admit_with(tenants: &[TenantState], cohorts: &[CohortState], job: &Job) -> Result<bool, Reason> {
    let ask = ResourceVec::of_gang(&job.spec.gang);
    let t = &tenants[job.spec.tenant.0 as usize];
    let after = t.usage.plus(&ask);
    if after.fits_in(&t.spec.quota) {
        return Ok(false);
    }
    let shortfall = |v: &ResourceVec, limit: &ResourceVec, cohort: bool| {
        let (what, want, have) =
            v.first_excess(limit)
                .unwrap_or((model::ResourceKind::CpuMillis, 0, 0));
        Reason::Quota {
            what,
            want,
            have,
            cohort,
        }
    };
    // Idle quota of the cohort: the sum of members' quotas minus the sum of their usage.
    let Some(sums) = t.cohort.map(|c| &cohorts[c]) else {
        return Err(shortfall(&after, &t.spec.quota, false));
    };
    let quota = sums.quota;
    let cohort_after = sums.usage.plus(&ask);
    if cohort_after.fits_in(&quota) {
        return Ok(true);
    }
    Err(shortfall(&cohort_after, &quota, true))
}

fn list(ids: &[WorkloadId]) -> String {
    let v: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    v.join(", ")
}
