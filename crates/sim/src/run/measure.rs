//! What a run measures as it goes and reports at its end: network levels a placement spans,
//! the demand-aware fair-share deviation, what each failure displaced (failover records), busy
//! GPUs per model, and the report (JCTs of finished jobs, utilisation, services, sandboxes,
//! cost, use and waits by model).

use super::*;

/// Height above the domains of each topology node (domain = 0).
pub(super) fn heights(fleet: &Fleet) -> Vec<u8> {
    let topo = fleet.topo();
    let mut h = vec![0u8; topo.len()];
    for i in (1..topo.len()).rev() {
        if let Some(p) = topo[i].parent {
            let v = h[i].saturating_add(1);
            h[p.0 as usize] = h[p.0 as usize].max(v);
        }
    }
    h
}

/// Levels spanned by a placement: height of the lowest element holding all its domains.
pub(super) fn levels_spanned(fleet: &Fleet, heights: &[u8], slots: &[NodeSlot]) -> (u8, usize) {
    let mut domains: Vec<TopoId> = slots
        .iter()
        .filter_map(|s| fleet.domain_of(s.node))
        .collect();
    domains.sort_unstable();
    domains.dedup();
    let (Some(lo), Some(hi)) = (domains.first(), domains.last()) else {
        return (0, 0);
    };
    let hi_idx = fleet.domains().binary_search(hi).unwrap_or(0) as u32;
    let lca = fleet
        .ancestors(*lo)
        .find(|a| fleet.topo_node(*a).domains.contains(&hi_idx))
        .unwrap_or(TopoId(0));
    (heights[lca.0 as usize], domains.len())
}

/// Max-min fair shares (equal weights) of `capacity` among tenants asking for `demand`.
pub fn max_min_fair(capacity: f64, demand: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..demand.len()).collect();
    order.sort_by(|a, b| demand[*a].total_cmp(&demand[*b]));
    let mut fair = vec![0.0; demand.len()];
    let mut left = capacity.max(0.0);
    for (k, &i) in order.iter().enumerate() {
        let share = left / (order.len() - k) as f64;
        fair[i] = demand[i].max(0.0).min(share);
        left -= fair[i];
    }
    fair
}

/// How far the busy GPUs are from a max-min fair split of them among the tenants, given what
/// each asks for (running plus waiting): half the sum of the absolute differences over the
/// busy GPUs (0: every tenant holds exactly its fair share; 1: nothing is where it should
/// be). Unequal demand alone is not unfair, and neither is a queue that waits for room.
pub fn fair_deviation(held: &[f64], demand: &[f64]) -> f64 {
    let fair = max_min_fair(held.iter().sum(), demand);
    let total: f64 = fair.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    held.iter()
        .zip(&fair)
        .map(|(h, f)| (h - f).abs())
        .sum::<f64>()
        / (2.0 * total)
}

