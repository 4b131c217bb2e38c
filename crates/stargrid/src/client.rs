//! The client commands: `submit`, `queue`, `get`, `cancel`, `why`, `nodes`, over the server's
//! HTTP API (`--server`, or `STARGRID_SERVER`; default http://127.0.0.1:7070).

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use server::api::{ApiError, IssueToken, JobList, JobView, NodeView, SubmitJob, Submitted, Token};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Submit a training job from a TOML file (the fields of `POST /v1/jobs`).
    Submit {
        /// The job file.
        file: PathBuf,
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
    /// One job, as JSON.
    Get {
        /// Job id.
        id: u64,
    },
    /// Cancel a job.
    Cancel {
        /// Job id.
        id: u64,
    },
    /// Why a job is pending (or where it runs).
    Why {
        /// Job id.
        id: u64,
    },
    /// Nodes with their state and free capacity.
    Nodes,
    /// Issue a token (needs an admin token): prints it once.
    #[command(name = "token")]
    Token {
        /// admin, tenant or agent.
        #[arg(long)]
        role: String,
        /// The tenant, for a tenant token.
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Turns a refused request into an error that names the field.
fn answer<T: serde::de::DeserializeOwned>(r: Result<ureq::Response, ureq::Error>) -> Result<T> {
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

pub fn run(server: &str, token: &str, command: &ClientCommand) -> Result<()> {
    let base = server.trim_end_matches('/');
    if token.is_empty() {
        bail!("no token: pass --token or set STARGRID_TOKEN (the server's first admin token is in its data dir, admin.token)");
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
            let job: SubmitJob =
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let s: Submitted = answer(post(&format!("{base}/v1/jobs")).send_json(&job))?;
            println!("submitted job {} (journal record {})", s.id, s.seq);
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
        ClientCommand::Get { id } => {
            let v: JobView = answer(get(&format!("{base}/v1/jobs/{id}")).call())?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ClientCommand::Cancel { id } => {
            let v: JobView = answer(post(&format!("{base}/v1/jobs/{id}/cancel")).call())?;
            println!("job {} is {}", v.id, v.state);
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
        ClientCommand::Token { role, tenant } => {
            let t: Token = answer(post(&format!("{base}/v1/tokens")).send_json(&IssueToken {
                role: role.clone(),
                tenant: tenant.clone(),
            }))?;
            println!("{}", t.token);
        }
    }
    Ok(())
}
