//! The journal's record format, versioned apart from the in-memory types.
//!
//! A record is an input ([`Event`]) with what the queue decided on it: the decisions a person
//! reads ([`sched::Decision`]) and the outcome replay restores ([`sched::Outcome`]). On disk
//! each record is JSON carrying its format version, `{"v":1,"event":…,"decisions":…,
//! "outcome":…}`, in types of this module only: nodes by name (never by their index in a
//! build's fleet), jobs by number, states as tagged words. Changing a queue or engine struct
//! therefore cannot change what a journal means; changing these types needs a new version and
//! an upgrade from the old one.
//!
//! Versions:
//! - **0**, written before decisions were journaled: a bare event, no `v`. Such a journal holds
//!   only inputs; [`crate::state::ControlPlane::replay_one`] replays it once, deciding by this
//!   build's rules with preemption as those builds did it (`sched::DecisionRules::Format0`), to recover the decisions,
//!   and the server rewrites it as version 1.
//! - **1**: the record above.

mod codec;
pub mod history;
pub mod snapshot;

pub use codec::Codec;

use crate::state::Event;
use model::{PriorityClass, SandboxRequest, ServiceSpec};
use sched::{Decision, Outcome};
use serde::{Deserialize, Serialize};

/// The version this build writes.
pub const FORMAT: u32 = 1;

/// One journal record in memory: an input and what the queue made of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The input.
    pub event: Event,
    /// What happened, in the order it happened.
    pub decisions: Vec<Decision>,
    /// The state of everything the event touched, for replay.
    pub outcome: Outcome,
}

/// A record as read back: of this version, or older.
#[derive(Debug)]
pub enum Stored {
    /// Version 0: an input alone; its decisions must be worked out again (once, to migrate).
    Inputs(Event),
    /// Version 1.
    V1(RecordV1),
}

/// Why a record cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON of any version's shape.
    #[error("not a journal record: {0}")]
    Malformed(String),
    /// Written by a newer build.
    #[error("journal format {found}; this build reads up to {FORMAT}")]
    Newer {
        /// The version found.
        found: u32,
    },
    /// A node or workload it names is not in the fleet.
    #[error("{0}")]
    Unknown(String),
}

#[derive(Deserialize)]
struct Header {
    v: Option<u32>,
}

/// Reads one record's bytes.
pub fn decode(body: &[u8]) -> Result<Stored, DecodeError> {
    let malformed = |e: serde_json::Error| DecodeError::Malformed(e.to_string());
    let header: Header = serde_json::from_slice(body).map_err(malformed)?;
    match header.v {
        None => Ok(Stored::Inputs(
            serde_json::from_slice(body).map_err(malformed)?,
        )),
        Some(1) => Ok(Stored::V1(serde_json::from_slice(body).map_err(malformed)?)),
        Some(found) => Err(DecodeError::Newer { found }),
    }
}

/// The bytes of a record (version [`FORMAT`]).
pub fn encode(record: &RecordV1) -> Vec<u8> {
    // Plain data: encoding cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

/// A record of version 1, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordV1 {
    /// Always 1.
    pub v: u32,
    /// The input.
    pub event: Event,
    /// What happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<DecisionV1>,
    /// What replay restores.
    #[serde(default, skip_serializing_if = "OutcomeV1::is_empty")]
    pub outcome: OutcomeV1,
}

/// A node and the devices taken on it (bit i: device i).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotV1 {
    /// The node's name.
    pub node: String,
    /// Device mask.
    pub gpus: u32,
}

/// A decision (the words of `stargrid` output and history).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DecisionV1 {
    /// A job started on these slots, by rank.
    Start {
        /// The job.
        job: u64,
        /// Its slots.
        slots: Vec<SlotV1>,
    },
    /// A job was told to stop by `deadline` for `by`.
    Preempt {
        /// The victim.
        job: u64,
        /// The preemptor.
        by: u64,
        /// When it is stopped.
        deadline: u64,
    },
    /// A job stopped and was queued again.
    Requeue {
        /// The job.
        job: u64,
        /// GPU-hours lost.
        lost_gpu_hours: f64,
    },
    /// A failed node of a job was replaced by a spare.
    Replace {
        /// The job.
        job: u64,
        /// The failed node.
        failed: String,
        /// The spare.
        replacement: String,
        /// GPU-hours lost.
        lost_gpu_hours: f64,
    },
    /// Sandboxes moved off a failed host.
    SandboxesMoved {
        /// The batch.
        batch: u64,
        /// The host.
        from: String,
        /// How many.
        count: u32,
    },
    /// Sandboxes ended with their failed host.
    SandboxesLost {
        /// The batch.
        batch: u64,
        /// The host.
        from: String,
        /// How many.
        count: u32,
    },
    /// Nodes held for a job from `start`.
    Reserve {
        /// The job.
        job: u64,
        /// Its earliest start.
        start: u64,
        /// Nodes held.
        nodes: usize,
    },
}

