//! The pending queue: submission, the persistent queue order (`ordered`, with what a pass
//! needs to pass a job over), the index of running jobs' ends, and quota admission.

use super::*;

impl Scheduler {
    /// Queues a job.
    pub fn submit(&mut self, id: WorkloadId, spec: JobSpec, now: Time) -> Result<(), SchedError> {
        spec.validate().map_err(|e| SchedError::Invalid {
            field: e.field,
            reason: e.reason,
        })?;
        if spec.tenant.0 as usize >= self.tenants.len() {
            return Err(SchedError::Invalid {
                field: "tenant",
                reason: format!("no tenant with id {}", spec.tenant.0),
            });
        }
        if id.0 >= REPLICA_IDS {
            return Err(SchedError::Invalid {
                field: "id",
                reason: format!(
                    "job ids must be below {REPLICA_IDS} (the rest name service replicas)"
                ),
            });
        }
        self.enqueue(id, spec, now, None)
    }

    /// Adds a job to the queue (no validation: callers have done it).
    pub(super) fn enqueue(
        &mut self,
        id: WorkloadId,
        spec: JobSpec,
        now: Time,
        service: Option<u64>,
    ) -> Result<(), SchedError> {
        if self.jobs.contains_key(&id)
            || self.batches.contains_key(&id)
            || self.ended.contains_key(&id)
        {
            return Err(SchedError::DuplicateJob(id));
        }
        self.prepare_rule(&spec.placement);
        let mut spec = spec;
        if !self.config.topology {
            spec.gang.segment = Some(1);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.touch(id);
        if let Some(t) = self.tenants.get_mut(spec.tenant.0 as usize) {
            t.load.live_jobs += 1;
        }
        self.mix.count(&spec.gang, true);
        self.jobs.insert(
            id,
            Job {
                id,
                spec,
                submitted: now,
                state: JobState::Pending,
                last_checkpoint: None,
                borrowed: false,
                preemptions: 0,
                restarts: 0,
                lost_gpu_hours: 0.0,
                attained_gpu_seconds: 0,
                reason: Some(Reason::NotConsidered),
                seq,
                hold: Vec::new(),
                no_victims_at: None,
                service,
                waiting_for: Vec::new(),
            },
        );
        self.queue_insert(id);
        Ok(())
    }

    /// Where a pending job sits in the persistent queue order.
    pub(super) fn queue_key(&self, j: &Job) -> QueueKey {
        let class = 3 - j.spec.priority as u64;
        let (first, second) = match self.config.order {
            QueueOrder::PriorityFairShare => (class, u64::from(j.spec.tenant.0)),
            QueueOrder::PriorityFifo => (class, 0),
            QueueOrder::Fifo => (0, 0),
            QueueOrder::ShortestLimitFirst => (0, j.spec.time_limit),
            QueueOrder::LeastAttained {
                threshold_gpu_seconds,
            } => (
                u64::from(j.attained_gpu_seconds >= threshold_gpu_seconds),
                0,
            ),
        };
        (first, second, j.seq, j.id)
    }

    /// Puts a job (now pending) into the queue.
    pub(super) fn queue_insert(&mut self, id: WorkloadId) {
        let Some(j) = self.jobs.get(&id) else {
            return;
        };
        let key = self.queue_key(j);
        let brief = Brief::of(&j.spec, j.no_victims_at);
        let tenant = j.spec.tenant.0 as usize;
        // A job its quota refuses now says so at once (a pass that leaves its tenant out would
        // not tell it).
        let refused = admit_with(&self.tenants, &self.cohorts, j).err();
        self.pending.insert((j.seq, id), key);
        self.ordered.insert(key, brief);
        if self.queued_floor.len() < self.tenants.len() {
            self.queued_floor.resize(self.tenants.len(), None);
        }
        if let Some(floor) = self.queued_floor.get_mut(tenant) {
            let ask = brief.least_ask();
            *floor = Some(floor.map_or(ask, |f| floor_of(&f, &ask)));
        }
        if let (Some(why), Some(j)) = (refused, self.jobs.get_mut(&id)) {
            j.reason = Some(why);
        }
    }

    /// Takes a job out of the queue.
    pub(super) fn queue_remove(&mut self, seq: u64, id: WorkloadId) {
        if let Some(key) = self.pending.remove(&(seq, id)) {
            self.ordered.remove(&key);
        }
    }

    /// Where a running job sits in `running_ends`, if it has a time limit.
    pub(super) fn end_key(j: &Job) -> Option<(usize, (Time, WorkloadId))> {
        if j.spec.time_limit >= NO_LIMIT {
            return None;
        }
        let end = match j.state {
            JobState::Preempting { deadline, .. } => deadline,
            JobState::Running { since } => since.saturating_add(j.spec.time_limit),
            _ => return None,
        };
        Some((j.spec.gang.gpu.index(), (end, j.id)))
    }

    /// Adds (`true`) or removes a running job's entry in `running_ends`.
    pub(super) fn index_end(&mut self, id: WorkloadId, add: bool) {
        if let Some((m, key)) = self.jobs.get(&id).and_then(Self::end_key) {
            if add {
                self.running_ends[m].insert(key);
            } else {
                self.running_ends[m].remove(&key);
            }
        }
    }

    pub(super) fn tenant_share(&self, t: TenantId) -> f64 {
        let ts = &self.tenants[t.0 as usize];
        ts.usage.dominant_share(&self.fleet_total) / ts.spec.weight
    }

    /// Quota check: Ok(borrowed?) or the reason it is refused.
    pub(super) fn admit(&self, job: &Job) -> Result<bool, Reason> {
        admit_with(&self.tenants, &self.cohorts, job)
    }
}
