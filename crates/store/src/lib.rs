//! Stargrid's durable state: an append-only journal of events plus snapshots.
//!
//! The server keeps its intent as a sequence of events; state after a restart is the latest
//! snapshot plus a replay of the events after it. This crate stores those events as opaque
//! bytes (the server decides their format) and promises three things:
//!
//! - **Durable before acknowledged.** [`Journal::append`] answers only once its records are
//!   committed with `synchronous=FULL` in WAL mode, so a crash (even `kill -9` or a power cut
//!   after the answer) loses nothing that was acknowledged.
//! - **Order.** Records get consecutive sequence numbers in the order `append` was called, across
//!   all callers.
//! - **Group commit.** One writer thread takes every request waiting when it is free and commits
//!   them in one transaction: a thousand concurrent appends cost a few fsyncs, not a thousand.
//!
//! Two backends, chosen by URL: SQLite (embedded, a file in the data directory; the default) and
//! PostgreSQL (`postgres://…`, for a control plane whose state lives on a shared database server).
//! Both pass the same tests. One server writes a journal at a time: [`Journal::open_as_writer`]
//! claims it (a PostgreSQL advisory lock on the writer's own connection, an exclusive lock on
//! the SQLite file's `.lock`), and a second server waits as a standby until the claim is
//! released. [`Journal::rewrite`] replaces records' bodies in one transaction, for a format
//! upgrade that must not change what the records mean.

use rusqlite::{params, Connection, OptionalExtension};

mod history;
mod pg;
mod sqlite;

pub use history::{
    HistoryFilter, HistoryIndex, HistoryRow, UsageQuery, UsageRow, HISTORY_INDEXED_SINCE,
};

pub use pg::fresh_database;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
mod writer;
use std::thread::JoinHandle;
use writer::write_loop;
pub use writer::WriterStats;

/// Errors at the store's boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL or path names no backend this build has.
    #[error("store URL '{url}': {reason}")]
    BadUrl {
        /// What was given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The database could not be opened or migrated.
    #[error("store {path}: {reason}")]
    Open {
        /// The database file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A read or write failed.
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A PostgreSQL read or write failed.
    #[error("store: {0}")]
    Postgres(#[from] postgres::Error),
    /// The writer thread is gone (the journal was closed or a commit failed before).
    #[error("store: the journal is closed")]
    Closed,
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its position, from 1, without gaps.
    pub seq: u64,
    /// The event, as the server encoded it.
    pub body: Vec<u8>,
}

/// The (key, body) tables read a page at a time.
#[derive(Clone, Copy)]
enum Rows {
    /// Records by sequence number.
    Journal,
    /// Workload summaries by key.
    History,
}

impl Rows {
    fn sqlite(self) -> &'static str {
        match self {
            Rows::Journal => "SELECT seq, body FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            Rows::History => "SELECT id, body FROM history WHERE id > ?1 ORDER BY id LIMIT ?2",
        }
    }

    fn postgres(self) -> &'static str {
        match self {
            Rows::Journal => "SELECT seq, body FROM journal WHERE seq > $1 ORDER BY seq LIMIT $2",
            Rows::History => "SELECT id, body FROM history WHERE id > $1 ORDER BY id LIMIT $2",
        }
    }
}

/// Most requests one commit takes (they are all waiting already; this bounds one transaction).
const MAX_GROUP: usize = 4096;

