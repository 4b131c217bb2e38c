//! `stargrid bench live`: the control plane measured end to end on loopback. A server with its
//! SQLite journal in a temporary directory, one hollow agent playing every node, and clients
//! over HTTP: jobs and sandboxes accepted durably per second, and the time from a submission
//! to its task started by the agent.

use anyhow::{Context, Result};
use clap::Args;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::api::{IssueToken, SubmitSandboxes};
use wire::Client;

#[derive(Args)]
pub struct LiveBenchArgs {
    /// Nodes (4-GPU trays in NVL72 domains), all played by one hollow agent.
    #[arg(long, default_value_t = 1000)]
    pub nodes: u64,
    /// Jobs submitted for the throughput figure.
    #[arg(long, default_value_t = 4000)]
    pub jobs: usize,
    /// Concurrent clients for the throughput figure.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Jobs submitted one at a time for the latency figure.
    #[arg(long, default_value_t = 300)]
    pub latency_jobs: usize,
    /// CPU hosts for the sandboxes (192 cores each).
    #[arg(long, default_value_t = 400)]
    pub cpu_hosts: u64,
    /// Sandboxes submitted for the sandbox throughput figure.
    #[arg(long, default_value_t = 400_000)]
    pub sandboxes: usize,
    /// Sandboxes per batch request.
    #[arg(long, default_value_t = 1000)]
    pub sandbox_batch: u32,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(a: &LiveBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("making a temporary data dir")?;
    let catalog = model::InstanceCatalog::builtin();
    let mut spec = fleet::generate::GenSpec {
        gpus: a.nodes.div_ceil(18) * 72,
        cpu_hosts: a.cpu_hosts,
        ..fleet::generate::GenSpec::default()
    };
    spec.clouds.truncate(1);
    let fleet = fleet::generate::generate(&spec, &catalog).context("generating the fleet")?;
    let config = server::Config {
        fleet_toml: Some(fleet::file::write(&fleet, &catalog)),
        heartbeat_timeout: Duration::from_secs(30),
        snapshot_every: 5_000,
        ..server::Config::new(
            format!("sqlite:{}", dir.path().join("journal.db").display()),
            dir.path(),
        )
    };
    let served = Loopback::start(&config)?;
    let (url, admin) = (served.url.clone(), served.admin.clone());
    let client = Client::new(&url, &admin);
    let names: Vec<String> = fleet.nodes().iter().map(|n| n.name.to_string()).collect();
    let agent_token = client.issue_token(&IssueToken {
        role: "agent".into(),
        tenant: None,
        expires_in_s: None,
        nodes: Some(model::hostlist::compress(&names)),
    })?;
    let node_count = names.len();
    let agent_stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = std::sync::mpsc::channel::<(u64, Instant)>();
    let agent = {
        let config = agent::AgentConfig {
            started: Some(started_tx),
            ..agent::AgentConfig::hollow(
                Client::new(&url, &agent_token.token),
                names,
                dir.path().join("agent"),
            )
        };
        let stop = agent_stop.clone();
        std::thread::spawn(move || agent::run(&config, &stop))
    };
    // Wait for every node to be up.
    let up_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = client.nodes()?;
        if nodes.iter().all(|n| n.state != "down") {
            break;
        }
        anyhow::ensure!(Instant::now() < up_deadline, "nodes did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Throughput: clients submit as fast as the server acknowledges (each durable).
    let (accepted, accepted_per_s) =
        crate::bench_scale::submit_many(&url, &admin, "default", a.jobs, a.clients, "0.5")?;
    // Sandboxes: clients place batches as fast as the server acknowledges them (each durable).
    let batches = a.sandboxes.div_ceil(a.sandbox_batch.max(1) as usize);
    let per_client = batches.div_ceil(a.clients.max(1));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..a.clients.max(1))
        .map(|c| {
            let client = Client::new(&url, &admin);
            let count = a.sandbox_batch.max(1);
            std::thread::spawn(move || -> Result<usize> {
                for i in 0..per_client {
                    client
                        .submit_sandboxes(&SubmitSandboxes {
                            egress: Vec::new(),
                            template: None,
                            name: format!("s{c}-{i}"),
                            tenant: "default".into(),
                            count,
                            cpu_millis: 100,
                            memory_mib: 128,
                            max_retries: 3,
                            command: Vec::new(),
                            env: Default::default(),
                            secret_env: Default::default(),
                            workdir: None,
                            interactive: false,
                            timeout_s: None,
                            idle_timeout_s: None,
                        })
                        .with_context(|| format!("client {c} batch {i}"))?;
                }
                Ok(per_client * count as usize)
            })
        })
        .collect();
    let mut sandboxes_accepted = 0;
    for c in clients {
        sandboxes_accepted += c
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
    }
    let sandboxes_per_s = sandboxes_accepted as f64 / t0.elapsed().as_secs_f64();
    // Let the throughput jobs drain before timing single submissions.
    std::thread::sleep(Duration::from_secs(3));
    while started_rx.try_recv().is_ok() {}
    let mut latencies_ms = Vec::with_capacity(a.latency_jobs);
    let mut placed_ms = Vec::with_capacity(a.latency_jobs);
    for i in 0..a.latency_jobs {
        let t = Instant::now();
        let s = client.submit_job(&crate::bench_scale::job(
            "default",
            format!("lat-{i}"),
            "0.2",
        ))?;
        // Running: the agent started its task (the hollow agent's start, in this process).
        loop {
            let left = Duration::from_secs(30).saturating_sub(t.elapsed());
            let (job, at) = started_rx
                .recv_timeout(left)
                .with_context(|| format!("job {} never started", s.id))?;
            if job == s.id {
                latencies_ms.push(at.duration_since(t).as_secs_f64() * 1000.0);
                break;
            }
        }
        let v = client.job(s.id)?;
        anyhow::ensure!(v.state != "pending", "job {} started while pending", s.id);
        placed_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    placed_ms.sort_by(f64::total_cmp);
    latencies_ms.sort_by(f64::total_cmp);
    agent_stop.store(true, Ordering::Relaxed);
    let _ = agent.join();
    served.stop();
    // Restart on the journal just written: from its latest snapshot, then from record 1.
    let restart = |replay_all: bool| -> Result<(f64, String, String)> {
        let t = Instant::now();
        let srv = server::Server::start(&server::Config {
            replay_all,
            ..config.clone()
        })
        .context("restarting the server")?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let out = (ms, srv.replay_summary().to_string(), srv.fingerprint());
        srv.close();
        Ok(out)
    };
    let (snapshot_ms, snapshot_summary, snapshot_state) = restart(false)?;
    let (full_ms, full_summary, full_state) = restart(true)?;
    anyhow::ensure!(
        snapshot_state == full_state,
        "a restart from the snapshot and a full replay disagree"
    );
    let report = serde_json::json!({
        "machine": crate::bench::machine(),
        "nodes": node_count,
        "clients": a.clients,
        "jobs_accepted": accepted,
        "jobs_accepted_per_s": accepted_per_s,
        "sandboxes_accepted": sandboxes_accepted,
        "sandbox_batch": a.sandbox_batch,
        "sandboxes_accepted_per_s": sandboxes_per_s,
        "submit_to_running_p50_ms": percentile(&latencies_ms, 0.5),
        "submit_to_running_p99_ms": percentile(&latencies_ms, 0.99),
        "restart_from_snapshot_ms": snapshot_ms,
        "restart_from_snapshot": snapshot_summary,
        "restart_full_replay_ms": full_ms,
        "restart_full_replay": full_summary,
        "note": "submit_to_running: from the POST until the hollow agent starts the task (it long-polls /v1/agent/wait and heartbeats the node at once). Every acceptance is durable (SQLite, synchronous=FULL) before it is answered.",
    });
    if a.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// A server started in this process over a configuration, serving `/v1` on a loopback port
/// until [`Loopback::stop`]: what the live benchmarks measure against.
pub(crate) struct Loopback {
    /// Its base URL.
    pub url: String,
    /// Its first admin token.
    pub admin: String,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    runtime: tokio::runtime::Runtime,
}

impl Loopback {
    /// Starts the server (replaying its journal) and serves it on a free loopback port.
    pub fn start(config: &server::Config) -> Result<Loopback> {
        let srv = server::Server::start(config).context("starting the server")?;
        let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("listening")?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let stop = stop.clone();
            runtime.spawn(server::serve(srv, listener, async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }))
        };
        let admin = std::fs::read_to_string(&config.admin_token_file)?
            .trim()
            .to_string();
        Ok(Loopback {
            url,
            admin,
            stop,
            task,
            runtime,
        })
    }

    /// Stops serving and closes the journal.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.runtime.block_on(self.task);
    }
}
