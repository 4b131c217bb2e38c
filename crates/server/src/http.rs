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

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most jobs on one page.
pub const MAX_PAGE: usize = 1000;

/// The OpenAPI document of `/v1`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Stargrid", description = "Stargrid control-plane API"),
    paths(
        submit_job,
        list_jobs,
        get_job,
        cancel_job,
        why_job,
        job_logs,
        create_service,
        list_services,
        get_service,
        scale_service,
        delete_service,
        submit_sandboxes,
        list_batches,
        get_batch,
        cancel_batch,
        list_nodes,
        drain_node,
        resume_node,
        list_tenants,
        cost,
        heartbeat,
        wait_for_changes,
        issue_token,
        list_tokens,
        revoke_token
    ),
    components(schemas(
        SubmitJob,
        Submitted,
        JobView,
        JobList,
        NodeView,
        TenantView,
        ApiError,
        FieldProblem,
        Heartbeat,
        crate::api::TaskReport,
        HeartbeatReply,
        crate::api::Assignment,
        crate::api::SandboxAssignment,
        crate::api::WaitForChanges,
        crate::api::LogView,
        crate::api::TokenView,
        crate::api::LogChunk,
        crate::api::LogWanted,
        crate::api::Inventory,
        crate::api::Changes,
        SubmitService,
        crate::api::SpreadSpec,
        ScaleService,
        ServiceView,
        SubmitSandboxes,
        BatchView,
        BatchList,
        IssueToken,
        Token
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Declares the bearer-token scheme in the OpenAPI document.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// A new random token (256 bits, hex).
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the journal keeps of a token.
pub fn token_hash(token: &str) -> String {
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// What the server was started with, for a journal that has no `Init` yet.
#[derive(Clone, Debug)]
pub struct Config {
    /// The journal's URL (see `store::parse_url`).
    pub store_url: String,
    /// A fleet file's text; `None`: the small default fleet.
    pub fleet_toml: Option<String>,
    /// Tenants; `None`: one tenant, `default`.
    pub tenants: Option<Vec<model::TenantSpec>>,
    /// The longest a quiet queue goes without a pass, in seconds.
    pub idle_pass_interval: u64,
    /// A node whose agent has not been heard from for this long is down.
    pub heartbeat_timeout: Duration,
    /// Where the first admin token is written (mode 0600) when the journal has no token yet.
    pub admin_token_file: std::path::PathBuf,
    /// A snapshot is saved once this many records were journaled after the last one (0:
    /// never); a restart loads it and replays only what follows.
    pub snapshot_every: u64,
    /// Replay the whole journal at start even when a snapshot exists (to recover from a
    /// snapshot suspected bad, or to compare).
    pub replay_all: bool,
    /// Prices and commitments for a new journal: the catalogue's rates are written into the
    /// fleet's pools, and its commitments into `Init` (a journal keeps the ones it began with).
    pub catalogue: Option<model::cost::CostCatalogue>,
    /// The queue's rules for what this server decides. Replayed history keeps what was decided
    /// under the rules of the build that wrote it.
    pub rules: sched::SchedConfig,
}

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

/// How long agents keep sending a job's log after someone last asked for it.
const LOG_INTEREST: Duration = Duration::from_secs(30);
/// The most of a task's log the server keeps (its tail).
const LOG_TAIL_BYTES: usize = 1 << 20;

/// Task logs being read. They stay on the nodes; the server asks agents for what follows what
/// it has (in heartbeat answers) and keeps each task's tail in memory, not in the journal.
#[derive(Default)]
struct Logs {
    /// Jobs whose logs someone read lately, and until when agents are asked for more.
    wanted: HashMap<u64, Instant>,
    /// (job, run, rank) → the tail received.
    tails: HashMap<(u64, u32, u32), Tail>,
}

/// The received end of one task's log.
#[derive(Default)]
struct Tail {
    /// Offset of `text`'s first byte in the log.
    start: u64,
    /// Offset of the next byte wanted.
    next: u64,
    text: String,
}

impl Logs {
    fn ingest(&mut self, chunk: crate::api::LogChunk) {
        let tail = self
            .tails
            .entry((chunk.job, chunk.run, chunk.rank))
            .or_default();
        if chunk.offset != tail.next {
            // Stale or out of order: the next answer asks again from `next`.
            return;
        }
        tail.text.push_str(&chunk.data);
        tail.next += chunk.len;
        if tail.text.len() > LOG_TAIL_BYTES {
            let mut cut = tail.text.len() - LOG_TAIL_BYTES;
            while !tail.text.is_char_boundary(cut) {
                cut += 1;
            }
            tail.text.drain(..cut);
            tail.start = tail.next - tail.text.len() as u64;
        }
    }
}

/// Most node changes remembered for waiting agents; one that asks about older ones is told to
/// heartbeat every node.
const CHANGE_LOG_LEN: usize = 100_000;
/// Longest wait an agent may ask for.
const MAX_WAIT_MS: u64 = 30_000;

/// Nodes whose assignments changed, numbered by version, and the agents waiting on them.
#[derive(Default)]
struct ChangeLog {
    version: u64,
    /// (version, node), oldest first.
    log: std::collections::VecDeque<(u64, String)>,
    /// Versions up to this one were dropped from the log.
    dropped_through: u64,
    /// Waiting requests, by the nodes they wait on.
    waiters: HashMap<String, Vec<Arc<tokio::sync::Notify>>>,
}

impl ChangeLog {
    fn publish(&mut self, nodes: Vec<String>) {
        if nodes.is_empty() {
            return;
        }
        self.version += 1;
        for n in nodes {
            if let Some(waiting) = self.waiters.remove(&n) {
                for w in waiting {
                    w.notify_one();
                }
            }
            self.log.push_back((self.version, n));
        }
        while self.log.len() > CHANGE_LOG_LEN {
            if let Some((v, _)) = self.log.pop_front() {
                self.dropped_through = v;
            }
        }
    }

    /// The asked-about nodes changed after `after`; `None`: cannot tell (all of them).
    fn since(&self, after: u64, asked: &std::collections::HashSet<&str>) -> Option<Vec<String>> {
        if after > self.version || after < self.dropped_through {
            return None;
        }
        let mut changed: Vec<String> = self
            .log
            .iter()
            .rev()
            .take_while(|(v, _)| *v > after)
            .filter(|(_, n)| asked.contains(n.as_str()))
            .map(|(_, n)| n.clone())
            .collect();
        changed.sort_unstable();
        changed.dedup();
        Some(changed)
    }

    fn register(&mut self, nodes: &[String], waiter: &Arc<tokio::sync::Notify>) {
        for n in nodes {
            self.waiters
                .entry(n.clone())
                .or_default()
                .push(waiter.clone());
        }
    }

    fn unregister(&mut self, nodes: &[String], waiter: &Arc<tokio::sync::Notify>) {
        for n in nodes {
            if let Some(v) = self.waiters.get_mut(n) {
                v.retain(|w| !Arc::ptr_eq(w, waiter));
                if v.is_empty() {
                    self.waiters.remove(n);
                }
            }
        }
    }
}

/// Errors of start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The journal cannot be opened or read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A journal record is not an event of this build.
    #[error("journal record {seq}: {reason}")]
    Decode {
        /// The record.
        seq: u64,
        /// Why it does not decode.
        reason: String,
    },
    /// The journal does not replay.
    #[error(transparent)]
    State(#[from] StateError),
    /// The first admin token cannot be made or saved.
    #[error("admin token {path}: {reason}")]
    Token {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
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
    /// Opens the journal and rebuilds the state from it (or starts a new one). Blocks: call it
    /// outside the async runtime (or in `spawn_blocking`).
    pub fn start(config: &Config) -> Result<Arc<Server>, StartError> {
        let shown = store::display_url(&config.store_url);
        let journal = Journal::open_as_writer(&config.store_url, &mut || {
            tracing::warn!("another server writes {shown}: standing by");
            eprintln!(
                "stargrid server: another server writes the journal {shown}; standing by until it stops"
            );
        })?;
        // Start from the latest snapshot, if this build reads it, then replay what follows.
        let mut plane = None;
        let mut from_snapshot = None;
        let latest = if config.replay_all {
            None
        } else {
            journal.latest_snapshot()?
        };
        if let Some((seq, body)) = latest {
            match ControlPlane::from_snapshot(&body) {
                Ok(p) if p.seq() == seq => {
                    plane = Some(p);
                    from_snapshot = Some(seq);
                }
                Ok(p) => tracing::warn!(
                    "snapshot at record {seq} holds record {}: replaying the whole journal",
                    p.seq()
                ),
                Err(e) => tracing::warn!("{e}: replaying the whole journal"),
            }
        }
        let mut after = from_snapshot.unwrap_or(0);
        let mut replayed = 0u64;
        let mut migrated = Vec::new();
        loop {
            let chunk = journal.read_after(after, 10_000)?;
            if chunk.is_empty() {
                break;
            }
            for r in chunk {
                let stored = crate::journal::decode(&r.body).map_err(|e| StartError::Decode {
                    seq: r.seq,
                    reason: e.to_string(),
                })?;
                let inputs_only = matches!(stored, crate::journal::Stored::Inputs(_));
                let record = ControlPlane::replay_one(&mut plane, r.seq, stored)?;
                // A record of format 0 is rewritten in the current format, with the decisions
                // this build made for it.
                if let (true, Some(record), Some(p)) = (inputs_only, record, plane.as_ref()) {
                    migrated.push(store::Record {
                        seq: r.seq,
                        body: p.encode(&record),
                    });
                }
                after = r.seq;
                replayed += 1;
            }
        }
        if !migrated.is_empty() {
            let count = migrated.len();
            journal.rewrite(migrated).wait()?;
            tracing::warn!(count, "journal records of format 0 rewritten in format 1");
            eprintln!(
                "stargrid server: {count} journal records written by an older build were upgraded to format {}",
                crate::journal::FORMAT
            );
        }
        let plane = match plane {
            Some(p) => p,
            None => {
                let fleet_toml = match &config.fleet_toml {
                    Some(t) => t.clone(),
                    None => default_fleet_toml()?,
                };
                let (fleet_toml, commitments) = match &config.catalogue {
                    Some(c) => (
                        crate::state::price_fleet(&fleet_toml, c)?,
                        c.commitments.clone(),
                    ),
                    None => (fleet_toml, Vec::new()),
                };
                let init = Event::Init {
                    fleet_toml,
                    tenants: config.tenants.clone().unwrap_or_else(default_tenants),
                    at: unix_now(),
                    commitments,
                };
                let plane = ControlPlane::new(&init)?;
                let record = crate::journal::Record {
                    event: init,
                    decisions: Vec::new(),
                    outcome: Default::default(),
                };
                journal.append(vec![plane.encode(&record)]).wait()?;
                plane
            }
        };
        let replay_summary = match from_snapshot {
            Some(at) => format!("replayed {replayed} records after the snapshot at record {at}"),
            None => format!("replayed {replayed} records"),
        };
        tracing::info!("{replay_summary}");
        let mut plane = plane;
        // This build's rules (or the operator's) decide from now on, whatever a snapshot carried.
        plane.set_rules(config.rules.clone());
        if !plane.has_tokens() {
            issue_first_admin_token(&mut plane, &journal, &config.admin_token_file)?;
        }
        let now = Instant::now();
        let last_seen = plane.up_nodes().into_iter().map(|n| (n, now)).collect();
        Ok(Arc::new(Server {
            plane: Mutex::new(plane),
            journal,
            idle_pass_interval: config.idle_pass_interval.max(1),
            heartbeat_timeout: config.heartbeat_timeout,
            last_seen: Mutex::new(last_seen),
            wake: tokio::sync::Notify::new(),
            changes: Mutex::new(ChangeLog::default()),
            snapshot_every: config.snapshot_every,
            last_snapshot: std::sync::atomic::AtomicU64::new(from_snapshot.unwrap_or(0)),
            replay_summary,
            logs: Mutex::new(Logs::default()),
        }))
    }

    /// Who sent the request: the role of its bearer token.
    fn principal(&self, headers: &HeaderMap) -> Result<Role, Refusal> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "authorization",
                    "send 'Authorization: Bearer <token>'",
                )
            })?;
        let hash = token_hash(token.trim());
        let p = self.plane();
        match p.role_of(&hash, unix_now()) {
            Ok(role) => Ok(role.clone()),
            Err(TokenProblem::Unknown) => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                "unknown or revoked token",
            )),
            Err(TokenProblem::Expired(at)) => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                format!("the token expired at {at} (Unix seconds)"),
            )),
        }
    }

    /// The caller's role and the id of a `/v1/<things>/{id}` path.
    fn caller_and_id(&self, headers: &HeaderMap, raw: &str) -> Result<(Role, u64), Refusal> {
        let role = self.principal(headers)?;
        let id = raw.parse::<u64>().map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "id",
                format!("'{raw}' is not an id (a positive integer)"),
            )
        })?;
        Ok((role, id))
    }

    /// The caller's role, refused when it is an agent's (agents only report).
    fn submitter(&self, headers: &HeaderMap) -> Result<Role, Refusal> {
        match self.principal(headers)? {
            Role::Agent => Err(Refusal::forbidden(
                "an agent token cannot submit or see work",
            )),
            role => Ok(role),
        }
    }

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

