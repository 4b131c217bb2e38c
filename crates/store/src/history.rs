//! The history table: one row per workload (its summary, as the server encodes it), written in
//! the same transaction as the journal record that ended it, and by compaction. Beside the
//! opaque body each row carries the columns queries filter and add up by ([`HistoryIndex`]):
//! kind, tenant, state, name, submit and end times, GPU-seconds and cost. Pages are read by
//! key with filters ([`HistoryFilter`]); usage is summed per tenant per day or week of the end
//! ([`UsageQuery`]) by the database, not by reading every row.

use crate::{Journal, Reader, Request, StoreError};
use rusqlite::types::Value as SqlValue;

/// The schema version from which history rows carry their index columns.
pub const HISTORY_INDEXED_SINCE: u32 = 3;

/// What queries read of a workload's row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryIndex {
    /// job, batch or service.
    pub kind: String,
    /// Its tenant's name.
    pub tenant: String,
    /// Its state when written (finished, failed, cancelled, running...).
    pub state: String,
    /// Its name.
    pub name: String,
    /// When it was submitted (Unix seconds).
    pub submitted_at: u64,
    /// When it ended (`None`: still live when written).
    pub ended_at: Option<u64>,
    /// GPU-seconds it held.
    pub gpu_seconds: u64,
    /// What it cost, in millionths of a USD.
    pub cost_micro_usd: u64,
}

/// One row to write: its key (replacing a row of the same key), body and index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    /// The workload's key.
    pub key: u64,
    /// Its summary, as the caller encodes it.
    pub body: Vec<u8>,
    /// What queries filter by.
    pub index: HistoryIndex,
}

/// Which rows a history page holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Keys above this one.
    pub after: u64,
    /// At most this many.
    pub limit: usize,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// Only in this state.
    pub state: Option<String>,
    /// Only with this name.
    pub name: Option<String>,
    /// Only those that ended at or after this (Unix seconds).
    pub ended_since: Option<u64>,
    /// Only those that ended before this.
    pub ended_until: Option<u64>,
}

/// What usage is summed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageQuery {
    /// Length of a period in seconds (a day, a week), periods aligned to `origin`.
    pub period_s: u64,
    /// Where periods start (Unix seconds; a Monday 00:00 UTC for weeks).
    pub origin: u64,
    /// Work that ended at or after this.
    pub since: u64,
    /// Work that ended before this.
    pub until: u64,
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// Only this kind (job, batch).
    pub kind: Option<String>,
}

/// One tenant's usage in one period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// The tenant.
    pub tenant: String,
    /// The period's start (Unix seconds).
    pub period_start: u64,
    /// Workloads that ended in it.
    pub count: u64,
    /// Their GPU-seconds.
    pub gpu_seconds: u64,
    /// Their cost, millionths of a USD.
    pub cost_micro_usd: u64,
}

/// A query and its parameters, written once for both backends (`?N` for SQLite, `$N` for
/// PostgreSQL).
struct Sql {
    text: String,
    params: Vec<SqlValue>,
    postgres: bool,
}

impl Sql {
    fn new(postgres: bool, head: &str) -> Sql {
        Sql {
            text: head.to_string(),
            params: Vec::new(),
            postgres,
        }
    }

    /// Adds ` AND <column> <op> <param>`.
    fn and(&mut self, column: &str, op: &str, value: SqlValue) {
        self.params.push(value);
        let n = self.params.len();
        let mark = if self.postgres {
            format!("${n}")
        } else {
            format!("?{n}")
        };
        self.text.push_str(&format!(" AND {column} {op} {mark}"));
    }

    fn push(&mut self, tail: &str) {
        self.text.push_str(tail);
    }

    fn param(&mut self, value: SqlValue) -> String {
        self.params.push(value);
        let n = self.params.len();
        if self.postgres {
            format!("${n}")
        } else {
            format!("?{n}")
        }
    }
}

