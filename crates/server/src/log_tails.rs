//! Task log tails relayed from the nodes. Logs stay on the nodes; the server asks agents (in
//! heartbeat answers) for what follows what it has, for jobs someone is reading, and keeps each
//! task's tail in memory (never in the journal).
//!
//! Chunks come from agents, which are not trusted: a chunk is taken only for a job someone
//! reads and a task its node runs, its declared length must account for its text, offsets are
//! checked arithmetic, each tail keeps its last [`TAIL_BYTES`], all tails together stay within
//! a budget (the least recently fed go first), and a tail goes when nobody has read its job for
//! [`INTEREST`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long agents keep sending a job's log after someone last asked for it.
pub const INTEREST: Duration = Duration::from_secs(30);

/// The most of one task's log the server keeps (its tail).
pub const TAIL_BYTES: usize = 1 << 20;

/// The most all tails together take, by default.
pub const BUDGET_BYTES: usize = 64 << 20;

/// The longest piece of a log one chunk may carry (agents send 64 KiB).
pub const MAX_CHUNK_BYTES: u64 = 1 << 20;

/// One task: a rank of one run of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskKey {
    /// The job.
    pub job: u64,
    /// Its run.
    pub run: u32,
    /// The task's rank.
    pub rank: u32,
}

/// A piece of a task's log as an agent sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The task.
    pub task: TaskKey,
    /// Offset of the piece in the log file.
    pub offset: u64,
    /// Bytes of the file it covers.
    pub len: u64,
    /// Those bytes as text (invalid UTF-8 replaced, so at most three bytes of text per byte).
    pub data: String,
}

/// Why a chunk is not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkRefused {
    /// Nobody reads that job's logs now.
    #[error("nobody reads the logs of job {0}")]
    NotWanted(u64),
    /// The reporting node does not run that task.
    #[error("job {job} run {run} rank {rank} does not run on this node")]
    NotAssigned {
        /// The job.
        job: u64,
        /// The run.
        run: u32,
        /// The rank.
        rank: u32,
    },
    /// The declared length does not account for the text, or is too large.
    #[error("a chunk of {len} bytes cannot carry {text} bytes of text (at most {MAX_CHUNK_BYTES} bytes a chunk)")]
    BadLength {
        /// Declared length.
        len: u64,
        /// Text carried.
        text: usize,
    },
    /// Offset plus length overflows.
    #[error("offset {offset} + {len} bytes overflows")]
    Overflow {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
    },
}

/// The received end of one task's log.
#[derive(Debug)]
struct Tail {
    /// Offset in the file of `text`'s first byte (approximate where invalid UTF-8 was
    /// replaced: the text is then longer than the bytes it stands for); never above `next`.
    start: u64,
    /// Offset of the next byte wanted.
    next: u64,
    text: String,
    /// When it was last fed (eviction order).
    fed: Instant,
}

/// What a reader gets of a tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailView {
    /// Offset of `data`'s first byte.
    pub from: u64,
    /// Offset to ask from next.
    pub next: u64,
    /// The text.
    pub data: String,
}

/// Whose logs someone reads: a job's (every rank), or one sandbox of a batch (a batch may hold
/// thousands: reading one asks only its host for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interest {
    /// Every task of a job.
    Job(u64),
    /// One sandbox of a batch.
    Sandbox {
        /// The batch.
        batch: u64,
        /// The sandbox's index.
        index: u32,
    },
}

/// Whether someone reads `task`'s log (a sandbox is its batch's task of run 0).
fn wanted_in(wanted: &HashMap<Interest, Instant>, task: &TaskKey) -> bool {
    wanted.contains_key(&Interest::Job(task.job))
        || (task.run == 0
            && wanted.contains_key(&Interest::Sandbox {
                batch: task.job,
                index: task.rank,
            }))
}

/// Every task's tail, and which jobs and sandboxes are read.
#[derive(Debug)]
pub struct LogTails {
    /// Logs someone read lately, and until when agents are asked for more.
    wanted: HashMap<Interest, Instant>,
    tails: HashMap<TaskKey, Tail>,
    /// Bytes of text in all tails.
    bytes: usize,
    budget: usize,
}

impl Default for LogTails {
    fn default() -> Self {
        LogTails::with_budget(BUDGET_BYTES)
    }
}

impl LogTails {
    /// Tails taking at most `budget` bytes together.
    pub fn with_budget(budget: usize) -> LogTails {
        LogTails {
            wanted: HashMap::new(),
            tails: HashMap::new(),
            bytes: 0,
            budget,
        }
    }

    /// Someone reads job `job`'s logs: agents are asked for them for a while. Whether nobody
    /// was reading them already (then the job's agents must be woken to hear of it).
    pub fn want(&mut self, job: u64, now: Instant) -> bool {
        self.wanted
            .insert(Interest::Job(job), now + INTEREST)
            .is_none()
    }

    /// Someone reads sandbox `index` of batch `batch`: as [`LogTails::want`], for that one.
    pub fn want_sandbox(&mut self, batch: u64, index: u32, now: Instant) -> bool {
        self.wanted
            .insert(Interest::Sandbox { batch, index }, now + INTEREST)
            .is_none()
    }

