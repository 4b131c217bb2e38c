//! Restoring recorded outcomes: the queue is brought to the state a journal record (or a
//! snapshot) says, without deciding anything, releases first, then placements through the
//! engine's `reinstate`. Records come from disk: a damaged one is refused by name, never
//! trusted.

use super::outcome::restore_error;
use super::sandboxes::Batch;
use super::services::ServiceState;
use super::*;
use model::Resources;

impl Scheduler {
    /// Brings every workload an outcome names to the state it records, without deciding
    /// anything: releases first, then placements, so the engine is never over-committed. On
    /// error the queue may be half-restored; the caller stops (the journal does not fit).
    pub fn restore(&mut self, o: &Outcome, now: Time) -> Result<(), RestoreError> {
        // Releases: what runs elsewhere or no longer runs, holds that change, the reservation.
        for rec in &o.jobs {
            let id = rec.id();
            let Some(j) = self.jobs.get(&id) else {
                continue;
            };
            let keep_gang = match (rec, self.engine.allocation(id)) {
                (JobRecord::Live(l), Some(a)) => {
                    l.gang.as_ref().is_some_and(|g| g.same_as(a)) && j.running_since().is_some()
                }
                _ => false,
            };
            let pending = j.state == JobState::Pending;
            let (seq, hold) = (j.seq, j.hold.clone());
            self.index_end(id, false);
            if self.running.contains(&id) && !keep_gang {
                self.release_gang(id, now);
            }
            let stays_pending = matches!(rec, JobRecord::Live(l) if l.state == JobState::Pending);
            if pending && !stays_pending {
                self.queue_remove(seq, id);
            }
            let new_hold = match rec {
                JobRecord::Live(l) => l.hold.as_slice(),
                JobRecord::Ended { .. } => &[],
            };
            if hold.as_slice() != new_hold {
                self.engine.unhold(&hold);
                self.holding.remove(&id);
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.hold.clear();
                }
            }
        }
        for rec in &o.batches {
            let id = rec.id();
            let keep = match (rec, self.engine.allocation(id)) {
                (BatchRecord::Live(b), Some(a)) => b.same_as(a),
                _ => false,
            };
            if !keep && self.engine.allocation(id).is_some() {
                let _ = self.engine.release(id);
            }
        }
        if o.reservation.is_some() {
            if let Some(r) = self.reservation.take() {
                self.engine.unhold(&r.nodes);
            }
        }
        // Services first: new replicas take their shape from their service.
        for rec in &o.services {
            self.restore_service(rec, now);
        }
        // The services whose running count a record may move: its own, and those of the jobs
        // it touches, before and after (a damaged record may move a replica between them).
        let mut counted: std::collections::BTreeSet<u64> = o
            .services
            .iter()
            .filter_map(|r| match r {
                ServiceRecord::Live { id, .. } => Some(*id),
                ServiceRecord::Deleted { .. } => None,
            })
            .collect();
        let service_of = |s: &Self, id: WorkloadId| s.jobs.get(&id).and_then(|j| j.service);
        for rec in &o.jobs {
            let id = match rec {
                JobRecord::Live(l) => l.id,
                JobRecord::Ended { id, .. } => *id,
            };
            counted.extend(service_of(self, id));
            self.restore_job(rec, now)?;
            counted.extend(service_of(self, id));
        }
        // A service's replicas are its jobs (or ended): a record that says otherwise is damaged.
        for rec in &o.services {
            if let ServiceRecord::Live { id, replicas, .. } = rec {
                for r in replicas {
                    let ok = match self.jobs.get(r) {
                        Some(j) => j.service == Some(*id),
                        None => self.ended.contains_key(r),
                    };
                    if !ok {
                        return Err(restore_error(
                            format!("service {id}"),
                            format!("replica {r} is not its job"),
                        ));
                    }
                }
            }
        }
        for sid in counted {
            self.recount_clouds(sid);
        }
        for rec in &o.batches {
            self.restore_batch(rec, now)?;
        }
        if let Some(change) = &o.reservation {
            let set = match change {
                ReservationChange::Set(r) => Some(r.clone()),
                ReservationChange::Cleared => None,
            };
            if let Some(r) = &set {
                self.engine.hold(&r.nodes);
                self.reservation = Some(Reservation {
                    job: r.job,
                    start: r.start,
                    nodes: r.nodes.clone(),
                    // Whatever stopped since it was worked out is unknown here: it is kept
                    // only until its refresh time, however it was restored.
                    stops_at: u64::MAX,
                    priority: r.priority,
                    computed_at: r.computed_at,
                });
                self.last_reserved = Some(super::Announced {
                    job: r.job,
                    start: r.start,
                    nodes: r.nodes.clone(),
                });
            }
            self.journaled_reservation = set;
        }
        if !o.is_empty() {
            self.stops += 1;
            self.changes += 1;
        }
        // Restoring is not a change of its own.
        self.touched.clear();
        self.touched_services.clear();
        Ok(())
    }

    fn restore_service(&mut self, rec: &ServiceRecord, _now: Time) {
        match rec {
            ServiceRecord::Live {
                id,
                spec,
                desired,
                surge,
                replicas,
                next,
            } => {
                self.prepare_rule(&spec.placement);
                let s = self
                    .services
                    .entry(*id)
                    .or_insert_with(|| ServiceState::new((**spec).clone()));
                s.set_replicas(*desired, *surge, replicas.clone(), *next);
            }
            ServiceRecord::Deleted { id } => {
                self.services.remove(id);
            }
        }
    }

    fn restore_job(&mut self, rec: &JobRecord, now: Time) -> Result<(), RestoreError> {
        let l = match rec {
            JobRecord::Ended { id, state } => {
                self.forget_job(*id);
                self.holding.remove(id);
                self.ended.insert(*id, state.clone());
                return Ok(());
            }
            JobRecord::Live(l) => l,
        };
        let id = l.id;
        if let Some(j) = self.jobs.get(&id) {
            if j.service != l.service {
                return Err(restore_error(
                    id,
                    "the record names another service than the job's",
                ));
            }
        } else if l.service.is_some() && id.as_replica().map(|(s, _)| s) != l.service {
            return Err(restore_error(
                id,
                "not a replica id of the service it names",
            ));
        }
        if !self.jobs.contains_key(&id) {
            // A replica the record's change created.
            let spec = l
                .service
                .and_then(|s| self.services.get(&s))
                .map(|s| s.replica_job())
                .ok_or_else(|| restore_error(id, "no such job, and no service it belongs to"))?;
            self.enqueue(id, spec, now, l.service)
                .map_err(|e| restore_error(id, e.to_string()))?;
            if l.state != JobState::Pending {
                if let Some(seq) = self.jobs.get(&id).map(|j| j.seq) {
                    self.queue_remove(seq, id);
                }
            }
        }
        let was_pending_in_queue = self
            .jobs
            .get(&id)
            .is_some_and(|j| self.pending.contains_key(&(j.seq, id)));
        let tenant = {
            let Some(j) = self.jobs.get_mut(&id) else {
                return Err(restore_error(id, "vanished while restored"));
            };
            let lost_before = j.lost_gpu_hours;
            if j.state != JobState::Pending && l.state == JobState::Pending {
                j.reason = Some(Reason::Requeued);
            }
            j.state = l.state.clone();
            j.restarts = l.restarts;
            j.preemptions = l.preemptions;
            j.borrowed = l.borrowed;
            j.lost_gpu_hours = l.lost_gpu_hours;
            j.attained_gpu_seconds = l.attained_gpu_seconds;
            j.last_checkpoint = l.last_checkpoint;
            j.waiting_for = l.waiting_for.clone();
            j.service = l.service;
            (j.spec.tenant.0 as usize, l.lost_gpu_hours - lost_before)
        };
        if let Some(t) = self.tenants.get_mut(tenant.0) {
            t.lost_gpu_hours += tenant.1;
        }
        let held = self.jobs.get(&id).is_some_and(|j| !j.hold.is_empty());
        if !held && !l.hold.is_empty() {
            self.engine.hold(&l.hold);
            self.holding.insert(id);
            if let Some(j) = self.jobs.get_mut(&id) {
                j.hold = l.hold.clone();
            }
        }
        match (&l.state, &l.gang) {
            (JobState::Pending, _) => {
                if !was_pending_in_queue {
                    self.queue_insert(id);
                }
            }
            (JobState::Running { .. } | JobState::Preempting { .. }, Some(g)) => {
                if !self.running.contains(&id) {
                    self.take_gang(id, g, now)?;
                }
                if let JobState::Preempting { deadline, .. } = l.state {
                    self.preempting.insert((deadline, id));
                }
                self.index_end(id, true);
            }
            (state, _) => {
                return Err(restore_error(
                    id,
                    format!("state {state:?} without the nodes it runs on"),
                ))
            }
        }
        Ok(())
    }

    fn restore_batch(&mut self, rec: &BatchRecord, now: Time) -> Result<(), RestoreError> {
        match rec {
            BatchRecord::Ended { id } => {
                if self.drop_batch(*id).is_some() {
                    let _ = self.engine.release(*id);
                    self.ledger.release(*id, now);
                }
            }
            BatchRecord::Live(b) => {
                check_batch(b)?;
                if self.engine.allocation(b.id).is_none() {
                    let live_count = b.live.iter().map(|w| w.count_ones()).sum();
                    self.engine
                        .reinstate(
                            b.id,
                            Allocation::Sandboxes {
                                request: b.request.clone(),
                                runs: b.runs.clone(),
                                live: b.live.clone(),
                                live_count,
                                placed_at: b.placed_at,
                            },
                        )
                        .map_err(|e| restore_error(b.id, e.to_string()))?;
                }
                // What the batch was charged goes back to whom it was charged to (a record may
                // name another tenant or size), and its live sandboxes are charged anew.
                self.drop_batch(b.id);
                self.batches.insert(
                    b.id,
                    Batch {
                        max_retries: b.max_retries,
                        retries: b.retries,
                        tenant: b.tenant,
                        charged: 0,
                        size: (b.request.cpu_millis, b.request.memory_mib),
                    },
                );
                self.settle_batch(b.id);
                self.charge(b.id, now);
            }
        }
        Ok(())
    }

    /// Gives back a running job's nodes and usage (its state is set by the caller).
    fn release_gang(&mut self, id: WorkloadId, now: Time) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let usage = model::ResourceVec::of_gang(&job.spec.gang);
        let (tenant, class, service) = (
            job.spec.tenant.0 as usize,
            job.spec.priority as usize,
            job.service,
        );
        let released = self.engine.release(id).ok();
        self.ledger.release(id, now);
        if let (Some(sid), Some(Allocation::Gang { slots, .. })) = (service, released.as_ref()) {
            if let Some(first) = slots.first() {
                self.count_replica(sid, first.node, false);
            }
        }
        self.running.remove(&id);
        self.running_by_class[class].remove(&id);
        self.add_usage(tenant, &usage, false);
    }

    /// Gives a job the nodes a record names, with its usage and charge.
    fn take_gang(&mut self, id: WorkloadId, g: &GangSlots, now: Time) -> Result<(), RestoreError> {
        let Some(job) = self.jobs.get(&id) else {
            return Err(restore_error(id, "no such job"));
        };
        // Work of several models restores on the model its record's nodes carry.
        let recorded = g
            .slots
            .first()
            .and_then(|s| self.engine.fleet().nodes().get(s.node.0 as usize))
            .and_then(|n| n.capacity.gpu_model);
        if let Some(m) = recorded.filter(|_| !job.spec.gang.models.is_empty()) {
            self.settle_model(id, m);
        }
        let Some(job) = self.jobs.get(&id) else {
            return Err(restore_error(id, "no such job"));
        };
        let request = job.spec.gang.clone();
        check_gang(&self.engine, id, &request, g)?;
        let usage = model::ResourceVec::of_gang(&request);
        let (tenant, class, service) = (
            job.spec.tenant.0 as usize,
            job.spec.priority as usize,
            job.service,
        );
        // The devices per node follow from the request; the record says the CPU and memory.
        let per_node = Resources {
            gpu_model: Some(request.gpu),
            gpus: request.gpus_per_node,
            cpu_millis: g.per_node.cpu_millis,
            memory_mib: g.per_node.memory_mib,
            disk_gib: 0,
        };
        self.engine
            .reinstate(
                id,
                Allocation::Gang {
                    request,
                    slots: g.slots.clone(),
                    spares: g.spares.clone(),
                    per_node,
                    placed_at: g.placed_at,
                },
            )
            .map_err(|e| restore_error(id, e.to_string()))?;
        self.running.insert(id);
        self.running_by_class[class].insert(id);
        self.add_usage(tenant, &usage, true);
        self.charge(id, now);
        if let (Some(sid), Some(first)) = (service, g.slots.first()) {
            self.count_replica(sid, first.node, true);
        }
        Ok(())
    }
}

