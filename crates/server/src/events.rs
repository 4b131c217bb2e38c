//! The event stream's memory: the latest events, in journal order, for `GET /v1/events`.
//!
//! Events are made from each record as it is applied (under the state's lock, so in journal
//! order) and kept in a ring of bounded size; a reader sees only those of durable records, so
//! nobody hears of a change a crash could undo. An event's id is its record and its place in it
//! ([`EventId`]), so ids mean the same after a restart (replay tells again the records it
//! replays after the latest snapshot).
//! A reader asking from an id the ring no longer holds, or from an id this journal never
//! reached, is told to resync (a [`Change::Resync`] event) instead of silently missing events.

use crate::api::{Change, EventId, StreamEvent};
use std::collections::VecDeque;

/// Events kept: about 200 bytes each, so some 13 MiB at most.
pub const KEPT_EVENTS: usize = 65_536;

/// Most entries one read looks at (a tenant's reader skips others' events within this).
const SCAN_PER_READ: usize = 4_096;

/// One event as the state tells it, with who may see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Told {
    /// The tenant whose work it is (`None`: the fleet's, which every reader sees).
    pub tenant: Option<String>,
    /// For a preemption: the tenant of the job it makes room for (whose id only that tenant
    /// and operators see).
    pub preemptor: Option<String>,
    /// What changed.
    pub change: Change,
}

impl Told {
    /// An event of the fleet, for every reader.
    pub fn everyone(change: Change) -> Told {
        Told {
            tenant: None,
            preemptor: None,
            change,
        }
    }

    /// An event of `tenant`'s work, for that tenant and operators.
    pub fn tenant(tenant: &str, change: Change) -> Told {
        Told {
            tenant: Some(tenant.to_string()),
            preemptor: None,
            change,
        }
    }

    /// The event as `viewer` sees it (`None`: an operator); `None` if it is not theirs to see.
    fn seen_by(&self, viewer: Option<&str>) -> Option<Change> {
        let Some(viewer) = viewer else {
            return Some(self.change.clone());
        };
        if self.tenant.as_deref().is_some_and(|t| t != viewer) {
            return None;
        }
        let mut change = self.change.clone();
        if let Change::Preempted { by, .. } = &mut change {
            if self.preemptor.as_deref() != Some(viewer) {
                *by = None;
            }
        }
        Some(change)
    }
}

#[derive(Debug)]
struct Entry {
    id: EventId,
    at: u64,
    told: Told,
}

/// What a read found.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// Events after the id asked (possibly none yet), and the id to read after next.
    Events {
        /// The events, in order.
        events: Vec<StreamEvent>,
        /// Where the next read starts (past the entries looked at, seen or not).
        next: EventId,
    },
    /// The id asked is not one the ring can go on from: the reader must resync.
    Resync(StreamEvent),
}

/// The latest events, oldest first.
#[derive(Debug)]
pub struct EventLog {
    entries: VecDeque<Entry>,
    capacity: usize,
    /// Every event up to this id is gone (dropped from the ring, or from before start-up).
    forgotten: EventId,
    /// The last record told of.
    last_record: u64,
}

impl EventLog {
    /// An empty log whose events start after record `after` (those before it are not known).
    pub fn new(capacity: usize, after: u64) -> EventLog {
        EventLog {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            forgotten: EventId {
                record: after,
                index: u32::MAX,
            },
            last_record: after,
        }
    }

    /// Keeps the events of record `record`, applied at `at` (records come in order).
    pub fn record(&mut self, record: u64, at: u64, told: Vec<Told>) {
        self.last_record = self.last_record.max(record);
        for (index, told) in told.into_iter().enumerate() {
            let id = EventId {
                record,
                index: u32::try_from(index).unwrap_or(u32::MAX),
            };
            if self.entries.len() == self.capacity {
                if let Some(old) = self.entries.pop_front() {
                    self.forgotten = old.id;
                }
            }
            self.entries.push_back(Entry { id, at, told });
        }
    }

    /// Up to `max` events after `after` that `viewer` may see (`None`: an operator), of records
    /// up to `durable`.
    pub fn read(&self, after: EventId, durable: u64, viewer: Option<&str>, max: usize) -> Read {
        let now = self.latest(durable);
        if after < self.forgotten {
            return Read::Resync(resync(
                now,
                format!(
                    "events up to {} are no longer kept (the server keeps the latest {} and \
                     none from before its start)",
                    self.forgotten, self.capacity
                ),
            ));
        }
        if after.record > self.last_record {
            return Read::Resync(resync(
                now,
                format!(
                    "event {after} is ahead of this journal (its last record is {})",
                    self.last_record
                ),
            ));
        }
        let start = self.entries.partition_point(|e| e.id <= after);
        let mut events = Vec::new();
        let mut next = after;
        for e in self.entries.range(start..).take(SCAN_PER_READ) {
            if e.id.record > durable || events.len() >= max {
                break;
            }
            next = e.id;
            if let Some(change) = e.told.seen_by(viewer) {
                events.push(stream_event(e.id, e.at, change));
            }
        }
        Read::Events { events, next }
    }

    /// The id of the last event kept of a durable record (where a new reader starts to follow).
    pub fn latest(&self, durable: u64) -> EventId {
        let end = self.entries.partition_point(|e| e.id.record <= durable);
        match end.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(e) => e.id,
            None => self
                .forgotten
                .max(EventId::before(durable.min(self.last_record) + 1)),
        }
    }

    /// Events kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn resync(at_id: EventId, reason: String) -> StreamEvent {
    stream_event(at_id, 0, Change::Resync { reason })
}

fn stream_event(id: EventId, at: u64, change: Change) -> StreamEvent {
    StreamEvent {
        id: id.to_string(),
        at,
        time: rfc3339(at),
        change,
    }
}

