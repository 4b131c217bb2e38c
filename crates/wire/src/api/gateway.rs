//! What a request gateway and the server say to each other: the routes (each service's ready
//! replicas, long-polled by version) and the load the gateway measured, which drives the
//! services' autoscaling.

use super::ServiceEndpoint;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Most services one load report may carry.
pub const MAX_LOAD_SERVICES: usize = 10_000;

/// Longest gateway name.
pub const MAX_GATEWAY_NAME: usize = 128;

/// Which routes a gateway already has (`GET /v1/gateway/routes`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoutesQuery {
    /// The version the gateway holds: the answer waits (up to about 20 s) until the routes
    /// change from it. 0 or absent: answer at once.
    #[serde(default)]
    pub after: u64,
}

/// Every active service the caller may reach, with its ready replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GatewayRoutes {
    /// Changes whenever a service or a replica's endpoint changes (pass it back as `after`).
    pub version: u64,
    /// The services, by id.
    pub services: Vec<ServiceRoute>,
}

/// One service as a gateway routes to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceRoute {
    /// The service.
    pub id: u64,
    /// Its name (requests reach it at `/{tenant}/{name}/…`).
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// Replicas wanted now (0: scaled to zero; a request waits for one to be ready).
    pub desired: u32,
    /// Its ready replicas, in replica order.
    pub endpoints: Vec<ServiceEndpoint>,
    /// While a rolling update's new version is a canary: the share of requests, per cent,
    /// its replicas (`canary` endpoints) get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_percent: Option<u32>,
}

/// What a gateway measured over its last reporting period (`POST /v1/gateway/load`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayLoad {
    /// The gateway's name (each gateway's latest report counts; several gateways add up).
    #[schema(max_length = 128)]
    pub gateway: String,
    /// One entry per service it routes to (idle ones too: their load is zero).
    pub services: Vec<ServiceLoad>,
}

/// One service's load through one gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceLoad {
    /// The service.
    pub service: u64,
    /// Requests in flight now (sent to a replica, or held waiting for one).
    pub inflight: u32,
    /// Requests a second over the period.
    pub requests_per_s: f64,
    /// Median latency over the period, in milliseconds (absent: no request ended).
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// 95th percentile latency, in milliseconds.
    #[serde(default)]
    pub p95_ms: Option<f64>,
    /// 99th percentile latency, in milliseconds.
    #[serde(default)]
    pub p99_ms: Option<f64>,
}

impl GatewayLoad {
    /// Checks a report: a printable name, a bounded list, finite non-negative figures.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |field: String, reason: &str| Err((field, reason.to_string()));
        if self.gateway.is_empty()
            || self.gateway.len() > MAX_GATEWAY_NAME
            || !self.gateway.bytes().all(|b| b.is_ascii_graphic())
        {
            return bad("gateway".into(), "1 to 128 printable ASCII characters");
        }
        if self.services.len() > MAX_LOAD_SERVICES {
            return bad("services".into(), "more than 10000 services");
        }
        for (i, s) in self.services.iter().enumerate() {
            let figures = [
                ("requests_per_s", Some(s.requests_per_s)),
                ("p50_ms", s.p50_ms),
                ("p95_ms", s.p95_ms),
                ("p99_ms", s.p99_ms),
            ];
            for (name, v) in figures {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    return bad(
                        format!("services[{i}].{name}"),
                        "must be a finite number, 0 or more",
                    );
                }
            }
        }
        Ok(())
    }
}

/// A service's load through its gateways, summed over them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceLoadView {
    /// Requests in flight (sent to a replica, or held waiting for one).
    pub inflight: f64,
    /// Requests a second over the gateways' last second.
    pub requests_per_s: f64,
    /// The worst gateway's p95 latency over its last second, in milliseconds.
    pub p95_ms: Option<f64>,
}

/// How a service scales itself on the load its gateways report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleSpec {
    /// Requests in flight one replica should carry.
    #[serde(default)]
    pub target_inflight_per_replica: Option<u32>,
    /// p95 latency to stay under, in milliseconds.
    #[serde(default)]
    pub target_p95_ms: Option<u32>,
    /// A scale-up happens once every recommendation this many seconds back asks for more
    /// (default 0: at once).
    #[serde(default)]
    pub scale_up_window_s: u32,
    /// A scale-down goes no lower than the largest recommendation this many seconds back
    /// (default 60).
    #[serde(default = "default_down_window")]
    pub scale_down_window_s: u32,
}

fn default_down_window() -> u32 {
    60
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a gateway sends, a report parses or is refused, and a report that
        /// passes the check has only finite, non-negative figures.
        #[test]
        fn load_reports_parse_or_are_refused(body in proptest::collection::vec(any::<u8>(), 0..256),
                                             rate in proptest::num::f64::ANY) {
            let _ = serde_json::from_slice::<GatewayLoad>(&body);
            let load = GatewayLoad {
                gateway: "g".into(),
                services: vec![ServiceLoad { service: 1, inflight: 3, requests_per_s: rate,
                    p50_ms: None, p95_ms: Some(rate), p99_ms: None }],
            };
            prop_assert_eq!(load.check().is_ok(), rate.is_finite() && rate >= 0.0);
        }
    }

    #[test]
    fn a_bad_gateway_name_is_refused_by_field() {
        let load = GatewayLoad {
            gateway: "a b".into(),
            services: vec![],
        };
        assert_eq!(load.check().unwrap_err().0, "gateway");
    }
}
