//! What a run measures as it goes and reports at its end: busy GPUs per model, and the report
//! (JCTs of finished jobs, utilisation, services, sandboxes, cost, use and waits by model).

use super::*;

impl Sim<'_> {
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
