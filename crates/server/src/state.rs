//! The control plane's state as a function of its journal.
//!
//! Every accepted change is an [`Event`]; [`ControlPlane::apply`] is deterministic (the time is
//! in the event, the queue never reads a clock), so replaying the journal rebuilds the very same
//! queue and engine: same placements, same reasons, same reservations. The server applies an
//! event in memory and queues it for the journal in one critical section, so the journal's
//! order is the order of application; it answers the client only once the event is durable.

use crate::api::{Assignment, FieldProblem, Heartbeat, JobView, NodeView, SubmitJob, TenantView};
use model::{
    Fleet, GangRequest, GpuModel, InstanceCatalog, JobSpec, NodeId, NodeState, PriorityClass,
    TenantId, TenantSpec, TopoId, WorkloadClass, WorkloadId,
};
use sched::{Allocation, Decision, Engine, JobState, SchedConfig, Scheduler, Scope};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One accepted change. The journal holds these as JSON, one per record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The first record of a journal: the fleet (a fleet file's text) and the tenants.
    Init {
        /// The fleet, in the TOML fleet-file format.
        fleet_toml: String,
        /// Tenants; a tenant's id is its index.
        tenants: Vec<TenantSpec>,
        /// Unix seconds.
        at: u64,
    },
    /// A training job was accepted.
    Submit {
        /// Its id, assigned by the server.
        id: u64,
        /// Its name (not unique).
        name: String,
        /// What it asks for.
        spec: JobSpec,
        /// What each of its nodes runs.
        task: TaskSpec,
        /// Unix seconds.
        at: u64,
    },
    /// An agent came up on a node: the node takes work.
    NodeUp {
        /// The node.
        node: String,
        /// Unix seconds.
        at: u64,
    },
    /// A node's agent stopped heartbeating: the node is down and its work follows the failure
    /// rules (spares, requeue from the last checkpoint).
    NodeDown {
        /// The node.
        node: String,
        /// Unix seconds.
        at: u64,
    },
    /// A task of a job exited.
    TaskExited {
        /// The job.
        job: u64,
        /// The run of the job it belonged to.
        run: u32,
        /// Its rank.
        rank: u32,
        /// Exit code (-1: killed by a signal).
        code: i32,
        /// Unix seconds.
        at: u64,
    },
    /// A job wrote a checkpoint.
    Checkpoint {
        /// The job.
        job: u64,
        /// Its run.
        run: u32,
        /// When the checkpoint was written (Unix seconds).
        at: u64,
    },
    /// A job was cancelled.
    Cancel {
        /// The job.
        id: u64,
        /// Unix seconds.
        at: u64,
    },
    /// An API token was issued (only its SHA-256 is kept).
    TokenIssued {
        /// Hex SHA-256 of the token.
        hash: String,
        /// What it may do.
        role: Role,
        /// Unix seconds.
        at: u64,
    },
    /// A scheduling pass ran.
    Pass {
        /// Unix seconds.
        at: u64,
    },
}

impl Event {
    /// The event's time.
    pub fn at(&self) -> u64 {
        match self {
            Event::Init { at, .. }
            | Event::Submit { at, .. }
            | Event::Cancel { at, .. }
            | Event::Pass { at }
            | Event::NodeUp { at, .. }
            | Event::NodeDown { at, .. }
            | Event::TaskExited { at, .. }
            | Event::Checkpoint { at, .. }
            | Event::TokenIssued { at, .. } => *at,
        }
    }
}

/// Why an event cannot be applied. For a new request this is the client's error; during replay
/// it means the journal does not belong to this build or was damaged.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The journal does not start with `Init`, or has a second one.
    #[error("journal record {0}: {1}")]
    Sequence(u64, String),
    /// The fleet text in `Init` does not parse.
    #[error("fleet in the journal: {0}")]
    Fleet(String),
    /// The queue refused the change.
    #[error("{0}")]
    Refused(String),
}