/// The state of everything one event touched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OutcomeV1 {
    /// Jobs and replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobV1>,
    /// Sandbox batches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<BatchV1>,
    /// Services the event touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceV1>,
    /// The reservation, when it changed: `{"job": …}`, or `{}` when it was cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<ReservationV1>,
}

impl OutcomeV1 {
    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.batches.is_empty()
            && self.services.is_empty()
            && self.reservation.is_none()
    }
}

/// A job's life state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStateV1 {
    /// Waiting to be placed.
    Pending,
    /// Running since `since`.
    Running {
        /// Start of the run.
        since: u64,
    },
    /// Told to stop by `deadline` for `by`.
    Preempting {
        /// Start of the run.
        since: u64,
        /// When it is stopped.
        deadline: u64,
        /// The preemptor.
        by: u64,
    },
    /// Ended by itself.
    Finished,
    /// Cancelled by its owner.
    Cancelled,
}

/// A job after the event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobV1 {
    /// The job.
    pub id: u64,
    /// Its state.
    #[serde(flatten)]
    pub state: JobStateV1,
    /// Its slots by rank, while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotV1>,
    /// Spares held in its domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spares: Vec<SlotV1>,
    /// CPU millicores per node.
    #[serde(default)]
    pub cpu_millis: u32,
    /// Memory per node, MiB.
    #[serde(default)]
    pub memory_mib: u32,
    /// When its slots were placed.
    #[serde(default)]
    pub placed_at: u64,
    /// Times requeued or restarted in place.
    #[serde(default)]
    pub restarts: u32,
    /// Times preempted.
    #[serde(default)]
    pub preemptions: u32,
    /// Runs on quota borrowed from its cohort.
    #[serde(default)]
    pub borrowed: bool,
    /// GPU-hours lost.
    #[serde(default)]
    pub lost_gpu_hours: f64,
    /// GPU-seconds served in ended runs.
    #[serde(default)]
    pub attained_gpu_seconds: u64,
    /// Last checkpoint.
    #[serde(default)]
    pub last_checkpoint: Option<u64>,
    /// Nodes held for it while its victims stop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hold: Vec<String>,
    /// Victims it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<u64>,
    /// The service it is a replica of.
    #[serde(default)]
    pub service: Option<u64>,
}

/// Consecutive sandboxes on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunV1 {
    /// The host's name.
    pub node: String,
    /// First index.
    pub first: u32,
    /// How many.
    pub count: u32,
}

/// A sandbox batch after the event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchV1 {
    /// The batch.
    pub id: u64,
    /// `false`: it ended (nothing else is set).
    pub live: bool,
    /// Its owner's index.
    #[serde(default)]
    pub tenant: Option<u32>,
    /// What it asked for.
    #[serde(default)]
    pub request: Option<SandboxRequest>,
    /// Host failures it may survive.
    #[serde(default)]
    pub max_retries: u32,
    /// Host failures survived.
    #[serde(default)]
    pub retries: u32,
    /// Where its sandboxes are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunV1>,
    /// Bit i of word i/64: sandbox i is live.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub live_bits: Vec<u64>,
    /// When it was placed.
    #[serde(default)]
    pub placed_at: u64,
}

/// A service after the event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceV1 {
    /// The service.
    pub id: u64,
    /// `None`: deleted.
    #[serde(default)]
    pub spec: Option<ServiceSpec>,
    /// Replicas wanted.
    #[serde(default)]
    pub desired: u32,
    /// Replicas kept above `desired` by a rolling update (absent in records from before
    /// rolling updates: 0).
    #[serde(default, skip_serializing_if = "zero")]
    pub surge: u32,
    /// Replica jobs, oldest first.
    #[serde(default)]
    pub replicas: Vec<u64>,
    /// Index of the next new replica.
    #[serde(default)]
    pub next: u64,
}

/// The reservation after the event (`job: None`: cleared).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReservationV1 {
    /// The job it holds nodes for.
    #[serde(default)]
    pub job: Option<u64>,
    /// Its earliest start.
    #[serde(default)]
    pub start: u64,
    /// The nodes held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// The job's class.
    #[serde(default)]
    pub priority: Option<PriorityClass>,
    /// When it was worked out.
    #[serde(default)]
    pub computed_at: u64,
}

fn zero(n: &u32) -> bool {
    *n == 0
}
