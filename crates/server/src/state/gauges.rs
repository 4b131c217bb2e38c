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
    /// Each live service's desired, running and pending replicas, by service name and tenant.
    pub replicas: Vec<(String, String, [u64; 3])>,
    /// Spend so far in USD by provider and pricing (committed, on-demand, spot).
    pub spend_usd: BTreeMap<(String, String), f64>,
    /// Committed capacity paid for and not used, USD.
    pub idle_committed_usd: f64,
}

impl ControlPlane {
    /// The state counted at `now` (see the module documentation).
    pub fn gauges(&self, now: u64) -> Gauges {
        let mut g = Gauges::default();
        let engine = self.sched.engine();
        let fleet = engine.fleet();
        // Places by (pool, zone), named once each.
        let mut places: HashMap<(u32, Option<u32>), Place> = HashMap::new();
        for (i, n) in fleet.nodes().iter().enumerate() {
            let state = match n.state {
                model::NodeState::Ready => "ready",
                model::NodeState::Cordoned => "cordoned",
                model::NodeState::Draining => "draining",
                model::NodeState::Down => "down",
            };
            *g.nodes.entry(state).or_default() += 1;
            let zone = fleet.zone_of(n.parent);
            let place = places
                .entry((n.pool.0, zone.map(|z| z.0)))
                .or_insert_with(|| {
                    let pool = fleet.pool(n.pool);
                    Place {
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
                    }
                })
                .clone();
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
                let c = g.gpus.entry(place).or_default();
                count(
                    u64::from(n.capacity.gpus),
                    u64::from(free_mask.count_ones()),
                    c,
                );
            } else {
                let c = g.cpu_millis.entry(place).or_default();
                count(u64::from(n.capacity.cpu_millis), u64::from(free_cpu), c);
            }
        }
        g.whole_free_domains = engine.whole_free_domains();
        for (state, ids) in [
            ("pending", self.sched.pending_jobs()),
            ("running", self.sched.running_jobs()),
        ] {
            for id in ids {
                let Some(job) = self.sched.job(id) else {
                    continue;
                };
                let group = JobGroup {
                    state,
                    class: job.spec.priority.to_string(),
                    tenant: self.tenant_name(job.spec.tenant).to_string(),
                };
                *g.jobs.entry(group).or_default() += 1;
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
                let counts = [v.desired, v.running, v.pending].map(u64::from);
                g.replicas.push((v.name, v.tenant, counts));
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
    /// The cell's capacity summary, from the gauges (one pass over the nodes).
    pub fn cell_summary(&self, cell: &str, now: u64) -> crate::api::CellSummary {
        let g = self.gauges(now);
        let add = |sum: &mut crate::api::CapacitySummary, c: &CapacityCount| {
            sum.free += c.free;
            sum.used += c.used;
            sum.unavailable += c.unavailable;
        };
        let mut out = crate::api::CellSummary {
            cell: cell.to_string(),
            nodes: g.nodes.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        };
        for (place, c) in &g.gpus {
            add(out.gpus.entry(place.model.clone()).or_default(), c);
        }
        for c in g.cpu_millis.values() {
            add(&mut out.cpu_millis, c);
        }
        for (group, n) in &g.jobs {
            match group.state {
                "pending" => out.jobs_pending += n,
                _ => out.jobs_running += n,
            }
        }
        out
    }
}
