//! `stargrid gateway`: the request gateway for the cell's inference services, in a process
//! of its own. It follows the server's routes (`--server`, with an admin token for every
//! tenant's services or a tenant's token for its own), proxies `/{tenant}/{service}/…` to
//! ready replicas, and reports the load it carries each second. It does not authenticate its
//! clients: whoever reaches its address reaches the services its token may see, so it listens
//! on loopback unless told otherwise and belongs behind the operator's own front door.

use anyhow::{Context, Result};
use clap::Args;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct GatewayArgs {
    /// Address to take requests on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// This gateway's name in load reports (default: the listening address).
    #[arg(long)]
    pub name: Option<String>,
    /// Requests with this header go to the replica its value hashes to (e.g. a session id).
    #[arg(long)]
    pub affinity_header: Option<String>,
    /// Without that header, the first this-many bytes of a request's body pick its replica,
    /// so requests sharing a prompt prefix reach the replica holding its KV cache (0: off).
    #[arg(long, default_value_t = 0)]
    pub prefix_affinity_bytes: usize,
    /// Seconds a request waits for a ready replica when its service has none.
    #[arg(long, default_value_t = 30)]
    pub hold_timeout_s: u64,
    /// Seconds a request's body may take to arrive.
    #[arg(long, default_value_t = 30)]
    pub body_timeout_s: u64,
    /// Seconds a replica may take to start answering.
    #[arg(long, default_value_t = 300)]
    pub answer_timeout_s: u64,
    /// Most requests in flight through this gateway (held ones too); more are answered 503.
    #[arg(long, default_value_t = 10_000)]
    pub max_inflight: usize,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body: usize,
    /// Retry POST and PATCH requests on another replica after a failure past the
    /// connection too (for inference APIs, whose requests have no side effects).
    #[arg(long)]
    pub retry_unsafe: bool,
    /// Log lines as text, or as one JSON object each.
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

pub fn run(settings: &crate::config::Settings, a: &GatewayArgs) -> Result<()> {
    crate::logging::init(a.log_format);
    let affinity_header = a
        .affinity_header
        .as_deref()
        .map(|h| hyper::header::HeaderName::from_bytes(h.as_bytes()))
        .transpose()
        .context("--affinity-header: not a header name")?;
    let client = settings.client(&settings.token)?;
    let routes = Arc::new(gateway::table::Routes::default());
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.local_addr().context("reading the address")?;
        let name = a.name.clone().unwrap_or_else(|| addr.to_string());
        gateway::follow_routes(client.clone(), routes.clone());
        gateway::report_load(client, routes.clone(), name.clone());
        println!("stargrid gateway {name} on http://{addr}/{{tenant}}/{{service}}/");
        let config = gateway::proxy::ProxyConfig {
            max_body: a.max_body,
            affinity_header,
            prefix_affinity_bytes: a.prefix_affinity_bytes,
            hold_timeout: Duration::from_secs(a.hold_timeout_s),
            body_timeout: Duration::from_secs(a.body_timeout_s),
            answer_timeout: Duration::from_secs(a.answer_timeout_s),
            max_inflight: a.max_inflight.max(1),
            retry_unsafe: a.retry_unsafe,
        };
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        gateway::serve(listener, routes, config, shutdown).await;
        anyhow::Ok(())
    })
}
