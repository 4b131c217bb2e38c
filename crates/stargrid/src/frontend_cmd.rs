//! `stargrid frontend`: a frontend of a cell's writer (`--server`, with an admin token): it
//! follows the writer's state, answers reads and agents' heartbeats from its copy, and passes
//! every change on to the writer. Any number of them can stand behind one address.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct FrontendArgs {
    /// Log lines as text, or as one JSON object each (the level from `RUST_LOG`, default
    /// info).
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:7071")]
    pub listen: String,
    /// How often the writer hears which nodes were heard from, in milliseconds (keep it well
    /// under the writer's heartbeat timeout).
    #[arg(long, default_value_t = 2000)]
    pub alive_every_ms: u64,
    /// The writer's secrets key file (the same file; agents here get their tasks' secret
    /// environment from it). Without it, tasks with secrets are refused to agents here.
    #[arg(long)]
    pub secrets_key: Option<PathBuf>,
    #[command(flatten)]
    pub tls: crate::server_cmd::TlsArgs,
}

pub fn run(settings: &crate::config::Settings, a: &FrontendArgs) -> Result<()> {
    crate::logging::init(a.log_format);
    if a.alive_every_ms == 0 {
        anyhow::bail!("--alive-every-ms: must be at least 1");
    }
    let tls = a.tls.settings(&a.listen)?;
    let config = server::FrontendConfig {
        writer: settings.client(settings.credential_from_file("a frontend")?)?,
        secrets_key_file: a.secrets_key.clone(),
        alive_every: std::time::Duration::from_millis(a.alive_every_ms),
    };
    let srv = server::Server::follow_writer(&config).context("starting the frontend")?;
    let said = format!("({})", srv.replay_summary());
    crate::server_cmd::serve_until_ctrl_c(srv, &a.listen, tls, |at| {
        format!("stargrid frontend on {at} {said}")
    })
}
