//! Workload summaries: one short record per job, sandbox batch and service, written to the
//! store's `history` table when the journal is compacted, so that the audit trail of what ran
//! (who, what, when, how it ended, where) outlives the records compaction drops. Versioned
//! like the records (`"v": 1`), keyed by workload (services above [`SERVICE_KEYS`]).

use serde::{Deserialize, Serialize};

/// History keys of services start here (jobs and batches are keyed by their id, below it).
pub const SERVICE_KEYS: u64 = 1 << 62;

/// The summary version this build writes.
pub const SUMMARY_FORMAT: u32 = 1;

/// One workload's summary, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryV1 {
    /// Always 1.
    pub v: u32,
    /// job, batch or service.
    pub kind: String,
    /// Its id (a service's own number for services).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its tenant's name.
    pub tenant: String,
    /// Its state when summarised (pending, running, finished, cancelled, active, deleted...).
    pub state: String,
    /// When it was submitted (created).
    pub submitted_at: u64,
    /// When it ended.
    pub ended_at: Option<u64>,
    /// A job's exit code.
    pub exit_code: Option<i32>,
    /// Times a job was requeued, or a service's replicas replaced.
    pub restarts: u32,
    /// GPUs a job asked for (per replica for a service); sandboxes in a batch.
    pub size: u64,
    /// A job's nodes in its latest run.
    pub nodes: Vec<String>,
}

impl SummaryV1 {
    /// The key of its row.
    pub fn key(&self) -> u64 {
        match self.kind.as_str() {
            "service" => SERVICE_KEYS + self.id,
            _ => self.id,
        }
    }

    /// The row's bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Plain data: encoding cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A row's summary; `None` for a row this build cannot read.
    pub fn decode(bytes: &[u8]) -> Option<SummaryV1> {
        serde_json::from_slice::<SummaryV1>(bytes)
            .ok()
            .filter(|s| s.v == SUMMARY_FORMAT)
    }
}
