//! Request and response types of the HTTP API (`/v1`), with their OpenAPI schemas: the
//! server answers with them, the agent and the CLI send and read them (see [`crate::client`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod assign;
mod beats;
mod egress;
mod events;
mod exec;
mod fleet_change;
mod fleet_view;
mod gateway;
mod history;
mod roles;
mod rollout;
mod services;
mod template;
pub use assign::*;
pub use beats::*;
pub use egress::*;
pub use events::*;
pub use exec::*;
pub use fleet_change::*;
pub use fleet_view::*;
pub use gateway::*;
pub use history::*;
pub use roles::*;
pub use rollout::*;
pub use services::*;
pub use template::*;

/// A training job to queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// Letters, digits, '-', '_' and '.'; 1 to 128 characters. Names need not be unique.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$", min_length = 1, max_length = 128)]
    pub name: String,
    /// The owning tenant's name.
    #[schema(min_length = 1, max_length = 128)]
    pub tenant: String,
    /// preemptible, research (default), training or production-inference.
    #[serde(default = "research")]
    #[schema(pattern = r"^(preemptible|research|training|production-inference)$")]
    pub priority: String,
    /// GPU model, e.g. GB200.
    #[serde(default = "gb200")]
    #[schema(pattern = r"^[A-Za-z0-9]{1,16}$")]
    pub gpu: String,
    /// Other GPU models the job may run on, in order of preference after `gpu` (at most 8);
    /// `["any"]`: any model of the fleet. It runs on one model; its view names it.
    #[serde(default)]
    #[schema(max_items = 8)]
    pub models: Vec<String>,
    /// Nodes in the gang.
    pub nodes: u32,
    /// GPUs on each node; 0 for CPU work on one GPU host (with `cpu_millis_per_node`).
    pub gpus_per_node: u8,
    /// A share of one GPU in thousandths (1–999; 0: whole GPUs): the job runs on part of one
    /// device, beside other shares (`nodes` and `gpus_per_node` 1). Its task sees the device
    /// in `CUDA_VISIBLE_DEVICES` and the share in `STARGRID_GPU_SHARE`.
    #[serde(default)]
    #[schema(maximum = 999)]
    pub gpu_milli: u16,
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
    /// The program each node runs, and its arguments (empty: nothing to run; a hollow node
    /// keeps such a task until it is stopped).
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment of the task, added to what the agent sets (`STARGRID_*`).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Environment values that are secrets (API keys): never shown by the API, kept
    /// encrypted in the journal, given only to the nodes that run the work. Names must not
    /// repeat `env`'s; both count against the 64 KiB environment limit.
    #[serde(default)]
    pub secret_env: std::collections::BTreeMap<String, String>,
    /// Working directory of the task on the node (default: the agent's task directory).
    #[serde(default)]
    #[schema(pattern = r"^/", max_length = 4096)]
    pub workdir: Option<String>,
    /// Providers and regions it may use, and whether it may run on spot capacity.
    #[serde(default)]
    pub placement: Placement,
}

/// Where work may run. Empty lists allow everything; an exclusion wins over a pin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Placement {
    /// Only these providers (data residency, contracts).
    pub providers: Vec<String>,
    /// Never these providers.
    pub exclude_providers: Vec<String>,
    /// Only these regions.
    pub regions: Vec<String>,
    /// Never these regions.
    pub exclude_regions: Vec<String>,
    /// The work survives being stopped at short notice, so it may run on spot capacity.
    pub preemptible: bool,
}

impl From<&Placement> for model::PlacementRule {
    fn from(p: &Placement) -> Self {
        model::PlacementRule {
            providers: p.providers.clone(),
            exclude_providers: p.exclude_providers.clone(),
            regions: p.regions.clone(),
            exclude_regions: p.exclude_regions.clone(),
            preemptible: p.preemptible,
        }
    }
}

fn is_zero_u16(v: &u16) -> bool {
    *v == 0
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
    /// Id (unique within its cell).
    pub id: u64,
    /// The cell that runs it (its server's `--cell`).
    #[serde(default)]
    pub cell: String,
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
    /// The GPU model it runs on (while pending: the first it accepts).
    #[serde(default)]
    pub gpu: String,
    /// A share of one GPU in thousandths (absent: whole GPUs).
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub gpu_milli: u16,
    /// Nodes it runs on.
    pub nodes: Vec<String>,
    /// Why it is not running, while pending.
    pub reason: Option<String>,
    /// Times it was requeued (after a node failure or a preemption).
    pub restarts: u32,
    /// How it ended: the first non-zero exit code of a task, or 0 when every task exited 0.
    pub exit_code: Option<i32>,
    /// Why it failed, when the exit code alone does not say: `oom_killed` (a task went past
    /// its memory and the kernel killed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    /// A pending job's expected start (Unix seconds), when the queue reserved nodes for it:
    /// when the running jobs' time limits free them (it may start sooner, never later unless
    /// a job of higher priority comes first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_start: Option<u64>,
    /// `submitted_at` in RFC 3339 (UTC).
    #[serde(default)]
    pub submitted_time: String,
    /// `since` in RFC 3339 (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_time: Option<String>,
    /// `expected_start` in RFC 3339 (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_start_time: Option<String>,
}

