//! `stargrid bench scale`: one cell at the fleet's real size. The server runs as its own
//! process (`stargrid server`, its SQLite journal in a temporary directory) so that its CPU
//! and memory are its own; hollow agents in this process play every node of the fleet
//! (several agents, each beating its nodes in batches from several threads). Measured: how
//! long until every node is up, the server's CPU in steady state at the chosen heartbeat
//! period and its resident memory, jobs accepted per second and submit → running latency with
//! a backlog of queued jobs.

use crate::bench_live::percentile;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::api::{IssueToken, SubmitJob};
use wire::Client;

#[derive(Args)]
pub struct ScaleBenchArgs {
    /// GPUs of the fleet, in 4-GPU GB200 trays of NVL72 domains (default: the reference
    /// fleet's).
    #[arg(long, default_value_t = 499_968)]
    pub gpus: u64,
    /// CPU hosts of the fleet.
    #[arg(long, default_value_t = 100_000)]
    pub cpu_hosts: u64,
    /// Hollow agents sharing the nodes: one plays the first zone (behind a relay the outage
    /// cuts), the others share the rest.
    #[arg(long, default_value_t = 8)]
    pub agents: usize,
    /// Milliseconds between a node's heartbeats.
    #[arg(long, default_value_t = 10_000)]
    pub interval_ms: u64,
    /// A node silent for this many seconds is down.
    #[arg(long, default_value_t = 40)]
    pub heartbeat_timeout_s: u64,
    /// Seconds of steady state the server's CPU is measured over.
    #[arg(long, default_value_t = 30)]
    pub steady_s: u64,
    /// Jobs left queued (a tenant with no GPU quota) before the throughput and latency runs.
    #[arg(long, default_value_t = 100_000)]
    pub queued: usize,
    /// Jobs submitted for the throughput figure.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Jobs submitted one at a time for the latency figure.
    #[arg(long, default_value_t = 300)]
    pub latency_jobs: usize,
    /// Endless jobs placed in the first zone before its agent is cut off (0: no outage).
    #[arg(long, default_value_t = 2000)]
    pub outage_jobs: usize,
    /// Jobs in the cell (the backlog topped up) when listings are timed; 0: no listing
    /// figures.
    #[arg(long, default_value_t = 1_000_000)]
    pub listing_jobs: usize,
    /// Frontends the agents move behind for the last phase (0: none), with the writer's CPU
    /// measured again there.
    #[arg(long, default_value_t = 2)]
    pub frontends: usize,
    /// GPU trays of a new region applied to the running cell while jobs run (whole NVL72
    /// domains), before the first zone is removed (0: no fleet change).
    #[arg(long, default_value_t = 10_008)]
    pub fleet_trays: usize,
    /// Endless jobs running when the fleet changes, and as many run on the new trays.
    #[arg(long, default_value_t = 1000)]
    pub fleet_jobs: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// CPU seconds (user + system) and resident bytes of a process, from `/proc`.
pub(crate) fn process_usage(pid: u32) -> Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after its ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the ')'.
    // In USER_HZ ticks: 100 a second on Linux whatever the kernel's own tick rate.
    let cpu = (ticks(11) + ticks(12)) as f64 / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok((cpu, rss_kib * 1024))
}

/// The server's CPU cores used over `span`, measured now.
fn cores_over(pid: u32, span: Duration) -> Result<f64> {
    let (before, _) = process_usage(pid)?;
    let t = Instant::now();
    std::thread::sleep(span);
    let (after, _) = process_usage(pid)?;
    Ok((after - before) / t.elapsed().as_secs_f64())
}

pub(crate) fn job(tenant: &str, name: String, secs: &str) -> SubmitJob {
    SubmitJob {
        name,
        tenant: tenant.into(),
        priority: "research".into(),
        gpu: "GB200".into(),
        nodes: 1,
        gpus_per_node: 4,
        cpu_millis_per_node: 0,
        memory_mib_per_node: 0,
        segment: None,
        spares: 0,
        time_limit_s: 600,
        command: vec!["sleep".into(), secs.into()],
        env: Default::default(),
        secret_env: Default::default(),
        workdir: None,
        placement: Default::default(),
        gpu_milli: 0,
        models: Vec::new(),
    }
}

