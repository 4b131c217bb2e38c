//! The load gateways report for services (`POST /v1/gateway/load`), kept in memory only: each
//! gateway's latest report per service (at most [`MAX_GATEWAYS_PER_SERVICE`] gateways a
//! service: reports from more are left out), forgotten after [`REPORT_TTL`]. The writer's
//! clock feeds the sum into each autoscaled service's `sched::autoscale::Autoscaler` once a
//! second; a change of the count it wants is journaled like an operator's scaling.

use crate::api::ServiceLoad;
use crate::state::Autoscaled;
use sched::autoscale::{Autoscaler, Load};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A report older than this no longer counts (its gateway stopped, or lost the server).
pub const REPORT_TTL: Duration = Duration::from_secs(10);

/// Most gateways counted for one service: reports from more are left out.
pub const MAX_GATEWAYS_PER_SERVICE: usize = 256;

/// One gateway's latest report for one service.
#[derive(Clone, Debug)]
struct Report {
    load: ServiceLoad,
    at: Instant,
}

/// Gateways' reports and the autoscalers they feed.
#[derive(Debug, Default)]
pub struct LiveLoad {
    /// By service id, then gateway name.
    reports: HashMap<u64, HashMap<String, Report>>,
    /// By service id: the policy's recent recommendations, and the second it last observed.
    scalers: HashMap<u64, (Autoscaler, u64)>,
    /// The second the autoscaled services were last looked at.
    last_look: u64,
}

impl LiveLoad {
    /// Keeps `gateway`'s report for each of its services (checked and authorised by the
    /// caller); the services left out because they have reports from
    /// [`MAX_GATEWAYS_PER_SERVICE`] other gateways already.
    pub fn report(&mut self, gateway: &str, services: Vec<ServiceLoad>, now: Instant) -> Vec<u64> {
        let mut left_out = Vec::new();
        for load in services {
            let by_gateway = self.reports.entry(load.service).or_default();
            if !by_gateway.contains_key(gateway) && by_gateway.len() >= MAX_GATEWAYS_PER_SERVICE {
                left_out.push(load.service);
                continue;
            }
            by_gateway.insert(gateway.to_string(), Report { load, at: now });
        }
        left_out
    }

    /// Whether the autoscaled services are due a look at second `at` (once a second: the
    /// pass loop wakes far more often).
    pub fn due(&mut self, at: u64) -> bool {
        if self.last_look == at {
            return false;
        }
        self.last_look = at;
        true
    }

    fn forget_stale(&mut self, now: Instant) {
        self.reports.retain(|_, by_gateway| {
            by_gateway.retain(|_, r| now.duration_since(r.at) < REPORT_TTL);
            !by_gateway.is_empty()
        });
    }

