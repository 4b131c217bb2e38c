//! `stargrid bench sandboxes`: isolated sandboxes started for real on this host. A server on
//! loopback with its journal in a temporary directory, one real agent for one CPU host (root:
//! tenants' users, cgroups and bubblewrap where the host has them), one batch of sleeping
//! sandboxes: how fast they start, what each costs the host (its cgroup's memory), and whether
//! the agent kept heartbeating with all of them alive. Then interactive sandboxes, measured as a
//! client sees them: exec round trips in one sandbox, and create → first output of a command
//! in a new sandbox, cold (nothing started ahead) and warm (an agent with a warm pool).

use anyhow::{Context, Result};
use clap::Args;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::api::{ExecRequest, IssueToken, SubmitSandboxes};
use wire::Client;

#[derive(Args)]
pub struct SandboxBenchArgs {
    /// Sandboxes in the batch, all on one host.
    #[arg(long, default_value_t = 1000)]
    pub count: u32,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Exec round trips measured in one sandbox.
    #[arg(long, default_value_t = 200)]
    pub execs: u32,
    /// Sandboxes created (each with one command) for the cold and for the warm figures.
    #[arg(long, default_value_t = 50)]
    pub creates: u32,
    /// The warm pool of the agent that measures warm creates.
    #[arg(long, default_value_t = 4)]
    pub warm_pool: u32,
    /// Interactive sandboxes kept live at once to weigh one (each with its init).
    #[arg(long, default_value_t = 200)]
    pub interactive: u32,
}

/// The host the sandboxes go to (a CPU host of the default fleet).
const HOST: &str = "cpu0000000";