/// A refused request: status, field and reason.
struct Refusal {
    status: StatusCode,
    field: String,
    reason: String,
}

impl Refusal {
    fn new(status: StatusCode, field: &str, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    fn forbidden(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, "authorization", reason)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        problem(self.status, &self.field, self.reason)
    }
}

/// Issues the first admin token and writes it where the operator can read it.
fn issue_first_admin_token(
    plane: &mut ControlPlane,
    journal: &Journal,
    path: &std::path::Path,
) -> Result<(), StartError> {
    let err = |reason: String| StartError::Token {
        path: path.display().to_string(),
        reason,
    };
    let token = new_token().map_err(|e| err(e.to_string()))?;
    let event = Event::TokenIssued {
        hash: token_hash(&token),
        role: Role::Admin,
        at: plane.now(),
        expires_at: None,
    };
    let record = plane.apply(&event)?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        writeln!(f, "{token}").map_err(|e| err(e.to_string()))?;
    }
    journal.append(vec![plane.encode(&record)]).wait()?;
    Ok(())
}

/// Reads a JSON body; a refusal names the field (a path such as `env.X` for nested ones).
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "" } else { path.as_str() };
        Refusal::new(StatusCode::BAD_REQUEST, field, e.inner().to_string())
    })
}

/// Whether `role` may see or touch work of `tenant`.
fn may_touch(role: &Role, tenant: &str) -> bool {
    match role {
        Role::Admin => true,
        Role::Tenant { tenant: t } => t == tenant,
        Role::Agent => false,
    }
}

