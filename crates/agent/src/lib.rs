//! Stargrid's node agent.
//!
//! Every `interval` the agent reports each of its nodes' tasks to the server and learns what
//! the node must run ([`beats`]: many nodes to a request, `POST /v1/agent/heartbeats`; a node
//! whose assignments did not change since the digest it holds is left out of the answer). It
//! then reconciles: a task the node must run that is not running is started; a running task
//! that is not in the list (cancelled, preempted, requeued after the node was declared down,
//! or from an older run) is stopped: SIGTERM to its process group, SIGKILL after the grace
//! period. A task never runs twice: tasks are keyed by (job, run, rank), and a node that comes
//! back after being declared down finds its old tasks missing from the list and stops them.
//! Between rounds a thread long-polls `POST /v1/agent/wait`; the nodes it names have new work
//! and are heartbeated at once. Both speak to the server through [`wire::Client`]: the agent
//! links the API's types and client, not the server.
//!
//! Sandboxes come as ranges of indices of a batch; each is a task keyed (batch, 0, index), run
//! in `<work_dir>/<batch>-sandbox-<index>/` with `STARGRID_BATCH_ID` and
//! `STARGRID_SANDBOX_INDEX`, and reported only once it exited.
//!
//! Each task is a real process in its own process group, with `STARGRID_*` variables, its
//! output in `<work_dir>/<job>-<run>-<rank>/log`, and a checkpoint file whose modification time
//! the agent reports as the task's last checkpoint.
//!
//! In hollow mode one agent plays many nodes and runs no processes: a task whose command is
//! `sleep N` ends with code 0 after N seconds; any other task runs until it is stopped.
//!
//! Where the host's cgroups (v2, or v1) offer the `cpu` and `memory` controllers, each task
//! runs in its own group limited to what it was given (see [`cgroup`]). Run as root, the agent
//! starts each task as its tenant's unprivileged user ([`users`]); how one task is started and
//! stopped is the `task` module's.
//!
//! A single-node agent reports the node's GPUs ([`inventory`]: NVML, or declared), and the
//! server refuses the heartbeats of a node that does not match the fleet.

mod beats;
pub mod cgroup;
mod devices;
pub mod egress;
mod endpoint;
mod exec;
pub mod init;
pub mod inventory;
pub mod isolation;
mod probe;
pub mod seccomp;
mod task;
pub mod template;
pub mod users;
mod warm;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};
pub use task::agent_tag as task_group_tag;
pub use task::INIT_SUBCOMMAND;
use task::{hollow_runtime, sandbox_task, spawn, stop, Kind, Running, Task, TaskKey};
pub use warm::WarmPool;
use wire::api::{
    Assignment, Heartbeat, LogChunk, SandboxAssignment, TaskEndpoint, TaskReport, WaitForChanges,
};
use wire::{Client, ClientError};

/// Errors at the agent's boundary.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The task directory cannot be made.
    #[error("agent work dir {path}: {reason}")]
    WorkDir {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
}