pub fn run(a: &SandboxBenchArgs) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("stargrid-bench-sandboxes-")
        .tempdir()
        .context("making a temporary directory")?;
    {
        // Tasks running as tenants' users must reach their directories.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let config = server::Config {
        heartbeat_timeout: Duration::from_secs(10),
        snapshot_every: 0,
        ..server::Config::new(
            format!("sqlite:{}", dir.path().join("data/journal.db").display()),
            &dir.path().join("data"),
        )
    };
    crate::server_cmd::private_dir(&dir.path().join("data"))?;
    let served = crate::bench_live::Loopback::start(&config)?;
    let (url, admin) = (served.url.clone(), served.admin.clone());
    let client = Client::new(&url, &admin);
    let credential = client.issue_token(&IssueToken {
        role: "agent".into(),
        tenant: None,
        expires_in_s: None,
        nodes: Some(HOST.into()),
    })?;
    let work = dir.path().join("agent");
    let (run_as, users) = agent::RunAs::best(&work, agent::users::DEFAULT_UID_BASE)?;
    let isolation = agent::isolation::Isolation::detect(
        agent::isolation::IsolationChoice::Auto,
        matches!(run_as, agent::RunAs::TenantUsers(_)),
    )
    .map_err(anyhow::Error::msg)?;
    let cgroups = agent::cgroup::Cgroups::detect(std::path::Path::new("/sys/fs/cgroup")).ok();
    let limits = cgroups
        .as_ref()
        .map_or("no cgroups", agent::cgroup::Cgroups::describe);
    let isolated = isolation.describe();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<(u64, Instant)>();
    let base = agent::AgentConfig {
        client: Client::new(&url, &credential.token),
        nodes: vec![HOST.into()],
        hollow: false,
        work_dir: work.clone(),
        interval: Duration::from_secs(1),
        grace: Duration::from_secs(1),
        fence_after: Duration::from_secs(60),
        started: None,
        stopped: None,
        cgroups: cgroups.clone(),
        inventory: None,
        run_as,
        workdir_root: None,
        isolation,
        isolate_tasks: false,
        warm_pools: Vec::new(),
        templates: Default::default(),
        egress: Default::default(),
        init_program: std::env::current_exe().ok(),
        advertise_address: "127.0.0.1".into(),
    };
    let agent = Agent::start(agent::AgentConfig {
        started: Some(started_tx),
        stopped: None,
        ..base.clone()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .nodes()?
        .iter()
        .any(|n| n.name == HOST && n.state == "down")
    {
        anyhow::ensure!(Instant::now() < deadline, "the host did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss_before = own_rss_bytes();
    let submitted = Instant::now();
    let batch = client.submit_sandboxes(&SubmitSandboxes {
        egress: Vec::new(),
        template: None,
        name: "bench".into(),
        tenant: "default".into(),
        count: a.count,
        cpu_millis: 100,
        memory_mib: 32,
        max_retries: 0,
        command: vec!["sleep".into(), "3600".into()],
        env: Default::default(),
        secret_env: Default::default(),
        workdir: None,
        interactive: false,
        timeout_s: None,
        idle_timeout_s: None,
    })?;
    let mut starts = Vec::with_capacity(a.count as usize);
    while starts.len() < a.count as usize {
        let (_, at) = started_rx
            .recv_timeout(Duration::from_secs(60))
            .context("sandboxes stopped starting")?;
        starts.push(at);
    }
    let all_started = starts.iter().max().copied().unwrap_or(submitted);
    let first = starts.iter().min().copied().unwrap_or(submitted);
    // Give the last ones a moment to settle, then weigh them.
    std::thread::sleep(Duration::from_secs(2));
    let host_bytes = sandbox_memory_bytes(&work);
    let rss_after = own_rss_bytes();
    let live = client.batch(batch.id)?.live;
    let host_up = client
        .nodes()?
        .iter()
        .any(|n| n.name == HOST && n.state != "down");
    client.cancel_batch(batch.id)?;
    let end_deadline = Instant::now() + Duration::from_secs(60);
    while client.batch(batch.id)?.live > 0 && Instant::now() < end_deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Interactive: what one costs the host, live and idle with its init.
    let interactive_bytes = {
        let id = interactive_batch(&client, a.interactive, 100)?;
        for _ in 0..a.interactive {
            started_rx
                .recv_timeout(Duration::from_secs(60))
                .context("interactive sandboxes stopped starting")?;
        }
        std::thread::sleep(Duration::from_secs(2));
        let bytes = sandbox_memory_bytes(&work);
        client.cancel_batch(id)?;
        // Until the agent has stopped them all and removed their groups: what follows is
        // measured on a quiet host.
        let deadline = Instant::now() + Duration::from_secs(60);
        while sandbox_memory_bytes(&work).is_some_and(|b| b > 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        bytes.map(|b| b / u64::from(a.interactive.max(1)))
    };
    // Exec round trips, then creates with nothing started ahead.
    let exec_ms = exec_roundtrips(&client, a.execs)?;
    let cold_ms = creates_to_output(&client, a.creates)?;
    agent.stop();
    // A second agent for the same host, with a warm pool.
    let agent = Agent::start(agent::AgentConfig {
        work_dir: dir.path().join("agent-warm"),
        warm_pools: vec![agent::WarmPool {
            template: None,
            size: a.warm_pool,
        }],
        templates: Default::default(),
        egress: Default::default(),
        ..base
    });
    let warm_ms = creates_to_output(&client, a.creates)?;
    agent.stop();
    served.stop();
    let spread = all_started.duration_since(first).as_secs_f64();
    let report = serde_json::json!({
        "machine": crate::bench::machine(),
        "isolation": isolated,
        "limits": limits,
        "tenant_users": users,
        "sandboxes": a.count,
        "live_after_start": live,
        "host_stayed_up": host_up,
        "submit_to_all_started_s": all_started.duration_since(submitted).as_secs_f64(),
        "sandboxes_started_per_s": if spread > 0.0 { f64::from(a.count) / spread } else { 0.0 },
        "host_overhead_bytes_per_sandbox": host_bytes.map(|b| b / u64::from(a.count.max(1))),
        "interactive_host_overhead_bytes_per_sandbox": interactive_bytes,
        "server_and_agent_bytes_per_sandbox":
            rss_after.saturating_sub(rss_before) / u64::from(a.count.max(1)),
        "warm_pool": a.warm_pool,
        "warm_create_to_output_p50_ms": pct(&warm_ms, 0.5),
        "warm_create_to_output_p90_ms": pct(&warm_ms, 0.9),
        "warm_create_to_output_p99_ms": pct(&warm_ms, 0.99),
        "cold_create_to_output_p50_ms": pct(&cold_ms, 0.5),
        "cold_create_to_output_p99_ms": pct(&cold_ms, 0.99),
        "exec_roundtrip_p50_ms": pct(&exec_ms, 0.5),
        "exec_roundtrip_p90_ms": pct(&exec_ms, 0.9),
        "exec_roundtrip_p99_ms": pct(&exec_ms, 0.99),
        "note": "host_overhead_bytes_per_sandbox: the memory the kernel charges the sandboxes' \
                 own cgroups (each a sleeping process under its isolation layer, with the \
                 processes that set it up), summed and divided by their number; \
                 interactive_host_overhead_bytes_per_sandbox: the same for live idle \
                 interactive sandboxes (each with its init). \
                 exec_roundtrip: POST /v1/sandboxes/{id}/exec of `true` to its exit code, \
                 through the server and the agent, one after another in one live sandbox. \
                 create_to_output: POST /v1/sandboxes (one interactive sandbox, durable) then \
                 its exec of `echo`, to the first byte of output at the client; cold: the \
                 agent starts the sandbox on demand; warm: it claims one of its warm pool \
                 (the pool refills between creates).",
    });
    if a.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// The resident memory of this process (the server and the agent run in it).
fn own_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The memory the kernel charges the sandboxes' groups (v1 `memory.usage_in_bytes`, v2
/// `memory.current`), summed; `None` without cgroups.
fn sandbox_memory_bytes(work: &std::path::Path) -> Option<u64> {
    let work = std::fs::canonicalize(work).ok()?;
    let root = std::path::Path::new("/sys/fs/cgroup");
    let (dir, file) = if root.join("cgroup.controllers").exists() {
        (root.join("stargrid"), "memory.current")
    } else {
        (root.join("memory/stargrid"), "memory.usage_in_bytes")
    };
    let tag = agent::task_group_tag(&work);
    let mut total = 0;
    let mut found = false;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{tag}-{HOST}-")) && name.contains("-sandbox-") {
            if let Some(bytes) = std::fs::read_to_string(entry.path().join(file))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
            {
                total += bytes;
                found = true;
            }
        }
    }
    found.then_some(total)
}

/// An agent running on a thread of this process.
struct Agent {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(), agent::AgentError>>,
}

impl Agent {
    fn start(config: agent::AgentConfig) -> Agent {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || agent::run(&config, &flag));
        Agent { stop, thread }
    }

    /// Stops it (its sandboxes with it) and waits.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn pct(sorted_ms: &[f64], p: f64) -> Option<f64> {
    (!sorted_ms.is_empty()).then(|| crate::bench_live::percentile(sorted_ms, p))
}

/// One interactive sandbox of one CPU (its commands' latency depends on its CPU share: a
/// tenth of a CPU is throttled for most of every 100 ms period once it used its 10 ms).
fn interactive_sandbox(client: &Client) -> Result<u64> {
    interactive_batch(client, 1, 1000)
}

fn interactive_batch(client: &Client, count: u32, cpu_millis: u32) -> Result<u64> {
    Ok(client
        .submit_sandboxes(&SubmitSandboxes {
            egress: Vec::new(),
            template: None,
            name: "bench-interactive".into(),
            tenant: "default".into(),
            count,
            cpu_millis,
            memory_mib: 256,
            max_retries: 0,
            command: Vec::new(),
            env: Default::default(),
            secret_env: Default::default(),
            workdir: None,
            interactive: true,
            timeout_s: None,
            idle_timeout_s: None,
        })?
        .id)
}

fn command(words: &[&str]) -> ExecRequest {
    ExecRequest {
        command: words.iter().map(|w| w.to_string()).collect(),
        env: Default::default(),
        stdin: None,
        timeout_s: Some(30),
    }
}

/// `n` execs of `true` one after another in one sandbox: each round trip, ms, sorted.
fn exec_roundtrips(client: &Client, n: u32) -> Result<Vec<f64>> {
    let id = interactive_sandbox(client)?;
    // The first waits for the sandbox to start; it is not counted.
    client.exec(id, 0, &command(&["true"]), |_| {})?;
    let mut ms = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let at = Instant::now();
        let end = client.exec(id, 0, &command(&["true"]), |_| {})?;
        anyhow::ensure!(end.exit_code == Some(0), "an exec failed: {end:?}");
        ms.push(at.elapsed().as_secs_f64() * 1e3);
    }
    client.cancel_batch(id)?;
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// `n` times: a new sandbox and its first command, to the first byte of output; ms, sorted.
fn creates_to_output(client: &Client, n: u32) -> Result<Vec<f64>> {
    let mut ms = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let at = Instant::now();
        let id = interactive_sandbox(client)?;
        let mut first = None;
        let end = client.exec(id, 0, &command(&["echo", "ready"]), |e| {
            if first.is_none() && e.stdout.is_some() {
                first = Some(Instant::now());
            }
        })?;
        let first = first.or(end.stdout.is_some().then(Instant::now));
        anyhow::ensure!(
            end.exit_code == Some(0) && first.is_some(),
            "a first command failed: {end:?}"
        );
        ms.push(first.map_or(0.0, |f| f.duration_since(at).as_secs_f64() * 1e3));
        client.cancel_batch(id)?;
        // Time for the agent to stop it (and refill its pool), as between real creates.
        std::thread::sleep(Duration::from_millis(200));
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}