/// What a token may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Submit, see and cancel the work of one tenant.
    Tenant {
        /// The tenant's name.
        tenant: String,
    },
    /// Register nodes and report (heartbeats) only.
    Agent,
}

/// What each node of a job runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<String>,
}

#[derive(Clone, Debug)]
struct JobMeta {
    name: String,
    tenant: TenantId,
    gpus: u64,
    submitted_at: u64,
    task: TaskSpec,
    /// When it ended.
    ended_at: Option<u64>,
    exit_code: Option<i32>,
    /// Ranks of the current run that exited 0.
    done_ranks: BTreeSet<u32>,
    /// The current run's last checkpoint.
    checkpoint_at: Option<u64>,
    /// Times it was requeued.
    restarts: u32,
}

/// The queue, the engine and what the API shows of them.
pub struct ControlPlane {
    sched: Scheduler,
    tenants: Vec<TenantSpec>,
    jobs: BTreeMap<u64, JobMeta>,
    next_id: u64,
    now: u64,
    /// Something was submitted or cancelled since the last pass.
    dirty: bool,
    /// Hex SHA-256 of each issued token → its role.
    tokens: BTreeMap<String, Role>,
}

/// The API's name of a queue state.
fn state_name(state: &JobState) -> &'static str {
    match state {
        JobState::Pending => "pending",
        JobState::Running { .. } => "running",
        JobState::Preempting { .. } => "preempting",
        JobState::Finished => "finished",
        JobState::Cancelled => "cancelled",
    }
}

/// A small fleet for a local control plane: two GB200 NVL72 domains and four CPU hosts, as a
/// fleet file's text.
pub fn default_fleet_toml() -> Result<String, StateError> {
    let spec = fleet::generate::GenSpec {
        gpus: 144,
        cpu_hosts: 4,
        ..fleet::generate::GenSpec::default()
    };
    let mut spec = spec;
    spec.clouds.truncate(1);
    let catalog = InstanceCatalog::builtin();
    let fleet =
        fleet::generate::generate(&spec, &catalog).map_err(|e| StateError::Fleet(e.to_string()))?;
    Ok(fleet::file::write(&fleet, &catalog))
}

/// One tenant, `default`, with the whole fleet as quota.
pub fn default_tenants() -> Vec<TenantSpec> {
    let mut quota = model::ResourceVec {
        cpu_millis: u64::MAX / 4,
        memory_mib: u64::MAX / 4,
        ..model::ResourceVec::default()
    };
    for g in quota.gpus.iter_mut() {
        *g = u64::MAX / 4;
    }
    vec![TenantSpec {
        name: "default".into(),
        weight: 1.0,
        cohort: None,
        quota,
    }]
}

fn parse_fleet(text: &str) -> Result<Fleet, StateError> {
    fleet::file::parse("journal", text, InstanceCatalog::builtin())
        .map_err(|e| StateError::Fleet(e.to_string()))
}

impl ControlPlane {
    /// The state right after `Init`.
    pub fn new(init: &Event) -> Result<ControlPlane, StateError> {
        let Event::Init {
            fleet_toml,
            tenants,
            at,
        } = init
        else {
            return Err(StateError::Sequence(
                1,
                "the first record must be Init".into(),
            ));
        };
        let fleet = parse_fleet(fleet_toml)?;
        let mut sched = Scheduler::new(Engine::new(fleet), tenants.clone(), SchedConfig::default())
            .map_err(|e| StateError::Refused(e.to_string()))?;
        // A node takes work only once its agent has come up.
        sched.set_state(Scope::Subtree(TopoId(0)), NodeState::Down);
        Ok(ControlPlane {
            sched,
            tenants: tenants.clone(),
            jobs: BTreeMap::new(),
            next_id: 1,
            now: *at,
            dirty: false,
            tokens: BTreeMap::new(),
        })
    }