/// How an agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The server: its URL, the agent's credential, the certificate authority it trusts.
    pub client: Client,
    /// The nodes this agent plays (one, unless hollow).
    pub nodes: Vec<String>,
    /// Run no processes (see the module documentation).
    pub hollow: bool,
    /// Where task directories go.
    pub work_dir: PathBuf,
    /// Between heartbeats.
    pub interval: Duration,
    /// Between SIGTERM and SIGKILL when a task is stopped.
    pub grace: Duration,
    /// A node that could not reach the server for this long stops its tasks (the server will
    /// have declared it down and placed the work elsewhere): a task never runs in two places
    /// for longer than this.
    pub fence_after: Duration,
    /// Told (job or batch id, when) each time a task or sandbox starts; for measurements.
    pub started: Option<std::sync::mpsc::Sender<(u64, Instant)>>,
    /// Told (job or batch id, when) each time a task or sandbox that is no longer assigned
    /// has stopped; for tests.
    pub stopped: Option<std::sync::mpsc::Sender<(u64, Instant)>>,
    /// Where task groups go, when limits can be applied.
    pub cgroups: Option<cgroup::Cgroups>,
    /// What the node has (NVML or declared), reported with every heartbeat; `None`: the fleet
    /// file is trusted.
    pub inventory: Option<wire::api::Inventory>,
    /// Who tasks run as.
    pub run_as: RunAs,
    /// The directory a job's `workdir` must lie under; `None`: a job may not name one (its
    /// tasks run in their own directories).
    pub workdir_root: Option<PathBuf>,
    /// The isolation layer sandboxes run under.
    pub isolation: isolation::Isolation,
    /// Run every task (training and inference too) under `isolation`, not only sandboxes.
    pub isolate_tasks: bool,
    /// Interactive sandboxes kept started ahead of demand on each node, per template (see
    /// [`warm`]).
    pub warm_pools: Vec<WarmPool>,
    /// The sandbox templates this agent offers (see [`template`]).
    pub templates: Arc<template::Templates>,
    /// What sandboxes' egress may reach at most (see [`egress`]).
    pub egress: Arc<egress::Scope>,
    /// The program whose `sandbox-init` subcommand runs an interactive sandbox's init
    /// ([`init::main`]; the agent's own executable); `None`: interactive sandboxes cannot
    /// start here.
    pub init_program: Option<PathBuf>,
    /// The address service replicas on this node are reached at (their endpoints name it).
    pub advertise_address: String,
}

impl AgentConfig {
    /// A hollow agent for `nodes` (runs no processes; see the module documentation): a
    /// heartbeat a second, a second's grace, fencing after a minute, no hooks.
    pub fn hollow(client: Client, nodes: Vec<String>, work_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            client,
            nodes,
            hollow: true,
            work_dir,
            interval: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            fence_after: Duration::from_secs(60),
            started: None,
            stopped: None,
            cgroups: None,
            inventory: None,
            run_as: RunAs::AgentUser,
            workdir_root: None,
            isolation: isolation::Isolation::None,
            isolate_tasks: false,
            warm_pools: Vec::new(),
            templates: Default::default(),
            egress: Default::default(),
            init_program: None,
            advertise_address: "127.0.0.1".into(),
        }
    }
}

/// Who tasks run as.
#[derive(Clone, Debug, Default)]
pub enum RunAs {
    /// The agent's own user (an agent that is not root cannot do otherwise): tasks are not
    /// kept apart from each other or from the agent.
    #[default]
    AgentUser,
    /// Each tenant's own unprivileged user (see [`users`]).
    TenantUsers(Arc<users::TaskUsers>),
}

