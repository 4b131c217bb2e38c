//! The fleet as the dashboard draws it: every NVLink domain as a cell (GPUs used, trays down,
//! draining, cordoned) grouped under its network node, CPU hosts summed per zone, in one pass
//! over the nodes; and one domain's trays with the work on them, named only to whom may see it.

use super::*;
use crate::api::{
    CpuZone, DomainCell, DomainDetail, DomainGroup, FleetOverview, FleetTotals, TrayView,
};
use model::TopoKind;

/// Most trays one drill-down shows (a domain has 18; a larger subtree is refused).
pub const MAX_DETAIL_NODES: usize = 512;

impl ControlPlane {
    /// The topology path of `id` (`aws/us-east-1/use1-az1/spine0`).
    fn topo_path(&self, id: TopoId) -> String {
        let fleet = self.sched.engine().fleet();
        let mut parts = Vec::new();
        let mut cur = Some(id);
        while let Some(t) = cur {
            let node = fleet.topo_node(t);
            if node.parent.is_some() {
                parts.push(&*node.name);
            }
            cur = node.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// Every domain's cell, grouped; CPU hosts per zone; the totals.
    pub fn fleet_overview(&self) -> FleetOverview {
        let engine = self.sched.engine();
        let fleet = engine.fleet();
        let mut totals = FleetTotals::default();
        let mut groups: Vec<DomainGroup> = Vec::new();
        let mut group_of: HashMap<TopoId, usize> = HashMap::new();
        for &d in fleet.domains() {
            let topo = fleet.topo_node(d);
            let mut cell = DomainCell {
                name: topo.name.to_string(),
                gpus: 0,
                used_gpus: 0,
                nodes: 0,
                down: 0,
                draining: 0,
                cordoned: 0,
            };
            for n in topo.nodes.clone() {
                let node = fleet.node(NodeId(n));
                let (free, _, _) = engine.node_free(NodeId(n));
                let gpus = u32::from(node.capacity.gpus);
                cell.nodes += 1;
                cell.gpus += gpus;
                cell.used_gpus += gpus.saturating_sub(free.count_ones());
                match node.state {
                    NodeState::Down => cell.down += 1,
                    NodeState::Draining => cell.draining += 1,
                    NodeState::Cordoned => cell.cordoned += 1,
                    NodeState::Ready => {}
                }
            }
            totals.domains += 1;
            totals.nodes += u64::from(cell.nodes);
            totals.gpus += u64::from(cell.gpus);
            totals.used_gpus += u64::from(cell.used_gpus);
            totals.down += u64::from(cell.down);
            totals.draining += u64::from(cell.draining + cell.cordoned);
            if cell.used_gpus == 0 && cell.down + cell.draining + cell.cordoned == 0 {
                totals.free_domains += 1;
            }
            let parent = topo.parent.unwrap_or(TopoId(0));
            let g = *group_of.entry(parent).or_insert_with(|| {
                groups.push(DomainGroup {
                    path: self.topo_path(parent),
                    domains: Vec::new(),
                });
                groups.len() - 1
            });
            groups[g].domains.push(cell);
        }
        // CPU hosts: nodes without GPUs outside any domain, summed per zone.
        let mut zones: Vec<CpuZone> = Vec::new();
        let mut zone_of: HashMap<TopoId, usize> = HashMap::new();
        for (i, node) in fleet.nodes().iter().enumerate() {
            if node.capacity.gpus > 0 || fleet.topo_node(node.parent).kind == TopoKind::Domain {
                continue;
            }
            let mut zone = node.parent;
            while let Some(p) = fleet.topo_node(zone).parent {
                if fleet.topo_node(zone).kind == TopoKind::Zone {
                    break;
                }
                zone = p;
            }
            let z = *zone_of.entry(zone).or_insert_with(|| {
                zones.push(CpuZone {
                    path: self.topo_path(zone),
                    hosts: 0,
                    down: 0,
                    draining: 0,
                    cpu_millis: 0,
                    used_cpu_millis: 0,
                });
                zones.len() - 1
            });
            let (_, free_cpu, _) = engine.node_free(NodeId(i as u32));
            let cpu = node.capacity.cpu_millis;
            let zone = &mut zones[z];
            zone.hosts += 1;
            zone.cpu_millis += u64::from(cpu);
            zone.used_cpu_millis += u64::from(cpu.saturating_sub(free_cpu));
            match node.state {
                NodeState::Down => zone.down += 1,
                NodeState::Draining | NodeState::Cordoned => zone.draining += 1,
                NodeState::Ready => {}
            }
            totals.nodes += 1;
            match node.state {
                NodeState::Down => totals.down += 1,
                NodeState::Draining | NodeState::Cordoned => totals.draining += 1,
                NodeState::Ready => {}
            }
        }
        FleetOverview {
            groups,
            cpu_zones: zones,
            totals,
        }
    }

    /// The trays under topology path `path` (a domain, usually) and the work on each, as
    /// `viewer` may see it (`None`: an operator). `None` if no such path, or it holds more
    /// than [`MAX_DETAIL_NODES`] nodes.
    pub fn domain_detail(&self, path: &str, viewer: Option<&str>) -> Option<DomainDetail> {
        let engine = self.sched.engine();
        let fleet = engine.fleet();
        let topo = fleet.topo_node(fleet.find_topo(path)?);
        if topo.nodes.len() > MAX_DETAIL_NODES || path.trim_matches('/').is_empty() {
            return None;
        }
        let trays = topo
            .nodes
            .clone()
            .map(|n| {
                let node = fleet.node(NodeId(n));
                let (free, _, _) = engine.node_free(NodeId(n));
                let work = engine
                    .workloads_on(NodeId(n))
                    .into_iter()
                    .map(|w| self.work_label(w, viewer))
                    .collect();
                TrayView {
                    name: node.name.to_string(),
                    state: format!("{:?}", node.state).to_lowercase(),
                    gpus: u32::from(node.capacity.gpus),
                    free_gpus: free.count_ones(),
                    work,
                }
            })
            .collect();
        Some(DomainDetail {
            path: self.topo_path(fleet.find_topo(path)?),
            trays,
        })
    }

    /// A workload as a reader sees it: `job 12 train (vision)`, or `other tenant`.
    fn work_label(&self, id: WorkloadId, viewer: Option<&str>) -> String {
        let (what, name, tenant) = if let Some((service, _)) = id.as_replica() {
            let tenant = self.service_tenant(ServiceId(service)).unwrap_or("");
            ("replica", id.to_string(), tenant)
        } else if let Some(m) = self.jobs.get(&JobId(id.0)) {
            (
                "job",
                format!("{} {}", id.0, m.name),
                self.tenant_name(m.tenant),
            )
        } else if let Some(m) = self.batches.get(&BatchId(id.0)) {
            (
                "sandboxes",
                format!("{} {}", id.0, m.name),
                self.tenant_name(m.tenant),
            )
        } else {
            ("work", id.0.to_string(), "")
        };
        match viewer {
            Some(v) if v != tenant => "other tenant".into(),
            _ => format!("{what} {name} ({tenant})"),
        }
    }
}
