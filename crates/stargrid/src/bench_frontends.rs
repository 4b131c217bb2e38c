//! `stargrid bench scale`'s frontend phase: the same cell with its agents moved behind
//! frontends (`stargrid frontend` processes, each following the writer), measured side by
//! side with the phase before it: the writer's CPU in steady state, the frontends' CPU and
//! memory, how long the frontends take to load the writer's state, and submit → running with
//! both the client and the agent behind frontends. Also the bench's hollow agents, started
//! for each phase.

use crate::bench_live::percentile;
use crate::bench_scale::{job, process_usage};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::Client;

/// A frontend as a child process, killed when dropped.
pub(crate) struct FrontendProcess {
    child: std::process::Child,
    pub(crate) url: String,
    /// Seconds from the first frontend's start until this one answered.
    load_s: f64,
}

impl Drop for FrontendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the agents of the phase before were given: the nodes of each and its credential.
pub(crate) struct Share {
    pub(crate) nodes: Vec<String>,
    pub(crate) token: String,
}

/// What the phase needs of the run around it.
pub(crate) struct Phase<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) writer: &'a Client,
    pub(crate) writer_pid: u32,
    pub(crate) admin_token: &'a str,
    pub(crate) frontends: usize,
    pub(crate) interval: Duration,
    pub(crate) steady: Duration,
    pub(crate) latency_jobs: usize,
}

/// How the bench's hollow agents run.
pub(crate) struct AgentSettings<'a> {
    pub(crate) interval: Duration,
    pub(crate) fence_after: Duration,
    pub(crate) dir: &'a Path,
    /// Names their work directories apart from other starts' (`agent-TAG-I`).
    pub(crate) tag: &'a str,
}

/// One hollow agent per share, agent `i` reporting to `url_of(i)`, its starts told to
/// `started` (through `tally`), until `stop`.
pub(crate) fn start_agents(
    shares: &[Share],
    url_of: &dyn Fn(usize) -> String,
    settings: &AgentSettings<'_>,
    tally: &crate::bench_outage::Tally,
    started: &std::sync::mpsc::Sender<(u64, Instant)>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Result<(), agent::AgentError>>> {
    shares
        .iter()
        .enumerate()
        .map(|(i, share)| {
            let (started, stopped) = tally.hooks(i, started.clone());
            let config = agent::AgentConfig {
                interval: settings.interval,
                fence_after: settings.fence_after,
                started: Some(started),
                stopped: Some(stopped),
                ..agent::AgentConfig::hollow(
                    Client::new(&url_of(i), &share.token),
                    share.nodes.clone(),
                    settings.dir.join(format!("agent-{}-{i}", settings.tag)),
                )
            };
            let stop = stop.clone();
            std::thread::spawn(move || agent::run(&config, &stop))
        })
        .collect()
}

/// Starts the phase's frontends, each once it answers (with how long they took in all).
pub(crate) fn start_frontends(p: &Phase<'_>) -> Result<Vec<FrontendProcess>> {
    let credential = p.dir.join("frontend.token");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&credential)?;
        f.write_all(p.admin_token.as_bytes())?;
    }
    let started = Instant::now();
    let mut frontends = Vec::new();
    for i in 0..p.frontends {
        let mut f = start_frontend(p, &credential, i)?;
        f.load_s = started.elapsed().as_secs_f64();
        frontends.push(f);
    }
    Ok(frontends)
}

/// With the agents started behind `frontends`: waits until every node was heard through a
/// frontend, then measures the writer and the frontends side by side, and submit → running
/// through them.
pub(crate) fn measure(
    p: &Phase<'_>,
    shares: &[Share],
    frontends: &[FrontendProcess],
    started_rx: &Receiver<(u64, Instant)>,
) -> Result<serde_json::Value> {
    let nodes: usize = shares.iter().map(|s| s.nodes.len()).sum();
    let t_moved = Instant::now();
    loop {
        let heard: f64 = frontends
            .iter()
            .map(|f| heartbeats_taken(&Client::new(&f.url, p.admin_token)))
            .sum();
        if heard >= nodes as f64 {
            break;
        }
        if t_moved.elapsed() > Duration::from_secs(600) {
            bail!("only {heard} of {nodes} nodes heard through the frontends after 600 s");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let moved_s = t_moved.elapsed().as_secs_f64();
    std::thread::sleep(p.interval);
    let cell = p.writer.cell()?;
    let down = cell.nodes.get("down").copied().unwrap_or(0);
    // Writer and frontends side by side, over the same span.
    let mut pids = vec![p.writer_pid];
    pids.extend(frontends.iter().map(|f| f.child.id()));
    let before: Vec<f64> = pids
        .iter()
        .map(|pid| process_usage(*pid).map(|u| u.0))
        .collect::<Result<_>>()?;
    let t = Instant::now();
    std::thread::sleep(p.steady);
    let mut cores = Vec::new();
    let mut rss = Vec::new();
    for (pid, b) in pids.iter().zip(before) {
        let (after, resident) = process_usage(*pid)?;
        cores.push((after - b) / t.elapsed().as_secs_f64());
        rss.push(resident);
    }
    let writer_cores = cores.remove(0);
    rss.remove(0);
    let through = Client::new(&frontends[0].url, p.admin_token);
    let latencies = submit_to_running_ms(&through, "front-lat", p.latency_jobs, started_rx)?;
    Ok(serde_json::json!({
        "frontends": frontends.len(),
        "frontend_load_s": frontends.last().map(|f| f.load_s),
        "agents_moved_s": moved_s,
        "nodes_down_after_move": down,
        "writer_cpu_cores_with_frontends": writer_cores,
        "frontend_cpu_cores": cores,
        "frontend_rss_bytes": rss,
        "submit_to_running_p50_ms": percentile(&latencies, 0.5),
        "submit_to_running_p99_ms": percentile(&latencies, 0.99),
    }))
}

fn start_frontend(p: &Phase<'_>, credential: &Path, i: usize) -> Result<FrontendProcess> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(p.dir.join(format!("frontend-{i}.log")))?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("frontend")
        .args(["--server", p.writer.base_url()])
        .arg("--token-file")
        .arg(credential)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting a frontend")?;
    let mut frontend = FrontendProcess {
        child,
        url: format!("http://127.0.0.1:{port}"),
        load_s: 0.0,
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(status) = frontend.child.try_wait()? {
            bail!("frontend {i} exited ({status}); see frontend-{i}.log");
        }
        if Client::new(&frontend.url, p.admin_token).cell().is_ok() {
            return Ok(frontend);
        }
        if Instant::now() > deadline {
            bail!("frontend {i} did not start within 600 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Heartbeats a frontend took so far.
fn heartbeats_taken(frontend: &Client) -> f64 {
    frontend
        .metrics_text()
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("stargrid_heartbeats_total "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Submit → running in milliseconds of `count` one-node jobs submitted one at a time through
/// `client` (named `PREFIX-I`), each until an agent's hook says it started, sorted.
pub(crate) fn submit_to_running_ms(
    client: &Client,
    prefix: &str,
    count: usize,
    started: &Receiver<(u64, Instant)>,
) -> Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        let s = client.submit_job(&job("bench", format!("{prefix}-{i}"), "1"))?;
        loop {
            let left = Duration::from_secs(30).saturating_sub(t.elapsed());
            let (id, at) = started
                .recv_timeout(left)
                .with_context(|| format!("job {} never started", s.id))?;
            if id == s.id {
                latencies.push(at.duration_since(t).as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}
