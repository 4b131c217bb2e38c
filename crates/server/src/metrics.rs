//! `/metrics`: the server in Prometheus's OpenMetrics text (the `prometheus-client` crate).
//! Two kinds of series:
//! - measured as things happen (kept here, in memory, since start): API requests by route,
//!   method and status with their latency; journal commits (latency, records, and the
//!   writer's transactions, whose ratio to records is the group-commit batch size); scheduling
//!   passes' duration; heartbeats, and nodes declared down for missing theirs;
//! - counted from the state at each scrape ([`crate::state::gauges::Gauges`]): nodes by state,
//!   GPUs and CPU by state, model, pool and zone, whole free NVLink domains, jobs by state,
//!   class and tenant, sandboxes, service replicas and spend.
//!
//! Labels come only from bounded sets: route templates (not paths), the fleet's pools and
//! zones, tenants, classes and live services.

use crate::state::gauges::{CapacityCount, Gauges, Place};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// An API request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// GET, POST…
    pub method: String,
    /// The route's template (`/v1/jobs/{id}`), or `unmatched`.
    pub route: String,
    /// The answer's status.
    pub status: u16,
}

/// An API route's labels, for its latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// GET, POST…
    pub method: String,
    /// The route's template.
    pub route: String,
}

/// What is measured as it happens.
#[derive(Debug)]
pub struct Metrics {
    /// API requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// Their latency, to the answer's head (a streamed answer goes on after).
    pub request_seconds: Family<RouteLabels, Histogram>,
    /// From a commit's records handed to the journal to their being durable.
    pub commit_seconds: Histogram,
    /// Records per commit.
    pub commit_records: Histogram,
    /// Scheduling passes' duration (the pass itself, under the state's lock).
    pub pass_seconds: Histogram,
    /// How long the state was held to copy it for a snapshot (every request waits meanwhile).
    pub snapshot_copy_seconds: Histogram,
    /// Heartbeats answered.
    pub heartbeats: Counter,
    /// Nodes declared down because their agent went quiet.
    pub missed_heartbeats: Counter,
    /// At a frontend: heartbeats passed on to the writer in full.
    pub heartbeats_passed_on: Counter,
    /// At a frontend: lists of live nodes sent to the writer.
    pub alive_lists: Counter,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            commit_seconds: latency_histogram(),
            commit_records: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            pass_seconds: latency_histogram(),
            snapshot_copy_seconds: latency_histogram(),
            heartbeats: Counter::default(),
            missed_heartbeats: Counter::default(),
            heartbeats_passed_on: Counter::default(),
            alive_lists: Counter::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapacityLabels {
    state: String,
    provider: String,
    pool: String,
    zone: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    state: String,
    class: String,
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    service: String,
    tenant: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpendLabels {
    provider: String,
    pricing: String,
}

/// Sets `family`'s gauges for each place's free, used and unavailable capacity.
fn capacity(
    family: &Family<CapacityLabels, Gauge>,
    counts: &std::collections::BTreeMap<Place, CapacityCount>,
) {
    for (place, c) in counts {
        for (state, n) in [
            ("free", c.free),
            ("used", c.used),
            ("unavailable", c.unavailable),
        ] {
            let labels = CapacityLabels {
                state: state.into(),
                provider: place.provider.clone(),
                pool: place.pool.clone(),
                zone: place.zone.clone(),
                model: place.model.clone(),
            };
            family.get_or_create(&labels).set(n as i64);
        }
    }
}

impl Metrics {
    /// Every series, in OpenMetrics text: those measured, then `state` counted, then the
    /// journal writer's `groups` and `records` (on the cell's writer; a frontend has none).
    pub fn render(&self, state: &Gauges, writer: Option<&store::WriterStats>) -> String {
        let mut r = Registry::with_prefix("stargrid");
        r.register(
            "http_requests",
            "API requests answered",
            self.requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "API request latency to the answer's head",
            Unit::Seconds,
            self.request_seconds.clone(),
        );
        r.register_with_unit(
            "journal_commit_duration",
            "From a commit's records handed to the journal to their being durable",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        r.register(
            "journal_commit_records",
            "Records per commit",
            self.commit_records.clone(),
        );
        r.register_with_unit(
            "scheduling_pass_duration",
            "A scheduling pass's duration",
            Unit::Seconds,
            self.pass_seconds.clone(),
        );
        r.register_with_unit(
            "snapshot_copy_duration",
            "How long the state was held to copy it for a snapshot",
            Unit::Seconds,
            self.snapshot_copy_seconds.clone(),
        );
        r.register(
            "heartbeats",
            "Node heartbeats taken (a request may carry many)",
            self.heartbeats.clone(),
        );
        r.register(
            "heartbeats_missed",
            "Nodes declared down because their agent went quiet",
            self.missed_heartbeats.clone(),
        );
        r.register(
            "frontend_heartbeats_passed_on",
            "At a frontend: heartbeats passed on to the writer in full",
            self.heartbeats_passed_on.clone(),
        );
        r.register(
            "frontend_alive_lists",
            "At a frontend: lists of live nodes sent to the writer",
            self.alive_lists.clone(),
        );
        let counted = |n: &AtomicU64| {
            let c: Counter = Counter::default();
            c.inc_by(n.load(std::sync::atomic::Ordering::Relaxed));
            c
        };
        if let Some(writer) = writer {
            r.register(
                "journal_transactions",
                "Transactions the journal's writer committed (group commits)",
                counted(&writer.groups),
            );
            r.register(
                "journal_records",
                "Records the journal's writer committed",
                counted(&writer.records),
            );
        }
        let nodes = Family::<StateLabel, Gauge>::default();
        for (state, n) in &state.nodes {
            nodes
                .get_or_create(&StateLabel {
                    state: (*state).into(),
                })
                .set(*n as i64);
        }
        r.register("nodes", "Nodes by state", nodes);
        let gpus = Family::<CapacityLabels, Gauge>::default();
        capacity(&gpus, &state.gpus);
        r.register(
            "gpus",
            "GPUs by state, provider, pool, zone and model",
            gpus,
        );
        let cpu = Family::<CapacityLabels, Gauge>::default();
        capacity(&cpu, &state.cpu_millis);
        r.register(
            "cpu_host_millicores",
            "CPU hosts' millicores by state, provider, pool and zone",
            cpu,
        );
        let domains: Gauge = Gauge::default();
        domains.set(state.whole_free_domains as i64);
        r.register(
            "nvlink_domains_whole_free",
            "NVLink domains whose every node is ready and wholly free",
            domains,
        );
        let jobs = Family::<JobLabels, Gauge>::default();
        for (group, n) in &state.jobs {
            let labels = JobLabels {
                state: group.state.into(),
                class: group.class.clone(),
                tenant: group.tenant.clone(),
            };
            jobs.get_or_create(&labels).set(*n as i64);
        }
        r.register(
            "jobs",
            "Jobs pending and running, by class and tenant",
            jobs,
        );
        let live: Gauge = Gauge::default();
        live.set(state.sandboxes_live as i64);
        r.register("sandboxes_live", "Sandboxes live now", live);
        let ended = Family::<EndLabel, Counter>::default();
        for (how, n) in &state.sandboxes_ended {
            ended
                .get_or_create(&EndLabel {
                    outcome: (*how).into(),
                })
                .inc_by(*n);
        }
        r.register(
            "sandboxes_ended",
            "Sandboxes ended, by outcome (oom_killed: of the failed)",
            ended,
        );
        let replicas = Family::<ReplicaLabels, Gauge>::default();
        type FloatGauge =
            prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>;
        let inflight = Family::<ServiceLabels, FloatGauge>::default();
        let rate = Family::<ServiceLabels, FloatGauge>::default();
        let p95 = Family::<ServiceLabels, FloatGauge>::default();
        for s in &state.replicas {
            for (kind, n) in ["desired", "running", "pending", "ready"]
                .iter()
                .zip(&s.counts)
            {
                let labels = ReplicaLabels {
                    service: s.name.clone(),
                    tenant: s.tenant.clone(),
                    state: (*kind).into(),
                };
                replicas.get_or_create(&labels).set(*n as i64);
            }
            if let Some((now, per_s, latency)) = s.load {
                let labels = ServiceLabels {
                    service: s.name.clone(),
                    tenant: s.tenant.clone(),
                };
                inflight.get_or_create(&labels).set(now);
                rate.get_or_create(&labels).set(per_s);
                if let Some(l) = latency {
                    p95.get_or_create(&labels).set(l);
                }
            }
        }
        r.register("service_replicas", "Live services' replicas", replicas);
        r.register(
            "service_inflight_requests",
            "Requests in flight through the services' gateways",
            inflight,
        );
        r.register(
            "service_requests_per_second",
            "Requests a second through the services' gateways",
            rate,
        );
        r.register_with_unit(
            "service_latency_p95",
            "The worst gateway's p95 latency over its last second",
            Unit::Seconds,
            p95,
        );
        let spend = Family::<
            SpendLabels,
            prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
        >::default();
        for ((provider, pricing), usd) in &state.spend_usd {
            let labels = SpendLabels {
                provider: provider.clone(),
                pricing: pricing.clone(),
            };
            spend.get_or_create(&labels).set(*usd);
        }
        r.register("spend_usd", "Spend since the books opened, USD", spend);
        let idle =
            prometheus_client::metrics::gauge::Gauge::<f64, std::sync::atomic::AtomicU64>::default(
            );
        idle.set(state.idle_committed_usd);
        r.register(
            "idle_committed_usd",
            "Committed capacity paid for and not used, USD",
            idle,
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}