/// A page of jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Jobs in id order.
    pub jobs: Vec<JobView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

/// A page of services.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceList {
    /// Services in id order.
    pub services: Vec<ServiceView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

/// A page of sandbox batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchList {
    /// Batches in id order.
    pub batches: Vec<BatchView>,
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
    /// Removed from the fleet by a fleet change: drained, it leaves once its work ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
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
    /// GPUs its quota guarantees, of one GPU model (quotas are per model; the largest is
    /// shown). `None`: no quota binds it.
    #[serde(default)]
    pub quota_gpus: Option<u64>,
    /// GPUs in use beyond its quota, model by model: idle quota borrowed from its cohort.
    #[serde(default)]
    pub borrowed_gpus: u64,
    /// Its weight in fair share.
    #[serde(default)]
    pub weight: f64,
    /// The cohort it lends idle quota to and borrows from.
    #[serde(default)]
    pub cohort: Option<String>,
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

/// Which task's log, and from which byte.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogWanted {
    /// The job.
    pub job: u64,
    /// Its run.
    pub run: u32,
    /// The task's rank.
    pub rank: u32,
    /// First byte wanted.
    pub from: u64,
}

/// A piece of a task's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogChunk {
    /// The job.
    pub job: u64,
    /// Its run.
    pub run: u32,
    /// The task's rank.
    pub rank: u32,
    /// Byte offset of `data` in the log.
    pub offset: u64,
    /// The bytes, as text (invalid UTF-8 replaced).
    pub data: String,
    /// Bytes read from the file (`offset + len` is where the next piece starts).
    pub len: u64,
}

/// A task's log as far as the server has it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogView {
    /// The job.
    pub job: u64,
    /// The run shown (the latest).
    pub run: u32,
    /// The rank shown.
    pub rank: u32,
    /// Byte offset of `data`.
    pub from: u64,
    /// Pass as `from` to get what follows.
    pub next: u64,
    /// The text.
    pub data: String,
}

/// A batch of CPU sandboxes to place now (all or none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitSandboxes {
    /// Letters, digits, '-', '_' and '.'; 1 to 128 characters.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$", min_length = 1, max_length = 128)]
    pub name: String,
    /// The owning tenant's name.
    #[schema(min_length = 1, max_length = 128)]
    pub tenant: String,
    /// Sandboxes in the batch, 1..=1,000,000.
    pub count: u32,
    /// CPU millicores of each sandbox.
    pub cpu_millis: u32,
    /// Memory of each sandbox, MiB.
    pub memory_mib: u32,
    /// Host failures the batch survives by moving its sandboxes elsewhere (default 3).
    #[serde(default = "three")]
    pub max_retries: u32,
    /// The program each sandbox runs (`STARGRID_SANDBOX_INDEX` tells it which one it is).
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Environment values that are secrets (API keys): never shown by the API, kept
    /// encrypted in the journal, given only to the nodes that run the work. Names must not
    /// repeat `env`'s; both count against the 64 KiB environment limit.
    #[serde(default)]
    pub secret_env: std::collections::BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    #[schema(pattern = r"^/", max_length = 4096)]
    pub workdir: Option<String>,
    /// Interactive: each sandbox runs no command of its own but lives, idle, until it is
    /// ended, its `timeout_s` passes, or no exec ran for `idle_timeout_s`; commands run in it
    /// through `POST /v1/sandboxes/{id}/exec` (`command` must then be empty).
    #[serde(default)]
    pub interactive: bool,
    /// An interactive sandbox ends this many seconds after it was created (default 3,600; at
    /// most 604,800).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    pub timeout_s: Option<u64>,
    /// An interactive sandbox ends when no exec ran for this many seconds (default 600; at
    /// most its `timeout_s`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    pub idle_timeout_s: Option<u64>,
    /// The template whose root file system (read-only) each sandbox sees, one the hosts offer
    /// (`stargrid agent --template NAME=DIR`); absent: the host's own `/usr` and `/etc`.
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$", max_length = 64)]
    pub template: Option<String>,
    /// An interactive sandbox's egress allow-list: `HOST[:PORT]` rules (`pypi.org`,
    /// `*.github.com:22`, `203.0.113.7:8080`; port 443 when not given), at most 64. Its
    /// programs reach these through a proxy at `http://127.0.0.1:3128` (`HTTPS_PROXY` and
    /// `HTTP_PROXY` are set; HTTP `CONNECT` only); nothing else leaves the sandbox. Empty
    /// (the default): no network but loopback.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub egress: Vec<String>,
}