fn problem(status: StatusCode, field: &str, reason: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: FieldProblem {
                field: field.to_string(),
                reason: reason.into(),
            },
        }),
    )
        .into_response()
}

fn not_found(id: u64) -> Response {
    problem(StatusCode::NOT_FOUND, "id", format!("no job {id}"))
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// Queue a training job.
#[utoipa::path(post, path = "/v1/jobs", request_body = SubmitJob,
    responses((status = 201, body = Submitted), (status = 400, body = ApiError), (status = 413, description = "body over 1 MiB")))]
async fn submit_job(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(
        submit_work(
            &server,
            &headers,
            &body,
            |r: &SubmitJob| r.tenant.clone(),
            ControlPlane::submit_event,
            StatusCode::BAD_REQUEST,
            "",
        )
        .await,
    )
}

/// What every submission route does: read the body, check the token's tenant, turn the
/// request into its event, apply and journal it, and answer the new id once it is durable.
/// The state's refusal is answered with `refused` and `field`.
async fn submit_work<T: serde::de::DeserializeOwned>(
    server: &Server,
    headers: &HeaderMap,
    body: &[u8],
    tenant_of: impl FnOnce(&T) -> String,
    make: impl FnOnce(&ControlPlane, &T, u64) -> Result<Event, FieldProblem>,
    refused: StatusCode,
    field: &str,
) -> Result<Response, Refusal> {
    let role = server.submitter(headers)?;
    let req: T = parse_json(body)?;
    check_tenant(&role, &tenant_of(&req))?;
    let (event, seq) = server
        .commit(
            |p, at| make(p, &req, at).map_err(bad_request),
            refused,
            field,
        )
        .await?;
    let id = match event {
        Event::Submit { id, .. }
        | Event::ServiceCreate { id, .. }
        | Event::SandboxBatch { id, .. } => id,
        _ => {
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "",
                "not a submission",
            ))
        }
    };
    Ok((StatusCode::CREATED, Json(Submitted { id, seq })).into_response())
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this tenant's jobs.
    tenant: Option<String>,
    /// Only jobs in this state.
    state: Option<String>,
    /// Jobs with a larger id (the previous page's `next_after`).
    after: Option<u64>,
    /// Page size, 1..=1000 (default 100).
    limit: Option<usize>,
}

