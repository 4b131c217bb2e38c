//! The client commands: `submit`, `queue`, `services`, `sandboxes`, `get`, `cancel`, `scale`,
//! `delete-service`, `logs`, `why`, `nodes`, `drain`, `resume`, `token`, `tokens`, `revoke-token`,
//! `cost`, `compact`, `history` and `usage` (in `history_cmd`), `events` and `queue` (in `events_cmd`), `sandbox …` (in `sandbox_cmd`), over the server's HTTP API through [`wire::Client`] (`--server`, or
//! `STARGRID_SERVER`; default http://127.0.0.1:7070).

use crate::human_time;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use wire::api::{IssueToken, SubmitJob, SubmitSandboxes, SubmitService};
use wire::client::BatchQuery;
use wire::ClientError;

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Submit work from a TOML file — `kind = "job"` (the default; the fields of
    /// `POST /v1/jobs`), `kind = "service"` (`POST /v1/services`) or `kind = "sandboxes"`
    /// (`POST /v1/sandboxes`) — or from a batch script with `#SBATCH` directives (one job, or
    /// one per `--array` index; the script is what each node runs).
    Submit {
        /// The file.
        file: PathBuf,
    },
    /// What the fleet has cost since the control plane began: by provider, region, kind of
    /// capacity, class and tenant; idle committed capacity; each commitment's burn-down
    /// (admin token).
    Cost {
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Also write the charts (spend per provider per day, idle committed capacity,
        /// commitment pace) as PNG files into this folder.
        #[arg(long)]
        plots: Option<PathBuf>,
    },
    /// Inference services as a table.
    Services {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// table, wide (more columns) or json (the API's objects).
        #[arg(long, short = 'o', value_enum, default_value_t = crate::listing::Output::Table)]
        output: crate::listing::Output,
    },
    /// A service's ready replicas: where to send it requests.
    Endpoints {
        /// The service.
        id: u64,
        /// table or json (the API's objects).
        #[arg(long, short = 'o', value_enum, default_value_t = crate::listing::Output::Table)]
        output: crate::listing::Output,
    },
    /// Sandbox batches as a table.
    Sandboxes {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// table, wide (more columns) or json (the API's objects).
        #[arg(long, short = 'o', value_enum, default_value_t = crate::listing::Output::Table)]
        output: crate::listing::Output,
    },
    /// Set an inference service's desired replica count (clamped to its bounds).
    Scale {
        /// Service id.
        id: u64,
        /// Replicas wanted.
        replicas: u32,
    },
    /// Delete an inference service: its replicas stop.
    DeleteService {
        /// Service id.
        id: u64,
    },
    /// The queue as a table (like `squeue`).
    Queue {
        /// Only this tenant's jobs.
        #[arg(long)]
        tenant: Option<String>,
        /// Only jobs in this state (pending, running, preempting, finished, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Show when pending jobs are expected to start (the job the queue reserved nodes
        /// for), as `squeue --start` does.
        #[arg(long)]
        start: bool,
        /// Print the queue again whenever the server's event stream tells of a change
        /// (Ctrl-C stops).
        #[arg(long, short)]
        watch: bool,
        /// table, wide (more columns) or json (the API's objects).
        #[arg(long, short = 'o', value_enum, default_value_t = crate::listing::Output::Table)]
        output: crate::listing::Output,
    },
    /// The server's event stream: job, service, sandbox and node state changes, preemptions
    /// and requeues, as they become durable (Ctrl-C stops). A tenant token sees its own work
    /// and the fleet's.
    Events {
        /// Start after this event id (RECORD.INDEX, as printed); default: from now on.
        #[arg(long)]
        after: Option<String>,
        /// Only this tenant's work (admin).
        #[arg(long)]
        tenant: Option<String>,
        /// Print the events the server keeps after --after, then stop.
        #[arg(long)]
        no_follow: bool,
        /// table (one line per event) or json (one object per line).
        #[arg(long, value_enum, default_value_t = crate::events_cmd::EventFormat::Table)]
        output: crate::events_cmd::EventFormat,
    },
    /// One job or sandbox batch, as JSON.
    Get {
        /// Job or batch id (they share one sequence).
        id: u64,
    },
    /// Cancel a job or a sandbox batch.
    Cancel {
        /// Job or batch id.
        id: u64,
    },
    /// A job's task log (rank 0 unless --rank), fetched from its node through the server.
    Logs {
        /// Job id, or a sandbox batch's id with --sandbox.
        id: u64,
        /// The task's rank.
        #[arg(long, default_value_t = 0, conflicts_with = "sandbox")]
        rank: u32,
        /// The log of this sandbox of batch ID (its index).
        #[arg(long)]
        sandbox: Option<u32>,
        /// Keep printing what the task writes until the job ends (Ctrl-C stops).
        #[arg(long, short)]
        follow: bool,
    },
    /// Why a job is pending (or where it runs).
    Why {
        /// Job id.
        id: u64,
    },
    /// Nodes with their state and free capacity.
    Nodes {
        /// table, wide (more columns) or json (the API's objects).
        #[arg(long, short = 'o', value_enum, default_value_t = crate::listing::Output::Table)]
        output: crate::listing::Output,
    },
    /// Drain a node or every node under a topology path (a domain, a spine, a zone): no new
    /// work goes there; what runs there finishes (admin).
    Drain {
        /// Node name or topology path (as `stargrid fleet show` prints them).
        node: String,
    },
    /// Resume a drained node or the drained nodes under a topology path (admin).
    Resume {
        /// Node name or topology path.
        node: String,
    },
    /// Issue a token (needs an admin token): prints it once.
    #[command(name = "token")]
    Token {
        /// admin, tenant, agent or metrics (a Prometheus scrape: reads /metrics only).
        #[arg(long)]
        role: String,
        /// The tenant, for a tenant token.
        #[arg(long)]
        tenant: Option<String>,
        /// Seconds until it stops working (default: until revoked).
        #[arg(long)]
        expires_in_s: Option<u64>,
        /// For an agent credential: the nodes it reports for, as a hostlist expression
        /// (`gpu-[0000-0127]`); reports for other nodes are refused.
        #[arg(long)]
        nodes: Option<String>,
    },
    /// Tokens that were not revoked: ids, roles, the nodes agent credentials are bound to,
    /// expiry, refused reports (admin; never the tokens themselves).
    Tokens {
        /// table, wide (more columns) or json (the API's objects).
        #[arg(long, short = 'o', value_enum, default_value_t = crate::listing::Output::Table)]
        output: crate::listing::Output,
    },
    /// Revoke a token by its id (admin): it stops working at once.
    RevokeToken {
        /// The token's id (from `stargrid tokens`).
        id: String,
    },
    /// Compact the journal (admin): snapshot the state, drop the records before it, keep a
    /// summary of every job, batch and service in the history.
    Compact,
    /// Finished, failed and cancelled work, with filters (like `sacct`): waits, GPU-hours,
    /// losses, cost, exit codes. Kept in the store's history: it outlives restarts and
    /// compaction. A tenant token sees its own.
    History(crate::history_cmd::HistoryArgs),
    /// GPU-hours and cost per tenant per day or week (like `sreport`), of work counted in the
    /// period it ended.
    Usage(crate::history_cmd::UsageArgs),
    /// Interactive sandboxes: create, exec, cp, ls, end.
    #[command(subcommand)]
    Sandbox(crate::sandbox_cmd::SandboxCommand),
    /// Rolling updates of an inference service: start, status, undo.
    #[command(subcommand)]
    Rollout(crate::rollout_cmd::RolloutCommand),
}

/// A client error as the commands print it: a refusal as `refused (CODE): field: reason`; a
/// server out of reach or an unreadable answer under what was being done, with the cause.
pub fn fail(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Unreachable(why) => anyhow::anyhow!(why).context("reaching the server"),
        ClientError::Decode(why) => anyhow::anyhow!(why).context("reading the server's answer"),
        refused @ ClientError::Refused { .. } => anyhow::anyhow!(refused.to_string()),
    }
}

