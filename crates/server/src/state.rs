//! The control plane's state as a function of its journal.
//!
//! Every accepted change is an [`Event`]; [`ControlPlane::apply`] is deterministic (the time is
//! in the event, the queue never reads a clock), so replaying the journal rebuilds the very same
//! queue and engine: same placements, same reasons, same reservations. The server applies an
//! event in memory and queues it for the journal in one critical section, so the journal's
//! order is the order of application; it answers the client only once the event is durable.

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

/// One accepted change. The journal holds these as JSON, one per record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The first record of a journal: the fleet (a fleet file's text) and the tenants.
    Init {
        /// The fleet, in the TOML fleet-file format (pool prices included).
        fleet_toml: String,
        /// Tenants; a tenant's id is its index.
        tenants: Vec<TenantSpec>,
        /// Unix seconds.
        at: u64,
        /// Commitments the spend is measured against.
        #[serde(default)]
        commitments: Vec<model::commitment::Commitment>,
    },
    /// A training job was accepted.
    Submit {
        /// Its id, assigned by the server.
        id: u64,
        /// Its name (not unique).
        name: String,
        /// What it asks for.
        spec: JobSpec,
        /// What each of its nodes runs.
        task: TaskSpec,
        /// Unix seconds.
        at: u64,
    },
    /// An agent came up on a node: the node takes work.
    NodeUp {
        /// The node.
        node: String,
        /// Unix seconds.
        at: u64,
    },
    /// A node's agent stopped heartbeating: the node is down and its work follows the failure
    /// rules (spares, requeue from the last checkpoint).
    NodeDown {
        /// The node.
        node: String,
        /// Unix seconds.
        at: u64,
    },
    /// A task of a job exited.
    TaskExited {
        /// The job.
        job: u64,
        /// The run of the job it belonged to.
        run: u32,
        /// Its rank.
        rank: u32,
        /// Exit code (-1: killed by a signal).
        code: i32,
        /// Unix seconds.
        at: u64,
    },
    /// A job wrote a checkpoint.
    Checkpoint {
        /// The job.
        job: u64,
        /// Its run.
        run: u32,
        /// When the checkpoint was written (Unix seconds).
        at: u64,
    },
    /// A job was cancelled.
    Cancel {
        /// The job.
        id: u64,
        /// Unix seconds.
        at: u64,
    },
    /// An API token was issued (only its SHA-256 is kept).
    TokenIssued {
        /// Hex SHA-256 of the token.
        hash: String,
        /// What it may do.
        role: Role,
        /// Unix seconds.
        at: u64,
        /// When it stops working (Unix seconds); `None`: until revoked.
        #[serde(default)]
        expires_at: Option<u64>,
    },
    /// A token was revoked: it no longer works.
    TokenRevoked {
        /// The token's id (the first 16 hex digits of its SHA-256).
        id: String,
        /// Unix seconds.
        at: u64,
    },
    /// A scheduling pass ran.
    Pass {
        /// Unix seconds.
        at: u64,
    },
    /// An inference service was created (at its minimum replica count).
    ServiceCreate {
        /// Its id, assigned by the server (services are numbered apart from jobs).
        id: u64,
        /// Its name.
        name: String,
        /// Replica shape, bounds, spread rule.
        spec: ServiceSpec,
        /// What each replica node runs.
        task: TaskSpec,
        /// Unix seconds.
        at: u64,
    },
    /// A service's desired replica count changed.
    ServiceScale {
        /// The service.
        id: u64,
        /// Replicas wanted (clamped to its bounds).
        replicas: u32,
        /// Unix seconds.
        at: u64,
    },
    /// A service was deleted with all its replicas.
    ServiceDelete {
        /// The service.
        id: u64,
        /// Unix seconds.
        at: u64,
    },
    /// A sandbox batch was accepted and placed (it is journaled only if it placed, so replay
    /// places it the same way).
    SandboxBatch {
        /// Its id, from the job-id sequence.
        id: u64,
        /// Its name.
        name: String,
        /// Owner.
        tenant: TenantId,
        /// How many, how big.
        request: SandboxRequest,
        /// Host failures it survives by moving.
        max_retries: u32,
        /// What each sandbox runs.
        task: TaskSpec,
        /// Unix seconds.
        at: u64,
    },
    /// An operator drained a node or every node under a topology path (they take no new
    /// work; what runs there finishes) or made them take work again.
    NodeDrain {
        /// A node's name or a topology path.
        node: String,
        /// `true`: drain; `false`: resume.
        drain: bool,
        /// Unix seconds.
        at: u64,
    },
    /// Sandboxes of a batch exited: (index, exit code).
    SandboxesExited {
        /// The batch.
        batch: u64,
        /// Each exited sandbox and its code.
        exited: Vec<(u32, i32)>,
        /// Unix seconds.
        at: u64,
    },
}

impl Event {
    /// The event's time.
    pub fn at(&self) -> u64 {
        match self {
            Event::Init { at, .. }
            | Event::Submit { at, .. }
            | Event::Cancel { at, .. }
            | Event::Pass { at }
            | Event::NodeUp { at, .. }
            | Event::NodeDown { at, .. }
            | Event::TaskExited { at, .. }
            | Event::Checkpoint { at, .. }
            | Event::TokenIssued { at, .. }
            | Event::TokenRevoked { at, .. }
            | Event::ServiceCreate { at, .. }
            | Event::ServiceScale { at, .. }
            | Event::ServiceDelete { at, .. }
            | Event::SandboxBatch { at, .. }
            | Event::NodeDrain { at, .. }
            | Event::SandboxesExited { at, .. } => *at,
        }
    }
}

/// Why an event cannot be applied. For a new request this is the client's error; during replay
/// it means the journal does not belong to this build or was damaged.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The journal does not start with `Init`, or has a second one.
    #[error("journal record {0}: {1}")]
    Sequence(u64, String),
    /// The fleet text in `Init` does not parse.
    #[error("fleet in the journal: {0}")]
    Fleet(String),
    /// The queue refused the change.
    #[error("{0}")]
    Refused(String),
    /// A snapshot cannot be written or read.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// The snapshot encoding's version; a build reads only its own (and replays otherwise).
const SNAPSHOT_FORMAT: u32 = 3;

/// An issued token, as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// What it may do.
    pub role: Role,
    /// When it was issued (Unix seconds).
    pub issued_at: u64,
    /// When it stops working.
    pub expires_at: Option<u64>,
}

/// A token's public id: the first 16 hex digits of its SHA-256.
pub fn token_id(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// Why a token does not work.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenProblem {
    /// Never issued, or revoked.
    Unknown,
    /// Past its expiry.
    Expired(u64),
}

/// What a token may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Submit, see and cancel the work of one tenant.
    Tenant {
        /// The tenant's name.
        tenant: String,
    },
    /// Register nodes and report (heartbeats) only.
    Agent,
}

/// What each node of a job runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct JobMeta {
    name: String,
    tenant: TenantId,
    gpus: u64,
    submitted_at: u64,
    task: TaskSpec,
    /// When it ended.
    ended_at: Option<u64>,
    exit_code: Option<i32>,
    /// Ranks of the current run that exited 0.
    done_ranks: BTreeSet<u32>,
    /// The current run's last checkpoint.
    checkpoint_at: Option<u64>,
    /// Times it was requeued.
    restarts: u32,
    /// The nodes of its latest run, by rank (where its logs are).
    #[serde(default)]
    ran_on: Vec<NodeId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
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
    #[serde(default)]
    quick_exits: u32,
    /// While replicas crash as they start, the next replacement waits until then.
    #[serde(default)]
    replace_at: Option<u64>,
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

#[derive(Clone, Debug, Serialize, Deserialize)]
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
    lost: u32,
    moved: u32,
}

/// The queue, the engine and what the API shows of them. A snapshot is this whole value
/// (see [`ControlPlane::snapshot`]).
#[derive(Clone, Serialize, Deserialize)]
pub struct ControlPlane {
    /// The journal record of the last event applied (`Init` is record 1).
    seq: u64,
    sched: Scheduler,
    tenants: Vec<TenantSpec>,
    jobs: BTreeMap<u64, JobMeta>,
    services: BTreeMap<u64, ServiceMeta>,
    batches: BTreeMap<u64, BatchMeta>,
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
    #[serde(skip)]
    changed: Vec<NodeId>,
    /// Nodes an operator drained (they stay drained when their agent comes back).
    drained: BTreeSet<NodeId>,
    /// Commitments the spend is measured against (from `Init`).
    commitments: Vec<model::commitment::Commitment>,
    /// The record being replayed, while one is.
    #[serde(skip)]
    replaying: Option<Replaying>,
}

/// A journal record being replayed: its outcome is restored at the first step of the event
/// that would decide something.
#[derive(Clone)]
struct Replaying {
    record: Record,
    restored: bool,
}

/// The API's name of a queue state.
fn state_name(state: &JobState) -> &'static str {
    match state {
        JobState::Pending => "pending",
        JobState::Running { .. } => "running",
        JobState::Preempting { .. } => "preempting",
        JobState::Finished => "finished",
        JobState::Cancelled => "cancelled",
    }
}

/// A small fleet for a local control plane: two GB200 NVL72 domains and four CPU hosts, as a
/// fleet file's text.
pub fn default_fleet_toml() -> Result<String, StateError> {
    let spec = fleet::generate::GenSpec {
        gpus: 144,
        cpu_hosts: 4,
        ..fleet::generate::GenSpec::default()
    };
    let mut spec = spec;
    spec.clouds.truncate(1);
    let catalog = InstanceCatalog::builtin();
    let fleet =
        fleet::generate::generate(&spec, &catalog).map_err(|e| StateError::Fleet(e.to_string()))?;
    Ok(fleet::file::write(&fleet, &catalog))
}

/// One tenant, `default`, with the whole fleet as quota.
pub fn default_tenants() -> Vec<TenantSpec> {
    let mut quota = model::ResourceVec {
        cpu_millis: u64::MAX / 4,
        memory_mib: u64::MAX / 4,
        ..model::ResourceVec::default()
    };
    for g in quota.gpus.iter_mut() {
        *g = u64::MAX / 4;
    }
    vec![TenantSpec {
        name: "default".into(),
        weight: 1.0,
        cohort: None,
        quota,
    }]
}

fn bad(field: &str, reason: String) -> FieldProblem {
    FieldProblem {
        field: field.to_string(),
        reason,
    }
}

/// Names: 1 to 128 of letters, digits, '-', '_' and '.'.
fn check_name(name: &str) -> Result<(), FieldProblem> {
    if name.is_empty() || name.len() > 128 {
        return Err(bad("name", "must be 1 to 128 characters".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(bad(
            "name",
            format!("'{c}' is not allowed (letters, digits, '-', '_', '.')"),
        ));
    }
    Ok(())
}

fn check_command(command: &[String]) -> Result<(), FieldProblem> {
    if command.first().is_some_and(|c| c.is_empty()) {
        return Err(bad("command", "the program name is empty".into()));
    }
    Ok(())
}

fn parse_priority(name: &str) -> Result<PriorityClass, FieldProblem> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        bad(
            "priority",
            format!(
                "unknown class '{name}' (preemptible, research, training, production-inference)"
            ),
        )
    })
}

/// A fleet file's text with its pools priced from `catalogue` (pools it has no rate for keep
/// their own).
pub fn price_fleet(
    fleet_toml: &str,
    catalogue: &model::cost::CostCatalogue,
) -> Result<String, StateError> {
    let mut fleet = parse_fleet(fleet_toml)?;
    catalogue.apply(&mut fleet);
    Ok(fleet::file::write(&fleet, &InstanceCatalog::builtin()))
}

