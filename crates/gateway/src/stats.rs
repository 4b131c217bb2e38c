//! A service's load through this gateway: requests in flight (sent, or held waiting for a
//! replica), and the requests that ended since the last report with their latencies. Each
//! report takes the period's figures and starts a new period.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wire::api::ServiceLoad;

/// Latencies are recorded in microseconds up to this (a longer request counts as this long).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One service's counters.
#[derive(Debug)]
pub struct ServiceStats {
    /// Requests in flight now.
    pub inflight: AtomicU32,
    period: Mutex<Period>,
}

#[derive(Debug)]
struct Period {
    started: Instant,
    /// Two significant digits: about 16 KB a service, reset (not reallocated) each period.
    latencies_us: Histogram<u32>,
}

impl Default for ServiceStats {
    fn default() -> Self {
        ServiceStats {
            inflight: AtomicU32::new(0),
            period: Mutex::new(Period::new()),
        }
    }
}

impl Period {
    fn new() -> Period {
        Period {
            started: Instant::now(),
            latencies_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
                .expect("constant bounds are valid"),
        }
    }
}

impl ServiceStats {
    /// A request ended after `took`.
    pub fn ended(&self, took: Duration) {
        let us = (took.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        let mut p = self.lock();
        // Within bounds by the clamp: recording cannot fail.
        let _ = p.latencies_us.record(us);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Period> {
        match self.period.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The load of service `service` over the period now ending; a new period starts.
    pub fn report(&self, service: u64) -> ServiceLoad {
        let mut p = self.lock();
        let secs = p.started.elapsed().as_secs_f64().max(1e-3);
        p.started = Instant::now();
        let h = &mut p.latencies_us;
        let at = |h: &Histogram<u32>, q: f64| {
            (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
        };
        let load = ServiceLoad {
            service,
            inflight: self.inflight.load(Ordering::Relaxed),
            requests_per_s: h.len() as f64 / secs,
            p50_ms: at(h, 0.50),
            p95_ms: at(h, 0.95),
            p99_ms: at(h, 0.99),
        };
        if !h.is_empty() {
            h.reset();
        }
        load
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_report_gives_the_period_and_starts_another() {
        let s = ServiceStats::default();
        for ms in 1..=100u64 {
            s.ended(Duration::from_millis(ms));
        }
        s.inflight.store(7, Ordering::Relaxed);
        let r = s.report(3);
        assert_eq!((r.service, r.inflight), (3, 7));
        let p50 = r.p50_ms.unwrap();
        let p99 = r.p99_ms.unwrap();
        // Two significant digits.
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
        assert!((97.0..=101.0).contains(&p99), "p99 {p99}");
        assert!(r.requests_per_s > 0.0);
        let next = s.report(3);
        assert_eq!((next.p95_ms, next.requests_per_s), (None, 0.0));
        // An absurd duration is clamped, not lost.
        s.ended(Duration::from_secs(1 << 40));
        assert!(s.report(3).p99_ms.unwrap() >= 3_600_000.0 * 0.99);
    }
}