    /// Rebuilds the state from a whole journal (`Init` first).
    pub fn replay(
        events: impl IntoIterator<Item = (u64, Event)>,
    ) -> Result<Option<ControlPlane>, StateError> {
        let mut plane: Option<ControlPlane> = None;
        for (seq, e) in events {
            match &mut plane {
                None => plane = Some(ControlPlane::new(&e)?),
                Some(p) => {
                    if matches!(e, Event::Init { .. }) {
                        return Err(StateError::Sequence(seq, "a second Init".into()));
                    }
                    p.apply(&e).map_err(|err| {
                        StateError::Sequence(seq, format!("does not apply: {err}"))
                    })?;
                }
            }
        }
        Ok(plane)
    }

    /// The time to stamp a new event with: the wall clock, never before the last event.
    pub fn stamp(&self, wall: u64) -> u64 {
        wall.max(self.now)
    }

    /// Whether a pass has anything new to look at.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// The time of the last applied event.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Applies one event. On error nothing changed.
    pub fn apply(&mut self, e: &Event) -> Result<Vec<Decision>, StateError> {
        let refused = |e: sched::SchedError| StateError::Refused(e.to_string());
        let decisions = match e {
            Event::Init { .. } => {
                return Err(StateError::Refused("the journal already has Init".into()))
            }
            Event::Submit {
                id,
                name,
                spec,
                task,
                at,
            } => {
                self.sched
                    .submit(WorkloadId(*id), spec.clone(), *at)
                    .map_err(refused)?;
                self.jobs.insert(
                    *id,
                    JobMeta {
                        name: name.clone(),
                        tenant: spec.tenant,
                        gpus: spec.gang.total_gpus(),
                        submitted_at: *at,
                        task: task.clone(),
                        ended_at: None,
                        exit_code: None,
                        done_ranks: BTreeSet::new(),
                        checkpoint_at: None,
                        restarts: 0,
                    },
                );
                self.next_id = self.next_id.max(id + 1);
                self.dirty = true;
                Vec::new()
            }
            Event::Cancel { id, at } => {
                self.sched.cancel(WorkloadId(*id), *at).map_err(refused)?;
                if let Some(m) = self.jobs.get_mut(id) {
                    m.ended_at = Some(*at);
                }
                self.dirty = true;
                Vec::new()
            }
            Event::TokenIssued { hash, role, .. } => {
                if let Role::Tenant { tenant } = role {
                    if !self.tenants.iter().any(|t| &t.name == tenant) {
                        return Err(StateError::Refused(format!("unknown tenant '{tenant}'")));
                    }
                }
                self.tokens.insert(hash.clone(), role.clone());
                Vec::new()
            }
            Event::Pass { at } => {
                self.dirty = false;
                let decisions = self.sched.schedule(*at);
                self.forget_progress(&decisions);
                decisions
            }
            Event::NodeUp { node, .. } => {
                let n = self.node(node)?;
                if self.sched.engine().fleet().node(n).state != NodeState::Down {
                    return Err(StateError::Refused(format!("node {node} is already up")));
                }
                self.sched.set_state(Scope::Node(n), NodeState::Ready);
                self.dirty = true;
                Vec::new()
            }
            Event::NodeDown { node, at } => {
                let n = self.node(node)?;
                if self.sched.engine().fleet().node(n).state == NodeState::Down {
                    return Err(StateError::Refused(format!("node {node} is already down")));
                }
                let decisions = self.sched.fail(Scope::Node(n), *at);
                self.forget_progress(&decisions);
                self.dirty = true;
                decisions
            }
            Event::TaskExited {
                job,
                run,
                rank,
                code,
                at,
            } => {
                let world = self.current_world(*job, *run)?;
                let meta = self
                    .jobs
                    .get_mut(job)
                    .ok_or_else(|| StateError::Refused(format!("no job {job}")))?;
                if *code == 0 {
                    meta.done_ranks.insert(*rank);
                }
                if *code != 0 || meta.done_ranks.len() as u32 >= world {
                    self.sched.finish(WorkloadId(*job), *at).map_err(refused)?;
                    if let Some(m) = self.jobs.get_mut(job) {
                        m.exit_code = Some(*code);
                        m.ended_at = Some(*at);
                    }
                    self.dirty = true;
                }
                Vec::new()
            }
            Event::Checkpoint { job, run, at } => {
                self.current_world(*job, *run)?;
                self.sched
                    .checkpoint(WorkloadId(*job), *at)
                    .map_err(refused)?;
                if let Some(m) = self.jobs.get_mut(job) {
                    m.checkpoint_at = Some(*at);
                }
                Vec::new()
            }
        };
        self.now = self.now.max(e.at());
        Ok(decisions)
    }