impl RunAs {
    /// Tenants' users from `uid_base`, kept in `work_dir` (made if missing).
    pub fn tenant_users(work_dir: &std::path::Path, uid_base: u32) -> Result<RunAs, AgentError> {
        let fail = |reason: String| AgentError::WorkDir {
            path: work_dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(work_dir).map_err(|e| fail(e.to_string()))?;
        let users = users::TaskUsers::open(work_dir, uid_base).map_err(|e| fail(e.to_string()))?;
        Ok(RunAs::TenantUsers(Arc::new(users)))
    }

    /// Tenants' users when the agent runs as root, else the agent's own; in words, which.
    pub fn best(work_dir: &std::path::Path, uid_base: u32) -> Result<(RunAs, String), AgentError> {
        if users::is_root() {
            let run_as = RunAs::tenant_users(work_dir, uid_base)?;
            Ok((
                run_as,
                format!("tasks run as their tenant's user (uids from {uid_base})"),
            ))
        } else {
            Ok((
                RunAs::AgentUser,
                "tasks run as the agent's own user (not root): tenants' tasks are NOT kept apart"
                    .to_string(),
            ))
        }
    }
}

/// One node's tasks.
struct NodeTasks {
    name: String,
    tasks: BTreeMap<TaskKey, Task>,
    /// The last heartbeat the server answered.
    last_answer: Instant,
    /// Logs the server asked for in its last answer.
    logs_wanted: Vec<wire::api::LogWanted>,
    /// The digest of `work`, as the server gave it (`None`: nothing heard yet).
    known: Option<u64>,
    /// What the node must run, as last heard.
    work: wire::api::NodeWork,
    /// The live interactive sandboxes, for execs.
    targets: exec::Targets,
    /// Started interactive sandboxes not yet anyone's.
    pool: Vec<warm::Warm>,
    /// The next pooled sandbox's number.
    next_warm: u64,
    /// Service replicas' endpoints, by task.
    endpoints: BTreeMap<TaskKey, endpoint::Endpoint>,
    /// Why the server refused this node's last heartbeat, once logged (a node removed from
    /// the fleet is refused every round: said once, not every second).
    refused: Option<String>,
}

impl NodeTasks {
    /// What the heartbeat reports: exits noticed now, checkpoint times.
    fn reports(&mut self, config: &AgentConfig) -> Vec<TaskReport> {
        let (advertise, grace) = (config.advertise_address.as_str(), config.grace);
        let mut out = Vec::new();
        // Replicas are probed side by side (a hollow one runs nothing to probe: it is ready
        // from the start).
        if !config.hollow {
            let tasks = &self.tasks;
            let node = self.name.as_str();
            std::thread::scope(|scope| {
                for (key, e) in self.endpoints.iter_mut() {
                    if tasks.get(key).is_some_and(|t| t.exit_code.is_none()) {
                        scope.spawn(move || {
                            let probe_as = e.probe_as.clone();
                            let run = |command: &[String]| {
                                probe_as
                                    .as_ref()
                                    .is_some_and(|a| probe::run(config, node, a, command))
                            };
                            e.check(&run)
                        });
                    }
                }
            });
        }
        for (&(job, run, rank), t) in self.tasks.iter_mut() {
            let mut checkpoint_at = None;
            match &mut t.running {
                Running::Process {
                    child, dir, group, ..
                } => {
                    if t.exit_code.is_none() {
                        if let Ok(Some(status)) = child.try_wait() {
                            t.exit_code = Some(status.code().unwrap_or(-1));
                            // It failed, and the kernel counted an out-of-memory kill in its
                            // group (under an isolation layer the kill shows as an exit code).
                            t.oom_killed = !status.success()
                                && group.as_ref().is_some_and(cgroup::Group::oom_killed);
                        }
                    }
                    checkpoint_at = (!t.sandbox)
                        .then(|| std::fs::symlink_metadata(dir.join("checkpoint")))
                        .and_then(Result::ok)
                        .and_then(|m| m.modified().ok())
                        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs());
                }
                Running::Hollow { ends_at } => {
                    if t.exit_code.is_none() && ends_at.is_some_and(|e| Instant::now() >= e) {
                        t.exit_code = Some(0);
                    }
                }
            }
            if t.sandbox && t.exit_code.is_none() {
                continue;
            }
            let endpoint = match (self.endpoints.get_mut(&(job, run, rank)), t.exit_code) {
                (Some(e), None) => {
                    let ready = e.ready;
                    if e.dead() {
                        // Stopped (SIGTERM, then SIGKILL after the grace): its exit is
                        // reported, and its service replaces it.
                        if e.failures == endpoint::MAX_LIVENESS_FAILURES {
                            tracing::warn!(node = %self.name, job, "liveness probe failed: stopping the replica");
                        }
                        stop(t, grace);
                    }
                    Some(TaskEndpoint {
                        address: advertise.to_string(),
                        port: e.port,
                        ready,
                    })
                }
                _ => None,
            };
            out.push(TaskReport {
                job,
                run,
                rank,
                exit_code: t.exit_code,
                oom_killed: t.oom_killed,
                checkpoint_at,
                endpoint,
            });
        }
        let tasks = &self.tasks;
        self.endpoints.retain(|k, _| tasks.contains_key(k));
        out
    }

