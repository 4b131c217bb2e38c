//! The PostgreSQL backend: the same tables as SQLite (`journal`, `snapshots`, `history`) and a
//! `stargrid_schema` row counting the migrations applied. Commits use PostgreSQL's default
//! `synchronous_commit = on`: durable when they return.

use crate::{Record, Request, StoreError};
use postgres::{Client, NoTls};

/// Migrations, in order (the count applied is in `stargrid_schema`).
const MIGRATIONS: &[&str] = &[
    // 1: the journal and its snapshots.
    "CREATE TABLE journal (seq BIGINT PRIMARY KEY, body BYTEA NOT NULL);
     CREATE TABLE snapshots (seq BIGINT PRIMARY KEY, body BYTEA NOT NULL);",
    // 2: a summary per workload that outlives compaction.
    "CREATE TABLE history (id BIGINT PRIMARY KEY, body BYTEA NOT NULL);",
    // 3: history rows indexed for queries (rows of older builds are indexed by the server).
    "ALTER TABLE history ADD COLUMN kind TEXT, ADD COLUMN tenant TEXT, ADD COLUMN state TEXT,
       ADD COLUMN name TEXT, ADD COLUMN submitted_at BIGINT, ADD COLUMN ended_at BIGINT,
       ADD COLUMN gpu_seconds BIGINT, ADD COLUMN cost_micro_usd BIGINT;
     CREATE INDEX history_ended ON history (ended_at, tenant, kind, gpu_seconds, cost_micro_usd);
     CREATE INDEX history_tenant_ended ON history (tenant, ended_at);
     CREATE INDEX history_name ON history (name);
     CREATE INDEX history_tenant_id ON history (tenant, id);",
];

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn open_error(url: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: redact(url),
        reason: reason.to_string(),
    }
}

pub(crate) fn connect(url: &str) -> Result<Client, StoreError> {
    Client::connect(url, NoTls).map_err(|e| open_error(url, e))
}

/// The advisory lock that marks a database's journal writer ("STAR").
const WRITER_LOCK: i64 = 0x5354_4152;

/// Claims the journal for this connection's session; false while another session holds it.
pub(crate) fn try_claim(c: &mut Client, url: &str) -> Result<bool, StoreError> {
    let row = c
        .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])
        .map_err(|e| open_error(url, e))?;
    Ok(row.get(0))
}

/// Applies the migrations this build has; returns the version found.
pub(crate) fn migrate(c: &mut Client, url: &str) -> Result<u32, StoreError> {
    let err = |e: postgres::Error| open_error(url, e);
    let mut tx = c.transaction().map_err(err)?;
    // One migrator at a time: two servers starting together take turns.
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS stargrid_schema (version INT NOT NULL);
         LOCK TABLE stargrid_schema IN EXCLUSIVE MODE;",
    )
    .map_err(err)?;
    let version: i32 = match tx
        .query_opt("SELECT version FROM stargrid_schema", &[])
        .map_err(err)?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO stargrid_schema (version) VALUES (0)", &[])
                .map_err(err)?;
            0
        }
    };
    let known = MIGRATIONS.len() as i32;
    if version > known {
        return Err(open_error(
            url,
            format!(
                "schema version {version} is newer than this build knows ({known}); use a newer stargrid"
            ),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql)
            .map_err(|e| open_error(url, format!("migration {}: {e}", i + 1)))?;
        tx.execute(
            "UPDATE stargrid_schema SET version = $1",
            &[&((i + 1) as i32)],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    Ok(u32::try_from(version).unwrap_or(0))
}

pub(crate) fn last_seq(c: &mut Client) -> Result<u64, StoreError> {
    let row = c.query_one("SELECT COALESCE(MAX(seq), 0) FROM journal", &[])?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Up to `limit` rows of `sql` (a keyed page query) with a key above `after`.
pub(crate) fn read_rows(
    c: &mut Client,
    sql: &str,
    after: u64,
    limit: i64,
) -> Result<Vec<Record>, StoreError> {
    let rows = c.query(sql, &[&(after as i64), &limit])?;
    Ok(rows
        .iter()
        .map(|r| Record {
            seq: r.get::<_, i64>(0) as u64,
            body: r.get(1),
        })
        .collect())
}

pub(crate) fn first_seq(c: &mut Client) -> Result<u64, StoreError> {
    let row = c.query_one("SELECT COALESCE(MIN(seq), 0) FROM journal", &[])?;
    Ok(row.get::<_, i64>(0) as u64)
}

pub(crate) fn latest_snapshot(c: &mut Client) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    Ok(c.query_opt(
        "SELECT seq, body FROM snapshots ORDER BY seq DESC LIMIT 1",
        &[],
    )?
    .map(|r| (r.get::<_, i64>(0) as u64, r.get(1))))
}

pub(crate) fn commit(c: &mut Client, group: &[Request], last: u64) -> Result<u64, postgres::Error> {
    let mut tx = c.transaction()?;
    let insert = tx.prepare("INSERT INTO journal (seq, body) VALUES ($1, $2)")?;
    let snap = tx.prepare(
        "INSERT INTO snapshots (seq, body) VALUES ($1, $2)
         ON CONFLICT (seq) DO UPDATE SET body = EXCLUDED.body",
    )?;
    let mut seq = last;
    for r in group {
        match r {
            Request::Append {
                bodies, history, ..
            } => {
                for b in bodies {
                    seq += 1;
                    tx.execute(&insert, &[&(seq as i64), b])?;
                }
                crate::history::put_postgres(&mut tx, history)?;
            }
            Request::History { rows, .. } => crate::history::put_postgres(&mut tx, rows)?,
            Request::Snapshot { seq: at, body, .. } => {
                tx.execute(&snap, &[&(*at as i64), body])?;
                // Only the latest snapshot is read; older ones go.
                tx.execute("DELETE FROM snapshots WHERE seq < $1", &[&(*at as i64)])?;
            }
            Request::Rewrite { records, .. } => {
                for r in records {
                    tx.execute(
                        "UPDATE journal SET body = $2 WHERE seq = $1",
                        &[&(r.seq as i64), &r.body],
                    )?;
                }
                tx.execute("DELETE FROM snapshots", &[])?;
            }
            Request::Compact {
                before, history, ..
            } => {
                crate::history::put_postgres(&mut tx, history)?;
                tx.execute("DELETE FROM journal WHERE seq < $1", &[&(*before as i64)])?;
            }
        }
    }
    tx.commit()?;
    Ok(seq)
}

/// Makes a fresh, empty database on the server that `admin_url` reaches and returns a URL to it
/// (for tests: every test gets its own journal).
pub fn fresh_database(admin_url: &str) -> Result<String, StoreError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "stargrid_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let mut admin = connect(admin_url)?;
    admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let base = match admin_url.rfind('/') {
        Some(i) if i > admin_url.find("://").map_or(0, |s| s + 2) => &admin_url[..i],
        _ => admin_url,
    };
    let (base, query) = match admin_url.split_once('?') {
        Some((_, q)) => (base.split('?').next().unwrap_or(base), format!("?{q}")),
        None => (base, String::new()),
    };
    Ok(format!("{base}/{name}{query}"))
}
