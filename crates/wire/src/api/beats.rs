//! Heartbeats: one node's (`POST /v1/agent/heartbeat`, what it reports and the whole answer),
//! and many nodes' in one request (`POST /v1/agent/heartbeats`): an agent that plays many
//! nodes, or fans in many agents, reports them together and hears back only what changed.
//!
//! Each node's answer carries a digest of its assignments. The agent sends it back as
//! [`Heartbeat::known`]; while it still matches, the node is left out
//! of the answer, so a quiet node costs a few bytes each way however much it runs.

use super::{Assignment, FieldProblem, Inventory, LogChunk, LogWanted, SandboxAssignment};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An agent announcing the node it runs on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The node's name in the fleet.
    #[schema(min_length = 1, max_length = 253)]
    pub node: String,
    /// What runs there now, and what ended since the last heartbeat.
    #[serde(default)]
    pub tasks: Vec<TaskReport>,
    /// The node's GPUs as its agent finds them (NVML) or declares them; checked against the
    /// fleet. Absent: the fleet is trusted.
    #[serde(default)]
    pub inventory: Option<Inventory>,
    /// Pieces of task logs the server asked for.
    #[serde(default)]
    pub logs: Vec<LogChunk>,
    /// The sandbox templates (root file systems) the node offers besides the host's own, by
    /// name; at most [`MAX_TEMPLATES`](super::MAX_TEMPLATES).
    #[serde(default)]
    pub templates: Vec<String>,
    /// The digest of the assignments the agent holds for this node, from the last answer that
    /// carried them (`POST /v1/agent/heartbeats` only): while it matches, the node's answer
    /// is left out. Absent: every assignment is sent.
    #[serde(default)]
    pub known: Option<u64>,
    /// The address the node is reached at (the agent's `--advertise-address`): peers of a
    /// unit service's replica learn it from their environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 253)]
    pub address: Option<String>,
}

/// One task as its agent sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskReport {
    /// The job.
    pub job: u64,
    /// Which run of the job (its restarts so far).
    pub run: u32,
    /// The task's rank in the gang.
    pub rank: u32,
    /// Exit code, once it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The kernel killed it for going past its memory limit.
    #[serde(default)]
    pub oom_killed: bool,
    /// Unix seconds of the task's last checkpoint, if it wrote one.
    #[serde(default)]
    pub checkpoint_at: Option<u64>,
    /// A service replica's endpoint, as its agent gave and probed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<TaskEndpoint>,
}

/// Where a service replica listens, and whether it is ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskEndpoint {
    /// The address the node is reached at (the agent's `--advertise-address`).
    pub address: String,
    /// The port the agent gave the replica.
    pub port: u16,
    /// Its readiness probe passed (and, without one, its port takes connections).
    pub ready: bool,
}

/// The server's answer to a heartbeat: every task and sandbox the node must run now. Anything
/// else running there is stale and must be stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatReply {
    /// Tasks to run (already running ones included).
    pub assignments: Vec<Assignment>,
    /// Sandboxes to run, as ranges of indices. A sandbox is reported as a task with
    /// `job` = its batch, `run` = 0 and `rank` = its index, once it exits.
    #[serde(default)]
    pub sandboxes: Vec<SandboxAssignment>,
    /// Logs someone is reading: send what follows `from` with the next heartbeat.
    #[serde(default)]
    pub logs_wanted: Vec<LogWanted>,
}

/// The most nodes one request may report.
pub const MAX_BEATS: usize = 2000;

/// Heartbeats of several nodes, each as its own agent would send it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeats {
    /// One heartbeat per node (at most 2,000, each node once; at least one unless `alive`
    /// is given).
    #[schema(max_items = 2000)]
    pub beats: Vec<Heartbeat>,
    /// More nodes heard from with nothing to report, as a hostlist expression
    /// (`tray-[0000-4095],cpu-0007`; at most [`MAX_ALIVE`] names): what a frontend sends for
    /// the nodes whose agents it heard and whose heartbeats changed nothing. Only a credential
    /// that may report for every node may send it; names that are no node are passed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1048576)]
    pub alive: Option<String>,
}

/// The most node names one `alive` expression may stand for.
pub const MAX_ALIVE: usize = 1_000_000;

/// The answer to [`Heartbeats`]: the nodes with news. A node left out keeps the assignments
/// it holds and has no log wanted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatsReply {
    /// The nodes whose assignments changed (or were not known), that have logs wanted, or
    /// whose heartbeat was refused.
    pub nodes: Vec<NodeAnswer>,
    /// The journal record the answers were read at (durable): a frontend answers its agents
    /// from its copy of the state once that copy holds this record.
    #[serde(default)]
    pub seq: u64,
    /// Nodes whose logs someone is reading now (only to a credential that may report for
    /// every node, such as a frontend's): their heartbeats must reach the server in full.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs_on: Vec<String>,
}

/// One node's news.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeAnswer {
    /// The node.
    pub node: String,
    /// The digest of the node's assignments now: send it as `known` next time.
    pub digest: u64,
    /// Every task and sandbox the node must run now; absent when `known` still matched.
    #[serde(default)]
    pub work: Option<NodeWork>,
    /// Logs someone is reading: send what follows `from` with the next heartbeat.
    #[serde(default)]
    pub logs_wanted: Vec<LogWanted>,
    /// Why this node's heartbeat was refused (the others' were taken).
    #[serde(default)]
    pub refused: Option<FieldProblem>,
}

/// What a node must run: anything else running there is stale and must be stopped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeWork {
    /// Tasks to run (already running ones included).
    pub assignments: Vec<Assignment>,
    /// Sandboxes to run, as ranges of indices.
    #[serde(default)]
    pub sandboxes: Vec<SandboxAssignment>,
}