    /// Starts what is assigned and not running; stops what runs and is not assigned.
    fn reconcile(&mut self, config: &AgentConfig, reply: &wire::api::NodeWork) {
        // Each sandbox is a task keyed (batch, 0, index); its assignment is built only when it
        // starts (a host may hold thousands).
        let mut wanted: BTreeMap<TaskKey, Wanted<'_>> = reply
            .assignments
            .iter()
            .map(|a| ((a.job, a.run, a.rank), Wanted::Task(a)))
            .collect();
        for s in &reply.sandboxes {
            for i in s.first..s.first.saturating_add(s.count) {
                wanted.insert((s.batch, 0, i), Wanted::Sandbox(s, i));
            }
        }
        let stale: Vec<TaskKey> = self
            .tasks
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            let done = match self.tasks.get_mut(&key) {
                Some(t) => stop(t, config.grace),
                None => true,
            };
            if done {
                self.tasks.remove(&key);
                self.targets.remove(&self.name, key);
                if let Some(tx) = &config.stopped {
                    let _ = tx.send((key.0, Instant::now()));
                }
            }
        }
        for (key, want) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let (mut a, kind, template, egress) = match want {
                Wanted::Task(a) => (a.clone(), Kind::Task, None, &[][..]),
                Wanted::Sandbox(s, i) if s.interactive => (
                    sandbox_task(s, i),
                    Kind::Interactive,
                    s.template.as_deref(),
                    &s.egress[..],
                ),
                Wanted::Sandbox(s, i) => (
                    sandbox_task(s, i),
                    Kind::Sandbox,
                    s.template.as_deref(),
                    &[][..],
                ),
            };
            let sandbox = kind != Kind::Task;
            // A service's replica gets a port of its own (the server's choice for a unit's
            // node, whose peers know it), and its endpoint is probed.
            let port = match a.port {
                Some(p) => endpoint::port_is_free(p)
                    .then_some(p)
                    .ok_or_else(|| std::io::Error::other(format!("port {p} is taken"))),
                None if a.serves => endpoint::free_port(),
                None => Err(std::io::Error::other("no port wanted")),
            };
            let taken = a.port.is_some() && port.is_err();
            if let Ok(p) = &port {
                a.env.insert("PORT".into(), p.to_string());
                a.env.insert("STARGRID_PORT".into(), p.to_string());
            }
            let serving = match (a.serves, port) {
                (false, _) => None,
                (true, Ok(port)) => Some(endpoint::Endpoint {
                    port,
                    ready_probe: endpoint::Probe::of(
                        a.ready_path.as_ref(),
                        a.ready_command.as_ref(),
                    )
                    .unwrap_or(endpoint::Probe::Port),
                    ready: config.hollow,
                    not_ready: 0,
                    has_been_ready: false,
                    live_probe: endpoint::Probe::of(a.live_path.as_ref(), a.live_command.as_ref()),
                    failures: 0,
                    // Command probes run as the task does (its user, environment, isolation).
                    probe_as: (a.ready_command.is_some() || a.live_command.is_some())
                        .then(|| Box::new(a.clone())),
                }),
                (true, Err(e)) => {
                    tracing::warn!(node = %self.name, job = a.job, "no free port: {e}");
                    None
                }
            };
            let task = if kind == Kind::Interactive
                && !config.hollow
                && self.pool.iter().any(|w| w.template() == template)
            {
                self.claim_warm(config, &a, template)
            } else if taken {
                tracing::warn!(node = %self.name, job = a.job, rank = a.rank, "cannot start: its port is taken");
                // Its replica is replaced on a new run, with new ports.
                Task::failed_to_start(sandbox)
            } else if config.hollow {
                Task {
                    running: Running::Hollow {
                        ends_at: hollow_runtime(&a.command).map(|d| Instant::now() + d),
                    },
                    exit_code: None,
                    oom_killed: false,
                    sandbox,
                    exec_target: None,
                    egress: None,
                }
            } else {
                match spawn(config, &self.name, &a, kind, template) {
                    Ok(t) => t,
                    Err(reason) => {
                        tracing::warn!(
                            node = %self.name, job = a.job, rank = a.rank,
                            "cannot start: {reason}"
                        );
                        Task::failed_to_start(sandbox)
                    }
                }
            };
            let task = match egress.is_empty() {
                true => task,
                false => egress::with_proxy(config, &self.name, task, egress),
            };
            if let Some(target) = &task.exec_target {
                self.targets.insert(&self.name, key, target.clone());
            }
            self.tasks.insert(key, task);
            if let Some(e) = serving {
                self.endpoints.insert(key, e);
            }
            if let Some(tx) = &config.started {
                let _ = tx.send((a.job, Instant::now()));
            }
        }
        self.tend_pool(config);
    }

    /// A pooled sandbox made interactive sandbox `a`, or `a` started cold when none can be.
    fn claim_warm(&mut self, config: &AgentConfig, a: &Assignment, template: Option<&str>) -> Task {
        while let Some(at) = self.pool.iter().rposition(|w| w.template() == template) {
            let warm = self.pool.swap_remove(at);
            match warm.claim(config, &self.name, a) {
                Ok(task) => return task,
                Err(why) => {
                    tracing::warn!(node = %self.name, "pooled sandbox not usable: {why}")
                }
            }
        }
        spawn(config, &self.name, a, Kind::Interactive, template).unwrap_or_else(|reason| {
            tracing::warn!(
                node = %self.name, batch = a.job, sandbox = a.rank,
                "cannot start: {reason}"
            );
            let mut failed = Task::none();
            failed.exit_code = Some(127);
            failed.sandbox = true;
            failed
        })
    }

    /// Refills the warm pool, or empties it while the node runs other work than sandboxes.
    fn tend_pool(&mut self, config: &AgentConfig) {
        if config.hollow || config.warm_pools.iter().all(|p| p.size == 0) {
            return;
        }
        // Pooled sandboxes that died are cleared away (their directories and groups too).
        let mut alive = Vec::with_capacity(self.pool.len());
        for mut warm in self.pool.drain(..) {
            if warm.is_alive() {
                alive.push(warm);
            } else {
                warm.discard();
            }
        }
        self.pool = alive;
        let busy = self.tasks.values().any(|t| !t.sandbox);
        if busy {
            for warm in self.pool.drain(..) {
                warm.discard();
            }
            return;
        }
        for wanted in &config.warm_pools {
            let template = wanted.template.as_deref();
            let mut have = self
                .pool
                .iter()
                .filter(|w| w.template() == template)
                .count();
            while have < wanted.size as usize {
                self.next_warm += 1;
                match warm::start(config, &self.name, self.next_warm, template) {
                    Ok(w) => self.pool.push(w),
                    Err(why) => {
                        tracing::warn!(node = %self.name, "cannot start a pooled sandbox: {why}");
                        break;
                    }
                }
                have += 1;
            }
        }
    }
}