/// A recorded gang must be the request's shape on real nodes: one slot per node asked, each on
/// a different node of the fleet with the request's GPU count on devices the node has (the
/// engine's `reinstate` then checks that they are free). A journal is read from disk: a damaged
/// record is refused, never trusted.
fn check_gang(
    engine: &crate::engine::Engine,
    id: WorkloadId,
    request: &model::GangRequest,
    g: &GangSlots,
) -> Result<(), RestoreError> {
    if g.spares.len() > request.spares as usize {
        return Err(restore_error(
            id,
            format!("{} spares for {} asked", g.spares.len(), request.spares),
        ));
    }
    if g.slots.len() != request.nodes as usize {
        return Err(restore_error(
            id,
            format!(
                "{} slots for a gang of {} nodes",
                g.slots.len(),
                request.nodes
            ),
        ));
    }
    if request.is_unit()
        && (!g.spares.is_empty() || request.node_asks().count() != request.nodes as usize)
    {
        return Err(restore_error(
            id,
            "a unit gang with spares, or whose parts do not add up to its nodes",
        ));
    }
    let nodes = engine.fleet().nodes();
    // Devices taken so far on each node: only a unit's workers may share a node, on
    // different devices.
    let mut seen: rustc_hash::FxHashMap<model::NodeId, u32> = rustc_hash::FxHashMap::default();
    for (s, gpus) in g.slots.iter().chain(&g.spares).zip(
        request
            .node_asks()
            .map(|a| a.gpus)
            .chain(std::iter::repeat(request.gpus_per_node)),
    ) {
        let Some(node) = nodes.get(s.node.0 as usize) else {
            return Err(restore_error(
                id,
                format!("node #{} is not in the fleet", s.node.0),
            ));
        };
        match seen.get_mut(&s.node) {
            Some(mask) if request.is_unit() && *mask & s.gpu_mask == 0 => *mask |= s.gpu_mask,
            Some(_) => {
                return Err(restore_error(
                    id,
                    format!("node {} is named twice", node.name),
                ))
            }
            None => {
                seen.insert(s.node, s.gpu_mask);
            }
        }
        if node.capacity.gpu_model != Some(request.gpu) {
            return Err(restore_error(
                id,
                format!("node {} does not carry {}", node.name, request.gpu),
            ));
        }
        let devices = u32::from(node.capacity.gpus);
        let inside = devices >= 32 || s.gpu_mask >> devices == 0;
        if s.gpu_mask.count_ones() != u32::from(gpus) || !inside {
            return Err(restore_error(
                id,
                format!(
                    "devices {:#x} on {} for {} GPUs per node",
                    s.gpu_mask, node.name, gpus
                ),
            ));
        }
    }
    Ok(())
}

