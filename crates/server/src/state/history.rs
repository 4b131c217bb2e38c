//! What the history keeps of each workload: the accounting of a job's runs (when it first
//! started, GPU-seconds held, GPU-seconds lost, cost at its nodes' prices), kept as its runs
//! start and end, live and in replay alike; and the summaries ([`SummaryV2`]) written when a
//! record ends workloads (`ended_in`) or when the journal is compacted (`summaries`).

use super::*;
use crate::journal::history::{SummaryV2, SUMMARY_FORMAT};
use sched::{BatchRecord, JobRecord, ServiceRecord};

impl ControlPlane {
    /// A run of `job` started at `at` on the nodes now in its `ran_on`.
    pub(super) fn run_started(&mut self, job: JobId, at: u64) {
        if let Some(m) = self.jobs.get_mut(&job) {
            m.started_at.get_or_insert(at);
            m.run_since = Some(at);
        }
    }

    /// The run of `job` in progress (if any) ended at `at`: its GPU-seconds and cost count.
    pub(super) fn run_ended(&mut self, job: JobId, at: u64) {
        self.endpoint_gone(job);
        let fleet = self.sched.engine().fleet();
        let Some(m) = self.jobs.get_mut(&job) else {
            return;
        };
        if let Some(since) = m.run_since.take() {
            let (gpu_seconds, cost) = run_cost(fleet, m, at.saturating_sub(since));
            m.gpu_seconds = m.gpu_seconds.saturating_add(gpu_seconds);
            m.cost_micro_usd = m.cost_micro_usd.saturating_add(cost);
        }
    }

    /// Work of `job` lost to a preemption or a failure.
    pub(super) fn work_lost(&mut self, job: JobId, gpu_hours: f64) {
        if let Some(m) = self.jobs.get_mut(&job) {
            let seconds = (gpu_hours * 3600.0).round().max(0.0) as u64;
            m.lost_gpu_seconds = m.lost_gpu_seconds.saturating_add(seconds);
        }
    }

    /// The summaries of the workloads `record` ended (jobs, batches, deleted services), for
    /// the history rows written with it.
    pub fn ended_in(&self, record: &Record) -> Vec<SummaryV2> {
        let mut out = Vec::new();
        for j in &record.outcome.jobs {
            if let JobRecord::Ended { id, .. } = j {
                if let Some(s) = self.job_summary(JobId(id.0)) {
                    out.push(s);
                }
            }
        }
        for b in &record.outcome.batches {
            if let BatchRecord::Ended { id } = b {
                if let Some(s) = self.batch_summary(BatchId(id.0)) {
                    out.push(s);
                }
            }
        }
        for s in &record.outcome.services {
            if let ServiceRecord::Deleted { id } = s {
                if let Some(s) = self.service_summary(ServiceId(*id)) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// A summary of every job, batch and service (compaction, and the first start on a store
    /// whose history was not indexed yet).
    pub fn summaries(&self) -> Vec<SummaryV2> {
        let jobs = self.jobs.keys().filter_map(|id| self.job_summary(*id));
        let batches = self.batches.keys().filter_map(|id| self.batch_summary(*id));
        let services = self
            .services
            .keys()
            .filter_map(|id| self.service_summary(*id));
        jobs.chain(batches).chain(services).collect()
    }

    pub(super) fn job_summary(&self, id: JobId) -> Option<SummaryV2> {
        let m = self.jobs.get(&id)?;
        let fleet = self.sched.engine().fleet();
        let state = match (self.job_state(id), m.exit_code) {
            (Some(JobState::Finished), Some(code)) if code != 0 => "failed",
            (Some(s), _) => views::state_name(s),
            (None, _) => "unknown",
        };
        // A live job's run in progress counts up to now.
        let (running_seconds, running_cost) = m.run_since.map_or((0, 0), |since| {
            run_cost(fleet, m, self.now.saturating_sub(since))
        });
        let gpu_seconds = m.gpu_seconds.saturating_add(running_seconds);
        let cost = m.cost_micro_usd.saturating_add(running_cost);
        Some(SummaryV2 {
            v: SUMMARY_FORMAT,
            kind: "job".into(),
            id: id.0,
            name: m.name.clone(),
            tenant: self.tenant_name(m.tenant).to_string(),
            state: state.into(),
            submitted_at: m.submitted_at,
            started_at: m.started_at,
            ended_at: m.ended_at,
            exit_code: m.exit_code,
            restarts: m.restarts,
            size: m.gpus,
            nodes: self.ran_on_names(id, m),
            gpu_seconds: Some(gpu_seconds),
            lost_gpu_seconds: Some(m.lost_gpu_seconds),
            cost_micro_usd: Some(cost),
        })
    }

    fn batch_summary(&self, id: BatchId) -> Option<SummaryV2> {
        let v = self.batch_view(id)?;
        Some(SummaryV2 {
            v: SUMMARY_FORMAT,
            kind: "batch".into(),
            id: id.0,
            name: v.name,
            tenant: v.tenant,
            state: v.state,
            submitted_at: v.submitted_at,
            started_at: Some(v.submitted_at),
            ended_at: v.ended_at,
            exit_code: None,
            restarts: v.moved,
            size: u64::from(v.count),
            nodes: Vec::new(),
            gpu_seconds: Some(0),
            lost_gpu_seconds: Some(0),
            cost_micro_usd: None,
        })
    }

    fn service_summary(&self, id: ServiceId) -> Option<SummaryV2> {
        let m = self.services.get(&id)?;
        Some(SummaryV2 {
            v: SUMMARY_FORMAT,
            kind: "service".into(),
            id: id.0,
            name: m.name.clone(),
            tenant: self.tenant_name(m.tenant).to_string(),
            state: m.state_name().into(),
            submitted_at: m.created_at,
            started_at: None,
            ended_at: m.deleted_at,
            exit_code: None,
            restarts: m.replaced,
            size: m.spec.replica.total_gpus(),
            nodes: Vec::new(),
            gpu_seconds: None,
            lost_gpu_seconds: None,
            cost_micro_usd: None,
        })
    }
}

/// GPU-seconds and cost (millionths of a USD) of `seconds` of a run of `m` on its `ran_on`
/// nodes: each node is paid, at its pool's price, for the part of it the job held as the
/// spend ledger counts it ([`sched::cost::held_units`]): its GPUs or its share of one, or on
/// a node without GPUs all of it.
fn run_cost(fleet: &Fleet, m: &JobMeta, seconds: u64) -> (u64, u64) {
    use sched::cost::{held_units, node_units, UNITS_PER_GPU};
    let gpu_milli = model::workload::gpu_thousandths(m.gpus, m.gpu_milli);
    let gpu_seconds = gpu_milli.saturating_mul(seconds) / UNITS_PER_GPU;
    let per_node_milli = gpu_milli / m.ran_on.len().max(1) as u64;
    let mut usd = 0.0;
    for n in &m.ran_on {
        let node = fleet.node(*n);
        let share = if node.capacity.gpus == 0 {
            1.0
        } else {
            let whole = node_units(node.capacity.gpus, node.capacity.cpu_millis);
            held_units(node, per_node_milli, 0) as f64 / whole as f64
        };
        usd += fleet.pool(node.pool).price_per_hour * share * seconds as f64 / 3600.0;
    }
    (gpu_seconds, (usd * 1e6).round().max(0.0) as u64)
}
