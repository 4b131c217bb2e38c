//! What the state looks like now, counted for `/metrics`: nodes, GPUs and CPU by state and
//! place, whole free NVLink domains, jobs by state, class and tenant, sandboxes, replicas and
//! spend. One pass over the nodes and one over the live work; nothing is kept between scrapes.

use super::*;
use std::collections::HashMap;

/// Counts of one kind of capacity (GPUs, or CPU millicores) at one place.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CapacityCount {
    /// Free on nodes that take work.
    pub free: u64,
    /// Held by work.
    pub used: u64,
    /// Free, but on nodes that take no work (down, draining, cordoned).
    pub unavailable: u64,
}

/// Where capacity is: its pool (with its provider and model) and zone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Place {
    /// The provider.
    pub provider: String,
    /// The capacity pool.
    pub pool: String,
    /// The zone (or the region, where the fleet has no zones).
    pub zone: String,
    /// The GPU model; empty for CPU hosts.
    pub model: String,
}

/// Jobs of one tenant and class in one state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobGroup {
    /// pending or running.
    pub state: &'static str,
    /// The priority class.
    pub class: String,
    /// The tenant.
    pub tenant: String,
}

/// The state, counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gauges {
    /// Nodes by state (ready, cordoned, draining, down).
    pub nodes: BTreeMap<&'static str, u64>,
    /// GPUs by place.
    pub gpus: BTreeMap<Place, CapacityCount>,
    /// CPU millicores of CPU hosts by place.
    pub cpu_millis: BTreeMap<Place, CapacityCount>,
    /// NVLink domains whose every node is ready and wholly free.
    pub whole_free_domains: u64,
    /// Jobs pending and running, by class and tenant.
    pub jobs: BTreeMap<JobGroup, u64>,
    /// Sandboxes live now.
    pub sandboxes_live: u64,
    /// Sandboxes that ended, by how: succeeded, failed, oom_killed (of the failed), lost.
    pub sandboxes_ended: BTreeMap<&'static str, u64>,
    /// Each live service's replicas.
    pub replicas: Vec<ServiceGauge>,
    /// Spend so far in USD by provider and pricing (committed, on-demand, spot).
    pub spend_usd: BTreeMap<(String, String), f64>,
    /// Committed capacity paid for and not used, USD.
    pub idle_committed_usd: f64,
}

/// A live service's replica counts (and, filled in by the server, its gateways' load).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceGauge {
    /// The service's id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// Replicas wanted, running, pending and ready.
    pub counts: [u64; 4],
    /// Requests in flight, requests a second and p95 latency in seconds through its gateways
    /// (`None` while no gateway reports it).
    pub load: Option<(f64, f64, Option<f64>)>,
}

