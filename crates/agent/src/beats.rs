//! Heartbeat rounds. The agent's nodes go in batches of up to [`BATCH_NODES`]
//! (`POST /v1/agent/heartbeats`), each node with the digest of the assignments it holds, so the
//! server answers only the nodes with news; the batches of a round are spread over the
//! heartbeat interval and sent from several threads, so an agent playing many nodes (hollow)
//! beats them side by side, not one after another. Between rounds a thread long-polls
//! `POST /v1/agent/wait`, and the nodes it names are heartbeated at once, together.

use super::*;
use std::sync::Mutex;
use wire::api::{Heartbeats, NodeWork};

/// Most nodes in one heartbeat request.
pub(crate) const BATCH_NODES: usize = 500;

/// Most log bytes in one heartbeat request (the server takes bodies of up to 1 MiB).
const BATCH_LOG_BYTES: u64 = 512 << 10;

/// Most log read for one task with one heartbeat.
const LOG_CHUNK_BYTES: u64 = 64 << 10;

/// Most threads sending a round's batches.
const MAX_BEATERS: usize = 8;

/// Heartbeats `nodes` (in as many requests as their count and logs need), then reconciles each
/// with what it must run: the work in the answer, or the work it held when the node was left
/// out. A node without an answer for longer than `fence_after` stops its tasks. A node the
/// server newly asks a log of is heartbeated again at once (once).
pub(crate) fn beat(config: &AgentConfig, client: &Client, nodes: &mut [&mut NodeTasks]) {
    let again = beat_once(config, client, nodes);
    if !again.is_empty() {
        let mut again: Vec<&mut NodeTasks> = nodes
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| again.contains(i))
            .map(|(_, n)| &mut **n)
            .collect();
        beat_once(config, client, &mut again);
    }
}

/// One heartbeat of each node; returns the positions of those with newly wanted logs.
fn beat_once(config: &AgentConfig, client: &Client, nodes: &mut [&mut NodeTasks]) -> Vec<usize> {
    let mut again = Vec::new();
    let mut start = 0;
    while start < nodes.len() {
        // One request: up to BATCH_NODES nodes, and logs up to BATCH_LOG_BYTES (a node's logs
        // that would go past it wait for the next request, unless it is the first).
        let mut beats = Vec::new();
        let mut log_bytes = 0;
        let mut end = start;
        while end < nodes.len() && beats.len() < BATCH_NODES {
            let node = &mut *nodes[end];
            let logs: Vec<LogChunk> = node
                .logs_wanted
                .iter()
                .filter_map(|w| read_log(&config.work_dir, w))
                .collect();
            let bytes: u64 = logs.iter().map(|c| c.len).sum();
            if !beats.is_empty() && log_bytes + bytes > BATCH_LOG_BYTES {
                break;
            }
            log_bytes += bytes;
            beats.push(Heartbeat {
                node: node.name.clone(),
                inventory: config.inventory.clone(),
                logs,
                tasks: node.reports(config),
                templates: config.templates.names(),
                known: node.known,
                address: Some(config.advertise_address.clone()),
            });
            end += 1;
        }
        let batch = &mut nodes[start..end];
        match client.heartbeats(&Heartbeats { beats, alive: None }) {
            Ok(reply) => {
                let mut answers: HashMap<String, wire::api::NodeAnswer> = reply
                    .nodes
                    .into_iter()
                    .map(|a| (a.node.clone(), a))
                    .collect();
                for (i, node) in batch.iter_mut().enumerate() {
                    let answer = answers.remove(&node.name);
                    if let Some(problem) = answer.as_ref().and_then(|a| a.refused.as_ref()) {
                        let said = format!("{}: {}", problem.field, problem.reason);
                        if node.refused.as_deref() != Some(said.as_str()) {
                            tracing::warn!(node = %node.name, "heartbeat refused: {said}");
                            node.refused = Some(said);
                        }
                        node.fence_if_unanswered(config);
                        continue;
                    }
                    node.refused = None;
                    node.last_answer = Instant::now();
                    let (work, wanted) = match answer {
                        Some(a) => (a.work.map(|w| (a.digest, w)), a.logs_wanted),
                        None => (None, Vec::new()),
                    };
                    if let Some((digest, work)) = work {
                        node.known = Some(digest);
                        node.work = work;
                    }
                    // Someone started reading a log: send it now, not at the next heartbeat.
                    let new_wants = wanted.iter().any(|w| {
                        !node
                            .logs_wanted
                            .iter()
                            .any(|o| o.job == w.job && o.run == w.run && o.rank == w.rank)
                    });
                    node.logs_wanted = wanted;
                    if new_wants {
                        again.push(start + i);
                    }
                    let work = std::mem::take(&mut node.work);
                    node.reconcile(config, &work);
                    node.work = work;
                }
            }
            Err(ClientError::Decode(e)) => {
                tracing::warn!(nodes = batch.len(), "bad heartbeat reply: {e}")
            }
            // The server is away: keep running what runs (it comes back with the same intent),
            // unless it has been away for so long that the node counts as down.
            Err(e) => {
                tracing::warn!(nodes = batch.len(), "heartbeat: {}", explain(&e));
                for node in batch.iter_mut() {
                    node.fence_if_unanswered(config);
                }
            }
        }
        start = end;
    }
    again
}

