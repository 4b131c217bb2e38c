//! `stargrid up`: a whole local control plane in one command. A server with the embedded
//! journal, an agent for each node of the default fleet (two GB200 NVL72 domains and four CPU
//! hosts) running real processes, and a small demo mix (training jobs, an inference service
//! spread over both domains, a batch of sandboxes on the CPU hosts); Ctrl-C stops everything.

use anyhow::{Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wire::api::{IssueToken, SpreadSpec, SubmitJob, SubmitSandboxes, SubmitService};
use wire::client::JobQuery;
use wire::Client;

#[derive(Args)]
pub struct UpArgs {
    /// Log lines as text, or as one JSON object each (the level from `RUST_LOG`, default
    /// info).
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
    /// Data directory (journal and tokens; task logs too when `up` does not run as root).
    #[arg(long, default_value = "stargrid-up")]
    pub data_dir: PathBuf,
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Stop once every demo job has ended (instead of waiting for Ctrl-C).
    #[arg(long)]
    pub exit_when_done: bool,
    /// Submit no demo jobs.
    #[arg(long)]
    pub no_demo: bool,
    /// Where tasks run and keep their logs (default: a fresh directory under the system's
    /// temporary directory when run as root, so that tasks running as tenants' users stay
    /// out of the data dir; `<data-dir>/tasks` otherwise).
    #[arg(long)]
    pub tasks_dir: Option<PathBuf>,
    /// Address of the request gateway in front of the demo service.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub gateway_listen: String,
}

/// The demo mix: a two-node training run that checkpoints, a 16-tray training run (one NVL72
/// domain less the two trays the service's replica and a spare can use), and research jobs
/// that queue behind it.
fn demo_jobs() -> Vec<SubmitJob> {
    let job = |name: &str, priority: &str, nodes: u32, secs: u32, script: &str| SubmitJob {
        name: name.into(),
        tenant: "default".into(),
        priority: priority.into(),
        gpu: "GB200".into(),
        nodes,
        gpus_per_node: 4,
        cpu_millis_per_node: 0,
        memory_mib_per_node: 0,
        segment: None,
        spares: 0,
        time_limit_s: u64::from(secs) * 3,
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: BTreeMap::new(),
        secret_env: Default::default(),
        workdir: None,
        placement: Default::default(),
        gpu_milli: 0,
        models: Vec::new(),
    };
    let train = "for step in 1 2 3 4 5 6 7 8 9 10; do \
                 echo \"rank $STARGRID_RANK/$STARGRID_WORLD_SIZE step $step on GPUs $CUDA_VISIBLE_DEVICES\"; \
                 echo $step > $STARGRID_CHECKPOINT_FILE; sleep 1; done";
    vec![
        job("llm-train", "training", 2, 10, train),
        job(
            "domain-run",
            "training",
            16,
            15,
            "echo start; sleep 15; echo done",
        ),
        job("sweep-a", "research", 16, 8, "sleep 8"),
        job("sweep-b", "research", 9, 5, "sleep 5"),
        job("sweep-c", "research", 9, 5, "sleep 5"),
    ]
}

/// The demo's inference service: one-tray replicas of the model stand-in (`program`), two to
/// start with, at most two per NVLink domain, scaling up to four on 4 requests in flight per
/// replica.
fn demo_service(program: &std::path::Path) -> SubmitService {
    SubmitService {
        name: "chat".into(),
        tenant: "default".into(),
        priority: "production-inference".into(),
        gpu: "GB200".into(),
        nodes_per_replica: 1,
        gpus_per_node: 4,
        cpu_millis_per_node: 0,
        memory_mib_per_node: 0,
        min_replicas: 2,
        max_replicas: Some(4),
        spread: Some(SpreadSpec {
            level: "domain".into(),
            max_per: 2,
        }),
        command: vec![
            program.display().to_string(),
            "model-standin".into(),
            "--tokens".into(),
            "16".into(),
            "--token-delay-ms".into(),
            "30".into(),
        ],
        env: BTreeMap::new(),
        secret_env: Default::default(),
        workdir: None,
        placement: Default::default(),
        min_providers: Default::default(),
        ready_path: Some("/ready".into()),
        live_path: Some("/health".into()),
        ready_command: None,
        live_command: None,
        autoscale: Some(wire::api::AutoscaleSpec {
            target_inflight_per_replica: Some(4),
            target_p95_ms: None,
            scale_up_window_s: 0,
            scale_down_window_s: 30,
        }),
        roles: Vec::new(),
        models: Vec::new(),
    }
}

/// The program the demo's replicas run: this one, or, run as root (tasks then run as their
/// tenant's user, who may not reach this binary's directory), a copy in a directory anyone may
/// read, removed at exit.
fn standin_program() -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    let exe = std::env::current_exe().context("finding this program")?;
    if !agent::users::is_root() {
        return Ok((exe, None));
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("stargrid-up-bin-")
        .tempdir()
        .context("making a directory for the replicas' program")?;
    let copy = dir.path().join("stargrid");
    std::fs::copy(&exe, &copy).context("copying this program for the replicas")?;
    for (path, mode) in [(dir.path(), 0o755), (copy.as_path(), 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("making {} readable", path.display()))?;
    }
    Ok((copy, Some(dir)))
}

/// The demo's sandbox batch: short agent sandboxes on the CPU hosts.
fn demo_sandboxes() -> SubmitSandboxes {
    SubmitSandboxes {
        egress: Vec::new(),
        template: None,
        name: "agent-rollouts".into(),
        tenant: "default".into(),
        count: 24,
        cpu_millis: 500,
        memory_mib: 512,
        max_retries: 3,
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo sandbox $STARGRID_SANDBOX_INDEX of batch $STARGRID_BATCH_ID; sleep 3".into(),
        ],
        env: BTreeMap::new(),
        secret_env: Default::default(),
        workdir: None,
        interactive: false,
        timeout_s: None,
        idle_timeout_s: None,
    }
}