impl ControlPlane {
    /// The state counted at `now` (see the module documentation).
    pub fn gauges(&self, now: u64) -> Gauges {
        let mut g = Gauges::default();
        let engine = self.sched.engine();
        let fleet = engine.fleet();
        // Places by (pool, zone), named once each; counts by place index until the end (a
        // place's names are not copied per node).
        let mut places: HashMap<(u32, Option<u32>), usize> = HashMap::new();
        let mut named: Vec<Place> = Vec::new();
        let mut gpus: HashMap<usize, CapacityCount> = HashMap::new();
        let mut cpus: HashMap<usize, CapacityCount> = HashMap::new();
        for (i, n) in fleet.nodes().iter().enumerate() {
            let state = match n.state {
                model::NodeState::Ready => "ready",
                model::NodeState::Cordoned => "cordoned",
                model::NodeState::Draining => "draining",
                model::NodeState::Down => "down",
            };
            *g.nodes.entry(state).or_default() += 1;
            let zone = fleet.zone_of(n.parent);
            let place = *places
                .entry((n.pool.0, zone.map(|z| z.0)))
                .or_insert_with(|| {
                    let pool = fleet.pool(n.pool);
                    named.push(Place {
                        provider: pool.cloud.clone(),
                        pool: pool.name.clone(),
                        zone: zone.map_or_else(
                            || pool.region.clone(),
                            |z| fleet.topo_node(z).name.to_string(),
                        ),
                        model: n
                            .capacity
                            .gpu_model
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                    });
                    named.len() - 1
                });
            let (free_mask, free_cpu, _) = engine.node_free(model::NodeId(i as u32));
            let open = n.state.schedulable();
            let count = |total: u64, free: u64, c: &mut CapacityCount| {
                c.used += total.saturating_sub(free);
                match open {
                    true => c.free += free,
                    false => c.unavailable += free,
                }
            };
            if n.capacity.gpus > 0 {
                let c = gpus.entry(place).or_default();
                count(
                    u64::from(n.capacity.gpus),
                    u64::from(free_mask.count_ones()),
                    c,
                );
            } else {
                let c = cpus.entry(place).or_default();
                count(u64::from(n.capacity.cpu_millis), u64::from(free_cpu), c);
            }
        }
        g.gpus = gpus
            .into_iter()
            .map(|(i, c)| (named[i].clone(), c))
            .collect();
        g.cpu_millis = cpus
            .into_iter()
            .map(|(i, c)| (named[i].clone(), c))
            .collect();
        g.whole_free_domains = engine.whole_free_domains();
        for (state, ids) in [
            ("pending", self.sched.pending_jobs()),
            ("running", self.sched.running_jobs()),
        ] {
            // Counted by numbers first, named once per group.
            let mut counts: HashMap<(model::PriorityClass, TenantId), u64> = HashMap::new();
            for id in ids {
                if let Some(job) = self.sched.job(id) {
                    *counts
                        .entry((job.spec.priority, job.spec.tenant))
                        .or_default() += 1;
                }
            }
            for ((class, tenant), n) in counts {
                let group = JobGroup {
                    state,
                    class: class.to_string(),
                    tenant: self.tenant_name(tenant).to_string(),
                };
                *g.jobs.entry(group).or_default() += n;
            }
        }
        for (id, meta) in &self.batches {
            for (how, n) in [
                ("succeeded", meta.succeeded),
                ("failed", meta.failed),
                ("oom_killed", meta.oom_killed),
                ("lost", meta.lost),
            ] {
                *g.sandboxes_ended.entry(how).or_default() += u64::from(n);
            }
            if meta.ended_at.is_none() {
                g.sandboxes_live += self.batch_view(*id).map_or(0, |v| u64::from(v.live));
            }
        }
        for id in self.services.keys() {
            if let Some(v) = self.service_view(*id).filter(|v| v.state != "deleted") {
                g.replicas.push(ServiceGauge {
                    id: id.0,
                    counts: [v.desired, v.running, v.pending, v.ready].map(u64::from),
                    name: v.name,
                    tenant: v.tenant,
                    load: None,
                });
            }
        }
        let spend = self.sched.spend(now);
        for line in &spend.lines {
            let pricing = line.pricing.to_string();
            *g.spend_usd
                .entry((line.provider.clone(), pricing))
                .or_default() += line.usd;
        }
        g.idle_committed_usd = spend.idle_committed_usd();
        g
    }
}

impl ControlPlane {
    /// The cell's capacity summary: one pass over the nodes (nothing per job), so that a
    /// global queue or a dashboard may ask often.
    pub fn cell_summary(&self, cell: &str) -> crate::api::CellSummary {
        let engine = self.sched.engine();
        let fleet = engine.fleet();
        let mut nodes = [0u64; 4];
        let mut gpus: BTreeMap<model::GpuModel, CapacityCount> = BTreeMap::new();
        let mut cpu = CapacityCount::default();
        for (i, n) in fleet.nodes().iter().enumerate() {
            nodes[match n.state {
                model::NodeState::Ready => 0,
                model::NodeState::Cordoned => 1,
                model::NodeState::Draining => 2,
                model::NodeState::Down => 3,
            }] += 1;
            let (free_mask, free_cpu, _) = engine.node_free(model::NodeId(i as u32));
            let (total, free, c) = match n.capacity.gpu_model {
                Some(m) if n.capacity.gpus > 0 => (
                    u64::from(n.capacity.gpus),
                    u64::from(free_mask.count_ones()),
                    gpus.entry(m).or_default(),
                ),
                _ => (
                    u64::from(n.capacity.cpu_millis),
                    u64::from(free_cpu),
                    &mut cpu,
                ),
            };
            c.used += total.saturating_sub(free);
            match n.state.schedulable() {
                true => c.free += free,
                false => c.unavailable += free,
            }
        }
        let summary = |c: &CapacityCount| crate::api::CapacitySummary {
            free: c.free,
            used: c.used,
            unavailable: c.unavailable,
        };
        crate::api::CellSummary {
            cell: cell.to_string(),
            nodes: ["ready", "cordoned", "draining", "down"]
                .into_iter()
                .zip(nodes)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
            gpus: gpus
                .iter()
                .map(|(m, c)| (m.to_string(), summary(c)))
                .collect(),
            cpu_millis: summary(&cpu),
            jobs_pending: self.sched.pending_count() as u64,
            jobs_running: self.sched.running_count() as u64,
        }
    }
}
