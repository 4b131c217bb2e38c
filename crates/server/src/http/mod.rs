//! The HTTP API: routes, handlers, the pass loop and start-up (replay of the journal).
//!
//! A change is applied in memory and queued for the journal under one lock, so the journal's
//! order is the order of application; the handler answers once the record is durable (group
//! commit batches the concurrent ones). If the journal cannot commit, memory is ahead of the
//! disk: the server stops at once (fail-stop), and a restart replays what is durable.

use crate::api::{
    ApiError, BatchList, BatchView, FieldProblem, Heartbeat, HeartbeatReply, IssueToken, JobList,
    JobView, NodeView, ScaleService, ServiceList, ServiceView, SubmitJob, SubmitSandboxes,
    SubmitService, Submitted, TenantView, Token,
};
use crate::log_tails::{Chunk, LogTails, TaskKey};
use crate::state::{
    default_fleet_toml, default_tenants, BatchId, ControlPlane, Event, JobId, LimitHit, Role,
    ServiceId, StateError, TokenProblem,
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
mod events;
mod execs;
mod fleet;
mod fleet_change;
mod frontend;
mod gateway;
mod history;
mod jobs;
mod logs;
mod metrics;
mod openapi;
mod replica;
mod rollouts;
mod router;
mod sandboxes;
mod services;
mod startup;
mod tokens;
mod ui;

use agents::*;
use auth::*;
pub use auth::{new_token, token_hash};
use changes::*;
use errors::*;
use events::*;
use execs::*;
use fleet::*;
pub use frontend::{serve_frontend, FrontendConfig};
use history::*;
use jobs::*;
use logs::*;
pub use openapi::ApiDoc;
use openapi::*;
use replica::*;
pub use router::router;
use sandboxes::*;
use services::*;
pub use startup::{Config, StartError};
use tokens::*;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How long leaving nodes that emptied wait for the others before they leave the fleet.
const DEPARTURE_BATCH: Duration = Duration::from_secs(30);

/// How long registrations a rule approves wait for others to join with them.
const APPROVAL_BATCH: Duration = Duration::from_secs(5);
/// Most jobs on one page.
pub const MAX_PAGE: usize = 1000;

/// Shared server state.
pub struct Server {
    plane: Mutex<ControlPlane>,
    /// The last journal record known durable: what agents may be told of (the state in memory
    /// can be ahead of it while a commit is in flight).
    durable: tokio::sync::watch::Sender<u64>,
    /// The journal (the cell's writer) or the writer followed (a frontend).
    backing: Backing,
    idle_pass_interval: u64,
    heartbeat_timeout: Duration,
    /// The cell's name.
    cell: String,
    /// When each node's agent was last heard from (not journaled: after a restart every node
    /// that was up gets a full timeout to check in again).
    last_seen: Mutex<HashMap<String, Instant>>,
    /// Wakes the pass loop when something was submitted or cancelled.
    wake: tokio::sync::Notify,
    /// Recent changes to nodes' assignments, for agents waiting on them.
    changes: Mutex<ChangeLog>,
    snapshot_every: u64,
    /// The least time between two snapshots taken because records piled up.
    snapshot_min_interval: Duration,
    /// When the latest snapshot was taken (or the server started).
    snapshot_taken: Mutex<Instant>,
    /// The record the latest snapshot holds.
    last_snapshot: std::sync::atomic::AtomicU64,
    /// How start-up went, in words.
    replay_summary: String,
    /// Task logs being read.
    logs: Mutex<LogTails>,
    /// When leaving nodes were first seen empty (they leave together, see `departures_due`).
    departures_seen: Mutex<Option<Instant>>,
    /// When registrations a rule approves were first seen waiting (see `approvals_due`).
    approvals_seen: Mutex<Option<Instant>>,
    /// Reports refused because the credential is not bound to the node, by token id (not
    /// journaled; bounded by the tokens issued).
    refused_reports: Mutex<HashMap<String, u64>>,
    /// What one request and one tenant may ask for.
    limits: crate::state::Limits,
    /// Commands running in interactive sandboxes (not journaled).
    execs: Mutex<crate::execs::Execs>,
    /// When interactive sandboxes time out or idle out.
    sessions: Mutex<crate::sessions::SessionClocks>,
    /// The sandbox templates nodes offer (not journaled).
    templates: Mutex<crate::templates::TemplateOffers>,
    /// What `/metrics` shows besides the state.
    metrics: crate::metrics::Metrics,
    /// The latest events, for `/v1/events` (filled under the state's lock, in journal order).
    events: Mutex<crate::events::EventLog>,
    /// Event streams open now, in all and per token.
    event_streams: Mutex<events::StreamCounts>,
    /// Dashboard sessions (not journaled: a restart logs everyone out).
    ui_sessions: Mutex<ui::DashboardSessions>,
    /// The second rolling updates were last looked at (they step at most once a second).
    rollouts_looked: Mutex<u64>,
    /// The load gateways report, and the autoscalers it feeds (not journaled).
    live_load: Mutex<crate::live_load::LiveLoad>,
    /// Served over plain HTTP on a loopback address (the dashboard's cookie is then not
    /// `Secure`, which browsers would not send back over HTTP).
    plain_loopback: std::sync::atomic::AtomicBool,
}

/// Where a server's state comes from and where its changes go.
enum Backing {
    /// The cell's one writer: the journal is its own.
    Journal(Journal),
    /// A frontend: the state is followed from the writer, and changes are passed on to it.
    Writer(frontend::Upstream),
}

/// What to do with an event of a commit that the state refuses.
#[derive(Clone, Copy, Debug)]
enum OnRefusal {
    /// Refuse the request: the status follows the error's kind, and the answer names this field
    /// when the error names none.
    Answer(&'static str),
    /// Leave the event out and go on (reports that raced with the state, failure detection).
    Skip,
}

/// What a commit made durable.
#[derive(Debug, Default)]
struct Committed {
    /// The events applied, in journal order.
    events: Vec<Event>,
    /// The record number of the first (0: nothing was journaled).
    first_seq: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `mutex` locked: memory that a panicking holder left is still taken (what it guards here is
/// kept consistent under each lock, or is a cache a restart forgets).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The journal could not commit what memory already holds: stop, and let a restart replay.
fn fail_stop(e: store::StoreError) -> ! {
    tracing::error!("journal commit failed, stopping: {e}");
    std::process::exit(70);
}

impl Server {
    /// The one way the state changes. Under the state's lock, `make` turns the state and the
    /// time into events; each is applied and its record queued for the journal, so the
    /// journal's order is the order of application. Outside the lock, the pass loop is woken
    /// when there is news for it, the records are awaited until durable (a journal that cannot
    /// commit stops the server: memory would be ahead of the disk), and only then do waiting
    /// agents hear which nodes' assignments changed. A refused event ends the request or is
    /// left out, as `on_refusal` says; what applied before it is journaled either way.
    async fn commit(
        &self,
        make: impl FnOnce(&ControlPlane, u64) -> Result<Vec<Event>, Refusal>,
        on_refusal: OnRefusal,
    ) -> Result<Committed, Refusal> {
        let Some(journal) = self.journal() else {
            return Err(frontend::does_not_write());
        };
        let mut refusal = None;
        let (pending, events, changed, news) = {
            let mut p = self.plane();
            let at = p.stamp(unix_now());
            let events = make(&p, at)?;
            let mut applied = Vec::with_capacity(events.len());
            let mut records = Vec::with_capacity(events.len());
            // The history rows of workloads these records end, durable with them.
            let mut history = Vec::new();
            for e in events {
                let started = Instant::now();
                let applied_now = p.apply(&e);
                if matches!(e, Event::Pass { .. }) {
                    self.metrics
                        .pass_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                match applied_now {
                    Ok(record) => {
                        records.push(p.encode(&record));
                        history.extend(p.ended_in(&record).iter().map(|s| s.row()));
                        // Readers see these once the record is durable.
                        let told = p.told(&record);
                        self.event_log().record(p.seq(), e.at(), told);
                        applied.push(e);
                    }
                    Err(err) => match on_refusal {
                        OnRefusal::Answer(field) => {
                            refusal = Some(Refusal::from_state(err, field));
                            break;
                        }
                        OnRefusal::Skip => tracing::warn!("{} refused: {err}", e.kind()),
                    },
                }
            }
            if records.is_empty() {
                return match refusal {
                    Some(r) => Err(r),
                    None => Ok(Committed::default()),
                };
            }
            // Taken with the records, so that publishing needs no second turn at the lock.
            let changed = p.take_changed_nodes();
            let news = p.dirty();
            self.metrics.commit_records.observe(records.len() as f64);
            (
                journal.append_with_history(records, history),
                applied,
                changed,
                news,
            )
        };
        let handed = Instant::now();
        if news {
            self.wake.notify_one();
        }
        let seqs = match pending.done().await {
            Ok(seqs) => seqs,
            Err(e) => fail_stop(e),
        };
        self.metrics
            .commit_seconds
            .observe(handed.elapsed().as_secs_f64());
        // The writer commits in order: this group's last record being durable means every
        // record before it is too.
        let last = seqs.end.saturating_sub(1);
        self.durable.send_if_modified(|d| {
            let newer = last > *d;
            *d = (*d).max(last);
            newer
        });
        self.change_log().publish(last, changed);
        match refusal {
            Some(r) => Err(r),
            None => Ok(Committed {
                events,
                first_seq: seqs.start,
            }),
        }
    }

    /// Waits until journal record `seq` is durable (a state read at `seq` may then be told to
    /// agents).
    async fn durable_through(&self, seq: u64) {
        let mut durable = self.durable.subscribe();
        // The sender lives as long as the server: an error here means it is going away.
        let _ = durable.wait_for(|d| *d >= seq).await;
    }

    fn plane(&self) -> std::sync::MutexGuard<'_, ControlPlane> {
        // A panic while holding the lock leaves a state no handler should trust.
        match self.plane.lock() {
            Ok(g) => g,
            Err(_) => {
                tracing::error!("state lock poisoned, stopping");
                std::process::exit(70);
            }
        }
    }

    /// Runs one pass now if anything changed or the queue was quiet for long enough; returns
    /// whether it ran. The pass is durable when this returns.
    pub async fn pass_if_due(&self, last_pass: &mut u64) -> bool {
        let (last, idle) = (*last_pass, self.idle_pass_interval);
        let due = |p: &ControlPlane, at: u64| {
            let mut events = self.departures_due(p, at);
            events.extend(self.approvals_due(p, at));
            events.extend(self.scalings_due(p, at));
            events.extend(self.rollouts_due(p, at));
            if !events.is_empty()
                || p.dirty()
                || p.due(at)
                || p.more_to_place()
                || at >= last.saturating_add(idle)
            {
                events.push(Event::Pass { at });
            }
            Ok(events)
        };
        match self.commit(due, OnRefusal::Skip).await {
            Ok(Committed { events, .. }) if !events.is_empty() => {
                *last_pass = events[0].at();
                true
            }
            _ => false,
        }
    }

    /// Leaving nodes that emptied leave the fleet: all of them as soon as every leaving node is
    /// empty, else those empty for [`DEPARTURE_BATCH`] (each departure rebuilds the state, so
    /// nodes emptying one by one leave together).
    fn departures_due(&self, p: &ControlPlane, at: u64) -> Vec<Event> {
        let mut since = lock(&self.departures_seen);
        let Some(ready) = p.nodes_ready_to_leave() else {
            *since = None;
            return Vec::new();
        };
        let first_seen = *since.get_or_insert_with(Instant::now);
        if !ready.all && first_seen.elapsed() < DEPARTURE_BATCH {
            return Vec::new();
        }
        *since = None;
        vec![Event::NodesLeft {
            nodes: ready.nodes,
            at,
        }]
    }

    /// Registrations a rule approves at once join in batches: those waiting for
    /// [`APPROVAL_BATCH`] since the first of them (each approval rebuilds the state).
    fn approvals_due(&self, p: &ControlPlane, at: u64) -> Vec<Event> {
        let mut since = lock(&self.approvals_seen);
        let waiting = p
            .registrations_auto_approved()
            .then(|| p.registrations_waiting())
            .flatten();
        let Some(nodes) = waiting else {
            *since = None;
            return Vec::new();
        };
        let first_seen = *since.get_or_insert_with(Instant::now);
        if first_seen.elapsed() < APPROVAL_BATCH {
            return Vec::new();
        }
        *since = None;
        vec![Event::RegistrationsApproved { nodes, at }]
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, LogTails> {
        lock(&self.logs)
    }

    fn event_log(&self) -> std::sync::MutexGuard<'_, crate::events::EventLog> {
        lock(&self.events)
    }

    fn change_log(&self) -> std::sync::MutexGuard<'_, ChangeLog> {
        lock(&self.changes)
    }

    fn refused_reports(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        lock(&self.refused_reports)
    }

    fn templates(&self) -> std::sync::MutexGuard<'_, crate::templates::TemplateOffers> {
        lock(&self.templates)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        lock(&self.last_seen)
    }

    /// Marks down every node whose agent went quiet for longer than the timeout; the failure
    /// rules apply to its work. Durable when this returns. The quiet ones are found without
    /// the state's lock (a scan of when each up node was last heard from), so a fleet of any
    /// size costs the API nothing here until some node does go quiet.
    pub async fn expire_silent_nodes(&self) {
        let timeout = self.heartbeat_timeout;
        // One reading of the clock for the whole scan.
        let now = Instant::now();
        let quiet: Vec<String> = self
            .seen()
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) > timeout)
            .map(|(n, _)| n.clone())
            .collect();
        if quiet.is_empty() {
            return;
        }
        let silent = |p: &ControlPlane, at: u64| {
            // Asked again under the state's lock: a heartbeat may have come in since.
            let seen = self.seen();
            Ok(quiet
                .iter()
                .filter(|n| seen.get(*n).is_none_or(|t| t.elapsed() > timeout))
                .filter(|n| p.node_is_up(n) == Some(true))
                .map(|node| {
                    tracing::warn!(%node, "no heartbeat: node down");
                    // A node that is down offers no template until its agent reports again.
                    let _ = self.templates().offer(node, &[]);
                    self.metrics.missed_heartbeats.inc();
                    Event::NodeDown {
                        node: node.clone(),
                        at,
                    }
                })
                .collect())
        };
        let _ = self.commit(silent, OnRefusal::Skip).await;
        // Down now: heard of again only when its agent reports (which brings it up).
        let mut seen = self.seen();
        for node in quiet {
            if seen.get(&node).is_some_and(|t| t.elapsed() > timeout) {
                seen.remove(&node);
            }
        }
    }

    /// How start-up went: records replayed, and the snapshot they followed.
    pub fn replay_summary(&self) -> &str {
        &self.replay_summary
    }

    /// Saves a snapshot when enough records were journaled since the last one, and the last
    /// one is old enough: a snapshot copies the whole state under its lock (a pause of every
    /// request, tens of milliseconds at the reference fleet's size), so a busy cell takes one
    /// at most every `snapshot_min_interval`, not every few thousand records.
    pub async fn snapshot_if_due(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        let last = self.last_snapshot.load(Ordering::Relaxed);
        let rested = match self.snapshot_taken.lock() {
            Ok(t) => t.elapsed() >= self.snapshot_min_interval,
            Err(p) => p.into_inner().elapsed() >= self.snapshot_min_interval,
        };
        let due = rested && {
            let p = self.plane();
            self.snapshot_every > 0 && p.seq() >= last.saturating_add(self.snapshot_every)
        };
        if due {
            if let Err(e) = self.save_snapshot().await {
                tracing::error!("{e}");
            }
        }
    }

    /// Saves a snapshot of the state now; returns the record it holds the state after. The
    /// state is copied under the lock and encoded outside it; the snapshot is queued behind the
    /// records it holds, so it is never durable before them.
    async fn save_snapshot(&self) -> Result<u64, StateError> {
        use std::sync::atomic::Ordering;
        let started = Instant::now();
        let copy = self.plane().clone();
        let paused = started.elapsed();
        self.metrics
            .snapshot_copy_seconds
            .observe(paused.as_secs_f64());
        match self.snapshot_taken.lock() {
            Ok(mut t) => *t = Instant::now(),
            Err(p) => *p.into_inner() = Instant::now(),
        }
        let seq = copy.seq();
        let body = tokio::task::spawn_blocking(move || copy.snapshot())
            .await
            .map_err(|e| StateError::Snapshot(e.to_string()))??;
        let bytes = body.len();
        let Some(journal) = self.journal() else {
            return Err(StateError::Snapshot("a frontend keeps no snapshot".into()));
        };
        match journal.save_snapshot(seq, body).done().await {
            Ok(()) => {
                self.last_snapshot.store(seq, Ordering::Relaxed);
                tracing::info!(
                    seq,
                    bytes,
                    copy_ms = paused.as_millis() as u64,
                    "snapshot saved"
                );
                Ok(seq)
            }
            Err(e) => fail_stop(e),
        }
    }

    /// Compaction: a snapshot of the state now, then every record before it dropped and a
    /// summary of every workload kept in the history, in one transaction. A restart then
    /// starts from the snapshot (which any later build reads: it is a versioned format of its
    /// own).
    pub async fn compact(self: &Arc<Self>) -> Result<crate::api::Compacted, StateError> {
        // Store reads block (PostgreSQL's client runs its own runtime): off the async threads.
        let first = {
            let server = self.clone();
            tokio::task::spawn_blocking(move || {
                server.journal().map_or(0, |j| j.first_seq().unwrap_or(0))
            })
            .await
            .unwrap_or(0)
        };
        let seq = self.save_snapshot().await?;
        let summaries: Vec<store::HistoryRow> =
            self.plane().summaries().iter().map(|s| s.row()).collect();
        let count = summaries.len();
        if let Some(journal) = self.journal() {
            if let Err(e) = journal.compact(seq, summaries).done().await {
                fail_stop(e);
            }
        }
        tracing::info!(seq, "journal compacted");
        Ok(crate::api::Compacted {
            snapshot_seq: seq,
            dropped: seq.saturating_sub(first.max(1)),
            summaries: count,
        })
    }

    /// The state's fingerprint (tests compare it across restarts).
    pub fn fingerprint(&self) -> String {
        self.plane().fingerprint()
    }

    /// Stops the journal writer after it committed what it holds.
    pub fn close(&self) {
        if let Some(journal) = self.journal() {
            journal.close();
        }
    }

    /// The journal, on the cell's writer (`None` on a frontend).
    fn journal(&self) -> Option<&Journal> {
        match &self.backing {
            Backing::Journal(j) => Some(j),
            Backing::Writer(_) => None,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, and on the cell's writer runs
/// passes every second.
pub async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Plain HTTP on loopback is the one place a browser is not on HTTPS: only there does the
    // dashboard's cookie go without `Secure` (off loopback, plain HTTP sits behind a proxy that
    // speaks TLS to browsers).
    let loopback = listener.local_addr()?.ip().is_loopback();
    server
        .plain_loopback
        .store(loopback, std::sync::atomic::Ordering::Relaxed);
    // Without it, a streamed exec's lines wait for the client's delayed acknowledgement of
    // what went before (Nagle's algorithm): tens of milliseconds a line.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    serve_on(server, listener, shutdown).await
}

/// As [`serve`], over TLS with `tls` (see [`crate::tls`]).
pub async fn serve_tls(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = crate::tls::TlsListener::new(listener, tls)?;
    serve_on(server, listener, shutdown).await
}

async fn serve_on<L: axum::serve::Listener>(
    server: Arc<Server>,
    listener: L,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L::Addr: std::fmt::Debug,
{
    // The writer's clock: passes, silence, sessions, snapshots (a frontend runs none).
    let passes = server.journal().is_some().then(|| {
        let server = server.clone();
        tokio::spawn(async move {
            let mut last = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                // Silence is looked for once a second, not at every wake: its scan is over
                // every node heard from.
                let ticked = tokio::select! {
                    _ = tick.tick() => true,
                    _ = server.wake.notified() => false,
                };
                if ticked {
                    server.expire_silent_nodes().await;
                }
                server.expire_sessions().await;
                server.end_orphaned_execs();
                server.pass_if_due(&mut last).await;
                server.snapshot_if_due().await;
            }
        })
    });
    let result = axum::serve(listener, router(server.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(passes) = passes {
        passes.abort();
    }
    server.close();
    result
}