fn list_nodes(client: &Client) -> Result<Vec<wire::api::NodeView>> {
    client.nodes().context("listing nodes")
}

fn delete_service(client: &Client, id: u64) -> Result<()> {
    client
        .delete_service(id)
        .map_err(crate::client::fail)
        .with_context(|| format!("deleting the demo service {id}"))?;
    Ok(())
}

pub fn run(a: &UpArgs) -> Result<()> {
    crate::logging::init(a.log_format);
    // `up` serves plain HTTP: loopback only.
    crate::server_cmd::check_plain_http(&a.listen, false, false)?;
    crate::server_cmd::private_dir(&a.data_dir)?;
    let store_url = format!("sqlite:{}", a.data_dir.join("journal.db").display());
    let config = server::Config {
        // Example prices for the demo fleet; the example commitments are sized for a far
        // larger fleet, so none are measured here.
        catalogue: Some(model::cost::CostCatalogue {
            commitments: Vec::new(),
            ..crate::cost_view::load_catalogue(None)?
        }),
        ..server::Config::new(store_url.clone(), &a.data_dir)
    };
    let srv = server::Server::start(&config).context("starting the server")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&a.listen))
        .with_context(|| format!("listening on {}", a.listen))?;
    let url = format!(
        "http://{}",
        listener.local_addr().context("reading the address")?
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    // The server outlives the agents at shutdown, so that they can report their tasks' ends.
    let server_stop = Arc::new(AtomicBool::new(false));
    let server_task = {
        let stop = server_stop.clone();
        let srv = srv.clone();
        runtime.spawn(async move {
            let shutdown = async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            server::serve(srv, listener, shutdown).await
        })
    };
    let admin = std::fs::read_to_string(&config.admin_token_file)
        .with_context(|| format!("reading {}", config.admin_token_file.display()))?
        .trim()
        .to_string();
    let client = Client::new(&url, &admin).with_timeout(Duration::from_secs(10));
    let nodes = list_nodes(&client)?;
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    // One credential bound to this machine's nodes.
    let agent_token = client
        .issue_token(&IssueToken {
            role: "agent".into(),
            tenant: None,
            expires_in_s: None,
            nodes: Some(model::hostlist::compress(&names)),
        })
        .context("issuing the agents' credential")?;
    let (cgroups, limits) =
        match agent::cgroup::Cgroups::detect(std::path::Path::new("/sys/fs/cgroup")) {
            Ok(cg) => {
                let how = format!("tasks limited by {}", cg.describe());
                (Some(cg), how)
            }
            Err(why) => (
                None,
                format!("tasks run without CPU and memory limits: {why}"),
            ),
        };
    // Run as root, tasks run as their tenant's user in a directory of their own outside the
    // data dir (0700), so they cannot read the journal or any token; it goes at exit.
    let (tasks_dir, _tasks_tmp) = if let Some(dir) = &a.tasks_dir {
        (dir.clone(), None)
    } else if agent::users::is_root() {
        let tmp = tempfile::Builder::new()
            .prefix("stargrid-up-tasks-")
            .tempdir()
            .context("making the tasks' directory")?;
        (tmp.path().to_path_buf(), Some(tmp))
    } else {
        (a.data_dir.join("tasks"), None)
    };
    let (run_as, users) = agent::RunAs::best(&tasks_dir, agent::users::DEFAULT_UID_BASE)?;
    let isolation = agent::isolation::Isolation::detect(
        agent::isolation::IsolationChoice::Auto,
        matches!(run_as, agent::RunAs::TenantUsers(_)),
    )
    .map_err(anyhow::Error::msg)?;
    let users = format!("{users}; sandboxes under {}", isolation.describe());
    let agent_config = agent::AgentConfig {
        client: Client::new(&url, &agent_token.token),
        nodes: names,
        hollow: false,
        work_dir: tasks_dir,
        interval: Duration::from_millis(500),
        grace: Duration::from_secs(5),
        fence_after: Duration::from_secs(10),
        started: None,
        stopped: None,
        cgroups,
        inventory: None,
        run_as,
        workdir_root: None,
        isolation: isolation.clone(),
        isolate_tasks: false,
        warm_pools: Vec::new(),
        templates: Default::default(),
        egress: Arc::new(agent::egress::Scope::for_node(Vec::new(), &url)),
        init_program: std::env::current_exe().ok(),
        advertise_address: "127.0.0.1".into(),
    };
    let agent_stop = Arc::new(AtomicBool::new(false));
    let agents = {
        let (config, stop) = (agent_config.clone(), agent_stop.clone());
        std::thread::spawn(move || agent::run(&config, &stop))
    };
    // The demo service's gateway, on the same runtime: it follows the routes as any would.
    let gateway_listener = runtime
        .block_on(tokio::net::TcpListener::bind(&a.gateway_listen))
        .with_context(|| format!("listening on {} for the gateway", a.gateway_listen))?;
    let gateway_url = format!(
        "http://{}",
        gateway_listener
            .local_addr()
            .context("reading the gateway's address")?
    );
    let routes = Arc::new(gateway::table::Routes::default());
    gateway::follow_routes(client.clone(), routes.clone());
    gateway::report_load(client.clone(), routes.clone(), "up".into());
    runtime.spawn(gateway::serve(
        gateway_listener,
        routes,
        gateway::proxy::ProxyConfig::default(),
        std::future::pending(),
    ));
    println!(
        "stargrid up: server on {url} (journal {store_url}), agents for {} nodes, gateway on {gateway_url}; {limits}; {users}",
        nodes.len()
    );
    // The link carries the admin token in its fragment, which browsers never send to a server;
    // the login page turns it into a session cookie.
    println!("dashboard: {url}/ui/login#token={}", admin.trim());
    // Nodes take work once their agents have checked in; sandboxes are placed at once or
    // refused, so the demo waits for the agents first.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = list_nodes(&client)?;
        let down = nodes.iter().filter(|n| n.state == "down").count();
        if down == 0 {
            break;
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{down} nodes' agents did not check in within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut demo_ids = Vec::new();
    let (mut service_id, mut batch_id) = (None, None);
    // The demo's service lives as long as one `up`: a service left by a run that was killed
    // would keep its replicas (and block whole-domain jobs) in the next.
    let services = client
        .services(None)
        .map_err(crate::client::fail)
        .context("listing services")?;
    let (program, _program_dir) = standin_program()?;
    let demo_name = demo_service(&program).name;
    for old in services
        .iter()
        .filter(|v| v.name == demo_name && v.state == "active")
    {
        delete_service(&client, old.id)?;
        println!("  deleted service {} left by an earlier run", old.id);
    }
    if !a.no_demo {
        let submitted = |s: wire::client::Result<wire::api::Submitted>, what: &str| {
            s.map(|s| s.id)
                .map_err(crate::client::fail)
                .with_context(|| format!("submitting {what}"))
        };
        for job in demo_jobs() {
            let id = submitted(client.submit_job(&job), &job.name)?;
            println!("  submitted {} as job {id}", job.name);
            demo_ids.push(id);
        }
        let service = demo_service(&program);
        let id = submitted(client.submit_service(&service), "the service")?;
        println!(
            "  created service {} as service {id} ({} replicas of a stand-in model server, autoscaled up to {})",
            service.name,
            service.min_replicas,
            service.max_replicas.unwrap_or(service.min_replicas)
        );
        println!(
            "  it answers at {gateway_url}/default/{}/ ; load it: stargrid load {gateway_url}/default/{}/v1/completions --concurrency 32 --duration-s 60",
            service.name, service.name
        );
        service_id = Some(id);
        let batch = demo_sandboxes();
        let id = submitted(client.submit_sandboxes(&batch), "the sandboxes")?;
        println!(
            "  placed {} sandboxes of {} as batch {id}",
            batch.count, batch.name
        );
        batch_id = Some(id);
    }
    println!(
        "look: export STARGRID_SERVER={url} STARGRID_TOKEN=$(cat {}); stargrid queue | services | sandboxes | nodes | why ID; \
         an interactive sandbox: stargrid sandbox create, then sandbox exec ID -- sh -c '…'; \
         task logs under {}; {url}/openapi.json; Ctrl-C stops everything",
        config.admin_token_file.display(),
        agent_config.work_dir.display()
    );
    let mut last_table = String::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        let Ok(list) = client.jobs(&JobQuery {
            limit: Some(1000),
            ..JobQuery::default()
        }) else {
            continue;
        };
        let service = service_id.and_then(|id| client.service(id).ok());
        let batch = batch_id.and_then(|id| client.batch(id).ok());
        let mut table: Vec<String> = list
            .jobs
            .iter()
            .map(|j| format!("{} {}", j.name, j.state))
            .collect();
        if let Some(v) = &service {
            table.push(format!(
                "{} {}/{} replicas ready",
                v.name, v.ready, v.desired
            ));
        }
        if let Some(b) = &batch {
            table.push(format!(
                "{} {} ({} live, {} ok)",
                b.name, b.state, b.live, b.succeeded
            ));
        }
        let table = table.join(", ");
        if table != last_table {
            println!("  {table}");
            last_table = table;
        }
        let ended = |s: &str| s == "finished" || s == "cancelled";
        let service_up = service_id.is_none() || service.is_some_and(|v| v.ready == v.desired);
        let batch_done = batch_id.is_none() || batch.is_some_and(|b| b.state != "running");
        if a.exit_when_done
            && service_up
            && batch_done
            && list
                .jobs
                .iter()
                .filter(|j| demo_ids.contains(&j.id))
                .all(|j| ended(&j.state))
        {
            break;
        }
    }
    if let Some(id) = service_id {
        delete_service(&client, id)?;
    }
    // What the demo cost at the example prices (`stargrid cost` shows it all).
    if let Ok(c) = client.cost() {
        let used = c.total_usd - c.idle_committed_usd;
        println!(
            "  spend at example prices since the journal began: {} ({} of it work, {} idle committed capacity)",
            crate::cost_view::usd(c.total_usd),
            crate::cost_view::usd(used),
            crate::cost_view::usd(c.idle_committed_usd)
        );
    }
    println!("stopping: agents, then the server");
    agent_stop.store(true, Ordering::Relaxed);
    match agents.join() {
        Ok(r) => r.context("running the agents")?,
        Err(_) => anyhow::bail!("the agent thread panicked"),
    }
    server_stop.store(true, Ordering::Relaxed);
    runtime
        .block_on(server_task)
        .context("joining the server")?
        .context("serving the API")?;
    Ok(())
}
