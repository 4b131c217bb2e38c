//! Request and response types of the HTTP API (`/v1`), with their OpenAPI schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A training job to queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// Letters, digits, '-', '_' and '.'; 1 to 128 characters. Names need not be unique.
    pub name: String,
    /// The owning tenant's name.
    pub tenant: String,
    /// preemptible, research (default), training or production-inference.
    #[serde(default = "research")]
    pub priority: String,
    /// GPU model, e.g. GB200.
    #[serde(default = "gb200")]
    pub gpu: String,
    /// Nodes in the gang.
    pub nodes: u32,
    /// GPUs on each node.
    pub gpus_per_node: u8,
    /// CPU millicores on each node.
    #[serde(default)]
    pub cpu_millis_per_node: u32,
    /// Memory on each node, MiB.
    #[serde(default)]
    pub memory_mib_per_node: u32,
    /// Nodes per NVLink-domain segment (default: the domain's size).
    #[serde(default)]
    pub segment: Option<u32>,
    /// Spare nodes kept in the gang's domains.
    #[serde(default)]
    pub spares: u32,
    /// Time limit in seconds (backfill and reservations trust it).
    pub time_limit_s: u64,
}

fn research() -> String {
    "research".into()
}

fn gb200() -> String {
    "GB200".into()
}

/// What was accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    /// The new job's id.
    pub id: u64,
    /// Its journal record (durable when this answer is sent).
    pub seq: u64,
}

/// A job as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Owner.
    pub tenant: String,
    /// pending, running, preempting, finished or cancelled.
    pub state: String,
    /// When it started running or ended (Unix seconds; absent while pending).
    pub since: Option<u64>,
    /// When it was accepted (Unix seconds).
    pub submitted_at: u64,
    /// GPUs it asks for.
    pub gpus: u64,
    /// Nodes it runs on.
    pub nodes: Vec<String>,
    /// Why it is not running, while pending.
    pub reason: Option<String>,
}

/// A page of jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Jobs in id order.
    pub jobs: Vec<JobView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

/// A node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    /// Host name.
    pub name: String,
    /// ready, cordoned, draining or down.
    pub state: String,
    /// GPUs.
    pub gpus: u32,
    /// GPUs free.
    pub free_gpus: u32,
    /// CPU millicores.
    pub cpu_millis: u32,
    /// CPU millicores free.
    pub free_cpu_millis: u32,
}

/// A tenant and what it uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    /// Name.
    pub name: String,
    /// GPUs its running jobs hold.
    pub gpus_in_use: u64,
    /// Weighted dominant share.
    pub dominant_share: f64,
    /// GPU-hours lost to preemption and failures.
    pub lost_gpu_hours: f64,
}

/// Why a request was refused: which field, and the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldProblem {
    /// The field (a path such as `spec.nodes` for nested ones; empty when the request as a whole is wrong).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The body of every 4xx and 5xx answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// What went wrong.
    pub error: FieldProblem,
}