    /// The role of the token whose SHA-256 is `hash`.
    pub fn role_of(&self, hash: &str) -> Option<&Role> {
        self.tokens.get(hash)
    }

    /// Whether any token was issued yet.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    fn node(&self, name: &str) -> Result<NodeId, StateError> {
        self.sched
            .engine()
            .fleet()
            .node_by_name(name)
            .ok_or_else(|| StateError::Refused(format!("no node '{name}' in the fleet")))
    }

    /// The gang size of `job`'s current run, if `run` is the current one and it is running.
    fn current_world(&self, job: u64, run: u32) -> Result<u32, StateError> {
        let j = self
            .sched
            .job(WorkloadId(job))
            .ok_or_else(|| StateError::Refused(format!("job {job} is not live")))?;
        if j.restarts != run
            || !matches!(
                j.state,
                JobState::Running { .. } | JobState::Preempting { .. }
            )
        {
            return Err(StateError::Refused(format!(
                "job {job} run {run} is not the running one"
            )));
        }
        Ok(j.spec.gang.nodes)
    }

    /// A requeued job starts its next run from scratch: its tasks' progress is forgotten.
    fn forget_progress(&mut self, decisions: &[Decision]) {
        for d in decisions {
            if let Decision::Requeue { job, .. } = d {
                if let Some(m) = self.jobs.get_mut(&job.0) {
                    m.done_ranks.clear();
                    m.checkpoint_at = None;
                    m.restarts += 1;
                }
            }
        }
    }

    /// Whether the node exists and is up (its agent registered and still heartbeats).
    pub fn node_is_up(&self, name: &str) -> Option<bool> {
        let n = self.sched.engine().fleet().node_by_name(name)?;
        Some(self.sched.engine().fleet().node(n).state != NodeState::Down)
    }

    /// Names of the nodes that are up.
    pub fn up_nodes(&self) -> Vec<String> {
        self.sched
            .engine()
            .fleet()
            .nodes()
            .iter()
            .filter(|n| n.state != NodeState::Down)
            .map(|n| n.name.to_string())
            .collect()
    }

    /// Every task node `name` must run now.
    pub fn assignments(&self, name: &str) -> Vec<Assignment> {
        let engine = self.sched.engine();
        let Some(n) = engine.fleet().node_by_name(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for w in engine.workloads_on(n) {
            let (Some(job), Some(meta)) = (self.sched.job(w), self.jobs.get(&w.0)) else {
                continue;
            };
            let stop_by = match job.state {
                JobState::Running { .. } => None,
                JobState::Preempting { deadline, .. } => Some(deadline),
                _ => continue,
            };
            let Some(Allocation::Gang { slots, .. }) = engine.allocation(w) else {
                continue;
            };
            for (rank, slot) in slots.iter().enumerate().filter(|(_, s)| s.node == n) {
                out.push(Assignment {
                    job: w.0,
                    run: job.restarts,
                    rank: rank as u32,
                    world: slots.len() as u32,
                    command: meta.task.command.clone(),
                    env: meta.task.env.clone(),
                    workdir: meta.task.workdir.clone(),
                    gpus: (0..32).filter(|b| slot.gpu_mask & (1 << b) != 0).collect(),
                    stop_by,
                });
            }
        }
        out
    }

    /// The events a heartbeat brings: the node coming up, tasks that exited, new checkpoints.
    /// Reports about stale runs are dropped (their tasks are told to stop by the reply).
    pub fn heartbeat_events(&self, hb: &Heartbeat, at: u64) -> Result<Vec<Event>, FieldProblem> {
        let up = self.node_is_up(&hb.node).ok_or_else(|| FieldProblem {
            field: "node".into(),
            reason: format!("no node '{}' in the fleet", hb.node),
        })?;
        let mut events = Vec::new();
        if !up {
            events.push(Event::NodeUp {
                node: hb.node.clone(),
                at,
            });
        }
        for t in &hb.tasks {
            if self.current_world(t.job, t.run).is_err() {
                continue;
            }
            let meta = self.jobs.get(&t.job);
            if let Some(c) = t.checkpoint_at {
                let newer = meta.is_some_and(|m| m.checkpoint_at.is_none_or(|p| c > p));
                if newer && t.exit_code.is_none() {
                    events.push(Event::Checkpoint {
                        job: t.job,
                        run: t.run,
                        at: c.min(at).max(self.now),
                    });
                }
            }
            if let Some(code) = t.exit_code {
                events.push(Event::TaskExited {
                    job: t.job,
                    run: t.run,
                    rank: t.rank,
                    code,
                    at,
                });
            }
        }
        Ok(events)
    }

    /// Turns a request into a `Submit` event, checking every field; changes nothing.
    pub fn submit_event(&self, req: &SubmitJob, at: u64) -> Result<Event, FieldProblem> {
        let bad = |field: &str, reason: String| FieldProblem {
            field: field.to_string(),
            reason,
        };
        if req.name.is_empty() || req.name.len() > 128 {
            return Err(bad("name", "must be 1 to 128 characters".into()));
        }
        if let Some(c) = req
            .name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
        {
            return Err(bad(
                "name",
                format!("'{c}' is not allowed (letters, digits, '-', '_', '.')"),
            ));
        }
        let tenant = self
            .tenants
            .iter()
            .position(|t| t.name == req.tenant)
            .ok_or_else(|| {
                let known: Vec<&str> = self.tenants.iter().map(|t| t.name.as_str()).collect();
                bad(
                    "tenant",
                    format!(
                        "unknown tenant '{}' (known: {})",
                        req.tenant,
                        known.join(", ")
                    ),
                )
            })?;
        let priority: PriorityClass = serde_json::from_value(serde_json::Value::String(
            req.priority.clone(),
        ))
        .map_err(|_| {
            bad(
                "priority",
                format!(
                    "unknown class '{}' (preemptible, research, training, production-inference)",
                    req.priority
                ),
            )
        })?;
        let gpu: GpuModel = req.gpu.parse().map_err(|e| bad("gpu", format!("{e}")))?;
        let spec = JobSpec {
            tenant: TenantId(tenant as u32),
            priority,
            gang: GangRequest {
                class: WorkloadClass::Training,
                gpu,
                nodes: req.nodes,
                gpus_per_node: req.gpus_per_node,
                cpu_millis_per_node: req.cpu_millis_per_node,
                memory_mib_per_node: req.memory_mib_per_node,
                segment: req.segment,
                spares: req.spares,
            },
            time_limit: req.time_limit_s,
        };
        spec.validate().map_err(|e| {
            let field = if e.field == "time_limit" {
                "time_limit_s"
            } else {
                e.field
            };
            bad(field, e.reason)
        })?;
        if req.command.first().is_some_and(|c| c.is_empty()) {
            return Err(bad("command", "the program name is empty".into()));
        }
        Ok(Event::Submit {
            id: self.next_id,
            name: req.name.clone(),
            spec,
            task: TaskSpec {
                command: req.command.clone(),
                env: req.env.clone(),
                workdir: req.workdir.clone(),
            },
            at,
        })
    }

    /// The job's queue state, live or ended.
    fn job_state(&self, id: u64) -> Option<&JobState> {
        let wid = WorkloadId(id);
        match self.sched.job(wid) {
            Some(j) => Some(&j.state),
            None => self.sched.ended_state(wid),
        }
    }

    /// The name of the tenant that owns job `id` (cheap: no view is built).
    pub fn job_tenant(&self, id: u64) -> Option<&str> {
        let meta = self.jobs.get(&id)?;
        self.tenants
            .get(meta.tenant.0 as usize)
            .map(|t| t.name.as_str())
    }

    /// The job as the API shows it.
    pub fn job_view(&self, id: u64) -> Option<JobView> {
        let meta = self.jobs.get(&id)?;
        let wid = WorkloadId(id);
        let state = self.job_state(id)?.clone();
        let nodes = match self.sched.engine().allocation(wid) {
            Some(sched::Allocation::Gang { slots, .. }) => slots
                .iter()
                .map(|s| self.sched.engine().fleet().node(s.node).name.to_string())
                .collect(),
            _ => Vec::new(),
        };
        let since = match &state {
            JobState::Pending => None,
            JobState::Running { since } | JobState::Preempting { since, .. } => Some(*since),
            JobState::Finished | JobState::Cancelled => meta.ended_at,
        };
        let state_name = state_name(&state);
        Some(JobView {
            id,
            name: meta.name.clone(),
            tenant: self
                .tenants
                .get(meta.tenant.0 as usize)
                .map_or_else(String::new, |t| t.name.clone()),
            state: state_name.into(),
            since,
            submitted_at: meta.submitted_at,
            gpus: meta.gpus,
            restarts: meta.restarts,
            exit_code: meta.exit_code,
            nodes,
            reason: if state == JobState::Pending {
                self.sched.pending_reason(wid)
            } else {
                None
            },
        })
    }

    /// Jobs after id `after` (ascending), at most `limit`, optionally of one tenant and state.
    pub fn list(
        &self,
        tenant: Option<&str>,
        state: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Vec<JobView> {
        // Filter on what is cheap; build views (which render pending reasons) for the page only.
        self.jobs
            .range(after.saturating_add(1)..)
            .map(|(id, _)| *id)
            .filter(|id| tenant.is_none_or(|t| self.job_tenant(*id) == Some(t)))
            .filter(|id| state.is_none_or(|s| self.job_state(*id).map(state_name) == Some(s)))
            .take(limit)
            .filter_map(|id| self.job_view(id))
            .collect()
    }

    /// Nodes with their state and free GPUs.
    pub fn nodes(&self) -> Vec<NodeView> {
        let engine = self.sched.engine();
        engine
            .fleet()
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (free_mask, free_cpu, _) = engine.node_free(model::NodeId(i as u32));
                NodeView {
                    name: n.name.to_string(),
                    state: format!("{:?}", n.state).to_lowercase(),
                    gpus: u32::from(n.capacity.gpus),
                    free_gpus: free_mask.count_ones(),
                    cpu_millis: n.capacity.cpu_millis,
                    free_cpu_millis: free_cpu,
                }
            })
            .collect()
    }

    /// Tenants with their usage.
    pub fn tenants(&self) -> Vec<TenantView> {
        self.sched
            .tenant_report()
            .into_iter()
            .map(|t| TenantView {
                name: t.name,
                gpus_in_use: t.usage.gpus.iter().sum(),
                dominant_share: t.dominant_share,
                lost_gpu_hours: t.lost_gpu_hours,
            })
            .collect()
    }

    /// Everything a restart must reproduce, as text: every job's view and placement, the
    /// engine's usage and the reservation. Two planes with equal fingerprints are the same to
    /// every client.
    pub fn fingerprint(&self) -> String {
        let views: Vec<JobView> = self
            .jobs
            .keys()
            .filter_map(|id| self.job_view(*id))
            .collect();
        let mut out = serde_json::to_string(&views).unwrap_or_default();
        out.push_str(&format!(
            "\nusage {:?} reservation {:?} next {} now {}",
            self.sched.engine().gpu_usage(),
            self.sched.reservation(),
            self.next_id,
            self.now
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn init() -> Event {
        Event::Init {
            fleet_toml: default_fleet_toml().unwrap(),
            tenants: default_tenants(),
            at: 100,
        }
    }

    fn req(name: &str, nodes: u32) -> SubmitJob {
        SubmitJob {
            name: name.into(),
            tenant: "default".into(),
            priority: "research".into(),
            gpu: "GB200".into(),
            nodes,
            gpus_per_node: 4,
            cpu_millis_per_node: 0,
            memory_mib_per_node: 0,
            segment: None,
            spares: 0,
            time_limit_s: 3600,
            command: vec!["true".into()],
            env: BTreeMap::new(),
            workdir: None,
        }
    }

    /// The state after Init with every node's agent up; the events that made it.
    fn up() -> (ControlPlane, Vec<Event>) {
        let mut p = ControlPlane::new(&init()).unwrap();
        let mut journal = vec![init()];
        for name in p
            .sched
            .engine()
            .fleet()
            .nodes()
            .iter()
            .map(|n| n.name.to_string())
            .collect::<Vec<_>>()
        {
            let e = Event::NodeUp {
                node: name,
                at: 100,
            };
            p.apply(&e).unwrap();
            journal.push(e);
        }
        (p, journal)
    }

    #[test]
    fn replay_rebuilds_the_same_state() {
        let (mut p, mut journal) = up();
        for (i, nodes) in [18, 18, 4, 30].into_iter().enumerate() {
            let e = p
                .submit_event(&req(&format!("j{i}"), nodes), 100 + i as u64)
                .unwrap();
            p.apply(&e).unwrap();
            journal.push(e);
        }
        for e in [
            Event::Pass { at: 110 },
            Event::Cancel { id: 2, at: 120 },
            Event::Pass { at: 121 },
        ] {
            p.apply(&e).unwrap();
            journal.push(e);
        }
        let again = ControlPlane::replay(
            journal
                .into_iter()
                .enumerate()
                .map(|(i, e)| (i as u64 + 1, e)),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.fingerprint(), again.fingerprint());
        let v = again.job_view(3).unwrap();
        assert_eq!(v.state, "running");
        assert_eq!(v.nodes.len(), 4);
        assert_eq!(again.job_view(2).unwrap().state, "cancelled");
        assert_eq!(again.job_view(4).unwrap().state, "pending");
    }

    #[test]
    fn nothing_runs_on_a_node_without_an_agent() {
        let mut p = ControlPlane::new(&init()).unwrap();
        let e = p.submit_event(&req("j", 1), 100).unwrap();
        p.apply(&e).unwrap();
        p.apply(&Event::Pass { at: 101 }).unwrap();
        assert_eq!(p.job_view(1).unwrap().state, "pending");
        assert!(p.up_nodes().is_empty());
    }

    #[test]
    fn tasks_report_exits_and_checkpoints_and_a_dead_node_requeues() {
        let (mut p, _) = up();
        let apply_all = |p: &mut ControlPlane, events: Vec<Event>| {
            for e in events {
                p.apply(&e).unwrap();
            }
        };
        let e = p.submit_event(&req("gang", 2), 100).unwrap();
        p.apply(&e).unwrap();
        p.apply(&Event::Pass { at: 101 }).unwrap();
        let nodes = p.job_view(1).unwrap().nodes;
        assert_eq!(nodes.len(), 2);
        let a = p.assignments(&nodes[0]);
        assert_eq!((a.len(), a[0].rank, a[0].world, a[0].run), (1, 0, 2, 0));
        assert_eq!(a[0].gpus, vec![0, 1, 2, 3]);
        // A checkpoint, then rank 0 exits 0: the job still runs (rank 1 has not exited).
        let hb = |node: &str, exit: Option<i32>, rank, checkpoint| Heartbeat {
            node: node.into(),
            tasks: vec![crate::api::TaskReport {
                job: 1,
                run: 0,
                rank,
                exit_code: exit,
                checkpoint_at: checkpoint,
            }],
        };
        let ev = p
            .heartbeat_events(&hb(&nodes[0], None, 0, Some(150)), 160)
            .unwrap();
        assert_eq!(
            ev,
            vec![Event::Checkpoint {
                job: 1,
                run: 0,
                at: 150
            }]
        );
        apply_all(&mut p, ev);
        // The same checkpoint again is not news.
        assert!(p
            .heartbeat_events(&hb(&nodes[0], None, 0, Some(150)), 161)
            .unwrap()
            .is_empty());
        // The node dies: the job is requeued (run 1) and its old run's reports are ignored.
        p.apply(&Event::NodeDown {
            node: nodes[1].clone(),
            at: 200,
        })
        .unwrap();
        let v = p.job_view(1).unwrap();
        assert_eq!((v.state.as_str(), v.restarts), ("pending", 1));
        assert!(p
            .heartbeat_events(&hb(&nodes[0], Some(0), 0, None), 201)
            .unwrap()
            .is_empty());
        assert!(p.assignments(&nodes[0]).is_empty());
        // Run 1 goes elsewhere and ends when both ranks exit 0.
        p.apply(&Event::Pass { at: 202 }).unwrap();
        let v = p.job_view(1).unwrap();
        assert_eq!(v.state, "running");
        for (rank, node) in v.nodes.iter().enumerate() {
            let mut h = hb(node, Some(0), rank as u32, None);
            h.tasks[0].run = 1;
            let ev = p.heartbeat_events(&h, 300).unwrap();
            apply_all(&mut p, ev);
        }
        let v = p.job_view(1).unwrap();
        assert_eq!(
            (v.state.as_str(), v.exit_code, v.since),
            ("finished", Some(0), Some(300))
        );
        // A heartbeat from a node the fleet does not have names the field.
        assert_eq!(
            p.heartbeat_events(&hb("nope", None, 0, None), 301)
                .unwrap_err()
                .field,
            "node"
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let p = ControlPlane::new(&init()).unwrap();
        let cases: Vec<(SubmitJob, &str)> = vec![
            (
                SubmitJob {
                    name: "".into(),
                    ..req("x", 1)
                },
                "name",
            ),
            (
                SubmitJob {
                    name: "a b".into(),
                    ..req("x", 1)
                },
                "name",
            ),
            (
                SubmitJob {
                    tenant: "nobody".into(),
                    ..req("x", 1)
                },
                "tenant",
            ),
            (
                SubmitJob {
                    priority: "urgent".into(),
                    ..req("x", 1)
                },
                "priority",
            ),
            (
                SubmitJob {
                    gpu: "Z9".into(),
                    ..req("x", 1)
                },
                "gpu",
            ),
            (req("x", 0), "nodes"),
            (
                SubmitJob {
                    time_limit_s: 0,
                    ..req("x", 1)
                },
                "time_limit_s",
            ),
        ];
        for (r, field) in cases {
            let e = p.submit_event(&r, 1).unwrap_err();
            assert_eq!(e.field, field, "{e:?}");
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn a_journal_must_start_with_init() {
        let e = ControlPlane::replay(vec![(1, Event::Pass { at: 1 })])
            .err()
            .unwrap();
        assert!(e.to_string().contains("first record must be Init"), "{e}");
        let e = ControlPlane::replay(vec![(1, init()), (2, init())])
            .err()
            .unwrap();
        assert!(e.to_string().contains("record 2: a second Init"), "{e}");
    }
}
