//! Building a [`Fleet`]: pools and nodes come in one at a time, each name and shape checked as
//! it arrives; `build` orders the tree depth-first so every subtree is a contiguous range.

use super::{
    check_name, CapacityPool, Fleet, FleetError, Node, NodeId, NodeState, PoolId, TopoId, TopoKind,
    TopoNode,
};
use crate::resources::Resources;
use rustc_hash::FxHashMap;

/// Where a node sits, below its pool's cloud and region.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Location {
    /// Availability zone.
    pub zone: String,
    /// Network nodes, top first (e.g. `["spine-1", "block-07"]`).
    pub network: Vec<String>,
    /// NVLink domain, if the node is part of a multi-node one.
    pub domain: Option<String>,
}

/// Builds a [`Fleet`], checking names and consistency as nodes come in.
#[derive(Debug)]
pub struct FleetBuilder {
    topo: Vec<TopoNode>,
    children_by_name: FxHashMap<(u32, u8, Box<str>), u32>,
    pools: Vec<CapacityPool>,
    pool_by_name: FxHashMap<String, PoolId>,
    nodes: Vec<Node>,
    node_by_name: FxHashMap<Box<str>, NodeId>,
}

impl Default for FleetBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn kind_tag(kind: TopoKind) -> u8 {
    match kind {
        TopoKind::Root => 0,
        TopoKind::Cloud => 1,
        TopoKind::Region => 2,
        TopoKind::Zone => 3,
        TopoKind::Network { level } => 10u8.saturating_add(level),
        TopoKind::Domain => 255,
    }
}

