//! What a change did to the queue, recorded so that it can be done again without deciding.
//!
//! A live change runs the queue's policy (a pass, a failure, a scaling, a sandbox placement);
//! [`Scheduler::take_outcome`] then reports the final state of every workload it touched: each
//! job's state, nodes and counters, each sandbox batch's sandboxes, each service's replicas,
//! and the reservation if it moved. Replaying a journal hands that record to
//! [`Scheduler::restore`] instead of running the policy again, so that the placements after a
//! restart are the ones the agents were told, whatever rules the running build has.
//!
//! Restoring one is `restore.rs`. What an outcome leaves out is advice, not state: pending
//! reasons, the memory of fruitless preemption searches, when the next full pass is due. A
//! restored queue rebuilds them at its next pass.

use super::{JobState, Scheduler};
use crate::engine::{Allocation, NodeSlot, Time};
use crate::sandbox::SandboxRun;
use model::{
    JobSpec, NodeId, PriorityClass, Resources, SandboxRequest, ServiceSpec, TenantId, WorkloadId,
};
use serde::{Deserialize, Serialize};

/// The final state of everything one change touched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Jobs (service replicas included), by id.
    pub jobs: Vec<JobRecord>,
    /// Sandbox batches, by id.
    pub batches: Vec<BatchRecord>,
    /// Services, by id.
    pub services: Vec<ServiceRecord>,
    /// The reservation, when it changed.
    pub reservation: Option<ReservationChange>,
}

impl Outcome {
    /// Whether the change touched nothing the queue keeps.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.batches.is_empty()
            && self.services.is_empty()
            && self.reservation.is_none()
    }
}

/// A job or a batch record.
enum WorkloadRecord {
    Job(JobRecord),
    Batch(BatchRecord),
}

/// A queued job as a snapshot keeps it: what it asked for and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuedJob {
    /// The job.
    pub id: WorkloadId,
    /// What it asked for.
    pub spec: JobSpec,
    /// When it was submitted.
    pub submitted: Time,
}

/// The queue's whole state as plain data ([`Scheduler::state`]): the jobs it queued (service
/// replicas take their shape from their service), every workload, service and the reservation
/// as an outcome, the spend ledger, and what each tenant lost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueState {
    /// Live jobs that are not replicas, in queue order.
    pub jobs: Vec<QueuedJob>,
    /// Every job (ended ones too), batch and service, and the reservation.
    pub outcome: Outcome,
    /// Spend.
    pub ledger: crate::cost::LedgerState,
    /// GPU-hours each tenant lost, by tenant index.
    pub tenant_lost_gpu_hours: Vec<f64>,
}

/// A job after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum JobRecord {
    /// Pending, running or being preempted.
    Live(LiveJob),
    /// Finished or cancelled: it leaves the queue.
    Ended {
        /// The job.
        id: WorkloadId,
        /// `Finished` or `Cancelled`.
        state: JobState,
    },
}

impl JobRecord {
    /// The job's id.
    pub fn id(&self) -> WorkloadId {
        match self {
            JobRecord::Live(j) => j.id,
            JobRecord::Ended { id, .. } => *id,
        }
    }
}

/// A live job's state, nodes and counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveJob {
    /// The job.
    pub id: WorkloadId,
    /// Pending, running (since when) or preempting (until when, for whom).
    pub state: JobState,
    /// Its nodes, while it runs.
    pub gang: Option<GangSlots>,
    /// Times it was requeued or restarted in place.
    pub restarts: u32,
    /// Times it was preempted.
    pub preemptions: u32,
    /// Admitted on quota borrowed from its cohort.
    pub borrowed: bool,
    /// GPU-hours of its work lost to preemption and failures.
    pub lost_gpu_hours: f64,
    /// GPU-seconds of service it received in runs that ended.
    pub attained_gpu_seconds: u64,
    /// Its last checkpoint.
    pub last_checkpoint: Option<Time>,
    /// Nodes held for it while its victims stop.
    pub hold: Vec<NodeId>,
    /// Victims it waits for.
    pub waiting_for: Vec<WorkloadId>,
    /// The service it is a replica of.
    pub service: Option<u64>,
}

/// Where a running gang is: exactly what the engine handed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GangSlots {
    /// One slot per rank.
    pub slots: Vec<NodeSlot>,
    /// Idle spares held in its domains.
    pub spares: Vec<NodeSlot>,
    /// CPU and memory taken on each node (the devices follow from the request).
    pub per_node: Resources,
    /// When it was placed.
    pub placed_at: Time,
}

/// A sandbox batch after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BatchRecord {
    /// Some of its sandboxes live.
    Live(LiveBatch),
    /// Its last sandbox ended, or it was cancelled.
    Ended {
        /// The batch.
        id: WorkloadId,
    },
}

impl BatchRecord {
    /// The batch's id.
    pub fn id(&self) -> WorkloadId {
        match self {
            BatchRecord::Live(b) => b.id,
            BatchRecord::Ended { id } => *id,
        }
    }
}