impl NodeTasks {
    /// Stops the node's tasks when the server has not answered for it for `fence_after`.
    fn fence_if_unanswered(&mut self, config: &AgentConfig) {
        if self.last_answer.elapsed() > config.fence_after && !self.tasks.is_empty() {
            tracing::error!(
                node = %self.name,
                "no answer for {:?}: stopping its tasks",
                config.fence_after
            );
            self.known = None;
            self.work = NodeWork::default();
            self.reconcile(config, &NodeWork::default());
        }
    }
}

/// What follows `from` in a task's log file, up to a chunk. The task owns its directory, so
/// the name is opened without following a link (and without blocking on a FIFO), and only a
/// regular file is read.
fn read_log(work_dir: &std::path::Path, want: &wire::api::LogWanted) -> Option<LogChunk> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::OpenOptionsExt;
    // A job's task, or (run 0 of a batch) a sandbox: jobs and batches share one sequence of ids.
    let task = work_dir.join(format!("{}-{}-{}", want.job, want.run, want.rank));
    let sandbox = work_dir.join(format!("{}-sandbox-{}", want.job, want.rank));
    let dir = if want.run == 0 && !task.exists() {
        sandbox
    } else {
        task
    };
    let path = dir.join("log");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    f.seek(std::io::SeekFrom::Start(want.from)).ok()?;
    let mut buf = Vec::new();
    f.take(LOG_CHUNK_BYTES).read_to_end(&mut buf).ok()?;
    (!buf.is_empty()).then(|| LogChunk {
        job: want.job,
        run: want.run,
        rank: want.rank,
        offset: want.from,
        len: buf.len() as u64,
        data: String::from_utf8_lossy(&buf).into_owned(),
    })
}

/// An HTTP failure in words: a refusal's field and reason, or the transport error.
fn explain(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable(why) => why.clone(),
        other => other.to_string(),
    }
}

/// The agent's nodes in batches, each behind its own lock: a round's threads and the
/// changed-node beats take them one batch at a time.
pub(crate) struct Batches {
    batches: Vec<Mutex<Vec<NodeTasks>>>,
    /// Each node's batch and place in it.
    index: HashMap<String, (usize, usize)>,
}

impl Batches {
    pub(crate) fn new(nodes: Vec<NodeTasks>) -> Batches {
        let mut batches = Vec::new();
        let mut index = HashMap::with_capacity(nodes.len());
        let mut nodes = nodes.into_iter().peekable();
        while nodes.peek().is_some() {
            let batch: Vec<NodeTasks> = nodes.by_ref().take(BATCH_NODES).collect();
            for (i, n) in batch.iter().enumerate() {
                index.insert(n.name.clone(), (batches.len(), i));
            }
            batches.push(Mutex::new(batch));
        }
        Batches { batches, index }
    }

    fn lock(&self, b: usize) -> std::sync::MutexGuard<'_, Vec<NodeTasks>> {
        match self.batches[b].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Heartbeats every node of batch `b`.
    fn beat_batch(&self, config: &AgentConfig, client: &Client, b: usize) {
        let mut batch = self.lock(b);
        let mut nodes: Vec<&mut NodeTasks> = batch.iter_mut().collect();
        beat(config, client, &mut nodes);
    }

