//! Preemption and reservations' lookahead: which running jobs a job may preempt (cheapest
//! first), the shortest prefix of them whose release makes it fit (probed on the engine and
//! put back exactly), those of them the plan needs (a victim whose room the gang does not
//! need once dearer ones are gone keeps running), the victims told to stop, and a job's
//! earliest start from the running jobs' time limits.

use super::*;

/// Most victims one preemption tries to keep running (each try is one plan of the gang).
const MAX_VICTIMS_PUT_BACK: usize = 16;

impl Scheduler {
    /// Records a fruitless preemption search on the job and beside its place in the queue.
    pub(super) fn note_no_victims(&mut self, id: WorkloadId, now: Time) {
        let (changes, retry, max) = (
            self.changes,
            self.config.preemption_retry,
            self.config
                .preemption_retry_max
                .max(self.config.preemption_retry),
        );
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        let streak = j
            .no_victims_at
            .map_or(0, |v| v.streak.saturating_add(1).min(16));
        let wait = retry.saturating_mul(1 << streak).min(max);
        let at = VainSearch {
            changes,
            retry_at: now.saturating_add(wait),
            streak,
        };
        j.no_victims_at = Some(at);
        if let Some(b) = self
            .pending
            .get(&(j.seq, id))
            .and_then(|k| self.ordered.get_mut(k))
        {
            b.no_victims_at = Some(at);
        }
    }

    /// Running jobs on `model` that `job` may preempt, cheapest first, and the GPUs they hold
    /// together.
    pub(super) fn victims_for(
        &self,
        job: &Job,
        model: model::GpuModel,
        within_own_quota: bool,
        now: Time,
    ) -> (Vec<WorkloadId>, u64) {
        let cohort = self.tenants[job.spec.tenant.0 as usize]
            .spec
            .cohort
            .as_ref();
        // Only lower classes can be victims, unless a cohort reclaim or least-attained
        // service lets the job's own class be.
        let own_class_too = !Self::monotone_search(&self.config.order, within_own_quota, cohort);
        let classes = if own_class_too {
            &self.running_by_class[..=job.spec.priority as usize]
        } else {
            &self.running_by_class[..job.spec.priority as usize]
        };
        let mut cands: Vec<(f64, PriorityClass, WorkloadId, u64)> = classes
            .iter()
            .flatten()
            .filter_map(|id| self.jobs.get(id))
            .filter(|v| matches!(v.state, JobState::Running { .. }))
            .filter(|v| v.spec.gang.gpu == model)
            .filter(|v| {
                let lower = v.spec.priority < job.spec.priority;
                let reclaim = within_own_quota
                    && v.borrowed
                    && v.spec.tenant != job.spec.tenant
                    && cohort.is_some()
                    && self.tenants[v.spec.tenant.0 as usize].spec.cohort.as_ref() == cohort;
                // Least attained service: a job of the first queue preempts one that has had
                // more than the threshold, in the same class.
                let las = match self.config.order {
                    QueueOrder::LeastAttained {
                        threshold_gpu_seconds: t,
                    } => {
                        let served = v.attained_gpu_seconds.saturating_add(
                            v.running_since()
                                .map_or(0, |s| v.gpu_seconds(now.saturating_sub(s))),
                        );
                        v.spec.priority == job.spec.priority
                            && job.attained_gpu_seconds < t
                            && served >= t
                    }
                    _ => false,
                };
                lower || reclaim || las
            })
            .filter(|v| {
                v.preemptions < self.config.max_preemptions
                    && v.running_since()
                        .is_some_and(|s| now.saturating_sub(s) >= self.config.min_runtime)
            })
            .map(|v| (v.unsaved_gpu_hours(now), v.spec.priority, v.id, v.gpus()))
            .collect();
        cands.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let gpus = cands.iter().map(|c| c.3).sum();
        (cands.into_iter().map(|c| c.2).collect(), gpus)
    }

    /// Whether a job's victims are exactly the running jobs of lower classes: then a search that
    /// failed also fails, in the same pass, for any job of its shape with as many nodes or more
    /// and no higher class.
    pub(super) fn monotone_search(
        order: &QueueOrder,
        within_own_quota: bool,
        cohort: Option<&String>,
    ) -> bool {
        let least_attained = matches!(order, QueueOrder::LeastAttained { .. });
        let reclaim = within_own_quota && cohort.is_some();
        !least_attained && !reclaim
    }

