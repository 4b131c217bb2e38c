//! Autoscaling policy for inference services: turns observed load into a desired replica
//! count, with stabilisation windows (scale up fast, down slowly). Pure: the caller passes
//! the time and the observations; the result goes to [`crate::Scheduler::scale_service`].

use crate::engine::Time;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What the policy aims at. Either target may be absent; with both, the larger
/// recommendation wins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoscalePolicy {
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// In-flight requests one replica should carry.
    pub target_inflight_per_replica: Option<f64>,
    /// p95 latency to stay under, in milliseconds.
    pub target_p95_ms: Option<f64>,
    /// A scale-up happens only if every recommendation in this window asks for more
    /// (0: at once).
    pub scale_up_window: Time,
    /// A scale-down happens only to the largest recommendation seen in this window.
    pub scale_down_window: Time,
}

impl Default for AutoscalePolicy {
    fn default() -> Self {
        AutoscalePolicy {
            min_replicas: 1,
            max_replicas: 100,
            target_inflight_per_replica: Some(32.0),
            target_p95_ms: None,
            scale_up_window: 0,
            scale_down_window: 300,
        }
    }
}

/// One observation of a service's load.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Requests in flight over all replicas.
    pub inflight: f64,
    /// Observed p95 latency in milliseconds, if measured.
    pub p95_ms: Option<f64>,
}

/// The policy with its recent recommendations.
#[derive(Clone, Debug)]
pub struct Autoscaler {
    policy: AutoscalePolicy,
    history: VecDeque<(Time, u32)>,
}

impl Autoscaler {
    /// A scaler for `policy` with no history.
    pub fn new(policy: AutoscalePolicy) -> Self {
        Autoscaler {
            policy,
            history: VecDeque::new(),
        }
    }

    /// What the load alone asks for, within bounds.
    pub fn recommend(&self, current: u32, load: &Load) -> u32 {
        let p = &self.policy;
        let mut want: Option<f64> = None;
        if let Some(t) = p.target_inflight_per_replica.filter(|t| *t > 0.0) {
            want = Some((load.inflight.max(0.0) / t).ceil());
        }
        if let (Some(t), Some(obs)) = (p.target_p95_ms.filter(|t| *t > 0.0), load.p95_ms) {
            // Latency roughly scales with load per replica: proportional correction.
            let by_latency = (f64::from(current.max(1)) * obs.max(0.0) / t).ceil();
            want = Some(want.map_or(by_latency, |w| w.max(by_latency)));
        }
        let want = want.unwrap_or(f64::from(current));
        let lo = p.min_replicas.min(p.max_replicas);
        (want.min(f64::from(u32::MAX)) as u32).clamp(lo, p.max_replicas)
    }

    /// Records an observation at `now` and returns the desired replica count.
    pub fn observe(&mut self, now: Time, current: u32, load: &Load) -> u32 {
        let rec = self.recommend(current, load);
        self.history.push_back((now, rec));
        let keep = self
            .policy
            .scale_up_window
            .max(self.policy.scale_down_window);
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) > keep)
        {
            self.history.pop_front();
        }
        let within = |w: Time| {
            self.history
                .iter()
                .filter(move |(t, _)| now.saturating_sub(*t) <= w)
                .map(|(_, r)| *r)
        };
        let up = within(self.policy.scale_up_window).min().unwrap_or(rec);
        let down = within(self.policy.scale_down_window).max().unwrap_or(rec);
        if up > current {
            up
        } else if down < current {
            down
        } else {
            current
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(policy: AutoscalePolicy, series: &[(Time, f64)]) -> Vec<u32> {
        let mut a = Autoscaler::new(policy);
        let mut current = 1;
        series
            .iter()
            .map(|(t, inflight)| {
                current = a.observe(
                    *t,
                    current,
                    &Load {
                        inflight: *inflight,
                        p95_ms: None,
                    },
                );
                current
            })
            .collect()
    }

    #[test]
    fn scales_up_at_once_and_down_only_after_the_window() {
        // One observation a minute: a ramp, a one-minute dip, then a sustained drop.
        let load = [
            100.0, 400.0, 800.0, 100.0, 800.0, 800.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0,
            100.0,
        ];
        let series: Vec<(Time, f64)> = load
            .iter()
            .enumerate()
            .map(|(i, l)| (i as Time * 60, *l))
            .collect();
        let got = run(AutoscalePolicy::default(), &series);
        // 32 in flight per replica: 100 → 4, 400 → 13, 800 → 25. The dip at minute 3 does not
        // scale down; after five minutes of 100 (window 300 s) it goes back to 4.
        assert_eq!(got, vec![4, 13, 25, 25, 25, 25, 25, 25, 25, 25, 25, 4, 4]);
    }

    #[test]
    fn up_window_ignores_a_single_spike() {
        let policy = AutoscalePolicy {
            scale_up_window: 120,
            ..AutoscalePolicy::default()
        };
        let series = [
            (0, 64.0),
            (60, 64.0),
            (120, 640.0),
            (180, 64.0),
            (240, 640.0),
            (300, 640.0),
            (360, 640.0),
        ];
        let got = run(policy, &series);
        assert_eq!(got, vec![2, 2, 2, 2, 2, 2, 20]);
    }

    #[test]
    fn latency_target_and_bounds() {
        let policy = AutoscalePolicy {
            min_replicas: 2,
            max_replicas: 10,
            target_inflight_per_replica: None,
            target_p95_ms: Some(100.0),
            ..AutoscalePolicy::default()
        };
        let mut a = Autoscaler::new(policy);
        // 4 replicas at 250 ms p95 → 10; far over target stays at the maximum.
        assert_eq!(
            a.observe(
                0,
                4,
                &Load {
                    inflight: 0.0,
                    p95_ms: Some(250.0)
                }
            ),
            10
        );
        assert_eq!(
            a.observe(
                60,
                10,
                &Load {
                    inflight: 0.0,
                    p95_ms: Some(900.0)
                }
            ),
            10
        );
        // No latency reading: keep the current count; never below the minimum.
        assert_eq!(
            a.recommend(
                1,
                &Load {
                    inflight: 0.0,
                    p95_ms: None
                }
            ),
            2
        );
    }
}
