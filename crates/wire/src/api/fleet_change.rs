//! A fleet changed while the cell runs (`POST /v1/fleet/apply`, `GET /v1/fleet/file`): the
//! fleet file an operator applies, and what applying it changes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest fleet file `POST /v1/fleet/apply` takes (the reference fleet's is about 1.4 MB).
pub const MAX_FLEET_FILE_BYTES: usize = 32 << 20;

/// A fleet file to apply to the running cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyFleet {
    /// The whole fleet as it should be, in the fleet-file format (TOML): nodes it lacks are
    /// removed, nodes it adds join.
    pub fleet_toml: String,
    /// Say what would change and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Some nodes, counted and named.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeSet {
    /// How many.
    pub count: u64,
    /// Their names as a host list (e.g. `nvl-0007-t[00-17]`).
    pub names: String,
}

/// What applying a fleet file changes (or changed, once `applied`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FleetChange {
    /// The change was made (`false`: a dry run said what it would do).
    pub applied: bool,
    /// Nodes in the fleet before (removed nodes still running work count until they leave).
    pub nodes_before: u64,
    /// Nodes in the fleet after.
    pub nodes_after: u64,
    /// NVLink domains before.
    pub domains_before: u64,
    /// NVLink domains after.
    pub domains_after: u64,
    /// Nodes that join; each takes work once its agent reports.
    pub added: NodeSet,
    /// Removed nodes that held no work: gone at once.
    pub removed: NodeSet,
    /// Removed nodes with work on them: drained, they leave the fleet once it ends.
    pub leaving: NodeSet,
    /// Nodes whose place in the topology changed (zone, network nodes or domain).
    pub moved: NodeSet,
    /// Removed nodes named again: they stay, and take work again.
    pub kept: NodeSet,
    /// Pools new to the cell.
    pub pools_added: Vec<String>,
}
