//! The event stream (`GET /v1/events`, Server-Sent Events): what changed, in journal order,
//! with an id to resume from.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// Where an event sits in the stream: the journal record it came from and its place among that
/// record's events. Written `RECORD.INDEX` (the SSE `id:` line); ids only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// The journal record.
    pub record: u64,
    /// Its place among the record's events, from 0.
    pub index: u32,
}

impl EventId {
    /// The id after which every event of `record` comes.
    pub fn before(record: u64) -> EventId {
        EventId {
            record: record.saturating_sub(1),
            index: u32::MAX,
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.record, self.index)
    }
}

/// Why a text is not an event id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an event id (RECORD.INDEX, e.g. 120.3)")]
pub struct BadEventId(String);

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(s: &str) -> Result<EventId, BadEventId> {
        let bad = || BadEventId(s.chars().take(64).collect());
        let (record, index) = match s.split_once('.') {
            Some((record, index)) => (record, Some(index)),
            None => (s, None),
        };
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(record) || index.is_some_and(|i| !digits(i)) {
            return Err(bad());
        }
        Ok(EventId {
            record: record.parse().map_err(|_| bad())?,
            index: match index {
                None => u32::MAX,
                Some(i) => i.parse().map_err(|_| bad())?,
            },
        })
    }
}

/// One event of the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamEvent {
    /// Its id, `RECORD.INDEX`: resume after it with `?after=` or the `Last-Event-ID` header.
    pub id: String,
    /// When it happened (Unix seconds).
    pub at: u64,
    /// The same instant in RFC 3339 (UTC).
    pub time: String,
    /// What changed.
    pub change: Change,
}

/// What an event tells of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A job (or a service's replica) changed state, started, or was touched by the queue.
    Job {
        /// The job.
        job: u64,
        /// Its name.
        name: String,
        /// Its tenant.
        tenant: String,
        /// pending, running, preempting, finished or cancelled (with `exit_code` once it exited).
        state: String,
        /// Its nodes while it runs, as a host list (e.g. `gb-r1-[0-17]`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nodes: Option<String>,
        /// The service it is a replica of (its name is then `svc<S>-r<N>`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<u64>,
        /// Its exit code, once it ended by exiting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
    },
    /// A running job saved a checkpoint (what a preemption or a failure now costs it starts
    /// again from zero).
    Checkpointed {
        /// The job.
        job: u64,
        /// Its tenant.
        tenant: String,
    },
    /// A sandbox batch was placed, lost or moved sandboxes, or ended.
    Batch {
        /// The batch.
        batch: u64,
        /// Its name.
        name: String,
        /// Its tenant.
        tenant: String,
        /// running or ended.
        state: String,
        /// Sandboxes still live.
        live: u32,
        /// Sandboxes it asked for.
        count: u32,
    },
    /// A service was created, scaled (by a person or by its autoscaler) or deleted.
    Service {
        /// The service.
        service: u64,
        /// Its name.
        name: String,
        /// Its tenant.
        tenant: String,
        /// active or deleted.
        state: String,
        /// Replicas wanted.
        desired: u32,
        /// Replica jobs it has (running or pending).
        replicas: u32,
        /// Running replicas whose endpoint is ready (absent in events from older servers).
        #[serde(default)]
        ready: u32,
    },
    /// A node came up, went down, or was drained or resumed.
    Node {
        /// The node.
        node: String,
        /// up, down or draining.
        state: String,
        /// Why, in words.
        reason: String,
    },
    /// A running job was told to checkpoint and stop to make room.
    Preempted {
        /// The job told to stop.
        job: u64,
        /// Its tenant.
        tenant: String,
        /// The job it makes room for (shown to its own tenant and operators only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<u64>,
        /// When it must have stopped (Unix seconds).
        stops_at: u64,
    },
    /// A job stopped (preempted, or a node of it failed) and was queued again, or had a failed
    /// node replaced by a spare.
    Requeued {
        /// The job.
        job: u64,
        /// Its tenant.
        tenant: String,
        /// Why, in words.
        reason: String,
        /// GPU-hours of work lost since its last checkpoint.
        lost_gpu_hours: f64,
    },
    /// The stream cannot go on from the id asked (older than what the server keeps, or from
    /// before a restart): read the lists again, then follow from this event's id.
    Resync {
        /// Why.
        reason: String,
    },
}

impl Change {
    /// The event's name in the stream (`event:` line).
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Job { .. } => "job",
            Change::Checkpointed { .. } => "checkpointed",
            Change::Batch { .. } => "batch",
            Change::Service { .. } => "service",
            Change::Node { .. } => "node",
            Change::Preempted { .. } => "preempted",
            Change::Requeued { .. } => "requeued",
            Change::Resync { .. } => "resync",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_read_back_and_order_by_record_then_index() {
        let id: EventId = "120.3".parse().unwrap();
        assert_eq!(
            id,
            EventId {
                record: 120,
                index: 3
            }
        );
        assert_eq!(id.to_string(), "120.3");
        // A bare record number means after every event of that record.
        assert!("120".parse::<EventId>().unwrap() > id);
        assert!(EventId::before(121) > id);
        assert!(EventId::before(121) < "121.0".parse().unwrap());
        for bad in [
            "",
            ".",
            "1.",
            ".3",
            "-1.2",
            "1.2.3",
            "a",
            "1.99999999999",
            "1 .2",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad}");
        }
    }

    proptest! {
        /// Any text either reads as an id that prints back as itself, or is refused; nothing
        /// panics.
        #[test]
        fn any_text_is_an_id_or_refused(s in "\\PC{0,30}") {
            if let Ok(id) = s.parse::<EventId>() {
                if s.contains('.') {
                    prop_assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
                }
            }
        }

        #[test]
        fn ids_round_trip(record in any::<u64>(), index in any::<u32>()) {
            let id = EventId { record, index };
            prop_assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        }
    }
}
