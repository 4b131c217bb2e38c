//! When interactive sandboxes end on their own: at their timeout (a time the journal holds:
//! creation plus `timeout_s`) or after `idle_timeout_s` with no exec running or started (a clock
//! kept in memory only: after a restart every live session's idle clock starts again, so it
//! may live a little longer, never shorter).
//!
//! Each session has one entry in a deadline index; touching a session moves its idle deadline
//! without touching the index (the entry is looked at again when it comes due), so an exec
//! costs a hash lookup and the expiry tick costs only the entries that came due.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug)]
struct Clock {
    /// The timeout (Unix seconds).
    expires_at: u64,
    idle: Duration,
    idle_deadline: Instant,
    /// Execs running now: a busy session is never idle.
    busy: u32,
    /// The deadline its index entry holds.
    indexed: Instant,
}

/// The clocks of live interactive sandbox batches.
pub struct SessionClocks {
    clocks: HashMap<u64, Clock>,
    due: BTreeSet<(Instant, u64)>,
    /// An instant and the Unix time then: Unix times are turned into instants from it.
    anchor: (Instant, u64),
}

impl Default for SessionClocks {
    fn default() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        SessionClocks::anchored(Instant::now(), unix)
    }
}

impl SessionClocks {
    /// Clocks that take Unix time `unix` to be instant `at`.
    pub fn anchored(at: Instant, unix: u64) -> SessionClocks {
        SessionClocks {
            clocks: HashMap::new(),
            due: BTreeSet::new(),
            anchor: (at, unix),
        }
    }

    /// `unix` (seconds) as an instant (a time already past: the anchor).
    fn instant_of(&self, unix: u64) -> Instant {
        self.anchor.0 + Duration::from_secs(unix.saturating_sub(self.anchor.1))
    }

    /// Starts the clocks of batch `id`: it ends at `expires_at` (Unix seconds) or after
    /// `idle_timeout_s` idle, counted from `now`.
    pub fn start(&mut self, id: u64, expires_at: u64, idle_timeout_s: u64, now: Instant) {
        let idle = Duration::from_secs(idle_timeout_s);
        let clock = Clock {
            expires_at,
            idle,
            idle_deadline: now + idle,
            busy: 0,
            indexed: (now + idle).min(self.instant_of(expires_at)),
        };
        if let Some(old) = self.clocks.insert(id, clock) {
            self.due.remove(&(old.indexed, id));
        }
        self.due.insert((clock.indexed, id));
    }

    /// An exec started in batch `id`.
    pub fn exec_started(&mut self, id: u64, now: Instant) {
        if let Some(c) = self.clocks.get_mut(&id) {
            c.busy += 1;
            c.idle_deadline = now + c.idle;
        }
    }

    /// An exec of batch `id` ended: the idle clock starts again.
    pub fn exec_ended(&mut self, id: u64, now: Instant) {
        if let Some(c) = self.clocks.get_mut(&id) {
            c.busy = c.busy.saturating_sub(1);
            c.idle_deadline = now + c.idle;
        }
    }

    /// Batches whose time is up at `now` (their clocks are forgotten); `live` says whether a
    /// batch still lives (one that ended otherwise is forgotten too).
    pub fn expired(&mut self, now: Instant, live: impl Fn(u64) -> bool) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            let Some(c) = self.clocks.get(&id).copied() else {
                continue;
            };
            if !live(id) {
                self.clocks.remove(&id);
                continue;
            }
            let timeout = self.instant_of(c.expires_at);
            let idle_over = c.busy == 0 && c.idle_deadline <= now;
            if timeout <= now || idle_over {
                self.clocks.remove(&id);
                out.push(id);
                continue;
            }
            // Not yet: looked at again at its next deadline.
            let next = if c.busy > 0 {
                (now + c.idle).min(timeout)
            } else {
                c.idle_deadline.min(timeout)
            };
            if let Some(c) = self.clocks.get_mut(&id) {
                c.indexed = next;
            }
            self.due.insert((next, id));
        }
        out
    }

    /// Sessions whose clocks run.
    pub fn len(&self) -> usize {
        self.clocks.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.clocks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIX_T0: u64 = 1_800_000_000;

    #[test]
    fn a_session_ends_idle_unless_an_exec_runs_and_always_at_its_timeout() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut clocks = SessionClocks::anchored(t0, UNIX_T0);
        clocks.start(1, UNIX_T0 + 100, 10, t0);
        clocks.start(2, UNIX_T0 + 100, 10, t0);
        clocks.start(3, UNIX_T0 + 15, 10, t0);
        assert!(clocks.expired(t0 + 9 * s, |_| true).is_empty());
        // Batch 2 is touched by an exec that ends at 8 s: idle until 18 s.
        clocks.exec_started(2, t0 + 5 * s);
        clocks.exec_ended(2, t0 + 8 * s);
        // Batch 3 runs an exec for ever: its timeout still ends it.
        clocks.exec_started(3, t0 + 9 * s);
        assert_eq!(clocks.expired(t0 + 11 * s, |_| true), vec![1]);
        assert!(clocks.expired(t0 + 14 * s, |_| true).is_empty());
        assert_eq!(clocks.expired(t0 + 17 * s, |_| true), vec![3]);
        assert_eq!(clocks.expired(t0 + 18 * s, |_| true), vec![2]);
        assert!(clocks.is_empty() && clocks.due.is_empty());
    }

    #[test]
    fn a_session_that_ended_otherwise_is_forgotten() {
        let t0 = Instant::now();
        let mut clocks = SessionClocks::anchored(t0, UNIX_T0);
        clocks.start(1, UNIX_T0 + 100, 1, t0);
        assert!(clocks
            .expired(t0 + Duration::from_secs(2), |_| false)
            .is_empty());
        assert!(clocks.is_empty() && clocks.due.is_empty());
    }
}
