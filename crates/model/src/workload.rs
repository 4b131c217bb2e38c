//! Workload specs the engine places: training gangs (and inference replicas, which are small
//! gangs) and batches of agent sandboxes.

use crate::resources::GpuModel;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Caller-chosen identity of a workload. Unique among live workloads of one engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadId(pub u64);

impl WorkloadId {
    /// Ids from here up name replicas of inference services (`svc<S>-r<N>`).
    pub const REPLICA_BASE: u64 = 1 << 62;

    /// The id of replica `n` of service `service` (`service < 2^20`, `n < 2^32`).
    pub fn replica(service: u64, n: u64) -> WorkloadId {
        WorkloadId(Self::REPLICA_BASE + (service << 32) + (n & 0xFFFF_FFFF))
    }

    /// (service, replica number) when this id names a replica.
    pub fn as_replica(&self) -> Option<(u64, u64)> {
        (self.0 >= Self::REPLICA_BASE).then(|| {
            let v = self.0 - Self::REPLICA_BASE;
            (v >> 32, v & 0xFFFF_FFFF)
        })
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_replica() {
            Some((s, n)) => write!(f, "svc{s}-r{n}"),
            None => write!(f, "w{}", self.0),
        }
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
    /// Spare nodes kept idle inside the gang's own NVLink domains: a failed node is replaced
    /// by a spare of its domain without moving the rest of the gang.
    #[serde(default)]
    pub spares: u32,
}

/// A request field that is out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field, as written in request files.
    pub field: &'static str,
    /// Why it is refused.
    pub reason: String,
}

fn field_error(field: &'static str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field,
        reason: reason.into(),
    }
}

impl GangRequest {
    /// Most nodes one gang may ask for.
    pub const MAX_NODES: u32 = 1_000_000;

    /// Checks ranges a request must respect before it reaches the engine.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.nodes == 0 || self.nodes > Self::MAX_NODES {
            return Err(field_error(
                "nodes",
                format!("must be 1..={}", Self::MAX_NODES),
            ));
        }
        if self.gpus_per_node == 0 || self.gpus_per_node > crate::Resources::MAX_GPUS {
            return Err(field_error("gpus_per_node", "must be 1..=32"));
        }
        if self.spares > 4096 {
            return Err(field_error("spares", "at most 4096"));
        }
        if self.segment == Some(0) {
            return Err(field_error("segment", "must be at least 1 node"));
        }
        Ok(())
    }

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

    /// Checks ranges a request must respect before it reaches the engine.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.count == 0 || self.count > Self::MAX_BATCH {
            return Err(field_error(
                "count",
                format!("must be 1..={}", Self::MAX_BATCH),
            ));
        }
        if self.cpu_millis == 0 {
            return Err(field_error("cpu_millis", "must be at least 1"));
        }
        if self.memory_mib == 0 {
            return Err(field_error("memory_mib", "must be at least 1"));
        }
        Ok(())
    }
}