/// A live batch: its sandboxes, hosts and retry budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveBatch {
    /// The batch.
    pub id: WorkloadId,
    /// Who pays for it.
    pub tenant: Option<TenantId>,
    /// How many sandboxes, how big.
    pub request: SandboxRequest,
    /// Host failures it may survive by moving.
    pub max_retries: u32,
    /// Host failures it survived so far.
    pub retries: u32,
    /// Consecutive sandbox indices per host.
    pub runs: Vec<SandboxRun>,
    /// Bit i set: sandbox i is live.
    pub live: Vec<u64>,
    /// When it was placed.
    pub placed_at: Time,
}

/// A service after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServiceRecord {
    /// It exists with these replicas.
    Live {
        /// The service.
        id: u64,
        /// Its spec (replica shape, bounds, spread).
        spec: Box<ServiceSpec>,
        /// Replicas wanted.
        desired: u32,
        /// Replicas kept above `desired` by a rolling update.
        #[serde(default)]
        surge: u32,
        /// Its replica jobs, oldest first.
        replicas: Vec<WorkloadId>,
        /// Index of its next new replica.
        next: u64,
    },
    /// It was deleted.
    Deleted {
        /// The service.
        id: u64,
    },
}

/// A change of the reservation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReservationChange {
    /// Nodes are held for a job from its earliest start.
    Set(ReservationRecord),
    /// No job holds a reservation.
    Cleared,
}

/// The reservation: nodes held for one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReservationRecord {
    /// The job.
    pub job: WorkloadId,
    /// Its earliest start.
    pub start: Time,
    /// The nodes held.
    pub nodes: Vec<NodeId>,
    /// The job's class (a higher one takes the reservation over).
    pub priority: PriorityClass,
    /// When it was worked out.
    pub computed_at: Time,
}

/// Why an outcome cannot be restored: the journal does not fit the state it is replayed onto.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot restore {what}: {reason}")]
pub struct RestoreError {
    /// The workload or service.
    pub what: String,
    /// Why.
    pub reason: String,
}

pub(super) fn restore_error(
    what: impl std::fmt::Display,
    reason: impl Into<String>,
) -> RestoreError {
    RestoreError {
        what: what.to_string(),
        reason: reason.into(),
    }
}

impl Scheduler {
    /// Notes that a change touched workload `id` (its record goes into the next outcome).
    pub(crate) fn touch(&mut self, id: WorkloadId) {
        self.touched.insert(id);
    }

    /// Notes that a change touched service `id`.
    pub(crate) fn touch_service(&mut self, id: u64) {
        self.touched_services.insert(id);
    }

    /// The record of job or batch `id` as it is now; `None` when it never existed.
    fn workload_record(&self, id: WorkloadId) -> Option<WorkloadRecord> {
        if let Some(j) = self.jobs.get(&id) {
            let gang = match self.engine.allocation(id) {
                Some(Allocation::Gang {
                    slots,
                    spares,
                    per_node,
                    placed_at,
                    ..
                }) if j.running_since().is_some() => Some(GangSlots {
                    slots: slots.clone(),
                    spares: spares.clone(),
                    per_node: *per_node,
                    placed_at: *placed_at,
                }),
                _ => None,
            };
            return Some(WorkloadRecord::Job(JobRecord::Live(LiveJob {
                id,
                state: j.state.clone(),
                gang,
                restarts: j.restarts,
                preemptions: j.preemptions,
                borrowed: j.borrowed,
                lost_gpu_hours: j.lost_gpu_hours,
                attained_gpu_seconds: j.attained_gpu_seconds,
                last_checkpoint: j.last_checkpoint,
                hold: j.hold.clone(),
                waiting_for: j.waiting_for.clone(),
                service: j.service,
            })));
        }
        if let Some(state) = self.ended.get(&id) {
            return Some(WorkloadRecord::Job(JobRecord::Ended {
                id,
                state: state.clone(),
            }));
        }
        if let Some(b) = self.batches.get(&id) {
            return match self.engine.allocation(id) {
                Some(Allocation::Sandboxes {
                    request,
                    runs,
                    live,
                    placed_at,
                    ..
                }) => Some(WorkloadRecord::Batch(BatchRecord::Live(LiveBatch {
                    id,
                    tenant: b.tenant,
                    request: request.clone(),
                    max_retries: b.max_retries,
                    retries: b.retries,
                    runs: runs.clone(),
                    live: live.clone(),
                    placed_at: *placed_at,
                }))),
                _ => None,
            };
        }
        Some(WorkloadRecord::Batch(BatchRecord::Ended { id }))
    }

