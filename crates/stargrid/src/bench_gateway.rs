//! `stargrid bench gateway`: the request gateway measured on loopback. Replicas of the model
//! stand-in (answering at once) are called directly and through the gateway, side by side
//! with the same clients: the gateway's requests a second and the latency it adds. Then a
//! real server, agent and autoscaled service: the time from the autoscaler's decision to a new
//! replica answering through the gateway. With nginx on the machine, the same loads go through
//! it too (round-robin to the same replicas, keep-alive upstream connections), side by side.

use crate::load_cmd::{drive, LoadArgs, LoadReport};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::api::{GatewayRoutes, ServiceEndpoint, ServiceRoute};

#[derive(Args)]
pub struct GatewayBenchArgs {
    /// Seconds each load runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Clients for the throughput figure.
    #[arg(long, default_value_t = 64)]
    pub clients: u32,
    /// Clients for the added-latency figure (few, so that queueing does not hide it).
    #[arg(long, default_value_t = 4)]
    pub latency_clients: u32,
    /// Skip the scale-up figure (it runs a server and an agent).
    #[arg(long)]
    pub no_scale_up: bool,
    /// The nginx program to compare with (default: `nginx` on the PATH, when there is one).
    #[arg(long)]
    pub nginx: Option<std::path::PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A child process stopped (SIGINT, then killed) when dropped.
struct Child_(Child);

impl Drop for Child_ {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A stand-in replica answering at once on a port of its own.
fn start_replica() -> Result<(Child_, u16)> {
    let port = free_port()?;
    let child = Command::new(std::env::current_exe()?)
        .args([
            "model-standin",
            "--tokens",
            "0",
            "--port",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .context("starting a stand-in replica")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the stand-in on port {port} did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((Child_(child), port))
}

fn load(url: &str, clients: u32, seconds: u64) -> Result<LoadReport> {
    drive(&LoadArgs {
        url: url.to_string(),
        concurrency: clients,
        ramp_to: None,
        duration_s: seconds,
        method: "POST".into(),
        body: r#"{"prompt": "hi"}"#.into(),
        json: true,
    })
}

/// A gateway on its own runtime (two threads) over a fixed table; its base URL.
fn start_gateway(routes: Arc<gateway::table::Routes>) -> Result<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        runtime.block_on(gateway::serve(
            listener,
            routes,
            Default::default(),
            std::future::pending(),
        ))
    });
    Ok(url)
}

fn route(name: &str, ports: &[u16]) -> ServiceRoute {
    ServiceRoute {
        id: ports[0].into(),
        name: name.into(),
        tenant: "bench".into(),
        desired: ports.len() as u32,
        endpoints: ports
            .iter()
            .map(|p| ServiceEndpoint {
                replica: u64::from(*p),
                node: "local".into(),
                address: "127.0.0.1".into(),
                port: *p,
                canary: false,
            })
            .collect(),
        canary_percent: None,
    }
}

pub fn run(a: &GatewayBenchArgs) -> Result<()> {
    let (_r1, p1) = start_replica()?;
    let (_r2, p2) = start_replica()?;
    let routes = Arc::new(gateway::table::Routes::default());
    routes.update(&GatewayRoutes {
        version: 1,
        services: vec![route("one", &[p1]), route("two", &[p1, p2])],
    });
    let gw = start_gateway(routes)?;
    let direct_url = format!("http://127.0.0.1:{p1}/v1/completions");
    let one_url = format!("{gw}/bench/one/v1/completions");
    // Warm both paths (connections, pools) before measuring.
    load(&direct_url, 2, 1)?;
    load(&one_url, 2, 1)?;
    let direct = load(&direct_url, a.latency_clients, a.seconds)?;
    let via = load(&one_url, a.latency_clients, a.seconds)?;
    let direct_max = load(&direct_url, a.clients, a.seconds)?;
    let gateway_max = load(
        &format!("{gw}/bench/two/v1/completions"),
        a.clients,
        a.seconds,
    )?;
    let mut failed = direct.failed + via.failed + direct_max.failed + gateway_max.failed;
    let nginx = match nginx_program(a) {
        Some(program) => {
            let dir = tempfile::tempdir().context("a directory for nginx")?;
            let (_nginx, url) = start_nginx(&program, dir.path(), p1, p2)?;
            let one = format!("{url}/bench/one/v1/completions");
            load(&one, 2, 1)?;
            let via = load(&one, a.latency_clients, a.seconds)?;
            let max = load(
                &format!("{url}/bench/two/v1/completions"),
                a.clients,
                a.seconds,
            )?;
            failed += via.failed + max.failed;
            Some((via, max))
        }
        None => None,
    };
    let scale_up = if a.no_scale_up {
        None
    } else {
        Some(scale_up_to_serving()?)
    };
    let out = serde_json::json!({
        "gateway_requests_per_s": gateway_max.requests_per_s,
        "direct_requests_per_s": direct_max.requests_per_s,
        "gateway_added_p50_ms": via.p50_ms - direct.p50_ms,
        "gateway_added_p99_ms": via.p99_ms - direct.p99_ms,
        "direct_p50_ms": direct.p50_ms,
        "direct_p99_ms": direct.p99_ms,
        "gateway_p50_ms": via.p50_ms,
        "gateway_p99_ms": via.p99_ms,
        "scale_up_to_serving_s": scale_up,
        "nginx_requests_per_s": nginx.as_ref().map(|(_, m)| m.requests_per_s),
        "nginx_added_p50_ms": nginx.as_ref().map(|(v, _)| v.p50_ms - direct.p50_ms),
        "nginx_added_p99_ms": nginx.as_ref().map(|(v, _)| v.p99_ms - direct.p99_ms),
        "failed_requests": failed,
        "clients": a.clients,
        "latency_clients": a.latency_clients,
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "through the gateway: {:.0} requests/s ({:.0}/s direct to one replica, {} clients)",
            gateway_max.requests_per_s, direct_max.requests_per_s, a.clients
        );
        println!(
            "added latency ({} clients): p50 {:.3} ms, p99 {:.3} ms (direct p50 {:.3} ms, p99 {:.3} ms)",
            a.latency_clients,
            via.p50_ms - direct.p50_ms,
            via.p99_ms - direct.p99_ms,
            direct.p50_ms,
            direct.p99_ms
        );
        if let Some((v, m)) = &nginx {
            println!(
                "nginx, side by side: {:.0} requests/s, added p50 {:.3} ms, p99 {:.3} ms",
                m.requests_per_s,
                v.p50_ms - direct.p50_ms,
                v.p99_ms - direct.p99_ms
            );
        }
        if let Some(s) = scale_up {
            println!("autoscaler's decision to a new replica answering: {s:.2} s");
        }
        if failed > 0 {
            println!("{failed} requests failed");
        }
    }
    Ok(())
}

/// A server, one tray's real agent and a service of stand-ins scaling on 1 request in flight
/// per replica; under load, seconds from the scale-up being journaled to the new replica
/// answering through a gateway that follows the server's routes.
fn scale_up_to_serving() -> Result<f64> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let exe = std::env::current_exe()?;
    let program = shared_copy(&exe, dir.path())?;
    let (_server, url) = start_server(&exe, &dir.path().join("data"))?;
    let admin = std::fs::read_to_string(dir.path().join("data/admin.token"))?
        .trim()
        .to_string();
    let client = wire::Client::new(&url, &admin);
    let credential = dir.path().join("agent.token");
    std::fs::write(&credential, &admin)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o600))?;
    }
    let _agent = Child_(
        Command::new(&exe)
            .args([
                "agent",
                "--server",
                &url,
                "--node",
                "nvl00000t00",
                "--fake-gpus",
                "4",
            ])
            .args([
                "--gpu-model",
                "GB200",
                "--interval-ms",
                "100",
                "--grace-s",
                "2",
            ])
            .arg("--work-dir")
            .arg(dir.path().join("agent"))
            .env("STARGRID_TOKEN_FILE", &credential)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the agent")?,
    );
    let service: wire::api::SubmitService = serde_json::from_value(serde_json::json!({
        "name": "fast", "tenant": "default", "gpus_per_node": 1, "min_replicas": 1,
        "max_replicas": 2, "command": [program, "model-standin", "--tokens", "0"],
        "ready_path": "/ready",
        "autoscale": {"target_inflight_per_replica": 1, "scale_down_window_s": 600},
    }))?;
    let id = wait(30, "the node to come up", || {
        Ok(client
            .nodes()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .iter()
            .any(|n| n.name == "nvl00000t00" && n.state != "down"))
    })
    .and_then(|()| {
        client
            .submit_service(&service)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })?
    .id;
    let ready = |n: u32| {
        client
            .service(id)
            .map(|v| v.ready >= n)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    wait(30, "the first replica", || ready(1))?;
    let routes = Arc::new(gateway::table::Routes::default());
    gateway::follow_routes(client.clone(), routes.clone());
    gateway::report_load(client.clone(), routes.clone(), "bench".into());
    let gw = start_gateway(routes)?;
    let target = format!("{gw}/default/fast/");
    wait(10, "the gateway to route to the service", || {
        Ok(replica_answering(&target).is_ok())
    })?;
    let first = replica_answering(&target)?;
    // Four clients against one replica at a target of one each: the next pass scales up.
    let loading = {
        let target = target.clone();
        std::thread::spawn(move || load(&target, 4, 20))
    };
    wait(20, "the autoscaler's decision", || {
        Ok(client
            .service(id)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .desired
            == 2)
    })?;
    let decided = Instant::now();
    loop {
        if replica_answering(&target)? != first {
            break;
        }
        if decided.elapsed() > Duration::from_secs(30) {
            bail!("no new replica answered within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = decided.elapsed().as_secs_f64();
    let _ = loading.join();
    Ok(took)
}

/// Which replica answers a request through `target`.
fn replica_answering(target: &str) -> Result<String> {
    let resp = ureq::post(target)
        .timeout(Duration::from_secs(5))
        .send_string("{}")
        .context("a request through the gateway")?;
    Ok(resp.header("x-replica").unwrap_or_default().to_string())
}

fn wait(secs: u64, what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().unwrap_or(false) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("timed out after {secs} s waiting for {what}")
}

/// A server over `data` on a free port; its process and URL.
fn start_server(exe: &Path, data: &Path) -> Result<(Child_, String)> {
    let mut child = Command::new(exe)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the server")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    let child = Child_(child);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .with_context(|| format!("no address in the server's first line {line:?}"))?
        .to_string();
    Ok((child, url))
}

/// A copy of this program that a tenant's user may run (run as root, the agent runs tasks as
/// one).
fn shared_copy(exe: &Path, dir: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let copy = bin.join("stargrid");
    std::fs::copy(exe, &copy).context("copying this program")?;
    for p in [dir, bin.as_path(), copy.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(copy.display().to_string())
}

/// The nginx to compare with: the one named, or one on the PATH.
fn nginx_program(a: &GatewayBenchArgs) -> Option<std::path::PathBuf> {
    if let Some(p) = &a.nginx {
        return Some(p.clone());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// nginx in the foreground with two worker processes (as the gateway has two threads),
/// proxying `/bench/one/` to the replica on `p1` and `/bench/two/` round-robin to both, over
/// keep-alive connections; its process and URL.
fn start_nginx(program: &Path, dir: &Path, p1: u16, p2: u16) -> Result<(Child_, String)> {
    let port = free_port()?;
    let d = dir.display();
    let config = format!(
        "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\ndaemon off;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           upstream one {{ server 127.0.0.1:{p1}; keepalive 256; }}\n\
           upstream two {{ server 127.0.0.1:{p1}; server 127.0.0.1:{p2}; keepalive 256; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n\
             location /bench/one/ {{ proxy_pass http://one/; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n\
             location /bench/two/ {{ proxy_pass http://two/; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n\
           }}\n}}\n"
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config)?;
    let child = Command::new(program)
        .arg("-c")
        .arg(&file)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let child = Child_(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nginx did not start; see {d}/error.log");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, format!("http://127.0.0.1:{port}")))
}