enum Request {
    Append {
        bodies: Vec<Vec<u8>>,
        /// History rows of workloads these records ended, in the same transaction.
        history: Vec<HistoryRow>,
        done: tokio::sync::oneshot::Sender<Result<Range<u64>, StoreError>>,
    },
    Snapshot {
        seq: u64,
        body: Vec<u8>,
        done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
    Rewrite {
        records: Vec<Record>,
        done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
    Compact {
        before: u64,
        history: Vec<HistoryRow>,
        done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
    History {
        rows: Vec<HistoryRow>,
        done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
}

/// An append on its way to disk: wait for it (blocking) or await it.
#[must_use = "an append is durable only once its answer has arrived"]
pub struct Pending<T>(tokio::sync::oneshot::Receiver<Result<T, StoreError>>);

impl<T> Pending<T> {
    /// Blocks until the records are durable; returns what the commit answered.
    pub fn wait(self) -> Result<T, StoreError> {
        self.0.blocking_recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Waits, without blocking a runtime thread, until the records are durable.
    pub async fn done(self) -> Result<T, StoreError> {
        self.0.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// The journal: one writer thread, and a reader connection for replay and inspection.
pub struct Journal {
    path: PathBuf,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Mutex<Reader>,
    /// Files made private when the journal was opened.
    fixed_permissions: Vec<String>,
    /// What the writer committed.
    stats: Arc<WriterStats>,
    /// The schema version found at open, before migrations.
    schema_found: u32,
}

/// The connection replay and inspection read through.
enum Reader {
    Sqlite(Connection),
    Postgres(Box<postgres::Client>),
    /// The journal was dropped.
    Closed,
}

/// The writer thread's connection.
enum Writer {
    /// The connection, and the lock file held while it writes.
    Sqlite {
        conn: Connection,
        _lock: std::fs::File,
    },
    Postgres(Box<postgres::Client>),
}

impl Writer {
    fn commit(&mut self, group: &[Request], last: u64) -> Result<u64, String> {
        match self {
            Writer::Sqlite { conn, .. } => {
                sqlite::commit(conn, group, last).map_err(|e| e.to_string())
            }
            Writer::Postgres(c) => pg::commit(c, group, last).map_err(|e| e.to_string()),
        }
    }
}

/// Where a store URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (the URL as given).
    Postgres(String),
}

/// Reads a store URL: `sqlite:PATH`, `sqlite://PATH` or a plain path are SQLite files;
/// `postgres://…` and `postgresql://…` are PostgreSQL databases.
pub fn parse_url(url: &str) -> Result<Backend, StoreError> {
    let bad = |reason: &str| StoreError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Backend::Postgres(url.to_string()));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        return Err(bad("no file path"));
    }
    if let Some((scheme, _)) = path.split_once("://") {
        return Err(bad(&format!(
            "unknown scheme '{scheme}' (sqlite:PATH, a plain path, or postgres://USER:PASSWORD@HOST/DB)"
        )));
    }
    Ok(Backend::Sqlite(PathBuf::from(path)))
}

/// A store URL fit to print: a PostgreSQL password is masked.
pub fn display_url(url: &str) -> String {
    match parse_url(url) {
        Ok(Backend::Postgres(u)) => pg::redact(&u),
        _ => url.to_string(),
    }
}

impl Journal {
    /// Opens (creating and migrating as needed) the journal at `url` (see [`parse_url`]).
    pub fn open(url: &str) -> Result<Journal, StoreError> {
        Journal::open_as_writer(url, &mut || {})
    }

    /// Opens the journal as its only writer: while another process writes it (another server
    /// on the same SQLite file or PostgreSQL database), waits for that one to stop, calling
    /// `on_wait` once. The claim holds as long as the journal is open: for SQLite an exclusive
    /// lock on `<file>.lock`, for PostgreSQL an advisory lock held by the writer's own
    /// connection, so that no record is ever written by a server that lost its claim (a lost
    /// connection fails the next commit, and the server stops).
    pub fn open_as_writer(url: &str, on_wait: &mut dyn FnMut()) -> Result<Journal, StoreError> {
        let mut waited = false;
        let mut wait = || {
            if !waited {
                on_wait();
                waited = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        let (path, writer, reader, last, fixed, schema_found) = match parse_url(url)? {
            Backend::Sqlite(path) => {
                let lock_path = PathBuf::from(format!("{}.lock", path.display()));
                let lock_error = |e: std::io::Error| StoreError::Open {
                    path: lock_path.display().to_string(),
                    reason: e.to_string(),
                };
                let lock = {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .mode(0o600)
                        .open(&lock_path)
                        .map_err(lock_error)?
                };
                loop {
                    match lock.try_lock() {
                        Ok(()) => break,
                        Err(std::fs::TryLockError::WouldBlock) => wait(),
                        Err(std::fs::TryLockError::Error(e)) => return Err(lock_error(e)),
                    }
                }
                let fixed = sqlite::private_files(&path)?;
                let mut conn = sqlite::open_connection(&path)?;
                let found = sqlite::migrate(&mut conn, &path)?;
                let last: u64 = conn
                    .query_row("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map(|v| v as u64)?;
                let reader = sqlite::open_connection(&path)?;
                (
                    path,
                    Writer::Sqlite { conn, _lock: lock },
                    Reader::Sqlite(reader),
                    last,
                    fixed,
                    found,
                )
            }
            Backend::Postgres(url) => {
                let mut conn = pg::connect(&url)?;
                while !pg::try_claim(&mut conn, &url)? {
                    wait();
                }
                let found = pg::migrate(&mut conn, &url)?;
                let last = pg::last_seq(&mut conn)?;
                let fixed = Vec::new();
                let reader = pg::connect(&url)?;
                (
                    PathBuf::from(pg::redact(&url)),
                    Writer::Postgres(Box::new(conn)),
                    Reader::Postgres(Box::new(reader)),
                    last,
                    fixed,
                    found,
                )
            }
        };
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let counted = stats.clone();
        let writer = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || write_loop(writer, rx, last, &counted))
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Journal {
            path,
            requests: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            reader: Mutex::new(reader),
            fixed_permissions: fixed,
            stats,
            schema_found,
        })
    }

    /// Files of the journal that others could read when it was opened, and were made private
    /// (mode 0600): the caller says so.
    pub fn fixed_permissions(&self) -> &[String] {
        &self.fixed_permissions
    }

    /// What the writer committed since the journal was opened.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, request: Request) {
        let sender = self.requests.lock().ok().and_then(|g| g.clone());
        if let Some(s) = sender {
            // A send error drops the request and its answer channel: the caller sees Closed.
            let _ = s.send(request);
        }
    }

    /// Appends records, in order, after everything appended before; the answer (their sequence
    /// numbers) arrives once they are durable. Calls made one after another (on one thread, or
    /// ordered by a lock) are journaled in that order.
    pub fn append(&self, bodies: Vec<Vec<u8>>) -> Pending<Range<u64>> {
        self.append_with_history(bodies, Vec::new())
    }

    /// Appends records as [`Journal::append`] does, and writes `history` rows (the workloads
    /// they ended) in the same transaction: a row is durable exactly when its record is.
    pub fn append_with_history(
        &self,
        bodies: Vec<Vec<u8>>,
        history: Vec<HistoryRow>,
    ) -> Pending<Range<u64>> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(Request::Append {
            bodies,
            history,
            done,
        });
        Pending(rx)
    }

    /// Saves a snapshot of the state after record `seq` (replay then starts after it).
    pub fn save_snapshot(&self, seq: u64, body: Vec<u8>) -> Pending<()> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(Request::Snapshot { seq, body, done });
        Pending(rx)
    }

    /// Replaces the bodies of existing records, all in one transaction, and drops every
    /// snapshot (they were taken of the old records). For a format upgrade: the records must
    /// mean what they meant before.
    pub fn rewrite(&self, records: Vec<Record>) -> Pending<()> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(Request::Rewrite { records, done });
        Pending(rx)
    }

    /// Compaction: writes `history` (one summary per workload, by id, replacing older ones) and
    /// drops every record before `before`, in one transaction. The caller makes sure a
    /// snapshot at `before` or later is durable first (appended before this call, the writer
    /// commits it first). The record at `before` stays, so the sequence goes on from it.
    pub fn compact(&self, before: u64, history: Vec<HistoryRow>) -> Pending<()> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(Request::Compact {
            before,
            history,
            done,
        });
        Pending(rx)
    }