fn int(v: u64) -> SqlValue {
    SqlValue::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

fn text(v: &str) -> SqlValue {
    SqlValue::Text(v.to_string())
}

fn filter_sql(f: &HistoryFilter, postgres: bool) -> Sql {
    let mut q = Sql::new(
        postgres,
        "SELECT id, body FROM history WHERE kind IS NOT NULL",
    );
    q.and("id", ">", int(f.after));
    if let Some(k) = &f.kind {
        q.and("kind", "=", text(k));
    }
    if let Some(t) = &f.tenant {
        q.and("tenant", "=", text(t));
    }
    if let Some(s) = &f.state {
        q.and("state", "=", text(s));
    }
    if let Some(n) = &f.name {
        q.and("name", "=", text(n));
    }
    if let Some(s) = f.ended_since {
        q.and("ended_at", ">=", int(s));
    }
    if let Some(u) = f.ended_until {
        q.and("ended_at", "<", int(u));
    }
    let limit = q.param(int(f.limit as u64));
    q.push(&format!(" ORDER BY id LIMIT {limit}"));
    q
}

fn usage_sql(u: &UsageQuery, postgres: bool) -> Sql {
    let mut q = Sql::new(postgres, "");
    let origin = q.param(int(u.origin));
    let period = q.param(int(u.period_s.max(1)));
    q.text = format!(
        "SELECT tenant, (ended_at - {origin}) / {period} AS bucket, COUNT(*), \
         CAST(COALESCE(SUM(gpu_seconds), 0) AS BIGINT), \
         CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) \
         FROM history WHERE ended_at IS NOT NULL AND kind IS NOT NULL"
    );
    q.and("ended_at", ">=", int(u.since.max(u.origin)));
    q.and("ended_at", "<", int(u.until));
    if let Some(t) = &u.tenant {
        q.and("tenant", "=", text(t));
    }
    if let Some(k) = &u.kind {
        q.and("kind", "=", text(k));
    }
    q.push(" GROUP BY tenant, bucket ORDER BY bucket, tenant");
    q
}

/// The Postgres parameters of a query, as the client takes them.
fn pg_params(params: &[SqlValue]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn postgres::types::ToSql + Sync> {
            match p {
                SqlValue::Integer(i) => Box::new(*i),
                SqlValue::Text(t) => Box::new(t.clone()),
                _ => Box::new(Option::<i64>::None),
            }
        })
        .collect()
}

/// Writes history rows in the writer's transaction (SQLite).
pub(crate) fn put_sqlite(
    tx: &rusqlite::Transaction<'_>,
    rows: &[HistoryRow],
) -> Result<(), rusqlite::Error> {
    let mut put = tx.prepare_cached(
        "INSERT OR REPLACE INTO history \
         (id, body, kind, tenant, state, name, submitted_at, ended_at, gpu_seconds, cost_micro_usd) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for r in rows {
        let i = &r.index;
        put.execute(rusqlite::params![
            int(r.key),
            r.body,
            i.kind,
            i.tenant,
            i.state,
            i.name,
            int(i.submitted_at),
            i.ended_at.map(int),
            int(i.gpu_seconds),
            int(i.cost_micro_usd),
        ])?;
    }
    Ok(())
}

/// Writes history rows in the writer's transaction (PostgreSQL).
pub(crate) fn put_postgres(
    tx: &mut postgres::Transaction<'_>,
    rows: &[HistoryRow],
) -> Result<(), postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let put = tx.prepare(
        "INSERT INTO history \
         (id, body, kind, tenant, state, name, submitted_at, ended_at, gpu_seconds, cost_micro_usd) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, kind = EXCLUDED.kind, \
         tenant = EXCLUDED.tenant, state = EXCLUDED.state, name = EXCLUDED.name, \
         submitted_at = EXCLUDED.submitted_at, ended_at = EXCLUDED.ended_at, \
         gpu_seconds = EXCLUDED.gpu_seconds, cost_micro_usd = EXCLUDED.cost_micro_usd",
    )?;
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for r in rows {
        let i = &r.index;
        tx.execute(
            &put,
            &[
                &n(r.key),
                &r.body,
                &i.kind,
                &i.tenant,
                &i.state,
                &i.name,
                &n(i.submitted_at),
                &i.ended_at.map(n),
                &n(i.gpu_seconds),
                &n(i.cost_micro_usd),
            ],
        )?;
    }
    Ok(())
}