    /// Heartbeats the nodes the server said have new work (`None`: every node), a batch at a
    /// time; names this agent does not play are ignored.
    fn beat_changed(&self, config: &AgentConfig, client: &Client, changed: Option<Vec<String>>) {
        let Some(names) = changed else {
            for b in 0..self.batches.len() {
                self.beat_batch(config, client, b);
            }
            return;
        };
        let mut by_batch: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for name in names {
            if let Some(&(b, i)) = self.index.get(&name) {
                by_batch.entry(b).or_default().push(i);
            }
        }
        for (b, mut places) in by_batch {
            places.sort_unstable();
            places.dedup();
            let mut batch = self.lock(b);
            let mut nodes: Vec<&mut NodeTasks> = batch
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| places.binary_search(i).is_ok())
                .map(|(_, n)| n)
                .collect();
            beat(config, client, &mut nodes);
        }
    }

    /// Runs rounds until `stop` is set: every `interval`, each batch once, at its own moment
    /// of the interval, from up to [`MAX_BEATERS`] threads; meanwhile the nodes `changes`
    /// names are heartbeated at once.
    pub(crate) fn run(
        &self,
        config: &AgentConfig,
        client: &Client,
        changes: &std::sync::mpsc::Receiver<Option<Vec<String>>>,
        stop: &AtomicBool,
    ) {
        let count = self.batches.len();
        let beaters = count.clamp(1, MAX_BEATERS);
        std::thread::scope(|s| {
            for t in 0..beaters {
                s.spawn(move || {
                    let mut round = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        for b in (t..count).step_by(beaters) {
                            // Batch b's moment in the round: spread evenly over the interval.
                            let at = round + config.interval.mul_f64(b as f64 / count as f64);
                            if !sleep_until(at, stop) {
                                return;
                            }
                            self.beat_batch(config, client, b);
                        }
                        round += config.interval;
                        // A round that overran starts the next one now, not in a burst.
                        round = round.max(Instant::now() - config.interval / 2);
                        if !sleep_until(round, stop) {
                            return;
                        }
                    }
                });
            }
            while !stop.load(Ordering::Relaxed) {
                match changes.recv_timeout(Duration::from_millis(200)) {
                    Ok(changed) => self.beat_changed(config, client, changed),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(200))
                    }
                }
            }
        });
    }

    /// Every node, for shutting down.
    pub(crate) fn into_nodes(self) -> Vec<NodeTasks> {
        self.batches
            .into_iter()
            .flat_map(|m| match m.into_inner() {
                Ok(v) => v,
                Err(p) => p.into_inner(),
            })
            .collect()
    }
}

/// Sleeps until `at` in short steps; false when `stop` was set meanwhile.
fn sleep_until(at: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        std::thread::sleep((at - now).min(Duration::from_millis(100)));
    }
}

/// A thread that long-polls the server for nodes with new assignments and passes them on
/// (`None`: every node). It ends when the receiver is dropped. An agent that plays many nodes
/// asks about every node its credential reports for instead of naming them each time.
pub(crate) fn watch_for_changes(
    config: &AgentConfig,
    alive: Arc<AtomicBool>,
    targets: exec::Targets,
) -> std::sync::mpsc::Receiver<Option<Vec<String>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    // The server holds a wait up to its timeout: the request may take longer than that.
    let client = config.client.clone().with_timeout(Duration::from_secs(40));
    let nodes = match config.nodes.len() > BATCH_NODES {
        true => Vec::new(),
        false => config.nodes.clone(),
    };
    // Exec output goes out on the agent's ordinary (shorter) timeout.
    let exec_client = config.client.clone();
    let hollow = config.hollow;
    std::thread::spawn(move || {
        let mut after = 0;
        while alive.load(Ordering::Relaxed) {
            let asked = WaitForChanges {
                nodes: nodes.clone(),
                after,
                timeout_ms: 10_000,
            };
            let sent = match client.wait_for_changes(&asked) {
                Ok(c) => {
                    after = c.version;
                    for order in c.execs {
                        exec::start(exec_client.clone(), targets.clone(), hollow, order);
                    }
                    match (c.all, c.changed.is_empty()) {
                        (true, _) => tx.send(None),
                        (false, false) => tx.send(Some(c.changed)),
                        (false, true) => Ok(()),
                    }
                }
                // The server is away or older: heartbeats alone carry on.
                Err(_) => {
                    std::thread::sleep(Duration::from_secs(1));
                    Ok(())
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    rx
}
