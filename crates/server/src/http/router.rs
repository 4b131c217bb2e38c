//! The router: every route of the API and the dashboard with its handler, and the
//! middleware every request passes (request metrics, the frontend's pass-through, the
//! dashboard's cookie, body limits, refusals in the API's JSON error body).

use super::*;

/// The router over a started server.
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", get(openapi))
        .route("/v1/jobs", post(submit_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/why", get(why_job))
        .route("/v1/jobs/{id}/logs", get(job_logs))
        .route("/v1/services", post(create_service).get(list_services))
        .route("/v1/services/{id}", get(get_service))
        .route("/v1/services/{id}/endpoints", get(service_endpoints))
        .route("/v1/services/{id}/scale", post(scale_service))
        .route("/v1/services/{id}/delete", post(delete_service))
        .route(
            "/v1/services/{id}/rollout",
            post(rollouts::start_rollout).get(rollouts::rollout_status),
        )
        .route(
            "/v1/services/{id}/rollout/undo",
            post(rollouts::undo_rollout),
        )
        .route(
            "/v1/services/{id}/rollout/promote",
            post(rollouts::promote_rollout),
        )
        .route("/v1/gateway/routes", get(gateway::routes))
        .route("/v1/gateway/load", post(gateway::report_load))
        .route("/v1/sandboxes", post(submit_sandboxes).get(list_batches))
        .route("/v1/sandboxes/{id}", get(get_batch))
        .route("/v1/sandboxes/{id}/cancel", post(cancel_batch))
        .route("/v1/sandboxes/{id}/logs", get(sandbox_logs))
        .route("/v1/sandboxes/{id}/exec", post(exec))
        .route("/v1/sandboxes/{id}/files", get(read_file).put(write_file))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/fleet/overview", get(fleet_overview))
        .route("/v1/cell", get(cell_summary))
        .route("/v1/fleet/domain", get(fleet_domain))
        .route(fleet_change::APPLY_PATH, post(fleet_change::apply_fleet))
        .route("/v1/fleet/file", get(fleet_change::fleet_file))
        .route(
            "/v1/fleet/registrations",
            get(fleet_change::registrations).put(fleet_change::set_registration_rule),
        )
        .route(
            "/v1/fleet/registrations/approve",
            post(fleet_change::approve_registrations),
        )
        .route(
            "/v1/fleet/registrations/reject",
            post(fleet_change::reject_registrations),
        )
        .route("/v1/agent/register", post(fleet_change::register_node))
        .route("/v1/nodes/{name}/drain", post(drain_node))
        .route("/v1/nodes/{name}/resume", post(resume_node))
        .route("/v1/tenants", get(list_tenants))
        .route("/v1/cost", get(cost))
        .route("/v1/journal/compact", post(compact_journal))
        .route("/v1/history", get(list_history))
        .route("/v1/usage", get(usage))
        .route("/v1/events", get(stream_events))
        .route("/v1/agent/heartbeat", post(heartbeat))
        .route("/v1/agent/heartbeats", post(heartbeats))
        .route("/v1/agent/wait", post(wait_for_changes))
        .route("/v1/agent/exec", post(exec_output))
        .route("/v1/tokens", post(issue_token).get(list_tokens))
        .route("/v1/tokens/{id}/revoke", post(revoke_token))
        .route("/v1/replica/snapshot", get(replica_snapshot))
        .route("/v1/replica/records", get(replica_records))
        .route("/metrics", get(metrics::metrics))
        .route("/ui", get(|| async { ui_redirect() }))
        .route("/ui/", get(ui::index))
        .route("/ui/login", get(ui::login_page).post(ui::login))
        .route("/ui/logout", post(ui::logout))
        .route("/ui/login.js", get(ui::login_js))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/style.css", get(ui::style))
        .route_layer(axum::middleware::from_fn_with_state(
            server.clone(),
            metrics::track_requests,
        ))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "", "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            frontend::route_to_writer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            ui::cookie_auth,
        ))
        .with_state(server)
}

fn ui_redirect() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(axum::http::header::LOCATION, "/ui/")],
    )
        .into_response()
}

/// Every refusal in the API's error body: those the framework makes itself (a chunked body
/// over the limit, a wrong method, a malformed path) come as plain text and are rewritten.
pub(super) async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let reason = match text.trim() {
        "" => status.canonical_reason().unwrap_or("refused").to_string(),
        t => t.to_string(),
    };
    let field = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body"
    } else {
        ""
    };
    let mut rewritten = problem(status, field, reason);
    // Keep what the framework said besides (e.g. `Allow` on a 405).
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

/// Refuses a request whose declared length is over the limit before reading its body (longer
/// bodies without a declared length are cut off by `DefaultBodyLimit`).
async fn refuse_large_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if request.uri().path() == fleet_change::APPLY_PATH {
        if declared.is_some_and(|n| n > crate::api::MAX_FLEET_FILE_BYTES as u64) {
            return fleet_change::fleet_file_too_large().into_response();
        }
        return next.run(request).await;
    }
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            format!("requests are limited to {MAX_BODY_BYTES} bytes"),
        );
    }
    next.run(request).await
}