fn three() -> u32 {
    3
}

/// A sandbox batch as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchView {
    /// Id (from the same sequence as job ids).
    pub id: u64,
    /// Name.
    pub name: String,
    /// Owner.
    pub tenant: String,
    /// running, finished or cancelled.
    pub state: String,
    /// Sandboxes in the batch.
    pub count: u32,
    /// Sandboxes still live.
    pub live: u32,
    /// Sandboxes that exited 0.
    pub succeeded: u32,
    /// Sandboxes that exited with another code.
    pub failed: u32,
    /// Of the failed, those the kernel killed for going past their memory.
    #[serde(default)]
    pub oom_killed: u32,
    /// Sandboxes lost with their host when the retry budget or the room ran out.
    pub lost: u32,
    /// Sandboxes moved off failed hosts.
    pub moved: u32,
    /// Hosts the live sandboxes run on.
    pub hosts: u32,
    /// When it was accepted (Unix seconds).
    pub submitted_at: u64,
    /// When its last sandbox ended or it was cancelled.
    pub ended_at: Option<u64>,
    /// `submitted_at` in RFC 3339 (UTC).
    #[serde(default)]
    pub submitted_time: String,
    /// `ended_at` in RFC 3339 (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_time: Option<String>,
    /// Interactive (commands run in it through exec), with when it ends at the latest.
    #[serde(default)]
    pub interactive: bool,
    /// An interactive batch's end at the latest (Unix seconds).
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// An interactive batch ends after this many seconds without an exec.
    #[serde(default)]
    pub idle_timeout_s: Option<u64>,
    /// The template its sandboxes run in; absent: the host's root file system.
    #[serde(default)]
    pub template: Option<String>,
    /// Where its sandboxes may connect to (an interactive batch's egress allow-list).
    #[serde(default)]
    pub egress: Vec<String>,
}

/// A token to issue (admin only). The token itself is in the answer, once; the server keeps only
/// its SHA-256.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    /// admin, tenant, agent or metrics (reads `/metrics` only).
    #[schema(pattern = r"^(admin|tenant|agent)$")]
    pub role: String,
    /// The tenant, for role tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Seconds until it stops working (default: until revoked).
    #[serde(default)]
    pub expires_in_s: Option<u64>,
    /// For an agent credential (required): the nodes it may report for, as a hostlist
    /// expression (`gpu-[0000-0127]`, `cpu-1,cpu-7`). Reports for any other node are refused.
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub nodes: Option<String>,
}

/// An issued token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Its id, to list or revoke it (not a secret).
    #[serde(default)]
    pub id: String,
    /// When it stops working (Unix seconds).
    #[serde(default)]
    pub expires_at: Option<u64>,
}

/// A token as the admin sees it (never the token itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Its id.
    pub id: String,
    /// admin, tenant, agent or metrics (reads `/metrics` only).
    pub role: String,
    /// The tenant, for a tenant token.
    pub tenant: Option<String>,
    /// The nodes an agent credential is bound to (a hostlist expression); `*` for an agent
    /// token issued before credentials were bound to nodes, which reports for any node.
    #[serde(default)]
    pub nodes: Option<String>,
    /// Reports this credential sent for nodes it is not bound to, refused since the server
    /// started (a stolen or misconfigured credential).
    #[serde(default)]
    pub refused_reports: u64,
    /// When it was issued (Unix seconds).
    pub issued_at: u64,
    /// When it stops working.
    pub expires_at: Option<u64>,
    /// Whether it already stopped working.
    pub expired: bool,
}

/// An agent waiting to hear that some of its nodes' assignments changed (a long poll).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForChanges {
    /// The nodes the agent plays (at most 100,000); none: every node the credential reports
    /// for (an agent that plays many nodes).
    #[schema(max_items = 100_000)]
    pub nodes: Vec<String>,
    /// The `version` of the previous answer (0 at first).
    #[serde(default)]
    pub after: u64,
    /// How long to wait for a change, in milliseconds (at most 30,000).
    #[schema(maximum = 30000)]
    pub timeout_ms: u64,
}

/// Which of the agent's nodes have new assignments: heartbeat them now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Changes {
    /// Pass as `after` next time.
    pub version: u64,
    /// Nodes (of those asked about) whose assignments changed after `after`.
    pub changed: Vec<String>,
    /// The server cannot tell (it restarted, or `after` is too old): heartbeat every node.
    pub all: bool,
    /// Commands to run in sandboxes of the agent's nodes now.
    #[serde(default)]
    pub execs: Vec<ExecOrder>,
}

/// What a compaction did (`POST /v1/journal/compact`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Compacted {
    /// The record the snapshot it kept holds the state after; it is now the journal's first.
    pub snapshot_seq: u64,
    /// Records dropped.
    pub dropped: u64,
    /// Workload summaries written to the history.
    pub summaries: usize,
}
