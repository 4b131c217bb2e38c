//! The fleet: a topology tree (root → cloud → region → zone → network levels → NVLink domain)
//! with nodes (trays or hosts) at its leaves, and the capacity pool of every node.
//!
//! Layout is chosen for scale and for the engine: topology nodes are numbered in DFS
//! pre-order and nodes are sorted by their place in the tree, so that *every subtree is a
//! contiguous range of nodes and of NVLink domains*. Draining a spine, counting a zone or
//! walking a domain is a slice, not a search.

use crate::resources::{GpuModel, Resources};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

mod builder;
pub use builder::{FleetBuilder, Location};

/// Index of a topology node (pre-order position in [`Fleet::topo`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopoId(pub u32);

/// Index of a node in [`Fleet::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

/// Index of a capacity pool in [`Fleet::pools`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PoolId(pub u32);

/// What a topology node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TopoKind {
    /// The single root of the tree.
    Root,
    /// A provider (aws, gcp, azure, oci, onprem, ...).
    Cloud,
    /// A provider region.
    Region,
    /// An availability zone.
    Zone,
    /// A network node; `level` 0 is the top (e.g. spine), larger is closer to the nodes.
    Network {
        /// Depth below the zone, 0 = topmost network level.
        level: u8,
    },
    /// An NVLink domain (UltraServer, capacity block, or a standalone multi-GPU host).
    Domain,
}

impl TopoKind {
    /// Short human name of the level.
    pub fn label(&self) -> String {
        match self {
            TopoKind::Root => "fleet".into(),
            TopoKind::Cloud => "cloud".into(),
            TopoKind::Region => "region".into(),
            TopoKind::Zone => "zone".into(),
            TopoKind::Network { level } => format!("network level {level}"),
            TopoKind::Domain => "NVLink domain".into(),
        }
    }
}

/// One node of the topology tree.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopoNode {
    /// Name of this element (unique among its siblings).
    pub name: Box<str>,
    /// Level it stands for.
    pub kind: TopoKind,
    /// Parent, `None` for the root.
    pub parent: Option<TopoId>,
    /// Distance from the root.
    pub depth: u8,
    /// Children, in pre-order.
    pub children: Vec<TopoId>,
    /// Nodes in this subtree.
    pub nodes: Range<u32>,
    /// Indices into [`Fleet::domains`] of the domains in this subtree.
    pub domains: Range<u32>,
    /// A domain made up for a standalone GPU host (not written back to files).
    pub implicit: bool,
}

/// Scheduling state of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Accepts new work.
    #[default]
    Ready,
    /// Accepts no new work; running work stays.
    Cordoned,
    /// Accepts no new work; running work is to be moved off.
    Draining,
    /// Unreachable or broken; work on it is lost.
    Down,
}

impl NodeState {
    /// Whether new work may be placed on a node in this state.
    pub fn schedulable(self) -> bool {
        self == NodeState::Ready
    }

    /// The lowercase name used in files.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Cordoned => "cordoned",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }
}

impl FromStr for NodeState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ready" => Ok(NodeState::Ready),
            "cordoned" => Ok(NodeState::Cordoned),
            "draining" => Ok(NodeState::Draining),
            "down" => Ok(NodeState::Down),
            _ => Err(format!(
                "unknown node state '{s}' (expected ready, cordoned, draining or down)"
            )),
        }
    }
}

/// How capacity in a pool is paid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PricingKind {
    /// Paid for under a commitment, whether used or not.
    Committed,
    /// Paid by the hour when used.
    #[default]
    OnDemand,
    /// Cheap, may be reclaimed by the provider at short notice.
    Spot,
}

impl fmt::Display for PricingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PricingKind::Committed => "committed",
            PricingKind::OnDemand => "on-demand",
            PricingKind::Spot => "spot",
        })
    }
}

/// Where capacity comes from and what it costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityPool {
    /// Unique pool name.
    pub name: String,
    /// Provider.
    pub cloud: String,
    /// Provider region.
    pub region: String,
    /// Instance type of every node in the pool.
    pub instance_type: String,
    /// How it is paid for.
    #[serde(default)]
    pub pricing: PricingKind,
    /// Price per node-hour in USD.
    #[serde(default)]
    pub price_per_hour: f64,
}