/// List jobs, in id order, a page at a time.
#[utoipa::path(get, path = "/v1/jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = ApiError)))]
async fn list_jobs(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let role = match server.principal(&headers) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let Query(mut q) = match query {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "query", e.body_text()),
    };
    const STATES: [&str; 5] = ["pending", "running", "preempting", "finished", "cancelled"];
    if let Some(s) = &q.state {
        if !STATES.contains(&s.as_str()) {
            return problem(
                StatusCode::BAD_REQUEST,
                "state",
                format!("unknown state '{s}' ({})", STATES.join(", ")),
            );
        }
    }
    match &role {
        Role::Admin => {}
        Role::Agent => {
            return Refusal::forbidden("an agent token cannot list jobs").into_response()
        }
        // A tenant sees its own work only.
        Role::Tenant { tenant } => {
            if q.tenant.as_ref().is_some_and(|t| t != tenant) {
                return Refusal::new(
                    StatusCode::FORBIDDEN,
                    "tenant",
                    format!("this token sees tenant '{tenant}' only"),
                )
                .into_response();
            }
            q.tenant = Some(tenant.clone());
        }
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return problem(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("must be 1..={MAX_PAGE}"),
        );
    }
    let jobs = server.plane().list(
        q.tenant.as_deref(),
        q.state.as_deref(),
        q.after.unwrap_or(0),
        limit + 1,
    );
    let more = jobs.len() > limit;
    let jobs: Vec<JobView> = jobs.into_iter().take(limit).collect();
    let next_after = if more {
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    Json(JobList { jobs, next_after }).into_response()
}

/// One job.
#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = u64, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 404, body = ApiError)))]
async fn get_job(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let (role, id) = match server.caller_and_id(&headers, &raw) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    match server.plane().job_view(id) {
        // Another tenant's job does not exist, as far as this token can tell.
        Some(v) if may_touch(&role, &v.tenant) => Json(v).into_response(),
        _ => not_found(id),
    }
}

/// Cancel a job (pending or running).
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", params(("id" = u64, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn cancel_job(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let (role, id) = match server.caller_and_id(&headers, &raw) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let pending = {
        let mut p = server.plane();
        if !p.job_tenant(id).is_some_and(|t| may_touch(&role, t)) {
            return not_found(id);
        }
        let event = Event::Cancel {
            id,
            at: p.stamp(unix_now()),
        };
        let record = match p.apply(&event) {
            Ok(r) => r,
            Err(e) => return problem(StatusCode::CONFLICT, "id", e.to_string()),
        };
        server.journal.append(vec![p.encode(&record)])
    };
    server.wake.notify_one();
    if let Err(e) = pending.done().await {
        fail_stop(e);
    }
    server.publish_changes();
    match server.plane().job_view(id) {
        Some(v) => Json(v).into_response(),
        None => not_found(id),
    }
}

/// Why a job is where it is.
#[utoipa::path(get, path = "/v1/jobs/{id}/why", params(("id" = u64, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 404, body = ApiError)))]
async fn why_job(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    get_job(State(server), headers, Path(raw)).await
}

/// Every node, with its state and free capacity.
#[utoipa::path(get, path = "/v1/nodes", responses((status = 200, body = [NodeView])))]
async fn list_nodes(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Err(r) = server.principal(&headers) {
        return r.into_response();
    }
    Json(server.plane().nodes()).into_response()
}

/// Tenants and their usage.
/// What the fleet has cost since the journal began, by provider, region, tenant, class and
/// kind of capacity, per day; committed capacity left idle; each commitment's burn-down.
/// Admin tokens only (it shows every tenant's spend).
#[utoipa::path(get, path = "/v1/cost",
    responses((status = 200, description = "the spend summary (JSON: total_usd, idle_committed_usd, by_provider, by_region, by_tenant, by_class, by_pricing, idle_by_provider, commitments)"),
        (status = 403, body = ApiError)))]
async fn cost(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    match server.principal(&headers) {
        Ok(Role::Admin) => {
            let plane = server.plane();
            let now = plane.stamp(unix_now());
            Json(plane.spend(now)).into_response()
        }
        Ok(_) => Refusal::forbidden("spend reports are for admin tokens").into_response(),
        Err(r) => r.into_response(),
    }
}