    /// The record of service `id` as it is now.
    fn service_record(&self, id: u64) -> ServiceRecord {
        match self.services.get(&id) {
            Some(s) => ServiceRecord::Live {
                id,
                spec: Box::new(s.spec.clone()),
                desired: s.desired,
                surge: s.surge,
                replicas: s.replicas.clone(),
                next: s.next,
            },
            None => ServiceRecord::Deleted { id },
        }
    }

    /// The reservation as a record.
    fn reservation_record(&self) -> Option<ReservationRecord> {
        self.reservation.as_ref().map(|r| ReservationRecord {
            job: r.job,
            start: r.start,
            nodes: r.nodes.clone(),
            priority: r.priority,
            computed_at: r.computed_at,
        })
    }

    /// The final state of everything touched since the last call, and the reservation if it
    /// changed since then.
    pub fn take_outcome(&mut self) -> Outcome {
        let mut out = Outcome::default();
        for id in std::mem::take(&mut self.touched) {
            match self.workload_record(id) {
                Some(WorkloadRecord::Job(j)) => out.jobs.push(j),
                Some(WorkloadRecord::Batch(b)) => out.batches.push(b),
                None => {}
            }
        }
        for id in std::mem::take(&mut self.touched_services) {
            out.services.push(self.service_record(id));
        }
        let now = self.reservation_record();
        if now != self.journaled_reservation {
            out.reservation = Some(match &now {
                Some(r) => ReservationChange::Set(r.clone()),
                None => ReservationChange::Cleared,
            });
            self.journaled_reservation = now;
        }
        out
    }

    /// The queue's whole state as plain data, for a snapshot in a format of its own.
    pub fn state(&self) -> QueueState {
        let mut queued: Vec<(u64, QueuedJob)> = self
            .jobs
            .values()
            .filter(|j| j.service.is_none())
            .map(|j| {
                (
                    j.seq,
                    QueuedJob {
                        id: j.id,
                        spec: j.spec.clone(),
                        submitted: j.submitted,
                    },
                )
            })
            .collect();
        queued.sort_by_key(|(seq, _)| *seq);
        let mut ids: Vec<WorkloadId> = self
            .jobs
            .keys()
            .chain(self.ended.keys())
            .chain(self.batches.keys())
            .copied()
            .collect();
        ids.sort_unstable();
        let mut outcome = Outcome::default();
        for id in ids {
            match self.workload_record(id) {
                Some(WorkloadRecord::Job(j)) => outcome.jobs.push(j),
                Some(WorkloadRecord::Batch(b)) => outcome.batches.push(b),
                None => {}
            }
        }
        outcome.services = self
            .services
            .keys()
            .map(|id| self.service_record(*id))
            .collect();
        outcome.reservation = self.reservation_record().map(ReservationChange::Set);
        QueueState {
            jobs: queued.into_iter().map(|(_, q)| q).collect(),
            outcome,
            ledger: self.ledger.state(),
            tenant_lost_gpu_hours: self.tenants.iter().map(|t| t.lost_gpu_hours).collect(),
        }
    }

    /// Takes over a state from [`Scheduler::state`] on a queue just made over the same fleet
    /// (nodes' states set): queues the jobs, restores every workload, takes the ledger. Checks
    /// nothing of what it is given beyond what [`Scheduler::restore`] checks: the caller runs
    /// `check_invariants` and refuses the state if they fail.
    pub fn load_state(&mut self, s: &QueueState, now: Time) -> Result<(), RestoreError> {
        for q in &s.jobs {
            self.submit(q.id, q.spec.clone(), q.submitted)
                .map_err(|e| restore_error(q.id, e.to_string()))?;
        }
        self.restore(&s.outcome, now)?;
        self.ledger
            .set_state(self.engine.fleet(), &s.ledger)
            .map_err(|e| restore_error("the ledger", e))?;
        if s.tenant_lost_gpu_hours.len() != self.tenants.len() {
            return Err(restore_error(
                "the tenants",
                "lost GPU-hours of another tenant count",
            ));
        }
        for (t, lost) in self.tenants.iter_mut().zip(&s.tenant_lost_gpu_hours) {
            t.lost_gpu_hours = *lost;
        }
        Ok(())
    }

    /// Charges each live workload that the ledger counts otherwise than this build does as
    /// this build counts it, from `now` on; what it was charged before stays. For a ledger
    /// an older build kept (one that counted a share of a GPU as the whole device): a state
    /// of this build's own has nothing to change, and one that does is refused by
    /// `check_invariants` instead.
    pub fn recharge_live(&mut self, now: Time) {
        let mut live: Vec<WorkloadId> = self
            .running
            .iter()
            .chain(self.batches.keys())
            .copied()
            .collect();
        live.sort_unstable();
        for id in live {
            let want =
                crate::cost::allocation_units(self.engine.fleet(), self.engine.allocation(id));
            let mut have = self
                .ledger
                .held(id)
                .map(|h| h.1.clone())
                .unwrap_or_default();
            have.sort_unstable();
            if have != want {
                self.charge(id, now);
            }
        }
    }
}
