//! The listing commands' output — `queue`, `services`, `sandboxes`, `nodes`, `tokens` — as a
//! table, a wide table (more columns: times, nodes, bounds), or the API's JSON (one array), with
//! `--output table|wide|json`.

use crate::human_time;
use anyhow::Result;
use std::io::Write;
use wire::api::{BatchView, JobView, NodeView, ServiceView, TokenView};

/// How a listing is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Columns for people.
    #[default]
    Table,
    /// More columns: times, nodes, bounds.
    Wide,
    /// The API's objects, as one JSON array.
    Json,
}

/// Prints `text` at once (a closed pipe ends the program quietly: see `quiet_pipe`).
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn json<T: serde::Serialize>(rows: &[T]) -> Result<()> {
    emit(&(serde_json::to_string_pretty(rows)? + "\n"))
}

fn date_or_dash(unix: Option<u64>) -> String {
    unix.map_or_else(|| "-".into(), human_time::date)
}

/// Jobs (`stargrid queue`); with `start`, pending jobs' expected starts come before reasons.
pub fn jobs(rows: &[JobView], output: Output, start: bool) -> Result<()> {
    if output == Output::Json {
        return json(rows);
    }
    let now = human_time::now();
    let wide = output == Output::Wide;
    let start_column = |j: &JobView| match (start, j.expected_start) {
        (false, _) => String::new(),
        (true, Some(t)) => format!("{:<36}", human_time::at(t, now)),
        (true, None) => format!("{:<36}", "-"),
    };
    let mut out = format!(
        "{:>8} {:<24} {:<12} {:<10} {:>6} {:>5}  {}{}REASON\n",
        "ID",
        "NAME",
        "TENANT",
        "STATE",
        "GPUS",
        "NODES",
        if start {
            format!("{:<36}", "START")
        } else {
            String::new()
        },
        if wide {
            format!(
                "{:<21} {:<21} {:>8} {:<24} ",
                "SUBMITTED", "SINCE", "RESTARTS", "NODELIST"
            )
        } else {
            String::new()
        }
    );
    for j in rows {
        let extra = if wide {
            let mut names: Vec<&str> = j.nodes.iter().map(String::as_str).collect();
            names.sort_unstable();
            let list = model::hostlist::compress(&names);
            format!(
                "{:<21} {:<21} {:>8} {:<24} ",
                human_time::date(j.submitted_at),
                date_or_dash(j.since),
                j.restarts,
                if list.is_empty() { "-".into() } else { list }
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:>8} {:<24} {:<12} {:<10} {:>6} {:>5}  {}{}{}\n",
            j.id,
            j.name,
            j.tenant,
            j.state,
            j.gpus,
            j.nodes.len(),
            start_column(j),
            extra,
            human_time::in_text(j.reason.as_deref().unwrap_or(""), now)
        ));
    }
    emit(&out)
}

/// Inference services (`stargrid services`).
pub fn services(rows: &[ServiceView], output: Output) -> Result<()> {
    if output == Output::Json {
        return json(rows);
    }
    let now = human_time::now();
    let wide = output == Output::Wide;
    let mut out = format!(
        "{:>6} {:<24} {:<12} {:<8} {:>7} {:>7} {:>5} {:>7} {:>8} {:<22}  {}REASON\n",
        "ID",
        "NAME",
        "TENANT",
        "STATE",
        "DESIRED",
        "RUNNING",
        "READY",
        "PENDING",
        "REPLACED",
        "LOAD",
        if wide {
            format!(
                "{:>5} {:>5} {:>6} {:<21} {:<28} ",
                "MIN", "MAX", "GPUS/R", "CREATED", "ROLES"
            )
        } else {
            String::new()
        }
    );
    for v in rows {
        let extra = if wide {
            // Each role: workers × nodes per worker × GPUs per node.
            let roles: Vec<String> = v
                .roles
                .iter()
                .map(|r| {
                    format!(
                        "{} {}×{}×{}",
                        r.name, r.workers, r.nodes_per_worker, r.gpus_per_node
                    )
                })
                .collect();
            let roles = if roles.is_empty() {
                "-".to_string()
            } else {
                roles.join(", ")
            };
            format!(
                "{:>5} {:>5} {:>6} {:<21} {:<28} ",
                v.min_replicas,
                v.max_replicas,
                v.gpus_per_replica,
                human_time::date(v.created_at),
                roles
            )
        } else {
            String::new()
        };
        // In flight and answered a second, as the gateways report them.
        let load = v.load.as_ref().map_or_else(
            || "-".to_string(),
            |l| format!("{:.0} in flight, {:.0}/s", l.inflight, l.requests_per_s),
        );
        out.push_str(&format!(
            "{:>6} {:<24} {:<12} {:<8} {:>7} {:>7} {:>5} {:>7} {:>8} {:<22}  {}{}\n",
            v.id,
            v.name,
            v.tenant,
            v.state,
            v.desired,
            v.running,
            v.ready,
            v.pending,
            v.replaced,
            load,
            extra,
            human_time::in_text(v.reason.as_deref().unwrap_or(""), now)
        ));
    }
    emit(&out)
}

