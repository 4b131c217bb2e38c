//! The HTTP API: routes, handlers, the pass loop and start-up (replay of the journal).
//!
//! A change is applied in memory and queued for the journal under one lock, so the journal's
//! order is the order of application; the handler answers once the record is durable (group
//! commit batches the concurrent ones). If the journal cannot commit, memory is ahead of the
//! disk: the server stops at once (fail-stop), and a restart replays what is durable.

use crate::api::{
    ApiError, BatchList, BatchView, FieldProblem, Heartbeat, HeartbeatReply, IssueToken, JobList,
    JobView, NodeView, ScaleService, ServiceView, SubmitJob, SubmitSandboxes, SubmitService,
    Submitted, TenantView, Token,
};
use crate::state::{
    default_fleet_toml, default_tenants, ControlPlane, Event, Role, StateError, TokenProblem,
};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::Journal;
use utoipa::OpenApi;

mod agents;
mod auth;
mod changes;
mod errors;
mod fleet;
mod jobs;
mod logs;
mod openapi;
mod sandboxes;
mod services;
mod startup;
mod tokens;

use agents::*;
use auth::*;
pub use auth::{new_token, token_hash};
use changes::*;
use errors::*;
use fleet::*;
use jobs::*;
use logs::*;
pub use openapi::ApiDoc;
use openapi::*;
use sandboxes::*;
use services::*;
pub use startup::{Config, StartError};
use tokens::*;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most jobs on one page.
pub const MAX_PAGE: usize = 1000;

/// Shared server state.
pub struct Server {
    plane: Mutex<ControlPlane>,
    journal: Journal,
    idle_pass_interval: u64,
    heartbeat_timeout: Duration,
    /// When each node's agent was last heard from (not journaled: after a restart every node
    /// that was up gets a full timeout to check in again).
    last_seen: Mutex<HashMap<String, Instant>>,
    /// Wakes the pass loop when something was submitted or cancelled.
    wake: tokio::sync::Notify,
    /// Recent changes to nodes' assignments, for agents waiting on them.
    changes: Mutex<ChangeLog>,
    snapshot_every: u64,
    /// The record the latest snapshot holds.
    last_snapshot: std::sync::atomic::AtomicU64,
    /// How start-up went, in words.
    replay_summary: String,
    /// Task logs being read.
    logs: Mutex<Logs>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The journal could not commit what memory already holds: stop, and let a restart replay.
fn fail_stop(e: store::StoreError) -> ! {
    tracing::error!("journal commit failed, stopping: {e}");
    eprintln!("stargrid server: journal commit failed, stopping: {e}");
    std::process::exit(70);
}

impl Server {
    /// Builds an event from the state (under the lock, stamped with the time), applies it and
    /// queues it for the journal; answers with the event and its record once it is durable.
    /// A refusal by the state is answered with `refused` and `field`.
    async fn commit(
        &self,
        make: impl FnOnce(&ControlPlane, u64) -> Result<Event, Refusal>,
        refused: StatusCode,
        field: &str,
    ) -> Result<(Event, u64), Refusal> {
        let (pending, event, changed) = {
            let mut p = self.plane();
            let at = p.stamp(unix_now());
            let event = make(&p, at)?;
            let record = match p.apply(&event) {
                Ok(r) => r,
                Err(e) => return Err(Refusal::new(refused, field, e.to_string())),
            };
            // Taken with the event, so that publishing needs no second turn at the lock.
            let changed = p.take_changed_nodes();
            (self.journal.append(vec![p.encode(&record)]), event, changed)
        };
        self.wake.notify_one();
        match pending.done().await {
            Ok(seqs) => {
                self.change_log().publish(changed);
                Ok((event, seqs.start))
            }
            Err(e) => fail_stop(e),
        }
    }

    fn plane(&self) -> std::sync::MutexGuard<'_, ControlPlane> {
        // A panic while holding the lock leaves a state no handler should trust.
        match self.plane.lock() {
            Ok(g) => g,
            Err(_) => {
                eprintln!("stargrid server: state lock poisoned, stopping");
                std::process::exit(70);
            }
        }
    }

