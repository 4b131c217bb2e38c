//! `/v1/gateway`: what request gateways (`stargrid gateway`) need from the control plane. A
//! gateway long-polls the routes (each active service it may reach and its ready replicas)
//! and reports the load it carries each second; the writer's clock turns that load into
//! scalings of autoscaled services ([`Server::scalings_due`]). Admin tokens see every service,
//! a tenant's token its own.

use super::*;
use crate::api::{GatewayLoad, RoutesQuery};

/// How long a routes request waits for a change before answering what is.
const ROUTES_WAIT: Duration = Duration::from_secs(20);

/// The largest load report.
const MAX_LOAD_BYTES: usize = 4 << 20;

fn gateway_role(server: &Server, headers: &HeaderMap) -> Result<Role, Refusal> {
    let role = server.principal(headers)?;
    match role {
        Role::Admin | Role::Tenant { .. } => Ok(role),
        Role::Agent { .. } | Role::Metrics => Err(Refusal::forbidden(
            "a gateway needs an admin or a tenant token",
        )),
    }
}

/// The services a gateway may route to, with their ready replicas. With `after`, waits (up to
/// about 20 s) until the routes' version differs from it.
#[utoipa::path(get, path = "/v1/gateway/routes", params(RoutesQuery),
    responses((status = 200, body = crate::api::GatewayRoutes), (status = 403, body = ApiError)))]
pub(super) async fn routes(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<RoutesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(
        async {
            let role = gateway_role(&server, &headers)?;
            let Query(q) =
                query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "after", e.body_text()))?;
            let deadline = tokio::time::Instant::now() + ROUTES_WAIT;
            let mut durable = server.durable.subscribe();
            loop {
                // Only what is durable is told: the state can be ahead of the journal.
                let durable_seq = *durable.borrow_and_update();
                let routes = {
                    let p = server.plane();
                    let version = p.routes_version();
                    let new = q.after == 0 || version != q.after;
                    (new && version <= durable_seq).then(|| p.gateway_routes(viewer(&role)))
                };
                if let Some(routes) = routes {
                    // Serialised off the state's lock.
                    return Ok(Json(routes).into_response());
                }
                if !matches!(
                    tokio::time::timeout_at(deadline, durable.changed()).await,
                    Ok(Ok(()))
                ) {
                    let routes = server.plane().gateway_routes(viewer(&role));
                    return Ok(Json(routes).into_response());
                }
            }
        }
        .await,
    )
}

/// A gateway's load, per service, over its last second: it drives the services' autoscaling.
/// Kept in memory; each gateway's latest report counts for 10 s.
#[utoipa::path(post, path = "/v1/gateway/load", request_body = GatewayLoad,
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn report_load(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let role = gateway_role(&server, &headers)?;
            let body = axum::body::to_bytes(body, MAX_LOAD_BYTES)
                .await
                .map_err(|_| {
                    Refusal::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body",
                        format!("a load report is limited to {MAX_LOAD_BYTES} bytes"),
                    )
                })?;
            let load: GatewayLoad = parse_json(&body)?;
            load.check()
                .map_err(|(field, reason)| Refusal::new(StatusCode::BAD_REQUEST, &field, reason))?;
            {
                let p = server.plane();
                for (i, s) in load.services.iter().enumerate() {
                    match p.service_tenant(ServiceId(s.service)) {
                        Some(t) if may_touch(&role, t) => {}
                        _ => {
                            return Err(Refusal::new(
                                StatusCode::NOT_FOUND,
                                &format!("services[{i}].service"),
                                format!("no service {}", s.service),
                            ))
                        }
                    }
                }
            }
            let left_out =
                lock(&server.live_load).report(&load.gateway, load.services, Instant::now());
            if !left_out.is_empty() {
                tracing::warn!(gateway = %load.gateway, ?left_out, "load left out: too many gateways report these services");
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

impl Server {
    /// Fills in the services' load as their gateways report it.
    pub(super) fn with_load(&self, services: &mut [crate::api::ServiceView]) {
        let live = lock(&self.live_load);
        let now = Instant::now();
        for v in services {
            v.load = live
                .figures(v.id, now)
                .map(
                    |(inflight, requests_per_s, p95)| crate::api::ServiceLoadView {
                        inflight,
                        requests_per_s,
                        p95_ms: p95.map(|s| s * 1000.0),
                    },
                );
        }
    }

    /// The scalings autoscaled services' load asks for now, as events.
    pub(super) fn scalings_due(&self, p: &ControlPlane, at: u64) -> Vec<Event> {
        let mut live = lock(&self.live_load);
        if !live.due(at) {
            return Vec::new();
        }
        let services = p.autoscaled();
        if services.is_empty() {
            return Vec::new();
        }
        live.scalings(&services, at, Instant::now())
            .into_iter()
            .map(|(id, replicas)| {
                tracing::info!(service = id, replicas, "autoscaled");
                Event::ServiceScale {
                    id: ServiceId(id),
                    replicas,
                    autoscaled: true,
                    at,
                }
            })
            .collect()
    }
}
