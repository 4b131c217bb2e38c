//! The client commands: `submit`, `queue`, `services`, `sandboxes`, `get`, `cancel`, `scale`,
//! `delete-service`, `logs`, `why`, `nodes`, `drain`, `resume`, `token`, over the server's HTTP API (`--server`, or
//! `STARGRID_SERVER`; default http://127.0.0.1:7070).

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use server::api::{
    ApiError, BatchList, BatchView, IssueToken, JobList, JobView, NodeView, ScaleService,
    ServiceView, SubmitJob, SubmitSandboxes, SubmitService, Submitted, Token,
};
use std::path::PathBuf;

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
    },
    /// Sandbox batches as a table.
    Sandboxes {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
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
        /// Job id.
        id: u64,
        /// The task's rank.
        #[arg(long, default_value_t = 0)]
        rank: u32,
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
    Nodes,
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
        /// admin, tenant or agent.
        #[arg(long)]
        role: String,
        /// The tenant, for a tenant token.
        #[arg(long)]
        tenant: Option<String>,
        /// Seconds until it stops working (default: until revoked).
        #[arg(long)]
        expires_in_s: Option<u64>,
    },
    /// Tokens that were not revoked: ids, roles, expiry (admin; never the tokens themselves).
    Tokens,
    /// Revoke a token by its id (admin): it stops working at once.
    RevokeToken {
        /// The token's id (from `stargrid tokens`).
        id: String,
    },
}