    /// Runs one pass now if anything changed or the queue was quiet for long enough; returns
    /// whether it ran. The pass is durable when this returns.
    pub async fn pass_if_due(&self, last_pass: &mut u64) -> bool {
        let pending = {
            let mut p = self.plane();
            let at = p.stamp(unix_now());
            if !p.dirty() && !p.due(at) && at < last_pass.saturating_add(self.idle_pass_interval) {
                return false;
            }
            let e = Event::Pass { at };
            let record = match p.apply(&e) {
                Ok(r) => r,
                Err(err) => {
                    tracing::error!("pass refused: {err}");
                    return false;
                }
            };
            *last_pass = at;
            self.journal.append(vec![p.encode(&record)])
        };
        if let Err(e) = pending.done().await {
            fail_stop(e);
        }
        self.publish_changes();
        true
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, Logs> {
        match self.logs.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn change_log(&self) -> std::sync::MutexGuard<'_, ChangeLog> {
        match self.changes.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Tells waiting agents which nodes' assignments changed. Called once a change is durable,
    /// so that no agent starts work the journal does not hold.
    fn publish_changes(&self) {
        let nodes = self.plane().take_changed_nodes();
        self.change_log().publish(nodes);
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        match self.last_seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Marks down every node whose agent went quiet for longer than the timeout; the failure
    /// rules apply to its work. Durable when this returns.
    pub async fn expire_silent_nodes(&self) {
        let pending = {
            let mut p = self.plane();
            let silent: Vec<String> = {
                let seen = self.seen();
                p.up_nodes()
                    .into_iter()
                    .filter(|n| {
                        seen.get(n)
                            .is_none_or(|t| t.elapsed() > self.heartbeat_timeout)
                    })
                    .collect()
            };
            if silent.is_empty() {
                return;
            }
            let at = p.stamp(unix_now());
            let mut records = Vec::new();
            for node in silent {
                tracing::warn!(%node, "no heartbeat: node down");
                let e = Event::NodeDown { node, at };
                if let Ok(record) = p.apply(&e) {
                    records.push(p.encode(&record));
                }
            }
            self.journal.append(records)
        };
        if let Err(e) = pending.done().await {
            fail_stop(e);
        }
        self.publish_changes();
    }

    /// How start-up went: records replayed, and the snapshot they followed.
    pub fn replay_summary(&self) -> &str {
        &self.replay_summary
    }

    /// Saves a snapshot when enough records were journaled since the last one. The state is
    /// copied under the lock and encoded outside it; the snapshot is queued behind the records
    /// it holds, so it is never durable before them.
    pub async fn snapshot_if_due(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        let last = self.last_snapshot.load(Ordering::Relaxed);
        let copy = {
            let p = self.plane();
            if self.snapshot_every == 0 || p.seq() < last.saturating_add(self.snapshot_every) {
                return;
            }
            p.clone()
        };
        let seq = copy.seq();
        let body = match tokio::task::spawn_blocking(move || copy.snapshot()).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return tracing::error!("{e}"),
            Err(e) => return tracing::error!("snapshot: {e}"),
        };
        let bytes = body.len();
        match self.journal.save_snapshot(seq, body).done().await {
            Ok(()) => {
                self.last_snapshot.store(seq, Ordering::Relaxed);
                tracing::info!(seq, bytes, "snapshot saved");
            }
            Err(e) => fail_stop(e),
        }
    }

    /// The state's fingerprint (tests compare it across restarts).
    pub fn fingerprint(&self) -> String {
        self.plane().fingerprint()
    }

    /// Stops the journal writer after it committed what it holds.
    pub fn close(&self) {
        self.journal.close();
    }
}

/// The router over a started server.
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", get(openapi))
        .route("/v1/jobs", post(submit_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/why", get(why_job))
        .route("/v1/jobs/{id}/logs", get(job_logs))
        .route("/v1/services", post(create_service).get(list_services))
        .route("/v1/services/{id}", get(get_service))
        .route("/v1/services/{id}/scale", post(scale_service))
        .route("/v1/services/{id}/delete", post(delete_service))
        .route("/v1/sandboxes", post(submit_sandboxes).get(list_batches))
        .route("/v1/sandboxes/{id}", get(get_batch))
        .route("/v1/sandboxes/{id}/cancel", post(cancel_batch))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{name}/drain", post(drain_node))
        .route("/v1/nodes/{name}/resume", post(resume_node))
        .route("/v1/tenants", get(list_tenants))
        .route("/v1/cost", get(cost))
        .route("/v1/agent/heartbeat", post(heartbeat))
        .route("/v1/agent/wait", post(wait_for_changes))
        .route("/v1/tokens", post(issue_token).get(list_tokens))
        .route("/v1/tokens/{id}/revoke", post(revoke_token))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .with_state(server)
}

/// Refuses a request whose declared length is over the limit before reading its body (longer
/// bodies without a declared length are cut off by `DefaultBodyLimit`).
async fn refuse_large_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            format!("requests are limited to {MAX_BODY_BYTES} bytes"),
        );
    }
    next.run(request).await
}

/// Serves `router` on `listener` and runs passes every second until `shutdown` resolves.
pub async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let passes = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut last = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = server.wake.notified() => {}
                }
                server.expire_silent_nodes().await;
                server.pass_if_due(&mut last).await;
                server.snapshot_if_due().await;
            }
        })
    };
    let result = axum::serve(listener, router(server.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    passes.abort();
    server.close();
    result
}
