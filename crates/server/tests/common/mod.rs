//! What the server's integration tests share: a server started in-process on a SQLite journal
//! in a directory, with no passes or expiry of its own (the tests drive them), and its first
//! admin token; a JSON POST through the router.

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

/// POSTs `body` as JSON to `path` with `token`; the status and the answer's JSON (null when
/// it is not JSON).
pub async fn call(
    app: &axum::Router,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let request = axum::http::Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    send(app, request).await
}

/// GETs `path` with `token`; the status and the answer's JSON (null when it is not JSON).
pub async fn get(app: &axum::Router, token: &str, path: &str) -> (u16, serde_json::Value) {
    let request = axum::http::Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    send(app, request).await
}

/// Sends `request` through the router; the status and the answer's JSON (null when it is not
/// JSON).
async fn send(
    app: &axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}
