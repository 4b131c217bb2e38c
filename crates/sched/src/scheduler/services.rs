//! Inference services on the queue: a service is a set of identical replica jobs, kept at a
//! desired count between its bounds, placed under its spread rule, replaced when they fail
//! (they are requeued like any job, and placed again under the rule), and preempting lower
//! classes like any job of their priority.

use super::{JobState, SchedError, Scheduler, SpreadFilter, NO_LIMIT};
use crate::engine::{Allocation, Time};
use model::{JobSpec, PlacementRule, ServiceSpec, SpreadLevel, TopoId, TopoKind, WorkloadId};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most services one queue holds (ids are `0 .. MAX_SERVICES`).
pub const MAX_SERVICES: u64 = 1 << 20;

/// A service and its replicas.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ServiceState {
    pub(crate) spec: ServiceSpec,
    pub(crate) desired: u32,
    pub(crate) replicas: Vec<WorkloadId>,
    pub(crate) next: u64,
    /// Replicas kept above `desired` while a rolling update brings up new ones (0 otherwise).
    #[serde(default)]
    pub(crate) surge: u32,
    /// Running replicas per provider (cloud topology node): kept as replicas start and stop,
    /// so that the provider-span rule costs no walk over the replicas.
    #[serde(default)]
    clouds: BTreeMap<TopoId, u32>,
}

impl ServiceState {
    /// A new service with no replicas yet (wanting its minimum).
    pub(crate) fn new(spec: ServiceSpec) -> ServiceState {
        ServiceState {
            desired: spec.min_replicas,
            spec,
            replicas: Vec::new(),
            next: 0,
            surge: 0,
            clouds: BTreeMap::new(),
        }
    }

    /// Sets the replica bookkeeping a journal recorded (the per-provider counts follow the
    /// replicas as they start and stop).
    pub(crate) fn set_replicas(
        &mut self,
        desired: u32,
        surge: u32,
        replicas: Vec<WorkloadId>,
        next: u64,
    ) {
        self.desired = desired;
        self.surge = surge;
        self.replicas = replicas;
        self.next = next;
    }

    /// The job each of its replicas is.
    pub(crate) fn replica_job(&self) -> JobSpec {
        replica_job(&self.spec)
    }
}

/// The job a replica of a service with `spec` is: its shape and rule, no time limit.
fn replica_job(spec: &ServiceSpec) -> JobSpec {
    JobSpec {
        tenant: spec.tenant,
        priority: spec.priority,
        gang: spec.replica.clone(),
        time_limit: NO_LIMIT,
        placement: spec.placement.clone(),
    }
}

/// What a scaling did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Scaled {
    /// The desired count set (the ask clamped to the service's bounds).
    pub desired: u32,
    /// Running replicas stopped by a scale-down, newest first.
    pub stopped: Vec<WorkloadId>,
}

/// Replica counts of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// Replicas wanted.
    pub desired: u32,
    /// Replicas running.
    pub running: u32,
    /// Replicas waiting to be placed.
    pub pending: u32,
    /// Replicas kept above `desired` by a rolling update.
    pub surge: u32,
}

impl Scheduler {
    /// Creates a service at its minimum replica count.
    pub fn create_service(
        &mut self,
        id: u64,
        spec: ServiceSpec,
        now: Time,
    ) -> Result<(), SchedError> {
        spec.validate().map_err(|e| SchedError::Invalid {
            field: e.field,
            reason: e.reason,
        })?;
        if id >= MAX_SERVICES {
            return Err(SchedError::Invalid {
                field: "service",
                reason: format!("service ids must be below {MAX_SERVICES}"),
            });
        }
        if spec.tenant.0 as usize >= self.tenants.len() {
            return Err(SchedError::Invalid {
                field: "tenant",
                reason: format!("no tenant with id {}", spec.tenant.0),
            });
        }
        if self.services.contains_key(&id) {
            return Err(SchedError::Invalid {
                field: "service",
                reason: format!("service {id} already exists"),
            });
        }
        self.services.insert(id, ServiceState::new(spec));
        self.reconcile_service(id, now);
        Ok(())
    }

