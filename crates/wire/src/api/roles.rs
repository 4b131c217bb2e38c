//! Roles of a unit service: a replica made of several kinds of workers (e.g. one prefill
//! worker of 8 GPUs and two decode workers of 4), placed together and scaled together.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Most roles one unit may have.
pub const MAX_ROLES: usize = 16;
/// Most nodes one unit may span, over all its roles.
pub const MAX_UNIT_NODES: u32 = 256;

/// One role of a unit service's replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceRole {
    /// Lower-case letters, digits and '_', starting with a letter; at most 32 characters.
    /// It names the role's environment variables (`STARGRID_<NAME>_ADDRS`).
    #[schema(pattern = r"^[a-z][a-z0-9_]{0,31}$", min_length = 1, max_length = 32)]
    pub name: String,
    /// Workers of this role in each replica.
    #[serde(default = "one")]
    #[schema(minimum = 1)]
    pub workers: u32,
    /// Nodes of one worker, kept inside one NVLink domain.
    #[serde(default = "one")]
    #[schema(minimum = 1)]
    pub nodes_per_worker: u32,
    /// GPUs on each of its nodes.
    pub gpus_per_node: u8,
    /// CPU millicores on each node.
    #[serde(default)]
    pub cpu_millis_per_node: u32,
    /// Memory on each node, MiB.
    #[serde(default)]
    pub memory_mib_per_node: u32,
    /// The program each of its nodes runs.
    pub command: Vec<String>,
    /// Environment, over the service's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// Longest node address an agent may advertise.
pub const MAX_NODE_ADDRESS: usize = 253;

/// Whether `address` may name a node (an agent's `--advertise-address`): a host name or an
/// IP address, at most [`MAX_NODE_ADDRESS`] bytes.
pub fn is_node_address(address: &str) -> bool {
    (1..=MAX_NODE_ADDRESS).contains(&address.len())
        && address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
}

/// Whether `name` is a valid role name.
pub fn is_role_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}
