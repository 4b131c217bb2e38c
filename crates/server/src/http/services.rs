//! `/v1/services`: create, list, get, scale and delete inference services.

use super::*;

/// Create an inference service (it starts at its minimum replica count).
#[utoipa::path(post, path = "/v1/services", request_body = SubmitService,
    responses((status = 201, body = Submitted), (status = 400, body = ApiError)))]
pub(super) async fn create_service(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        submit_work(
            &server,
            &headers,
            body,
            |r: &SubmitService| Ok(r.tenant.clone()),
            ControlPlane::service_event,
            "",
        )
        .await
        .map(created),
    )
}

/// Query of the service and batch listings.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantQuery {
    /// Only this tenant's.
    pub(super) tenant: Option<String>,
    /// Ids above this one (the previous page's `next_after`).
    pub(super) after: Option<u64>,
    /// Page size, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub(super) limit: Option<usize>,
}

/// Services, in id order, a page at a time.
#[utoipa::path(get, path = "/v1/services", params(TenantQuery),
    responses((status = 200, body = ServiceList), (status = 400, body = ApiError)))]
pub(super) async fn list_services(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<TenantQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond((|| {
        let role = server.principal(&headers)?;
        let Query(q) =
            query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "query", e.body_text()))?;
        let tenant = listing_tenant(&role, q.tenant)?;
        let limit = page_size(q.limit)?;
        let mut services = server.plane().list_services(
            tenant.as_deref(),
            viewer(&role),
            q.after.unwrap_or(0),
            limit + 1,
        );
        let more = services.len() > limit;
        services.truncate(limit);
        server.with_load(&mut services);
        let next_after = if more {
            services.last().map(|s| s.id)
        } else {
            None
        };
        Ok(Json(ServiceList {
            services,
            next_after,
        })
        .into_response())
    })())
}

/// One service.
#[utoipa::path(get, path = "/v1/services/{id}", params(("id" = u64, Path, description = "service id")),
    responses((status = 200, body = ServiceView), (status = 404, body = ApiError)))]
pub(super) async fn get_service(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    respond((|| {
        let (role, id) = server.caller_and_id(&headers, &raw)?;
        Ok(
            match server.plane().service_view_as(ServiceId(id), viewer(&role)) {
                Some(mut v) if may_touch(&role, &v.tenant) => {
                    server.with_load(std::slice::from_mut(&mut v));
                    Json(v).into_response()
                }
                _ => no_such("service", id),
            },
        )
    })())
}

/// A service's ready replicas: where to send it requests (its tenant's and admin tokens; a
/// gateway's too).
#[utoipa::path(get, path = "/v1/services/{id}/endpoints", params(("id" = u64, Path, description = "service id")),
    responses((status = 200, body = [crate::api::ServiceEndpoint]), (status = 404, body = ApiError)))]
pub(super) async fn service_endpoints(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    respond((|| {
        let (role, id) = server.caller_and_id(&headers, &raw)?;
        let p = server.plane();
        Ok(match p.service_view_as(ServiceId(id), viewer(&role)) {
            Some(v) if may_touch(&role, &v.tenant) => {
                Json(p.service_endpoints(ServiceId(id))).into_response()
            }
            _ => no_such("service", id),
        })
    })())
}

/// A service's owner check, then `make`'s event (from the state, the service's id and the
/// time), applied and durable; answers what `view` makes of the service then.
pub(super) async fn change_service(
    server: Arc<Server>,
    headers: HeaderMap,
    raw: String,
    make: impl FnOnce(&ControlPlane, u64, u64) -> Result<Event, Refusal>,
    view: impl FnOnce(&ControlPlane, u64, &Role) -> Option<Response>,
) -> Response {
    respond(
        async {
            let (role, id) = server.caller_and_id(&headers, &raw)?;
            if matches!(role, Role::Agent { .. }) {
                return Err(Refusal::forbidden("an agent token cannot change services"));
            }
            server
                .commit(
                    |p, at| match p.service_tenant(ServiceId(id)) {
                        Some(t) if may_touch(&role, t) => {
                            let event = make(p, id, at)?;
                            p.check_limits(&server.limits, &event)
                                .map_err(Refusal::from_limit)?;
                            Ok(vec![event])
                        }
                        _ => Err(Refusal::new(
                            StatusCode::NOT_FOUND,
                            "id",
                            format!("no service {id}"),
                        )),
                    },
                    OnRefusal::Answer("id"),
                )
                .await?;
            let answer = view(&server.plane(), id, &role);
            Ok(answer.unwrap_or_else(|| no_such("service", id)))
        }
        .await,
    )
}

/// The service as its caller sees it (`change_service`'s answer for scalings and deletions).
fn service_answer(p: &ControlPlane, id: u64, role: &Role) -> Option<Response> {
    p.service_view_as(ServiceId(id), viewer(role))
        .map(|v| Json(v).into_response())
}

/// Set a service's desired replica count (clamped to its bounds).
#[utoipa::path(post, path = "/v1/services/{id}/scale", request_body = ScaleService,
    params(("id" = u64, Path, description = "service id")),
    responses((status = 200, body = ServiceView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn scale_service(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: axum::body::Body,
) -> Response {
    // The token is checked before the body is read.
    if let Err(r) = server.submitter(&headers) {
        return r.into_response();
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let req: ScaleService = match parse_json(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let make = |_: &ControlPlane, id, at| {
        Ok(Event::ServiceScale {
            autoscaled: false,
            id: ServiceId(id),
            replicas: req.replicas,
            at,
        })
    };
    change_service(server, headers, raw, make, service_answer).await
}

/// Delete a service: its replicas stop.
#[utoipa::path(post, path = "/v1/services/{id}/delete", params(("id" = u64, Path, description = "service id")),
    responses((status = 200, body = ServiceView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn delete_service(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let make = |_: &ControlPlane, id, at| {
        Ok(Event::ServiceDelete {
            id: ServiceId(id),
            at,
        })
    };
    change_service(server, headers, raw, make, service_answer).await
}
