//! Money and failures in the simulator: what happened when a scope failed (failover), and the
//! what-if of losing each provider for a while (one more run per provider). The spend summary
//! itself ([`CostSummary`]) is the queue's (`sched::cost`), shared with the live server.

use crate::report::Report;
use crate::run::SimConfig;
use crate::trace::Trace;
use model::Fleet;
pub use sched::cost::{summarise, CommitmentStatus, CostSummary, SpendRow};
use sched::Time;
use serde::Serialize;

/// What a scope's failure displaced, and what the queue did about it in the same instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Failover {
    /// The failed scope.
    pub scope: String,
    /// When.
    pub at: Time,
    /// Inference replicas stopped by the failure.
    pub replicas_displaced: u64,
    /// ... of which started elsewhere in the same instant.
    pub replicas_replaced: u64,
    /// Training jobs stopped by the failure (requeued from their last checkpoint).
    pub jobs_displaced: u64,
    /// ... of which started elsewhere in the same instant.
    pub jobs_replaced: u64,
    /// Displaced work restarted in the order the queue owes it: replicas before training,
    /// training by priority class.
    pub in_priority_order: bool,
    /// Displaced work left waiting: why (the queue's reason, grouped), how many, and up to
    /// three examples.
    pub not_replaced: Vec<NotReplaced>,
}

/// A group of displaced workloads left waiting for one reason.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NotReplaced {
    /// The queue's reason.
    pub reason: String,
    /// How many.
    pub count: u64,
    /// Up to three of them.
    pub examples: Vec<String>,
}

/// The cost and the displaced work of losing one provider for a while, against the baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutageImpact {
    /// The provider lost.
    pub provider: String,
    /// From (seconds into the run).
    pub at: Time,
    /// For how long, seconds.
    pub lasts: Time,
    /// Spend of the run with the outage.
    pub total_usd: f64,
    /// More (or less) than the baseline.
    pub extra_usd: f64,
    /// Committed capacity paid for and not used, more than the baseline (the lost provider's
    /// capacity is still paid for while it is dark).
    pub extra_idle_committed_usd: f64,
    /// On-demand and spot spend more than the baseline (work that moved to paid capacity).
    pub extra_paid_usd: f64,
    /// GPU-hours of work lost more than the baseline.
    pub extra_gpu_hours_lost: f64,
    /// Restarts more than the baseline.
    pub extra_restarts: i64,
    /// Sandboxes lost more than the baseline.
    pub extra_sandboxes_lost: i64,
    /// Service shortfall of the run (share of wanted replica-seconds not running), and the
    /// baseline's.
    pub service_shortfall: f64,
    /// The baseline's service shortfall.
    pub baseline_service_shortfall: f64,
    /// Mean job completion time, seconds, more than the baseline.
    pub extra_mean_jct_s: f64,
    /// What the failure displaced and what was re-placed at once.
    pub failover: Option<Failover>,
}

fn paid(s: &CostSummary) -> f64 {
    s.by_pricing
        .iter()
        .filter(|r| r.name != "committed")
        .map(|r| r.usd)
        .sum()
}

/// Runs the trace once more per provider, with that provider failed from `at` for `lasts`
/// seconds, and compares each run with `baseline` (a run of the same config). Runs go on up
/// to `threads` threads; the result is in provider order and the same for any thread count.
pub fn provider_outages(
    fleet: &Fleet,
    trace: &Trace,
    config: &SimConfig,
    baseline: &Report,
    at: Time,
    lasts: Time,
    threads: usize,
) -> Result<Vec<OutageImpact>, String> {
    let providers: Vec<String> = {
        let mut v: Vec<String> = fleet.pools().iter().map(|p| p.cloud.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let run_one = |provider: &String| -> Result<OutageImpact, String> {
        let mut cfg = config.clone();
        cfg.faults.changes.push(crate::faults::Change {
            kind: crate::faults::ChangeKind::Fail,
            at,
            scope: provider.clone(),
            lasts: Some(lasts),
        });
        let r = crate::run::simulate(fleet.clone(), trace, &cfg, &mut |_, _| {})
            .map_err(|e| format!("what-if without {provider}: {e}"))?;
        let (a, b) = (&r.cost, &baseline.cost);
        Ok(OutageImpact {
            provider: provider.clone(),
            at,
            lasts,
            total_usd: a.total_usd,
            extra_usd: a.total_usd - b.total_usd,
            extra_idle_committed_usd: a.idle_committed_usd - b.idle_committed_usd,
            extra_paid_usd: paid(a) - paid(b),
            extra_gpu_hours_lost: r.gpu_hours_lost - baseline.gpu_hours_lost,
            extra_restarts: r.restarts as i64 - baseline.restarts as i64,
            extra_sandboxes_lost: r.sandboxes_lost as i64 - baseline.sandboxes_lost as i64,
            service_shortfall: r.service_shortfall,
            baseline_service_shortfall: baseline.service_shortfall,
            extra_mean_jct_s: r.jct.mean - baseline.jct.mean,
            failover: r.failovers.iter().find(|f| f.scope == *provider).cloned(),
        })
    };
    let threads = threads.clamp(1, providers.len().max(1));
    let mut results: Vec<Option<Result<OutageImpact, String>>> = vec![None; providers.len()];
    std::thread::scope(|s| {
        let chunks: Vec<Vec<usize>> = (0..threads)
            .map(|t| (t..providers.len()).step_by(threads).collect())
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|idx| {
                let run_one = &run_one;
                let providers = &providers;
                s.spawn(move || {
                    idx.into_iter()
                        .map(|i| (i, run_one(&providers[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(done) => {
                    for (i, r) in done {
                        results[i] = Some(r);
                    }
                }
                Err(_) => {
                    // A panicking run is reported as an error below (its slots stay empty).
                }
            }
        }
    });
    results
        .into_iter()
        .zip(&providers)
        .map(|(r, p)| r.unwrap_or_else(|| Err(format!("what-if without {p}: the run panicked"))))
        .collect()
}
