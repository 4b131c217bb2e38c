//! `stargrid bench history`: the history of finished work at scale. A store filled with a
//! million finished jobs' rows (as the server writes them: summaries with their index columns,
//! 100 tenants, 90 days), then a server on it answering `GET /v1/history` pages with filters and
//! `GET /v1/usage` sums over HTTP, each timed several times.

use crate::bench_live::{percentile, Loopback};
use anyhow::{Context, Result};
use clap::Args;
use server::journal::history::{SummaryV2, SUMMARY_FORMAT};
use std::time::{Duration, Instant};
use wire::client::{HistoryQuery, UsageQuery};
use wire::Client;

#[derive(Args)]
pub struct HistoryBenchArgs {
    /// Finished jobs in the history.
    #[arg(long, default_value_t = 1_000_000)]
    pub jobs: u64,
    /// Tenants they belong to.
    #[arg(long, default_value_t = 100)]
    pub tenants: u64,
    /// Days they ended over (up to now).
    #[arg(long, default_value_t = 90)]
    pub days: u64,
    /// Times each query is run.
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
    /// The store (default: an SQLite file in a temporary directory); a `postgres://` URL
    /// measures PostgreSQL (its database should be empty).
    #[arg(long)]
    pub store: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A small deterministic generator (the same history on every run).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Job `id`'s row: its tenant, a state (90 % finished, 7 % failed, 3 % cancelled), a size,
/// a wait and a run, ending within `days` before `now`.
fn row(id: u64, a: &HistoryBenchArgs, now: u64, mix: &mut Mix) -> store::HistoryRow {
    let span = a.days * 86_400;
    let ended = now - 1 - mix.next() % span;
    let run = 60 + mix.next() % (6 * 3600);
    let wait = mix.next() % 3600;
    let gpus = [4u64, 8, 64, 512][(mix.next() % 4) as usize];
    let (state, exit_code) = match mix.next() % 100 {
        0..=89 => ("finished", Some(0)),
        90..=96 => ("failed", Some(1)),
        _ => ("cancelled", None),
    };
    let nodes = (gpus / 4).min(4);
    SummaryV2 {
        v: SUMMARY_FORMAT,
        kind: "job".into(),
        id,
        name: format!("job-{id}"),
        tenant: format!("t{:03}", id % a.tenants.max(1)),
        state: state.into(),
        submitted_at: ended - run - wait,
        started_at: Some(ended - run),
        ended_at: Some(ended),
        exit_code,
        restarts: u32::from(mix.next().is_multiple_of(10)),
        size: gpus,
        nodes: (0..nodes)
            .map(|n| format!("nvl{:05}t{n:02}", id % 6944))
            .collect(),
        gpu_seconds: Some(gpus * run),
        lost_gpu_seconds: Some(0),
        cost_micro_usd: Some(gpus * run * 10_000_000 / 3600),
    }
    .row()
}

/// p50 and max of `repeats` runs of `f`, in milliseconds, and what the last one returned.
fn timed<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, f64, T)> {
    let mut ms = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        last = Some(f()?);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let max = ms.last().copied().unwrap_or(0.0);
    Ok((percentile(&ms, 0.5), max, last.context("no run")?))
}

pub fn run(a: &HistoryBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("making a temporary data dir")?;
    let url = a
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("journal.db").display()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    // Fill: rows in batches, each one transaction of the journal's writer.
    let t0 = Instant::now();
    {
        let journal = store::Journal::open(&url).context("opening the store")?;
        let mut mix = Mix(0x5eed);
        let mut id = 1;
        while id <= a.jobs {
            let end = (id + 20_000).min(a.jobs + 1);
            let rows = (id..end).map(|i| row(i, a, now, &mut mix)).collect();
            journal.put_history(rows).wait()?;
            id = end;
        }
        journal.close();
    }
    let fill_s = t0.elapsed().as_secs_f64();
    // The SQLite file's size (PostgreSQL's is the server's business).
    let db_bytes = std::fs::metadata(dir.path().join("journal.db")).map_or(0, |m| m.len());
    let config = server::Config {
        snapshot_every: 0,
        ..server::Config::new(url, dir.path())
    };
    let served = Loopback::start(&config)?;
    let client = Client::new(&served.url, &served.admin).with_timeout(Duration::from_secs(120));
    let page = |q: HistoryQuery| {
        let client = client.clone();
        move || -> Result<usize> { Ok(client.history(&q)?.items.len()) }
    };
    let r = a.repeats;
    let week_ago = now - 7 * 86_400;
    let first = timed(
        r,
        page(HistoryQuery {
            limit: Some(100),
            ..Default::default()
        }),
    )?;
    let deep = timed(
        r,
        page(HistoryQuery {
            limit: Some(100),
            after: Some(a.jobs * 9 / 10),
            ..Default::default()
        }),
    )?;
    let tenant_week = timed(
        r,
        page(HistoryQuery {
            limit: Some(100),
            tenant: Some("t042".into()),
            since: Some(week_ago),
            ..Default::default()
        }),
    )?;
    let failed = timed(
        r,
        page(HistoryQuery {
            limit: Some(100),
            state: Some("failed".into()),
            ..Default::default()
        }),
    )?;
    let by_name = timed(
        r,
        page(HistoryQuery {
            limit: Some(100),
            name: Some(format!("job-{}", a.jobs / 2)),
            ..Default::default()
        }),
    )?;
    let usage = |q: UsageQuery| {
        let client = client.clone();
        move || -> Result<usize> { Ok(client.usage(&q)?.lines.len()) }
    };
    let usage_all = timed(
        r,
        usage(UsageQuery {
            since: Some(now - a.days * 86_400),
            ..Default::default()
        }),
    )?;
    let usage_tenant = timed(
        r,
        usage(UsageQuery {
            period: Some("week".into()),
            since: Some(now - a.days * 86_400),
            tenant: Some("t042".into()),
            ..Default::default()
        }),
    )?;
    served.stop();
    let figure = |(p50, max, rows): (f64, f64, usize)| serde_json::json!({"p50_ms": p50, "max_ms": max, "rows": rows});
    let report = serde_json::json!({
        "jobs": a.jobs,
        "tenants": a.tenants,
        "days": a.days,
        "history_fill_rows_per_s": a.jobs as f64 / fill_s.max(1e-9),
        "history_db_bytes": db_bytes,
        "history_first_page": figure(first),
        "history_deep_page": figure(deep),
        "history_tenant_week_page": figure(tenant_week),
        "history_failed_page": figure(failed),
        "history_by_name": figure(by_name),
        "usage_all_tenants_by_day": figure(usage_all),
        "usage_one_tenant_by_week": figure(usage_tenant),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "history of {} finished jobs ({} tenants, {} days): filled at {:.0} rows/s, {:.0} MB on disk (SQLite)",
            a.jobs,
            a.tenants,
            a.days,
            a.jobs as f64 / fill_s.max(1e-9),
            db_bytes as f64 / 1e6
        );
        for (name, (p50, max, rows)) in [
            ("first page of 100", first),
            ("a page deep in the table", deep),
            ("one tenant's last week", tenant_week),
            ("failed jobs", failed),
            ("one job by name", by_name),
            ("usage, all tenants by day", usage_all),
            ("usage, one tenant by week", usage_tenant),
        ] {
            println!("  {name:<28} p50 {p50:>8.1} ms  max {max:>8.1} ms  ({rows} rows)");
        }
    }
    Ok(())
}