    /// Forgets jobs nobody read for [`INTEREST`], with their tails.
    pub fn expire(&mut self, now: Instant) {
        let before = self.wanted.len();
        self.wanted.retain(|_, until| *until > now);
        // Every heartbeat asks: walk the tails only when a job's interest has just lapsed.
        if self.wanted.len() == before {
            return;
        }
        let wanted = &self.wanted;
        let mut freed = 0;
        self.tails.retain(|k, t| {
            let keep = wanted_in(wanted, k);
            if !keep {
                freed += t.text.len();
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Whether nobody reads any log now (nothing to ask of agents).
    pub fn is_idle(&self) -> bool {
        self.wanted_jobs().next().is_none() && self.wanted_sandboxes().next().is_none()
    }

    /// Jobs someone reads now.
    pub fn wanted_jobs(&self) -> impl Iterator<Item = u64> + '_ {
        self.wanted.keys().filter_map(|i| match i {
            Interest::Job(job) => Some(*job),
            Interest::Sandbox { .. } => None,
        })
    }

    /// Sandboxes someone reads now: (batch, index).
    pub fn wanted_sandboxes(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.wanted.keys().filter_map(|i| match i {
            Interest::Sandbox { batch, index } => Some((*batch, *index)),
            Interest::Job(_) => None,
        })
    }

    /// Where the server's copy of a task's log ends (0: it has none).
    pub fn next_of(&self, task: &TaskKey) -> u64 {
        self.tails.get(task).map_or(0, |t| t.next)
    }

    /// Bytes of text held in all tails.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes a chunk from the node that runs its task (`assigned` says whether it does). A
    /// chunk that does not continue the tail (stale, out of order) is ignored without error:
    /// the next heartbeat answer asks again from the tail's end.
    pub fn ingest(&mut self, c: Chunk, assigned: bool, now: Instant) -> Result<(), ChunkRefused> {
        let TaskKey { job, run, rank } = c.task;
        if !wanted_in(&self.wanted, &c.task) {
            return Err(ChunkRefused::NotWanted(job));
        }
        if !assigned {
            return Err(ChunkRefused::NotAssigned { job, run, rank });
        }
        let text = c.data.len();
        if c.len > MAX_CHUNK_BYTES || (text as u64) > c.len.saturating_mul(3) {
            return Err(ChunkRefused::BadLength { len: c.len, text });
        }
        let end = c.offset.checked_add(c.len).ok_or(ChunkRefused::Overflow {
            offset: c.offset,
            len: c.len,
        })?;
        let tail = self.tails.entry(c.task).or_insert_with(|| Tail {
            start: 0,
            next: 0,
            text: String::new(),
            fed: now,
        });
        if c.offset != tail.next {
            return Ok(());
        }
        let before = tail.text.len();
        tail.text.push_str(&c.data);
        tail.next = end;
        tail.fed = now;
        if tail.text.len() > TAIL_BYTES {
            let mut cut = tail.text.len() - TAIL_BYTES;
            while !tail.text.is_char_boundary(cut) {
                cut += 1;
            }
            tail.text.drain(..cut);
        }
        tail.start = tail.next.saturating_sub(tail.text.len() as u64);
        let after = tail.text.len();
        self.bytes = self.bytes + after - before;
        self.evict(c.task);
        Ok(())
    }

    /// Drops the least recently fed tails (but `keep`) until all fit the budget, then `keep`'s
    /// own oldest text if it alone is over.
    fn evict(&mut self, keep: TaskKey) {
        while self.bytes > self.budget {
            let oldest = self
                .tails
                .iter()
                .filter(|(k, _)| **k != keep)
                .min_by_key(|(_, t)| t.fed)
                .map(|(k, _)| *k);
            match oldest.and_then(|k| self.tails.remove(&k)) {
                Some(t) => self.bytes -= t.text.len(),
                None => {
                    let over = self.bytes - self.budget;
                    if let Some(t) = self.tails.get_mut(&keep) {
                        let mut cut = over.min(t.text.len());
                        while !t.text.is_char_boundary(cut) {
                            cut += 1;
                        }
                        t.text.drain(..cut);
                        t.start = t.next.saturating_sub(t.text.len() as u64);
                        self.bytes -= cut;
                    }
                    break;
                }
            }
        }
    }

    /// A task's log from offset `from` (clamped to what the server has).
    pub fn view(&self, task: &TaskKey, from: u64) -> TailView {
        let Some(t) = self.tails.get(task) else {
            return TailView {
                from: 0,
                next: 0,
                data: String::new(),
            };
        };
        let from = from.clamp(t.start, t.next);
        let mut skip = usize::try_from(from - t.start)
            .unwrap_or(usize::MAX)
            .min(t.text.len());
        while !t.text.is_char_boundary(skip) {
            skip += 1;
        }
        TailView {
            from,
            next: t.next,
            data: t.text[skip..].to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const TASK: TaskKey = TaskKey {
        job: 7,
        run: 0,
        rank: 0,
    };

    fn chunk(offset: u64, len: u64, data: &str) -> Chunk {
        Chunk {
            task: TASK,
            offset,
            len,
            data: data.into(),
        }
    }

    #[test]
    fn a_chunk_that_does_not_account_for_its_text_is_refused_and_reads_never_wrap() {
        let now = Instant::now();
        let mut logs = LogTails::default();
        logs.want(7, now);
        // The attack: a zero-length chunk with text made the tail's start wrap, and every read
        // of the job's logs then panicked.
        let e = logs.ingest(chunk(0, 0, "evil"), true, now).unwrap_err();
        assert!(matches!(e, ChunkRefused::BadLength { .. }), "{e}");
        logs.ingest(chunk(0, 6, "hello\n"), true, now).unwrap();
        assert_eq!(logs.view(&TASK, 0).data, "hello\n");
        assert_eq!(logs.view(&TASK, 3).data, "lo\n");
        assert_eq!(logs.view(&TASK, u64::MAX).next, 6);
        assert!(matches!(
            logs.ingest(chunk(u64::MAX, 2, "ab"), true, now),
            Err(ChunkRefused::Overflow { .. })
        ));
        // Unsolicited or misrouted chunks are refused.
        assert_eq!(
            logs.ingest(
                Chunk {
                    task: TaskKey { job: 8, ..TASK },
                    ..chunk(0, 1, "x")
                },
                true,
                now
            ),
            Err(ChunkRefused::NotWanted(8))
        );
        assert!(matches!(
            logs.ingest(chunk(6, 1, "x"), false, now),
            Err(ChunkRefused::NotAssigned { .. })
        ));
        assert_eq!(logs.view(&TASK, 0).data, "hello\n");
    }

    #[test]
    fn tails_stay_within_the_budget_and_go_when_nobody_reads() {
        let now = Instant::now();
        let mut logs = LogTails::with_budget(1000);
        logs.want(7, now);
        for rank in 0..5u32 {
            let task = TaskKey { rank, ..TASK };
            let later = now + Duration::from_millis(u64::from(rank));
            logs.ingest(
                Chunk {
                    task,
                    offset: 0,
                    len: 400,
                    data: "x".repeat(400),
                },
                true,
                later,
            )
            .unwrap();
            assert!(logs.bytes() <= 1000, "{}", logs.bytes());
        }
        // The most recently fed tails are kept.
        assert_eq!(logs.view(&TaskKey { rank: 4, ..TASK }, 0).data.len(), 400);
        assert_eq!(logs.view(&TaskKey { rank: 0, ..TASK }, 0).data.len(), 0);
        logs.expire(now + INTEREST + Duration::from_secs(1));
        assert_eq!(logs.bytes(), 0);
        assert_eq!(logs.wanted_jobs().count(), 0);
    }

    #[test]
    fn reading_one_sandbox_asks_for_that_one_only() {
        let now = Instant::now();
        let mut logs = LogTails::default();
        assert!(logs.want_sandbox(9, 2, now));
        assert!(
            !logs.want_sandbox(9, 2, now),
            "already wanted: no new wake-up"
        );
        assert_eq!(logs.wanted_sandboxes().collect::<Vec<_>>(), [(9, 2)]);
        assert_eq!(logs.wanted_jobs().count(), 0);
        let sandbox = |rank| Chunk {
            task: TaskKey {
                job: 9,
                run: 0,
                rank,
            },
            offset: 0,
            len: 3,
            data: "hi\n".into(),
        };
        logs.ingest(sandbox(2), true, now).unwrap();
        assert_eq!(
            logs.ingest(sandbox(1), true, now),
            Err(ChunkRefused::NotWanted(9)),
            "its neighbour's log is not wanted"
        );
        assert_eq!(
            logs.view(
                &TaskKey {
                    job: 9,
                    run: 0,
                    rank: 2
                },
                0
            )
            .data,
            "hi\n"
        );
        logs.expire(now + INTEREST + Duration::from_secs(1));
        assert_eq!(logs.bytes(), 0);
        assert_eq!(logs.wanted_sandboxes().count(), 0);
    }

    proptest! {
        /// Whatever agents send, reads never panic, a tail's start never passes its end, and
        /// the budget holds.
        #[test]
        fn hostile_chunks_never_break_the_tails(
            chunks in proptest::collection::vec(
                (0u64..3000, 0u64..2000, "\\PC{0,600}", 0u32..3, any::<bool>()),
                0..40,
            ),
            reads in proptest::collection::vec((0u32..3, any::<u64>()), 0..10),
        ) {
            let now = Instant::now();
            let mut logs = LogTails::with_budget(4096);
            logs.want(7, now);
            for (offset, len, data, rank, assigned) in chunks {
                let c = Chunk { task: TaskKey { rank, ..TASK }, offset, len, data };
                let _ = logs.ingest(c, assigned, now);
                prop_assert!(logs.bytes() <= 4096);
            }
            for (rank, from) in reads {
                let v = logs.view(&TaskKey { rank, ..TASK }, from);
                prop_assert!(v.from <= v.next);
            }
        }
    }
}
