//! A job's life in the queue after it was queued: start, checkpoint, finish, cancel,
//! requeue, and what a failed node does to the work on it (spares replace failed trays in
//! place; anything else is requeued from its last checkpoint).

use super::*;

impl Scheduler {
    /// Records a job's checkpoint: a restart resumes from here.
    pub fn checkpoint(&mut self, id: WorkloadId, now: Time) -> Result<(), SchedError> {
        self.ensure_running(id, "only a running job checkpoints")?;
        if let Some(job) = self.jobs.get_mut(&id) {
            job.last_checkpoint = Some(now);
        }
        self.touch(id);
        Ok(())
    }

    /// Ok when `id` is running (or preempting), else why `reason` refuses the request.
    pub(super) fn ensure_running(
        &self,
        id: WorkloadId,
        reason: &'static str,
    ) -> Result<(), SchedError> {
        if let Some(state) = self.ended.get(&id) {
            return Err(SchedError::WrongState {
                id,
                state: format!("{state:?}"),
                reason,
            });
        }
        let job = self.jobs.get(&id).ok_or(SchedError::UnknownJob(id))?;
        if job.running_since().is_none() {
            return Err(SchedError::WrongState {
                id,
                state: format!("{:?}", job.state),
                reason,
            });
        }
        Ok(())
    }

    /// A running job ended by itself.
    pub fn finish(&mut self, id: WorkloadId, now: Time) -> Result<(), SchedError> {
        self.ensure_running(id, "only a running job finishes")?;
        self.stop(id, now);
        self.forget_job(id);
        self.ended.insert(id, JobState::Finished);
        self.touch(id);
        Ok(())
    }

    /// Cancels a job wherever it is.
    pub fn cancel(&mut self, id: WorkloadId, now: Time) -> Result<(), SchedError> {
        if let Some(state) = self.ended.get(&id) {
            return Err(SchedError::WrongState {
                id,
                state: format!("{state:?}"),
                reason: "it has already ended",
            });
        }
        let job = self.jobs.get(&id).ok_or(SchedError::UnknownJob(id))?;
        match job.state {
            JobState::Finished | JobState::Cancelled => {
                return Err(SchedError::WrongState {
                    id,
                    state: format!("{:?}", job.state),
                    reason: "it has already ended",
                })
            }
            JobState::Pending => {
                let seq = job.seq;
                let hold = job.hold.clone();
                self.queue_remove(seq, id);
                self.engine.unhold(&hold);
            }
            _ => self.stop(id, now),
        }
        self.forget_job(id);
        self.holding.remove(&id);
        self.ended.insert(id, JobState::Cancelled);
        self.touch(id);
        Ok(())
    }

    /// Releases a running job's resources and usage (state is set by the caller).
    pub(super) fn stop(&mut self, id: WorkloadId, now: Time) {
        self.index_end(id, false);
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let state = job.state.clone();
        self.touch(id);
        // A victim that stops (for whatever reason) is no longer waited for.
        if let JobState::Preempting { by, .. } = state {
            self.touch(by);
            if let Some(p) = self.jobs.get_mut(&by) {
                p.waiting_for.retain(|v| *v != id);
            }
        }
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let usage = ResourceVec::of_gang(&job.spec.gang);
        let tenant = job.spec.tenant.0 as usize;
        let class = job.spec.priority as usize;
        let served = job
            .running_since()
            .map_or(0, |since| job.gpu_seconds(now.saturating_sub(since)));
        if let Some(j) = self.jobs.get_mut(&id) {
            j.attained_gpu_seconds = j.attained_gpu_seconds.saturating_add(served);
        }
        let released = self.engine.release(id).ok();
        self.ledger.release(id, now);
        if let (Some(sid), Some(Allocation::Gang { slots, .. })) = (
            self.jobs.get(&id).and_then(|j| j.service),
            released.as_ref(),
        ) {
            if let Some(first) = slots.first() {
                self.count_replica(sid, first.node, false);
            }
        }
        self.running.remove(&id);
        self.running_by_class[class].remove(&id);
        self.stops += 1;
        self.changes += 1;
        self.add_usage(tenant, &usage, false);
    }

    /// Takes an ended job out of the live jobs and its tenant's load.
    pub(super) fn forget_job(&mut self, id: WorkloadId) -> Option<Job> {
        let job = self.jobs.remove(&id)?;
        if let Some(t) = self.tenants.get_mut(job.spec.tenant.0 as usize) {
            t.load.live_jobs -= 1;
        }
        self.mix.count(&job.spec.gang, false);
        Some(job)
    }

