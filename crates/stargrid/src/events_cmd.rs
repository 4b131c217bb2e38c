//! `stargrid events` (the server's event stream, one line per event, or JSON lines) and
//! `stargrid queue` with `--watch` (the queue printed again as events come). Both follow the
//! stream through [`wire::Client::events`], reconnecting from the last event seen when the
//! connection drops.

use crate::client::fail;
use crate::human_time;
use anyhow::Result;
use std::io::Write;
use std::time::{Duration, Instant};
use wire::api::{Change, StreamEvent};
use wire::client::{EventQuery, JobQuery};
use wire::{Client, ClientError};

/// How events are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    /// One line per event: time, kind, what changed.
    Table,
    /// One JSON object per line, as the API sends it.
    Json,
}

/// Follows the stream from `query`, giving each event to `each` (which answers whether to go
/// on). A dropped connection is retried from the last event seen, backing off to 5 s; a
/// refusal ends it.
fn follow(
    client: &Client,
    mut query: EventQuery,
    mut each: impl FnMut(StreamEvent) -> bool,
) -> Result<()> {
    let mut backoff = Duration::from_millis(250);
    let mut stopped = false;
    // The last event seen, whatever ends the connection: the next one resumes after it.
    let mut seen: Option<String> = None;
    loop {
        let result = client.events(&query, |e| {
            seen = Some(e.id.clone());
            let go_on = each(e);
            stopped = !go_on;
            go_on
        });
        if let Some(id) = seen.take() {
            query.after = Some(id);
        }
        match result {
            Ok(_) if stopped || !query.follow => return Ok(()),
            // The server ended the stream (it is stopping): resume after the last event.
            Ok(_) => {}
            Err(ClientError::Unreachable(why)) if query.follow => {
                eprintln!("stargrid: event stream lost ({why}); reconnecting");
            }
            Err(e) => return Err(fail(e)),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// `stargrid events`.
pub fn events(
    client: &Client,
    after: Option<String>,
    tenant: Option<String>,
    no_follow: bool,
    format: EventFormat,
) -> Result<()> {
    let query = EventQuery {
        after,
        tenant,
        follow: !no_follow,
    };
    let mut out = std::io::stdout();
    follow(client, query, |e| {
        let line = match format {
            EventFormat::Json => serde_json::to_string(&e).unwrap_or_default(),
            EventFormat::Table => line(&e),
        };
        // A closed standard output ends the program quietly (see `quiet_pipe`).
        writeln!(out, "{line}").is_ok() && out.flush().is_ok()
    })
}

/// One event as a line: `2026-11-30 14:05 UTC  12.0  job 7 train-a (acme): running on gb-[1-2]`.
pub fn line(e: &StreamEvent) -> String {
    let what = match &e.change {
        Change::Job {
            job,
            name,
            tenant,
            state,
            nodes,
            exit_code,
            service,
        } => {
            let mut s = match service {
                Some(svc) => format!("replica {name} of service {svc} ({tenant}): {state}"),
                None => format!("job {job} {name} ({tenant}): {state}"),
            };
            if let Some(n) = nodes {
                s.push_str(&format!(" on {n}"));
            }
            if let Some(c) = exit_code {
                s.push_str(&format!(", exit code {c}"));
            }
            s
        }
        Change::Checkpointed { job, tenant } => format!("job {job} ({tenant}): checkpointed"),
        Change::Batch {
            batch,
            name,
            tenant,
            state,
            live,
            count,
        } => format!("sandboxes {batch} {name} ({tenant}): {state}, {live} of {count} live"),
        Change::Service {
            service,
            name,
            tenant,
            state,
            desired,
            replicas,
            ready,
        } => format!(
            "service {service} {name} ({tenant}): {state}, {desired} replicas wanted, {replicas} placed or queued, {ready} ready"
        ),
        Change::Node {
            node,
            state,
            reason,
        } => format!("node {node}: {state} ({reason})"),
        Change::Preempted {
            job,
            tenant,
            by,
            stops_at,
        } => format!(
            "job {job} ({tenant}): preempted{}, stops by {}",
            by.map(|b| format!(" for job {b}")).unwrap_or_default(),
            human_time::date(*stops_at)
        ),
        Change::Requeued {
            job,
            tenant,
            reason,
            lost_gpu_hours,
        } => format!("job {job} ({tenant}): {reason}; {lost_gpu_hours:.2} GPU-h lost"),
        Change::Resync { reason } => {
            format!("resync: {reason}; what came before this is not complete")
        }
    };
    let when = if e.at == 0 {
        "-".to_string()
    } else {
        human_time::date(e.at)
    };
    format!("{when:<21} {:>10}  {what}", e.id)
}

/// What `stargrid queue` lists.
pub struct QueueArgs {
    /// Only this tenant's jobs.
    pub tenant: Option<String>,
    /// Only jobs in this state.
    pub state: Option<String>,
    /// With the expected start column.
    pub start: bool,
    /// Table, wide or JSON.
    pub output: crate::listing::Output,
}

/// `stargrid queue`, once or, with `watch`, again after each burst of events (a terminal is
/// cleared first; a pipe gets the tables one after another).
pub fn queue(client: &Client, args: &QueueArgs, watch: bool) -> Result<()> {
    print_queue(client, args)?;
    if !watch {
        return Ok(());
    }
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    let query = EventQuery {
        after: None,
        tenant: args.tenant.clone(),
        follow: true,
    };
    // Bursts (a pass that starts a thousand jobs) print once: at most one table a second.
    let mut printed = Instant::now();
    let mut result = Ok(());
    follow(client, query, |_| {
        if printed.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_secs(1).saturating_sub(printed.elapsed()));
        }
        printed = Instant::now();
        if terminal {
            print!("\x1b[H\x1b[2J");
        } else {
            println!();
        }
        result = print_queue(client, args);
        result.is_ok()
    })?;
    result
}

fn print_queue(client: &Client, args: &QueueArgs) -> Result<()> {
    let mut rows = Vec::new();
    let mut after = 0u64;
    loop {
        let page = client
            .jobs(&JobQuery {
                tenant: args.tenant.clone(),
                state: args.state.clone(),
                after: Some(after),
                limit: Some(1000),
            })
            .map_err(fail)?;
        rows.extend(page.jobs);
        match page.next_after {
            Some(n) => after = n,
            None => break,
        }
    }
    crate::listing::jobs(&rows, args.output, args.start)
}
