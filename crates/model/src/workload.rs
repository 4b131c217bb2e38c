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
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// A unit of several roles (e.g. a prefill/decode replica): the gang's nodes in part
    /// order, each part with its own per-node ask, placed together inside one NVLink domain
    /// (or under one network node when no domain holds it). Empty: every node asks the same.
    /// With parts, `nodes` is their sum and the per-node fields are the largest part's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<GangPart>,
    /// A share of one GPU in thousandths (1–999): the request then asks one node and one
    /// device, and several shares pack onto one device. 0: whole devices.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpu_milli: u16,
    /// Other models it may run on, in order of preference after `gpu` (at most
    /// [`GangRequest::MAX_MODELS`]). Placed work records the model it got in `gpu`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<GpuModel>,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// One part of a unit gang: `nodes` nodes of one shape, cut into workers of `segment` nodes
/// that each lie inside one NVLink domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GangPart {
    /// Nodes of this part.
    pub nodes: u32,
    /// GPUs on each of them.
    pub gpus_per_node: u8,
    /// CPU millicores on each.
    #[serde(default)]
    pub cpu_millis_per_node: u32,
    /// Memory on each, MiB.
    #[serde(default)]
    pub memory_mib_per_node: u32,
    /// Nodes of one worker, kept inside one NVLink domain (1: each node on its own).
    #[serde(default = "one")]
    pub segment: u32,
}

