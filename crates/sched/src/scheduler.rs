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
mod brief;
mod config;
mod decision;
mod invariants;
mod lifecycle;
mod mix;
mod outcome;
mod pass;
mod preempt;
mod queue;
mod reasons;
mod restore;
mod sandboxes;
mod services;

pub use outcome::{
    BatchRecord, GangSlots, JobRecord, LiveBatch, LiveJob, Outcome, QueueState, QueuedJob,
    ReservationChange, ReservationRecord, RestoreError, ServiceRecord,
};

pub(crate) use brief::ShapeKey;
use brief::{admit_on, admit_with, floor_of, shape_of, Brief};
pub use config::{DecisionRules, QueueOrder, SchedConfig};
pub use decision::{Decision, SchedError};
pub use mix::{NodeScoring, MAX_MIX_SHAPES};
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

    /// GPU-seconds `seconds` of running amount to: its GPUs, or its share of one.
    fn gpu_seconds(&self, seconds: u64) -> u64 {
        seconds.saturating_mul(self.spec.gang.total_gpu_milli()) / 1000
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
        self.gpu_seconds(now.saturating_sub(from)) as f64 / 3600.0
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

#[derive(Clone, Serialize, Deserialize)]
struct TenantState {
    spec: TenantSpec,
    /// Its quota with GPUs in thousandths, as the usage.
    quota: ResourceVec,
    /// What its running jobs hold, GPUs in thousandths.
    usage: ResourceVec,
    lost_gpu_hours: f64,
    /// Index into `Scheduler::cohorts`.
    cohort: Option<usize>,
    /// What it holds open: live jobs and live sandboxes (kept up to date, checked by the
    /// invariants).
    #[serde(default)]
    load: TenantLoad,
}

/// What one tenant holds open right now: the figures per-tenant limits are checked against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantLoad {
    /// Jobs pending or running (service replicas included).
    pub live_jobs: u64,
    /// Sandbox batches with a live sandbox.
    pub batches: u64,
    /// Live sandboxes.
    pub sandboxes: u64,
    /// CPU millicores the live sandboxes hold.
    pub sandbox_cpu_millis: u64,
    /// Memory the live sandboxes hold, MiB.
    pub sandbox_memory_mib: u64,
}

