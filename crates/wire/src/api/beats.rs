//! Heartbeats of many nodes in one request (`POST /v1/agent/heartbeats`): an agent that plays
//! many nodes, or fans in many agents, reports them together and hears back only what changed.
//!
//! Each node's answer carries a digest of its assignments. The agent sends it back as
//! [`Heartbeat::known`](super::Heartbeat::known); while it still matches, the node is left out
//! of the answer, so a quiet node costs a few bytes each way however much it runs.

use super::{Assignment, FieldProblem, Heartbeat, LogWanted, SandboxAssignment};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most nodes one request may report.
pub const MAX_BEATS: usize = 2000;

/// Heartbeats of several nodes, each as its own agent would send it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeats {
    /// One heartbeat per node (1 to 2,000, each node once).
    #[schema(min_items = 1, max_items = 2000)]
    pub beats: Vec<Heartbeat>,
}

/// The answer to [`Heartbeats`]: the nodes with news. A node left out keeps the assignments
/// it holds and has no log wanted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatsReply {
    /// The nodes whose assignments changed (or were not known), that have logs wanted, or
    /// whose heartbeat was refused.
    pub nodes: Vec<NodeAnswer>,
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