/// Turns a refused request into an error that names the field.
pub fn answer<T: serde::de::DeserializeOwned>(r: Result<ureq::Response, ureq::Error>) -> Result<T> {
    match r {
        Ok(resp) => resp.into_json::<T>().context("reading the server's answer"),
        Err(ureq::Error::Status(code, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            match serde_json::from_str::<ApiError>(&body) {
                Ok(e) if e.error.field.is_empty() => bail!("refused ({code}): {}", e.error.reason),
                Ok(e) => bail!("refused ({code}): {}: {}", e.error.field, e.error.reason),
                Err(_) => bail!("refused ({code}): {body}"),
            }
        }
        Err(e) => Err(anyhow::Error::new(e).context("reaching the server")),
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.to_string().starts_with("refused (404)")
}

pub fn run(server: &str, token: &str, command: &ClientCommand) -> Result<()> {
    let base = server.trim_end_matches('/');
    if token.is_empty() {
        bail!("no token: pass --token, set STARGRID_TOKEN, or put token_file = \"…/admin.token\" in ~/.config/stargrid/config.toml (the server's first admin token is in its data dir, admin.token)");
    }
    let auth = format!("Bearer {token}");
    let http = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(30))
        .build();
    let get = |url: &str| http.get(url).set("Authorization", &auth);
    let post = |url: &str| http.post(url).set("Authorization", &auth);
    match command {
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
                    let s: Submitted = answer(post(&format!("{base}/v1/jobs")).send_json(job))
                        .with_context(|| match job.env.get("SLURM_ARRAY_TASK_ID") {
                            Some(i) => format!("array index {i} (jobs {ids:?} were submitted)"),
                            None => "the script's job".to_string(),
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
                    let s: Submitted = answer(post(&format!("{base}/v1/jobs")).send_json(&job))?;
                    println!("submitted job {} (journal record {})", s.id, s.seq);
                }
                "service" => {
                    let svc: SubmitService = doc.try_into().map_err(bad_file)?;
                    let s: Submitted =
                        answer(post(&format!("{base}/v1/services")).send_json(&svc))?;
                    println!("created service {} (journal record {})", s.id, s.seq);
                }
                "sandboxes" => {
                    let batch: SubmitSandboxes = doc.try_into().map_err(bad_file)?;
                    let s: Submitted =
                        answer(post(&format!("{base}/v1/sandboxes")).send_json(&batch))?;
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
        ClientCommand::Services { tenant } => {
            let mut req = get(&format!("{base}/v1/services"));
            if let Some(t) = tenant {
                req = req.query("tenant", t);
            }
            let services: Vec<ServiceView> = answer(req.call())?;
            println!(
                "{:>6} {:<24} {:<12} {:<8} {:>7} {:>7} {:>7} {:>8}  REASON",
                "ID", "NAME", "TENANT", "STATE", "DESIRED", "RUNNING", "PENDING", "REPLACED"
            );
            for v in services {
                println!(
                    "{:>6} {:<24} {:<12} {:<8} {:>7} {:>7} {:>7} {:>8}  {}",
                    v.id,
                    v.name,
                    v.tenant,
                    v.state,
                    v.desired,
                    v.running,
                    v.pending,
                    v.replaced,
                    v.reason.as_deref().unwrap_or("")
                );
            }
        }
        ClientCommand::Sandboxes { tenant } => {
            let mut rows = Vec::new();
            let mut after = 0u64;
            loop {
                let mut req = get(&format!("{base}/v1/sandboxes"))
                    .query("after", &after.to_string())
                    .query("limit", "1000");
                if let Some(t) = tenant {
                    req = req.query("tenant", t);
                }
                let page: BatchList = answer(req.call())?;
                rows.extend(page.batches);
                match page.next_after {
                    Some(n) => after = n,
                    None => break,
                }
            }
            println!(
                "{:>8} {:<24} {:<12} {:<10} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6}",
                "ID", "NAME", "TENANT", "STATE", "COUNT", "LIVE", "OK", "FAILED", "LOST", "HOSTS"
            );
            for b in rows {
                println!(
                    "{:>8} {:<24} {:<12} {:<10} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6}",
                    b.id,
                    b.name,
                    b.tenant,
                    b.state,
                    b.count,
                    b.live,
                    b.succeeded,
                    b.failed,
                    b.lost,
                    b.hosts
                );
            }
        }
        ClientCommand::Scale { id, replicas } => {
            let v: ServiceView = answer(
                post(&format!("{base}/v1/services/{id}/scale")).send_json(&ScaleService {
                    replicas: *replicas,
                }),
            )?;
            println!(
                "service {}: {} replicas wanted, {} running, {} pending",
                v.id, v.desired, v.running, v.pending
            );
        }
        ClientCommand::DeleteService { id } => {
            let v: ServiceView = answer(post(&format!("{base}/v1/services/{id}/delete")).call())?;
            println!("service {} is {}", v.id, v.state);
        }
        ClientCommand::Queue { tenant, state } => {
            let mut rows = Vec::new();
            let mut after = 0u64;
            loop {
                let mut req = get(&format!("{base}/v1/jobs"))
                    .query("after", &after.to_string())
                    .query("limit", "1000");
                if let Some(t) = tenant {
                    req = req.query("tenant", t);
                }
                if let Some(s) = state {
                    req = req.query("state", s);
                }
                let page: JobList = answer(req.call())?;
                rows.extend(page.jobs);
                match page.next_after {
                    Some(n) => after = n,
                    None => break,
                }
            }
            println!(
                "{:>8} {:<24} {:<12} {:<10} {:>6} {:>5}  REASON",
                "ID", "NAME", "TENANT", "STATE", "GPUS", "NODES"
            );
            for j in rows {
                println!(
                    "{:>8} {:<24} {:<12} {:<10} {:>6} {:>5}  {}",
                    j.id,
                    j.name,
                    j.tenant,
                    j.state,
                    j.gpus,
                    j.nodes.len(),
                    j.reason.as_deref().unwrap_or("")
                );
            }
        }
        // Jobs and batches share one id sequence: an id that is no job may be a batch.
        ClientCommand::Get { id } => {
            match answer::<JobView>(get(&format!("{base}/v1/jobs/{id}")).call()) {
                Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
                Err(e) if is_not_found(&e) => {
                    let v: BatchView =
                        answer(get(&format!("{base}/v1/sandboxes/{id}")).call()).map_err(|_| e)?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Err(e) => return Err(e),
            }
        }
        ClientCommand::Cancel { id } => {
            match answer::<JobView>(post(&format!("{base}/v1/jobs/{id}/cancel")).call()) {
                Ok(v) => println!("job {} is {}", v.id, v.state),
                Err(e) if is_not_found(&e) => {
                    let v: BatchView =
                        answer(post(&format!("{base}/v1/sandboxes/{id}/cancel")).call())
                            .map_err(|_| e)?;
                    println!("sandbox batch {} is {}", v.id, v.state);
                }
                Err(e) => return Err(e),
            }
        }
        ClientCommand::Logs { id, rank, follow } => {
            use std::io::Write;
            let mut from = 0u64;
            let started = std::time::Instant::now();
            let mut quiet_polls = 0;
            loop {
                let v: server::api::LogView = answer(
                    get(&format!("{base}/v1/jobs/{id}/logs"))
                        .query("rank", &rank.to_string())
                        .query("from", &from.to_string())
                        .call(),
                )?;
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
                    let j: JobView = answer(get(&format!("{base}/v1/jobs/{id}")).call())?;
                    if matches!(j.state.as_str(), "finished" | "cancelled") && waited {
                        break;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        }
        ClientCommand::Why { id } => {
            let v: JobView = answer(get(&format!("{base}/v1/jobs/{id}/why")).call())?;
            match (v.state.as_str(), v.reason) {
                (_, Some(r)) => println!("job {} is {}: {r}", v.id, v.state),
                ("running", None) => {
                    println!("job {} is running on {}", v.id, v.nodes.join(","))
                }
                (s, None) => println!("job {} is {s}", v.id),
            }
        }
        ClientCommand::Cost { json, plots } => {
            let summary: sched::cost::CostSummary = answer(get(&format!("{base}/v1/cost")).call())?;
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
        ClientCommand::Nodes => {
            let nodes: Vec<NodeView> = answer(get(&format!("{base}/v1/nodes")).call())?;
            println!(
                "{:<28} {:<9} {:>9} {:>12}",
                "NODE", "STATE", "GPU FREE", "CPU FREE"
            );
            for n in nodes {
                println!(
                    "{:<28} {:<9} {:>4}/{:<4} {:>6}/{:<6}",
                    n.name,
                    n.state,
                    n.free_gpus,
                    n.gpus,
                    n.free_cpu_millis / 1000,
                    n.cpu_millis / 1000
                );
            }
        }
        ClientCommand::Drain { node } | ClientCommand::Resume { node } => {
            let action = if matches!(command, ClientCommand::Drain { .. }) {
                "drain"
            } else {
                "resume"
            };
            // A topology path travels as one path segment.
            let target = node.replace('%', "%25").replace('/', "%2F");
            let views: Vec<NodeView> =
                answer(post(&format!("{base}/v1/nodes/{target}/{action}")).call())?;
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
        } => {
            let t: Token = answer(post(&format!("{base}/v1/tokens")).send_json(&IssueToken {
                role: role.clone(),
                tenant: tenant.clone(),
                expires_in_s: *expires_in_s,
            }))?;
            println!("{}", t.token);
            eprintln!(
                "token id {}{}",
                t.id,
                t.expires_at
                    .map_or_else(String::new, |e| format!(", expires at {e} (Unix seconds)"))
            );
        }
        ClientCommand::Tokens => {
            let list: Vec<server::api::TokenView> =
                answer(get(&format!("{base}/v1/tokens")).call())?;
            println!(
                "{:<18} {:<8} {:<16} {:>12} {:>12}",
                "ID", "ROLE", "TENANT", "ISSUED", "EXPIRES"
            );
            for t in list {
                println!(
                    "{:<18} {:<8} {:<16} {:>12} {:>12}{}",
                    t.id,
                    t.role,
                    t.tenant.as_deref().unwrap_or("-"),
                    t.issued_at,
                    t.expires_at
                        .map_or_else(|| "never".to_string(), |e| e.to_string()),
                    if t.expired { "  (expired)" } else { "" }
                );
            }
        }
        ClientCommand::RevokeToken { id } => {
            let _: serde_json::Value =
                answer(post(&format!("{base}/v1/tokens/{id}/revoke")).call())?;
            println!("token {id} is revoked");
        }
    }
    Ok(())
}