    /// Service `id`'s load over all gateways reporting it: in-flight requests add up, the
    /// latency is the worst gateway's. `None` while no gateway reports it.
    pub fn load(&self, id: u64, now: Instant) -> Option<Load> {
        let fresh: Vec<&Report> = self
            .reports
            .get(&id)?
            .values()
            .filter(|r| now.duration_since(r.at) < REPORT_TTL)
            .collect();
        if fresh.is_empty() {
            return None;
        }
        Some(Load {
            inflight: fresh.iter().map(|r| f64::from(r.load.inflight)).sum(),
            p95_ms: fresh
                .iter()
                .filter_map(|r| r.load.p95_ms)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))),
        })
    }

    /// Service `id`'s requests in flight, requests a second and worst p95 latency in seconds
    /// over all gateways reporting it.
    pub fn figures(&self, id: u64, now: Instant) -> Option<(f64, f64, Option<f64>)> {
        let load = self.load(id, now)?;
        let rate = self.reports.get(&id).map_or(0.0, |by_gateway| {
            by_gateway
                .values()
                .filter(|r| now.duration_since(r.at) < REPORT_TTL)
                .map(|r| r.load.requests_per_s)
                .sum()
        });
        Some((load.inflight, rate, load.p95_ms.map(|ms| ms / 1000.0)))
    }

    /// The replica counts the autoscaled `services` want now (at `at`, Unix seconds), where
    /// they differ from what each wants already. Each service is observed at most once a
    /// second; one that no gateway reports is left as it is.
    pub fn scalings(&mut self, services: &[Autoscaled], at: u64, now: Instant) -> Vec<(u64, u32)> {
        self.forget_stale(now);
        let live: std::collections::HashSet<u64> = services.iter().map(|s| s.id.0).collect();
        self.scalers.retain(|id, _| live.contains(id));
        let mut out = Vec::new();
        for s in services {
            let Some(load) = self.load(s.id.0, now) else {
                continue;
            };
            let (scaler, last) = self
                .scalers
                .entry(s.id.0)
                .or_insert_with(|| (Autoscaler::new(s.policy.clone()), u64::MAX));
            if *last == at {
                continue;
            }
            *last = at;
            let want = scaler.observe(at, s.desired, &load);
            if want != s.desired {
                out.push((s.id.0, want));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::state::ServiceId;

    fn load(service: u64, inflight: u32) -> ServiceLoad {
        ServiceLoad {
            service,
            inflight,
            requests_per_s: 0.0,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
        }
    }

    fn autoscaled(desired: u32) -> Autoscaled {
        let targets = crate::state::AutoscaleTargets {
            target_inflight_per_replica: Some(4),
            target_p95_ms: None,
            scale_up_window_s: 0,
            scale_down_window_s: 3,
        };
        Autoscaled {
            id: ServiceId(1),
            desired,
            policy: targets.policy(1, 10),
        }
    }

    #[test]
    fn gateways_add_up_scale_up_at_once_and_down_after_the_window() {
        let mut live = LiveLoad::default();
        let t0 = Instant::now();
        // No report: nothing to go by.
        assert!(live.scalings(&[autoscaled(1)], 100, t0).is_empty());
        live.report("a", vec![load(1, 10)], t0);
        live.report("b", vec![load(1, 10)], t0);
        assert_eq!(live.load(1, t0).unwrap().inflight, 20.0);
        assert_eq!(live.scalings(&[autoscaled(1)], 100, t0), vec![(1, 5)]);
        // Observed once a second only.
        assert!(live.scalings(&[autoscaled(1)], 100, t0).is_empty());
        // Load drops: the count holds for the down window, then follows.
        live.report("a", vec![load(1, 0)], t0);
        live.report("b", vec![load(1, 0)], t0);
        assert!(live.scalings(&[autoscaled(5)], 101, t0).is_empty());
        assert!(live.scalings(&[autoscaled(5)], 103, t0).is_empty());
        assert_eq!(live.scalings(&[autoscaled(5)], 104, t0), vec![(1, 1)]);
        // Reports go stale: the service is left alone.
        let later = t0 + REPORT_TTL;
        assert!(live.load(1, later).is_none());
        assert!(live.scalings(&[autoscaled(5)], 200, later).is_empty());
    }

    #[test]
    fn gateways_per_service_are_bounded() {
        let mut live = LiveLoad::default();
        let now = Instant::now();
        for g in 0..MAX_GATEWAYS_PER_SERVICE {
            assert!(live
                .report(&format!("g{g}"), vec![load(7, 1)], now)
                .is_empty());
        }
        // One gateway too many is left out for that service, not for the others it reports.
        assert_eq!(
            live.report("one-more", vec![load(7, 1), load(8, 1)], now),
            vec![7]
        );
        assert_eq!(live.load(8, now).unwrap().inflight, 1.0);
        // A gateway already counted still reports.
        assert!(live.report("g0", vec![load(7, 2)], now).is_empty());
        assert_eq!(live.load(7, now).unwrap().inflight, 257.0);
        // Once a second.
        assert!(live.due(5) && !live.due(5) && live.due(6));
    }
}
