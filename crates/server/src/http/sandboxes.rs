//! `/v1/sandboxes`: place, list, get and cancel sandbox batches.

use super::*;

/// Place a batch of sandboxes now, all or none (409 with the reason when they do not fit).
#[utoipa::path(post, path = "/v1/sandboxes", request_body = SubmitSandboxes,
    responses((status = 201, body = Submitted), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn submit_sandboxes(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let mut interactive = false;
    let answer = submit_work(
        &server,
        &headers,
        body,
        |r: &SubmitSandboxes| {
            interactive = r.interactive;
            match &r.template {
                Some(t) if !server.templates().offered(t) => {
                    let offered = server
                        .templates()
                        .names()
                        .take(16)
                        .collect::<Vec<_>>()
                        .join(", ");
                    Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "template",
                        format!(
                            "no node offers template '{}' (offered: {})",
                            t.chars().take(64).collect::<String>(),
                            if offered.is_empty() { "none" } else { &offered }
                        ),
                    ))
                }
                _ => Ok(r.tenant.clone()),
            }
        },
        ControlPlane::sandbox_event,
        "count",
    )
    .await;
    if let (Ok(s), true) = (&answer, interactive) {
        server.start_session(s.id);
    }
    respond(answer.map(created))
}

/// Sandbox batches, in id order, a page at a time.
#[utoipa::path(get, path = "/v1/sandboxes", params(TenantQuery),
    responses((status = 200, body = BatchList), (status = 400, body = ApiError)))]
pub(super) async fn list_batches(
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
        let mut batches =
            server
                .plane()
                .list_batches(tenant.as_deref(), q.after.unwrap_or(0), limit + 1);
        let more = batches.len() > limit;
        batches.truncate(limit);
        let next_after = if more {
            batches.last().map(|b| b.id)
        } else {
            None
        };
        Ok(Json(BatchList {
            batches,
            next_after,
        })
        .into_response())
    })())
}

/// One sandbox batch.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", params(("id" = u64, Path, description = "batch id")),
    responses((status = 200, body = BatchView), (status = 404, body = ApiError)))]
pub(super) async fn get_batch(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    respond((|| {
        let (role, id) = server.caller_and_id(&headers, &raw)?;
        Ok(match server.plane().batch_view(BatchId(id)) {
            Some(v) if may_touch(&role, &v.tenant) => Json(v).into_response(),
            _ => no_such("batch", id),
        })
    })())
}

/// Cancel a sandbox batch: every live sandbox stops.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/cancel", params(("id" = u64, Path, description = "batch id")),
    responses((status = 200, body = BatchView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn cancel_batch(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    respond(
        async {
            let (role, id) = server.caller_and_id(&headers, &raw)?;
            server
                .commit(
                    |p, at| match p.batch_tenant(BatchId(id)) {
                        Some(t) if may_touch(&role, t) => Ok(vec![Event::Cancel { id, at }]),
                        _ => Err(Refusal::new(
                            StatusCode::NOT_FOUND,
                            "id",
                            format!("no batch {id}"),
                        )),
                    },
                    OnRefusal::Answer("id"),
                )
                .await?;
            Ok(match server.plane().batch_view(BatchId(id)) {
                Some(v) => Json(v).into_response(),
                None => no_such("batch", id),
            })
        }
        .await,
    )
}