#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = [TenantView])))]
async fn list_tenants(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    match server.principal(&headers) {
        Ok(Role::Agent) => Refusal::forbidden("an agent token cannot list tenants").into_response(),
        Ok(role) => {
            let all = server.plane().tenants();
            let mine: Vec<TenantView> = all
                .into_iter()
                .filter(|t| may_touch(&role, &t.name))
                .collect();
            Json(mine).into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// An agent's heartbeat: it reports its tasks and gets back every task its node must run.
/// The first heartbeat of a node brings it up.
#[utoipa::path(post, path = "/v1/agent/heartbeat", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatReply), (status = 400, body = ApiError)))]
async fn heartbeat(State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    match server.principal(&headers) {
        Ok(Role::Agent | Role::Admin) => {}
        Ok(Role::Tenant { .. }) => {
            return Refusal::forbidden("only agent tokens report for nodes").into_response()
        }
        Err(r) => return r.into_response(),
    }
    let hb: Heartbeat = match parse_json(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let pending = {
        let mut p = server.plane();
        let at = p.stamp(unix_now());
        let events = match p.heartbeat_events(&hb, at) {
            Ok(e) => e,
            Err(fp) => return problem(StatusCode::BAD_REQUEST, &fp.field, fp.reason),
        };
        let mut records = Vec::new();
        for e in &events {
            if let Ok(record) = p.apply(e) {
                records.push(p.encode(&record));
            }
        }
        server.seen().insert(hb.node.clone(), Instant::now());
        (!records.is_empty()).then(|| server.journal.append(records))
    };
    if let Some(pending) = pending {
        server.wake.notify_one();
        if let Err(e) = pending.done().await {
            fail_stop(e);
        }
        server.publish_changes();
    }
    let (assignments, sandboxes) = server.plane().assignments(&hb.node);
    let logs_wanted = {
        let mut logs = server.logs();
        for chunk in hb.logs {
            logs.ingest(chunk);
        }
        let now = Instant::now();
        logs.wanted.retain(|_, until| *until > now);
        let jobs: Vec<u64> = logs.wanted.keys().copied().collect();
        let plane = server.plane();
        jobs.into_iter()
            .flat_map(|job| {
                plane
                    .log_tasks_on(job, &hb.node)
                    .into_iter()
                    .map(move |(run, rank)| (job, run, rank))
            })
            .map(|(job, run, rank)| crate::api::LogWanted {
                job,
                run,
                rank,
                from: logs.tails.get(&(job, run, rank)).map_or(0, |t| t.next),
            })
            .collect()
    };
    Json(HeartbeatReply {
        assignments,
        sandboxes,
        logs_wanted,
    })
    .into_response()
}

/// Issue a token (admin only): admin, tenant (with `tenant`) or agent.
#[utoipa::path(post, path = "/v1/tokens", request_body = IssueToken,
    responses((status = 201, body = Token), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
async fn issue_token(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match server.principal(&headers) {
        Ok(Role::Admin) => {}
        Ok(_) => return Refusal::forbidden("only an admin token issues tokens").into_response(),
        Err(r) => return r.into_response(),
    }
    let req: IssueToken = match parse_json(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let role = match (req.role.as_str(), req.tenant) {
        ("admin", None) => Role::Admin,
        ("agent", None) => Role::Agent,
        ("tenant", Some(tenant)) => Role::Tenant { tenant },
        ("tenant", None) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "tenant",
                "a tenant token names its tenant",
            )
        }
        ("admin" | "agent", Some(_)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "tenant",
                "only tenant tokens name a tenant",
            )
        }
        (other, _) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "role",
                format!("unknown role '{other}' (admin, tenant, agent)"),
            )
        }
    };
    if req.expires_in_s == Some(0) {
        return problem(
            StatusCode::BAD_REQUEST,
            "expires_in_s",
            "must be at least 1",
        );
    }
    let token = match new_token() {
        Ok(t) => t,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, "", e.to_string()),
    };
    let hash = token_hash(&token);
    let made = server
        .commit(
            |_, at| {
                Ok(Event::TokenIssued {
                    hash: hash.clone(),
                    role,
                    at,
                    expires_at: req.expires_in_s.map(|s| at.saturating_add(s)),
                })
            },
            StatusCode::BAD_REQUEST,
            "tenant",
        )
        .await;
    match made {
        Ok((Event::TokenIssued { expires_at, .. }, _)) => (
            StatusCode::CREATED,
            Json(Token {
                id: crate::state::token_id(&hash).to_string(),
                token,
                expires_at,
            }),
        )
            .into_response(),
        Ok(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "", "not a token"),
        Err(r) => r.into_response(),
    }
}

/// Every token that was not revoked: ids, roles, expiry (admin only; never the tokens).
#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, body = [crate::api::TokenView]), (status = 403, body = ApiError)))]
async fn list_tokens(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    respond((|| {
        if server.principal(&headers)? != Role::Admin {
            return Err(Refusal::forbidden("only an admin token lists tokens"));
        }
        let now = unix_now();
        let list: Vec<crate::api::TokenView> = server
            .plane()
            .token_list()
            .into_iter()
            .map(|(id, t)| {
                let (role, tenant) = match t.role {
                    Role::Admin => ("admin", None),
                    Role::Agent => ("agent", None),
                    Role::Tenant { tenant } => ("tenant", Some(tenant)),
                };
                crate::api::TokenView {
                    id,
                    role: role.into(),
                    tenant,
                    issued_at: t.issued_at,
                    expires_at: t.expires_at,
                    expired: t.expires_at.is_some_and(|e| e <= now),
                }
            })
            .collect();
        Ok(Json(list).into_response())
    })())
}