/// What the server wants a node to run.
enum Wanted<'a> {
    Task(&'a Assignment),
    Sandbox(&'a SandboxAssignment, u32),
}

/// Runs the agent until `stop` is set; then stops every task (grace, then kill) and returns.
pub fn run(config: &AgentConfig, stop_flag: &AtomicBool) -> Result<(), AgentError> {
    let work_dir_error = |e: std::io::Error| AgentError::WorkDir {
        path: config.work_dir.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(&config.work_dir).map_err(work_dir_error)?;
    // Tasks run in their own directories: every path handed to them must be absolute.
    let work_dir = std::fs::canonicalize(&config.work_dir).map_err(work_dir_error)?;
    let isolation = config
        .isolation
        .clone()
        .prepared(&work_dir)
        .map_err(|reason| AgentError::WorkDir {
            path: work_dir.display().to_string(),
            reason,
        })?;
    let config = &AgentConfig {
        work_dir,
        isolation,
        ..config.clone()
    };
    let client = config.client.clone().with_timeout(Duration::from_secs(10));
    let targets = exec::Targets::default();
    let nodes: Vec<NodeTasks> = config
        .nodes
        .iter()
        .map(|n| NodeTasks {
            name: n.clone(),
            tasks: BTreeMap::new(),
            last_answer: Instant::now(),
            refused: None,
            endpoints: BTreeMap::new(),
            logs_wanted: Vec::new(),
            known: None,
            work: Default::default(),
            targets: targets.clone(),
            pool: Vec::new(),
            next_warm: 0,
        })
        .collect();
    let watching = Arc::new(AtomicBool::new(true));
    let changes = beats::watch_for_changes(config, watching.clone(), targets);
    let batches = beats::Batches::new(nodes);
    batches.run(config, &client, &changes, stop_flag);
    watching.store(false, Ordering::Relaxed);
    // Shutting down: stop every task, within the grace period.
    let deadline = Instant::now() + config.grace + Duration::from_secs(1);
    for node in batches.into_nodes().iter_mut() {
        for warm in node.pool.drain(..) {
            warm.discard();
        }
        loop {
            node.tasks.retain(|_, t| !stop(t, config.grace));
            if node.tasks.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_runs_in_a_cgroup_with_the_limits_it_was_given() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let work = tempfile::tempdir().unwrap();
        let config = AgentConfig {
            hollow: false,
            fence_after: Duration::from_secs(10),
            cgroups: Some(cgroup::Cgroups::detect(root.path()).unwrap()),
            ..AgentConfig::hollow(
                Client::new("http://127.0.0.1:9", ""),
                vec!["n0".into()],
                work.path().to_path_buf(),
            )
        };
        let mut node = NodeTasks {
            name: "n0".into(),
            tasks: BTreeMap::new(),
            last_answer: Instant::now(),
            refused: None,
            endpoints: BTreeMap::new(),
            logs_wanted: Vec::new(),
            known: None,
            work: Default::default(),
            targets: exec::Targets::default(),
            pool: Vec::new(),
            next_warm: 0,
        };
        let task = Assignment {
            job: 7,
            run: 0,
            rank: 0,
            world: 1,
            tenant: "t".into(),
            tenant_id: Some(0),
            command: vec!["sh".into(), "-c".into(), "echo $$ > pid".into()],
            env: BTreeMap::new(),
            workdir: None,
            gpus: vec![0],
            stop_by: None,
            cpu_millis: 2000,
            memory_mib: 1024,
            serves: false,
            ready_path: None,
            live_path: None,
            ready_command: None,
            live_command: None,
            port: None,
            gpu_milli: 0,
            mig_profile: None,
            gpu_model: None,
        };
        let reply = wire::api::NodeWork {
            assignments: vec![task],
            sandboxes: Vec::new(),
        };
        node.reconcile(&config, &reply);
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.reports(&config)[0].exit_code.is_none() {
            assert!(Instant::now() < deadline, "the task did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(node.reports(&config)[0].exit_code, Some(0));
        // The group is named after the agent (its work dir), the node and the task.
        let group = std::fs::read_dir(root.path().join("stargrid"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with("-n0-7-0-0"))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(group.join("cpu.max")).unwrap(),
            "200000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(group.join("memory.max")).unwrap(),
            (1024u64 << 20).to_string()
        );
        assert_eq!(
            std::fs::read_to_string(group.join("pids.max")).unwrap(),
            cgroup::TASK_PIDS_MAX.to_string()
        );
        let pid = std::fs::read_to_string(work.path().join("7-0-0/pid")).unwrap();
        let entered = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
        assert_eq!(entered.trim(), pid.trim());
    }

    #[test]
    fn hollow_sleep_is_the_only_command_with_an_end() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            hollow_runtime(&s(&["sleep", "2.5"])),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(hollow_runtime(&s(&["sleep", "x"])), None);
        for endless in ["infinity", "inf", "NaN", "-1", "1e300"] {
            assert_eq!(hollow_runtime(&s(&["sleep", endless])), None, "{endless}");
        }
        assert_eq!(hollow_runtime(&s(&["python", "train.py"])), None);
    }
}
