//! Workload specs the engine places: training gangs (and inference replicas, which are small
//! gangs) and batches of agent sandboxes.

use crate::resources::GpuModel;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Caller-chosen identity of a workload. Unique among live workloads of one engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadId(pub u64);

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.0)
    }
}

/// What kind of work a gang is; recorded for reports and later policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadClass {
    /// A training job: all-or-nothing gang.
    #[default]
    Training,
    /// One replica of an inference service.
    InferenceReplica,
}

/// A gang: `nodes` nodes, each with the same per-node ask, placed whole or not at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GangRequest {
    /// Training job or inference replica.
    #[serde(default)]
    pub class: WorkloadClass,
    /// Accelerator model every node must carry.
    pub gpu: GpuModel,
    /// Number of nodes (trays or hosts).
    pub nodes: u32,
    /// GPUs used on each node (1 ..= the node's GPU count).
    pub gpus_per_node: u8,
    /// CPU millicores per node (0: none reserved beyond the GPUs' share).
    #[serde(default)]
    pub cpu_millis_per_node: u32,
    /// Memory per node in MiB.
    #[serde(default)]
    pub memory_mib_per_node: u32,
    /// Nodes per segment: each segment lies inside one NVLink domain, as Slurm's `--segment`.
    /// `None`: the whole gang in one domain when it fits one, else whole-domain segments.
    #[serde(default)]
    pub segment: Option<u32>,
}

impl GangRequest {
    /// Total accelerators asked for.
    pub fn total_gpus(&self) -> u64 {
        u64::from(self.nodes) * u64::from(self.gpus_per_node)
    }
}

/// A batch of identical CPU sandboxes, placed all together or not at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxRequest {
    /// Number of sandboxes in the batch (1 ..= 1,000,000 per request).
    pub count: u32,
    /// CPU millicores of each sandbox.
    pub cpu_millis: u32,
    /// Memory of each sandbox in MiB.
    pub memory_mib: u32,
}

impl SandboxRequest {
    /// Largest batch one request may carry.
    pub const MAX_BATCH: u32 = 1_000_000;
}