/// A recorded batch must cover its sandboxes exactly once, with a live bit for each.
fn check_batch(b: &LiveBatch) -> Result<(), RestoreError> {
    let count = u64::from(b.request.count);
    if b.live.len() as u64 != count.div_ceil(64) {
        return Err(restore_error(
            b.id,
            "live bits do not match the batch's size",
        ));
    }
    let mut next = 0u64;
    for r in &b.runs {
        if u64::from(r.first) != next {
            return Err(restore_error(
                b.id,
                "runs of sandboxes overlap or leave gaps",
            ));
        }
        next += u64::from(r.count);
    }
    if next != count {
        return Err(restore_error(b.id, "runs do not cover the batch"));
    }
    Ok(())
}

impl GangSlots {
    /// Whether the engine's allocation is exactly this one.
    fn same_as(&self, a: &Allocation) -> bool {
        matches!(a, Allocation::Gang { slots, spares, per_node, placed_at, .. }
            if *slots == self.slots && *spares == self.spares
                && per_node.cpu_millis == self.per_node.cpu_millis
                && per_node.memory_mib == self.per_node.memory_mib
                && *placed_at == self.placed_at)
    }
}

impl LiveBatch {
    /// Whether the engine's allocation is exactly this one.
    fn same_as(&self, a: &Allocation) -> bool {
        matches!(a, Allocation::Sandboxes { request, runs, live, placed_at, .. }
            if *request == self.request && *runs == self.runs
                && *live == self.live && *placed_at == self.placed_at)
    }
}
