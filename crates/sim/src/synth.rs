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
//! - declared time limits are the duration rounded up to the hour, plus 20%;
//! - **inference services**: `services_per_500k` (default 8) per 500,000 GPUs, replicas of 8
//!   GPUs (two GB200 trays), a daily load curve with its peak at a random hour between 12:00
//!   and 20:00 and its trough at 30% of the peak, 32 requests in flight per replica; all
//!   services together want `inference_peak_share` (default 10%) of the fleet at their peaks;
//!   they run over the whole horizon; tenants `inference-0` ...;
//! - **sandbox bursts**: `sandbox_bursts_per_day` (default 1) bursts at Poisson times of
//!   10⁵ to 10⁶ sandboxes (log-uniform) per 100,000 CPU hosts, of 1 CPU and 2 GiB each, living
//!   a log-normal time (median 10 minutes, σ = 1); tenant `agents`.
//!
//! The offered training `load` (default 0.7) does not include the services (about 6.5% of the
//! fleet on average) nor the slowdown of gangs placed across network levels: together they
//! bring the demand to about 0.85–0.9 of the fleet, a queue that stays bounded over a year.

use crate::rng::Rng;
use crate::trace::{Lifetime, LoadCurve, Trace, TraceJob, TraceSandboxes, TraceService};
use model::{PlacementRule, PriorityClass};
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
    /// Inference services per 500,000 GPUs (at least one when above 0).
    pub services_per_500k: f64,
    /// Share of the fleet's GPUs all services want at their peaks.
    pub inference_peak_share: f64,
    /// CPU hosts of the fleet (sandbox bursts scale with them; 0: no sandboxes).
    pub cpu_hosts: u64,
    /// Sandbox bursts per day.
    pub sandbox_bursts_per_day: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            jobs: 10_000,
            fleet_gpus: 499_968,
            horizon: 365 * 86_400,
            load: 0.7,
            pretrain_per_year: 4.0,
            max_job_share: 0.2,
            gpus_per_node: 4,
            services_per_500k: 8.0,
            inference_peak_share: 0.1,
            cpu_hosts: 0,
            sandbox_bursts_per_day: 1.0,
            seed: 1,
        }
    }
}

/// Generates the trace: training jobs, inference services and sandbox bursts.
pub fn generate(spec: &SynthSpec) -> Trace {
    let jobs = generate_jobs(spec);
    let mut rng = Rng::new(spec.seed ^ 0x1F3D_5B79);
    let mut next_id = jobs.len() as u64 + 1;
    let mut services = Vec::new();
    let n_services = if spec.services_per_500k > 0.0 && spec.inference_peak_share > 0.0 {
        ((spec.services_per_500k * spec.fleet_gpus as f64 / 500_000.0).round() as u64).max(1)
    } else {
        0
    };
    let replica_gpus = 8u32.div_ceil(spec.gpus_per_node.max(1)) * spec.gpus_per_node.max(1);
    let peak_replicas_each = (spec.inference_peak_share * spec.fleet_gpus as f64
        / f64::from(replica_gpus)
        / n_services.max(1) as f64)
        .floor()
        .max(1.0);
    let inflight = 32.0;
    for k in 0..n_services {
        let peak = peak_replicas_each * inflight;
        let max_replicas = (peak_replicas_each * 1.2).ceil() as u32;
        services.push(TraceService {
            gpu: None,
            id: next_id,
            submit: 0,
            end: Some(spec.horizon.max(1)),
            tenant: format!("inference-{}", k % 4),
            priority: PriorityClass::ProductionInference,
            gpus_per_replica: replica_gpus,
            roles: Vec::new(),
            min_replicas: 1,
            max_replicas,
            inflight_per_replica: inflight,
            load: LoadCurve::Daily {
                base: 0.3 * peak,
                peak,
                peak_hour: 12.0 + 8.0 * rng.unit(),
            },
            spread: None,
            placement: PlacementRule::default(),
            // Production inference survives the loss of a provider.
            min_providers: if max_replicas >= 2 { 2 } else { 0 },
            models: Box::default(),
        });
        next_id += 1;
    }
    let mut sandboxes = Vec::new();
    if spec.cpu_hosts > 0 && spec.sandbox_bursts_per_day > 0.0 {
        let scale = spec.cpu_hosts as f64 / 100_000.0;
        let mean_gap = 86_400.0 / spec.sandbox_bursts_per_day;
        let mut t = rng.exp(mean_gap);
        while (t as Time) < spec.horizon {
            let count = (rng.log_uniform(1e5, 1e6) * scale).round().clamp(1.0, 1e6) as u32;
            sandboxes.push(TraceSandboxes {
                id: next_id,
                submit: t as Time,
                tenant: "agents".into(),
                count,
                cpu_millis: 1000,
                memory_mib: 2048,
                lifetime: Lifetime::Lognormal {
                    median: 600.0,
                    sigma: 1.0,
                },
                max_retries: 1,
            });
            next_id += 1;
            t += rng.exp(mean_gap);
        }
    }
    Trace {
        lines: Default::default(),
        jobs,
        services,
        sandboxes,
        skipped: 0,
    }
}