fn one() -> u32 {
    1
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
        if self.gpus_per_node > crate::Resources::MAX_GPUS {
            return Err(field_error("gpus_per_node", "must be 1..=32"));
        }
        if self.gpus_per_node == 0 && !self.is_cpu_only() {
            return Err(field_error(
                "gpus_per_node",
                "must be 1..=32 (0 only for CPU work on one GPU host: nodes = 1, \
                 cpu_millis_per_node above 0, no share, parts or spares)",
            ));
        }
        if self.spares > 4096 {
            return Err(field_error("spares", "at most 4096"));
        }
        if self.segment == Some(0) {
            return Err(field_error("segment", "must be at least 1 node"));
        }
        self.validate_share()?;
        if self.models.len() > Self::MAX_MODELS {
            return Err(field_error(
                "models",
                format!("at most {} other models", Self::MAX_MODELS),
            ));
        }
        if self.models.contains(&self.gpu)
            || (1..self.models.len()).any(|i| self.models[..i].contains(&self.models[i]))
        {
            return Err(field_error("models", "each model at most once"));
        }
        if self.is_unit() && !self.models.is_empty() {
            return Err(field_error("models", "a unit gang runs on one model"));
        }
        self.validate_parts()
    }

    /// Most parts one unit gang may have.
    pub const MAX_PARTS: usize = 16;

    /// A unit gang of `parts`, its envelope (`nodes`, largest per-node ask) filled in.
    pub fn unit(class: WorkloadClass, gpu: GpuModel, parts: Vec<GangPart>) -> GangRequest {
        GangRequest {
            class,
            gpu,
            nodes: parts.iter().fold(0u32, |n, p| n.saturating_add(p.nodes)),
            gpus_per_node: parts.iter().map(|p| p.gpus_per_node).max().unwrap_or(0),
            cpu_millis_per_node: parts
                .iter()
                .map(|p| p.cpu_millis_per_node)
                .max()
                .unwrap_or(0),
            memory_mib_per_node: parts
                .iter()
                .map(|p| p.memory_mib_per_node)
                .max()
                .unwrap_or(0),
            segment: None,
            spares: 0,
            parts,
            gpu_milli: 0,
            models: Vec::new(),
        }
    }

    fn validate_parts(&self) -> Result<(), FieldError> {
        if self.parts.is_empty() {
            return Ok(());
        }
        if self.parts.len() > Self::MAX_PARTS {
            return Err(field_error(
                "parts",
                format!("at most {} parts", Self::MAX_PARTS),
            ));
        }
        for p in &self.parts {
            if p.nodes == 0 {
                return Err(field_error("parts.nodes", "must be at least 1"));
            }
            if p.gpus_per_node == 0 || p.gpus_per_node > crate::Resources::MAX_GPUS {
                return Err(field_error("parts.gpus_per_node", "must be 1..=32"));
            }
            if p.segment == 0 || p.nodes % p.segment != 0 {
                return Err(field_error(
                    "parts.segment",
                    format!("must be at least 1 and divide the part's {} nodes", p.nodes),
                ));
            }
        }
        if self.spares != 0 || self.segment.is_some() {
            return Err(field_error(
                "parts",
                "a unit gang has no spares and no gang-wide segment (each part has its own)",
            ));
        }
        let envelope = GangRequest::unit(self.class, self.gpu, self.parts.clone());
        if (self.nodes, self.gpus_per_node) != (envelope.nodes, envelope.gpus_per_node)
            || self.cpu_millis_per_node != envelope.cpu_millis_per_node
            || self.memory_mib_per_node != envelope.memory_mib_per_node
        {
            return Err(field_error(
                "parts",
                "nodes must be the parts' sum and the per-node fields their largest",
            ));
        }
        Ok(())
    }

    /// Most other models a request may accept.
    pub const MAX_MODELS: usize = 8;

    /// Every model it may run on, `gpu` first.
    pub fn acceptable_models(&self) -> impl Iterator<Item = GpuModel> + '_ {
        std::iter::once(self.gpu).chain(self.models.iter().copied())
    }

    /// The same request on `model` alone.
    pub fn on_model(&self, model: GpuModel) -> GangRequest {
        GangRequest {
            gpu: model,
            models: Vec::new(),
            ..self.clone()
        }
    }

    /// The request as it runs on `model`, one of its acceptable models: `model` first, the
    /// others (the old first among them) still acceptable, e.g. after a requeue.
    pub fn placed_on(&self, model: GpuModel) -> GangRequest {
        let mut g = self.clone();
        if g.gpu != model && g.models.contains(&model) {
            g.models.retain(|m| *m != model);
            g.models.insert(0, g.gpu);
            g.gpu = model;
        }
        g
    }

    /// Most thousandths one GPU share may ask (a whole device is asked as `gpus_per_node`).
    pub const MAX_SHARE_MILLI: u16 = 999;

    fn validate_share(&self) -> Result<(), FieldError> {
        if self.gpu_milli == 0 {
            return Ok(());
        }
        if self.gpu_milli > Self::MAX_SHARE_MILLI {
            return Err(field_error(
                "gpu_milli",
                "must be 1..=999 (thousandths of one GPU); ask whole GPUs with gpus_per_node",
            ));
        }
        if self.nodes != 1 || self.gpus_per_node != 1 {
            return Err(field_error(
                "gpu_milli",
                "a GPU share asks one node and one GPU (nodes = 1, gpus_per_node = 1)",
            ));
        }
        if self.spares != 0 || self.is_unit() || self.segment.is_some_and(|s| s != 1) {
            return Err(field_error(
                "gpu_milli",
                "a GPU share has no spares, parts or segment",
            ));
        }
        Ok(())
    }

    /// Whether this is CPU work on one GPU host (no devices): it runs beside GPU work, as in
    /// shared clusters, and takes CPU and memory only.
    pub fn is_cpu_only(&self) -> bool {
        self.gpus_per_node == 0
            && self.nodes == 1
            && self.cpu_millis_per_node > 0
            && self.gpu_milli == 0
            && self.spares == 0
            && self.parts.is_empty()
    }

    /// Whether this asks a share of one GPU rather than whole devices.
    pub fn is_share(&self) -> bool {
        self.gpu_milli != 0
    }

    /// GPUs asked for in thousandths: a share's `gpu_milli`, else 1,000 per device.
    pub fn total_gpu_milli(&self) -> u64 {
        gpu_thousandths(self.total_gpus(), self.gpu_milli)
    }

    /// Whether this is a unit of several parts.
    pub fn is_unit(&self) -> bool {
        !self.parts.is_empty()
    }

    /// The per-node ask of each node in order (`nodes` of them); the parts' asks for a unit.
    pub fn node_asks(&self) -> impl Iterator<Item = crate::Resources> + '_ {
        let uniform = (!self.is_unit()).then_some(crate::Resources {
            gpu_model: Some(self.gpu),
            gpus: self.gpus_per_node,
            cpu_millis: self.cpu_millis_per_node,
            memory_mib: self.memory_mib_per_node,
            disk_gib: 0,
        });
        let uniform = uniform
            .into_iter()
            .flat_map(move |r| std::iter::repeat_n(r, self.nodes as usize));
        let parts = self.parts.iter().flat_map(move |p| {
            std::iter::repeat_n(
                crate::Resources {
                    gpu_model: Some(self.gpu),
                    gpus: p.gpus_per_node,
                    cpu_millis: p.cpu_millis_per_node,
                    memory_mib: p.memory_mib_per_node,
                    disk_gib: 0,
                },
                p.nodes as usize,
            )
        });
        uniform.chain(parts)
    }

    /// Total accelerators asked for.
    pub fn total_gpus(&self) -> u64 {
        if self.is_unit() {
            return self
                .parts
                .iter()
                .map(|p| u64::from(p.nodes) * u64::from(p.gpus_per_node))
                .sum();
        }
        u64::from(self.nodes) * u64::from(self.gpus_per_node)
    }

    /// Total CPU millicores and memory (MiB) asked for.
    pub fn total_cpu_memory(&self) -> (u64, u64) {
        if self.is_unit() {
            return self.parts.iter().fold((0, 0), |(c, m), p| {
                (
                    c + u64::from(p.nodes) * u64::from(p.cpu_millis_per_node),
                    m + u64::from(p.nodes) * u64::from(p.memory_mib_per_node),
                )
            });
        }
        let n = u64::from(self.nodes);
        (
            n * u64::from(self.cpu_millis_per_node),
            n * u64::from(self.memory_mib_per_node),
        )
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

/// Thousandths of a GPU that work holds: its share's `gpu_milli` where it has one (a share is
/// one device), else 1,000 for each of its `whole_gpus`.
pub fn gpu_thousandths(whole_gpus: u64, gpu_milli: u16) -> u64 {
    match gpu_milli {
        0 => whole_gpus.saturating_mul(1000),
        share => u64::from(share),
    }
}
