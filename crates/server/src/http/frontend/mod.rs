//! A frontend: the same server in another mode, in front of the cell's one writer. Any number
//! of them can stand behind one address; each holds nothing the writer does not, so killing
//! one loses nothing.
//!
//! - It keeps a copy of the state, loaded from the writer's snapshot and then following the
//!   writer's durable records, applied as a restart replays them (`follow.rs`): a versioned
//!   view (its version is the record it holds) in which tokens, jobs, nodes and the event
//!   stream are read with the writer's own handlers.
//! - It terminates agents (`fanin.rs`): a heartbeat that changes nothing is kept here and the
//!   writer hears of it in one compact list of live nodes every `alive_every`; the others (a
//!   node coming up, tasks ended, logs, templates) are passed on, and every answer is read from
//!   the copy once it holds what the writer answered at. The agents' long polls are answered
//!   from the copy's changes.
//! - Every other request is passed on to the writer as it came, with its caller's credential
//!   (`proxy.rs`): submissions, cancels, drains, tokens, logs, the history, interactive
//!   sandboxes' commands. Those commands reach agents here through the frontend's own long
//!   poll at the writer (`relay.rs`).

use super::*;
use std::collections::HashSet;

mod fanin;
mod follow;
mod proxy;
mod relay;

pub(super) use fanin::beat_through_writer;
pub(super) use proxy::pass_to_writer;

/// What a frontend is started with.
#[derive(Clone, Debug)]
pub struct FrontendConfig {
    /// The writer, with an admin token (the frontend reads the whole state and reports for
    /// every node).
    pub writer: wire::Client,
    /// The key file the writer seals secret environment values under (the same file): agents
    /// behind the frontend get their tasks' secrets from it. `None`: tasks with secrets cannot
    /// be told to agents here.
    pub secrets_key_file: Option<std::path::PathBuf>,
    /// How often the writer hears which nodes were heard from (well under its heartbeat
    /// timeout).
    pub alive_every: Duration,
}

/// A frontend's link to its writer.
pub(super) struct Upstream {
    /// The writer, with the frontend's admin token.
    client: wire::Client,
    /// Nodes heard from since the writer was last told, with nothing to pass on.
    alive: Mutex<HashSet<String>>,
    /// Nodes whose logs someone reads at the writer: their heartbeats go through in full.
    logs_on: Mutex<HashSet<String>>,
    alive_every: Duration,
    secret_key: Option<Arc<crate::state::SecretKey>>,
    /// Requests being passed on (each holds a thread while its answer streams).
    passing_on: Arc<tokio::sync::Semaphore>,
    /// When the writer last answered this frontend (a send, a list of live nodes, records).
    reached: Mutex<Instant>,
    /// Exec orders the writer relayed for agents here, by node, until their agents' long
    /// polls take them.
    relayed: Mutex<HashMap<String, Vec<relay::Relayed>>>,
    /// The nodes whose agents' long polls wait here now, and how many wait on each.
    waiting: Arc<Mutex<HashMap<String, u32>>>,
    /// Set once the frontend stops serving: its threads end.
    stopped: std::sync::atomic::AtomicBool,
}

impl Upstream {
    fn alive(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        lock(&self.alive)
    }

    /// Notes that the writer answered.
    fn reached_now(&self) {
        *lock(&self.reached) = Instant::now();
    }

    /// Whether the writer answered lately: an agent's heartbeat is answered only then, so
    /// that an agent cut off from the writer through its frontend fences itself as one cut
    /// off directly would (within two lists of live nodes more).
    fn writer_reached_lately(&self) -> bool {
        lock(&self.reached).elapsed() <= self.alive_every * 2 + Duration::from_secs(1)
    }

    fn logs_on(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        lock(&self.logs_on)
    }

    /// Heartbeats (or a list of live nodes) to the writer, off the async threads.
    async fn send(
        &self,
        beats: crate::api::Heartbeats,
    ) -> Result<crate::api::HeartbeatsReply, Refusal> {
        let client = self.client.clone();
        let reply = tokio::task::spawn_blocking(move || client.heartbeats(&beats))
            .await
            .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "", e.to_string()))?
            .map_err(writer_refusal)?;
        self.reached_now();
        *self.logs_on() = reply.logs_on.iter().cloned().collect();
        Ok(reply)
    }
}

/// The writer's refusal as this server's, or 503 when the writer cannot be reached.
fn writer_refusal(e: wire::ClientError) -> Refusal {
    match e {
        wire::ClientError::Refused {
            status,
            field,
            reason,
        } => Refusal::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            &field,
            reason,
        ),
        other => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            format!("the cell's writer: {other}"),
        ),
    }
}