    /// Sets a service's desired replica count, clamped to its bounds. Says the count set and
    /// the running replicas it stopped (for the caller to stop their processes).
    pub fn scale_service(
        &mut self,
        id: u64,
        desired: u32,
        now: Time,
    ) -> Result<Scaled, SchedError> {
        let s = self.services.get_mut(&id).ok_or(SchedError::Invalid {
            field: "service",
            reason: format!("no service {id}"),
        })?;
        s.desired = desired.clamp(s.spec.min_replicas, s.spec.max_replicas);
        let set = s.desired;
        let stopped = self.reconcile_service(id, now);
        self.touch_service(id);
        Ok(Scaled {
            desired: set,
            stopped,
        })
    }

    /// A rolling update's step: stops the named replicas of a service (old ones; a name
    /// whose replica already ended is only forgotten), sets the surge, and reconciles once, so
    /// new replicas take the retired ones' places up to the desired count and its surge. Says
    /// the running replicas it stopped. A name that is not one of the service's replicas is
    /// refused before anything changes.
    pub fn step_service(
        &mut self,
        id: u64,
        surge: u32,
        retire: &[WorkloadId],
        now: Time,
    ) -> Result<Vec<WorkloadId>, SchedError> {
        let s = self.services.get(&id).ok_or(SchedError::Invalid {
            field: "service",
            reason: format!("no service {id}"),
        })?;
        if let Some(r) = retire.iter().find(|r| !s.replicas.contains(r)) {
            return Err(SchedError::Invalid {
                field: "retire",
                reason: format!("{r} is not a replica of service {id}"),
            });
        }
        let mut stopped = Vec::new();
        for r in retire {
            let was_running = self.running.contains(r);
            if self.cancel(*r, now).is_ok() && was_running {
                stopped.push(*r);
            }
        }
        if let Some(s) = self.services.get_mut(&id) {
            s.replicas.retain(|r| !retire.contains(r));
            s.surge = surge;
        }
        stopped.extend(self.reconcile_service(id, now));
        self.touch_service(id);
        Ok(stopped)
    }

    /// Removes a service and all its replicas; returns the running replicas it stopped.
    pub fn delete_service(&mut self, id: u64, now: Time) -> Result<Vec<WorkloadId>, SchedError> {
        let s = self.services.remove(&id).ok_or(SchedError::Invalid {
            field: "service",
            reason: format!("no service {id}"),
        })?;
        self.touch_service(id);
        let mut stopped = Vec::new();
        for r in s.replicas {
            let was_running = self.running.contains(&r);
            if self.cancel(r, now).is_ok() && was_running {
                stopped.push(r);
            }
        }
        Ok(stopped)
    }

    /// Replica counts of a service.
    pub fn service_status(&self, id: u64) -> Option<ServiceStatus> {
        let s = self.services.get(&id)?;
        let (mut running, mut pending) = (0, 0);
        for r in &s.replicas {
            match self.jobs.get(r).map(|j| &j.state) {
                Some(JobState::Pending) => pending += 1,
                Some(JobState::Running { .. } | JobState::Preempting { .. }) => running += 1,
                _ => {}
            }
        }
        Some(ServiceStatus {
            desired: s.desired,
            running,
            pending,
            surge: s.surge,
        })
    }

    /// Replica jobs of a service that are alive (pending or running), oldest first.
    pub fn service_replicas(&self, id: u64) -> Vec<WorkloadId> {
        self.services
            .get(&id)
            .map(|s| s.replicas.clone())
            .unwrap_or_default()
    }

