//! `stargrid agent`: the node agent (see the `agent` crate), one real node or many hollow ones.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct AgentArgs {
    /// Log lines as text, or as one JSON object each (the level from `RUST_LOG`, default
    /// info).
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
    /// The fleet node this agent runs (its name in the server's fleet).
    #[arg(long, conflicts_with = "hollow")]
    pub node: Option<String>,
    /// Play this many nodes without running processes (for scale tests): the first nodes of
    /// its credential's that the server lists as down.
    #[arg(long)]
    pub hollow: Option<usize>,
    /// Where task directories and logs go.
    #[arg(long, default_value = "stargrid-agent")]
    pub work_dir: PathBuf,
    /// Milliseconds between heartbeats.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Seconds between SIGTERM and SIGKILL when a task is stopped.
    #[arg(long, default_value_t = 10)]
    pub grace_s: u64,
    /// Stop every task after this many seconds without an answer from the server (match the
    /// server's --heartbeat-timeout-s).
    #[arg(long, default_value_t = 10)]
    pub fence_after_s: u64,
    /// The cgroup hierarchy (v2, or v1's per-controller trees below it) where task groups
    /// (CPU, memory and process limits) are made.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Run tasks without cgroup limits even where they could be applied.
    #[arg(long)]
    pub no_cgroups: bool,
    /// Declare the node's GPU count instead of asking NVML (tests, hosts without the driver);
    /// the server checks it against the fleet.
    #[arg(long, conflicts_with = "hollow")]
    pub fake_gpus: Option<u32>,
    /// The declared GPUs' model (with --fake-gpus), e.g. GB200.
    #[arg(long, requires = "fake_gpus")]
    pub gpu_model: Option<String>,
    /// The first uid of tenants' users: run as root, the agent starts each tenant's tasks as
    /// its own unprivileged user, from this uid up.
    #[arg(long, default_value_t = agent::users::DEFAULT_UID_BASE)]
    pub task_uid_base: u32,
    /// Run tasks as the agent's own user even when it is root (tenants' tasks are then not
    /// kept apart: for single-tenant hosts only).
    #[arg(long)]
    pub tasks_as_agent_user: bool,
    /// The directory a job's `workdir` must lie under (default: none may be named; tasks run
    /// in their own directories).
    #[arg(long)]
    pub workdir_root: Option<PathBuf>,
    /// The isolation layer sandboxes run under: auto (bubblewrap where it is installed and the
    /// agent is root), none, or bwrap.
    #[arg(long, default_value = "auto")]
    pub isolation: agent::isolation::IsolationChoice,
    /// Run training and inference tasks under the isolation layer too, not only sandboxes.
    #[arg(long)]
    pub isolate_tasks: bool,
    /// Interactive sandboxes kept started ahead of demand on each node (a new one is then one
    /// that already runs), of the host's root (`N`) or of a template (`TEMPLATE=N`; repeat
    /// for each); emptied while the node runs a job's task or a replica.
    #[arg(long, value_name = "N|TEMPLATE=N")]
    pub warm_pool: Vec<agent::WarmPool>,
    /// A sandbox template this node offers: a root file system directory, shown read-only to
    /// the sandboxes that name it (`"template": "NAME"`); repeat for each.
    #[arg(long, value_name = "NAME=DIR")]
    pub template: Vec<String>,
    /// A network that is not public (private, loopback, link-local…) but that interactive
    /// sandboxes' egress allow-lists may reach, as CIDR (an internal package mirror:
    /// `10.20.0.0/16`); repeat for each. Without it, egress reaches public addresses only.
    #[arg(long, value_name = "CIDR")]
    pub egress_allow_net: Vec<ipnet::IpNet>,
    /// The address this node's service replicas are reached at (their endpoints name it; a
    /// request gateway sends to it).
    #[arg(long, default_value = "127.0.0.1")]
    pub advertise_address: String,
    /// Register the node (`--node`, which the fleet need not declare) into this pool of the
    /// cell first, with what the agent finds on it, under the cell's registration rule
    /// (`stargrid fleet allow`); it joins once approved.
    #[arg(long, requires = "node", requires = "register_zone")]
    pub register_pool: Option<String>,
    /// The registered node's availability zone.
    #[arg(long, requires = "register_pool")]
    pub register_zone: Option<String>,
    /// The registered node's network nodes, top first (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "register_pool")]
    pub register_network: Vec<String>,
    /// The registered node's NVLink domain.
    #[arg(long, requires = "register_pool")]
    pub register_domain: Option<String>,
}

/// Registers `node` as `a`'s `--register-*` flags say, with `inventory` (none found: no
/// GPUs); says where the registration stands.
fn register(
    client: &wire::Client,
    a: &AgentArgs,
    node: &str,
    inventory: Option<&wire::api::Inventory>,
) -> Result<String> {
    let (Some(pool), Some(zone)) = (&a.register_pool, &a.register_zone) else {
        return Ok(String::new());
    };
    let registered = client
        .register_node(&wire::api::RegisterNode {
            node: node.to_string(),
            pool: pool.clone(),
            zone: zone.clone(),
            network: a.register_network.clone(),
            domain: a.register_domain.clone(),
            inventory: inventory
                .cloned()
                .unwrap_or_else(|| agent::inventory::declared(0, None)),
        })
        .with_context(|| format!("registering {node} into pool {pool}"))?;
    Ok(format!("; registered into {pool}: {}", registered.state))
}

/// The most pooled sandboxes one node keeps, over all templates.
const MAX_WARM: u32 = 1000;

