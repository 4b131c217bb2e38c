//! Workload summaries: one short record per job, sandbox batch and service in the store's
//! `history` table, written in the same transaction as the journal record that ended the
//! workload (and for every workload when the journal is compacted), so the accounting of what
//! ran (who, what, when, how long it waited, where, GPU-hours, what was lost, what it cost, how
//! it ended) outlives the records compaction drops. Versioned like the records (`"v"`), keyed by
//! workload (services above [`SERVICE_KEYS`]). Version 1 (written by compaction only, without
//! accounting) is still read: its new fields read as unknown.

use serde::{Deserialize, Serialize};

/// History keys of services start here (jobs and batches are keyed by their id, below it).
pub const SERVICE_KEYS: u64 = 1 << 62;

/// The summary version this build writes.
pub const SUMMARY_FORMAT: u32 = 2;

/// One workload's summary, version 1 (read only).
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
    /// Its state when summarised.
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

/// One workload's summary, version 2: version 1 and the accounting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryV2 {
    /// Always 2.
    pub v: u32,
    /// job, batch or service.
    pub kind: String,
    /// Its id (a service's own number for services).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its tenant's name.
    pub tenant: String,
    /// Its state when summarised: pending, running, finished, failed (a job that exited other
    /// than 0), cancelled; a batch's; active or deleted for a service.
    pub state: String,
    /// When it was submitted (created).
    pub submitted_at: u64,
    /// When its first run started (unknown in rows of version 1).
    pub started_at: Option<u64>,
    /// When it ended.
    pub ended_at: Option<u64>,
    /// A job's exit code.
    pub exit_code: Option<i32>,
    /// Times a job was requeued, or a service's replicas replaced, or a batch's sandboxes
    /// moved off failed hosts.
    pub restarts: u32,
    /// GPUs a job asked for (per replica for a service); sandboxes in a batch.
    pub size: u64,
    /// A job's nodes in its latest run.
    pub nodes: Vec<String>,
    /// GPU-seconds its runs held (`None`: unknown, a row of version 1).
    pub gpu_seconds: Option<u64>,
    /// GPU-seconds of work lost to preemption and failures (since a checkpoint).
    pub lost_gpu_seconds: Option<u64>,
    /// What its runs cost at its nodes' prices, millionths of a USD.
    pub cost_micro_usd: Option<u64>,
}

impl From<SummaryV1> for SummaryV2 {
    fn from(s: SummaryV1) -> SummaryV2 {
        SummaryV2 {
            v: SUMMARY_FORMAT,
            kind: s.kind,
            id: s.id,
            name: s.name,
            tenant: s.tenant,
            state: s.state,
            submitted_at: s.submitted_at,
            started_at: None,
            ended_at: s.ended_at,
            exit_code: s.exit_code,
            restarts: s.restarts,
            size: s.size,
            nodes: s.nodes,
            gpu_seconds: None,
            lost_gpu_seconds: None,
            cost_micro_usd: None,
        }
    }
}

/// Just the version, read first.
#[derive(Deserialize)]
struct Version {
    v: u32,
}

impl SummaryV2 {
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

    /// A row's summary, of any version this build reads (an older one upgraded); `None` for a
    /// row this build cannot read.
    pub fn decode(bytes: &[u8]) -> Option<SummaryV2> {
        match serde_json::from_slice::<Version>(bytes).ok()?.v {
            1 => serde_json::from_slice::<SummaryV1>(bytes)
                .ok()
                .map(Into::into),
            SUMMARY_FORMAT => serde_json::from_slice::<SummaryV2>(bytes).ok(),
            _ => None,
        }
    }

    /// The row the store keeps: its body and the columns queries filter by.
    pub fn row(&self) -> store::HistoryRow {
        store::HistoryRow {
            key: self.key(),
            body: self.encode(),
            index: store::HistoryIndex {
                kind: self.kind.clone(),
                tenant: self.tenant.clone(),
                state: self.state.clone(),
                name: self.name.clone(),
                submitted_at: self.submitted_at,
                ended_at: self.ended_at,
                gpu_seconds: self.gpu_seconds.unwrap_or(0),
                cost_micro_usd: self.cost_micro_usd.unwrap_or(0),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// A row compaction wrote before summaries carried accounting.
    const V1_ROW: &str = r#"{"v":1,"kind":"job","id":7,"name":"train","tenant":"vision","state":"finished","submitted_at":100,"ended_at":400,"exit_code":0,"restarts":1,"size":16,"nodes":["a","b"]}"#;

    #[test]
    fn a_version_1_row_reads_as_version_2_with_its_accounting_unknown() {
        let s = SummaryV2::decode(V1_ROW.as_bytes()).unwrap();
        assert_eq!(s.v, 2);
        assert_eq!(
            (s.id, s.name.as_str(), s.tenant.as_str()),
            (7, "train", "vision")
        );
        assert_eq!(
            (s.submitted_at, s.ended_at, s.exit_code),
            (100, Some(400), Some(0))
        );
        assert_eq!((s.restarts, s.size, s.nodes.len()), (1, 16, 2));
        assert_eq!(
            (s.started_at, s.gpu_seconds, s.cost_micro_usd),
            (None, None, None)
        );
        // Written again, it is version 2 and reads back the same.
        assert_eq!(SummaryV2::decode(&s.encode()).unwrap(), s);
        assert!(SummaryV2::decode(br#"{"v":3}"#).is_none());
    }

    proptest! {
        /// Any bytes are a summary or nothing; nothing panics.
        #[test]
        fn any_bytes_decode_or_not(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = SummaryV2::decode(&bytes);
        }
    }
}