    /// Up to `limit` workload summaries with an id above `after`, in id order.
    pub fn read_history(&self, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.read_rows(Rows::History, after, limit)
    }

    /// The sequence number of the first record still in the journal (0: none).
    pub fn first_seq(&self) -> Result<u64, StoreError> {
        let mut reader = self.reader.lock().map_err(|_| StoreError::Closed)?;
        match &mut *reader {
            Reader::Sqlite(conn) => Ok(conn.query_row(
                "SELECT COALESCE(MIN(seq), 0) FROM journal",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64),
            Reader::Postgres(c) => pg::first_seq(c),
            Reader::Closed => Err(StoreError::Closed),
        }
    }

    /// The latest snapshot: the sequence number it covers and its body.
    pub fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let mut reader = self.reader.lock().map_err(|_| StoreError::Closed)?;
        match &mut *reader {
            Reader::Sqlite(conn) => Ok(conn
                .query_row(
                    "SELECT seq, body FROM snapshots ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?)),
                )
                .optional()?),
            Reader::Postgres(c) => pg::latest_snapshot(c),
            Reader::Closed => Err(StoreError::Closed),
        }
    }

    /// Up to `limit` durable records after sequence number `after`, in order.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.read_rows(Rows::Journal, after, limit)
    }

    /// Up to `limit` rows of a (key, body) table with a key above `after`, in key order.
    fn read_rows(&self, rows: Rows, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut reader = self.reader.lock().map_err(|_| StoreError::Closed)?;
        let limit = limit.min(i64::MAX as usize) as i64;
        match &mut *reader {
            Reader::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(rows.sqlite())?;
                let found = stmt.query_map(params![after as i64, limit], |r| {
                    Ok(Record {
                        seq: r.get::<_, i64>(0)? as u64,
                        body: r.get(1)?,
                    })
                })?;
                Ok(found.collect::<Result<Vec<_>, _>>()?)
            }
            Reader::Postgres(c) => pg::read_rows(c, rows.postgres(), after, limit),
            Reader::Closed => Err(StoreError::Closed),
        }
    }

    /// The sequence number of the last durable record (0: none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let mut reader = self.reader.lock().map_err(|_| StoreError::Closed)?;
        match &mut *reader {
            Reader::Sqlite(conn) => Ok(conn.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM journal",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64),
            Reader::Postgres(c) => pg::last_seq(c),
            Reader::Closed => Err(StoreError::Closed),
        }
    }

    /// Stops the writer after it has committed everything already appended.
    pub fn close(&self) {
        if let Ok(mut g) = self.requests.lock() {
            g.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
        // PostgreSQL's blocking client closes its connection on a runtime of its own, which
        // cannot start on a thread that drives one (a server dropped by its async task): it is
        // closed on a thread of its own.
        if let Ok(reader) = self.reader.get_mut() {
            if let Reader::Postgres(client) = std::mem::replace(reader, Reader::Closed) {
                let _ = std::thread::spawn(move || drop(client)).join();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