    /// Adds or cancels replicas until the live count is the desired count. Scaling down
    /// cancels pending replicas first, then the newest running ones; returns the running ones
    /// it stopped.
    fn reconcile_service(&mut self, id: u64, now: Time) -> Vec<WorkloadId> {
        self.touch_service(id);
        let mut stopped = Vec::new();
        let Some(s) = self.services.get(&id) else {
            return stopped;
        };
        let alive = |st: Option<&JobState>| {
            matches!(
                st,
                Some(JobState::Pending | JobState::Running { .. } | JobState::Preempting { .. })
            )
        };
        let live: Vec<WorkloadId> = s
            .replicas
            .iter()
            .copied()
            .filter(|r| alive(self.jobs.get(r).map(|j| &j.state)))
            .collect();
        let desired = (s.desired + s.surge) as usize;
        let spec = s.spec.clone();
        let mut next = s.next;
        let mut keep = live.clone();
        if live.len() < desired {
            for _ in live.len()..desired {
                let rid = WorkloadId::replica(id, next);
                next += 1;
                let job = replica_job(&spec);
                if self.enqueue(rid, job, now, Some(id)).is_ok() {
                    keep.push(rid);
                }
            }
        } else if live.len() > desired {
            let mut extra = live.len() - desired;
            let pending: Vec<WorkloadId> = live
                .iter()
                .rev()
                .copied()
                .filter(|r| {
                    self.jobs
                        .get(r)
                        .is_some_and(|j| j.state == JobState::Pending)
                })
                .collect();
            let running: Vec<WorkloadId> = live
                .iter()
                .rev()
                .copied()
                .filter(|r| {
                    self.jobs
                        .get(r)
                        .is_some_and(|j| j.state != JobState::Pending)
                })
                .collect();
            let pending_count = pending.len();
            let mut cancelled = rustc_hash::FxHashSet::default();
            for (i, r) in pending.into_iter().chain(running).enumerate() {
                if extra == 0 {
                    break;
                }
                if self.cancel(r, now).is_ok() {
                    cancelled.insert(r);
                    if i >= pending_count {
                        stopped.push(r);
                    }
                    extra -= 1;
                }
            }
            keep.retain(|k| !cancelled.contains(k));
        }
        if let Some(s) = self.services.get_mut(&id) {
            s.replicas = keep;
            s.next = next;
        }
        stopped
    }