/// Revoke a token by its id (admin only): it stops working at once. A token cannot revoke
/// itself.
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", params(("id" = String, Path, description = "token id")),
    responses((status = 200, description = "revoked"), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn revoke_token(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(
        async {
            if server.principal(&headers)? != Role::Admin {
                return Err(Refusal::forbidden("only an admin token revokes tokens"));
            }
            let own = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| token_hash(t.trim()));
            if own
                .as_deref()
                .is_some_and(|h| crate::state::token_id(h) == id)
            {
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "id",
                    "a token cannot revoke itself (use another admin token)",
                ));
            }
            server
                .commit(
                    |p, at| {
                        if p.token_list().iter().any(|(t, _)| *t == id) {
                            Ok(Event::TokenRevoked { id: id.clone(), at })
                        } else {
                            Err(Refusal::new(
                                StatusCode::NOT_FOUND,
                                "id",
                                format!("no token {id}"),
                            ))
                        }
                    },
                    StatusCode::CONFLICT,
                    "id",
                )
                .await?;
            Ok(Json(serde_json::json!({ "revoked": id })).into_response())
        }
        .await,
    )
}

fn bad_request(fp: FieldProblem) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, &fp.field, fp.reason)
}

/// Refuses a request for another tenant than the token's.
fn check_tenant(role: &Role, tenant: &str) -> Result<(), Refusal> {
    if may_touch(role, tenant) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "tenant",
            format!("this token may not act for tenant '{tenant}'"),
        ))
    }
}

/// The tenant a listing may show: the token's own for a tenant token; refused when it asks
/// for another.
fn listing_tenant(role: &Role, asked: Option<String>) -> Result<Option<String>, Refusal> {
    match role {
        Role::Admin => Ok(asked),
        Role::Agent => Err(Refusal::forbidden("an agent token cannot list work")),
        Role::Tenant { tenant } => {
            if asked.as_ref().is_some_and(|t| t != tenant) {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "tenant",
                    format!("this token sees tenant '{tenant}' only"),
                ));
            }
            Ok(Some(tenant.clone()))
        }
    }
}

fn no_such(what: &str, id: u64) -> Response {
    problem(StatusCode::NOT_FOUND, "id", format!("no {what} {id}"))
}

fn respond(r: Result<Response, Refusal>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// Create an inference service (it starts at its minimum replica count).
#[utoipa::path(post, path = "/v1/services", request_body = SubmitService,
    responses((status = 201, body = Submitted), (status = 400, body = ApiError)))]
async fn create_service(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(
        submit_work(
            &server,
            &headers,
            &body,
            |r: &SubmitService| r.tenant.clone(),
            ControlPlane::service_event,
            StatusCode::BAD_REQUEST,
            "",
        )
        .await,
    )
}

/// Query of the service and batch listings.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct TenantQuery {
    /// Only this tenant's.
    tenant: Option<String>,
    /// Ids above this one (the previous page's `next_after`; batches only).
    after: Option<u64>,
    /// Page size, 1..=1000 (default 100; batches only).
    limit: Option<usize>,
}

/// Services, in id order.
#[utoipa::path(get, path = "/v1/services", params(TenantQuery),
    responses((status = 200, body = [ServiceView]), (status = 400, body = ApiError)))]
async fn list_services(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<TenantQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond((|| {
        let role = server.principal(&headers)?;
        let Query(q) =
            query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "query", e.body_text()))?;
        let tenant = listing_tenant(&role, q.tenant)?;
        Ok(Json(server.plane().list_services(tenant.as_deref())).into_response())
    })())
}

/// One service.
#[utoipa::path(get, path = "/v1/services/{id}", params(("id" = u64, Path, description = "service id")),
    responses((status = 200, body = ServiceView), (status = 404, body = ApiError)))]
async fn get_service(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    respond((|| {
        let (role, id) = server.caller_and_id(&headers, &raw)?;
        Ok(match server.plane().service_view(id) {
            Some(v) if may_touch(&role, &v.tenant) => Json(v).into_response(),
            _ => no_such("service", id),
        })
    })())
}

/// A service's owner check, then `make`'s event, applied and durable; answers the service.
async fn change_service(
    server: Arc<Server>,
    headers: HeaderMap,
    raw: String,
    make: impl FnOnce(u64, u64) -> Event,
) -> Response {
    respond(
        async {
            let (role, id) = server.caller_and_id(&headers, &raw)?;
            if role == Role::Agent {
                return Err(Refusal::forbidden("an agent token cannot change services"));
            }
            server
                .commit(
                    |p, at| match p.service_tenant(id) {
                        Some(t) if may_touch(&role, t) => Ok(make(id, at)),
                        _ => Err(Refusal::new(
                            StatusCode::NOT_FOUND,
                            "id",
                            format!("no service {id}"),
                        )),
                    },
                    StatusCode::CONFLICT,
                    "id",
                )
                .await?;
            Ok(match server.plane().service_view(id) {
                Some(v) => Json(v).into_response(),
                None => no_such("service", id),
            })
        }
        .await,
    )
}