/// One schedulable machine: a tray of an UltraServer or a host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    /// Unique host name.
    pub name: Box<str>,
    /// The lowest topology node above it: its NVLink domain for GPU nodes.
    pub parent: TopoId,
    /// Capacity pool it belongs to.
    pub pool: PoolId,
    /// What it offers when empty.
    pub capacity: Resources,
    /// Scheduling state.
    pub state: NodeState,
}

/// A fleet that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// Two nodes with one name.
    #[error("node '{0}' is declared twice")]
    DuplicateNode(String),
    /// Two pools with one name.
    #[error("pool '{0}' is declared twice")]
    DuplicatePool(String),
    /// A name that cannot be used.
    #[error("{field} '{name}': {reason}")]
    BadName {
        /// Which field held the name.
        field: &'static str,
        /// The name.
        name: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A domain whose nodes carry different accelerators, or none.
    #[error("NVLink domain '{domain}': {reason}")]
    BadDomain {
        /// Path of the domain.
        domain: String,
        /// What is wrong.
        reason: String,
    },
    /// A node's resources are out of range.
    #[error("node '{node}': {reason}")]
    BadNode {
        /// Node name.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// A reference to a pool that does not exist.
    #[error("pool id {0} does not exist")]
    UnknownPool(u32),
}

/// Checks a topology or node name: non-empty, printable, no path or hostlist syntax.
pub fn check_name(field: &'static str, name: &str) -> Result<(), FleetError> {
    let bad = |reason| FleetError::BadName {
        field,
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 bytes"));
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '[' | ']' | ',' | '='))
    {
        return Err(bad(
            "must not contain whitespace, '/', '[', ']', ',' or '='",
        ));
    }
    Ok(())
}

/// The whole fleet: topology, nodes and pools. Built by [`FleetBuilder`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fleet {
    topo: Vec<TopoNode>,
    nodes: Vec<Node>,
    pools: Vec<CapacityPool>,
    domains: Vec<TopoId>,
    node_by_name: FxHashMap<Box<str>, NodeId>,
}

/// Totals of a fleet, as `stargrid fleet show` prints them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FleetSummary {
    /// Nodes (trays and hosts).
    pub nodes: u64,
    /// Accelerators.
    pub gpus: u64,
    /// Accelerators by model.
    pub gpus_by_model: Vec<(String, u64)>,
    /// CPU millicores.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// NVLink domains, including standalone multi-GPU hosts.
    pub nvlink_domains: u64,
    /// NVLink domains spanning more than one node (UltraServers, capacity blocks).
    pub multi_node_domains: u64,
    /// Most network levels under any zone.
    pub network_levels: u8,
    /// Clouds.
    pub clouds: u64,
    /// Regions.
    pub regions: u64,
    /// Zones.
    pub zones: u64,
    /// Capacity pools.
    pub pools: u64,
    /// Nodes not in state ready.
    pub unschedulable_nodes: u64,
}

impl Fleet {
    /// All topology nodes, in pre-order; index 0 is the root.
    pub fn topo(&self) -> &[TopoNode] {
        &self.topo
    }

    /// One topology node.
    pub fn topo_node(&self, id: TopoId) -> &TopoNode {
        &self.topo[id.0 as usize]
    }

    /// All nodes, sorted by their place in the tree.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    /// All capacity pools.
    pub fn pools(&self) -> &[CapacityPool] {
        &self.pools
    }

    /// One pool.
    pub fn pool(&self, id: PoolId) -> &CapacityPool {
        &self.pools[id.0 as usize]
    }

    /// Sets a pool's price per node-hour (prices come from a catalogue; the tree is
    /// unchanged). A price that is not a finite number of 0 or more is ignored.
    pub fn set_pool_price(&mut self, id: PoolId, price_per_hour: f64) {
        if price_per_hour.is_finite() && price_per_hour >= 0.0 {
            if let Some(p) = self.pools.get_mut(id.0 as usize) {
                p.price_per_hour = price_per_hour;
            }
        }
    }

    /// NVLink domains, in pre-order.
    pub fn domains(&self) -> &[TopoId] {
        &self.domains
    }

