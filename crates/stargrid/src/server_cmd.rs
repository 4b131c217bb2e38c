//! `stargrid server`: the control plane on a data directory (SQLite journal inside), with the
//! HTTP API on `--listen`: over TLS with `--tls-cert`/`--tls-key`, plain HTTP on loopback only
//! unless `--insecure`.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct ServerArgs {
    /// Log lines as text, or as one JSON object each (the level from `RUST_LOG`, default
    /// info).
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
    /// Directory of the embedded journal (created if missing).
    #[arg(long, default_value = "stargrid-data")]
    pub data_dir: PathBuf,
    /// Journal URL instead of the data directory's file: sqlite:PATH, or
    /// postgres://USER:PASSWORD@HOST/DATABASE.
    #[arg(long, env = "STARGRID_STORE")]
    pub store: Option<String>,
    /// The cell's name, as its capacity summary gives it (`GET /v1/cell`).
    #[arg(long, default_value = "cell-0")]
    pub cell: String,
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Fleet file for a new journal (default: two NVL72 domains and four CPU hosts). An
    /// existing journal keeps the fleet it started with.
    #[arg(long)]
    pub fleet: Option<PathBuf>,
    /// Tenants file for a new journal (TOML, `[[tenants]]` with name, weight, cohort, gpus).
    #[arg(long)]
    pub tenants: Option<PathBuf>,
    /// A node whose agent is silent for this many seconds is down.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_timeout_s: u64,
    /// Save a snapshot of the state every this many journal records (0: never); a restart
    /// loads the latest and replays only what follows it.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// The least seconds between two snapshots (a snapshot copies the state under its lock: a
    /// short pause of every request, longer the larger the cell).
    #[arg(long, default_value_t = 30)]
    pub snapshot_min_interval_s: u64,
    /// Replay the whole journal at start, ignoring snapshots (recovery from a snapshot
    /// suspected bad).
    #[arg(long)]
    pub replay_all: bool,
    /// Cost catalogue for a new journal: its rates price the fleet's pools and its
    /// commitments are what `stargrid cost` measures spend against (`stargrid catalogue`
    /// prints the built-in example). An existing journal keeps what it started with.
    #[arg(long)]
    pub catalogue: Option<PathBuf>,
    /// The queue's rules for new decisions: stargrid (the default), fifo, first-fit, slurm,
    /// sjf, las. What the journal already decided stands.
    #[arg(long, default_value = "stargrid")]
    pub policy: String,
    /// How single-node work (GPU shares, CPU work, one node of whole GPUs) chooses its node:
    /// best-fit (the default), packing, dot-product, fragmentation (the gradient over the
    /// shapes of the jobs the queue holds) or packed-gradient (Stargrid's).
    #[arg(long, default_value = "best-fit")]
    pub node_score: String,
    /// The key file secret environment values are sealed under (default:
    /// `<data-dir>/secrets.key`, made 0600 at first start). With a PostgreSQL journal, keep it
    /// on the server hosts (never in the database) and give every standby the same file.
    #[arg(long)]
    pub secrets_key: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// How the API is served: over TLS, or plain HTTP (on loopback unless said otherwise).
#[derive(Args)]
pub struct TlsArgs {
    /// Serve the API over TLS with this certificate chain (PEM, leaf first).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (bearer tokens then cross the
    /// network in clear: only behind a TLS-terminating proxy on the same host).
    #[arg(long)]
    pub insecure: bool,
}

impl TlsArgs {
    /// The TLS settings for serving on `listen`, or none for plain HTTP where that is allowed.
    pub fn settings(
        &self,
        listen: &str,
    ) -> Result<Option<std::sync::Arc<server::tls::ServerConfig>>> {
        check_plain_http(listen, self.tls_cert.is_some(), self.insecure)?;
        Ok(match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(server::tls::server_config(cert, key)?),
            _ => None,
        })
    }
}