/// `at` (Unix seconds) in RFC 3339, UTC.
pub fn rfc3339(at: u64) -> String {
    i64::try_from(at)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(String::new, |t| t.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn node(name: &str) -> Told {
        Told::everyone(Change::Node {
            node: name.into(),
            state: "down".into(),
            reason: "test".into(),
        })
    }

    fn job(tenant: &str, id: u64) -> Told {
        Told::tenant(
            tenant,
            Change::Job {
                job: id,
                name: format!("j{id}"),
                tenant: tenant.into(),
                state: "running".into(),
                nodes: None,
                service: None,
                exit_code: None,
            },
        )
    }

    fn ids(read: &Read) -> Vec<String> {
        match read {
            Read::Events { events, .. } => events.iter().map(|e| e.id.clone()).collect(),
            Read::Resync(e) => vec![format!("resync@{}", e.id)],
        }
    }

    #[test]
    fn readers_see_durable_events_in_order_and_tenants_only_theirs() {
        let mut log = EventLog::new(100, 0);
        log.record(1, 10, vec![node("a"), job("t1", 5)]);
        log.record(2, 11, vec![job("t2", 6)]);
        log.record(3, 12, vec![job("t1", 7)]);
        let start = EventId::before(1);
        // Record 3 is not durable yet.
        assert_eq!(ids(&log.read(start, 2, None, 100)), ["1.0", "1.1", "2.0"]);
        assert_eq!(
            ids(&log.read(start, 3, Some("t1"), 100)),
            ["1.0", "1.1", "3.0"]
        );
        assert_eq!(ids(&log.read(start, 3, Some("t2"), 100)), ["1.0", "2.0"]);
        // Resuming after an id, and a page size.
        assert_eq!(
            ids(&log.read("1.0".parse().unwrap(), 3, None, 2)),
            ["1.1", "2.0"]
        );
        let Read::Events { next, .. } = log.read(start, 3, Some("t2"), 100) else {
            panic!()
        };
        // Past everything looked at, seen or not.
        assert_eq!(next.to_string(), "3.0");
        assert_eq!(log.latest(2).to_string(), "2.0");
        let Read::Events { events, .. } = log.read(start, 1, None, 100) else {
            panic!()
        };
        assert_eq!(events[0].time, "1970-01-01T00:00:10Z");
    }

    #[test]
    fn a_preemptor_is_named_only_to_its_own_tenant() {
        let mut log = EventLog::new(10, 0);
        let mut told = Told::tenant(
            "victim",
            Change::Preempted {
                job: 1,
                tenant: "victim".into(),
                by: Some(2),
                stops_at: 99,
            },
        );
        told.preemptor = Some("winner".into());
        log.record(1, 0, vec![told]);
        let by = |viewer| match log.read(EventId::before(1), 1, viewer, 10) {
            Read::Events { events, .. } => events
                .first()
                .map(|e| matches!(e.change, Change::Preempted { by: Some(2), .. })),
            Read::Resync(_) => None,
        };
        assert_eq!(by(None), Some(true));
        assert_eq!(by(Some("victim")), Some(false));
        assert_eq!(by(Some("winner")), None);
    }

    #[test]
    fn a_reader_behind_the_ring_or_ahead_of_the_journal_is_told_to_resync() {
        let mut log = EventLog::new(3, 4);
        // From before start-up: unknown.
        assert_eq!(
            ids(&log.read(EventId::before(2), 4, None, 10)),
            ["resync@4.4294967295"]
        );
        for r in 5..10 {
            log.record(r, 0, vec![node("n")]);
        }
        assert_eq!(log.len(), 3);
        // 5 and 6 were dropped: a reader after 5.0 missed 6.0.
        assert_eq!(
            ids(&log.read("5.0".parse().unwrap(), 9, None, 10)),
            ["resync@9.0"]
        );
        assert_eq!(
            ids(&log.read("6.0".parse().unwrap(), 9, None, 10)),
            ["7.0", "8.0", "9.0"]
        );
        assert!(matches!(
            log.read("50.0".parse().unwrap(), 9, None, 10),
            Read::Resync(_)
        ));
    }

    proptest! {
        /// Whatever is recorded and read, a reader following the stream page by page sees
        /// every event of durable records it may see, once, in order; or it is told to resync.
        #[test]
        fn following_the_stream_misses_nothing(
            records in prop::collection::vec(prop::collection::vec(0u8..3, 0..4), 1..40),
            capacity in 1usize..50,
            page in 1usize..5,
        ) {
            let mut log = EventLog::new(capacity, 0);
            let mut all = Vec::new();
            for (i, tenants) in records.iter().enumerate() {
                let record = i as u64 + 1;
                let told: Vec<Told> = tenants.iter().enumerate()
                    .map(|(k, t)| job(&format!("t{t}"), record * 10 + k as u64))
                    .collect();
                for (k, t) in told.iter().enumerate() {
                    if t.tenant.as_deref() == Some("t1") {
                        all.push(format!("{record}.{k}"));
                    }
                }
                log.record(record, 0, told);
            }
            let durable = records.len() as u64;
            let mut after = EventId::before(1);
            let mut seen = Vec::new();
            for _ in 0..1000 {
                match log.read(after, durable, Some("t1"), page) {
                    Read::Events { events, next } => {
                        if next == after {
                            break;
                        }
                        seen.extend(events.into_iter().map(|e| e.id));
                        after = next;
                    }
                    Read::Resync(_) => {
                        // Only when events were dropped.
                        prop_assert!(log.len() == capacity);
                        return Ok(());
                    }
                }
            }
            prop_assert_eq!(seen, all);
        }
    }
}
