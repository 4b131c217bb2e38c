//! The load gateways report for services (`POST /v1/gateway/load`), kept in memory only: each
//! gateway's latest report per service, forgotten after [`REPORT_TTL`]. The writer's clock
//! feeds the sum into each autoscaled service's `sched::autoscale::Autoscaler` once a second;
//! a change of the count it wants is journaled like an operator's scaling.

use crate::api::ServiceLoad;
use crate::state::Autoscaled;
use sched::autoscale::{Autoscaler, Load};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A report older than this no longer counts (its gateway stopped, or lost the server).
pub const REPORT_TTL: Duration = Duration::from_secs(10);

/// Most gateways counted for one service: reports from more are refused.
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
}

/// A report refused: too many gateways for one service.
#[derive(Debug, thiserror::Error)]
#[error("service {service} already has reports from {MAX_GATEWAYS_PER_SERVICE} gateways")]
pub struct TooManyGateways {
    /// The service.
    pub service: u64,
}

impl LiveLoad {
    /// Keeps `gateway`'s report for each of its services (checked and authorised by the
    /// caller).
    pub fn report(
        &mut self,
        gateway: &str,
        services: Vec<ServiceLoad>,
        now: Instant,
    ) -> Result<(), TooManyGateways> {
        self.forget_stale(now);
        for load in services {
            let by_gateway = self.reports.entry(load.service).or_default();
            if !by_gateway.contains_key(gateway) && by_gateway.len() >= MAX_GATEWAYS_PER_SERVICE {
                return Err(TooManyGateways {
                    service: load.service,
                });
            }
            by_gateway.insert(gateway.to_string(), Report { load, at: now });
        }
        Ok(())
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

    /// The replica counts the autoscaled `services` want now (at `at`, Unix seconds), where
    /// they differ from what each wants already. Each service is observed at most once a
    /// second; one that no gateway reports is left as it is.
    pub fn scalings(&mut self, services: &[Autoscaled], at: u64, now: Instant) -> Vec<(u64, u32)> {
        self.forget_stale(now);
        self.scalers
            .retain(|id, _| services.iter().any(|s| s.id.0 == *id));
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
        live.report("a", vec![load(1, 10)], t0).unwrap();
        live.report("b", vec![load(1, 10)], t0).unwrap();
        assert_eq!(live.load(1, t0).unwrap().inflight, 20.0);
        assert_eq!(live.scalings(&[autoscaled(1)], 100, t0), vec![(1, 5)]);
        // Observed once a second only.
        assert!(live.scalings(&[autoscaled(1)], 100, t0).is_empty());
        // Load drops: the count holds for the down window, then follows.
        live.report("a", vec![load(1, 0)], t0).unwrap();
        live.report("b", vec![load(1, 0)], t0).unwrap();
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
            live.report(&format!("g{g}"), vec![load(7, 1)], now)
                .unwrap();
        }
        assert!(live.report("one-more", vec![load(7, 1)], now).is_err());
        // A gateway already counted still reports.
        live.report("g0", vec![load(7, 2)], now).unwrap();
    }
}