impl Sim<'_> {
    /// What the scopes that failed at `now` displaced, and which of it the same instant's
    /// pass started elsewhere.
    pub(super) fn record_failover(&mut self, now: Time, decisions: &[Decision]) {
        let scopes = std::mem::take(&mut self.failing_now);
        let displaced: Vec<WorkloadId> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Requeue { job, .. } => Some(*job),
                _ => None,
            })
            .collect();
        let started: Vec<WorkloadId> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Start { job, .. } if displaced.contains(job) => Some(*job),
                _ => None,
            })
            .collect();
        let is_replica = |w: &WorkloadId| w.as_replica().is_some();
        let first_training = started.iter().position(|w| !is_replica(w));
        let last_replica = started.iter().rposition(is_replica);
        let mut groups: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
        for w in displaced.iter().filter(|w| !started.contains(w)) {
            let reason = match self.s.pending_root_reason(*w) {
                Some(r) => r,
                None if w.as_replica().is_some() => {
                    "no longer wanted (its service scaled down at that instant)".into()
                }
                None => "ended at that instant".into(),
            };
            let g = groups.entry(reason).or_default();
            g.0 += 1;
            if g.1.len() < 3 {
                g.1.push(w.to_string());
            }
        }
        let mut not_replaced: Vec<crate::cost::NotReplaced> = groups
            .into_iter()
            .map(|(reason, (count, examples))| crate::cost::NotReplaced {
                reason,
                count,
                examples,
            })
            .collect();
        not_replaced.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
        self.failovers.push(crate::cost::Failover {
            scope: scopes.join(", "),
            at: now,
            replicas_displaced: displaced.iter().filter(|w| is_replica(w)).count() as u64,
            replicas_replaced: started.iter().filter(|w| is_replica(w)).count() as u64,
            jobs_displaced: displaced.iter().filter(|w| !is_replica(w)).count() as u64,
            jobs_replaced: started.iter().filter(|w| !is_replica(w)).count() as u64,
            in_priority_order: match (first_training, last_replica) {
                (Some(t), Some(r)) => r < t,
                _ => true,
            },
            not_replaced,
        });
    }

    /// The model workload `w` (a job, or a service's replica) runs on.
    pub(super) fn model_of(&self, w: WorkloadId) -> GpuModel {
        let asked = match w.as_replica() {
            Some((k, _)) => self.trace.services.get(k as usize).and_then(|v| v.gpu),
            None => self.trace.jobs.get(w.0 as usize).and_then(|j| j.gpu),
        };
        asked.unwrap_or(self.shapes.model)
    }

    /// Counts `milli` thousandths of GPUs of workload `w` busy (`on`) or free again, on the
    /// model it got (work of several models: the queue's record when it starts).
    pub(super) fn count_busy(&mut self, w: WorkloadId, milli: u64, on: bool) {
        if on {
            let model = self
                .s
                .job(w)
                .map_or_else(|| self.model_of(w), |j| j.spec.gang.gpu);
            self.busy_on.insert(w, model);
            self.busy_gpus += milli;
            self.busy_by_model[model.index()] += milli;
        } else {
            let model = self.busy_on.remove(&w).unwrap_or_else(|| self.model_of(w));
            self.busy_gpus -= milli;
            self.busy_by_model[model.index()] -= milli;
        }
    }

    pub(super) fn report(&self) -> Report {
        let lost: f64 = self
            .s
            .tenant_report()
            .iter()
            .map(|t| t.lost_gpu_hours)
            .sum();
        // Finished jobs only: one that never finished has no completion time.
        let per_job: Vec<(Time, Time, Time, String, u64)> = self
            .trace
            .jobs
            .iter()
            .zip(&self.runs)
            .filter_map(|(j, r)| {
                Some((
                    j.submit,
                    r.first_start.unwrap_or(j.submit),
                    r.finished?,
                    j.tenant.clone(),
                    u64::from(j.gpus) * j.duration,
                ))
            })
            .collect();
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let mut report = Report::build(
            &self.config.policy,
            &per_job,
            &self.tally,
            self.samples.clone(),
            ratio(self.busy_gpu_seconds, self.up_gpu_seconds * 1000.0),
            lost,
        );
        report.cpu_utilization = ratio(self.busy_cpu_seconds, self.up_cpu_seconds);
        report.sandboxes = self.sandboxes_total;
        report.sandbox_start_latency =
            (!self.latency.is_empty()).then(|| crate::report::Stats::weighted(&self.latency));
        report.services = self.trace.services.len() as u64;
        report.service_shortfall = ratio(self.replica_seconds_short, self.replica_seconds_wanted);
        report.cost = crate::cost::summarise(
            &self.s.spend(self.last_t),
            &self.config.commitments,
            self.config.epoch,
        );
        report.failovers = self.failovers.clone();
        report.jobs = self.trace.jobs.len() as u64;
        report.finished = self.jobs_done;
        report.unfinished = report.jobs - self.jobs_done;
        report.sandboxes_unfinished = self.sandboxes_total - self.sandboxes_ended;
        report.by_model = self.by_model();
        report
    }

    /// Each model's use and waits (models with GPUs in the fleet or jobs in the trace).
    pub(super) fn by_model(&self) -> Vec<crate::report::ModelUse> {
        let n = GpuModel::ALL.len();
        let mut gpus = vec![0u64; n];
        for node in self.s.engine().fleet().nodes() {
            if let Some(m) = node.capacity.gpu_model {
                gpus[m.index()] += u64::from(node.capacity.gpus);
            }
        }
        let (mut jobs, mut finished, mut waited, mut started) =
            (vec![0u64; n], vec![0u64; n], vec![0f64; n], vec![0u64; n]);
        for (i, (j, r)) in self.trace.jobs.iter().zip(&self.runs).enumerate() {
            let m = r
                .on_model
                .unwrap_or_else(|| self.model_of(WorkloadId(i as u64)))
                .index();
            jobs[m] += 1;
            finished[m] += u64::from(r.finished.is_some());
            if let Some(s) = r.first_start {
                started[m] += 1;
                waited[m] += s.saturating_sub(j.submit) as f64;
            }
        }
        let span = self.last_t.max(1) as f64;
        GpuModel::ALL
            .iter()
            .filter(|m| gpus[m.index()] > 0 || jobs[m.index()] > 0)
            .map(|m| {
                let k = m.index();
                crate::report::ModelUse {
                    model: m.name().to_string(),
                    gpus: gpus[k],
                    gpu_utilization: if gpus[k] > 0 {
                        self.busy_model_seconds[k] / (gpus[k] as f64 * 1000.0 * span)
                    } else {
                        0.0
                    },
                    jobs: jobs[k],
                    finished: finished[k],
                    wait_mean_s: if started[k] > 0 {
                        waited[k] / started[k] as f64
                    } else {
                        0.0
                    },
                }
            })
            .collect()
    }
}
