//! The control plane's state as a function of its journal.
//!
//! Every accepted change is an [`Event`]. Live, [`ControlPlane::apply`] lets the queue decide
//! what the event leads to and returns the journal record: the event, the decisions and the
//! outcome of everything it touched ([`crate::journal::Record`]). Replay hands each record to
//! [`ControlPlane::apply_recorded`], which restores the recorded outcome and decides nothing, so
//! a restart (or a new build with other rules) rebuilds the very placements the agents were
//! told. The server applies an event and queues its record for the journal in one critical
//! section, so the journal's order is the order of application; it answers the client only once
//! the record is durable.
//!
//! - `event`: the inputs; `tokens`: tokens and roles; `bootstrap`: the default fleet and tenant;
//! - `admission`: requests checked into events, refusals naming the field;
//! - `apply`: applying events live or from the journal, and the nodes each change touched;
//! - `fleet_change`: fleet files applied while the cell runs, removed nodes leaving once empty;
//!   `registration`: nodes their agents register under an admin's rule;
//! - `assign`: what each node runs; `endpoints`: where service replicas listen;
//! - `views`: what the API shows, fingerprints for tests;
//! - `stream`: what each record tells the event stream.

use crate::api::{
    Assignment, BatchView, FieldProblem, Heartbeat, JobView, NodeView, SandboxAssignment,
    ServiceView, SubmitJob, SubmitSandboxes, SubmitService, TenantView,
};
use crate::journal::{Record, Stored};
use model::{
    Fleet, GangRequest, GpuModel, InstanceCatalog, JobSpec, NodeId, NodeState, PriorityClass,
    SandboxRequest, ServiceSpec, SpreadLevel, SpreadRule, TenantId, TenantSpec, TopoId,
    WorkloadClass, WorkloadId,
};
use sched::{Allocation, Decision, Engine, JobState, SchedConfig, Scheduler, Scope};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

mod admission;
mod apply;
mod assign;
mod autoscale;
mod bootstrap;
mod endpoints;
mod event;
mod fleet_change;
mod fleet_view;
pub mod gauges;
mod history;
mod limits;
mod registration;
mod roles;
mod rollout;
pub mod secrets;
mod snapshot;
mod stream;
mod tokens;
mod views;

pub use admission::check_command;
pub use autoscale::{AutoscaleTargets, Autoscaled};
use bootstrap::*;
pub use bootstrap::{default_fleet_toml, default_tenants, price_fleet};
pub use endpoints::ReplicaEndpoint;
pub use event::{BatchId, Event, Interactive, JobId, ServiceId, TaskSpec};
pub use fleet_change::{FleetPlan, ReadyToLeave};
pub use fleet_view::MAX_DETAIL_NODES;
pub use limits::{LimitHit, Limits};
pub use registration::{NodeRegistration, RegistrationRule};
pub use roles::RoleTask;
pub use rollout::{Revision, Rollout};
pub use secrets::{SecretError, SecretKey};
pub use tokens::{
    token_id, NodeScope, Role, ScopeError, TokenProblem, TokenRecord, MAX_SCOPE_EXPR,
    MAX_SCOPE_NODES,
};