/// Set a service's desired replica count (clamped to its bounds).
#[utoipa::path(post, path = "/v1/services/{id}/scale", request_body = ScaleService,
    params(("id" = u64, Path, description = "service id")),
    responses((status = 200, body = ServiceView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn scale_service(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let req: ScaleService = match parse_json(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    change_service(server, headers, raw, |id, at| Event::ServiceScale {
        id,
        replicas: req.replicas,
        at,
    })
    .await
}

/// Delete a service: its replicas stop.
#[utoipa::path(post, path = "/v1/services/{id}/delete", params(("id" = u64, Path, description = "service id")),
    responses((status = 200, body = ServiceView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn delete_service(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    change_service(server, headers, raw, |id, at| Event::ServiceDelete {
        id,
        at,
    })
    .await
}

/// Place a batch of sandboxes now, all or none (409 with the reason when they do not fit).
#[utoipa::path(post, path = "/v1/sandboxes", request_body = SubmitSandboxes,
    responses((status = 201, body = Submitted), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn submit_sandboxes(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(
        submit_work(
            &server,
            &headers,
            &body,
            |r: &SubmitSandboxes| r.tenant.clone(),
            ControlPlane::sandbox_event,
            StatusCode::CONFLICT,
            "count",
        )
        .await,
    )
}

/// Sandbox batches, in id order, a page at a time.
#[utoipa::path(get, path = "/v1/sandboxes", params(TenantQuery),
    responses((status = 200, body = BatchList), (status = 400, body = ApiError)))]
async fn list_batches(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<TenantQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond((|| {
        let role = server.principal(&headers)?;
        let Query(q) =
            query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "query", e.body_text()))?;
        let tenant = listing_tenant(&role, q.tenant)?;
        let limit = q.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "limit",
                format!("must be 1..={MAX_PAGE}"),
            ));
        }
        let mut batches =
            server
                .plane()
                .list_batches(tenant.as_deref(), q.after.unwrap_or(0), limit + 1);
        let more = batches.len() > limit;
        batches.truncate(limit);
        let next_after = if more {
            batches.last().map(|b| b.id)
        } else {
            None
        };
        Ok(Json(BatchList {
            batches,
            next_after,
        })
        .into_response())
    })())
}

/// One sandbox batch.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", params(("id" = u64, Path, description = "batch id")),
    responses((status = 200, body = BatchView), (status = 404, body = ApiError)))]
async fn get_batch(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    respond((|| {
        let (role, id) = server.caller_and_id(&headers, &raw)?;
        Ok(match server.plane().batch_view(id) {
            Some(v) if may_touch(&role, &v.tenant) => Json(v).into_response(),
            _ => no_such("batch", id),
        })
    })())
}

/// Cancel a sandbox batch: every live sandbox stops.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/cancel", params(("id" = u64, Path, description = "batch id")),
    responses((status = 200, body = BatchView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn cancel_batch(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    respond(
        async {
            let (role, id) = server.caller_and_id(&headers, &raw)?;
            server
                .commit(
                    |p, at| match p.batch_tenant(id) {
                        Some(t) if may_touch(&role, t) => Ok(Event::Cancel { id, at }),
                        _ => Err(Refusal::new(
                            StatusCode::NOT_FOUND,
                            "id",
                            format!("no batch {id}"),
                        )),
                    },
                    StatusCode::CONFLICT,
                    "id",
                )
                .await?;
            Ok(match server.plane().batch_view(id) {
                Some(v) => Json(v).into_response(),
                None => no_such("batch", id),
            })
        }
        .await,
    )
}

/// Waits until some of the agent's nodes have new assignments (or the timeout passes), and
/// says which: the agent heartbeats those at once, so work starts without waiting for the
/// next heartbeat.
#[utoipa::path(post, path = "/v1/agent/wait", request_body = crate::api::WaitForChanges,
    responses((status = 200, body = crate::api::Changes), (status = 400, body = ApiError)))]
async fn wait_for_changes(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(
        async {
            match server.principal(&headers)? {
                Role::Agent | Role::Admin => {}
                Role::Tenant { .. } => {
                    return Err(Refusal::forbidden("only agent tokens wait for assignments"))
                }
            }
            let req: crate::api::WaitForChanges = parse_json(&body)?;
            if req.nodes.is_empty() || req.nodes.len() > 100_000 {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "nodes",
                    "must name 1 to 100000 nodes",
                ));
            }
            if req.timeout_ms > MAX_WAIT_MS {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "timeout_ms",
                    format!("must be at most {MAX_WAIT_MS}"),
                ));
            }
            let asked: std::collections::HashSet<&str> =
                req.nodes.iter().map(String::as_str).collect();
            let waiter = Arc::new(tokio::sync::Notify::new());
            let deadline = tokio::time::Instant::now() + Duration::from_millis(req.timeout_ms);
            loop {
                {
                    let mut log = server.change_log();
                    // Registered again below if it still waits, so never twice on a node.
                    log.unregister(&req.nodes, &waiter);
                    let found = log.since(req.after, &asked);
                    let timed_out = tokio::time::Instant::now() >= deadline;
                    if timed_out || found.as_ref().is_none_or(|c| !c.is_empty()) {
                        let version = log.version;
                        return Ok(Json(crate::api::Changes {
                            version,
                            all: found.is_none(),
                            changed: found.unwrap_or_default(),
                        })
                        .into_response());
                    }
                    log.register(&req.nodes, &waiter);
                }
                let _ = tokio::time::timeout_at(deadline, waiter.notified()).await;
            }
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_change_log_answers_by_node_and_says_when_it_cannot_tell() {
        let mut log = ChangeLog::default();
        let asked: std::collections::HashSet<&str> = ["a", "b"].into_iter().collect();
        assert_eq!(log.since(0, &asked), Some(vec![]));
        log.publish(vec!["a".into(), "c".into()]);
        log.publish(vec!["b".into()]);
        assert_eq!(log.since(0, &asked), Some(vec!["a".into(), "b".into()]));
        assert_eq!(log.since(1, &asked), Some(vec!["b".into()]));
        assert_eq!(log.since(2, &asked), Some(vec![]));
        // A version from before a restart: every node.
        assert_eq!(log.since(9, &asked), None);
        // A waiter is woken by a change to one of its nodes, and only then.
        let waiter = Arc::new(tokio::sync::Notify::new());
        log.register(&["a".into(), "b".into()], &waiter);
        log.publish(vec!["c".into()]);
        assert_eq!(log.waiters.len(), 2);
        log.publish(vec!["b".into()]);
        assert!(!log.waiters.contains_key("b"));
        log.unregister(&["a".into(), "b".into()], &waiter);
        assert!(log.waiters.is_empty());
        // Old entries are dropped; asking about them gets every node.
        for _ in 0..CHANGE_LOG_LEN {
            log.publish(vec!["c".into()]);
        }
        assert_eq!(log.since(1, &asked), None);
        assert_eq!(log.since(log.version, &asked), Some(vec![]));
    }
}