    /// Finds the shortest prefix of `order` whose release lets `gang` be placed; returns its
    /// length and the nodes the gang would get. The engine is left exactly as it was.
    pub(super) fn shortest_release_prefix(
        &mut self,
        order: &[WorkloadId],
        gang: &GangRequest,
        spread: &SpreadFilter,
    ) -> Option<(usize, Vec<NodeSlot>)> {
        let mut released: Vec<(WorkloadId, Allocation)> = Vec::new();
        let probe =
            |engine: &mut Engine, k: usize, released: &mut Vec<(WorkloadId, Allocation)>| {
                engine.defer_reindex();
                while released.len() < k {
                    let id = order[released.len()];
                    match engine.release(id) {
                        Ok(a) => released.push((id, a)),
                        Err(_) => {
                            engine.settle();
                            return None;
                        }
                    }
                }
                while released.len() > k {
                    if let Some((id, a)) = released.pop() {
                        // Exact: it was released a moment ago and nothing else changed.
                        let _ = engine.reinstate(id, a);
                    }
                }
                engine.settle();
                engine
                    .plan_gang_in(gang, &|t| spread.allows(t))
                    .ok()
                    .map(|p| p.slots)
            };
        // Exponential steps, then binary search between the last failure and the first success.
        let n = order.len();
        let (mut lo, mut hi) = (0usize, None);
        let mut k = 1usize;
        while k <= n {
            if probe(&mut self.engine, k, &mut released).is_some() {
                hi = Some(k);
                break;
            }
            lo = k;
            if k == n {
                break;
            }
            k = (k * 2).min(n);
        }
        let mut result = None;
        if let Some(mut hi) = hi {
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                if probe(&mut self.engine, mid, &mut released).is_some() {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            result = probe(&mut self.engine, hi, &mut released).map(|slots| (hi, slots));
        }
        let _ = probe(&mut self.engine, 0, &mut released);
        result
    }

    /// Tries to make room for `id` by preemption, on each model it accepts that its quota
    /// admits it on, in order (on each, a cohort reclaim only where it is within its own
    /// quota). Returns the decisions, or None.
    pub(super) fn try_preempt(&mut self, id: WorkloadId, now: Time) -> Option<Vec<Decision>> {
        let job = self.jobs.get(&id)?;
        let candidates = self.each_model(job.spec.tenant, &job.spec.gang);
        let spread = self.spread_filter(id);
        let (victims, slots) = candidates.iter().find_map(|(gang, within_own_quota)| {
            let job = self.jobs.get(&id)?;
            let (order, releasable) = self.victims_for(job, gang.gpu, *within_own_quota, now);
            // Even every victim gone would not free enough GPUs: no need to try.
            let free = self.engine.open_free_gpus[gang.gpu.index()];
            if order.is_empty() || free + releasable < gang.total_gpus() {
                return None;
            }
            // Never preempt for a gang that would still not fit.
            let (k, slots) = self.shortest_release_prefix(&order, gang, &spread)?;
            let victims = self.on_nodes(&order[..k], &slots);
            Some(self.needed_victims(victims, slots, gang, &spread))
        })?;
        let plan_nodes: FxHashSet<NodeId> = slots.iter().map(|s| s.node).collect();
        let deadline = now + self.config.grace_period;
        let mut out = Vec::new();
        self.touch(id);
        for v in &victims {
            self.touch(*v);
            self.index_end(*v, false);
            if let Some(j) = self.jobs.get_mut(v) {
                let since = j.running_since().unwrap_or(now);
                j.state = JobState::Preempting {
                    since,
                    deadline,
                    by: id,
                };
                self.preempting.insert((deadline, *v));
                if let Some((m, key)) = Self::end_key(j) {
                    self.running_ends[m].insert(key);
                }
                j.preemptions += 1;
                out.push(Decision::Preempt {
                    job: *v,
                    by: id,
                    deadline,
                });
            }
        }
        let hold: Vec<NodeId> = {
            let mut v: Vec<NodeId> = plan_nodes.into_iter().collect();
            v.sort_unstable();
            v
        };
        self.engine.hold(&hold);
        if let Some(j) = self.jobs.get_mut(&id) {
            j.hold = hold;
            self.holding.insert(id);
            j.waiting_for = victims;
            j.reason = Some(Reason::WaitingForPreemption { until: deadline });
        }
        Some(out)
    }

    /// The jobs of `ids` that hold a piece of a node of `slots`: a victim elsewhere frees
    /// nothing the plan uses.
    fn on_nodes(&self, ids: &[WorkloadId], slots: &[NodeSlot]) -> Vec<WorkloadId> {
        let plan_nodes: FxHashSet<NodeId> = slots.iter().map(|s| s.node).collect();
        ids.iter()
            .copied()
            .filter(|v| match self.engine.allocation(*v) {
                Some(Allocation::Gang { slots, .. }) => {
                    slots.iter().any(|s| plan_nodes.contains(&s.node))
                }
                _ => false,
            })
            .collect()
    }

    /// The victims (cheapest first) that `gang` needs gone, and the nodes it gets then. The
    /// shortest prefix can hold a cheap victim whose room the plan does not need once a dearer
    /// one is gone: each victim, dearest first (at most [`MAX_VICTIMS_PUT_BACK`]), is put back
    /// and kept running when the gang still fits without it. The engine is left as it was.
    fn needed_victims(
        &mut self,
        victims: Vec<WorkloadId>,
        slots: Vec<NodeSlot>,
        gang: &GangRequest,
        spread: &SpreadFilter,
    ) -> (Vec<WorkloadId>, Vec<NodeSlot>) {
        if victims.len() < 2 || self.rules == DecisionRules::Format0 {
            return (victims, slots);
        }
        let plan = |engine: &mut Engine| {
            engine.settle();
            engine
                .plan_gang_in(gang, &|t| spread.allows(t))
                .ok()
                .map(|p| p.slots)
        };
        self.engine.defer_reindex();
        let mut released: Vec<(WorkloadId, Allocation)> = Vec::new();
        for &v in &victims {
            match self.engine.release(v) {
                Ok(a) => released.push((v, a)),
                Err(_) => break,
            }
        }
        let mut best = (released.len() == victims.len())
            .then(|| plan(&mut self.engine))
            .flatten();
        let mut kept: FxHashSet<WorkloadId> = FxHashSet::default();
        if best.is_some() {
            for i in (0..released.len()).rev().take(MAX_VICTIMS_PUT_BACK) {
                let (v, a) = released[i].clone();
                self.engine.defer_reindex();
                // Exact: it was released a moment ago and nothing was placed since.
                if self.engine.reinstate(v, a).is_err() {
                    continue;
                }
                match plan(&mut self.engine) {
                    Some(fits) => {
                        kept.insert(v);
                        best = Some(fits);
                    }
                    None => {
                        self.engine.defer_reindex();
                        if let Ok(a) = self.engine.release(v) {
                            released[i].1 = a;
                        }
                    }
                }
            }
        }
        self.engine.defer_reindex();
        for (v, a) in released {
            if !kept.contains(&v) {
                let _ = self.engine.reinstate(v, a);
            }
        }
        self.engine.settle();
        match best {
            Some(fewer) => {
                let needed: Vec<WorkloadId> = victims
                    .iter()
                    .copied()
                    .filter(|v| !kept.contains(v))
                    .collect();
                let needed = self.on_nodes(&needed, &fewer);
                if needed.is_empty() {
                    return (victims, slots);
                }
                (needed, fewer)
            }
            None => (victims, slots),
        }
    }

    /// `gang` on each model it accepts that `tenant`'s quota (or its cohort's) admits it on,
    /// in order, alone (a probe frees nodes of that model only), and whether it is within the
    /// tenant's own quota there.
    fn each_model(&self, tenant: TenantId, gang: &GangRequest) -> Vec<(GangRequest, bool)> {
        gang.acceptable_models()
            .filter_map(|m| {
                let borrowed = admit_on(&self.tenants, &self.cohorts, tenant, gang, m).ok()?;
                let mut only = gang.on_model(m);
                only.models.clear();
                Some((only, !borrowed))
            })
            .collect()
    }

    /// Earliest start of `gang` (of `tenant`) from running jobs' time limits, on whichever
    /// model it accepts frees room first, and the nodes it would get.
    pub(super) fn earliest_start(
        &mut self,
        tenant: TenantId,
        gang: &GangRequest,
        spread: &SpreadFilter,
        now: Time,
    ) -> Option<(Time, Vec<NodeSlot>)> {
        let mut best: Option<(Time, Vec<NodeSlot>)> = None;
        for (only, _) in self.each_model(tenant, gang) {
            // Only ends before the best start so far could give a better one.
            let before = best.as_ref().map_or(Time::MAX, |b| b.0);
            let order: Vec<(Time, WorkloadId)> = self.running_ends[only.gpu.index()]
                .iter()
                .map(|&(end, id)| (end.max(now), id))
                .take_while(|&(end, _)| end < before)
                .collect();
            let ids: Vec<WorkloadId> = order.iter().map(|o| o.1).collect();
            if let Some((k, slots)) = self.shortest_release_prefix(&ids, &only, spread) {
                best = Some((order[k - 1].0, slots));
            }
        }
        best
    }
}
