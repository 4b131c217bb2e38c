//! `stargrid bench sandboxes`: isolated sandboxes started for real on this host. A server on
//! loopback with its journal in a temporary directory, one real agent for one CPU host (root:
//! tenants' users, cgroups and bubblewrap where the host has them), one batch of sleeping
//! sandboxes: how fast they start, what each costs the host (its cgroup's memory), and whether
//! the agent kept heartbeating with all of them alive.
//!
//! What needs interactive sandboxes (warm and cold create to first output, exec round trips) is
//! not built yet: those keys are `null`.

use anyhow::{Context, Result};
use clap::Args;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::api::{IssueToken, SubmitSandboxes};
use wire::Client;

#[derive(Args)]
pub struct SandboxBenchArgs {
    /// Sandboxes in the batch, all on one host.
    #[arg(long, default_value_t = 1000)]
    pub count: u32,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
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
    let agent_stop = Arc::new(AtomicBool::new(false));
    let agent = {
        let config = agent::AgentConfig {
            client: Client::new(&url, &credential.token),
            nodes: vec![HOST.into()],
            hollow: false,
            work_dir: work.clone(),
            interval: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            fence_after: Duration::from_secs(60),
            started: Some(started_tx),
            cgroups: cgroups.clone(),
            inventory: None,
            run_as,
            workdir_root: None,
            isolation,
            isolate_tasks: false,
        };
        let stop = agent_stop.clone();
        std::thread::spawn(move || agent::run(&config, &stop))
    };
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
    agent_stop.store(true, Ordering::Relaxed);
    let _ = agent.join();
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
        "server_and_agent_bytes_per_sandbox":
            rss_after.saturating_sub(rss_before) / u64::from(a.count.max(1)),
        "warm_create_to_output_p50_ms": null,
        "warm_create_to_output_p99_ms": null,
        "cold_create_to_output_p99_ms": null,
        "exec_roundtrip_p50_ms": null,
        "exec_roundtrip_p99_ms": null,
        "note": "host_overhead_bytes_per_sandbox: the memory the kernel charges the sandboxes' \
                 own cgroups (each a sleeping process under its isolation layer, with the \
                 processes that set it up), summed and divided by their number. The warm, cold \
                 and exec keys need interactive sandboxes, which are not built yet.",
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