/// Drain or resume a node (admin only); answers the node.
async fn set_drain(server: Arc<Server>, headers: HeaderMap, name: String, drain: bool) -> Response {
    respond(
        async {
            match server.principal(&headers)? {
                Role::Admin => {}
                _ => return Err(Refusal::forbidden("only an admin token drains nodes")),
            }
            server
                .commit(
                    |p, at| match p.target_nodes(&name) {
                        Ok(_) => Ok(Event::NodeDrain {
                            node: name.clone(),
                            drain,
                            at,
                        }),
                        Err(e) => Err(Refusal::new(StatusCode::NOT_FOUND, "name", e.to_string())),
                    },
                    StatusCode::CONFLICT,
                    "name",
                )
                .await?;
            // The node, or for a topology path every node under it.
            let views: Vec<NodeView> = {
                let p = server.plane();
                let names: std::collections::HashSet<String> = p
                    .target_nodes(&name)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|n| p.node_name(n))
                    .collect();
                p.nodes()
                    .into_iter()
                    .filter(|v| names.contains(&v.name))
                    .collect()
            };
            Ok(Json(views).into_response())
        }
        .await,
    )
}

/// Drain a node, or every node under a topology path (with `/` sent as `%2F`): they take no new
/// work, and what runs there finishes (admin only). They stay drained when their agents
/// restart, until resumed. Answers the nodes.
#[utoipa::path(post, path = "/v1/nodes/{name}/drain", params(("name" = String, Path, description = "node name or topology path")),
    responses((status = 200, body = [NodeView]), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn drain_node(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    set_drain(server, headers, name, true).await
}

/// Resume a drained node, or the drained nodes under a topology path: they take work again
/// (admin only). Answers the nodes.
#[utoipa::path(post, path = "/v1/nodes/{name}/resume", params(("name" = String, Path, description = "node name or topology path")),
    responses((status = 200, body = [NodeView]), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn resume_node(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    set_drain(server, headers, name, false).await
}

/// Query of `GET /v1/jobs/{id}/logs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// The task's rank (default 0).
    rank: Option<u32>,
    /// The first byte wanted (the previous answer's `next`; default 0).
    from: Option<u64>,
}

/// A task's log (its latest run), as far as the server has it. Logs stay on the nodes: asking
/// makes the agents send what follows, within a heartbeat; ask again with `from = next`.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", params(("id" = u64, Path, description = "job id"), LogQuery),
    responses((status = 200, body = crate::api::LogView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn job_logs(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond((|| {
        let (role, id) = server.caller_and_id(&headers, &raw)?;
        let Query(q) =
            query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "query", e.body_text()))?;
        let (run, nodes) = {
            let p = server.plane();
            if !p.job_tenant(id).is_some_and(|t| may_touch(&role, t)) {
                return Ok(not_found(id));
            }
            p.log_nodes(id).unwrap_or_default()
        };
        if nodes.is_empty() {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                "id",
                format!("job {id} has not run yet: it has no logs"),
            ));
        }
        let rank = q.rank.unwrap_or(0);
        if rank as usize >= nodes.len() {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "rank",
                format!("job {id} has ranks 0..{}", nodes.len()),
            ));
        }
        let newly = server
            .logs()
            .wanted
            .insert(id, Instant::now() + LOG_INTEREST)
            .is_none();
        if newly {
            // Wake the job's agents: they heartbeat, hear what is wanted, and send it.
            server.change_log().publish(nodes);
        }
        let logs = server.logs();
        let view = match logs.tails.get(&(id, run, rank)) {
            Some(t) => {
                let from = q.from.unwrap_or(0).clamp(t.start, t.next);
                let skip = (from - t.start) as usize;
                crate::api::LogView {
                    job: id,
                    run,
                    rank,
                    from,
                    next: t.next,
                    data: t.text.get(skip..).unwrap_or(&t.text).to_string(),
                }
            }
            None => crate::api::LogView {
                job: id,
                run,
                rank,
                from: 0,
                next: 0,
                data: String::new(),
            },
        };
        Ok(Json(view).into_response())
    })())
}