    /// Work that accepts several models runs on the one it got: from now on its spec names
    /// that model first (the others stay acceptable), so usage, quotas, indexes and a restore
    /// all follow the model it holds.
    pub(super) fn settle_model(&mut self, id: WorkloadId, placed: model::GpuModel) {
        if let Some(j) = self.jobs.get_mut(&id) {
            let placed = j.spec.gang.placed_on(placed);
            if placed.gpu != j.spec.gang.gpu {
                self.mix.count(&j.spec.gang, false);
                self.mix.count(&placed, true);
                j.spec.gang = placed;
            }
        }
    }

    /// Adds (`true`) or takes away a running gang's usage from its tenant and cohort.
    pub(super) fn add_usage(&mut self, tenant: usize, usage: &ResourceVec, add: bool) {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        t.usage = if add {
            t.usage.plus(usage)
        } else {
            t.usage.minus(usage)
        };
        if let Some(c) = t.cohort {
            let c = &mut self.cohorts[c];
            c.usage = if add {
                c.usage.plus(usage)
            } else {
                c.usage.minus(usage)
            };
        }
    }

    /// Stops a running job and queues it again from its last checkpoint.
    pub(super) fn requeue(&mut self, id: WorkloadId, now: Time, out: &mut Vec<Decision>) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let lost = job.unsaved_gpu_hours(now);
        let tenant = job.spec.tenant.0 as usize;
        self.stop(id, now);
        self.tenants[tenant].lost_gpu_hours += lost;
        if let Some(j) = self.jobs.get_mut(&id) {
            j.state = JobState::Pending;
            j.lost_gpu_hours += lost;
            j.restarts += 1;
            j.borrowed = false;
            j.reason = Some(Reason::Requeued);
            j.no_victims_at = None;
        }
        self.queue_insert(id);
        out.push(Decision::Requeue {
            job: id,
            lost_gpu_hours: lost,
        });
    }

    /// Nodes of a scope go down. A job that lost only nodes its spares can cover has them
    /// replaced in place (same NVLink domain; the rest does not move); any other job on them
    /// is requeued from its last checkpoint. Lost GPU-hours are counted either way.
    pub fn fail(&mut self, scope: Scope, now: Time) -> Vec<Decision> {
        let change = self.engine.set_state(scope, NodeState::Down);
        self.stops += 1;
        let mut out = Vec::new();
        for id in change.affected {
            self.touch(id);
            if self.batches.contains_key(&id) {
                self.recover_batch(id, now, &mut out);
                continue;
            }
            if !self.running.contains(&id) {
                continue;
            }
            let down = |engine: &Engine, slots: &[NodeSlot]| -> Vec<NodeId> {
                slots
                    .iter()
                    .map(|s| s.node)
                    .filter(|n| engine.fleet().node(*n).state == NodeState::Down)
                    .collect()
            };
            let (down_active, down_spares) = match self.engine.allocation(id) {
                Some(Allocation::Gang { slots, spares, .. }) => {
                    (down(&self.engine, slots), down(&self.engine, spares))
                }
                _ => continue,
            };
            for n in down_spares {
                self.engine.drop_spare(id, n);
            }
            if down_active.is_empty() {
                // Only spares went: it is charged for what it still holds.
                self.charge(id, now);
                continue;
            }
            let mut replaced = Vec::new();
            let mut all = true;
            for n in &down_active {
                match self.engine.replace_with_spare(id, *n) {
                    Ok(slot) => replaced.push((*n, slot.node)),
                    Err(_) => {
                        all = false;
                        break;
                    }
                }
            }
            if !all {
                self.requeue(id, now, &mut out);
                continue;
            }
            self.charge(id, now);
            self.index_end(id, false);
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let lost = job.unsaved_gpu_hours(now);
            job.lost_gpu_hours += lost;
            job.restarts += 1;
            if let JobState::Running { since } = job.state {
                let served = job.gpu_seconds(now.saturating_sub(since));
                job.attained_gpu_seconds = job.attained_gpu_seconds.saturating_add(served);
                job.state = JobState::Running { since: now }; // restarted from its checkpoint
            }
            let tenant = job.spec.tenant.0 as usize;
            self.index_end(id, true);
            self.tenants[tenant].lost_gpu_hours += lost;
            for (i, (failed, replacement)) in replaced.into_iter().enumerate() {
                out.push(Decision::Replace {
                    job: id,
                    failed,
                    replacement,
                    lost_gpu_hours: if i == 0 { lost } else { 0.0 },
                });
            }
        }
        out
    }

    /// Nodes of a scope come back (or are cordoned, drained...): no job is moved by this.
    pub fn set_state(&mut self, scope: Scope, state: NodeState) -> Vec<WorkloadId> {
        self.stops += 1;
        self.engine.set_state(scope, state).affected
    }

    /// Charges workload `id` for what the engine gives it now (a gang's slots and spares, a
    /// batch's live sandboxes), replacing what it was charged for.
    pub(crate) fn charge(&mut self, id: WorkloadId, now: Time) {
        let units = allocation_units(self.engine.fleet(), self.engine.allocation(id));
        let owner = match self.jobs.get(&id) {
            Some(j) => Owner {
                tenant: Some(j.spec.tenant),
                class: if j.service.is_some() {
                    SpendClass::Inference
                } else {
                    SpendClass::Training
                },
            },
            None => Owner {
                tenant: self.batches.get(&id).and_then(|b| b.tenant),
                class: SpendClass::Sandboxes,
            },
        };
        self.ledger.hold(id, owner, units, now);
    }

    pub(super) fn try_start(
        &mut self,
        id: WorkloadId,
        now: Time,
        borrowed: bool,
        out: &mut Vec<Decision>,
    ) -> Result<(), EngineError> {
        let Some(job) = self.jobs.get(&id) else {
            return Ok(());
        };
        let gang = job.spec.gang.clone();
        let tenant = job.spec.tenant.0 as usize;
        let spread = self.spread_filter(id);
        // Work of several models goes only where its tenant's quota (or its cohort's) admits
        // it: the queue admitted it on one of them.
        let admitted: Option<Vec<model::GpuModel>> = (!gang.models.is_empty()).then(|| {
            gang.acceptable_models()
                .filter(|m| {
                    admit_on(&self.tenants, &self.cohorts, job.spec.tenant, &gang, *m).is_ok()
                })
                .collect()
        });
        let fleet = self.engine.fleet();
        let model_of = |t: TopoId| {
            let first = fleet.topo_node(t).nodes.start;
            fleet
                .nodes()
                .get(first as usize)
                .and_then(|n| n.capacity.gpu_model)
        };
        let allowed = |t: TopoId| {
            spread.allows(t)
                && admitted
                    .as_ref()
                    .is_none_or(|ok| model_of(t).is_some_and(|m| ok.contains(&m)))
        };
        let plan = self.engine.plan_gang_in(&gang, &allowed);
        let placement = plan
            .map_err(EngineError::from)
            .and_then(|p| self.engine.commit_planned(id, &gang, p, now))
            .map_err(|e| match e {
                // Name the spread rule when it is what stands in the way.
                EngineError::Unplaceable(_) if spread.restricts() => {
                    match self.engine.plan_gang(&gang) {
                        Ok(_) => EngineError::Unplaceable(crate::engine::Unplaceable::new(
                            spread.explanation(),
                        )),
                        Err(_) => e,
                    }
                }
                _ => e,
            })?;
        let placed = placement
            .slots
            .first()
            .and_then(|s| self.engine.fleet().node(s.node).capacity.gpu_model);
        let mut borrowed = borrowed;
        if let Some(m) = placed.filter(|m| *m != gang.gpu) {
            self.settle_model(id, m);
            // Borrowed or not, on the model it got.
            if let Some(j) = self.jobs.get(&id) {
                borrowed = admit_on(
                    &self.tenants,
                    &self.cohorts,
                    j.spec.tenant,
                    &j.spec.gang,
                    j.spec.gang.gpu,
                )
                .unwrap_or(borrowed);
            }
        }
        let gang = self.jobs.get(&id).map_or(gang, |j| j.spec.gang.clone());
        let usage = ResourceVec::of_gang(&gang);
        self.add_usage(tenant, &usage, true);
        self.touch(id);
        if let Some(seq) = self.jobs.get(&id).map(|j| j.seq) {
            self.queue_remove(seq, id);
        }
        if let Some(j) = self.jobs.get_mut(&id) {
            j.state = JobState::Running { since: now };
            j.borrowed = borrowed;
            j.reason = None;
            self.running_by_class[j.spec.priority as usize].insert(id);
        }
        self.index_end(id, true);
        self.running.insert(id);
        self.changes += 1;
        self.charge(id, now);
        if let (Some(sid), Some(first)) = (
            self.jobs.get(&id).and_then(|j| j.service),
            placement.slots.first(),
        ) {
            self.count_replica(sid, first.node, true);
        }
        out.push(Decision::Start {
            job: id,
            slots: placement.slots,
        });
        Ok(())
    }
}
