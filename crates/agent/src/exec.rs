//! Commands run in live interactive sandboxes (execs), as the server orders them through the
//! long poll: each runs in the sandbox's cgroup, joins its namespaces (under bubblewrap), drops
//! to the sandbox's user with `no_new_privs`, and gets the sandbox's environment plus its own.
//! Its output is posted back as it comes ([`wire::api::ExecOutput`], in order, at most 64 KiB
//! a chunk), then its end; a post answered `wanted: false` (the reader went away) kills it, and
//! so does its timeout.
//!
//! A sandbox is known here once the node's agent started it ([`Targets`]); an order that comes
//! before (the create and the first exec race) waits for it a little.

use crate::isolation::{namespace_holder, Isolation};
use crate::task::TaskKey;
use crate::users::{TaskUser, TaskUsers};
use base64::Engine as _;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use wire::api::{ExecChunk, ExecEnd, ExecOrder, ExecOutput};
use wire::Client;

/// How long an order waits for its sandbox to be started on this node.
const SANDBOX_WAIT: Duration = Duration::from_secs(10);
/// How long an exec waits for its sandbox's namespaces to be ready.
const NAMESPACE_WAIT: Duration = Duration::from_secs(5);

/// What an exec needs of a live interactive sandbox.
#[derive(Clone, Debug)]
pub(crate) struct ExecTarget {
    /// Its directory on the host.
    pub(crate) dir: PathBuf,
    /// Where it sees its directory.
    pub(crate) view: PathBuf,
    /// Its tenant's user and the users' table, when tasks run as their tenants.
    pub(crate) user: Option<(TaskUser, Arc<TaskUsers>)>,
    /// Its environment.
    pub(crate) env: BTreeMap<String, String>,
    /// Its cgroup (one directory per hierarchy).
    pub(crate) cgroup: Vec<PathBuf>,
    /// Its isolation.
    pub(crate) isolation: Isolation,
    /// The process the agent started for it (the `bwrap` under isolation).
    pub(crate) pid: u32,
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
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxOn, ExecTarget>> {
        match self.inner.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) fn insert(&self, node: &str, key: TaskKey, target: ExecTarget) {
        self.map().insert((node.to_string(), key), target);
        self.inner.added.notify_all();
    }

    pub(crate) fn remove(&self, node: &str, key: TaskKey) {
        self.map().remove(&(node.to_string(), key));
    }

    /// The sandbox, waiting up to `wait` for it to be started.
    fn wait_for(&self, node: &str, key: TaskKey, wait: Duration) -> Option<ExecTarget> {
        let deadline = Instant::now() + wait;
        let want = (node.to_string(), key);
        let mut map = self.map();
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

/// Most commands one agent runs at once (each holds a few threads and pipes).
const MAX_RUNNING: usize = 1024;

/// Commands running now.
static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `order` on a thread of its own.
pub(crate) fn start(client: Client, targets: Targets, hollow: bool, order: ExecOrder) {
    use std::sync::atomic::Ordering;
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
        chunks,
        end,
    };
    // A lost post would lose output: tried a few times before the exec is given up.
    for attempt in 0..3 {
        match client.exec_output(&out) {
            Ok(ack) => return ack.wanted,
            Err(wire::ClientError::Refused { .. }) => return false,
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

/// Which stream a piece of output came from.
#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
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
    let stdin = match base64::engine::general_purpose::STANDARD.decode(&order.stdin_b64) {
        Ok(b) => b,
        Err(e) => return failed(format!("stdin: {e}")),
    };
    let mut child = match spawn(&target, order) {
        Ok(c) => c,
        Err(why) => return failed(why),
    };
    let (tx, rx) = std::sync::mpsc::channel::<(Stream, Vec<u8>)>();
    if let Some(mut input) = child.stdin.take() {
        // A command that does not read its input must not block the exec.
        std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
    }
    for (stream, pipe) in [
        (
            Stream::Stdout,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            Stream::Stderr,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; wire::api::MAX_CHUNK_BYTES];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 || tx.send((stream, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(u64::from(order.timeout_s));
    let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
    let kill = || {
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(left) {
            Ok(piece) => piece,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                kill();
                let _ = child.wait();
                return failed(format!("timed out after {} s: killed", order.timeout_s));
            }
        };
        // What else is already there goes in the same post (sent at once: no waiting to fill).
        let mut pieces = vec![first];
        let mut bytes = pieces[0].1.len();
        while bytes < wire::api::MAX_CHUNK_BYTES && pieces.len() < 64 {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.1.len();
                    pieces.push(p);
                }
                Err(_) => break,
            }
        }
        let chunks = pieces
            .into_iter()
            .map(|(stream, data)| ExecChunk {
                stream: match stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                }
                .to_string(),
                data_b64: b64.encode(data),
            })
            .collect();
        if !post(client, order, chunks, None) {
            kill();
            let _ = child.wait();
            return failed("nobody reads it any more: killed".into());
        }
    }
    match child.wait() {
        Ok(status) => ExecEnd {
            exit_code: Some(status.code().unwrap_or(-1)),
            error: None,
        },
        Err(e) => failed(e.to_string()),
    }
}

/// Starts the command: into the sandbox's cgroup (as root, with `PATH` alone), into its
/// namespaces, down to its user, then the program with the sandbox's environment and the
/// order's.
fn spawn(target: &ExecTarget, order: &ExecOrder) -> Result<std::process::Child, String> {
    let Some((program, args)) = order.command.split_first() else {
        return Err("the command names no program".into());
    };
    let mut env = target.env.clone();
    env.extend(order.env.clone());
    let (program, args, root_env) = match &target.user {
        Some((user, users)) => {
            let env_file = format!(".stargrid-exec-{}", order.id);
            let (p, a) = users.launch_with(
                *user,
                &target.dir,
                &target.view,
                &env_file,
                &env,
                program,
                args,
            )?;
            (
                p,
                a,
                BTreeMap::from([("PATH".to_string(), PATH.to_string())]),
            )
        }
        None => (program.clone(), args.to_vec(), env),
    };
    let (program, args) = match &target.isolation {
        Isolation::None => (program, args),
        Isolation::Bubblewrap { .. } => {
            let init = wait_for_namespaces(target.pid)?;
            target.isolation.join(init, program, args)
        }
    };
    let (program, args) = if target.cgroup.is_empty() {
        (program, args)
    } else {
        crate::cgroup::enter_dirs(&target.cgroup, &program, &args)
    };
    let mut cmd = Command::new(&program);
    cmd.args(&args)
        .current_dir(&target.dir)
        .env_clear()
        .envs(&root_env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().map_err(|e| format!("{program}: {e}"))
}

/// The program search path of the root stages.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

fn wait_for_namespaces(pid: u32) -> Result<u32, String> {
    let deadline = Instant::now() + NAMESPACE_WAIT;
    loop {
        if let Some(init) = namespace_holder(pid) {
            return Ok(init);
        }
        if Instant::now() > deadline {
            return Err("the sandbox's namespaces are not ready (did it exit?)".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
