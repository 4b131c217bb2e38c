//! The history of finished work and its usage (`GET /v1/history`, `GET /v1/usage`), as
//! `sacct` and `sreport` give them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One workload in the history: every job, sandbox batch and service, written when it ended
/// (and for every workload when the journal is compacted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkloadSummary {
    /// job, batch or service.
    pub kind: String,
    /// Its id (a service's own number for services).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// Its state when it was last written: finished, failed (a job that exited other than 0),
    /// cancelled; pending or running for live work written by a compaction; a batch's state;
    /// active or deleted for a service.
    pub state: String,
    /// When it was submitted (created), Unix seconds.
    pub submitted_at: u64,
    /// The same in RFC 3339 (UTC).
    pub submitted_time: String,
    /// When its first run started.
    #[serde(default)]
    pub started_at: Option<u64>,
    /// Seconds from submission to its first start.
    #[serde(default)]
    pub wait_s: Option<u64>,
    /// When it ended.
    pub ended_at: Option<u64>,
    /// The same in RFC 3339 (UTC).
    #[serde(default)]
    pub ended_time: Option<String>,
    /// A job's exit code.
    pub exit_code: Option<i32>,
    /// Times a job was requeued, a batch's sandboxes moved, or a service's replicas replaced.
    pub restarts: u32,
    /// GPUs (per replica for a service), or sandboxes in a batch.
    pub size: u64,
    /// A job's nodes in its latest run.
    pub nodes: Vec<String>,
    /// GPU-hours its runs held (`None`: not known, written by an older build).
    #[serde(default)]
    pub gpu_hours: Option<f64>,
    /// GPU-hours of work lost to preemptions and failures.
    #[serde(default)]
    pub lost_gpu_hours: Option<f64>,
    /// What its runs cost at its nodes' prices, USD.
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

/// A page of the history (`GET /v1/history`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryList {
    /// Summaries, by key.
    pub items: Vec<WorkloadSummary>,
    /// Pass as `after` for the next page; `None`: this was the last.
    pub next_after: Option<u64>,
}

/// One tenant's usage in one period (`GET /v1/usage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageLine {
    /// The tenant.
    pub tenant: String,
    /// The period's first second (a day's or a Monday's 00:00 UTC), Unix seconds.
    pub period_start: u64,
    /// The same as a date (`2026-11-30`).
    pub period: String,
    /// Workloads that ended in it.
    pub count: u64,
    /// Their GPU-hours.
    pub gpu_hours: f64,
    /// Their cost, USD.
    pub cost_usd: f64,
}

/// Usage per tenant per day or week (`GET /v1/usage`): work counted in the period it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// day or week.
    pub period: String,
    /// The window's start (Unix seconds).
    pub since: u64,
    /// The window's end (Unix seconds, excluded).
    pub until: u64,
    /// One line per tenant per period with any work, by period then tenant.
    pub lines: Vec<UsageLine>,
}
