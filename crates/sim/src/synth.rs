//! Synthetic frontier workloads, scaled to a fleet, with documented tunable distributions:
//!
//! - **pre-training runs**: `pretrain_per_year` (default 4) per 500,000 GPUs, each 8,192 to
//!   100,000 GPUs (log-uniform, at most `max_job_share` of the fleet), running weeks,
//!   checkpointing every 30 minutes, priority `training`, tenant `pretrain`;
//! - **research jobs**: the rest, 8 to 1,024 GPUs (powers of two, log-uniform), 10 minutes to
//!   3 days (log-uniform), checkpointing every hour when longer than 2 hours, priority
//!   `research` (one in five `preemptible`), tenants `research-0` .. `research-4`;
//! - arrivals are a Poisson process over the horizon; durations are scaled so that the
//!   offered load is `load` of the fleet's GPU-seconds over the horizon;
//! - declared time limits are the duration rounded up to the hour, plus 20%.
//!
//! Inference services and sandbox bursts are not generated yet.

use crate::rng::Rng;
use crate::trace::TraceJob;
use model::PriorityClass;
use sched::Time;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSpec {
    /// Jobs in the trace.
    pub jobs: usize,
    /// GPUs of the fleet it is scaled to.
    pub fleet_gpus: u64,
    /// Seconds the arrivals span.
    pub horizon: Time,
    /// Offered load as a fraction of the fleet's GPU-seconds over the horizon.
    pub load: f64,
    /// Pre-training runs per year per 500,000 GPUs.
    pub pretrain_per_year: f64,
    /// Largest job as a share of the fleet.
    pub max_job_share: f64,
    /// GPUs per node of the fleet (sizes are rounded to whole nodes).
    pub gpus_per_node: u32,
    /// Seed.
    pub seed: u64,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            jobs: 10_000,
            fleet_gpus: 499_968,
            horizon: 365 * 86_400,
            load: 0.8,
            pretrain_per_year: 4.0,
            max_job_share: 0.2,
            gpus_per_node: 4,
            seed: 1,
        }
    }
}

/// Generates the trace (sorted by submission).
pub fn generate(spec: &SynthSpec) -> Vec<TraceJob> {
    let mut rng = Rng::new(spec.seed);
    let years = spec.horizon as f64 / (365.0 * 86_400.0);
    let n_pretrain = ((spec.pretrain_per_year * years * spec.fleet_gpus as f64 / 500_000.0).round()
        as usize)
        .min(spec.jobs / 10);
    let per_node = u64::from(spec.gpus_per_node.max(1));
    let cap = ((spec.fleet_gpus as f64 * spec.max_job_share) as u64).max(per_node);
    let round = |g: u64| (g.div_ceil(per_node) * per_node).clamp(per_node, cap.max(per_node));
    let mut raw: Vec<(Time, u64, f64, bool, PriorityClass, String)> = Vec::with_capacity(spec.jobs);
    let mut t = 0.0;
    let mean_gap = spec.horizon as f64 / spec.jobs.max(1) as f64;
    let every = spec.jobs.checked_div(n_pretrain).unwrap_or(usize::MAX);
    for i in 0..spec.jobs {
        t += rng.exp(mean_gap);
        let submit = (t as Time).min(spec.horizon);
        let pretrain = n_pretrain > 0 && i % every == every / 2;
        if pretrain {
            let gpus = round(rng.log_uniform(8192.0, 100_000.0) as u64);
            let secs = rng.log_uniform(7.0 * 86_400.0, 42.0 * 86_400.0);
            raw.push((
                submit,
                gpus,
                secs,
                true,
                PriorityClass::Training,
                "pretrain".into(),
            ));
        } else {
            let gpus = round(1u64 << (3 + rng.below(8)));
            let secs = rng.log_uniform(600.0, 3.0 * 86_400.0);
            let priority = if rng.below(5) == 0 {
                PriorityClass::Preemptible
            } else {
                PriorityClass::Research
            };
            raw.push((
                submit,
                gpus,
                secs,
                false,
                priority,
                format!("research-{}", rng.below(5)),
            ));
        }
    }
    // Scale durations to the offered load.
    let offered: f64 = raw.iter().map(|r| r.1 as f64 * r.2).sum();
    let want = spec.load * spec.fleet_gpus as f64 * spec.horizon as f64;
    let scale = if offered > 0.0 { want / offered } else { 1.0 };
    let mut jobs: Vec<TraceJob> = raw
        .into_iter()
        .enumerate()
        .map(|(i, (submit, gpus, secs, pretrain, priority, tenant))| {
            let duration = ((secs * scale).ceil() as Time).max(60);
            let checkpoint_interval = if pretrain {
                Some(1800)
            } else if duration > 7200 {
                Some(3600)
            } else {
                None
            };
            TraceJob {
                id: i as u64 + 1,
                submit,
                duration,
                gpus: gpus as u32,
                tenant,
                priority,
                time_limit: (duration.div_ceil(3600) * 3600).saturating_mul(6) / 5,
                checkpoint_interval,
            }
        })
        .collect();
    jobs.sort_by_key(|j| (j.submit, j.id));
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_scaled_to_load() {
        let spec = SynthSpec {
            jobs: 2000,
            fleet_gpus: 20_000,
            horizon: 30 * 86_400,
            ..SynthSpec::default()
        };
        let a = generate(&spec);
        assert_eq!(a, generate(&spec));
        assert_eq!(a.len(), 2000);
        let offered: f64 = a.iter().map(|j| j.gpus as f64 * j.duration as f64).sum();
        let target = 0.8 * 20_000.0 * 30.0 * 86_400.0;
        assert!(
            (offered / target - 1.0).abs() < 0.05,
            "offered {offered} target {target}"
        );
        assert!(a
            .iter()
            .all(|j| j.gpus % 4 == 0 && j.gpus as u64 <= 4000 && j.time_limit >= j.duration));
        assert!(a.windows(2).all(|w| w[0].submit <= w[1].submit));
    }
}