pub fn run(settings: &crate::config::Settings, command: &ClientCommand) -> Result<()> {
    let token = settings.token.as_str();
    if token.is_empty() {
        bail!("no token: pass --token, set STARGRID_TOKEN, or put token_file = \"…/admin.token\" in ~/.config/stargrid/config.toml (the server's first admin token is in its data dir, admin.token)");
    }
    let client = settings.client(token)?;
    // Times print as UTC dates and durations from now; the API keeps Unix seconds.
    let now = human_time::now();
    match command {
        ClientCommand::Sandbox(c) => crate::sandbox_cmd::run(&client, c)?,
        ClientCommand::Rollout(c) => crate::rollout_cmd::run(&client, c)?,
        ClientCommand::Submit { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            if crate::sbatch::looks_like_sbatch(&text) {
                let script = crate::sbatch::parse(&text, "default")
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                for w in &script.warnings {
                    eprintln!("{}: {w}", file.display());
                }
                let bar = indicatif::ProgressBar::new(script.jobs.len() as u64);
                if script.jobs.len() > 1 {
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "submitting the array {bar:30} {pos}/{len}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                } else {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
                }
                let mut ids = Vec::with_capacity(script.jobs.len());
                for job in &script.jobs {
                    let s = client.submit_job(job).map_err(fail).with_context(|| {
                        match job.env.get("SLURM_ARRAY_TASK_ID") {
                            Some(i) => format!("array index {i} (jobs {ids:?} were submitted)"),
                            None => "the script's job".to_string(),
                        }
                    })?;
                    ids.push(s.id);
                    bar.inc(1);
                }
                bar.finish_and_clear();
                match ids.as_slice() {
                    [one] => println!("submitted job {one}"),
                    many => println!(
                        "submitted {} jobs, {} to {}",
                        many.len(),
                        many.first().copied().unwrap_or(0),
                        many.last().copied().unwrap_or(0)
                    ),
                }
                return Ok(());
            }
            let mut doc: toml::Table =
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let kind = match doc.remove("kind") {
                None => "job".to_string(),
                Some(toml::Value::String(k)) => k,
                Some(other) => bail!(
                    "{}: kind: expected a string (job, service, sandboxes), found {}",
                    file.display(),
                    other.type_str()
                ),
            };
            let bad_file = |e: toml::de::Error| anyhow::anyhow!("{}: {e}", file.display());
            match kind.as_str() {
                "job" => {
                    let job: SubmitJob = doc.try_into().map_err(bad_file)?;
                    let s = client.submit_job(&job).map_err(fail)?;
                    println!("submitted job {} (journal record {})", s.id, s.seq);
                }
                "service" => {
                    let svc: SubmitService = doc.try_into().map_err(bad_file)?;
                    let s = client.submit_service(&svc).map_err(fail)?;
                    println!("created service {} (journal record {})", s.id, s.seq);
                }
                "sandboxes" => {
                    let batch: SubmitSandboxes = doc.try_into().map_err(bad_file)?;
                    let s = client.submit_sandboxes(&batch).map_err(fail)?;
                    println!(
                        "placed sandbox batch {} of {} (journal record {})",
                        s.id, batch.count, s.seq
                    );
                }
                other => bail!(
                    "{}: kind: unknown kind '{other}' (job, service, sandboxes)",
                    file.display()
                ),
            }
        }
        ClientCommand::Services { tenant, output } => {
            let services = client.services(tenant.as_deref()).map_err(fail)?;
            crate::listing::services(&services, *output)?;
        }
        ClientCommand::Endpoints { id, output } => {
            let endpoints = client.service_endpoints(*id).map_err(fail)?;
            crate::listing::endpoints(&endpoints, *output)?;
        }
        ClientCommand::Sandboxes { tenant, output } => {
            let mut rows = Vec::new();
            let mut after = 0u64;
            loop {
                let page = client
                    .batches(&BatchQuery {
                        tenant: tenant.clone(),
                        after: Some(after),
                        limit: Some(1000),
                    })
                    .map_err(fail)?;
                rows.extend(page.batches);
                match page.next_after {
                    Some(n) => after = n,
                    None => break,
                }
            }
            crate::listing::batches(&rows, *output)?;
        }
        ClientCommand::Scale { id, replicas } => {
            let v = client.scale_service(*id, *replicas).map_err(fail)?;
            println!(
                "service {}: {} replicas wanted, {} running, {} pending",
                v.id, v.desired, v.running, v.pending
            );
        }
        ClientCommand::DeleteService { id } => {
            let v = client.delete_service(*id).map_err(fail)?;
            println!("service {} is {}", v.id, v.state);
        }
        ClientCommand::Queue {
            tenant,
            state,
            start,
            watch,
            output,
        } => {
            let args = crate::events_cmd::QueueArgs {
                tenant: tenant.clone(),
                state: state.clone(),
                start: *start,
                output: *output,
            };
            crate::events_cmd::queue(&client, &args, *watch)?;
        }
        ClientCommand::Events {
            after,
            tenant,
            no_follow,
            output,
        } => {
            crate::events_cmd::events(&client, after.clone(), tenant.clone(), *no_follow, *output)?
        }
        // Jobs and batches share one id sequence: an id that is no job may be a batch.
        ClientCommand::Get { id } => match client.job(*id) {
            Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
            Err(e) if e.is_not_found() => {
                let v = client.batch(*id).map_err(|_| fail(e))?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Err(e) => return Err(fail(e)),
        },
        ClientCommand::Cancel { id } => match client.cancel_job(*id) {
            Ok(v) => println!("job {} is {}", v.id, v.state),
            Err(e) if e.is_not_found() => {
                let v = client.cancel_batch(*id).map_err(|_| fail(e))?;
                println!("sandbox batch {} is {}", v.id, v.state);
            }
            Err(e) => return Err(fail(e)),
        },
        ClientCommand::Logs {
            id,
            rank,
            sandbox,
            follow,
        } => {
            use std::io::Write;
            let mut from = 0u64;
            let started = std::time::Instant::now();
            let mut quiet_polls = 0;
            loop {
                let v = match sandbox {
                    Some(index) => client.sandbox_logs(*id, *index, from),
                    None => client.logs(*id, *rank, from),
                }
                .map_err(fail)?;
                if v.data.is_empty() {
                    quiet_polls += 1;
                } else {
                    quiet_polls = 0;
                    print!("{}", v.data);
                    let _ = std::io::stdout().flush();
                }
                from = v.next;
                // The agents send within a heartbeat of being asked: wait a little for the first
                // piece, then stop once nothing more comes (unless following a running job).
                let waited = started.elapsed() > std::time::Duration::from_secs(3);
                if !follow && waited && quiet_polls >= 3 {
                    break;
                }
                if *follow && quiet_polls >= 3 {
                    let state = match sandbox {
                        Some(_) => client.batch(*id).map_err(fail)?.state,
                        None => client.job(*id).map_err(fail)?.state,
                    };
                    if matches!(state.as_str(), "finished" | "cancelled") && waited {
                        break;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        }
        ClientCommand::Why { id } => {
            let v = client.why(*id).map_err(fail)?;
            match (v.state.as_str(), v.reason) {
                (_, Some(r)) => println!(
                    "job {} is {}: {}{}",
                    v.id,
                    v.state,
                    human_time::in_text(&r, now),
                    v.expected_start.map_or_else(String::new, |t| format!(
                        "; expected to start {}",
                        human_time::at(t, now)
                    ))
                ),
                ("running", None) => {
                    println!("job {} is running on {}", v.id, v.nodes.join(","))
                }
                (s, None) => println!("job {} is {s}", v.id),
            }
        }
        ClientCommand::Cost { json, plots } => {
            let summary = client.cost().map_err(fail)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", crate::cost_view::summary(&summary, "so far"));
            }
            if let Some(dir) = plots {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let written =
                    sim::report::write_cost_plots(dir, &summary).map_err(|e| anyhow::anyhow!(e))?;
                eprintln!("wrote {}", written.join(", "));
            }
        }
        ClientCommand::Nodes { output } => {
            let nodes = client.nodes().map_err(fail)?;
            crate::listing::nodes(&nodes, *output)?;
        }
        ClientCommand::Drain { node } | ClientCommand::Resume { node } => {
            let views = if matches!(command, ClientCommand::Drain { .. }) {
                client.drain(node)
            } else {
                client.resume(node)
            }
            .map_err(fail)?;
            match views.as_slice() {
                [v] if v.name == *node => println!("node {} is {}", v.name, v.state),
                many => {
                    let mut states: std::collections::BTreeMap<&str, usize> = Default::default();
                    for v in many {
                        *states.entry(v.state.as_str()).or_default() += 1;
                    }
                    let summary: Vec<String> =
                        states.iter().map(|(s, n)| format!("{n} {s}")).collect();
                    println!("{node}: {} nodes: {}", many.len(), summary.join(", "));
                }
            }
        }
        ClientCommand::Token {
            role,
            tenant,
            expires_in_s,
            nodes,
        } => {
            let t = client
                .issue_token(&IssueToken {
                    role: role.clone(),
                    tenant: tenant.clone(),
                    expires_in_s: *expires_in_s,
                    nodes: nodes.clone(),
                })
                .map_err(fail)?;
            println!("{}", t.token);
            eprintln!(
                "token id {}{}",
                t.id,
                t.expires_at.map_or_else(String::new, |e| format!(
                    ", expires {}",
                    human_time::at(e, now)
                ))
            );
        }
        ClientCommand::Tokens { output } => {
            let list = client.tokens().map_err(fail)?;
            crate::listing::tokens(&list, *output)?;
        }
        ClientCommand::RevokeToken { id } => {
            client.revoke_token(id).map_err(fail)?;
            println!("token {id} is revoked");
        }
        ClientCommand::Compact => {
            let c = client.compact().map_err(fail)?;
            println!(
                "journal compacted: {} records dropped; it starts at the snapshot of record {}; {} workload summaries kept",
                c.dropped, c.snapshot_seq, c.summaries
            );
        }
        ClientCommand::History(args) => crate::history_cmd::history(&client, args)?,
        ClientCommand::Usage(args) => crate::history_cmd::usage(&client, args)?,
    }
    Ok(())
}