    /// Looks a node up by name.
    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.node_by_name.get(name).copied()
    }

    /// Sets a node's state.
    pub fn set_node_state(&mut self, id: NodeId, state: NodeState) {
        self.nodes[id.0 as usize].state = state;
    }

    /// Full path of a topology node, e.g. `aws/us-east-1/use1-az1/sp0/blk3/nvl-0007`.
    pub fn topo_path(&self, id: TopoId) -> String {
        let mut parts = Vec::new();
        let mut cur = Some(id);
        while let Some(t) = cur {
            let n = self.topo_node(t);
            if n.kind != TopoKind::Root {
                parts.push(&*n.name);
            }
            cur = n.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// Finds a topology node from its full path (as [`Fleet::topo_path`] prints it).
    pub fn find_topo(&self, path: &str) -> Option<TopoId> {
        let mut cur = TopoId(0);
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = *self
                .topo_node(cur)
                .children
                .iter()
                .find(|c| &*self.topo_node(**c).name == part)?;
        }
        Some(cur)
    }

    /// Ancestors of a topology node from itself up to (excluding) the root.
    pub fn ancestors(&self, id: TopoId) -> impl Iterator<Item = TopoId> + '_ {
        std::iter::successors(Some(id), move |t| self.topo_node(*t).parent)
            .take_while(move |t| self.topo_node(*t).kind != TopoKind::Root)
    }

    /// The zone (or higher) containing a topology node.
    pub fn zone_of(&self, id: TopoId) -> Option<TopoId> {
        self.ancestors(id)
            .find(|t| self.topo_node(*t).kind == TopoKind::Zone)
    }

    /// Network path of a node's lowest topology element (names of network levels, top first).
    pub fn network_path(&self, id: TopoId) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .ancestors(id)
            .filter(|t| matches!(self.topo_node(*t).kind, TopoKind::Network { .. }))
            .map(|t| &*self.topo_node(t).name)
            .collect();
        v.reverse();
        v
    }

    /// The NVLink domain of a node, if it has one.
    pub fn domain_of(&self, id: NodeId) -> Option<TopoId> {
        let parent = self.node(id).parent;
        (self.topo_node(parent).kind == TopoKind::Domain).then_some(parent)
    }

    /// Totals for `fleet show`.
    pub fn summary(&self) -> FleetSummary {
        let mut by_model = [0u64; GpuModel::ALL.len()];
        let (mut gpus, mut cpu, mut mem, mut unsched) = (0u64, 0u64, 0u64, 0u64);
        for n in &self.nodes {
            gpus += u64::from(n.capacity.gpus);
            if let Some(m) = n.capacity.gpu_model {
                by_model[m.index()] += u64::from(n.capacity.gpus);
            }
            cpu += u64::from(n.capacity.cpu_millis);
            mem += u64::from(n.capacity.memory_mib);
            unsched += u64::from(!n.state.schedulable());
        }
        let count = |k: TopoKind| self.topo.iter().filter(|t| t.kind == k).count() as u64;
        FleetSummary {
            nodes: self.nodes.len() as u64,
            gpus,
            gpus_by_model: GpuModel::ALL
                .iter()
                .filter(|m| by_model[m.index()] > 0)
                .map(|m| (m.name().to_string(), by_model[m.index()]))
                .collect(),
            cpu_millis: cpu,
            memory_mib: mem,
            nvlink_domains: self.domains.len() as u64,
            multi_node_domains: self
                .domains
                .iter()
                .filter(|d| self.topo_node(**d).nodes.len() > 1)
                .count() as u64,
            network_levels: self
                .topo
                .iter()
                .filter_map(|t| match t.kind {
                    TopoKind::Network { level } => Some(level + 1),
                    _ => None,
                })
                .max()
                .unwrap_or(0),
            clouds: count(TopoKind::Cloud),
            regions: count(TopoKind::Region),
            zones: count(TopoKind::Zone),
            pools: self.pools.len() as u64,
            unschedulable_nodes: unsched,
        }
    }

    /// Approximate heap bytes held by the fleet (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        let topo = self.topo.capacity() * std::mem::size_of::<TopoNode>()
            + self
                .topo
                .iter()
                .map(|t| t.name.len() + t.children.capacity() * 4)
                .sum::<usize>();
        let nodes = self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.nodes.iter().map(|n| n.name.len() * 2).sum::<usize>();
        let index = self.node_by_name.capacity() * (std::mem::size_of::<(Box<str>, NodeId)>() + 1);
        topo + nodes + index + self.domains.capacity() * 4
    }
}