/// What one request and one tenant may ask for (refused at submission, naming the limit).
#[derive(Args)]
pub struct LimitArgs {
    /// Most jobs a tenant may have pending or running, service replicas included.
    #[arg(long, default_value_t = server::state::Limits::default().live_jobs_per_tenant)]
    pub max_live_jobs_per_tenant: u64,
    /// Most replicas one service may ask for.
    #[arg(long, default_value_t = server::state::Limits::default().replicas_per_service)]
    pub max_replicas_per_service: u32,
    /// Most sandboxes one batch may ask for.
    #[arg(long, default_value_t = server::state::Limits::default().sandboxes_per_batch)]
    pub max_sandboxes_per_batch: u32,
    /// Most live sandboxes a tenant may hold.
    #[arg(long, default_value_t = server::state::Limits::default().sandboxes_per_tenant)]
    pub max_sandboxes_per_tenant: u64,
    /// Most live sandbox batches a tenant may hold.
    #[arg(long, default_value_t = server::state::Limits::default().batches_per_tenant)]
    pub max_batches_per_tenant: u64,
    /// Smallest sandbox in CPU millicores (bounds the sandboxes, and processes, per host).
    #[arg(long, default_value_t = server::state::Limits::default().min_sandbox_cpu_millis)]
    pub min_sandbox_cpu_millis: u32,
    /// Smallest sandbox in MiB of memory.
    #[arg(long, default_value_t = server::state::Limits::default().min_sandbox_memory_mib)]
    pub min_sandbox_memory_mib: u32,
}

impl LimitArgs {
    fn limits(&self) -> server::state::Limits {
        server::state::Limits {
            live_jobs_per_tenant: self.max_live_jobs_per_tenant,
            replicas_per_service: self.max_replicas_per_service,
            sandboxes_per_batch: self.max_sandboxes_per_batch,
            sandboxes_per_tenant: self.max_sandboxes_per_tenant,
            batches_per_tenant: self.max_batches_per_tenant,
            min_sandbox_cpu_millis: self.min_sandbox_cpu_millis,
            min_sandbox_memory_mib: self.min_sandbox_memory_mib,
        }
    }
}

/// Refuses plain HTTP off loopback unless the operator said `--insecure`.
pub fn check_plain_http(listen: &str, tls: bool, insecure: bool) -> Result<()> {
    if tls || insecure {
        return Ok(());
    }
    let loopback = match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen.starts_with("localhost:"),
    };
    if !loopback {
        bail!(
            "--listen {listen}: plain HTTP off loopback would send bearer tokens in clear; \
             give --tls-cert and --tls-key, or --insecure behind a TLS-terminating proxy"
        );
    }
    Ok(())
}

/// Makes the data directory (journal, snapshots, the first admin token) the owner's alone:
/// created with mode 0700, or tightened to it (and said) when group or others could enter it.
pub fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
        tracing::warn!(
            "{} was open to others (mode {:o}); it holds the journal and tokens, so it is now 0700",
            dir.display(),
            mode & 0o777
        );
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsFile {
    tenants: Vec<TenantEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    name: String,
    #[serde(default = "one")]
    weight: f64,
    cohort: Option<String>,
    /// GPU quota, every model.
    gpus: u64,
    /// CPU quota in cores (running jobs and live sandboxes count against it); default: none.
    cpus: Option<u64>,
    /// Memory quota in GiB; default: none.
    memory_gib: Option<u64>,
}

fn one() -> f64 {
    1.0
}

fn read_tenants(path: &PathBuf) -> Result<Vec<model::TenantSpec>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: TenantsFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if file.tenants.is_empty() {
        bail!("{}: tenants: at least one tenant is needed", path.display());
    }
    Ok(file
        .tenants
        .into_iter()
        .map(|t| {
            // GPUs are what tenants are held to; CPU and memory bind only where given.
            let mut quota = model::ResourceVec::UNLIMITED;
            for g in quota.gpus.iter_mut() {
                *g = t.gpus;
            }
            if let Some(cpus) = t.cpus {
                quota.cpu_millis = cpus.saturating_mul(1000).min(quota.cpu_millis);
            }
            if let Some(gib) = t.memory_gib {
                quota.memory_mib = gib.saturating_mul(1024).min(quota.memory_mib);
            }
            model::TenantSpec {
                name: t.name,
                weight: t.weight,
                cohort: t.cohort,
                quota,
            }
        })
        .collect())
}

