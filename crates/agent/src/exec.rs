//! Commands run in live interactive sandboxes (execs), as the server orders them through the
//! long poll. Each interactive sandbox runs an init ([`crate::init`]) that the agent talks to
//! over a socket pair ([`InitChannel`]): the command is started by the init, inside the
//! sandbox, so it is born in the sandbox's namespaces, cgroup and user; it gets the sandbox's
//! environment plus its own. Its output is posted back as it comes ([`wire::api::ExecOutput`],
//! in order, at most 64 KiB a chunk), then its end; a post answered `wanted: false` (the reader
//! went away) kills it, and so does its timeout.
//!
//! A sandbox is known here once the node's agent started it ([`Targets`]); an order that comes
//! before (the create and the first exec race) waits for it a little.

use crate::init::{FromInit, ToInit};
use crate::task::TaskKey;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use wire::api::{ExecChunk, ExecEnd, ExecOrder, ExecOutput};
use wire::Client;

/// How long an order waits for its sandbox to be started on this node.
const SANDBOX_WAIT: Duration = Duration::from_secs(10);
/// Messages of one command held between the init and the post that sends them on (each at
/// most 64 KiB of output: about 1.4 MB per command, 700 MB with every command of a full agent
/// unread).
const ROUTE_DEPTH: usize = 16;
/// Most commands one agent runs at once (each holds a thread and a route).
const MAX_RUNNING: usize = 512;
/// Most bytes of one line from an init (64 KiB of output in base64, and its frame); a longer
/// one ends the channel.
const MAX_FROM_INIT: u64 = 128 << 10;
/// How long the routing thread waits for a command's full route before it gives the command
/// up (so that one stuck command never stalls the others).
const ROUTE_PATIENCE: Duration = Duration::from_secs(30);

/// Commands running now.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// The agent's own numbers for commands (the server's restart from 1 when it restarts).
static NEXT_COMMAND: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The agent's end of the socket pair to one sandbox's init: lines out, and a thread that
/// routes the init's lines to the command they are about.
pub(crate) struct InitChannel {
    writer: Mutex<UnixStream>,
    routes: Mutex<HashMap<u64, SyncSender<FromInit>>>,
    became: Mutex<Option<SyncSender<FromInit>>>,
}

impl InitChannel {
    /// Starts routing what the init at the other end of `stream` says.
    pub(crate) fn start(stream: UnixStream) -> std::io::Result<Arc<InitChannel>> {
        let reader = stream.try_clone()?;
        let channel = Arc::new(InitChannel {
            writer: Mutex::new(stream),
            routes: Mutex::default(),
            became: Mutex::default(),
        });
        let routing = channel.clone();
        std::thread::spawn(move || routing.route(reader));
        Ok(channel)
    }

