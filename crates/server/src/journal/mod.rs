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
//!   only inputs; [`crate::state::ControlPlane::migrate`] replays it once with this build's rules
//!   to recover the decisions and the server rewrites it as version 1.
//! - **1**: the record above.

pub mod history;
pub mod snapshot;

use crate::state::Event;
use model::{Fleet, NodeId, PriorityClass, Resources, SandboxRequest, ServiceSpec, TenantId};
use sched::{
    BatchRecord, Decision, GangSlots, JobRecord, JobState, LiveBatch, LiveJob, NodeSlot, Outcome,
    ReservationChange, ReservationRecord, SandboxRun, ServiceRecord,
};
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

/// Converts between the in-memory record and version 1, naming nodes through a fleet.
pub struct Codec<'a> {
    fleet: &'a Fleet,
}

impl<'a> Codec<'a> {
    /// A codec over the journal's fleet.
    pub fn new(fleet: &'a Fleet) -> Codec<'a> {
        Codec { fleet }
    }

    fn name(&self, n: NodeId) -> String {
        self.fleet.node(n).name.to_string()
    }

    fn node(&self, name: &str) -> Result<NodeId, DecodeError> {
        self.fleet
            .node_by_name(name)
            .ok_or_else(|| DecodeError::Unknown(format!("no node '{name}' in the fleet")))
    }

    fn slots(&self, slots: &[NodeSlot]) -> Vec<SlotV1> {
        slots
            .iter()
            .map(|s| SlotV1 {
                node: self.name(s.node),
                gpus: s.gpu_mask,
            })
            .collect()
    }

    fn slots_back(&self, slots: &[SlotV1]) -> Result<Vec<NodeSlot>, DecodeError> {
        slots
            .iter()
            .map(|s| {
                Ok(NodeSlot {
                    node: self.node(&s.node)?,
                    gpu_mask: s.gpus,
                })
            })
            .collect()
    }

    fn names(&self, nodes: &[NodeId]) -> Vec<String> {
        nodes.iter().map(|n| self.name(*n)).collect()
    }

    fn nodes_back(&self, names: &[String]) -> Result<Vec<NodeId>, DecodeError> {
        names.iter().map(|n| self.node(n)).collect()
    }

    /// The stored form of a record.
    pub fn store(&self, r: &Record) -> RecordV1 {
        RecordV1 {
            v: FORMAT,
            event: r.event.clone(),
            decisions: r.decisions.iter().map(|d| self.decision(d)).collect(),
            outcome: self.outcome(&r.outcome),
        }
    }

    /// The in-memory form of a stored record.
    pub fn load(&self, r: RecordV1) -> Result<Record, DecodeError> {
        Ok(Record {
            decisions: r
                .decisions
                .iter()
                .map(|d| self.decision_back(d))
                .collect::<Result<_, _>>()?,
            outcome: self.outcome_back(&r.outcome)?,
            event: r.event,
        })
    }

    fn decision(&self, d: &Decision) -> DecisionV1 {
        match d {
            Decision::Start { job, slots } => DecisionV1::Start {
                job: job.0,
                slots: self.slots(slots),
            },
            Decision::Preempt { job, by, deadline } => DecisionV1::Preempt {
                job: job.0,
                by: by.0,
                deadline: *deadline,
            },
            Decision::Requeue {
                job,
                lost_gpu_hours,
            } => DecisionV1::Requeue {
                job: job.0,
                lost_gpu_hours: *lost_gpu_hours,
            },
            Decision::Replace {
                job,
                failed,
                replacement,
                lost_gpu_hours,
            } => DecisionV1::Replace {
                job: job.0,
                failed: self.name(*failed),
                replacement: self.name(*replacement),
                lost_gpu_hours: *lost_gpu_hours,
            },
            Decision::SandboxesMoved { batch, from, count } => DecisionV1::SandboxesMoved {
                batch: batch.0,
                from: self.name(*from),
                count: *count,
            },
            Decision::SandboxesLost { batch, from, count } => DecisionV1::SandboxesLost {
                batch: batch.0,
                from: self.name(*from),
                count: *count,
            },
            Decision::Reserve { job, start, nodes } => DecisionV1::Reserve {
                job: job.0,
                start: *start,
                nodes: *nodes,
            },
        }
    }

    fn decision_back(&self, d: &DecisionV1) -> Result<Decision, DecodeError> {
        use model::WorkloadId as W;
        Ok(match d {
            DecisionV1::Start { job, slots } => Decision::Start {
                job: W(*job),
                slots: self.slots_back(slots)?,
            },
            DecisionV1::Preempt { job, by, deadline } => Decision::Preempt {
                job: W(*job),
                by: W(*by),
                deadline: *deadline,
            },
            DecisionV1::Requeue {
                job,
                lost_gpu_hours,
            } => Decision::Requeue {
                job: W(*job),
                lost_gpu_hours: *lost_gpu_hours,
            },
            DecisionV1::Replace {
                job,
                failed,
                replacement,
                lost_gpu_hours,
            } => Decision::Replace {
                job: W(*job),
                failed: self.node(failed)?,
                replacement: self.node(replacement)?,
                lost_gpu_hours: *lost_gpu_hours,
            },
            DecisionV1::SandboxesMoved { batch, from, count } => Decision::SandboxesMoved {
                batch: W(*batch),
                from: self.node(from)?,
                count: *count,
            },
            DecisionV1::SandboxesLost { batch, from, count } => Decision::SandboxesLost {
                batch: W(*batch),
                from: self.node(from)?,
                count: *count,
            },
            DecisionV1::Reserve { job, start, nodes } => Decision::Reserve {
                job: W(*job),
                start: *start,
                nodes: *nodes,
            },
        })
    }

    fn outcome(&self, o: &Outcome) -> OutcomeV1 {
        OutcomeV1 {
            jobs: o.jobs.iter().map(|j| self.job(j)).collect(),
            batches: o.batches.iter().map(|b| self.batch(b)).collect(),
            services: o
                .services
                .iter()
                .map(|s| match s {
                    ServiceRecord::Live {
                        id,
                        spec,
                        desired,
                        replicas,
                        next,
                    } => ServiceV1 {
                        id: *id,
                        spec: Some(spec.clone()),
                        desired: *desired,
                        replicas: replicas.iter().map(|r| r.0).collect(),
                        next: *next,
                    },
                    ServiceRecord::Deleted { id } => ServiceV1 {
                        id: *id,
                        spec: None,
                        desired: 0,
                        replicas: Vec::new(),
                        next: 0,
                    },
                })
                .collect(),
            reservation: o.reservation.as_ref().map(|c| match c {
                ReservationChange::Set(r) => ReservationV1 {
                    job: Some(r.job.0),
                    start: r.start,
                    nodes: self.names(&r.nodes),
                    priority: Some(r.priority),
                    computed_at: r.computed_at,
                },
                ReservationChange::Cleared => ReservationV1 {
                    job: None,
                    start: 0,
                    nodes: Vec::new(),
                    priority: None,
                    computed_at: 0,
                },
            }),
        }
    }

    fn outcome_back(&self, o: &OutcomeV1) -> Result<Outcome, DecodeError> {
        use model::WorkloadId as W;
        let services = o
            .services
            .iter()
            .map(|s| match &s.spec {
                Some(spec) => ServiceRecord::Live {
                    id: s.id,
                    spec: spec.clone(),
                    desired: s.desired,
                    replicas: s.replicas.iter().map(|r| W(*r)).collect(),
                    next: s.next,
                },
                None => ServiceRecord::Deleted { id: s.id },
            })
            .collect();
        let reservation = match &o.reservation {
            None => None,
            Some(ReservationV1 { job: None, .. }) => Some(ReservationChange::Cleared),
            Some(r @ ReservationV1 { job: Some(job), .. }) => {
                Some(ReservationChange::Set(ReservationRecord {
                    job: W(*job),
                    start: r.start,
                    nodes: self.nodes_back(&r.nodes)?,
                    priority: r.priority.unwrap_or(PriorityClass::Research),
                    computed_at: r.computed_at,
                }))
            }
        };
        Ok(Outcome {
            jobs: o
                .jobs
                .iter()
                .map(|j| self.job_back(j))
                .collect::<Result<_, _>>()?,
            batches: o
                .batches
                .iter()
                .map(|b| self.batch_back(b))
                .collect::<Result<_, _>>()?,
            services,
            reservation,
        })
    }

    fn job(&self, j: &JobRecord) -> JobV1 {
        let mut out = JobV1 {
            id: j.id().0,
            state: JobStateV1::Pending,
            slots: Vec::new(),
            spares: Vec::new(),
            cpu_millis: 0,
            memory_mib: 0,
            placed_at: 0,
            restarts: 0,
            preemptions: 0,
            borrowed: false,
            lost_gpu_hours: 0.0,
            attained_gpu_seconds: 0,
            last_checkpoint: None,
            hold: Vec::new(),
            waiting_for: Vec::new(),
            service: None,
        };
        match j {
            JobRecord::Ended { state, .. } => {
                out.state = match state {
                    JobState::Cancelled => JobStateV1::Cancelled,
                    _ => JobStateV1::Finished,
                };
            }
            JobRecord::Live(l) => {
                out.state = match l.state {
                    JobState::Pending => JobStateV1::Pending,
                    JobState::Running { since } => JobStateV1::Running { since },
                    JobState::Preempting {
                        since,
                        deadline,
                        by,
                    } => JobStateV1::Preempting {
                        since,
                        deadline,
                        by: by.0,
                    },
                    JobState::Finished => JobStateV1::Finished,
                    JobState::Cancelled => JobStateV1::Cancelled,
                };
                if let Some(g) = &l.gang {
                    out.slots = self.slots(&g.slots);
                    out.spares = self.slots(&g.spares);
                    out.cpu_millis = g.per_node.cpu_millis;
                    out.memory_mib = g.per_node.memory_mib;
                    out.placed_at = g.placed_at;
                }
                out.restarts = l.restarts;
                out.preemptions = l.preemptions;
                out.borrowed = l.borrowed;
                out.lost_gpu_hours = l.lost_gpu_hours;
                out.attained_gpu_seconds = l.attained_gpu_seconds;
                out.last_checkpoint = l.last_checkpoint;
                out.hold = self.names(&l.hold);
                out.waiting_for = l.waiting_for.iter().map(|w| w.0).collect();
                out.service = l.service;
            }
        }
        out
    }

    fn job_back(&self, j: &JobV1) -> Result<JobRecord, DecodeError> {
        use model::WorkloadId as W;
        let state = match &j.state {
            JobStateV1::Finished => {
                return Ok(JobRecord::Ended {
                    id: W(j.id),
                    state: JobState::Finished,
                })
            }
            JobStateV1::Cancelled => {
                return Ok(JobRecord::Ended {
                    id: W(j.id),
                    state: JobState::Cancelled,
                })
            }
            JobStateV1::Pending => JobState::Pending,
            JobStateV1::Running { since } => JobState::Running { since: *since },
            JobStateV1::Preempting {
                since,
                deadline,
                by,
            } => JobState::Preempting {
                since: *since,
                deadline: *deadline,
                by: W(*by),
            },
        };
        let gang = match state {
            JobState::Pending => None,
            _ => Some(GangSlots {
                slots: self.slots_back(&j.slots)?,
                spares: self.slots_back(&j.spares)?,
                per_node: Resources {
                    cpu_millis: j.cpu_millis,
                    memory_mib: j.memory_mib,
                    ..Resources::default()
                },
                placed_at: j.placed_at,
            }),
        };
        Ok(JobRecord::Live(LiveJob {
            id: W(j.id),
            state,
            gang,
            restarts: j.restarts,
            preemptions: j.preemptions,
            borrowed: j.borrowed,
            lost_gpu_hours: j.lost_gpu_hours,
            attained_gpu_seconds: j.attained_gpu_seconds,
            last_checkpoint: j.last_checkpoint,
            hold: self.nodes_back(&j.hold)?,
            waiting_for: j.waiting_for.iter().map(|w| W(*w)).collect(),
            service: j.service,
        }))
    }

    fn batch(&self, b: &BatchRecord) -> BatchV1 {
        match b {
            BatchRecord::Ended { id } => BatchV1 {
                id: id.0,
                live: false,
                tenant: None,
                request: None,
                max_retries: 0,
                retries: 0,
                runs: Vec::new(),
                live_bits: Vec::new(),
                placed_at: 0,
            },
            BatchRecord::Live(l) => BatchV1 {
                id: l.id.0,
                live: true,
                tenant: l.tenant.map(|t| t.0),
                request: Some(l.request.clone()),
                max_retries: l.max_retries,
                retries: l.retries,
                runs: l
                    .runs
                    .iter()
                    .map(|r| RunV1 {
                        node: self.name(r.node),
                        first: r.first,
                        count: r.count,
                    })
                    .collect(),
                live_bits: l.live.clone(),
                placed_at: l.placed_at,
            },
        }
    }

    fn batch_back(&self, b: &BatchV1) -> Result<BatchRecord, DecodeError> {
        use model::WorkloadId as W;
        let request = match (&b.request, b.live) {
            (_, false) => return Ok(BatchRecord::Ended { id: W(b.id) }),
            (Some(r), true) => r.clone(),
            (None, true) => {
                return Err(DecodeError::Unknown(format!(
                    "batch {}: a live batch without its request",
                    b.id
                )))
            }
        };
        Ok(BatchRecord::Live(LiveBatch {
            id: W(b.id),
            tenant: b.tenant.map(TenantId),
            request,
            max_retries: b.max_retries,
            retries: b.retries,
            runs: b
                .runs
                .iter()
                .map(|r| {
                    Ok(SandboxRun {
                        node: self.node(&r.node)?,
                        first: r.first,
                        count: r.count,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
            live: b.live_bits.clone(),
            placed_at: b.placed_at,
        }))
    }
}