impl Journal {
    /// A page of history rows (key, body) that pass `filter`, in key order.
    pub fn query_history(&self, filter: &HistoryFilter) -> Result<Vec<crate::Record>, StoreError> {
        let mut reader = self.reader.lock().map_err(|_| StoreError::Closed)?;
        let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        match &mut *reader {
            Reader::Sqlite(conn) => {
                let q = filter_sql(filter, false);
                let mut stmt = conn.prepare_cached(&q.text)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(q.params.iter()), |r| {
                    Ok(crate::Record {
                        seq: to_u64(r.get(0)?),
                        body: r.get(1)?,
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Reader::Postgres(c) => {
                let q = filter_sql(filter, true);
                let params = pg_params(&q.params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref()).collect();
                Ok(c.query(q.text.as_str(), &refs)?
                    .iter()
                    .map(|r| crate::Record {
                        seq: to_u64(r.get(0)),
                        body: r.get(1),
                    })
                    .collect())
            }
            Reader::Closed => Err(StoreError::Closed),
        }
    }

    /// Usage per tenant per period: workloads that ended in it, their GPU-seconds and cost.
    pub fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let mut reader = self.reader.lock().map_err(|_| StoreError::Closed)?;
        let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        let row = |tenant: String, bucket: i64, count: i64, gpu: i64, cost: i64| UsageRow {
            tenant,
            period_start: query
                .origin
                .saturating_add(to_u64(bucket).saturating_mul(query.period_s)),
            count: to_u64(count),
            gpu_seconds: to_u64(gpu),
            cost_micro_usd: to_u64(cost),
        };
        match &mut *reader {
            Reader::Sqlite(conn) => {
                let q = usage_sql(query, false);
                let mut stmt = conn.prepare_cached(&q.text)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(q.params.iter()), |r| {
                    Ok(row(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Reader::Postgres(c) => {
                let q = usage_sql(query, true);
                let params = pg_params(&q.params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref()).collect();
                Ok(c.query(q.text.as_str(), &refs)?
                    .iter()
                    // SUM of BIGINT is NUMERIC in PostgreSQL: the query casts it back.
                    .map(|r| row(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                    .collect())
            }
            Reader::Closed => Err(StoreError::Closed),
        }
    }

    /// Writes history rows (replacing rows of the same keys), durable when the answer comes.
    pub fn put_history(&self, rows: Vec<HistoryRow>) -> crate::Pending<()> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(Request::History { rows, done });
        crate::Pending(rx)
    }

    /// The schema version the store had when it was opened (before this build's migrations):
    /// below [`HISTORY_INDEXED_SINCE`], workloads that ended earlier have no indexed row yet.
    pub fn schema_found(&self) -> u32 {
        self.schema_found
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn filters_become_one_query_per_backend_with_numbered_parameters() {
        let f = HistoryFilter {
            after: 5,
            limit: 10,
            tenant: Some("t".into()),
            ended_since: Some(100),
            ..Default::default()
        };
        let q = filter_sql(&f, true);
        assert!(
            q.text
                .contains("id > $1 AND tenant = $2 AND ended_at >= $3"),
            "{}",
            q.text
        );
        assert!(q.text.ends_with("ORDER BY id LIMIT $4"), "{}", q.text);
        let q = filter_sql(&f, false);
        assert!(q.text.contains("tenant = ?2"), "{}", q.text);
        assert_eq!(q.params.len(), 4);
    }
}