    /// Until the init goes away: each line to its command's route (a full route makes the
    /// init wait: it is bounded). Lines about no command it knows are dropped.
    fn route(&self, stream: UnixStream) {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader)
                .take(MAX_FROM_INIT)
                .read_until(b'\n', &mut line)
            {
                Ok(n) if n > 0 && line.ends_with(b"\n") => {}
                _ => break,
            }
            let Ok(message) = serde_json::from_slice::<FromInit>(&line) else {
                continue;
            };
            let (to, id) = match &message {
                FromInit::Stdout { id, .. }
                | FromInit::Stderr { id, .. }
                | FromInit::Exit { id, .. }
                | FromInit::Failed { id, .. } => (lock(&self.routes).get(id).cloned(), Some(*id)),
                FromInit::Became { .. } => (lock(&self.became).take(), None),
            };
            if let Some(to) = to {
                self.deliver(&to, id, message);
            }
        }
        // The init is gone: every command waiting on it hears so.
        lock(&self.routes).clear();
        lock(&self.became).take();
    }

    /// Hands `message` to its route, waiting while the route is full, but never on a route
    /// that was closed, nor longer than [`ROUTE_PATIENCE`] (the command is then given up).
    fn deliver(&self, to: &SyncSender<FromInit>, id: Option<u64>, mut message: FromInit) {
        let since = Instant::now();
        loop {
            match to.try_send(message) {
                Ok(()) | Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                Err(std::sync::mpsc::TrySendError::Full(m)) => message = m,
            }
            let open = id.is_none_or(|id| lock(&self.routes).contains_key(&id));
            if !open {
                return;
            }
            if since.elapsed() > ROUTE_PATIENCE {
                if let Some(id) = id {
                    self.close(id);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn send(&self, message: &ToInit) -> Result<(), String> {
        let mut line = serde_json::to_vec(message).map_err(|e| e.to_string())?;
        line.push(b'\n');
        lock(&self.writer)
            .write_all(&line)
            .map_err(|e| format!("the sandbox's init: {e}"))
    }

    fn open(&self, id: u64) -> Receiver<FromInit> {
        let (tx, rx) = std::sync::mpsc::sync_channel(ROUTE_DEPTH);
        lock(&self.routes).insert(id, tx);
        rx
    }

    fn close(&self, id: u64) {
        lock(&self.routes).remove(&id);
    }

    /// Makes the init (a pooled sandbox's, still root) become `uid` for good.
    pub(crate) fn become_user(&self, uid: u32, wait: Duration) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        *lock(&self.became) = Some(tx);
        self.send(&ToInit::Become { uid })?;
        match rx.recv_timeout(wait) {
            Ok(FromInit::Became { uid: Some(u), .. }) if u == uid => Ok(()),
            Ok(FromInit::Became { why, .. }) => Err(why.unwrap_or_else(|| "refused".into())),
            Ok(_) | Err(_) => Err("the sandbox's init did not answer".into()),
        }
    }
}

/// What an exec needs of a live interactive sandbox.
#[derive(Clone)]
pub(crate) struct ExecTarget {
    /// The channel to its init.
    pub(crate) channel: Arc<InitChannel>,
    /// Its environment.
    pub(crate) env: BTreeMap<String, String>,
}

/// The live interactive sandboxes of this agent's nodes, shared between the loop that starts
/// them and the threads that run execs.
#[derive(Clone, Default)]
pub(crate) struct Targets {
    inner: Arc<TargetsInner>,
}

/// A sandbox of a node: (node, its task key).
type SandboxOn = (String, TaskKey);

#[derive(Default)]
struct TargetsInner {
    map: Mutex<HashMap<SandboxOn, ExecTarget>>,
    /// Signalled when a sandbox is added.
    added: Condvar,
}

impl Targets {
    pub(crate) fn insert(&self, node: &str, key: TaskKey, target: ExecTarget) {
        lock(&self.inner.map).insert((node.to_string(), key), target);
        self.inner.added.notify_all();
    }

    pub(crate) fn remove(&self, node: &str, key: TaskKey) {
        lock(&self.inner.map).remove(&(node.to_string(), key));
    }

    /// The sandbox, waiting up to `wait` for it to be started.
    fn wait_for(&self, node: &str, key: TaskKey, wait: Duration) -> Option<ExecTarget> {
        let deadline = Instant::now() + wait;
        let want = (node.to_string(), key);
        let mut map = lock(&self.inner.map);
        loop {
            if let Some(t) = map.get(&want) {
                return Some(t.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            map = match self.inner.added.wait_timeout(map, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// Runs `order` on a thread of its own.
pub(crate) fn start(client: Client, targets: Targets, hollow: bool, order: ExecOrder) {
    if RUNNING.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        let busy = failed(format!("this node runs {MAX_RUNNING} commands, its most"));
        std::thread::spawn(move || post(&client, &order, Vec::new(), Some(busy)));
        return;
    }
    std::thread::spawn(move || {
        let end = if hollow {
            failed("a hollow node runs no processes".into())
        } else {
            run(&client, &targets, &order)
        };
        let _ = post(&client, &order, Vec::new(), Some(end));
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    });
}

/// Posts output (and the end); returns whether the exec is still wanted.
fn post(client: &Client, order: &ExecOrder, chunks: Vec<ExecChunk>, end: Option<ExecEnd>) -> bool {
    let out = ExecOutput {
        node: order.node.clone(),
        id: order.id,
        batch: order.batch,
        index: order.index,
        chunks,
        end,
    };
    // A lost post would lose output: tried a few times before the exec is given up.
    for attempt in 0..3 {
        match client.exec_output(&out) {
            Ok(ack) => return ack.wanted,
            // A server (or frontend) too busy for now is asked again; any other refusal
            // means the exec is not wanted.
            Err(wire::ClientError::Refused { status, .. }) if status < 500 => return false,
            Err(_) => std::thread::sleep(Duration::from_millis(100 << attempt)),
        }
    }
    false
}

fn failed(why: String) -> ExecEnd {
    ExecEnd {
        exit_code: None,
        error: Some(why),
    }
}

/// Runs the order to its end, posting its output as it comes; returns its end (not yet
/// posted).
fn run(client: &Client, targets: &Targets, order: &ExecOrder) -> ExecEnd {
    let key = (order.batch, 0, order.index);
    let Some(target) = targets.wait_for(&order.node, key, SANDBOX_WAIT) else {
        return failed(format!(
            "sandbox {} of batch {} is not running on {}",
            order.index, order.batch, order.node
        ));
    };
    let id = NEXT_COMMAND.fetch_add(1, Ordering::Relaxed);
    let channel = &target.channel;
    let rx = channel.open(id);
    let (end, kill) = relay(client, order, channel, id, &rx, &target.env);
    // The route goes before the kill is sent: the routing thread never waits on it again.
    channel.close(id);
    drop(rx);
    if kill {
        let _ = channel.send(&ToInit::Kill { id });
    }
    end
}

fn relay(
    client: &Client,
    order: &ExecOrder,
    channel: &InitChannel,
    id: u64,
    rx: &Receiver<FromInit>,
    sandbox_env: &BTreeMap<String, String>,
) -> (ExecEnd, bool) {
    let mut env = sandbox_env.clone();
    env.extend(order.env.clone());
    let started = channel.send(&ToInit::Start {
        id,
        argv: order.command.clone(),
        env,
        stdin_b64: order.stdin_b64.clone(),
    });
    if let Err(why) = started {
        return (failed(why), false);
    }
    // The first post says the order was taken (the server gives up orders nobody took).
    if !post(client, order, Vec::new(), None) {
        return (failed("nobody reads it any more: killed".into()), true);
    }
    let deadline = Instant::now() + Duration::from_secs(u64::from(order.timeout_s));
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(left) {
            Ok(m) => m,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let why = format!("timed out after {} s: killed", order.timeout_s);
                return (failed(why), true);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return (
                    failed("the sandbox ended, or the command was given up".into()),
                    true,
                );
            }
        };
        // What else is already there goes in the same post (sent at once: no waiting to fill).
        let mut chunks = Vec::new();
        let mut bytes = 0;
        let mut end = None;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                FromInit::Stdout { b64, .. } => {
                    bytes += b64.len();
                    chunks.push(chunk("stdout", b64));
                }
                FromInit::Stderr { b64, .. } => {
                    bytes += b64.len();
                    chunks.push(chunk("stderr", b64));
                }
                FromInit::Exit { code, .. } => {
                    end = Some(ExecEnd {
                        exit_code: Some(code),
                        error: None,
                    })
                }
                FromInit::Failed { why, .. } => end = Some(failed(why)),
                FromInit::Became { .. } => {}
            }
            if end.is_none() && bytes < wire::api::MAX_CHUNK_BYTES && chunks.len() < 64 {
                next = rx.try_recv().ok();
            }
        }
        if !chunks.is_empty() && !post(client, order, chunks, None) {
            return (failed("nobody reads it any more: killed".into()), true);
        }
        if let Some(end) = end {
            return (end, false);
        }
    }
}

fn chunk(stream: &str, data_b64: String) -> ExecChunk {
    ExecChunk {
        stream: stream.to_string(),
        data_b64,
    }
}
