//! `stargrid history` (finished work with filters, like `sacct`) and `stargrid usage` (GPU-hours
//! and cost per tenant per day or week, like `sreport`), as a table, JSON or CSV.

use crate::client::fail;
use crate::human_time;
use anyhow::Result;
use std::io::Write;
use wire::api::{UsageReport, WorkloadSummary};
use wire::client::{HistoryQuery, UsageQuery};
use wire::Client;

/// How a listing is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// Columns for people.
    Table,
    /// The API's JSON (one document).
    Json,
    /// Comma-separated values with a header, times in RFC 3339.
    Csv,
}

/// What `stargrid history` lists.
#[derive(Clone, Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only this tenant's (a tenant token: its own).
    #[arg(long)]
    tenant: Option<String>,
    /// Only in this state: finished, failed, cancelled (and pending, running, active, deleted
    /// for rows a compaction wrote).
    #[arg(long)]
    state: Option<String>,
    /// Only this kind: job, batch or service.
    #[arg(long)]
    kind: Option<String>,
    /// Only with this name.
    #[arg(long)]
    name: Option<String>,
    /// Only what ended at or after this: 2026-11-30, 2026-11-30T14:05:00Z, Unix seconds, or a
    /// span ago (90m, 36h, 7d, 2w).
    #[arg(long)]
    since: Option<String>,
    /// Only what ended before this (the same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Show at most this many.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// table, json or csv.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
}

/// What `stargrid usage` sums.
#[derive(Clone, Debug, clap::Args)]
pub struct UsageArgs {
    /// day or week (Monday to Sunday, UTC).
    #[arg(long, default_value = "day")]
    period: String,
    /// From this time (as for history; default: 30 periods ago).
    #[arg(long)]
    since: Option<String>,
    /// Until this time (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Only this tenant's.
    #[arg(long)]
    tenant: Option<String>,
    /// job (default) or batch.
    #[arg(long)]
    kind: Option<String>,
    /// table, json or csv.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
}

fn when(text: &Option<String>, now: u64, flag: &str) -> Result<Option<u64>> {
    text.as_deref()
        .map(|t| human_time::parse_when(t, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
        .transpose()
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `stargrid history`.
pub fn history(client: &Client, args: &HistoryArgs) -> Result<()> {
    let now = human_time::now();
    let mut query = HistoryQuery {
        after: None,
        limit: None,
        kind: args.kind.clone(),
        tenant: args.tenant.clone(),
        state: args.state.clone(),
        name: args.name.clone(),
        since: when(&args.since, now, "since")?,
        until: when(&args.until, now, "until")?,
    };
    let mut rows: Vec<WorkloadSummary> = Vec::new();
    while rows.len() < args.limit {
        query.limit = Some((args.limit - rows.len()).min(1000));
        let page = client.history(&query).map_err(fail)?;
        let empty = page.items.is_empty();
        rows.extend(page.items);
        match page.next_after {
            Some(next) if !empty => query.after = Some(next),
            _ => break,
        }
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        ListFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
        ListFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "kind",
                "id",
                "name",
                "tenant",
                "state",
                "submitted",
                "started",
                "ended",
                "wait_s",
                "exit_code",
                "restarts",
                "size",
                "nodes",
                "gpu_hours",
                "lost_gpu_hours",
                "cost_usd",
            ])?;
            for r in &rows {
                w.write_record([
                    r.kind.clone(),
                    r.id.to_string(),
                    r.name.clone(),
                    r.tenant.clone(),
                    r.state.clone(),
                    r.submitted_time.clone(),
                    r.started_at.map(rfc3339).unwrap_or_default(),
                    r.ended_time.clone().unwrap_or_default(),
                    r.wait_s.map(|w| w.to_string()).unwrap_or_default(),
                    r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    r.restarts.to_string(),
                    r.size.to_string(),
                    r.nodes.len().to_string(),
                    r.gpu_hours.map(|h| format!("{h:.4}")).unwrap_or_default(),
                    r.lost_gpu_hours
                        .map(|h| format!("{h:.4}"))
                        .unwrap_or_default(),
                    r.cost_usd.map(|c| format!("{c:.2}")).unwrap_or_default(),
                ])?;
            }
            w.flush()?;
        }
        ListFormat::Table => {
            writeln!(
                out,
                "{:<8} {:>8} {:<20} {:<12} {:<10} {:<21} {:>10} {:>10} {:>6} {:>9} {:>8} {:>10} {:>5}",
                "KIND", "ID", "NAME", "TENANT", "STATE", "ENDED", "WAITED", "ELAPSED", "SIZE",
                "GPU-H", "LOST-H", "COST", "EXIT"
            )?;
            for r in &rows {
                let elapsed = match (r.started_at, r.ended_at) {
                    (Some(s), Some(e)) => human_time::span(e.saturating_sub(s)),
                    _ => "-".into(),
                };
                writeln!(
                    out,
                    "{:<8} {:>8} {:<20} {:<12} {:<10} {:<21} {:>10} {:>10} {:>6} {:>9} {:>8} {:>10} {:>5}",
                    r.kind,
                    r.id,
                    r.name,
                    r.tenant,
                    r.state,
                    r.ended_at.map_or_else(|| "-".into(), human_time::date),
                    r.wait_s.map_or_else(|| "-".into(), human_time::span),
                    elapsed,
                    r.size,
                    or_dash(r.gpu_hours.map(|h| format!("{h:.2}"))),
                    or_dash(r.lost_gpu_hours.map(|h| format!("{h:.2}"))),
                    or_dash(r.cost_usd.map(|c| format!("${c:.2}"))),
                    or_dash(r.exit_code),
                )?;
            }
        }
    }
    Ok(())
}

fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(String::new, |t| t.to_string())
}

/// `stargrid usage`.
pub fn usage(client: &Client, args: &UsageArgs) -> Result<()> {
    let now = human_time::now();
    let report: UsageReport = client
        .usage(&UsageQuery {
            period: Some(args.period.clone()),
            since: when(&args.since, now, "since")?,
            until: when(&args.until, now, "until")?,
            tenant: args.tenant.clone(),
            kind: args.kind.clone(),
        })
        .map_err(fail)?;
    let mut out = std::io::stdout().lock();
    match args.format {
        ListFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        ListFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(["period", "tenant", "count", "gpu_hours", "cost_usd"])?;
            for l in &report.lines {
                w.write_record([
                    l.period.clone(),
                    l.tenant.clone(),
                    l.count.to_string(),
                    format!("{:.4}", l.gpu_hours),
                    format!("{:.2}", l.cost_usd),
                ])?;
            }
            w.flush()?;
        }
        ListFormat::Table => {
            writeln!(
                out,
                "usage per {} from {} until {} (work counted when it ended)",
                report.period,
                human_time::date(report.since),
                human_time::date(report.until)
            )?;
            writeln!(
                out,
                "{:<12} {:<16} {:>8} {:>12} {:>12}",
                "PERIOD", "TENANT", "COUNT", "GPU-HOURS", "COST"
            )?;
            let (mut count, mut hours, mut cost) = (0, 0.0, 0.0);
            for l in &report.lines {
                writeln!(
                    out,
                    "{:<12} {:<16} {:>8} {:>12.2} {:>12}",
                    l.period,
                    l.tenant,
                    l.count,
                    l.gpu_hours,
                    format!("${:.2}", l.cost_usd)
                )?;
                count += l.count;
                hours += l.gpu_hours;
                cost += l.cost_usd;
            }
            writeln!(
                out,
                "{:<12} {:<16} {:>8} {:>12.2} {:>12}",
                "total",
                "",
                count,
                hours,
                format!("${cost:.2}")
            )?;
        }
    }
    Ok(())
}
