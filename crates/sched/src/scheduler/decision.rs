//! What the queue tells its caller: [`Decision`]s to act on, and [`SchedError`]s for requests
//! it refuses.

use super::*;

/// A decision of the queue, for the caller to act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum Decision {
    /// Start the job on these nodes.
    Start {
        /// The job it concerns.
        job: WorkloadId,
        /// Nodes and devices.
        slots: Vec<NodeSlot>,
    },
    /// Tell the job to checkpoint and stop by `deadline`, to make room for `by`.
    Preempt {
        /// The job told to stop.
        job: WorkloadId,
        /// The job it makes room for.
        by: WorkloadId,
        /// Stop time.
        deadline: Time,
    },
    /// The job stopped (preempted or its node failed) and is queued again.
    Requeue {
        /// The job it concerns.
        job: WorkloadId,
        /// GPU-hours lost since its last checkpoint.
        lost_gpu_hours: f64,
    },
    /// A failed node of the job was replaced by a spare of its domain; the rest of the gang
    /// stays where it is and restarts from its last checkpoint.
    Replace {
        /// The job it concerns.
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
        /// The sandbox batch.
        batch: WorkloadId,
        /// The failed host.
        from: NodeId,
        /// Sandboxes moved.
        count: u32,
    },
    /// Sandboxes of a batch on a failed host ended (retries spent or no room elsewhere).
    SandboxesLost {
        /// The sandbox batch.
        batch: WorkloadId,
        /// The failed host.
        from: NodeId,
        /// Sandboxes lost.
        count: u32,
    },
    /// Nodes are held for the job from `start` on.
    Reserve {
        /// The job it concerns.
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
        /// The request field at fault.
        field: &'static str,
        /// Why, in words a person can act on.
        reason: String,
    },
    /// The fleet has no room for it now (for requests that are placed at once or refused).
    #[error("{field}: {reason}")]
    NoRoom {
        /// The request field at fault.
        field: &'static str,
        /// Why, in words a person can act on.
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
        /// The job.
        id: WorkloadId,
        /// Its state.
        state: String,
        /// Why that refuses the request.
        reason: &'static str,
    },
}