fn parse_fleet(text: &str) -> Result<Fleet, StateError> {
    fleet::file::parse("journal", text, InstanceCatalog::builtin())
        .map_err(|e| StateError::Fleet(e.to_string()))
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
            return Err(StateError::Sequence(
                1,
                "the first record must be Init".into(),
            ));
        };
        let fleet = parse_fleet(fleet_toml)?;
        let mut sched = Scheduler::new(Engine::new(fleet), tenants.clone(), SchedConfig::default())
            .map_err(|e| StateError::Refused(e.to_string()))?;
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
            replaying: None,
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
    /// (an input alone) is decided with this build's rules, and the record that makes is
    /// returned so that the caller can rewrite the journal (see [`crate::journal`]).
    pub fn replay_one(
        plane: &mut Option<ControlPlane>,
        seq: u64,
        stored: Stored,
    ) -> Result<Option<Record>, StateError> {
        let record = match plane {
            None => {
                if seq != 1 {
                    return Err(StateError::Sequence(
                        seq,
                        "the journal does not start at record 1".into(),
                    ));
                }
                let event = match stored {
                    Stored::Inputs(e) => e,
                    Stored::V1(r) => r.event,
                };
                *plane = Some(ControlPlane::new(&event)?);
                Some(Record {
                    event,
                    decisions: Vec::new(),
                    outcome: sched::Outcome::default(),
                })
            }
            Some(p) => {
                let at =
                    |err: StateError| StateError::Sequence(seq, format!("does not apply: {err}"));
                let event = match &stored {
                    Stored::Inputs(e) => e,
                    Stored::V1(r) => &r.event,
                };
                if matches!(event, Event::Init { .. }) {
                    return Err(StateError::Sequence(seq, "a second Init".into()));
                }
                if seq != p.seq + 1 {
                    return Err(StateError::Sequence(
                        seq,
                        format!("expected record {} next", p.seq + 1),
                    ));
                }
                let migrated = match stored {
                    Stored::Inputs(e) => Some(p.apply(&e).map_err(at)?),
                    Stored::V1(r) => {
                        let record = crate::journal::Codec::new(p.sched.engine().fleet())
                            .load(r)
                            .map_err(|e| StateError::Sequence(seq, e.to_string()))?;
                        p.apply_recorded(&record).map_err(at)?;
                        None
                    }
                };
                // Agents hear of changes made while the server runs, not of history.
                p.changed.clear();
                migrated
            }
        };
        Ok(record)
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

    /// The whole state as bytes, for the journal's snapshot table.
    pub fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        let mut out = Vec::new();
        ciborium::into_writer(&(SNAPSHOT_FORMAT, self), &mut out)
            .map_err(|e| StateError::Snapshot(e.to_string()))?;
        Ok(out)
    }

    /// The state a snapshot holds. A snapshot of another format is refused (the caller
    /// replays the whole journal instead).
    pub fn from_snapshot(bytes: &[u8]) -> Result<ControlPlane, StateError> {
        let (format, plane): (u32, ControlPlane) =
            ciborium::from_reader(bytes).map_err(|e| StateError::Snapshot(e.to_string()))?;
        if format != SNAPSHOT_FORMAT {
            return Err(StateError::Snapshot(format!(
                "format {format}, this build reads {SNAPSHOT_FORMAT}"
            )));
        }
        Ok(plane)
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

    /// The time of the last applied event.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Applies one new event, deciding what it leads to with this build's rules; returns the
    /// journal record (the event, the decisions, their outcome). On error nothing changed.
    /// Notes the nodes whose assignments it changed (see `take_changed_nodes`).
    pub fn apply(&mut self, e: &Event) -> Result<Record, StateError> {
        self.replaying = None;
        let decisions = self.apply_noting_changes(e)?;
        Ok(Record {
            event: e.clone(),
            decisions,
            outcome: self.sched.take_outcome(),
        })
    }

    /// Applies a journaled record: the queue is brought to its recorded outcome, nothing is
    /// decided again.
    pub fn apply_recorded(&mut self, r: &Record) -> Result<(), StateError> {
        self.replaying = Some(Replaying {
            record: r.clone(),
            restored: false,
        });
        let result = self
            .apply_noting_changes(&r.event)
            .and_then(|_| self.restore_once());
        self.replaying = None;
        // Whatever the replay's own steps touched is in the record already.
        let _ = self.sched.take_outcome();
        result
    }

    /// During replay, brings the queue to the recorded outcome (once per record); live, does
    /// nothing.
    fn restore_once(&mut self) -> Result<(), StateError> {
        let Some(r) = self.replaying.as_mut() else {
            return Ok(());
        };
        if r.restored {
            return Ok(());
        }
        r.restored = true;
        let at = r.record.event.at();
        self.sched
            .restore(&r.record.outcome, at)
            .map_err(|e| StateError::Refused(e.to_string()))
    }

    /// Runs the queue's policy (`live`) on a new event; during replay restores the recorded
    /// outcome instead.
    fn decide<T: Default>(
        &mut self,
        live: impl FnOnce(&mut Scheduler) -> Result<T, sched::SchedError>,
    ) -> Result<T, StateError> {
        if self.replaying.is_some() {
            self.restore_once()?;
            return Ok(T::default());
        }
        live(&mut self.sched).map_err(|e| StateError::Refused(e.to_string()))
    }

    /// [`Self::decide`] for policies that return decisions: during replay, the recorded ones.
    fn decisions(
        &mut self,
        live: impl FnOnce(&mut Scheduler) -> Vec<Decision>,
    ) -> Result<Vec<Decision>, StateError> {
        if self.replaying.is_some() {
            self.restore_once()?;
            return Ok(self
                .replaying
                .as_ref()
                .map(|r| r.record.decisions.clone())
                .unwrap_or_default());
        }
        Ok(live(&mut self.sched))
    }

    fn apply_noting_changes(&mut self, e: &Event) -> Result<Vec<Decision>, StateError> {
        let service = match e {
            Event::ServiceScale { id, .. } | Event::ServiceDelete { id, .. } => Some(*id),
            Event::TaskExited { job, .. } => WorkloadId(*job).as_replica().map(|(s, _)| s),
            _ => None,
        };
        let mut touched: Vec<WorkloadId> = service
            .map(|s| self.sched.service_replicas(s))
            .unwrap_or_default();
        let decisions = self.apply_event(e)?;
        touched.extend(decisions.iter().filter_map(|d| match d {
            Decision::Start { job, .. }
            | Decision::Preempt { job, .. }
            | Decision::Requeue { job, .. }
            | Decision::Replace { job, .. } => Some(*job),
            Decision::SandboxesMoved { batch, .. } | Decision::SandboxesLost { batch, .. } => {
                Some(*batch)
            }
            Decision::Reserve { .. } => None,
        }));
        match e {
            Event::Cancel { id, .. } | Event::SandboxBatch { id, .. } => {
                touched.push(WorkloadId(*id))
            }
            Event::TaskExited { job, .. } => touched.push(WorkloadId(*job)),
            // Only the reporting node's sandboxes changed, and its heartbeat's answer says so.
            Event::SandboxesExited { batch, .. }
                if self.sched.engine().allocation(WorkloadId(*batch)).is_none() =>
            {
                self.placed.remove(batch);
            }
            _ => {}
        }
        if let Some(s) = service {
            touched.extend(self.sched.service_replicas(s));
        }
        self.note_changes(touched);
        // Every applied event is the next journal record.
        self.seq += 1;
        Ok(decisions)
    }

    /// Marks the old and new nodes of each touched workload as changed.
    fn note_changes(&mut self, mut touched: Vec<WorkloadId>) {
        touched.sort_unstable();
        touched.dedup();
        let engine = self.sched.engine();
        for w in touched {
            let mut now: Vec<NodeId> = match engine.allocation(w) {
                Some(Allocation::Gang { slots, .. }) => slots.iter().map(|s| s.node).collect(),
                Some(Allocation::Sandboxes { runs, .. }) => runs.iter().map(|r| r.node).collect(),
                None => Vec::new(),
            };
            now.sort_unstable();
            now.dedup();
            if let Some(before) = self.placed.remove(&w.0) {
                self.changed.extend(before);
            }
            self.changed.extend(now.iter().copied());
            if !now.is_empty() {
                self.placed.insert(w.0, now);
            }
        }
    }

    /// Names of the nodes whose assignments changed since the last call (an agent that learns
    /// of them asks for its assignments at once instead of at its next heartbeat).
    pub fn take_changed_nodes(&mut self) -> Vec<String> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        let fleet = self.sched.engine().fleet();
        changed
            .into_iter()
            .map(|n| fleet.node(n).name.to_string())
            .collect()
    }

    fn apply_event(&mut self, e: &Event) -> Result<Vec<Decision>, StateError> {
        let refused = |e: sched::SchedError| StateError::Refused(e.to_string());
        let decisions = match e {
            Event::Init { .. } => {
                return Err(StateError::Refused("the journal already has Init".into()))
            }
            Event::Submit {
                id,
                name,
                spec,
                task,
                at,
            } => {
                if self.replaying.is_some() {
                    // Accepted once: a later build's stricter checks do not refuse history.
                    self.sched
                        .submit_recorded(WorkloadId(*id), spec.clone(), *at)
                        .map_err(refused)?;
                } else {
                    self.sched
                        .submit(WorkloadId(*id), spec.clone(), *at)
                        .map_err(refused)?;
                }
                self.jobs.insert(
                    *id,
                    JobMeta {
                        name: name.clone(),
                        tenant: spec.tenant,
                        gpus: spec.gang.total_gpus(),
                        submitted_at: *at,
                        task: task.clone(),
                        ended_at: None,
                        exit_code: None,
                        done_ranks: BTreeSet::new(),
                        checkpoint_at: None,
                        restarts: 0,
                        ran_on: Vec::new(),
                    },
                );
                self.next_id = self.next_id.max(id + 1);
                self.dirty = true;
                Vec::new()
            }
            Event::Cancel { id, at } => {
                if let Some(b) = self.batches.get(id) {
                    if b.ended_at.is_some() {
                        return Err(StateError::Refused(format!("batch {id} already ended")));
                    }
                    self.decide(|s| s.end_batch(WorkloadId(*id), *at))?;
                    if let Some(b) = self.batches.get_mut(id) {
                        b.ended_at = Some(*at);
                        b.cancelled = true;
                    }
                } else {
                    self.decide(|s| s.cancel(WorkloadId(*id), *at))?;
                    if let Some(m) = self.jobs.get_mut(id) {
                        m.ended_at = Some(*at);
                    }
                }
                self.dirty = true;
                Vec::new()
            }
            Event::ServiceCreate {
                id,
                name,
                spec,
                task,
                at,
            } => {
                self.decide(|s| s.create_service(*id, spec.clone(), *at))?;
                self.services.insert(
                    *id,
                    ServiceMeta {
                        name: name.clone(),
                        tenant: spec.tenant,
                        spec: spec.clone(),
                        task: task.clone(),
                        created_at: *at,
                        deleted_at: None,
                        replaced: 0,
                        quick_exits: 0,
                        replace_at: None,
                    },
                );
                self.next_service = self.next_service.max(id + 1);
                self.dirty = true;
                Vec::new()
            }
            Event::ServiceScale { id, replicas, at } => {
                self.live_service(*id)?;
                // An operator's scaling acts now, whatever a crashing replica's wait.
                if let Some(m) = self.services.get_mut(id) {
                    m.replace_at = None;
                }
                self.decide(|s| s.scale_service(*id, *replicas, *at).map(|_| ()))?;
                self.dirty = true;
                Vec::new()
            }
            Event::ServiceDelete { id, at } => {
                self.live_service(*id)?;
                self.decide(|s| s.delete_service(*id, *at).map(|_| ()))?;
                if let Some(m) = self.services.get_mut(id) {
                    m.deleted_at = Some(*at);
                }
                self.dirty = true;
                Vec::new()
            }
            Event::SandboxBatch {
                id,
                name,
                tenant,
                request,
                max_retries,
                task,
                at,
            } => {
                if tenant.0 as usize >= self.tenants.len() {
                    return Err(StateError::Refused(format!("no tenant {}", tenant.0)));
                }
                self.decide(|s| {
                    s.place_sandboxes(WorkloadId(*id), Some(*tenant), request, *max_retries, *at)
                        .map(|_| ())
                })?;
                self.batches.insert(
                    *id,
                    BatchMeta {
                        name: name.clone(),
                        tenant: *tenant,
                        count: request.count,
                        task: task.clone(),
                        submitted_at: *at,
                        ended_at: None,
                        cancelled: false,
                        succeeded: 0,
                        failed: 0,
                        lost: 0,
                        moved: 0,
                    },
                );
                self.next_id = self.next_id.max(id + 1);
                Vec::new()
            }
            Event::SandboxesExited { batch, exited, at } => {
                let meta = self
                    .batches
                    .get(batch)
                    .ok_or_else(|| StateError::Refused(format!("no batch {batch}")))?;
                if meta.ended_at.is_some() {
                    return Err(StateError::Refused(format!("batch {batch} already ended")));
                }
                let indices: Vec<u32> = exited.iter().map(|(i, _)| *i).collect();
                self.decide(|s| {
                    s.end_sandboxes(WorkloadId(*batch), &indices, *at)
                        .map(|_| ())
                })?;
                let failed = exited.iter().filter(|(_, c)| *c != 0).count() as u32;
                if let Some(m) = self.batches.get_mut(batch) {
                    m.failed += failed;
                    m.succeeded += exited.len() as u32 - failed;
                }
                self.end_batch_if_empty(*batch, *at);
                self.dirty = true;
                Vec::new()
            }
            Event::TokenIssued {
                hash,
                role,
                at,
                expires_at,
            } => {
                if let Role::Tenant { tenant } = role {
                    if !self.tenants.iter().any(|t| &t.name == tenant) {
                        return Err(StateError::Refused(format!("unknown tenant '{tenant}'")));
                    }
                }
                self.tokens.insert(
                    hash.clone(),
                    TokenRecord {
                        role: role.clone(),
                        issued_at: *at,
                        expires_at: *expires_at,
                    },
                );
                Vec::new()
            }
            Event::TokenRevoked { id, .. } => {
                let hash = self
                    .tokens
                    .keys()
                    .find(|h| token_id(h) == id)
                    .cloned()
                    .ok_or_else(|| StateError::Refused(format!("no token {id}")))?;
                self.tokens.remove(&hash);
                Vec::new()
            }
            Event::Pass { at } => {
                self.dirty = false;
                // Crashed replicas whose wait is over are replaced before the pass places them.
                let due: Vec<u64> = self
                    .services
                    .iter()
                    .filter(|(_, m)| {
                        m.deleted_at.is_none() && m.replace_at.is_some_and(|t| t <= *at)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    if let Some(m) = self.services.get_mut(&id) {
                        m.replace_at = None;
                    }
                    self.replace_replicas(id, *at)?;
                }
                let decisions = self.decisions(|s| s.schedule(*at))?;
                self.account(&decisions, *at);
                decisions
            }
            Event::NodeUp { node, .. } => {
                let n = self.node(node)?;
                if self.sched.engine().fleet().node(n).state != NodeState::Down {
                    return Err(StateError::Refused(format!("node {node} is already up")));
                }
                let state = if self.drained.contains(&n) {
                    NodeState::Draining
                } else {
                    NodeState::Ready
                };
                self.sched.set_state(Scope::Node(n), state);
                self.dirty = true;
                Vec::new()
            }
            Event::NodeDrain { node, drain, .. } => {
                let nodes = self.target_nodes(node)?;
                let changed: Vec<NodeId> = nodes
                    .into_iter()
                    .filter(|n| {
                        if *drain {
                            self.drained.insert(*n)
                        } else {
                            self.drained.remove(n)
                        }
                    })
                    .collect();
                if changed.is_empty() {
                    return Err(StateError::Refused(format!(
                        "{node} is {} drained",
                        if *drain { "already" } else { "not" }
                    )));
                }
                let state = if *drain {
                    NodeState::Draining
                } else {
                    NodeState::Ready
                };
                for n in changed {
                    // A node without its agent stays down; it comes back drained or ready.
                    if self.sched.engine().fleet().node(n).state != NodeState::Down {
                        self.sched.set_state(Scope::Node(n), state);
                    }
                }
                self.dirty = true;
                Vec::new()
            }
            Event::NodeDown { node, at } => {
                let n = self.node(node)?;
                if self.sched.engine().fleet().node(n).state == NodeState::Down {
                    return Err(StateError::Refused(format!("node {node} is already down")));
                }
                let decisions = if self.replaying.is_some() {
                    // The node's state is an input; what its failure did is recorded.
                    self.sched.set_state(Scope::Node(n), NodeState::Down);
                    self.decisions(|_| Vec::new())?
                } else {
                    self.sched.fail(Scope::Node(n), *at)
                };
                self.account(&decisions, *at);
                self.dirty = true;
                decisions
            }
            Event::TaskExited {
                job,
                run,
                rank,
                code,
                at,
            } => {
                let world = self.current_world(*job, *run)?;
                if let Some((service, _)) = WorkloadId(*job).as_replica() {
                    // A replica whose process exited is replaced: services run until scaled
                    // down or deleted. One that keeps crashing as it starts is replaced later
                    // and later (10 s, doubling, up to 5 min), not in a hot loop.
                    let since = match self.sched.job(WorkloadId(*job)).map(|j| &j.state) {
                        Some(JobState::Running { since } | JobState::Preempting { since, .. }) => {
                            *since
                        }
                        _ => *at,
                    };
                    self.decide(|s| s.finish(WorkloadId(*job), *at))?;
                    let Some(m) = self.services.get_mut(&service) else {
                        return Err(StateError::Refused(format!("no service {service}")));
                    };
                    m.replaced += 1;
                    m.quick_exits = if at.saturating_sub(since) < QUICK_EXIT {
                        m.quick_exits + 1
                    } else {
                        0
                    };
                    let wait = backoff(m.quick_exits);
                    if wait == 0 {
                        m.replace_at = None;
                        self.replace_replicas(service, *at)?;
                    } else {
                        m.replace_at = Some(at + wait);
                    }
                    self.dirty = true;
                    self.now = self.now.max(e.at());
                    return Ok(Vec::new());
                }
                let meta = self
                    .jobs
                    .get_mut(job)
                    .ok_or_else(|| StateError::Refused(format!("no job {job}")))?;
                if *code == 0 {
                    meta.done_ranks.insert(*rank);
                }
                if *code != 0 || meta.done_ranks.len() as u32 >= world {
                    self.decide(|s| s.finish(WorkloadId(*job), *at))?;
                    if let Some(m) = self.jobs.get_mut(job) {
                        m.exit_code = Some(*code);
                        m.ended_at = Some(*at);
                    }
                    self.dirty = true;
                }
                Vec::new()
            }
            Event::Checkpoint { job, run, at } => {
                self.current_world(*job, *run)?;
                self.decide(|s| s.checkpoint(WorkloadId(*job), *at))?;
                if let Some(m) = self.jobs.get_mut(job) {
                    m.checkpoint_at = Some(*at);
                }
                Vec::new()
            }
        };
        self.now = self.now.max(e.at());
        Ok(decisions)
    }

    /// The role of the token whose SHA-256 is `hash`.
    pub fn role_of(&self, hash: &str, now: u64) -> Result<&Role, TokenProblem> {
        let t = self.tokens.get(hash).ok_or(TokenProblem::Unknown)?;
        match t.expires_at {
            Some(end) if end <= now => Err(TokenProblem::Expired(end)),
            _ => Ok(&t.role),
        }
    }

    /// Every token that works or expired (revoked ones are gone), by id.
    pub fn token_list(&self) -> Vec<(String, TokenRecord)> {
        self.tokens
            .iter()
            .map(|(h, t)| (token_id(h).to_string(), t.clone()))
            .collect()
    }

    /// Whether any token was issued yet.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    fn node(&self, name: &str) -> Result<NodeId, StateError> {
        self.sched
            .engine()
            .fleet()
            .node_by_name(name)
            .ok_or_else(|| StateError::Refused(format!("no node '{name}' in the fleet")))
    }

    /// The nodes a drain names: one node by its name, or every node under a topology path
    /// (`aws/us-east-1/us-east-1-z1/sp0`).
    pub fn target_nodes(&self, target: &str) -> Result<Vec<NodeId>, StateError> {
        let fleet = self.sched.engine().fleet();
        if let Some(n) = fleet.node_by_name(target) {
            return Ok(vec![n]);
        }
        match fleet.find_topo(target) {
            Some(t) if !target.trim_matches('/').is_empty() => {
                Ok(fleet.topo_node(t).nodes.clone().map(NodeId).collect())
            }
            _ => Err(StateError::Refused(format!(
                "no node or topology path '{target}' in the fleet"
            ))),
        }
    }

    /// The gang size of `job`'s current run, if `run` is the current one and it is running.
    fn current_world(&self, job: u64, run: u32) -> Result<u32, StateError> {
        let j = self
            .sched
            .job(WorkloadId(job))
            .ok_or_else(|| StateError::Refused(format!("job {job} is not live")))?;
        if j.restarts != run
            || !matches!(
                j.state,
                JobState::Running { .. } | JobState::Preempting { .. }
            )
        {
            return Err(StateError::Refused(format!(
                "job {job} run {run} is not the running one"
            )));
        }
        Ok(j.spec.gang.nodes)
    }

    /// Follows the queue's decisions: a requeued job starts its next run from scratch (its
    /// tasks' progress is forgotten); sandboxes moved or lost with their hosts are counted.
    fn account(&mut self, decisions: &[Decision], at: u64) {
        for d in decisions {
            match d {
                Decision::Requeue { job, .. } => {
                    if let Some(m) = self.jobs.get_mut(&job.0) {
                        m.done_ranks.clear();
                        m.checkpoint_at = None;
                        m.restarts += 1;
                    }
                }
                Decision::Start { job, slots } => {
                    if let Some(m) = self.jobs.get_mut(&job.0) {
                        m.ran_on = slots.iter().map(|s| s.node).collect();
                    }
                }
                Decision::SandboxesMoved { batch, count, .. } => {
                    if let Some(m) = self.batches.get_mut(&batch.0) {
                        m.moved += count;
                    }
                }
                Decision::SandboxesLost { batch, count, .. } => {
                    if let Some(m) = self.batches.get_mut(&batch.0) {
                        m.lost += count;
                    }
                    self.end_batch_if_empty(batch.0, at);
                }
                _ => {}
            }
        }
    }

    /// A batch ends when its last sandbox does.
    fn end_batch_if_empty(&mut self, batch: u64, at: u64) {
        if self.sched.engine().allocation(WorkloadId(batch)).is_none() {
            if let Some(m) = self.batches.get_mut(&batch) {
                m.ended_at.get_or_insert(at);
            }
        }
    }

    /// Brings a service back to its desired replica count.
    fn replace_replicas(&mut self, service: u64, at: u64) -> Result<(), StateError> {
        let desired = self.sched.service_status(service).map_or(0, |s| s.desired);
        self.decide(|s| s.scale_service(service, desired, at).map(|_| ()))
    }

    /// Whether a pass is due for a reason other than news: a crashed replica's wait is over.
    pub fn due(&self, now: u64) -> bool {
        self.services
            .values()
            .any(|m| m.deleted_at.is_none() && m.replace_at.is_some_and(|t| t <= now))
    }

    /// The service, if it exists and was not deleted.
    fn live_service(&self, id: u64) -> Result<&ServiceMeta, StateError> {
        match self.services.get(&id) {
            Some(m) if m.deleted_at.is_none() => Ok(m),
            Some(_) => Err(StateError::Refused(format!("service {id} was deleted"))),
            None => Err(StateError::Refused(format!("no service {id}"))),
        }
    }

    /// What a workload's tasks run: a job's own task, or its service's for a replica.
    fn task_of(&self, w: WorkloadId) -> Option<&TaskSpec> {
        match w.as_replica() {
            Some((service, _)) => self.services.get(&service).map(|m| &m.task),
            None => self.jobs.get(&w.0).map(|m| &m.task),
        }
    }

    /// Whether the node exists and is up (its agent registered and still heartbeats).
    pub fn node_is_up(&self, name: &str) -> Option<bool> {
        let n = self.sched.engine().fleet().node_by_name(name)?;
        Some(self.sched.engine().fleet().node(n).state != NodeState::Down)
    }

    /// A node's name.
    pub fn node_name(&self, n: NodeId) -> Option<String> {
        let fleet = self.sched.engine().fleet();
        ((n.0 as usize) < fleet.nodes().len()).then(|| fleet.node(n).name.to_string())
    }

    /// Names of the nodes that are up.
    pub fn up_nodes(&self) -> Vec<String> {
        self.sched
            .engine()
            .fleet()
            .nodes()
            .iter()
            .filter(|n| n.state != NodeState::Down)
            .map(|n| n.name.to_string())
            .collect()
    }

    /// What the agents are told to run, node by node, with each job's state: the part of the
    /// state an upgrade must never change. One line per node with work, then one per job.
    pub fn placements(&self) -> String {
        let mut out = String::new();
        for name in self.up_nodes() {
            let (tasks, sandboxes) = self.assignments(&name);
            if tasks.is_empty() && sandboxes.is_empty() {
                continue;
            }
            out.push_str(&name);
            for t in &tasks {
                out.push_str(&format!(
                    " job{}/run{}/rank{} gpus{:?} stop_by{:?};",
                    t.job, t.run, t.rank, t.gpus, t.stop_by
                ));
            }
            for s in &sandboxes {
                out.push_str(&format!(" batch{}[{}+{}];", s.batch, s.first, s.count));
            }
            out.push('\n');
        }
        for (id, m) in &self.jobs {
            let state = self.job_state(*id).map_or("unknown", state_name);
            out.push_str(&format!(
                "job {id} {} {state} restarts {}\n",
                m.name, m.restarts
            ));
        }
        out
    }

    /// Every task and sandbox node `name` must run now.
    pub fn assignments(&self, name: &str) -> (Vec<Assignment>, Vec<SandboxAssignment>) {
        let engine = self.sched.engine();
        let (mut tasks, mut sandboxes) = (Vec::new(), Vec::new());
        let Some(n) = engine.fleet().node_by_name(name) else {
            return (tasks, sandboxes);
        };
        for w in engine.workloads_on(n) {
            match engine.allocation(w) {
                Some(Allocation::Gang {
                    slots, per_node, ..
                }) => {
                    let (Some(job), Some(task)) = (self.sched.job(w), self.task_of(w)) else {
                        continue;
                    };
                    let stop_by = match job.state {
                        JobState::Running { .. } => None,
                        JobState::Preempting { deadline, .. } => Some(deadline),
                        _ => continue,
                    };
                    for (rank, slot) in slots.iter().enumerate().filter(|(_, s)| s.node == n) {
                        tasks.push(Assignment {
                            job: w.0,
                            run: job.restarts,
                            rank: rank as u32,
                            world: slots.len() as u32,
                            command: task.command.clone(),
                            env: task.env.clone(),
                            workdir: task.workdir.clone(),
                            gpus: (0..32).filter(|b| slot.gpu_mask & (1 << b) != 0).collect(),
                            stop_by,
                            cpu_millis: per_node.cpu_millis,
                            memory_mib: per_node.memory_mib,
                        });
                    }
                }
                Some(Allocation::Sandboxes {
                    runs,
                    live,
                    request,
                    ..
                }) => {
                    let Some(meta) = self.batches.get(&w.0) else {
                        continue;
                    };
                    let is_live = |i: u32| live[i as usize / 64] >> (i % 64) & 1 == 1;
                    for run in runs.iter().filter(|r| r.node == n) {
                        // Split the run into ranges of live sandboxes.
                        let mut i = run.first;
                        let end = run.first + run.count;
                        while i < end {
                            if !is_live(i) {
                                i += 1;
                                continue;
                            }
                            let first = i;
                            while i < end && is_live(i) {
                                i += 1;
                            }
                            sandboxes.push(SandboxAssignment {
                                batch: w.0,
                                first,
                                count: i - first,
                                command: meta.task.command.clone(),
                                env: meta.task.env.clone(),
                                workdir: meta.task.workdir.clone(),
                                cpu_millis: request.cpu_millis,
                                memory_mib: request.memory_mib,
                            });
                        }
                    }
                }
                None => {}
            }
        }
        (tasks, sandboxes)
    }

    /// Whether sandbox `index` of `batch` is live on node `n`.
    fn sandbox_live_on(&self, batch: u64, index: u32, n: NodeId) -> bool {
        let Some(Allocation::Sandboxes { runs, live, .. }) =
            self.sched.engine().allocation(WorkloadId(batch))
        else {
            return false;
        };
        let k = runs.partition_point(|r| r.first <= index);
        k > 0
            && runs[k - 1].node == n
            && index < runs[k - 1].first + runs[k - 1].count
            && live
                .get(index as usize / 64)
                .is_some_and(|w| w >> (index % 64) & 1 == 1)
    }

    /// The events a heartbeat brings: the node coming up, tasks that exited, new checkpoints.
    /// Reports about stale runs are dropped (their tasks are told to stop by the reply).
    pub fn heartbeat_events(&self, hb: &Heartbeat, at: u64) -> Result<Vec<Event>, FieldProblem> {
        let up = self.node_is_up(&hb.node).ok_or_else(|| FieldProblem {
            field: "node".into(),
            reason: format!("no node '{}' in the fleet", hb.node),
        })?;
        let mut events = Vec::new();
        if !up {
            events.push(Event::NodeUp {
                node: hb.node.clone(),
                at,
            });
        }
        let node = self.node(&hb.node).map_err(|e| FieldProblem {
            field: "node".into(),
            reason: e.to_string(),
        })?;
        if let Some(inv) = &hb.inventory {
            self.check_inventory(node, inv)?;
        }
        // Exits of live sandboxes on this node, per batch (one event each).
        let mut sandbox_exits: BTreeMap<u64, Vec<(u32, i32)>> = BTreeMap::new();
        for t in &hb.tasks {
            if self.batches.contains_key(&t.job) {
                if let Some(code) = t.exit_code {
                    if self.sandbox_live_on(t.job, t.rank, node) {
                        sandbox_exits.entry(t.job).or_default().push((t.rank, code));
                    }
                }
                continue;
            }
            if self.current_world(t.job, t.run).is_err() {
                continue;
            }
            let meta = self.jobs.get(&t.job);
            if let Some(c) = t.checkpoint_at {
                let newer = meta.is_some_and(|m| m.checkpoint_at.is_none_or(|p| c > p));
                if newer && t.exit_code.is_none() {
                    events.push(Event::Checkpoint {
                        job: t.job,
                        run: t.run,
                        at: c.min(at).max(self.now),
                    });
                }
            }
            if let Some(code) = t.exit_code {
                events.push(Event::TaskExited {
                    job: t.job,
                    run: t.run,
                    rank: t.rank,
                    code,
                    at,
                });
            }
        }
        for (batch, mut exited) in sandbox_exits {
            exited.sort_unstable();
            exited.dedup_by_key(|(i, _)| *i);
            events.push(Event::SandboxesExited { batch, exited, at });
        }
        Ok(events)
    }

    /// The tasks of job `id` on node `name` whose logs live there: (run, rank) of its latest
    /// run.
    pub fn log_tasks_on(&self, id: u64, name: &str) -> Vec<(u32, u32)> {
        let (Some(meta), Some(node)) = (
            self.jobs.get(&id),
            self.sched.engine().fleet().node_by_name(name),
        ) else {
            return Vec::new();
        };
        meta.ran_on
            .iter()
            .enumerate()
            .filter(|(_, n)| **n == node)
            .map(|(rank, _)| (meta.restarts, rank as u32))
            .collect()
    }

    /// The latest run of job `id` and the nodes of its ranks.
    pub fn log_nodes(&self, id: u64) -> Option<(u32, Vec<String>)> {
        let meta = self.jobs.get(&id)?;
        let fleet = self.sched.engine().fleet();
        Some((
            meta.restarts,
            meta.ran_on
                .iter()
                .map(|n| fleet.node(*n).name.to_string())
                .collect(),
        ))
    }

    /// Whether what a node's agent found matches the fleet; a node that does not match takes
    /// no work (its heartbeats are refused, so it stays or goes down).
    fn check_inventory(
        &self,
        node: NodeId,
        inv: &crate::api::Inventory,
    ) -> Result<(), FieldProblem> {
        let n = self.sched.engine().fleet().node(node);
        let want = u32::from(n.capacity.gpus);
        if inv.gpus != want {
            return Err(bad(
                "inventory.gpus",
                format!(
                    "node {} has {want} GPUs in the fleet; its agent found {} ({}): fix the fleet file or the node",
                    n.name, inv.gpus, inv.source
                ),
            ));
        }
        if let (Some(found), Some(model)) = (&inv.gpu_model, n.capacity.gpu_model) {
            let fleet_model = model.name();
            if !found.eq_ignore_ascii_case(fleet_model) {
                return Err(bad(
                    "inventory.gpu_model",
                    format!(
                        "node {} has {fleet_model} GPUs in the fleet; its agent found {found} ({})",
                        n.name, inv.source
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Turns a request into a `Submit` event, checking every field; changes nothing.
    pub fn submit_event(&self, req: &SubmitJob, at: u64) -> Result<Event, FieldProblem> {
        check_name(&req.name)?;
        check_command(&req.command)?;
        let tenant = self.tenant_id(&req.tenant)?;
        let priority = parse_priority(&req.priority)?;
        let gpu: GpuModel = req.gpu.parse().map_err(|e| bad("gpu", format!("{e}")))?;
        let spec = JobSpec {
            tenant,
            priority,
            gang: GangRequest {
                class: WorkloadClass::Training,
                gpu,
                nodes: req.nodes,
                gpus_per_node: req.gpus_per_node,
                cpu_millis_per_node: req.cpu_millis_per_node,
                memory_mib_per_node: req.memory_mib_per_node,
                segment: req.segment,
                spares: req.spares,
            },
            time_limit: req.time_limit_s,
            placement: (&req.placement).into(),
        };
        spec.validate().map_err(|e| {
            let field = if e.field == "time_limit" {
                "time_limit_s"
            } else {
                e.field
            };
            bad(field, e.reason)
        })?;
        self.check_placement(&spec.placement)?;
        Ok(Event::Submit {
            id: self.next_id,
            name: req.name.clone(),
            spec,
            task: TaskSpec {
                command: req.command.clone(),
                env: req.env.clone(),
                workdir: req.workdir.clone(),
            },
            at,
        })
    }

    /// A placement rule may name only providers and regions the fleet has (a typo would leave
    /// the work waiting for capacity that does not exist).
    fn check_placement(&self, rule: &model::PlacementRule) -> Result<(), FieldProblem> {
        let pools = self.sched.engine().fleet().pools();
        for (field, names, of_pool) in [
            ("placement.providers", &rule.providers, true),
            ("placement.exclude_providers", &rule.exclude_providers, true),
            ("placement.regions", &rule.regions, false),
            ("placement.exclude_regions", &rule.exclude_regions, false),
        ] {
            for n in names {
                let known = pools.iter().any(|p| {
                    let have = if of_pool { &p.cloud } else { &p.region };
                    have == n
                });
                if !known {
                    let mut have: Vec<&str> = pools
                        .iter()
                        .map(|p| {
                            if of_pool {
                                p.cloud.as_str()
                            } else {
                                p.region.as_str()
                            }
                        })
                        .collect();
                    have.sort_unstable();
                    have.dedup();
                    return Err(bad(
                        field,
                        format!("'{n}' is not in this fleet (it has {})", have.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The id of the tenant named `name`.
    fn tenant_id(&self, name: &str) -> Result<TenantId, FieldProblem> {
        self.tenants
            .iter()
            .position(|t| t.name == name)
            .map(|i| TenantId(i as u32))
            .ok_or_else(|| {
                let known: Vec<&str> = self.tenants.iter().map(|t| t.name.as_str()).collect();
                bad(
                    "tenant",
                    format!("unknown tenant '{name}' (known: {})", known.join(", ")),
                )
            })
    }

    fn tenant_name(&self, id: TenantId) -> &str {
        self.tenants
            .get(id.0 as usize)
            .map_or("", |t| t.name.as_str())
    }

    /// Turns a request into a `ServiceCreate` event, checking every field; changes nothing.
    pub fn service_event(&self, req: &SubmitService, at: u64) -> Result<Event, FieldProblem> {
        check_name(&req.name)?;
        check_command(&req.command)?;
        let tenant = self.tenant_id(&req.tenant)?;
        let priority = parse_priority(&req.priority)?;
        let gpu: GpuModel = req.gpu.parse().map_err(|e| bad("gpu", format!("{e}")))?;
        let spread = match &req.spread {
            None => None,
            Some(r) => Some(SpreadRule {
                level: match r.level.as_str() {
                    "domain" => SpreadLevel::Domain,
                    "zone" => SpreadLevel::Zone,
                    "region" => SpreadLevel::Region,
                    "cloud" => SpreadLevel::Cloud,
                    other => {
                        return Err(bad(
                            "spread.level",
                            format!("unknown level '{other}' (domain, zone, region, cloud)"),
                        ))
                    }
                },
                max_per: r.max_per,
            }),
        };
        let spec = ServiceSpec {
            tenant,
            priority,
            replica: GangRequest {
                class: WorkloadClass::InferenceReplica,
                gpu,
                nodes: req.nodes_per_replica,
                gpus_per_node: req.gpus_per_node,
                cpu_millis_per_node: req.cpu_millis_per_node,
                memory_mib_per_node: req.memory_mib_per_node,
                segment: None,
                spares: 0,
            },
            min_replicas: req.min_replicas,
            max_replicas: req.max_replicas.unwrap_or(req.min_replicas),
            spread,
            placement: (&req.placement).into(),
            min_providers: req.min_providers,
        };
        spec.validate().map_err(|e| {
            let field = match e.field {
                "nodes" => "nodes_per_replica",
                other => other,
            };
            bad(field, e.reason)
        })?;
        self.check_placement(&spec.placement)?;
        if self.next_service >= sched::MAX_SERVICES {
            return Err(bad("", "this control plane holds no more services".into()));
        }
        Ok(Event::ServiceCreate {
            id: self.next_service,
            name: req.name.clone(),
            spec,
            task: TaskSpec {
                command: req.command.clone(),
                env: req.env.clone(),
                workdir: req.workdir.clone(),
            },
            at,
        })
    }

    /// Turns a request into a `SandboxBatch` event, checking every field; changes nothing
    /// (whether the batch fits is known when the event applies).
    pub fn sandbox_event(&self, req: &SubmitSandboxes, at: u64) -> Result<Event, FieldProblem> {
        check_name(&req.name)?;
        check_command(&req.command)?;
        let tenant = self.tenant_id(&req.tenant)?;
        let request = SandboxRequest {
            count: req.count,
            cpu_millis: req.cpu_millis,
            memory_mib: req.memory_mib,
        };
        request.validate().map_err(|e| bad(e.field, e.reason))?;
        if req.max_retries > 1000 {
            return Err(bad("max_retries", "must be at most 1000".into()));
        }
        Ok(Event::SandboxBatch {
            id: self.next_id,
            name: req.name.clone(),
            tenant,
            request,
            max_retries: req.max_retries,
            task: TaskSpec {
                command: req.command.clone(),
                env: req.env.clone(),
                workdir: req.workdir.clone(),
            },
            at,
        })
    }

    /// The name of the tenant that owns service `id`.
    pub fn service_tenant(&self, id: u64) -> Option<&str> {
        self.services.get(&id).map(|m| self.tenant_name(m.tenant))
    }

    /// The name of the tenant that owns batch `id`.
    pub fn batch_tenant(&self, id: u64) -> Option<&str> {
        self.batches.get(&id).map(|m| self.tenant_name(m.tenant))
    }

    /// Whether `id` names a sandbox batch.
    pub fn is_batch(&self, id: u64) -> bool {
        self.batches.contains_key(&id)
    }

    /// The service as the API shows it.
    pub fn service_view(&self, id: u64) -> Option<ServiceView> {
        let meta = self.services.get(&id)?;
        let status = self.sched.service_status(id);
        let engine = self.sched.engine();
        let mut replicas = Vec::new();
        let mut reason = None;
        for r in self.sched.service_replicas(id) {
            match self.sched.job(r).map(|j| &j.state) {
                Some(JobState::Running { .. } | JobState::Preempting { .. }) => {
                    if let Some(Allocation::Gang { slots, .. }) = engine.allocation(r) {
                        replicas.push(
                            slots
                                .iter()
                                .map(|s| engine.fleet().node(s.node).name.to_string())
                                .collect(),
                        );
                    }
                }
                Some(JobState::Pending) if reason.is_none() => {
                    reason = self.sched.pending_reason(r);
                }
                _ => {}
            }
        }
        Some(ServiceView {
            id,
            name: meta.name.clone(),
            tenant: self.tenant_name(meta.tenant).to_string(),
            state: if meta.deleted_at.is_some() {
                "deleted"
            } else {
                "active"
            }
            .into(),
            desired: status.as_ref().map_or(0, |s| s.desired),
            running: status.as_ref().map_or(0, |s| s.running),
            pending: status.as_ref().map_or(0, |s| s.pending),
            min_replicas: meta.spec.min_replicas,
            max_replicas: meta.spec.max_replicas,
            gpus_per_replica: meta.spec.replica.total_gpus(),
            replicas,
            reason: match meta.replace_at {
                Some(t) if meta.deleted_at.is_none() => Some(format!(
                    "{} replicas in a row exited within {QUICK_EXIT} s of starting: the next replacement waits until t={t}",
                    meta.quick_exits
                )),
                _ => reason,
            },
            replaced: meta.replaced,
            created_at: meta.created_at,
        })
    }

    /// Services (of one tenant, if given), in id order.
    pub fn list_services(&self, tenant: Option<&str>) -> Vec<ServiceView> {
        self.services
            .keys()
            .filter(|id| tenant.is_none_or(|t| self.service_tenant(**id) == Some(t)))
            .filter_map(|id| self.service_view(*id))
            .collect()
    }

    /// The sandbox batch as the API shows it.
    pub fn batch_view(&self, id: u64) -> Option<BatchView> {
        let meta = self.batches.get(&id)?;
        let (live, hosts) = match self.sched.engine().allocation(WorkloadId(id)) {
            Some(Allocation::Sandboxes {
                runs, live_count, ..
            }) => {
                let mut nodes: Vec<NodeId> = runs.iter().map(|r| r.node).collect();
                nodes.sort_unstable();
                nodes.dedup();
                (*live_count, nodes.len() as u32)
            }
            _ => (0, 0),
        };
        Some(BatchView {
            id,
            name: meta.name.clone(),
            tenant: self.tenant_name(meta.tenant).to_string(),
            state: match (meta.ended_at, meta.cancelled) {
                (None, _) => "running",
                (Some(_), true) => "cancelled",
                (Some(_), false) => "finished",
            }
            .into(),
            count: meta.count,
            live,
            succeeded: meta.succeeded,
            failed: meta.failed,
            lost: meta.lost,
            moved: meta.moved,
            hosts,
            submitted_at: meta.submitted_at,
            ended_at: meta.ended_at,
        })
    }

    /// Batches after id `after` (ascending), at most `limit`, optionally of one tenant.
    pub fn list_batches(&self, tenant: Option<&str>, after: u64, limit: usize) -> Vec<BatchView> {
        self.batches
            .range(after.saturating_add(1)..)
            .map(|(id, _)| *id)
            .filter(|id| tenant.is_none_or(|t| self.batch_tenant(*id) == Some(t)))
            .take(limit)
            .filter_map(|id| self.batch_view(id))
            .collect()
    }

    /// The job's queue state, live or ended.
    fn job_state(&self, id: u64) -> Option<&JobState> {
        let wid = WorkloadId(id);
        match self.sched.job(wid) {
            Some(j) => Some(&j.state),
            None => self.sched.ended_state(wid),
        }
    }

    /// The name of the tenant that owns job `id` (cheap: no view is built).
    pub fn job_tenant(&self, id: u64) -> Option<&str> {
        let meta = self.jobs.get(&id)?;
        self.tenants
            .get(meta.tenant.0 as usize)
            .map(|t| t.name.as_str())
    }

    /// The job as the API shows it.
    pub fn job_view(&self, id: u64) -> Option<JobView> {
        let meta = self.jobs.get(&id)?;
        let wid = WorkloadId(id);
        let state = self.job_state(id)?.clone();
        let nodes = match self.sched.engine().allocation(wid) {
            Some(sched::Allocation::Gang { slots, .. }) => slots
                .iter()
                .map(|s| self.sched.engine().fleet().node(s.node).name.to_string())
                .collect(),
            _ => Vec::new(),
        };
        let since = match &state {
            JobState::Pending => None,
            JobState::Running { since } | JobState::Preempting { since, .. } => Some(*since),
            JobState::Finished | JobState::Cancelled => meta.ended_at,
        };
        let state_name = state_name(&state);
        Some(JobView {
            id,
            name: meta.name.clone(),
            tenant: self
                .tenants
                .get(meta.tenant.0 as usize)
                .map_or_else(String::new, |t| t.name.clone()),
            state: state_name.into(),
            since,
            submitted_at: meta.submitted_at,
            gpus: meta.gpus,
            restarts: meta.restarts,
            exit_code: meta.exit_code,
            nodes,
            reason: if state == JobState::Pending {
                self.sched.pending_reason(wid)
            } else {
                None
            },
        })
    }

    /// Jobs after id `after` (ascending), at most `limit`, optionally of one tenant and state.
    pub fn list(
        &self,
        tenant: Option<&str>,
        state: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Vec<JobView> {
        // Filter on what is cheap; build views (which render pending reasons) for the page only.
        self.jobs
            .range(after.saturating_add(1)..)
            .map(|(id, _)| *id)
            .filter(|id| tenant.is_none_or(|t| self.job_tenant(*id) == Some(t)))
            .filter(|id| state.is_none_or(|s| self.job_state(*id).map(state_name) == Some(s)))
            .take(limit)
            .filter_map(|id| self.job_view(id))
            .collect()
    }

    /// Nodes with their state and free GPUs.
    pub fn nodes(&self) -> Vec<NodeView> {
        let engine = self.sched.engine();
        engine
            .fleet()
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (free_mask, free_cpu, _) = engine.node_free(model::NodeId(i as u32));
                NodeView {
                    name: n.name.to_string(),
                    state: format!("{:?}", n.state).to_lowercase(),
                    gpus: u32::from(n.capacity.gpus),
                    free_gpus: free_mask.count_ones(),
                    cpu_millis: n.capacity.cpu_millis,
                    free_cpu_millis: free_cpu,
                }
            })
            .collect()
    }

    /// Tenants with their usage.
    pub fn tenants(&self) -> Vec<TenantView> {
        self.sched
            .tenant_report()
            .into_iter()
            .map(|t| TenantView {
                name: t.name,
                gpus_in_use: t.usage.gpus.iter().sum(),
                dominant_share: t.dominant_share,
                lost_gpu_hours: t.lost_gpu_hours,
            })
            .collect()
    }

    /// Everything a restart must reproduce, as text: every job's view (but its pending
    /// reason) and placement, the engine's usage and the reservation. Two planes with equal
    /// fingerprints are the same to every client once a pass has run.
    pub fn fingerprint(&self) -> String {
        // Pending reasons are advice the next pass rewrites, not state: a replayed queue has
        // not run the passes that wrote them.
        let views: Vec<JobView> = self
            .jobs
            .keys()
            .filter_map(|id| self.job_view(*id))
            .map(|v| JobView { reason: None, ..v })
            .collect();
        let mut out = serde_json::to_string(&views).unwrap_or_default();
        let services: Vec<ServiceView> = self
            .list_services(None)
            .into_iter()
            .map(|v| ServiceView { reason: None, ..v })
            .collect();
        let batches: Vec<BatchView> = self
            .batches
            .keys()
            .filter_map(|id| self.batch_view(*id))
            .collect();
        out.push_str(&serde_json::to_string(&services).unwrap_or_default());
        out.push_str(&serde_json::to_string(&batches).unwrap_or_default());
        for name in self.up_nodes() {
            out.push_str(&format!("\n{name}: {:?}", self.assignments(&name)));
        }
        out.push_str(&format!(
            "\nusage {:?} reservation {:?} next {} {} now {}",
            self.sched.engine().gpu_usage(),
            self.sched.reservation(),
            self.next_id,
            self.next_service,
            self.now
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn init() -> Event {
        Event::Init {
            fleet_toml: default_fleet_toml().unwrap(),
            tenants: default_tenants(),
            at: 100,
            commitments: Default::default(),
        }
    }

    fn req(name: &str, nodes: u32) -> SubmitJob {
        SubmitJob {
            name: name.into(),
            tenant: "default".into(),
            priority: "research".into(),
            gpu: "GB200".into(),
            nodes,
            gpus_per_node: 4,
            cpu_millis_per_node: 0,
            memory_mib_per_node: 0,
            segment: None,
            spares: 0,
            time_limit_s: 3600,
            command: vec!["true".into()],
            env: BTreeMap::new(),
            workdir: None,
            placement: Default::default(),
        }
    }

    /// A journal's records, numbered from 1, as replay reads them back.
    fn numbered(journal: &[Vec<u8>]) -> impl Iterator<Item = (u64, Stored)> + '_ {
        journal
            .iter()
            .enumerate()
            .map(|(i, body)| (i as u64 + 1, crate::journal::decode(body).unwrap()))
    }

    /// Replaying `journal` from record 1 gives a state equal to `p`.
    fn assert_replays_to(p: &ControlPlane, journal: Vec<Vec<u8>>) {
        let again = ControlPlane::replay(numbered(&journal)).unwrap().unwrap();
        assert_eq!(p.fingerprint(), again.fingerprint());
        assert_eq!(p.placements(), again.placements());
        again.sched.check_invariants().unwrap();
    }

    /// The journal record of `Init`.
    fn init_record(p: &ControlPlane) -> Vec<u8> {
        p.encode(&Record {
            event: init(),
            decisions: Vec::new(),
            outcome: Default::default(),
        })
    }

    /// The state after Init with every node's agent up; the events that made it.
    fn up() -> (ControlPlane, Vec<Vec<u8>>) {
        let mut p = ControlPlane::new(&init()).unwrap();
        let mut journal = vec![init_record(&p)];
        for name in p
            .sched
            .engine()
            .fleet()
            .nodes()
            .iter()
            .map(|n| n.name.to_string())
            .collect::<Vec<_>>()
        {
            let e = Event::NodeUp {
                node: name,
                at: 100,
            };
            let r = p.apply(&e).unwrap();
            journal.push(p.encode(&r));
        }
        (p, journal)
    }

    #[test]
    fn replay_rebuilds_the_same_state() {
        let (mut p, mut journal) = up();
        for (i, nodes) in [18, 18, 4, 30].into_iter().enumerate() {
            let e = p
                .submit_event(&req(&format!("j{i}"), nodes), 100 + i as u64)
                .unwrap();
            let r = p.apply(&e).unwrap();
            journal.push(p.encode(&r));
        }
        for e in [
            Event::Pass { at: 110 },
            Event::Cancel { id: 2, at: 120 },
            Event::Pass { at: 121 },
        ] {
            let r = p.apply(&e).unwrap();
            journal.push(p.encode(&r));
        }
        let again = ControlPlane::replay(numbered(&journal)).unwrap().unwrap();
        assert_eq!(p.fingerprint(), again.fingerprint());
        let v = again.job_view(3).unwrap();
        assert_eq!(v.state, "running");
        assert_eq!(v.nodes.len(), 4);
        assert_eq!(again.job_view(2).unwrap().state, "cancelled");
        assert_eq!(again.job_view(4).unwrap().state, "pending");
    }

    #[test]
    fn nothing_runs_on_a_node_without_an_agent() {
        let mut p = ControlPlane::new(&init()).unwrap();
        let e = p.submit_event(&req("j", 1), 100).unwrap();
        p.apply(&e).unwrap();
        p.apply(&Event::Pass { at: 101 }).unwrap();
        assert_eq!(p.job_view(1).unwrap().state, "pending");
        assert!(p.up_nodes().is_empty());
    }

    #[test]
    fn tasks_report_exits_and_checkpoints_and_a_dead_node_requeues() {
        let (mut p, _) = up();
        let apply_all = |p: &mut ControlPlane, events: Vec<Event>| {
            for e in events {
                p.apply(&e).unwrap();
            }
        };
        let e = p.submit_event(&req("gang", 2), 100).unwrap();
        p.apply(&e).unwrap();
        p.apply(&Event::Pass { at: 101 }).unwrap();
        let nodes = p.job_view(1).unwrap().nodes;
        assert_eq!(nodes.len(), 2);
        let a = p.assignments(&nodes[0]).0;
        assert_eq!((a.len(), a[0].rank, a[0].world, a[0].run), (1, 0, 2, 0));
        assert_eq!(a[0].gpus, vec![0, 1, 2, 3]);
        // A checkpoint, then rank 0 exits 0: the job still runs (rank 1 has not exited).
        let hb = |node: &str, exit: Option<i32>, rank, checkpoint| Heartbeat {
            node: node.into(),
            inventory: None,
            logs: Vec::new(),
            tasks: vec![crate::api::TaskReport {
                job: 1,
                run: 0,
                rank,
                exit_code: exit,
                checkpoint_at: checkpoint,
            }],
        };
        let ev = p
            .heartbeat_events(&hb(&nodes[0], None, 0, Some(150)), 160)
            .unwrap();
        assert_eq!(
            ev,
            vec![Event::Checkpoint {
                job: 1,
                run: 0,
                at: 150
            }]
        );
        apply_all(&mut p, ev);
        // The same checkpoint again is not news.
        assert!(p
            .heartbeat_events(&hb(&nodes[0], None, 0, Some(150)), 161)
            .unwrap()
            .is_empty());
        // The node dies: the job is requeued (run 1) and its old run's reports are ignored.
        p.apply(&Event::NodeDown {
            node: nodes[1].clone(),
            at: 200,
        })
        .unwrap();
        let v = p.job_view(1).unwrap();
        assert_eq!((v.state.as_str(), v.restarts), ("pending", 1));
        assert!(p
            .heartbeat_events(&hb(&nodes[0], Some(0), 0, None), 201)
            .unwrap()
            .is_empty());
        assert!(p.assignments(&nodes[0]).0.is_empty());
        // Run 1 goes elsewhere and ends when both ranks exit 0.
        p.apply(&Event::Pass { at: 202 }).unwrap();
        let v = p.job_view(1).unwrap();
        assert_eq!(v.state, "running");
        for (rank, node) in v.nodes.iter().enumerate() {
            let mut h = hb(node, Some(0), rank as u32, None);
            h.tasks[0].run = 1;
            let ev = p.heartbeat_events(&h, 300).unwrap();
            apply_all(&mut p, ev);
        }
        let v = p.job_view(1).unwrap();
        assert_eq!(
            (v.state.as_str(), v.exit_code, v.since),
            ("finished", Some(0), Some(300))
        );
        // A heartbeat from a node the fleet does not have names the field.
        assert_eq!(
            p.heartbeat_events(&hb("nope", None, 0, None), 301)
                .unwrap_err()
                .field,
            "node"
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let p = ControlPlane::new(&init()).unwrap();
        let cases: Vec<(SubmitJob, &str)> = vec![
            (
                SubmitJob {
                    name: "".into(),
                    ..req("x", 1)
                },
                "name",
            ),
            (
                SubmitJob {
                    name: "a b".into(),
                    ..req("x", 1)
                },
                "name",
            ),
            (
                SubmitJob {
                    tenant: "nobody".into(),
                    ..req("x", 1)
                },
                "tenant",
            ),
            (
                SubmitJob {
                    priority: "urgent".into(),
                    ..req("x", 1)
                },
                "priority",
            ),
            (
                SubmitJob {
                    gpu: "Z9".into(),
                    ..req("x", 1)
                },
                "gpu",
            ),
            (req("x", 0), "nodes"),
            (
                SubmitJob {
                    time_limit_s: 0,
                    ..req("x", 1)
                },
                "time_limit_s",
            ),
        ];
        for (r, field) in cases {
            let e = p.submit_event(&r, 1).unwrap_err();
            assert_eq!(e.field, field, "{e:?}");
            assert!(!e.reason.is_empty());
        }
    }

    fn service(replicas: u32) -> SubmitService {
        SubmitService {
            name: "chat".into(),
            tenant: "default".into(),
            priority: "production-inference".into(),
            gpu: "GB200".into(),
            nodes_per_replica: 1,
            gpus_per_node: 4,
            cpu_millis_per_node: 0,
            memory_mib_per_node: 0,
            min_replicas: replicas,
            max_replicas: Some(4),
            spread: Some(crate::api::SpreadSpec {
                level: "domain".into(),
                max_per: 1,
            }),
            command: vec!["serve".into()],
            env: BTreeMap::new(),
            workdir: None,
            placement: Default::default(),
            min_providers: Default::default(),
        }
    }

    fn sandboxes(count: u32) -> SubmitSandboxes {
        SubmitSandboxes {
            name: "rollouts".into(),
            tenant: "default".into(),
            count,
            cpu_millis: 1000,
            memory_mib: 1024,
            max_retries: 3,
            command: vec!["run".into()],
            env: BTreeMap::new(),
            workdir: None,
        }
    }

    fn exit_report(job: u64, run: u32, rank: u32, code: i32) -> crate::api::TaskReport {
        crate::api::TaskReport {
            job,
            run,
            rank,
            exit_code: Some(code),
            checkpoint_at: None,
        }
    }

    /// The domain part of a tray's name (`nvl00001t04` → `nvl00001`).
    fn domain(node: &str) -> &str {
        node.split('t').next().unwrap()
    }

    #[test]
    fn services_keep_their_replicas_spread_and_replace_exited_ones() {
        let (mut p, mut journal) = up();
        let mut apply = |p: &mut ControlPlane, e: Event| {
            let r = p.apply(&e).unwrap();
            journal.push(p.encode(&r));
        };
        let e = p.service_event(&service(2), 100).unwrap();
        apply(&mut p, e);
        apply(&mut p, Event::Pass { at: 101 });
        let v = p.service_view(1).unwrap();
        assert_eq!((v.desired, v.running, v.pending), (2, 2, 0));
        assert_ne!(domain(&v.replicas[0][0]), domain(&v.replicas[1][0]));
        // The replica's node is told to run the service's command.
        let node = v.replicas[0][0].clone();
        let (tasks, _) = p.assignments(&node);
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].command, vec!["serve".to_string()]);
        // Its process exits: the replica is replaced, and the new one is placed by a pass.
        let hb = Heartbeat {
            node: node.clone(),
            inventory: None,
            logs: Vec::new(),
            tasks: vec![exit_report(tasks[0].job, tasks[0].run, 0, 1)],
        };
        for e in p.heartbeat_events(&hb, 110).unwrap() {
            apply(&mut p, e);
        }
        // It ran 9 s: a crash as it started, so its replacement waits 10 s, and says so.
        let v = p.service_view(1).unwrap();
        assert_eq!((v.running, v.pending, v.replaced), (1, 0, 1));
        assert!(
            v.reason
                .as_deref()
                .unwrap_or("")
                .contains("waits until t=120"),
            "{v:?}"
        );
        assert!(p.assignments(&node).0.iter().all(|a| a.job != tasks[0].job));
        assert!(!p.due(119) && p.due(120));
        apply(&mut p, Event::Pass { at: 111 });
        assert_eq!(p.service_view(1).unwrap().running, 1);
        apply(&mut p, Event::Pass { at: 120 });
        let v = p.service_view(1).unwrap();
        assert_eq!((v.running, v.reason), (2, None));
        // The new replica crashes as well: the next wait is twice as long.
        let again = v
            .replicas
            .iter()
            .map(|r| r[0].clone())
            .find_map(|n| {
                p.assignments(&n)
                    .0
                    .into_iter()
                    .find(|a| a.job != tasks[0].job && a.job > tasks[0].job)
                    .map(|a| (n, a))
            })
            .unwrap();
        let hb = Heartbeat {
            node: again.0.clone(),
            inventory: None,
            logs: Vec::new(),
            tasks: vec![exit_report(again.1.job, again.1.run, 0, 1)],
        };
        for e in p.heartbeat_events(&hb, 125).unwrap() {
            apply(&mut p, e);
        }
        let v = p.service_view(1).unwrap();
        assert!(
            v.reason
                .as_deref()
                .unwrap_or("")
                .contains("waits until t=145"),
            "{v:?}"
        );
        apply(&mut p, Event::Pass { at: 145 });
        assert_eq!(p.service_view(1).unwrap().running, 2);
        // A third replica has no domain left under the spread rule: it waits, and says why.
        apply(
            &mut p,
            Event::ServiceScale {
                id: 1,
                replicas: 3,
                at: 150,
            },
        );
        apply(&mut p, Event::Pass { at: 151 });
        let v = p.service_view(1).unwrap();
        assert_eq!((v.desired, v.running, v.pending), (3, 2, 1));
        assert!(
            v.reason.as_deref().unwrap_or("").contains("spread"),
            "{v:?}"
        );
        // Scaling is clamped to the bounds; deleting stops every replica.
        apply(
            &mut p,
            Event::ServiceScale {
                id: 1,
                replicas: 99,
                at: 160,
            },
        );
        assert_eq!(p.service_view(1).unwrap().desired, 4);
        apply(&mut p, Event::ServiceDelete { id: 1, at: 170 });
        let v = p.service_view(1).unwrap();
        assert_eq!((v.state.as_str(), v.running, v.pending), ("deleted", 0, 0));
        assert!(p
            .apply(&Event::ServiceScale {
                id: 1,
                replicas: 2,
                at: 171
            })
            .is_err());
        assert_replays_to(&p, journal);
    }

    #[test]
    fn sandboxes_run_exit_move_and_replay() {
        let (mut p, mut journal) = up();
        let mut apply = |p: &mut ControlPlane, e: Event| {
            let r = p.apply(&e).unwrap();
            journal.push(p.encode(&r));
        };
        let e = p.sandbox_event(&sandboxes(10), 100).unwrap();
        apply(&mut p, e);
        let v = p.batch_view(1).unwrap();
        assert_eq!((v.state.as_str(), v.count, v.live), ("running", 10, 10));
        // Every sandbox is assigned to exactly one host.
        let mut seen = Vec::new();
        let mut host_of = BTreeMap::new();
        for node in p.up_nodes() {
            for r in p.assignments(&node).1 {
                assert_eq!(r.batch, 1);
                for i in r.first..r.first + r.count {
                    seen.push(i);
                    host_of.insert(i, node.clone());
                }
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<u32>>());
        // Sandbox 0 exits 0, sandbox 1 exits 2; a report from the wrong host is ignored.
        let host0 = host_of[&0].clone();
        let wrong = p.up_nodes().into_iter().find(|n| *n != host0).unwrap();
        let report = |node: &str, index: u32, code: i32| Heartbeat {
            node: node.into(),
            inventory: None,
            logs: Vec::new(),
            tasks: vec![exit_report(1, 0, index, code)],
        };
        if host_of[&1] != wrong {
            assert!(p
                .heartbeat_events(&report(&wrong, 0, 0), 101)
                .unwrap()
                .is_empty());
        }
        for (index, code) in [(0, 0), (1, 2)] {
            for e in p
                .heartbeat_events(&report(&host_of[&index].clone(), index, code), 102)
                .unwrap()
            {
                apply(&mut p, e);
            }
        }
        let v = p.batch_view(1).unwrap();
        assert_eq!((v.live, v.succeeded, v.failed), (8, 1, 1));
        // The same exit reported again is not news.
        assert!(p
            .heartbeat_events(&report(&host0, 0, 0), 103)
            .unwrap()
            .is_empty());
        // A host with live sandboxes goes down: they move to other hosts.
        let host2 = host_of[&2].clone();
        apply(
            &mut p,
            Event::NodeDown {
                node: host2.clone(),
                at: 110,
            },
        );
        let v = p.batch_view(1).unwrap();
        assert_eq!(v.live, 8);
        assert!(v.moved >= 1, "{v:?}");
        assert!(p.assignments(&host2).1.is_empty());
        // Cancelling stops the rest.
        apply(&mut p, Event::Cancel { id: 1, at: 120 });
        let v = p.batch_view(1).unwrap();
        assert_eq!((v.state.as_str(), v.live), ("cancelled", 0));
        assert!(p.up_nodes().iter().all(|n| p.assignments(n).1.is_empty()));
        assert_replays_to(&p, journal);
    }

    #[test]
    fn bad_services_and_sandboxes_name_the_field() {
        let p = up().0;
        let cases: Vec<(SubmitService, &str)> = vec![
            (
                SubmitService {
                    min_replicas: 5,
                    ..service(1)
                },
                "min_replicas",
            ),
            (
                SubmitService {
                    spread: Some(crate::api::SpreadSpec {
                        level: "rack".into(),
                        max_per: 1,
                    }),
                    ..service(1)
                },
                "spread.level",
            ),
            (
                SubmitService {
                    nodes_per_replica: 0,
                    ..service(1)
                },
                "nodes_per_replica",
            ),
            (
                SubmitService {
                    priority: "vip".into(),
                    ..service(1)
                },
                "priority",
            ),
        ];
        for (r, field) in cases {
            assert_eq!(p.service_event(&r, 1).unwrap_err().field, field);
        }
        let cases: Vec<(SubmitSandboxes, &str)> = vec![
            (sandboxes(0), "count"),
            (
                SubmitSandboxes {
                    cpu_millis: 0,
                    ..sandboxes(1)
                },
                "cpu_millis",
            ),
            (
                SubmitSandboxes {
                    tenant: "x".into(),
                    ..sandboxes(1)
                },
                "tenant",
            ),
            (
                SubmitSandboxes {
                    name: "a/b".into(),
                    ..sandboxes(1)
                },
                "name",
            ),
        ];
        for (r, field) in cases {
            assert_eq!(p.sandbox_event(&r, 1).unwrap_err().field, field);
        }
        // Too many to fit: the event is refused when it applies, and nothing changes.
        let mut p = p;
        let before = p.fingerprint();
        let e = p.sandbox_event(&sandboxes(1_000_000), 1).unwrap();
        assert!(p.apply(&e).is_err());
        assert_eq!(before, p.fingerprint());
    }

    #[test]
    fn changes_name_the_old_and_new_nodes_of_what_moved() {
        let (mut p, _) = up();
        p.take_changed_nodes();
        let e = p.submit_event(&req("j", 2), 100).unwrap();
        p.apply(&e).unwrap();
        assert!(
            p.take_changed_nodes().is_empty(),
            "a pending job is nowhere yet"
        );
        p.apply(&Event::Pass { at: 101 }).unwrap();
        let nodes = p.job_view(1).unwrap().nodes;
        assert_eq!(p.take_changed_nodes(), nodes);
        // A node of the job dies: the job leaves both nodes (the survivor must stop its task).
        p.apply(&Event::NodeDown {
            node: nodes[1].clone(),
            at: 102,
        })
        .unwrap();
        assert_eq!(p.take_changed_nodes(), nodes);
        // Placed again elsewhere: the new nodes change.
        p.apply(&Event::Pass { at: 103 }).unwrap();
        let again = p.job_view(1).unwrap().nodes;
        assert_eq!(p.take_changed_nodes(), again);
        p.apply(&Event::Cancel { id: 1, at: 104 }).unwrap();
        assert_eq!(p.take_changed_nodes(), again);
        assert!(p.take_changed_nodes().is_empty());
    }

    #[test]
    fn a_drained_node_takes_no_new_work_even_after_its_agent_returns() {
        let (mut p, _) = up();
        let names = p.up_nodes();
        // Drain every node but the first tray (and one CPU host).
        let keep = [names[0].clone(), names[18].clone()];
        for n in names.iter().filter(|n| !keep.contains(n)) {
            p.apply(&Event::NodeDrain {
                node: n.clone(),
                drain: true,
                at: 100,
            })
            .unwrap();
        }
        let state =
            |p: &ControlPlane, n: &str| p.nodes().into_iter().find(|v| v.name == n).unwrap().state;
        assert_eq!(state(&p, &names[1]), "draining");
        // The node's agent goes away and comes back: still draining.
        for e in [
            Event::NodeDown {
                node: names[1].clone(),
                at: 101,
            },
            Event::NodeUp {
                node: names[1].clone(),
                at: 102,
            },
        ] {
            p.apply(&e).unwrap();
        }
        assert_eq!(state(&p, &names[1]), "draining");
        let e = p.submit_event(&req("j", 1), 103).unwrap();
        p.apply(&e).unwrap();
        p.apply(&Event::Pass { at: 104 }).unwrap();
        let on = p.job_view(1).unwrap().nodes;
        assert!(keep.contains(&on[0]), "{on:?}");
        // Draining twice is refused; resuming makes it take work again.
        let again = Event::NodeDrain {
            node: names[1].clone(),
            drain: true,
            at: 105,
        };
        assert!(p.apply(&again).is_err());
        p.apply(&Event::NodeDrain {
            node: names[1].clone(),
            drain: false,
            at: 106,
        })
        .unwrap();
        assert_eq!(state(&p, &names[1]), "ready");
    }

    /// A journal with a bit of everything: jobs, a service, sandboxes, checkpoints, exits, a
    /// failure, a drain, preemption pressure.
    fn busy_journal() -> Vec<Vec<u8>> {
        let (mut p, mut journal) = up();
        let mut apply = |p: &mut ControlPlane, e: Event| {
            let r = p.apply(&e).unwrap();
            journal.push(p.encode(&r));
        };
        for (i, nodes) in [18, 4, 2, 30, 9].into_iter().enumerate() {
            let e = p
                .submit_event(&req(&format!("j{i}"), nodes), 100 + i as u64)
                .unwrap();
            apply(&mut p, e);
        }
        let e = p.service_event(&service(2), 106).unwrap();
        apply(&mut p, e);
        let e = p.sandbox_event(&sandboxes(40), 107).unwrap();
        apply(&mut p, e);
        apply(&mut p, Event::Pass { at: 110 });
        let on = p.job_view(2).unwrap().nodes;
        apply(
            &mut p,
            Event::Checkpoint {
                job: 2,
                run: 0,
                at: 115,
            },
        );
        apply(
            &mut p,
            Event::NodeDrain {
                node: on[1].clone(),
                drain: true,
                at: 118,
            },
        );
        apply(
            &mut p,
            Event::NodeDown {
                node: on[0].clone(),
                at: 120,
            },
        );
        apply(&mut p, Event::Pass { at: 121 });
        apply(&mut p, Event::Cancel { id: 1, at: 125 });
        apply(
            &mut p,
            Event::SandboxesExited {
                batch: 6,
                exited: vec![(0, 0), (1, 3)],
                at: 126,
            },
        );
        apply(&mut p, Event::Pass { at: 130 });
        journal
    }

    /// A busier journal for the upgrade fixtures: gangs with spares, a reservation, preemption
    /// through its grace period, a failed tray replaced by a spare and one requeued, a service
    /// whose replica exits and is replaced, scaling, sandboxes moved off a failed host, drains,
    /// checkpoints, cancels and exits.
    fn upgrade_scenario() -> (ControlPlane, Vec<Vec<u8>>) {
        let (mut p, mut journal) = up();
        let mut apply = |p: &mut ControlPlane, e: Event| {
            let r = p.apply(&e).unwrap_or_else(|err| panic!("{e:?}: {err}"));
            journal.push(p.encode(&r));
        };
        let job = |name: &str, nodes: u32, priority: &str, spares: u32| SubmitJob {
            priority: priority.into(),
            spares,
            ..req(name, nodes)
        };
        for (i, (nodes, priority, spares)) in [
            (8, "research", 1),
            (4, "preemptible", 0),
            (6, "preemptible", 0),
            (2, "research", 0),
            (30, "research", 0),
            (3, "research", 0),
        ]
        .into_iter()
        .enumerate()
        {
            let e = p
                .submit_event(&job(&format!("j{i}"), nodes, priority, spares), 101)
                .unwrap();
            apply(&mut p, e);
        }
        let e = p.service_event(&service(2), 102).unwrap();
        apply(&mut p, e);
        let e = p.sandbox_event(&sandboxes(40), 103).unwrap();
        apply(&mut p, e);
        apply(&mut p, Event::Pass { at: 110 });
        let on = p.job_view(1).unwrap().nodes;
        apply(
            &mut p,
            Event::Checkpoint {
                job: 1,
                run: 0,
                at: 300,
            },
        );
        // A tray of the gang with a spare fails: the spare takes its place.
        apply(
            &mut p,
            Event::NodeDown {
                node: on[2].clone(),
                at: 400,
            },
        );
        apply(&mut p, Event::Pass { at: 401 });
        // A tray of a gang without spares fails: it is requeued.
        let on = p.job_view(4).unwrap().nodes;
        apply(
            &mut p,
            Event::NodeDown {
                node: on[0].clone(),
                at: 402,
            },
        );
        apply(&mut p, Event::Pass { at: 403 });
        // A host with sandboxes fails: they move.
        let host = p
            .up_nodes()
            .into_iter()
            .find(|n| !p.assignments(n).1.is_empty())
            .unwrap();
        apply(
            &mut p,
            Event::NodeDown {
                node: host,
                at: 404,
            },
        );
        apply(
            &mut p,
            Event::SandboxesExited {
                batch: 7,
                exited: vec![(0, 0), (1, 3)],
                at: 405,
            },
        );
        // A replica exits and is replaced; the service is scaled up.
        let replica = p
            .up_nodes()
            .into_iter()
            .flat_map(|n| p.assignments(&n).0)
            .find(|t| t.job >= sched::REPLICA_IDS)
            .unwrap();
        apply(
            &mut p,
            Event::TaskExited {
                job: replica.job,
                run: replica.run,
                rank: 0,
                code: 1,
                at: 405,
            },
        );
        apply(
            &mut p,
            Event::ServiceScale {
                id: 1,
                replicas: 3,
                at: 406,
            },
        );
        apply(&mut p, Event::Pass { at: 407 });
        // Training work that only preemption makes room for (victims ran past min_runtime).
        for (i, nodes) in [(0, 12), (1, 4)] {
            let e = p
                .submit_event(&job(&format!("t{i}"), nodes, "training", 0), 800)
                .unwrap();
            apply(&mut p, e);
        }
        apply(&mut p, Event::Pass { at: 801 });
        apply(&mut p, Event::Cancel { id: 6, at: 850 });
        let on = p.job_view(1).unwrap().nodes;
        apply(
            &mut p,
            Event::NodeDrain {
                node: on[0].clone(),
                drain: true,
                at: 860,
            },
        );
        apply(&mut p, Event::Pass { at: 930 });
        apply(&mut p, Event::Pass { at: 1000 });
        // Every rank of a running job exits 0: it finishes.
        let done = (1..=8)
            .find(|id| p.job_view(*id).is_some_and(|v| v.state == "running"))
            .unwrap();
        let run = p.sched.job(WorkloadId(done)).unwrap().restarts;
        for rank in 0..p.job_view(done).unwrap().nodes.len() as u32 {
            apply(
                &mut p,
                Event::TaskExited {
                    job: done,
                    run,
                    rank,
                    code: 0,
                    at: 1100,
                },
            );
        }
        apply(&mut p, Event::Pass { at: 1101 });
        (p, journal)
    }

    /// Writes the upgrade fixtures when `STARGRID_WRITE_FIXTURES` names a directory.
    #[test]
    fn write_upgrade_fixtures() {
        let Ok(dir) = std::env::var("STARGRID_WRITE_FIXTURES") else {
            return;
        };
        let (p, journal) = upgrade_scenario();
        let lines: Vec<&str> = journal
            .iter()
            .map(|r| std::str::from_utf8(r).unwrap())
            .collect();
        std::fs::write(format!("{dir}/journal.jsonl"), lines.join("\n") + "\n").unwrap();
        std::fs::write(format!("{dir}/placements.txt"), p.placements()).unwrap();
    }

    #[test]
    fn a_snapshot_anywhere_then_the_rest_of_the_journal_is_the_same_state() {
        let journal = busy_journal();
        let numbered = || numbered(&journal);
        let whole = ControlPlane::replay(numbered()).unwrap().unwrap();
        // What comes next must be decided the same way too: more work and more passes.
        let more = |p: &mut ControlPlane| {
            let mut decisions = Vec::new();
            for (i, at) in [(0, 200), (1, 201)] {
                let e = p.submit_event(&req(&format!("late{i}"), 3), at).unwrap();
                p.apply(&e).unwrap();
                let e = p.sandbox_event(&sandboxes(5), at).unwrap();
                p.apply(&e).unwrap();
                decisions.extend(p.apply(&Event::Pass { at: at + 1 }).unwrap().decisions);
            }
            format!("{decisions:?}")
        };
        let mut after_whole = ControlPlane::replay(numbered()).unwrap().unwrap();
        let decided = more(&mut after_whole);
        assert!(decided.contains("Start"), "{decided}");
        for cut in 1..=journal.len() as u64 {
            let head = ControlPlane::replay(numbered().take(cut as usize))
                .unwrap()
                .unwrap();
            assert_eq!(head.seq(), cut);
            let mut plane = Some(ControlPlane::from_snapshot(&head.snapshot().unwrap()).unwrap());
            for (seq, e) in numbered().skip(cut as usize) {
                ControlPlane::replay_one(&mut plane, seq, e).unwrap();
            }
            let mut p = plane.unwrap();
            assert_eq!(p.fingerprint(), whole.fingerprint(), "snapshot at {cut}");
            assert!(p.sched.check_invariants().is_ok());
            assert_eq!(more(&mut p), decided, "snapshot at {cut}");
            assert_eq!(
                p.fingerprint(),
                after_whole.fingerprint(),
                "snapshot at {cut}"
            );
        }
        // A record out of sequence after a snapshot is refused by number.
        let mut plane = Some(whole);
        let e = ControlPlane::replay_one(&mut plane, 999, Stored::Inputs(Event::Pass { at: 300 }))
            .unwrap_err();
        assert!(e.to_string().contains("expected record"), "{e}");
        // Garbage is not a snapshot.
        assert!(ControlPlane::from_snapshot(b"garbage").is_err());
    }

    #[test]
    fn crash_backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (0..8).map(backoff).collect();
        assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(u32::MAX), 300);
    }

    #[test]
    fn a_journal_must_start_with_init() {
        let e = ControlPlane::replay(vec![(1, Stored::Inputs(Event::Pass { at: 1 }))])
            .err()
            .unwrap();
        assert!(e.to_string().contains("first record must be Init"), "{e}");
        let e = ControlPlane::replay(vec![
            (1, Stored::Inputs(init())),
            (2, Stored::Inputs(init())),
        ])
        .err()
        .unwrap();
        assert!(e.to_string().contains("record 2: a second Init"), "{e}");
    }
}