/// Generates the training jobs (sorted by submission).
pub fn generate_jobs(spec: &SynthSpec) -> Vec<TraceJob> {
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
                gpu: None,
                gpus_per_node: None,
                nodes: None,
                id: i as u64 + 1,
                submit,
                duration,
                gpus: gpus as u32,
                tenant,
                priority,
                time_limit: (duration.div_ceil(3600) * 3600).saturating_mul(6) / 5,
                checkpoint_interval,
                // Work that may be preempted may as well run on spot capacity.
                placement: (priority == PriorityClass::Preemptible).then(|| {
                    Box::new(PlacementRule {
                        preemptible: true,
                        ..PlacementRule::default()
                    })
                }),
                gpu_milli: 0,
                models: Box::default(),
                cpu_millis: 0,
                memory_mib: 0,
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
        let a = generate_jobs(&spec);
        assert_eq!(a, generate_jobs(&spec));
        assert_eq!(a.len(), 2000);
        let offered: f64 = a.iter().map(|j| j.gpus as f64 * j.duration as f64).sum();
        let target = 0.7 * 20_000.0 * 30.0 * 86_400.0;
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

#[cfg(test)]
mod mix_tests {
    use super::*;

    #[test]
    fn services_and_bursts_scale_with_the_fleet() {
        let spec = SynthSpec {
            jobs: 100,
            fleet_gpus: 500_000,
            horizon: 10 * 86_400,
            cpu_hosts: 50_000,
            ..SynthSpec::default()
        };
        let t = generate(&spec);
        assert_eq!(t, generate(&spec));
        assert_eq!(t.services.len(), 8);
        // All services at their peaks want about 10% of the fleet.
        let peak_gpus: f64 = t
            .services
            .iter()
            .map(|v| v.load.at((14.0 * 3600.0) as u64).max(0.0) / v.inflight_per_replica * 8.0)
            .sum();
        assert!(peak_gpus <= 0.1 * 500_000.0 + 1.0, "{peak_gpus}");
        // About one burst a day, half-size for half the CPU hosts.
        assert!(
            (4..=20).contains(&t.sandboxes.len()),
            "{}",
            t.sandboxes.len()
        );
        assert!(t
            .sandboxes
            .iter()
            .all(|b| (50_000..=500_000).contains(&b.count)));
        let ids: std::collections::HashSet<u64> = t
            .jobs
            .iter()
            .map(|j| j.id)
            .chain(t.services.iter().map(|v| v.id))
            .chain(t.sandboxes.iter().map(|b| b.id))
            .collect();
        assert_eq!(ids.len(), 100 + 8 + t.sandboxes.len());
        let none = generate(&SynthSpec {
            services_per_500k: 0.0,
            ..spec
        });
        assert!(none.services.is_empty());
    }
}