/// Why an event cannot be applied. For a new request this is the client's error, of a kind
/// the API answers by (not found, conflict, the queue's own refusals); during replay it means
/// the journal does not belong to this build or was damaged.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The journal does not start with `Init`, has a second one, or a record does not apply.
    #[error("journal record {record}: {reason}")]
    Sequence {
        /// The record.
        record: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The fleet text in `Init` does not parse.
    #[error("fleet in the journal: {0}")]
    Fleet(String),
    /// A fleet file applied to the running cell does not parse or does not fit it.
    #[error("{field}: {reason}")]
    BadFleet {
        /// The file's field (`fleet_toml`, or the table and key within it).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The queue refused the change (its error keeps its kind and field).
    #[error(transparent)]
    Queue(#[from] sched::SchedError),
    /// A recorded outcome does not fit the state it is replayed onto.
    #[error(transparent)]
    Restore(#[from] sched::RestoreError),
    /// The event names a node, job, service, batch, tenant or token that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change is not possible in the current state (already ended, already up, ...).
    #[error("{0}")]
    Conflict(String),
    /// A snapshot cannot be written or read.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

#[derive(Clone, Debug)]
struct JobMeta {
    name: String,
    tenant: TenantId,
    gpus: u64,
    /// A share of one GPU in thousandths (0: whole GPUs).
    gpu_milli: u16,
    submitted_at: u64,
    task: TaskSpec,
    /// When it ended.
    ended_at: Option<u64>,
    exit_code: Option<i32>,
    /// A task went past its memory and the kernel killed it (the exit that ended the job).
    oom_killed: bool,
    /// Ranks of the current run that exited 0.
    done_ranks: BTreeSet<u32>,
    /// The current run's last checkpoint.
    checkpoint_at: Option<u64>,
    /// Times it was requeued.
    restarts: u32,
    /// The nodes of its latest run, by rank (where its logs are).
    ran_on: Vec<NodeId>,
    /// When its first run started.
    started_at: Option<u64>,
    /// When its current run started (`None`: not running).
    run_since: Option<u64>,
    /// GPU-seconds its ended runs held.
    gpu_seconds: u64,
    /// GPU-seconds of work lost to preemptions and failures.
    lost_gpu_seconds: u64,
    /// What its ended runs cost, millionths of a USD.
    cost_micro_usd: u64,
}

#[derive(Clone, Debug)]
struct ServiceMeta {
    name: String,
    tenant: TenantId,
    spec: ServiceSpec,
    task: TaskSpec,
    created_at: u64,
    deleted_at: Option<u64>,
    /// Replicas replaced after their process exited.
    replaced: u32,
    /// Replicas in a row that exited within `QUICK_EXIT` of starting.
    quick_exits: u32,
    /// While replicas crash as they start, the next replacement waits until then.
    replace_at: Option<u64>,
    /// How it scales on its gateways' load.
    autoscale: Option<AutoscaleTargets>,
    /// The revision its new replicas run (`task`), its label, and the next number.
    revision: u32,
    version: String,
    next_revision: u32,
    /// The version before the last update that finished (what an undo goes back to).
    previous: Option<rollout::Revision>,
    /// A rolling update under way.
    rollout: Option<rollout::Rollout>,
    /// Why the last update was rolled back, once that rollback finished.
    rolled_back: Option<String>,
}

impl ServiceMeta {
    /// The API's name of its state: active, or deleted.
    fn state_name(&self) -> &'static str {
        if self.deleted_at.is_some() {
            "deleted"
        } else {
            "active"
        }
    }
}

/// A replica that exits sooner than this after starting counts as crashing.
const QUICK_EXIT: u64 = 60;
/// The first wait before replacing a crashing replica; it doubles with each crash in a row.
const FIRST_BACKOFF: u64 = 10;
/// The longest wait before replacing a crashing replica.
const MAX_BACKOFF: u64 = 300;

/// How long to wait before replacing a replica after `quick_exits` crashes in a row.
fn backoff(quick_exits: u32) -> u64 {
    match quick_exits {
        0 => 0,
        n => FIRST_BACKOFF
            .saturating_mul(1u64 << (n - 1).min(16))
            .min(MAX_BACKOFF),
    }
}

#[derive(Clone, Debug)]
struct BatchMeta {
    name: String,
    tenant: TenantId,
    count: u32,
    task: TaskSpec,
    submitted_at: u64,
    ended_at: Option<u64>,
    cancelled: bool,
    succeeded: u32,
    failed: u32,
    /// Of the failed, those the kernel killed for going past their memory.
    oom_killed: u32,
    lost: u32,
    moved: u32,
}

/// The queue, the engine and what the API shows of them. A snapshot is this state in the
/// snapshot format's own types (see [`ControlPlane::snapshot`]).
#[derive(Clone)]
pub struct ControlPlane {
    /// The journal record of the last event applied (`Init` is record 1).
    seq: u64,
    sched: Scheduler,
    tenants: Vec<TenantSpec>,
    jobs: BTreeMap<JobId, JobMeta>,
    /// Every job again, by tenant: a listing of one tenant's jobs walks its own only.
    jobs_by_tenant: BTreeSet<(TenantId, JobId)>,
    /// How many jobs each tenant has had (`jobs_by_tenant`'s count per tenant).
    jobs_per_tenant: HashMap<TenantId, usize>,
    services: BTreeMap<ServiceId, ServiceMeta>,
    batches: BTreeMap<BatchId, BatchMeta>,
    /// The next job or batch id.
    next_id: u64,
    next_service: u64,
    now: u64,
    /// Something was submitted or cancelled since the last pass.
    dirty: bool,
    /// Hex SHA-256 of each issued token → what it may do and until when.
    tokens: BTreeMap<String, TokenRecord>,
    /// The nodes of each placed workload, as of the last change to it: a workload's old and new
    /// nodes are the nodes whose assignments a change touches.
    placed: HashMap<u64, Vec<NodeId>>,
    /// Nodes whose assignments changed since the last `take_changed_nodes`.
    changed: Vec<NodeId>,
    /// Nodes an operator drained (they stay drained when their agent comes back).
    drained: BTreeSet<NodeId>,
    /// Nodes a fleet change removed while they held work: drained, they leave once empty.
    leaving: BTreeSet<NodeId>,
    /// Ended jobs that ran on nodes which have left the fleet since: their nodes by rank.
    departed_ran_on: HashMap<JobId, Vec<Box<str>>>,
    /// Service replicas' endpoints, by replica job (rank 0's, as its agent reported it).
    endpoints: BTreeMap<JobId, endpoints::ReplicaEndpoint>,
    /// The revision each live replica started with (service replicas only).
    replica_revisions: BTreeMap<JobId, u32>,
    /// The record that last changed a service or an endpoint: the version of the routes
    /// gateways follow (not journaled: rebuilt by replay; a snapshot's seq after a restore).
    routes_seq: u64,
    /// The rule for nodes their agents register (`None`: the cell takes none).
    registration_rule: Option<registration::RegistrationRule>,
    /// Registrations waiting for approval, by node name (bounded by the rule's names).
    registrations: BTreeMap<String, registration::NodeRegistration>,
    /// What the latest fleet changes did, by the record that made each (for their answers and
    /// the event stream; not journaled, the records' events hold the changes).
    fleet_changes: std::collections::VecDeque<(u64, crate::api::FleetChange)>,
    /// Commitments the spend is measured against (from `Init`).
    commitments: Vec<model::commitment::Commitment>,
    /// The record being replayed, while one is.
    replaying: Option<Replaying>,
    /// The fleet file's text from `Init` (snapshots carry it).
    fleet_toml: std::sync::Arc<str>,
    /// When `Init` was applied.
    init_at: u64,
    /// The key secret environment values are sealed under (not journaled: it stays outside).
    secret_key: Option<std::sync::Arc<SecretKey>>,
    /// The cell's name, which job views carry (not journaled: the server's `--cell`).
    cell: std::sync::Arc<str>,
    /// The address each node's agent advertised when it last came up, by node name: unit
    /// replicas' peers learn it from their environment.
    node_addresses: HashMap<Box<str>, Box<str>>,
}

/// A record as replay applied it.
#[derive(Debug)]
pub struct Replayed {
    /// The record.
    pub record: Record,
    /// Its decisions were made now (a record of format 0, journaled without them): it is to be
    /// rewritten in the current format.
    pub decided: bool,
}

/// A journal record being replayed: its outcome is restored at the first step of the event
/// that would decide something.
#[derive(Clone)]
struct Replaying {
    record: Record,
    restored: bool,
}

impl ControlPlane {
    /// The state right after `Init`.
    pub fn new(init: &Event) -> Result<ControlPlane, StateError> {
        let Event::Init {
            fleet_toml,
            tenants,
            at,
            commitments,
        } = init
        else {
            return Err(StateError::Sequence {
                record: 1,
                reason: "the first record must be Init".into(),
            });
        };
        let fleet = parse_fleet(fleet_toml)?;
        let mut sched = Scheduler::new(Engine::new(fleet), tenants.clone(), SchedConfig::default())
            .map_err(StateError::Queue)?;
        // A node takes work only once its agent has come up.
        sched.set_state(Scope::Subtree(TopoId(0)), NodeState::Down);
        // Committed capacity is paid for from the start, agents or not.
        sched.open_books(*at);
        Ok(ControlPlane {
            commitments: commitments.clone(),
            seq: 1,
            sched,
            tenants: tenants.clone(),
            jobs: BTreeMap::new(),
            jobs_by_tenant: BTreeSet::new(),
            jobs_per_tenant: HashMap::new(),
            services: BTreeMap::new(),
            batches: BTreeMap::new(),
            next_id: 1,
            next_service: 1,
            now: *at,
            dirty: false,
            tokens: BTreeMap::new(),
            placed: HashMap::new(),
            changed: Vec::new(),
            drained: BTreeSet::new(),
            leaving: BTreeSet::new(),
            departed_ran_on: HashMap::new(),
            fleet_changes: Default::default(),
            registration_rule: None,
            registrations: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            routes_seq: 0,
            replica_revisions: BTreeMap::new(),
            replaying: None,
            fleet_toml: fleet_toml.as_str().into(),
            init_at: *at,
            secret_key: None,
            cell: std::sync::Arc::from("cell-0"),
            node_addresses: HashMap::new(),
        })
    }

    /// Rebuilds the state from a whole journal (`Init` first).
    pub fn replay(
        records: impl IntoIterator<Item = (u64, Stored)>,
    ) -> Result<Option<ControlPlane>, StateError> {
        let mut plane = None;
        for (seq, r) in records {
            ControlPlane::replay_one(&mut plane, seq, r)?;
        }
        Ok(plane)
    }

    /// Applies journal record `seq` during replay: `Init` makes the state; every other record
    /// must be the next one after the state's (after a snapshot, replay starts there). A record
    /// of the current format is restored as recorded, never decided again; a version-0 record
    /// (an input alone) is decided with this build's rules, and said to be (`decided`) so that
    /// the caller can rewrite the journal (see [`crate::journal`]). Returns the record either
    /// way (the event stream is told of it).
    pub fn replay_one(
        plane: &mut Option<ControlPlane>,
        seq: u64,
        stored: Stored,
    ) -> Result<Replayed, StateError> {
        let record = match plane {
            None => {
                if seq != 1 {
                    return Err(StateError::Sequence {
                        record: seq,
                        reason: "the journal does not start at record 1 (it was compacted: it is \
                                 read from its latest snapshot, which must be readable)"
                            .into(),
                    });
                }
                let (event, decided) = match stored {
                    Stored::Inputs(e) => (e, true),
                    Stored::V1(r) => (r.event, false),
                };
                *plane = Some(ControlPlane::new(&event)?);
                Replayed {
                    record: Record {
                        event,
                        decisions: Vec::new(),
                        outcome: sched::Outcome::default(),
                    },
                    decided,
                }
            }
            Some(p) => {
                let replayed = p.replay_next(seq, stored)?;
                // Agents hear of changes made while the server runs, not of history.
                p.changed.clear();
                replayed
            }
        };
        Ok(record)
    }

    /// Applies record `seq`, the next after the state's, restored as recorded (a version-0
    /// record is decided again, by this build's rules with preemption as format-0 builds did it,
    /// and said to be).
    fn replay_next(&mut self, seq: u64, stored: Stored) -> Result<Replayed, StateError> {
        let at = |err: StateError| StateError::Sequence {
            record: seq,
            reason: format!("does not apply: {err}"),
        };
        let event = match &stored {
            Stored::Inputs(e) => e,
            Stored::V1(r) => &r.event,
        };
        if matches!(event, Event::Init { .. }) {
            return Err(StateError::Sequence {
                record: seq,
                reason: "a second Init".into(),
            });
        }
        if seq != self.seq + 1 {
            return Err(StateError::Sequence {
                record: seq,
                reason: format!("expected record {} next", self.seq + 1),
            });
        }
        let replayed = match stored {
            Stored::Inputs(e) => {
                // Decided again, by the rules of the builds that wrote such records.
                self.sched.decide_by(sched::DecisionRules::Format0);
                let applied = self.apply(&e);
                self.sched.decide_by(sched::DecisionRules::Current);
                Replayed {
                    record: applied.map_err(at)?,
                    decided: true,
                }
            }
            Stored::V1(r) => {
                let record = crate::journal::Codec::new(self.sched.engine().fleet())
                    .load(r)
                    .map_err(|e| StateError::Sequence {
                        record: seq,
                        reason: e.to_string(),
                    })?;
                self.apply_recorded(&record).map_err(at)?;
                Replayed {
                    record,
                    decided: false,
                }
            }
        };
        Ok(replayed)
    }

    /// Applies the writer's next durable record to a frontend's copy of the state, as a
    /// restart's replay would (restored, never decided), keeping the nodes it changed for the
    /// agents waiting on them. Only records of the current format are followed (the writer
    /// upgrades older ones when it starts).
    pub fn follow(&mut self, seq: u64, stored: Stored) -> Result<Record, StateError> {
        if matches!(stored, Stored::Inputs(_)) {
            return Err(StateError::Sequence {
                record: seq,
                reason: "a record of format 0 is not followed: restart the writer to upgrade it"
                    .into(),
            });
        }
        Ok(self.replay_next(seq, stored)?.record)
    }

    /// The bytes of a record, in the journal's current format.
    pub fn encode(&self, record: &Record) -> Vec<u8> {
        crate::journal::encode(
            &crate::journal::Codec::new(self.sched.engine().fleet()).store(record),
        )
    }

    /// Changes the queue's rules for what it decides from now on (replayed history keeps what
    /// was decided under the old ones).
    pub fn set_rules(&mut self, config: SchedConfig) {
        self.sched.set_config(config);
    }

    /// Checks the queue's and the engine's invariants from scratch; the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.sched.check_invariants()
    }

    /// The journal record of the last event applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// What was spent from `Init` to `now`, with the commitments' burn-down.
    pub fn spend(&self, now: u64) -> sched::cost::CostSummary {
        sched::cost::summarise(&self.sched.spend(now), &self.commitments, 0)
    }

    /// The time to stamp a new event with: the wall clock, never before the last event.
    pub fn stamp(&self, wall: u64) -> u64 {
        wall.max(self.now)
    }

    /// Whether a pass has anything new to look at.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Whether the last pass stopped at its depth after starting work: another may start
    /// more at once (never set on replay, which decides nothing).
    pub fn more_to_place(&self) -> bool {
        self.sched.more_to_place()
    }

    /// The time of the last applied event.
    pub fn now(&self) -> u64 {
        self.now
    }
}

#[cfg(test)]
mod tests;