/// Submits `count` jobs of `tenant` (each `sleep secs`) from `clients` threads, each with its
/// own connections; returns the jobs accepted and how many a second.
pub(crate) fn submit_many(
    url: &str,
    token: &str,
    tenant: &str,
    count: usize,
    clients: usize,
    secs: &str,
) -> Result<(usize, f64)> {
    let t0 = Instant::now();
    let per_client = count.div_ceil(clients.max(1));
    let threads: Vec<_> = (0..clients.max(1))
        .map(|c| {
            let client = Client::new(url, token);
            let (tenant, secs) = (tenant.to_string(), secs.to_string());
            std::thread::spawn(move || -> Result<usize> {
                for i in 0..per_client {
                    client.submit_job(&job(&tenant, format!("{tenant}-{c}-{i}"), &secs))?;
                }
                Ok(per_client)
            })
        })
        .collect();
    let mut accepted = 0;
    for t in threads {
        accepted += t
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
    }
    Ok((accepted, accepted as f64 / t0.elapsed().as_secs_f64()))
}

/// The server as a child process, killed when dropped.
struct ServerProcess {
    child: std::process::Child,
    url: String,
    admin: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path, a: &ScaleBenchArgs) -> Result<ServerProcess> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.join("data");
    let log = std::fs::File::create(dir.join("server.log"))?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("server")
        .arg("--data-dir")
        .arg(&data)
        .arg("--fleet")
        .arg(dir.join("fleet.toml"))
        .arg("--tenants")
        .arg(dir.join("tenants.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--cell", "bench"])
        .args(["--heartbeat-timeout-s", &a.heartbeat_timeout_s.to_string()])
        .args(["--max-live-jobs-per-tenant", "1000000"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting the server")?;
    let mut server = ServerProcess {
        child,
        url,
        admin: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "the server exited ({status}); see {}",
                dir.join("server.log").display()
            );
        }
        if let Ok(token) = std::fs::read_to_string(data.join("admin.token")) {
            if Client::new(&server.url, token.trim()).cell().is_ok() {
                server.admin = token.trim().to_string();
                return Ok(server);
            }
        }
        if Instant::now() > deadline {
            bail!("the server did not start within 300 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn run(a: &ScaleBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("making a temporary dir")?;
    let say = |s: &str| {
        if !a.json {
            eprintln!("{s}");
        }
    };
    let catalog = model::InstanceCatalog::builtin();
    let spec = fleet::generate::GenSpec {
        gpus: a.gpus,
        cpu_hosts: a.cpu_hosts,
        ..fleet::generate::GenSpec::default()
    };
    let fleet = fleet::generate::generate(&spec, &catalog).context("generating the fleet")?;
    std::fs::write(
        dir.path().join("fleet.toml"),
        fleet::file::write(&fleet, &catalog),
    )?;
    // `backlog` holds no GPU quota: its jobs wait, and stay in every pass's queue.
    std::fs::write(
        dir.path().join("tenants.toml"),
        "[[tenants]]\nname = \"bench\"\ngpus = 1000000\n\n[[tenants]]\nname = \"backlog\"\ngpus = 0\n",
    )?;
    let names: Vec<String> = fleet.nodes().iter().map(|n| n.name.to_string()).collect();
    // The first zone with GPU trays goes silent in the outage; its agent plays it alone.
    let zone_of = |n: &model::Node| fleet.zone_of(n.parent).map(|z| fleet.topo_path(z));
    let first_zone = fleet
        .nodes()
        .iter()
        .find(|n| n.capacity.gpus > 0)
        .and_then(zone_of)
        .context("the fleet has no GPU tray in a zone")?;
    let (zone_nodes, rest): (Vec<String>, Vec<String>) = fleet
        .nodes()
        .iter()
        .map(|n| {
            (
                zone_of(n).as_deref() == Some(first_zone.as_str()),
                n.name.to_string(),
            )
        })
        .fold(
            (Vec::new(), Vec::new()),
            |(mut z, mut r), (inside, name)| {
                if inside {
                    z.push(name)
                } else {
                    r.push(name)
                }
                (z, r)
            },
        );
    let zone_trays = fleet
        .nodes()
        .iter()
        .filter(|n| n.capacity.gpus > 0 && zone_of(n).as_deref() == Some(first_zone.as_str()))
        .count();
    let other_zones: Vec<String> = fleet
        .topo()
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind == model::TopoKind::Zone)
        .map(|(i, _)| fleet.topo_path(model::TopoId(i as u32)))
        .filter(|p| *p != first_zone)
        .collect();
    drop(fleet);
    say(&format!("{} nodes; starting the server", names.len()));
    let server = start_server(dir.path(), a)?;
    let pid = server.child.id();
    let admin = Client::new(&server.url, &server.admin);
    let relay = crate::bench_outage::Relay::start(
        server
            .url
            .trim_start_matches("http://")
            .parse()
            .context("the server's address")?,
    )?;
    // Agents: the first zone's behind the relay, the rest sharing the other nodes, each
    // under a credential bound to its nodes. They keep their tasks for long without answers
    // (as a partitioned node would), so that the outage shows their old runs stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = std::sync::mpsc::channel::<(u64, Instant)>();
    let tally = crate::bench_outage::Tally::default();
    let share = rest.len().div_ceil(a.agents.saturating_sub(1).max(1));
    let shares = std::iter::once(zone_nodes.as_slice()).chain(rest.chunks(share.max(1)));
    let mut credentials = Vec::new();
    let t_agents = Instant::now();
    for nodes in shares {
        let token = admin.issue_token(&IssueToken {
            role: "agent".into(),
            tenant: None,
            expires_in_s: None,
            nodes: Some(model::hostlist::compress(nodes)),
        })?;
        credentials.push(crate::bench_frontends::Share {
            nodes: nodes.to_vec(),
            token: token.token,
        });
    }
    let agents_for = |url_of: &dyn Fn(usize) -> String,
                      tag: &str,
                      stop: &Arc<AtomicBool>,
                      started_tx: &std::sync::mpsc::Sender<(u64, Instant)>| {
        crate::bench_frontends::start_agents(
            &credentials,
            url_of,
            &crate::bench_frontends::AgentSettings {
                interval: Duration::from_millis(a.interval_ms),
                fence_after: Duration::from_secs(a.heartbeat_timeout_s * 20),
                dir: dir.path(),
                tag,
            },
            &tally,
            started_tx,
            stop,
        )
    };
    let direct = |i: usize| match i {
        0 => format!("http://{}", relay.addr),
        _ => server.url.clone(),
    };
    let agents = agents_for(&direct, "direct", &stop, &started_tx);
    // Every node up.
    let up_deadline = Instant::now() + Duration::from_secs(600);
    let all_up_seconds = loop {
        let cell = admin.cell()?;
        if cell.nodes.get("down").copied().unwrap_or(0) == 0 {
            break t_agents.elapsed().as_secs_f64();
        }
        if Instant::now() > up_deadline {
            bail!("nodes still down after 600 s: {:?}", cell.nodes);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    say(&format!("all up in {all_up_seconds:.1} s; steady state"));
    // Steady state: a full heartbeat period at least after the last node came up.
    std::thread::sleep(Duration::from_millis(a.interval_ms));
    let steady = cores_over(pid, Duration::from_secs(a.steady_s))?;
    let (_, rss_idle) = process_usage(pid)?;
    say(&format!("steady {steady:.3} cores; queueing the backlog"));
    let backlog_per_s = submit_many(
        &server.url,
        &server.admin,
        "backlog",
        a.queued,
        a.clients,
        "2",
    )?
    .1;
    say(&format!(
        "backlog queued at {backlog_per_s:.0}/s; throughput"
    ));
    let (cpu0, _) = process_usage(pid)?;
    let t_jobs = Instant::now();
    let accepted_per_s =
        submit_many(&server.url, &server.admin, "bench", a.jobs, a.clients, "2")?.1;
    let (cpu1, _) = process_usage(pid)?;
    let busy = (cpu1 - cpu0) / t_jobs.elapsed().as_secs_f64();
    // Let the throughput jobs end before timing single submissions.
    std::thread::sleep(Duration::from_secs(4));
    while started_rx.try_recv().is_ok() {}
    say("latency");
    let latencies_ms =
        crate::bench_frontends::submit_to_running_ms(&admin, "lat", a.latency_jobs, &started_rx)?;
    let cell = admin.cell()?;
    let outage = match a.outage_jobs {
        0 => serde_json::Value::Null,
        jobs => {
            say("zone outage");
            crate::bench_outage::run(
                &admin,
                &relay,
                &tally,
                0,
                zone_nodes.len(),
                &other_zones,
                jobs,
                a.latency_jobs.min(100),
                &started_rx,
                Duration::from_secs(a.heartbeat_timeout_s.max(10)),
            )?
        }
    };
    let steady_loaded = cores_over(pid, Duration::from_secs(a.steady_s.min(10)))?;
    let (_, rss) = process_usage(pid)?;
    // The same agents behind frontends: the direct ones stop first (their nodes stay up: a
    // new agent beats them well inside the timeout).
    let (frontends, last_stop, agents) = match a.frontends {
        0 => (serde_json::Value::Null, stop.clone(), agents),
        n => {
            say(&format!("moving the agents behind {n} frontends"));
            stop.store(true, Ordering::Relaxed);
            for t in agents {
                let _ = t.join();
            }
            let phase = crate::bench_frontends::Phase {
                dir: dir.path(),
                writer: &admin,
                writer_pid: pid,
                admin_token: &server.admin,
                frontends: n,
                interval: Duration::from_millis(a.interval_ms),
                steady: Duration::from_secs(a.steady_s),
                latency_jobs: a.latency_jobs.min(100),
            };
            let behind = Arc::new(AtomicBool::new(false));
            let (front_tx, front_rx) = std::sync::mpsc::channel();
            let (frontends, moved) = {
                let urls = crate::bench_frontends::start_frontends(&phase)?;
                let behind_urls = |i: usize| urls[i % urls.len()].url.clone();
                let agents = agents_for(&behind_urls, "behind", &behind, &front_tx);
                let report =
                    crate::bench_frontends::measure(&phase, &credentials, &urls, &front_rx);
                behind.store(true, Ordering::Relaxed);
                for t in agents {
                    let _ = t.join();
                }
                (urls, report?)
            };
            drop(frontends);
            // Back to the writer for the rest, as in the runs before frontends: three copies
            // of a million jobs do not fit this machine beside each other.
            say("agents back on the writer");
            let again = Arc::new(AtomicBool::new(false));
            let agents = agents_for(&|_| server.url.clone(), "again", &again, &started_tx);
            (moved, again, agents)
        }
    };
    let fleet_change = match a.fleet_trays {
        0 => serde_json::Value::Null,
        trays => {
            say(&format!(
                "a region of {trays} trays joins; the first zone leaves"
            ));
            let zone = first_zone.rsplit('/').next().unwrap_or(&first_zone);
            crate::bench_fleet::run(&crate::bench_fleet::Phase {
                dir: dir.path(),
                admin: &admin,
                url: &server.url,
                tally: &tally,
                zone_agent: 0,
                zone,
                zone_trays,
                zone_path: &first_zone,
                other_zones: &other_zones,
                trays,
                jobs: a.fleet_jobs,
                interval: Duration::from_millis(a.interval_ms),
                limit: Duration::from_secs(a.heartbeat_timeout_s.max(10) * 30),
            })?
        }
    };
    let listing = match a.listing_jobs {
        0 => serde_json::Value::Null,
        want => {
            let have = a.queued + a.jobs + a.latency_jobs;
            say(&format!("topping up to {want} jobs; listings"));
            submit_many(
                &server.url,
                &server.admin,
                "backlog",
                want.saturating_sub(have),
                a.clients,
                "2",
            )?;
            time_listings(&admin, want as u64)?
        }
    };
    let (_, rss_listed) = process_usage(pid)?;
    let snapshots = snapshot_pauses(&admin)?;
    last_stop.store(true, Ordering::Relaxed);
    for t in agents {
        let _ = t.join();
    }
    drop(server);
    let report = serde_json::json!({
        "machine": crate::bench::machine(),
        "nodes": names.len(),
        "agents": a.agents.max(2),
        "heartbeat_interval_s": a.interval_ms as f64 / 1000.0,
        "heartbeat_timeout_s": a.heartbeat_timeout_s,
        "all_up_seconds": all_up_seconds,
        "server_cpu_cores_steady": steady,
        "server_cpu_cores_steady_with_backlog": steady_loaded,
        "server_cpu_cores_accepting": busy,
        "server_rss_bytes_idle": rss_idle,
        "server_rss_bytes": rss,
        "server_rss_bytes_at_listing_jobs": rss_listed,
        "listing_jobs": a.listing_jobs,
        "list_jobs_ms": listing,
        "backlog_accepted_per_s": backlog_per_s,
        "queued_jobs": cell.jobs_pending,
        "jobs_accepted_per_s": accepted_per_s,
        "submit_to_running_p50_ms": percentile(&latencies_ms, 0.5),
        "submit_to_running_p99_ms": percentile(&latencies_ms, 0.99),
        "zone_outage": outage,
        "snapshot_copies": snapshots.0,
        "snapshot_copy_mean_ms": snapshots.1,
        "snapshot_copy_max_ms_at_most": snapshots.2,
        "frontends": a.frontends,
        "writer_cpu_cores_without_frontends": steady,
        "writer_cpu_cores_with_frontends": frontends["writer_cpu_cores_with_frontends"],
        "with_frontends": frontends,
        "fleet_change": fleet_change,
        "note": "The server is its own process; the hollow agents and the clients share this machine's cores with it. server_cpu_cores_steady: every node heartbeating, nothing submitted. Jobs accepted: each durable (SQLite, synchronous=FULL) before it is answered, with queued_jobs waiting in the queue. submit_to_running: from the POST until a hollow agent starts the task. with_frontends: the same agents moved behind that many frontends (each its own process, following the writer), the writer's and the frontends' CPU over the same span; its submit_to_running has the client and the agents behind frontends.",
    });
    if a.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// Pages of `GET /v1/jobs` at `total` jobs: the median of five calls of each, in
/// milliseconds, by what the page asks for.
fn time_listings(admin: &Client, total: u64) -> Result<serde_json::Value> {
    let page =
        |tenant: Option<&str>, state: Option<&str>, after: Option<u64>| wire::client::JobQuery {
            tenant: tenant.map(str::to_string),
            state: state.map(str::to_string),
            after,
            limit: Some(100),
        };
    let cases = [
        ("first_page", page(None, None, None)),
        ("middle_page", page(None, None, Some(total / 2))),
        ("running", page(None, Some("running"), None)),
        (
            "pending_middle",
            page(None, Some("pending"), Some(total / 2)),
        ),
        ("finished", page(None, Some("finished"), None)),
        ("one_tenant", page(Some("bench"), None, None)),
        (
            "one_tenant_pending",
            page(Some("bench"), Some("pending"), None),
        ),
    ];
    let mut out = serde_json::Map::new();
    for (name, query) in cases {
        let mut ms = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            admin.jobs(&query)?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        out.insert(name.into(), ms[2].into());
    }
    Ok(out.into())
}

/// Snapshots taken and how long their copies held the state (every request waits meanwhile),
/// from the server's `stargrid_snapshot_copy_duration_seconds` histogram: the count, the mean
/// and the upper bound of the highest bucket reached, in milliseconds.
fn snapshot_pauses(admin: &Client) -> Result<(u64, f64, f64)> {
    let text = admin.metrics_text()?;
    let series = "stargrid_snapshot_copy_duration_seconds";
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let mut count = 0.0;
    let mut sum = 0.0;
    let mut max_bound = 0.0;
    let mut below = 0.0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{series}_bucket{{le=\"")) {
            let bound = rest.split('"').next().and_then(|b| b.parse::<f64>().ok());
            if let (Some(bound), Some(n)) = (bound, value(line)) {
                if n > below {
                    max_bound = bound;
                    below = n;
                }
            }
        } else if line.starts_with(&format!("{series}_count")) {
            count = value(line).unwrap_or(0.0);
        } else if line.starts_with(&format!("{series}_sum")) {
            sum = value(line).unwrap_or(0.0);
        }
    }
    let mean_ms = if count > 0.0 {
        sum / count * 1000.0
    } else {
        0.0
    };
    Ok((count as u64, mean_ms, max_bound * 1000.0))
}