impl TenantLoad {
    /// The CPU and memory the live sandboxes hold.
    pub fn sandbox_usage(&self) -> ResourceVec {
        ResourceVec {
            cpu_millis: self.sandbox_cpu_millis,
            memory_mib: self.sandbox_memory_mib,
            ..ResourceVec::default()
        }
    }
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
    /// Resources its running jobs hold (GPUs rounded up to whole ones per model).
    pub usage: ResourceVec,
    /// GPUs its running jobs hold, in thousandths, every model together.
    pub gpu_milli_in_use: u64,
    /// Weighted dominant share (usage / fleet total / weight).
    pub dominant_share: f64,
    /// GPU-hours lost to preemption and failures.
    pub lost_gpu_hours: f64,
    /// Its guaranteed quota.
    pub quota: ResourceVec,
    /// Its weight in fair share.
    pub weight: f64,
    /// The cohort it lends idle quota to and borrows from.
    pub cohort: Option<String>,
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
    /// Per tenant, at most what each of its queued jobs asks, resource by resource (a floor:
    /// it may be lower than the smallest ask after jobs left the queue; a full pass makes it
    /// exact). A tenant whose quota refuses its floor refuses every queued job of its own.
    #[serde(skip)]
    queued_floor: Vec<Option<ResourceVec>>,
    /// The last pass stopped at its depth having started work: more may start at once.
    #[serde(skip)]
    cut_short: bool,
    /// Single-node shapes of the live jobs (what a gradient node score weighs); rebuilt from
    /// the jobs as they are queued again on load.
    #[serde(skip)]
    mix: mix::ShapeMix,
    /// Whose rules decide: this build's, or a format-0 journal's while it is replayed.
    #[serde(skip)]
    rules: DecisionRules,
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
                fleet_total.gpus[m.index()] += u64::from(n.capacity.gpus) * 1000;
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
                        .fold(ResourceVec::default(), |acc, t| {
                            acc.plus(&t.quota.gpus_in_milli())
                        }),
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
                    quota: spec.quota.gpus_in_milli(),
                    spec,
                    usage: ResourceVec::default(),
                    lost_gpu_hours: 0.0,
                    load: TenantLoad::default(),
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
            queued_floor: Vec::new(),
            cut_short: false,
            mix: mix::ShapeMix::default(),
            rules: DecisionRules::Current,
        })
    }

    /// What the whole fleet has, every node counted (up or not).
    pub fn fleet_total(&self) -> ResourceVec {
        self.fleet_total.gpus_in_whole()
    }

    /// The rules in force.
    pub fn config(&self) -> &SchedConfig {
        &self.config
    }

    /// Decides by `rules` from now on: a format-0 journal's records (inputs alone) are decided
    /// again when they are replayed, and must come out as they did when they were written.
    pub fn decide_by(&mut self, rules: DecisionRules) {
        self.rules = rules;
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

    /// Pending jobs, in submission order.
    pub fn pending_jobs(&self) -> Vec<WorkloadId> {
        self.pending.keys().map(|(_, id)| *id).collect()
    }

    /// Number of pending jobs.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Running (and preempting) jobs, by id.
    pub fn running_jobs(&self) -> Vec<WorkloadId> {
        self.running.iter().copied().collect()
    }

    /// Running (and preempting) jobs with an id of at least `from`, in id order.
    pub fn running_from(&self, from: WorkloadId) -> impl Iterator<Item = WorkloadId> + '_ {
        self.running.range(from..).copied()
    }

    /// Number of running (and preempting) jobs.
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// The current reservation: (job, start, nodes held).
    pub fn reservation(&self) -> Option<(WorkloadId, Time, &[NodeId])> {
        self.reservation
            .as_ref()
            .map(|r| (r.job, r.start, r.nodes.as_slice()))
    }

    /// What tenant `t` holds open (zero for an unknown tenant).
    pub fn tenant_load(&self, t: TenantId) -> TenantLoad {
        self.tenants
            .get(t.0 as usize)
            .map_or_else(TenantLoad::default, |s| s.load)
    }

    /// Per-tenant usage, share and losses.
    pub fn tenant_report(&self) -> Vec<TenantReport> {
        self.tenants
            .iter()
            .map(|t| TenantReport {
                name: t.spec.name.clone(),
                usage: t.usage.gpus_in_whole(),
                gpu_milli_in_use: t.usage.gpus.iter().sum(),
                dominant_share: t.usage.dominant_share(&self.fleet_total) / t.spec.weight,
                lost_gpu_hours: t.lost_gpu_hours,
                quota: t.spec.quota,
                weight: t.spec.weight,
                cohort: t.spec.cohort.clone(),
            })
            .collect()
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

    /// Brings the books' delivered capacity to the fleet's nodes from `now` (after the fleet
    /// changed under a loaded state).
    pub fn refit_books(&mut self, now: Time) {
        self.ledger.refit(self.engine.fleet(), now);
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

    /// Whether the last pass stopped at its depth (`SchedConfig::pass_depth`) after starting
    /// work: the jobs behind may start at once, so the caller should pass again now rather
    /// than wait for news or the next full pass.
    pub fn more_to_place(&self) -> bool {
        self.cut_short
    }

    /// One scheduling pass at time `now`.
    pub fn schedule(&mut self, now: Time) -> Vec<Decision> {
        if let Some(score) = self.mix.refresh(self.config.node_scoring) {
            self.engine.set_node_score(score);
        }
        // Explanations are worked out when asked for, not for every job of every pass.
        self.engine.set_explanations(false);
        let out = self.pass(now);
        self.engine.set_explanations(true);
        out
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

fn list(ids: &[WorkloadId]) -> String {
    let v: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    v.join(", ")
}
