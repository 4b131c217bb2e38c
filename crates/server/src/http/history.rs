//! `/v1/journal/compact` and `/v1/history`: compaction of the journal behind a snapshot, and the
//! workload summaries that outlive it (admin only).

use super::*;

/// Snapshot the state, drop the journal's records before it, and keep a summary of every
/// workload in the history (admin only).
#[utoipa::path(post, path = "/v1/journal/compact",
    responses((status = 200, body = crate::api::Compacted), (status = 403, body = ApiError)))]
pub(super) async fn compact_journal(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Response {
    match server.principal(&headers) {
        Ok(Role::Admin) => {}
        Ok(_) => {
            return Refusal::forbidden("only an admin token compacts the journal").into_response()
        }
        Err(r) => return r.into_response(),
    }
    match server.compact().await {
        Ok(c) => Json(c).into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, "", e.to_string()),
    }
}

/// Query of `GET /v1/history`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// Keys above this one (the previous page's `next_after`).
    after: Option<u64>,
    /// Page size, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Workload summaries kept by compaction, by key (admin only).
#[utoipa::path(get, path = "/v1/history", params(HistoryQuery),
    responses((status = 200, body = crate::api::HistoryList), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn list_history(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(
        async {
            if server.principal(&headers)? != Role::Admin {
                return Err(Refusal::forbidden("only an admin token reads the history"));
            }
            let Query(q) =
                query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "query", e.body_text()))?;
            let limit = q.limit.unwrap_or(100);
            if limit == 0 || limit > MAX_PAGE {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "limit",
                    format!("must be 1..={MAX_PAGE}"),
                ));
            }
            // Store reads block (PostgreSQL's client runs its own runtime): off the async
            // threads.
            let after = q.after.unwrap_or(0);
            let reader = server.clone();
            let rows =
                tokio::task::spawn_blocking(move || reader.journal.read_history(after, limit + 1))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "", e))?;
            let more = rows.len() > limit;
            let last_key = rows
                .get(..limit.min(rows.len()))
                .and_then(|r| r.last())
                .map(|r| r.seq);
            let items = rows
                .iter()
                .take(limit)
                .filter_map(|r| crate::journal::history::SummaryV1::decode(&r.body))
                .map(|s| crate::api::WorkloadSummary {
                    kind: s.kind,
                    id: s.id,
                    name: s.name,
                    tenant: s.tenant,
                    state: s.state,
                    submitted_at: s.submitted_at,
                    ended_at: s.ended_at,
                    exit_code: s.exit_code,
                    restarts: s.restarts,
                    size: s.size,
                    nodes: s.nodes,
                })
                .collect();
            Ok(Json(crate::api::HistoryList {
                items,
                next_after: if more { last_key } else { None },
            })
            .into_response())
        }
        .await,
    )
}
