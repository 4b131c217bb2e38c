//! The codec between in-memory records and version 1: nodes named through the journal's
//! fleet, workloads by number, states as tagged words.

use super::*;
use model::{Fleet, NodeId, PriorityClass, Resources, TenantId};
use sched::{
    BatchRecord, Decision, GangSlots, JobRecord, JobState, LiveBatch, LiveJob, NodeSlot, Outcome,
    ReservationChange, ReservationRecord, SandboxRun, ServiceRecord,
};

/// Converts between the in-memory record and version 1, naming nodes through a fleet.
pub struct Codec<'a> {
    pub(super) fleet: &'a Fleet,
}

impl<'a> Codec<'a> {
    /// A codec over the journal's fleet.
    pub fn new(fleet: &'a Fleet) -> Codec<'a> {
        Codec { fleet }
    }

    pub(super) fn name(&self, n: NodeId) -> String {
        self.fleet.node(n).name.to_string()
    }

    pub(super) fn node(&self, name: &str) -> Result<NodeId, DecodeError> {
        self.fleet
            .node_by_name(name)
            .ok_or_else(|| DecodeError::Unknown(format!("no node '{name}' in the fleet")))
    }

    pub(super) fn slots(&self, slots: &[NodeSlot]) -> Vec<SlotV1> {
        slots
            .iter()
            .map(|s| SlotV1 {
                node: self.name(s.node),
                gpus: s.gpu_mask,
            })
            .collect()
    }

    pub(super) fn slots_back(&self, slots: &[SlotV1]) -> Result<Vec<NodeSlot>, DecodeError> {
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

    pub(super) fn names(&self, nodes: &[NodeId]) -> Vec<String> {
        nodes.iter().map(|n| self.name(*n)).collect()
    }

    pub(super) fn nodes_back(&self, names: &[String]) -> Result<Vec<NodeId>, DecodeError> {
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

    pub(super) fn decision(&self, d: &Decision) -> DecisionV1 {
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

    pub(super) fn decision_back(&self, d: &DecisionV1) -> Result<Decision, DecodeError> {
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

    pub(super) fn outcome(&self, o: &Outcome) -> OutcomeV1 {
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
                        surge,
                        replicas,
                        next,
                    } => ServiceV1 {
                        id: *id,
                        spec: Some((**spec).clone()),
                        desired: *desired,
                        surge: *surge,
                        replicas: replicas.iter().map(|r| r.0).collect(),
                        next: *next,
                    },
                    ServiceRecord::Deleted { id } => ServiceV1 {
                        id: *id,
                        spec: None,
                        desired: 0,
                        surge: 0,
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

    pub(super) fn outcome_back(&self, o: &OutcomeV1) -> Result<Outcome, DecodeError> {
        use model::WorkloadId as W;
        let services = o
            .services
            .iter()
            .map(|s| match &s.spec {
                Some(spec) => ServiceRecord::Live {
                    id: s.id,
                    spec: Box::new(spec.clone()),
                    desired: s.desired,
                    surge: s.surge,
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

    pub(super) fn job(&self, j: &JobRecord) -> JobV1 {
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

    pub(super) fn job_back(&self, j: &JobV1) -> Result<JobRecord, DecodeError> {
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

    pub(super) fn batch(&self, b: &BatchRecord) -> BatchV1 {
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

    pub(super) fn batch_back(&self, b: &BatchV1) -> Result<BatchRecord, DecodeError> {
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
