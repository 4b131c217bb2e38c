//! `/metrics` (an admin or a metrics token): the server's series for Prometheus (see [`crate::metrics`]), and
//! the middleware that counts and times every API request by its route.

use super::*;

/// The server's metrics in OpenMetrics text (an admin token, or a metrics token that reads
/// nothing else: the series name tenants and their work).
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn metrics(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Err(r) = server.scraper(&headers) {
        return r.into_response();
    }
    let mut gauges = server.plane().gauges(unix_now());
    {
        let live = lock(&server.live_load);
        let now = Instant::now();
        for s in &mut gauges.replicas {
            s.load = live.figures(s.id, now);
        }
    }
    let text = server
        .metrics
        .render(&gauges, server.journal().map(|j| j.stats()));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Counts and times each request by its method, route template and status.
pub(super) async fn track_requests(
    State(server): State<Arc<Server>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    let m = &server.metrics;
    m.request_seconds
        .get_or_create(&crate::metrics::RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&crate::metrics::RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
