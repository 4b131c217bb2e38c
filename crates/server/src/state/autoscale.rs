//! Services that scale on live load, and the routes gateways follow. A service created with
//! `autoscale` targets keeps them ([`AutoscaleTargets`], journaled with it); the server feeds
//! its gateways' load into `sched::autoscale`, the simulator's policy, and journals each change
//! as a [`Event::ServiceScale`], as if an operator had scaled. [`ControlPlane::gateway_routes`]
//! is what a gateway routes by: each active service and its ready replicas, versioned by the
//! journal record that last changed them.

use super::*;
use crate::api::{AutoscaleSpec, GatewayRoutes, ServiceRoute};
use sched::autoscale::AutoscalePolicy;

/// The longest stabilisation window, in seconds.
pub const MAX_WINDOW_S: u32 = 3600;

/// How a service scales on its gateways' load (journaled with the service).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoscaleTargets {
    /// Requests in flight one replica should carry.
    pub target_inflight_per_replica: Option<u32>,
    /// p95 latency to stay under, in milliseconds.
    pub target_p95_ms: Option<u32>,
    /// Seconds every recommendation must ask for more before a scale-up.
    pub scale_up_window_s: u32,
    /// Seconds of recommendations a scale-down stays above.
    pub scale_down_window_s: u32,
}

impl AutoscaleTargets {
    /// Checks a request's `autoscale`, naming the field at fault.
    pub(super) fn from_request(spec: &AutoscaleSpec) -> Result<Self, FieldProblem> {
        let bad = |field: &str, reason: &str| FieldProblem {
            field: format!("autoscale.{field}"),
            reason: reason.into(),
        };
        if spec.target_inflight_per_replica.is_none() && spec.target_p95_ms.is_none() {
            return Err(bad(
                "target_inflight_per_replica",
                "give a target: in-flight requests per replica, p95 latency, or both",
            ));
        }
        if spec.target_inflight_per_replica == Some(0) {
            return Err(bad("target_inflight_per_replica", "must be 1 or more"));
        }
        if spec.target_p95_ms == Some(0) {
            return Err(bad("target_p95_ms", "must be 1 or more"));
        }
        for (field, w) in [
            ("scale_up_window_s", spec.scale_up_window_s),
            ("scale_down_window_s", spec.scale_down_window_s),
        ] {
            if w > MAX_WINDOW_S {
                return Err(bad(field, "at most 3600 seconds"));
            }
        }
        Ok(AutoscaleTargets {
            target_inflight_per_replica: spec.target_inflight_per_replica,
            target_p95_ms: spec.target_p95_ms,
            scale_up_window_s: spec.scale_up_window_s,
            scale_down_window_s: spec.scale_down_window_s,
        })
    }

    /// The simulator's policy for these targets within a service's bounds.
    pub fn policy(&self, min_replicas: u32, max_replicas: u32) -> AutoscalePolicy {
        AutoscalePolicy {
            min_replicas,
            max_replicas,
            target_inflight_per_replica: self.target_inflight_per_replica.map(f64::from),
            target_p95_ms: self.target_p95_ms.map(f64::from),
            scale_up_window: u64::from(self.scale_up_window_s),
            scale_down_window: u64::from(self.scale_down_window_s),
        }
    }
}

/// An active service that scales itself, as the autoscaler needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Autoscaled {
    /// The service.
    pub id: ServiceId,
    /// Replicas wanted now.
    pub desired: u32,
    /// The policy, within its bounds.
    pub policy: AutoscalePolicy,
}

impl ControlPlane {
    /// Active services with autoscale targets.
    pub fn autoscaled(&self) -> Vec<Autoscaled> {
        self.services
            .iter()
            .filter(|(_, m)| m.deleted_at.is_none())
            .filter_map(|(id, m)| {
                let targets = m.autoscale.as_ref()?;
                let desired = self.sched.service_status(id.0)?.desired;
                Some(Autoscaled {
                    id: *id,
                    desired,
                    policy: targets.policy(m.spec.min_replicas, m.spec.max_replicas),
                })
            })
            .collect()
    }

    /// The journal record that last changed what gateways route by (1 at least: a gateway
    /// asks with 0 for an answer at once).
    pub fn routes_version(&self) -> u64 {
        self.routes_seq.max(1)
    }

    /// Notes that the routes change with the record being applied.
    pub(super) fn routes_changed(&mut self) {
        self.routes_seq = self.seq + 1;
    }

    /// Every active service `viewer` may reach (`None`: all) with its ready replicas.
    pub fn gateway_routes(&self, viewer: Option<&str>) -> GatewayRoutes {
        let services = self
            .services
            .iter()
            .filter(|(_, m)| m.deleted_at.is_none())
            .filter(|(_, m)| viewer.is_none_or(|v| self.tenant_name(m.tenant) == v))
            .map(|(id, m)| ServiceRoute {
                id: id.0,
                name: m.name.clone(),
                tenant: self.tenant_name(m.tenant).to_string(),
                desired: self.sched.service_status(id.0).map_or(0, |s| s.desired),
                endpoints: self.service_endpoints(*id),
                canary_percent: self.canary_share(*id),
            })
            .collect();
        GatewayRoutes {
            version: self.routes_version(),
            services,
        }
    }
}
