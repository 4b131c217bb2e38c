//! What the server's integration tests share: a server started in-process on a SQLite journal
//! in a directory, with no passes or expiry of its own (the tests drive them), and its first
//! admin token.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A server on `dir/journal.db`, started off the async runtime (start-up blocks on the
/// journal), and its admin token.
pub async fn start_server(dir: &Path) -> (Arc<server::Server>, String) {
    let config = server::Config {
        idle_pass_interval: 3600,
        heartbeat_timeout: Duration::from_secs(3600),
        snapshot_every: 0,
        ..server::Config::new(format!("sqlite:{}", dir.join("journal.db").display()), dir)
    };
    let srv = tokio::task::spawn_blocking(move || server::Server::start(&config))
        .await
        .unwrap()
        .unwrap();
    let token = std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    (srv, token)
}
