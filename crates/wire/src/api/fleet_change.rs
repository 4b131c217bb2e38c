//! A fleet changed while the cell runs (`POST /v1/fleet/apply`, `GET /v1/fleet/file`): the
//! fleet file an operator applies, and what applying it changes; nodes their agents register
//! under an admin's rule (`/v1/fleet/registrations`, `POST /v1/agent/register`).

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

/// An admin's rule for nodes their agents register (`PUT /v1/fleet/registrations`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRuleSpec {
    /// The names agents may register, as a host list (e.g. `gpu-new-[0000-0999]`).
    pub nodes: String,
    /// The pools of the cell they may join.
    pub pools: Vec<String>,
    /// The zones they may join (empty: any).
    #[serde(default)]
    pub zones: Vec<String>,
    /// They join without an admin's approval (the server approves them in batches).
    #[serde(default)]
    pub auto_approve: bool,
}

/// Sets or stops the registration rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRegistrationRule {
    /// The rule; `null` stops registrations and drops those waiting.
    pub rule: Option<RegistrationRuleSpec>,
}

/// A node its agent asks to bring into the fleet (`POST /v1/agent/register`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    /// The node's name.
    pub node: String,
    /// The pool it joins (its provider, region, instance type and price).
    pub pool: String,
    /// Its availability zone.
    pub zone: String,
    /// Its network nodes, top first.
    #[serde(default)]
    pub network: Vec<String>,
    /// Its NVLink domain, if it is part of a multi-node one.
    #[serde(default)]
    pub domain: Option<String>,
    /// What its agent found on it (checked against the pool's instance type).
    pub inventory: crate::api::Inventory,
}

/// Where a registration stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// The node.
    pub node: String,
    /// `waiting` (for an approval) or `joined` (in the fleet: its agent's heartbeats bring it
    /// up).
    pub state: String,
}

/// A registration waiting for approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WaitingNode {
    /// The node.
    pub node: String,
    /// Its pool.
    pub pool: String,
    /// Its zone.
    pub zone: String,
    /// Its network nodes.
    pub network: Vec<String>,
    /// Its NVLink domain.
    pub domain: Option<String>,
}

/// The registration rule and the registrations waiting (`GET /v1/fleet/registrations`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistrationsView {
    /// The rule; `None`: the cell takes no registrations.
    pub rule: Option<RegistrationRuleSpec>,
    /// Registrations waiting for approval, by name.
    pub waiting: Vec<WaitingNode>,
}

/// Registrations an admin approves or rejects (`POST /v1/fleet/registrations/approve`,
/// `…/reject`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveNodes {
    /// The waiting nodes, as a host list.
    pub nodes: String,
}
