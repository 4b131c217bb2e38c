//! The SQLite backend (the default): a file in the data directory, in WAL mode with
//! `synchronous=FULL`, its schema versioned by `PRAGMA user_version`, its files the owner's
//! alone.

use crate::{Request, StoreError};
use rusqlite::{params, Connection};
use std::path::Path;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: the journal and its snapshots.
    "CREATE TABLE journal (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
     CREATE TABLE snapshots (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);",
    // 2: a summary per workload that outlives compaction (the audit trail's short form).
    "CREATE TABLE history (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
    // 3: history rows indexed for queries (rows of older builds are indexed by the server).
    "ALTER TABLE history ADD COLUMN kind TEXT;
     ALTER TABLE history ADD COLUMN tenant TEXT;
     ALTER TABLE history ADD COLUMN state TEXT;
     ALTER TABLE history ADD COLUMN name TEXT;
     ALTER TABLE history ADD COLUMN submitted_at INTEGER;
     ALTER TABLE history ADD COLUMN ended_at INTEGER;
     ALTER TABLE history ADD COLUMN gpu_seconds INTEGER;
     ALTER TABLE history ADD COLUMN cost_micro_usd INTEGER;
     CREATE INDEX history_ended ON history (ended_at, tenant, kind, gpu_seconds, cost_micro_usd);
     CREATE INDEX history_tenant_ended ON history (tenant, ended_at);
     CREATE INDEX history_name ON history (name);
     CREATE INDEX history_tenant_id ON history (tenant, id);",
];

/// The journal holds job environments (secrets among them): its file, WAL and shared-memory
/// files are the owner's alone. A new journal file is made with mode 0600 before SQLite opens
/// it (its WAL then inherits the mode); an existing one that group or others could read is made
/// private. Returns the files it had to fix.
pub(crate) fn private_files(path: &Path) -> Result<Vec<String>, StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |p: &Path, e: std::io::Error| StoreError::Open {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    if !path.exists() {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| err(path, e))?;
    }
    let mut fixed = Vec::new();
    let name = path.display().to_string();
    for file in [
        name.clone(),
        format!("{name}-wal"),
        format!("{name}-shm"),
        format!("{name}.lock"),
    ] {
        let p = Path::new(&file);
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| err(p, e))?;
            fixed.push(format!("{file} (was {:o})", mode & 0o777));
        }
    }
    Ok(fixed)
}

pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let err = |e: rusqlite::Error| StoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let conn = Connection::open(path).map_err(err)?;
    // WAL: readers never block the writer; FULL: a commit is on disk when it returns.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err)?;
    Ok(conn)
}

/// Applies the migrations this build has; returns the version found.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, StoreError> {
    let open_err = |reason: String| StoreError::Open {
        path: path.display().to_string(),
        reason,
    };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| open_err(e.to_string()))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(open_err(format!(
            "schema version {version} is newer than this build knows ({known}); use a newer stargrid"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(|e| open_err(e.to_string()))?;
        tx.execute_batch(sql)
            .map_err(|e| open_err(format!("migration {}: {e}", i + 1)))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(|e| open_err(e.to_string()))?;
        tx.commit().map_err(|e| open_err(e.to_string()))?;
    }
    Ok(u32::try_from(version).unwrap_or(0))
}

pub(crate) fn commit(
    conn: &mut Connection,
    group: &[Request],
    last: u64,
) -> Result<u64, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut seq = last;
    {
        let mut insert = tx.prepare_cached("INSERT INTO journal (seq, body) VALUES (?1, ?2)")?;
        let mut snap =
            tx.prepare_cached("INSERT OR REPLACE INTO snapshots (seq, body) VALUES (?1, ?2)")?;
        // Only the latest snapshot is read; older ones go.
        let mut prune = tx.prepare_cached("DELETE FROM snapshots WHERE seq < ?1")?;
        for r in group {
            match r {
                Request::Append {
                    bodies, history, ..
                } => {
                    for b in bodies {
                        seq += 1;
                        insert.execute(params![seq as i64, b])?;
                    }
                    crate::history::put_sqlite(&tx, history)?;
                }
                Request::History { rows, .. } => crate::history::put_sqlite(&tx, rows)?,
                Request::Snapshot { seq: at, body, .. } => {
                    snap.execute(params![*at as i64, body])?;
                    prune.execute(params![*at as i64])?;
                }
                Request::Rewrite { records, .. } => {
                    let mut update =
                        tx.prepare_cached("UPDATE journal SET body = ?2 WHERE seq = ?1")?;
                    for r in records {
                        update.execute(params![r.seq as i64, r.body])?;
                    }
                    tx.execute("DELETE FROM snapshots", [])?;
                }
                Request::Compact {
                    before, history, ..
                } => {
                    crate::history::put_sqlite(&tx, history)?;
                    tx.execute(
                        "DELETE FROM journal WHERE seq < ?1",
                        params![*before as i64],
                    )?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(seq)
}