/// A service's ready replicas (`stargrid endpoints`).
pub fn endpoints(rows: &[wire::api::ServiceEndpoint], output: Output) -> Result<()> {
    if output == Output::Json {
        return json(rows);
    }
    let mut out = format!("{:>20} {:<28} {}\n", "REPLICA", "NODE", "ENDPOINT");
    for e in rows {
        out.push_str(&format!(
            "{:>20} {:<28} {}:{}\n",
            e.replica, e.node, e.address, e.port
        ));
    }
    emit(&out)
}

/// Sandbox batches (`stargrid sandboxes`).
pub fn batches(rows: &[BatchView], output: Output) -> Result<()> {
    if output == Output::Json {
        return json(rows);
    }
    let wide = output == Output::Wide;
    let mut out = format!(
        "{:>8} {:<24} {:<12} {:<10} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6}{}\n",
        "ID",
        "NAME",
        "TENANT",
        "STATE",
        "COUNT",
        "LIVE",
        "OK",
        "FAILED",
        "LOST",
        "HOSTS",
        if wide {
            format!(
                " {:>5} {:>6} {:<21} {:<21} {:<12}",
                "OOM", "MOVED", "SUBMITTED", "ENDED", "TEMPLATE"
            )
        } else {
            String::new()
        }
    );
    for b in rows {
        let extra = if wide {
            format!(
                " {:>5} {:>6} {:<21} {:<21} {:<12}",
                b.oom_killed,
                b.moved,
                human_time::date(b.submitted_at),
                date_or_dash(b.ended_at),
                b.template.as_deref().unwrap_or("-")
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:>8} {:<24} {:<12} {:<10} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6}{}\n",
            b.id,
            b.name,
            b.tenant,
            b.state,
            b.count,
            b.live,
            b.succeeded,
            b.failed,
            b.lost,
            b.hosts,
            extra
        ));
    }
    emit(&out)
}

/// Nodes (`stargrid nodes`).
pub fn nodes(rows: &[NodeView], output: Output) -> Result<()> {
    if output == Output::Json {
        return json(rows);
    }
    let wide = output == Output::Wide;
    let mut out = format!(
        "{:<28} {:<9} {:>9} {:>12}{}\n",
        "NODE",
        "STATE",
        "GPU FREE",
        "CPU FREE",
        if wide { "   CPU MILLICORES FREE" } else { "" }
    );
    for n in rows {
        out.push_str(&format!(
            "{:<28} {:<9} {:>4}/{:<4} {:>6}/{:<6}{}{}\n",
            n.name,
            n.state,
            n.free_gpus,
            n.gpus,
            n.free_cpu_millis / 1000,
            n.cpu_millis / 1000,
            if wide {
                format!("   {}/{}", n.free_cpu_millis, n.cpu_millis)
            } else {
                String::new()
            },
            // Removed from the fleet by a fleet change, it leaves once its work ends.
            if n.leaving { "  leaving" } else { "" }
        ));
    }
    emit(&out)
}

/// Tokens (`stargrid tokens`): ids and roles, never the tokens.
pub fn tokens(rows: &[TokenView], output: Output) -> Result<()> {
    if output == Output::Json {
        return json(rows);
    }
    let mut out = format!(
        "{:<18} {:<8} {:<24} {:<20} {:<20} {:>8}\n",
        "ID", "ROLE", "TENANT/NODES", "ISSUED", "EXPIRES", "REFUSED"
    );
    for t in rows {
        let whose = match (&t.tenant, &t.nodes) {
            (Some(tenant), _) => tenant.clone(),
            (None, Some(nodes)) if nodes == "*" => "* (every node: unbound)".into(),
            (None, Some(nodes)) => nodes.clone(),
            (None, None) => "-".into(),
        };
        out.push_str(&format!(
            "{:<18} {:<8} {:<24} {:<20} {:<20} {:>8}{}\n",
            t.id,
            t.role,
            whose,
            human_time::date(t.issued_at),
            t.expires_at
                .map_or_else(|| "never".to_string(), human_time::date),
            t.refused_reports,
            if t.expired { "  (expired)" } else { "" }
        ));
    }
    emit(&out)
}