impl FleetBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        FleetBuilder {
            topo: vec![TopoNode {
                name: "fleet".into(),
                kind: TopoKind::Root,
                parent: None,
                depth: 0,
                children: Vec::new(),
                nodes: 0..0,
                domains: 0..0,
                implicit: false,
            }],
            children_by_name: FxHashMap::default(),
            pools: Vec::new(),
            pool_by_name: FxHashMap::default(),
            nodes: Vec::new(),
            node_by_name: FxHashMap::default(),
        }
    }

    /// Adds a capacity pool; its name must be new.
    pub fn add_pool(&mut self, pool: CapacityPool) -> Result<PoolId, FleetError> {
        check_name("pool", &pool.name)?;
        check_name("cloud", &pool.cloud)?;
        check_name("region", &pool.region)?;
        if self.pool_by_name.contains_key(&pool.name) {
            return Err(FleetError::DuplicatePool(pool.name));
        }
        if !(pool.price_per_hour.is_finite() && pool.price_per_hour >= 0.0) {
            return Err(FleetError::BadName {
                field: "price_per_hour",
                name: pool.name,
                reason: "must be a finite number >= 0",
            });
        }
        let id = PoolId(self.pools.len() as u32);
        self.pool_by_name.insert(pool.name.clone(), id);
        self.pools.push(pool);
        Ok(id)
    }

    /// Looks up a pool added earlier.
    pub fn pool_id(&self, name: &str) -> Option<PoolId> {
        self.pool_by_name.get(name).copied()
    }

    /// Pools added so far.
    pub fn pools(&self) -> &[CapacityPool] {
        &self.pools
    }

    /// Number of nodes added so far.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn child(&mut self, parent: u32, name: &str, kind: TopoKind, implicit: bool) -> u32 {
        let key = (parent, kind_tag(kind), Box::<str>::from(name));
        if let Some(&id) = self.children_by_name.get(&key) {
            return id;
        }
        let id = self.topo.len() as u32;
        let depth = self.topo[parent as usize].depth + 1;
        self.topo.push(TopoNode {
            name: name.into(),
            kind,
            parent: Some(TopoId(parent)),
            depth,
            children: Vec::new(),
            nodes: 0..0,
            domains: 0..0,
            implicit,
        });
        self.topo[parent as usize].children.push(TopoId(id));
        self.children_by_name.insert(key, id);
        id
    }

    /// Adds one node at `location`, in `pool`, with `capacity` and `state`.
    pub fn add_node(
        &mut self,
        name: &str,
        pool: PoolId,
        location: &Location,
        capacity: Resources,
        state: NodeState,
    ) -> Result<NodeId, FleetError> {
        check_name("node", name)?;
        check_name("zone", &location.zone)?;
        for n in &location.network {
            check_name("network node", n)?;
        }
        if location.network.len() > 8 {
            return Err(FleetError::BadNode {
                node: name.into(),
                reason: "more than 8 network levels".into(),
            });
        }
        if let Some(d) = &location.domain {
            check_name("domain", d)?;
        }
        if capacity.gpus > Resources::MAX_GPUS {
            return Err(FleetError::BadNode {
                node: name.into(),
                reason: format!("{} GPUs; at most 32 per node", capacity.gpus),
            });
        }
        if (capacity.gpus > 0) != capacity.gpu_model.is_some() {
            return Err(FleetError::BadNode {
                node: name.into(),
                reason: "GPU count and GPU model must be given together".into(),
            });
        }
        if location.domain.is_some() && capacity.gpus == 0 {
            return Err(FleetError::BadNode {
                node: name.into(),
                reason: "a CPU-only node cannot be in an NVLink domain".into(),
            });
        }
        if self.node_by_name.contains_key(name) {
            return Err(FleetError::DuplicateNode(name.to_string()));
        }
        if self.nodes.len() >= u32::MAX as usize - 1 {
            return Err(FleetError::BadNode {
                node: name.into(),
                reason: "too many nodes".into(),
            });
        }
        let p = self
            .pools
            .get(pool.0 as usize)
            .ok_or(FleetError::UnknownPool(pool.0))?;
        let (cloud, region) = (p.cloud.clone(), p.region.clone());
        let mut cur = self.child(0, &cloud, TopoKind::Cloud, false);
        cur = self.child(cur, &region, TopoKind::Region, false);
        cur = self.child(cur, &location.zone, TopoKind::Zone, false);
        for (level, n) in location.network.iter().enumerate() {
            cur = self.child(cur, n, TopoKind::Network { level: level as u8 }, false);
        }
        match (&location.domain, capacity.gpus > 0) {
            (Some(d), _) => cur = self.child(cur, d, TopoKind::Domain, false),
            (None, true) => cur = self.child(cur, name, TopoKind::Domain, true),
            (None, false) => {}
        }
        let id = NodeId(self.nodes.len() as u32);
        self.node_by_name.insert(name.into(), id);
        self.nodes.push(Node {
            name: name.into(),
            parent: TopoId(cur),
            pool,
            capacity,
            state,
        });
        Ok(id)
    }

    /// Finishes the fleet: orders the tree and nodes, checks domains are homogeneous.
    pub fn build(self) -> Result<Fleet, FleetError> {
        let FleetBuilder {
            topo,
            mut nodes,
            pools,
            ..
        } = self;
        // Pre-order numbering of the topology.
        let mut order = Vec::with_capacity(topo.len());
        let mut stack = vec![0u32];
        while let Some(t) = stack.pop() {
            order.push(t);
            stack.extend(topo[t as usize].children.iter().rev().map(|c| c.0));
        }
        let mut new_id = vec![0u32; topo.len()];
        for (i, &old) in order.iter().enumerate() {
            new_id[old as usize] = i as u32;
        }
        let mut new_topo: Vec<TopoNode> = order
            .iter()
            .map(|&old| {
                let mut t = topo[old as usize].clone();
                t.parent = t.parent.map(|p| TopoId(new_id[p.0 as usize]));
                for c in &mut t.children {
                    *c = TopoId(new_id[c.0 as usize]);
                }
                t
            })
            .collect();
        drop(topo);
        // Nodes sorted by the pre-order of their parent (stable: keeps insertion order).
        for n in &mut nodes {
            n.parent = TopoId(new_id[n.parent.0 as usize]);
        }
        nodes.sort_by_key(|n| n.parent.0);
        // Subtree sizes, bottom-up (children come after parents in pre-order).
        let count = new_topo.len();
        let mut own_nodes = vec![0u32; count];
        for n in &nodes {
            own_nodes[n.parent.0 as usize] += 1;
        }
        let mut subtree_nodes = own_nodes.clone();
        let mut subtree_domains: Vec<u32> = new_topo
            .iter()
            .map(|t| u32::from(t.kind == TopoKind::Domain))
            .collect();
        for i in (1..count).rev() {
            if let Some(p) = new_topo[i].parent {
                subtree_nodes[p.0 as usize] += subtree_nodes[i];
                subtree_domains[p.0 as usize] += subtree_domains[i];
            }
        }
        // In pre-order, a subtree starts where its root is: prefix sums give the ranges.
        let (mut node_cursor, mut domain_cursor) = (0u32, 0u32);
        let mut domains = Vec::new();
        for (i, t) in new_topo.iter_mut().enumerate() {
            t.nodes = node_cursor..node_cursor + subtree_nodes[i];
            t.domains = domain_cursor..domain_cursor + subtree_domains[i];
            node_cursor += own_nodes[i];
            if t.kind == TopoKind::Domain {
                domains.push(TopoId(i as u32));
                domain_cursor += 1;
            }
        }
        let fleet_tmp = Fleet {
            topo: new_topo,
            nodes,
            pools,
            domains,
            node_by_name: FxHashMap::default(),
        };
        // Domains must be homogeneous: the engine counts a domain's free nodes as one number.
        for &d in &fleet_tmp.domains {
            let range = fleet_tmp.topo_node(d).nodes.clone();
            let members = &fleet_tmp.nodes[range.start as usize..range.end as usize];
            if let Some(first) = members.first() {
                if let Some(n) = members.iter().find(|n| n.capacity != first.capacity) {
                    return Err(FleetError::BadDomain {
                        domain: fleet_tmp.topo_path(d),
                        reason: format!(
                            "node '{}' has resources {:?} but the domain's first node '{}' has {:?}; \
                             all nodes of one NVLink domain must be alike",
                            n.name, n.capacity, first.name, first.capacity
                        ),
                    });
                }
            }
        }
        let mut fleet = fleet_tmp;
        fleet.node_by_name = fleet
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), NodeId(i as u32)))
            .collect();
        Ok(fleet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::PricingKind;
    use crate::resources::GpuModel;

    fn pool(b: &mut FleetBuilder, name: &str, cloud: &str) -> PoolId {
        b.add_pool(CapacityPool {
            name: name.into(),
            cloud: cloud.into(),
            region: "r1".into(),
            instance_type: "t".into(),
            pricing: PricingKind::Committed,
            price_per_hour: 1.0,
        })
        .unwrap()
    }

    fn gpu4() -> Resources {
        Resources {
            gpu_model: Some(GpuModel::Gb200),
            gpus: 4,
            cpu_millis: 1000,
            memory_mib: 1024,
            disk_gib: 0,
        }
    }

    #[test]
    fn subtrees_are_contiguous_ranges() {
        let mut b = FleetBuilder::new();
        let p = pool(&mut b, "p", "aws");
        let q = pool(&mut b, "q", "gcp");
        // Interleave insertion across domains: the build must regroup them.
        for i in 0..6 {
            let loc = Location {
                zone: "z".into(),
                network: vec!["s0".into(), format!("b{}", i % 2)],
                domain: Some(format!("d{}", i % 3)),
            };
            b.add_node(
                &format!("n{i}"),
                if i < 3 { p } else { q },
                &loc,
                gpu4(),
                NodeState::Ready,
            )
            .unwrap();
        }
        let f = b.build().unwrap();
        for (i, t) in f.topo().iter().enumerate() {
            for n in t.nodes.clone() {
                let node = &f.nodes()[n as usize];
                assert!(
                    f.ancestors(node.parent).any(|a| a.0 as usize == i) || i == 0,
                    "node {} outside subtree {}",
                    node.name,
                    f.topo_path(TopoId(i as u32))
                );
            }
        }
        let total: u32 = f
            .domains()
            .iter()
            .map(|d| f.topo_node(*d).nodes.len() as u32)
            .sum();
        assert_eq!(total, 6);
        let d = f.find_topo("aws/r1/z/s0/b0/d0").unwrap();
        assert_eq!(f.topo_node(d).kind, TopoKind::Domain);
        assert_eq!(f.topo_path(d), "aws/r1/z/s0/b0/d0");
        assert!(f.node_by_name("n4").is_some());
    }

    #[test]
    fn rejects_mixed_domain_and_duplicates() {
        let mut b = FleetBuilder::new();
        let p = pool(&mut b, "p", "aws");
        let loc = Location {
            zone: "z".into(),
            network: vec![],
            domain: Some("d".into()),
        };
        b.add_node("a", p, &loc, gpu4(), NodeState::Ready).unwrap();
        assert_eq!(
            b.add_node("a", p, &loc, gpu4(), NodeState::Ready),
            Err(FleetError::DuplicateNode("a".into()))
        );
        let mut other = gpu4();
        other.gpus = 8;
        b.add_node("b", p, &loc, other, NodeState::Ready).unwrap();
        let e = b.build().unwrap_err();
        assert!(e.to_string().contains("NVLink domain 'aws/r1/z/d'"), "{e}");
    }

    #[test]
    fn standalone_gpu_host_gets_implicit_domain() {
        let mut b = FleetBuilder::new();
        let p = pool(&mut b, "p", "aws");
        let loc = Location {
            zone: "z".into(),
            network: vec!["n1".into()],
            domain: None,
        };
        b.add_node("h1", p, &loc, gpu4(), NodeState::Ready).unwrap();
        let f = b.build().unwrap();
        let d = f.domain_of(NodeId(0)).unwrap();
        assert!(f.topo_node(d).implicit);
        assert_eq!(f.summary().nvlink_domains, 1);
        assert_eq!(f.summary().multi_node_domains, 0);
    }
}