    /// Checks every service's spread rule and replica bookkeeping; the first violation.
    pub(crate) fn check_services(&self) -> Result<(), String> {
        let fleet = self.engine.fleet();
        for (sid, s) in &self.services {
            for r in &s.replicas {
                // Ended replicas are forgotten by the queue and dropped at the next scaling.
                let ended = !self.jobs.contains_key(r) && self.ended.contains_key(r);
                if !ended && self.jobs.get(r).and_then(|j| j.service) != Some(*sid) {
                    return Err(format!("service {sid}: replica {r} is not its job"));
                }
            }
            let clouds = self.counted_clouds(s);
            if clouds != s.clouds {
                return Err(format!(
                    "service {sid}: replicas per provider {:?}, counted {:?}",
                    clouds, s.clouds
                ));
            }
            let Some(rule) = s.spec.spread else { continue };
            let kind = level_kind(rule.level);
            let mut count: FxHashMap<TopoId, u32> = FxHashMap::default();
            for r in &s.replicas {
                if let Some(Allocation::Gang { slots, .. }) = self.engine.allocation(*r) {
                    let Some(d) = slots.first().and_then(|x| fleet.domain_of(x.node)) else {
                        continue;
                    };
                    if let Some(t) = fleet
                        .ancestors(d)
                        .find(|a| fleet.topo_node(*a).kind == kind)
                    {
                        let c = count.entry(t).or_default();
                        *c += 1;
                        if *c > rule.max_per {
                            return Err(format!(
                                "service {sid}: more than {} replicas in {}",
                                rule.max_per,
                                fleet.topo_path(t)
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The provider (cloud topology node) a node belongs to.
    pub(crate) fn cloud_of(&self, node: model::NodeId) -> Option<TopoId> {
        let fleet = self.engine.fleet();
        let d = fleet.domain_of(node)?;
        fleet
            .ancestors(d)
            .find(|a| fleet.topo_node(*a).kind == TopoKind::Cloud)
    }

    /// A service's running replicas per provider, counted from their placements.
    fn counted_clouds(&self, s: &ServiceState) -> BTreeMap<TopoId, u32> {
        let mut clouds: BTreeMap<TopoId, u32> = BTreeMap::new();
        for r in &s.replicas {
            if let Some(Allocation::Gang { slots, .. }) = self.engine.allocation(*r) {
                if let Some(c) = slots.first().and_then(|x| self.cloud_of(x.node)) {
                    *clouds.entry(c).or_default() += 1;
                }
            }
        }
        clouds
    }

    /// Counts service `sid`'s replicas per provider again from their placements (after a
    /// restore: the recorded replicas are the truth, the running count follows them).
    pub(crate) fn recount_clouds(&mut self, sid: u64) {
        let Some(clouds) = self.services.get(&sid).map(|s| self.counted_clouds(s)) else {
            return;
        };
        if let Some(s) = self.services.get_mut(&sid) {
            s.clouds = clouds;
        }
    }

    /// Counts a replica of service `sid` starting (`+1`) or stopping (`-1`) on `node`'s
    /// provider.
    pub(crate) fn count_replica(&mut self, sid: u64, node: model::NodeId, starting: bool) {
        let Some(c) = self.cloud_of(node) else { return };
        let Some(s) = self.services.get_mut(&sid) else {
            return;
        };
        let n = s.clouds.entry(c).or_default();
        if starting {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.clouds.remove(&c);
            }
        }
    }

    /// Where a job may go: its placement rule (providers, regions, spot), and for a replica
    /// of a service with a spread rule, the subtrees that already hold enough replicas.
    pub(crate) fn spread_filter(&self, id: WorkloadId) -> SpreadFilter {
        let Some(job) = self.jobs.get(&id) else {
            return SpreadFilter::default();
        };
        let excluded = self.excluded_domains(&job.spec.placement);
        let base = SpreadFilter {
            rule: if excluded.is_empty() {
                String::new()
            } else if job.spec.placement.pins() {
                format!(
                    "placement rule ({}) leaves no room",
                    job.spec.placement.describe()
                )
            } else {
                "only spot capacity has room, and the job is not preemptible (placement.preemptible lets it use spot)".into()
            },
            excluded,
            ..SpreadFilter::default()
        };
        let Some(sid) = job.service else {
            return base;
        };
        let Some(s) = self.services.get(&sid) else {
            return base;
        };
        let fleet = self.engine.fleet();
        // Where the service's other replicas run: their ancestor of `kind`.
        let holders = |kind: TopoKind| -> FxHashMap<TopoId, u32> {
            let mut count: FxHashMap<TopoId, u32> = FxHashMap::default();
            for r in s.replicas.iter().filter(|r| **r != id) {
                if let Some(Allocation::Gang { slots, .. }) = self.engine.allocation(*r) {
                    let Some(first) = slots.first() else { continue };
                    let Some(domain) = fleet.domain_of(first.node) else {
                        continue;
                    };
                    if let Some(t) = fleet
                        .ancestors(domain)
                        .find(|a| fleet.topo_node(*a).kind == kind)
                    {
                        *count.entry(t).or_default() += 1;
                    }
                }
            }
            count
        };
        let range_of = |t: TopoId| {
            let d = &fleet.topo_node(t).domains;
            (!d.is_empty()).then(|| {
                (
                    fleet.domains()[d.start as usize],
                    fleet.domains()[d.end as usize - 1],
                )
            })
        };
        let mut blocked: Vec<(TopoId, TopoId)> = Vec::new();
        let mut explain: Vec<String> = Vec::new();
        if let Some(rule) = s.spec.spread {
            let full: Vec<(TopoId, TopoId)> = holders(level_kind(rule.level))
                .into_iter()
                .filter(|(_, c)| *c >= rule.max_per)
                .filter_map(|(t, _)| range_of(t))
                .collect();
            explain.push(format!(
                "spread rule: at most {} replicas of service {sid} per {}; {} {}s with room already hold that many",
                rule.max_per,
                rule.level,
                full.len(),
                rule.level
            ));
            blocked.extend(full);
        }
        let want = s.spec.min_providers;
        if want > 1 {
            // Until the replicas span `want` providers, a new one goes to another provider.
            let mut used = s.clouds.clone();
            if let Some(Allocation::Gang { slots, .. }) = self.engine.allocation(id) {
                // A running replica asking again (a preemption search) does not count itself.
                if let Some(c) = slots.first().and_then(|x| self.cloud_of(x.node)) {
                    if let Some(n) = used.get_mut(&c) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
            used.retain(|_, n| *n > 0);
            if (used.len() as u32) < want {
                let mut names: Vec<&str> =
                    used.keys().map(|t| &*fleet.topo_node(*t).name).collect();
                names.sort_unstable();
                explain.push(format!(
                    "spread rule: service {sid} spans at least {want} providers; its replicas are on {} only, and no other provider has room",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                ));
                blocked.extend(used.keys().filter_map(|t| range_of(*t)));
            }
        }
        if explain.is_empty() {
            return base;
        }
        blocked.sort_unstable();
        SpreadFilter {
            excluded: base.excluded,
            rule: base.rule,
            explain: explain.join("; "),
            blocked,
        }
    }
}

impl Scheduler {
    /// Remembers the domains a placement rule keeps a job off (a rule is worked out once per
    /// distinct rule, not per placement attempt).
    pub(crate) fn prepare_rule(&mut self, rule: &PlacementRule) {
        if !self.rule_ranges.contains_key(rule) {
            let ranges = excluded_ranges(self.engine.fleet(), rule);
            self.rule_ranges.insert(rule.clone(), ranges);
        }
    }

    /// The domains `rule` keeps a job off, as sorted disjoint ranges of topology ids.
    pub(crate) fn excluded_domains(&self, rule: &PlacementRule) -> Arc<[(TopoId, TopoId)]> {
        match self.rule_ranges.get(rule) {
            Some(r) => r.clone(),
            // After a snapshot is loaded the memo is empty: work it out (not kept).
            None => excluded_ranges(self.engine.fleet(), rule),
        }
    }
}

/// Domains whose pool `rule` refuses, merged into runs of consecutive domains.
fn excluded_ranges(fleet: &model::Fleet, rule: &PlacementRule) -> Arc<[(TopoId, TopoId)]> {
    let ok: Vec<bool> = fleet.pools().iter().map(|p| rule.allows(p)).collect();
    if ok.iter().all(|x| *x) {
        return Arc::from(Vec::new());
    }
    let mut out: Vec<(TopoId, TopoId)> = Vec::new();
    let mut last_excluded = false;
    for &d in fleet.domains() {
        let first = fleet.topo_node(d).nodes.start;
        let pool = fleet.node(model::NodeId(first)).pool;
        let excluded = !ok[pool.0 as usize];
        if excluded {
            match out.last_mut() {
                Some(r) if last_excluded => r.1 = d,
                _ => out.push((d, d)),
            }
        }
        last_excluded = excluded;
    }
    Arc::from(out)
}

fn level_kind(level: SpreadLevel) -> TopoKind {
    match level {
        SpreadLevel::Domain => TopoKind::Domain,
        SpreadLevel::Zone => TopoKind::Zone,
        SpreadLevel::Region => TopoKind::Region,
        SpreadLevel::Cloud => TopoKind::Cloud,
    }
}