/// What a frontend answers where only the writer could (never reached: such requests are
/// passed on).
pub(super) fn does_not_write() -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "",
        "a frontend does not write: the request goes to the cell's writer",
    )
}

/// Whether this request is answered by the writer rather than from the frontend's copy:
/// every change (but the agents' heartbeats and long polls, and the dashboard's login), and
/// the reads of what only the writer holds (logs relayed by agents, the history in the
/// journal's store, files read through interactive sandboxes, token listings with their
/// refused reports, the replica feed).
fn for_the_writer(method: &axum::http::Method, path: &str) -> bool {
    const KEPT_HERE: [&str; 5] = [
        "/v1/agent/heartbeat",
        "/v1/agent/heartbeats",
        "/v1/agent/wait",
        "/ui/login",
        "/ui/logout",
    ];
    let read = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    if !read {
        return !KEPT_HERE.contains(&path);
    }
    path.ends_with("/logs")
        || path.ends_with("/files")
        || path == "/v1/history"
        || path == "/v1/usage"
        || path == "/v1/tokens"
        || path.starts_with("/v1/replica/")
}

/// The middleware that sends a frontend's writes (and writer-only reads) on to the writer;
/// on the writer itself it does nothing.
pub(super) async fn route_to_writer(
    State(server): State<Arc<Server>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match &server.backing {
        Backing::Writer(up) if for_the_writer(request.method(), request.uri().path()) => {
            pass_to_writer(&server, up, request).await
        }
        _ => next.run(request).await,
    }
}

impl Server {
    /// Whether this server is a frontend (see [`serve_frontend`]) rather than a cell's writer.
    pub fn is_frontend(&self) -> bool {
        matches!(self.backing, Backing::Writer(_))
    }

    /// A frontend of `config.writer`: its state loaded and caught up. Blocks: call it outside
    /// the async runtime (or in `spawn_blocking`).
    pub fn follow_writer(config: &FrontendConfig) -> Result<Arc<Server>, StartError> {
        let secret_key = match &config.secrets_key_file {
            Some(path) if !path.exists() => {
                return Err(StartError::Secrets(format!(
                    "{}: no such file (give the frontend the writer's secrets key)",
                    path.display()
                )))
            }
            Some(path) => Some(Arc::new(
                crate::state::SecretKey::load_or_create(path)
                    .map_err(|e| StartError::Secrets(e.to_string()))?,
            )),
            None => None,
        };
        let up = Upstream {
            client: config.writer.clone(),
            alive: Default::default(),
            logs_on: Default::default(),
            alive_every: config.alive_every,
            secret_key,
            passing_on: Arc::new(tokio::sync::Semaphore::new(proxy::MAX_PASSED_ON)),
            reached: Mutex::new(Instant::now()),
            relayed: Default::default(),
            waiting: Default::default(),
            stopped: Default::default(),
        };
        let (plane, cell) = follow::load(&up)?;
        let seq = plane.seq();
        let settings = startup::Settings {
            idle_pass_interval: 60,
            heartbeat_timeout: Duration::from_secs(10),
            cell,
            snapshot_every: 0,
            snapshot_min_interval: Duration::ZERO,
            last_snapshot: 0,
            replay_summary: format!(
                "a frontend of {}, at record {seq}",
                config.writer.base_url()
            ),
            limits: crate::state::Limits::default(),
            last_seen: HashMap::new(),
            sessions: Default::default(),
            events: crate::events::EventLog::new(crate::events::KEPT_EVENTS, seq),
        };
        let server = Arc::new(Server::assemble(plane, Backing::Writer(up), settings));
        follow::catch_up(&server)?;
        Ok(server)
    }
}

/// Serves a frontend on `listener` (TLS when `tls` is given): its copy follows the writer and
/// the writer hears which nodes are alive, until `shutdown` resolves.
pub async fn serve_frontend(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Backing::Writer(up) = &server.backing else {
        return Err(std::io::Error::other("not a frontend"));
    };
    let alive_every = up.alive_every;
    // However serving ends, the frontend's threads end with it.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _stop = StopOnDrop(&up.stopped);
    let follower = {
        let server = server.clone();
        std::thread::Builder::new()
            .name("follow-writer".into())
            .spawn(move || follow::follow(&server))?
    };
    drop(follower);
    let relay = {
        let server = server.clone();
        std::thread::Builder::new()
            .name("relay-execs".into())
            .spawn(move || relay::relay(&server))?
    };
    drop(relay);
    let alive = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(alive_every);
            loop {
                tick.tick().await;
                fanin::tell_alive(&server).await;
            }
        })
    };
    let result = match tls {
        Some(tls) => super::serve_tls(server.clone(), listener, tls, shutdown).await,
        None => super::serve(server.clone(), listener, shutdown).await,
    };
    alive.abort();
    result
}