pub fn run(settings: &crate::config::Settings, a: &AgentArgs) -> Result<()> {
    if !wire::api::is_node_address(&a.advertise_address) {
        bail!(
            "--advertise-address '{}': a host name or IP address (no port), at most {} bytes",
            a.advertise_address,
            wire::api::MAX_NODE_ADDRESS
        );
    }
    crate::logging::init(a.log_format);
    let server = settings.server.as_str();
    let client = settings.client(settings.agent_credential()?)?;
    let nodes = match (&a.node, a.hollow) {
        (Some(n), None) => vec![n.clone()],
        (None, Some(count)) => {
            let all = client.nodes().context("listing the server's nodes")?;
            let free: Vec<String> = all
                .into_iter()
                .filter(|n| n.state == "down")
                .map(|n| n.name)
                .take(count)
                .collect();
            if free.len() < count {
                bail!(
                    "--hollow {count}: only {} of this credential's nodes are without an agent",
                    free.len()
                );
            }
            free
        }
        _ => bail!("give --node NAME, or --hollow N"),
    };
    let config = agent::AgentConfig {
        client,
        nodes,
        hollow: a.hollow.is_some(),
        work_dir: a.work_dir.clone(),
        interval: Duration::from_millis(a.interval_ms.max(10)),
        grace: Duration::from_secs(a.grace_s),
        fence_after: Duration::from_secs(a.fence_after_s),
        started: None,
        stopped: None,
        cgroups: None,
        inventory: None,
        run_as: agent::RunAs::AgentUser,
        workdir_root: a.workdir_root.clone(),
        isolation: agent::isolation::Isolation::None,
        isolate_tasks: a.isolate_tasks,
        warm_pools: a.warm_pool.clone(),
        templates: Default::default(),
        egress: Arc::new(agent::egress::Scope::for_node(
            a.egress_allow_net.clone(),
            settings.server.as_str(),
        )),
        init_program: std::env::current_exe().ok(),
        advertise_address: a.advertise_address.clone(),
    };
    let warm_total: u32 = a
        .warm_pool
        .iter()
        .map(|p| p.size)
        .fold(0, u32::saturating_add);
    if warm_total > MAX_WARM {
        bail!("--warm-pool: at most {MAX_WARM} pooled sandboxes per node in all");
    }
    let (cgroups, limits) = if a.no_cgroups || config.hollow {
        (None, "without cgroup limits".to_string())
    } else {
        match agent::cgroup::Cgroups::detect(&a.cgroup_root) {
            Ok(cg) => {
                let how = format!("tasks limited by {}", cg.describe());
                (Some(cg), how)
            }
            Err(why) => (
                None,
                format!("tasks run WITHOUT CPU and memory limits: {why}"),
            ),
        }
    };
    let (inventory, found) = match (a.fake_gpus, config.hollow) {
        (_, true) => (None, String::new()),
        (Some(n), false) => (
            Some(agent::inventory::declared(n, a.gpu_model.clone())),
            format!("; {n} GPUs declared"),
        ),
        (None, false) => match agent::inventory::discover() {
            Ok(inv) => {
                let what = format!(
                    "; {} {} GPUs found through NVML",
                    inv.gpus,
                    inv.gpu_model.as_deref().unwrap_or("")
                );
                (Some(inv), what)
            }
            Err(why) => (None, format!("; GPUs as the fleet declares them ({why})")),
        },
    };
    let first = config.nodes.first().map_or("", String::as_str);
    let registered = register(&config.client, a, first, inventory.as_ref())?;
    let found = format!("{found}{registered}");
    let (run_as, users) = if config.hollow {
        (agent::RunAs::AgentUser, String::new())
    } else if a.tasks_as_agent_user {
        (
            agent::RunAs::AgentUser,
            "; tasks run as the agent's own user (--tasks-as-agent-user)".to_string(),
        )
    } else {
        let (run_as, how) = agent::RunAs::best(&a.work_dir, a.task_uid_base)?;
        (run_as, format!("; {how}"))
    };
    // Isolation needs the drop to tenants' users (root); a hollow agent runs nothing.
    let tenant_users = matches!(run_as, agent::RunAs::TenantUsers(_));
    let isolation = if config.hollow {
        agent::isolation::Isolation::None
    } else {
        agent::isolation::Isolation::detect(a.isolation, tenant_users)
            .map_err(anyhow::Error::msg)?
    };
    let templates = match (&run_as, config.hollow || a.template.is_empty()) {
        (_, true) => agent::template::Templates::default(),
        (agent::RunAs::TenantUsers(users), false)
            if !matches!(isolation, agent::isolation::Isolation::None) =>
        {
            let init = config
                .init_program
                .clone()
                .context("--template: the agent's own program is not found")?;
            agent::template::Templates::open(&a.template, &init, users.setpriv())
                .map_err(anyhow::Error::msg)?
        }
        _ => bail!("--template: templates need an isolation layer (bubblewrap, as root)"),
    };
    for pool in &a.warm_pool {
        if let Some(t) = &pool.template {
            templates.root(Some(t)).map_err(anyhow::Error::msg)?;
        }
    }
    let warm = match (warm_total, config.hollow) {
        (0, _) | (_, true) => String::new(),
        (n, false) => format!("; {n} interactive sandboxes kept warm per node"),
    };
    let offered = match templates.names() {
        names if names.is_empty() => String::new(),
        names => format!("; templates {}", names.join(", ")),
    };
    let isolated = format!("; sandboxes under {}{warm}{offered}", isolation.describe());
    let users = format!("{users}{}", if config.hollow { "" } else { &isolated });
    let config = agent::AgentConfig {
        cgroups,
        inventory,
        run_as,
        isolation,
        templates: Arc::new(templates),
        ..config
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    println!(
        "stargrid agent: {} node(s){} reporting to {server}; {limits}{found}{users}",
        config.nodes.len(),
        if config.hollow { ", hollow" } else { "" }
    );
    agent::run(&config, &stop)?;
    Ok(())
}