pub fn run(a: &ServerArgs) -> Result<()> {
    crate::logging::init(a.log_format);
    let tls = a.tls.settings(&a.listen)?;
    private_dir(&a.data_dir)?;
    let admin_token_file = a.data_dir.join("admin.token");
    let store_url = match &a.store {
        Some(u) => u.clone(),
        None => format!("sqlite:{}", a.data_dir.join("journal.db").display()),
    };
    let fleet_toml = match &a.fleet {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            // Checked here, so that an error names the file.
            fleet::file::parse(
                &p.display().to_string(),
                &text,
                model::InstanceCatalog::builtin(),
            )?;
            Some(text)
        }
        None => None,
    };
    let tenants = a.tenants.as_ref().map(read_tenants).transpose()?;
    let Some(mut rules) = sched::SchedConfig::policy(&a.policy) else {
        bail!(
            "--policy: unknown policy '{}' (stargrid, fifo, first-fit, slurm, sjf, las)",
            a.policy
        );
    };
    rules.node_scoring = node_scoring(&a.node_score)?;
    let config = server::Config {
        store_url,
        cell: a.cell.clone(),
        fleet_toml,
        tenants,
        idle_pass_interval: 60,
        heartbeat_timeout: std::time::Duration::from_secs(a.heartbeat_timeout_s),
        admin_token_file: admin_token_file.clone(),
        snapshot_every: a.snapshot_every,
        snapshot_min_interval: std::time::Duration::from_secs(a.snapshot_min_interval_s),
        replay_all: a.replay_all,
        rules,
        limits: a.limits.limits(),
        secrets_key_file: Some(
            a.secrets_key
                .clone()
                .unwrap_or_else(|| a.data_dir.join("secrets.key")),
        ),
        catalogue: a
            .catalogue
            .as_deref()
            .map(|p| crate::cost_view::load_catalogue(Some(p)))
            .transpose()?,
    };
    // Replay happens before the runtime starts: it blocks on the journal.
    let srv = server::Server::start(&config).context("starting the server")?;
    let said = format!(
        "(journal {}; {})",
        store::display_url(&config.store_url),
        srv.replay_summary()
    );
    serve_until_ctrl_c(srv, &a.listen, tls, |at| {
        format!("stargrid server on {at} {said}")
    })
}

/// Serves `srv` (the cell's writer or a frontend) on `listen`, over TLS when `tls` is given,
/// until Ctrl-C; prints `said` of its address (`http://127.0.0.1:7070`) once it listens.
pub fn serve_until_ctrl_c(
    srv: std::sync::Arc<server::Server>,
    listen: &str,
    tls: Option<std::sync::Arc<server::tls::ServerConfig>>,
    said: impl FnOnce(&str) -> String,
) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener
            .local_addr()
            .context("reading the listening address")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("{}", said(&format!("{scheme}://{addr}")));
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match (srv.is_frontend(), tls) {
            (true, tls) => server::serve_frontend(srv, listener, tls, shutdown).await,
            (false, Some(tls)) => server::serve_tls(srv, listener, tls, shutdown).await,
            (false, None) => server::serve(srv, listener, shutdown).await,
        }
        .context("serving the API")
    })
}

/// The node score named on the command line.
pub fn node_scoring(name: &str) -> Result<sched::NodeScoring> {
    sched::NodeScoring::parse(name).with_context(|| {
        format!(
            "--node-score: unknown score '{name}' (known: {})",
            sched::NodeScoring::NAMES.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_unless_said_otherwise() {
        for ok in ["127.0.0.1:7070", "[::1]:7070", "localhost:7070"] {
            assert!(check_plain_http(ok, false, false).is_ok(), "{ok}");
        }
        for off in [
            "0.0.0.0:7070",
            "10.0.0.5:7070",
            "[::]:7070",
            "example.org:7070",
        ] {
            let e = check_plain_http(off, false, false).unwrap_err().to_string();
            assert!(e.contains("bearer tokens in clear"), "{e}");
            assert!(check_plain_http(off, true, false).is_ok());
            assert!(check_plain_http(off, false, true).is_ok());
        }
    }
}
