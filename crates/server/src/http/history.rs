//! `/v1/journal/compact`, `/v1/history` and `/v1/usage`: compaction of the journal behind a
//! snapshot (admin only), the history of finished work with filters (like `sacct`), and usage
//! per tenant per day or week (like `sreport`). A tenant token reads its own tenant's only.
//! Both read the store's indexed `history` table, off the async threads.

use super::*;
use crate::events::rfc3339;
use crate::journal::history::SummaryV2;

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

/// Kinds of workload the history keeps.
const KINDS: [&str; 3] = ["job", "batch", "service"];

/// States a history row can be in.
const STATES: [&str; 10] = [
    "pending",
    "running",
    "preempting",
    "finished",
    "failed",
    "cancelled",
    "active",
    "deleted",
    "ended",
    "unknown",
];

/// Query of `GET /v1/history`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// Keys above this one (the previous page's `next_after`).
    after: Option<u64>,
    /// Page size, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only this kind: job, batch or service.
    kind: Option<String>,
    /// Only this tenant's (a tenant token: its own, the default).
    tenant: Option<String>,
    /// Only in this state (finished, failed, cancelled, ...).
    state: Option<String>,
    /// Only with this name.
    name: Option<String>,
    /// Only what ended at or after this (Unix seconds).
    since: Option<u64>,
    /// Only what ended before this (Unix seconds).
    until: Option<u64>,
}

fn bad(field: &str, reason: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, field, reason.into())
}

/// One of `allowed`, or a refusal naming the field and the values it takes.
fn one_of(field: &str, value: Option<String>, allowed: &[&str]) -> Result<Option<String>, Refusal> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(bad(
            field,
            format!(
                "'{}' is not one of {}",
                v.chars().take(64).collect::<String>(),
                allowed.join(", ")
            ),
        )),
        v => Ok(v),
    }
}

/// A window's bounds, checked.
fn window(since: Option<u64>, until: Option<u64>) -> Result<(), Refusal> {
    match (since, until) {
        (Some(s), Some(u)) if s >= u => Err(bad("until", format!("must be after since ({s})"))),
        _ => Ok(()),
    }
}

/// Store reads in flight at once; more wait their turn without holding a thread (the store
/// reads through one connection anyway).
static STORE_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Runs a store read off the async threads (PostgreSQL's client runs its own runtime).
async fn read_store<T: Send + 'static>(
    server: &Arc<Server>,
    read: impl FnOnce(&Journal) -> Result<T, store::StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    let _turn = STORE_READS
        .acquire()
        .await
        .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "", e.to_string()))?;
    let reader = server.clone();
    tokio::task::spawn_blocking(move || match reader.journal() {
        Some(journal) => read(journal),
        None => Err(store::StoreError::Closed),
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()))
    .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "", e))
}

fn hours(seconds: Option<u64>) -> Option<f64> {
    seconds.map(|s| s as f64 / 3600.0)
}

/// A summary as the API shows it.
fn shown(s: SummaryV2) -> crate::api::WorkloadSummary {
    crate::api::WorkloadSummary {
        submitted_time: rfc3339(s.submitted_at),
        wait_s: s.started_at.map(|t| t.saturating_sub(s.submitted_at)),
        ended_time: s.ended_at.map(rfc3339),
        gpu_hours: hours(s.gpu_seconds),
        lost_gpu_hours: hours(s.lost_gpu_seconds),
        cost_usd: s.cost_micro_usd.map(|c| c as f64 / 1e6),
        kind: s.kind,
        id: s.id,
        name: s.name,
        tenant: s.tenant,
        state: s.state,
        submitted_at: s.submitted_at,
        started_at: s.started_at,
        ended_at: s.ended_at,
        exit_code: s.exit_code,
        restarts: s.restarts,
        size: s.size,
        nodes: s.nodes,
    }
}

/// Finished, failed and cancelled work (and every workload a compaction wrote), by key, with
/// filters. A tenant token sees its own tenant's.
#[utoipa::path(get, path = "/v1/history", params(HistoryQuery),
    responses((status = 200, body = crate::api::HistoryList), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn list_history(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(
        async {
            let role = server.principal(&headers)?;
            let Query(q) = query.map_err(|e| bad("query", e.body_text()))?;
            let tenant = listing_tenant(&role, q.tenant)?;
            let limit = q.limit.unwrap_or(100);
            if limit == 0 || limit > MAX_PAGE {
                return Err(bad("limit", format!("must be 1..={MAX_PAGE}")));
            }
            if q.name.as_ref().is_some_and(|n| n.len() > 128) {
                return Err(bad("name", "longer than 128 bytes"));
            }
            window(q.since, q.until)?;
            let filter = store::HistoryFilter {
                after: q.after.unwrap_or(0),
                limit: limit + 1,
                kind: one_of("kind", q.kind, &KINDS)?,
                tenant,
                state: one_of("state", q.state, &STATES)?,
                name: q.name,
                ended_since: q.since,
                ended_until: q.until,
            };
            let rows = read_store(&server, move |j| j.query_history(&filter)).await?;
            let more = rows.len() > limit;
            let page = &rows[..limit.min(rows.len())];
            let items = page
                .iter()
                .filter_map(|r| SummaryV2::decode(&r.body))
                .map(shown)
                .collect();
            Ok(Json(crate::api::HistoryList {
                items,
                next_after: if more {
                    page.last().map(|r| r.seq)
                } else {
                    None
                },
            })
            .into_response())
        }
        .await,
    )
}

/// Most periods one usage report spans.
const MAX_PERIODS: u64 = 400;

/// Query of `GET /v1/usage`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageParams {
    /// day (default) or week (Monday to Sunday, UTC).
    period: Option<String>,
    /// Work that ended at or after this (Unix seconds; default: 30 periods ago), rounded down
    /// to its period's start.
    since: Option<u64>,
    /// Work that ended before this (Unix seconds; default: now).
    until: Option<u64>,
    /// Only this tenant's (a tenant token: its own, the default).
    tenant: Option<String>,
    /// Only this kind: job (default) or batch.
    kind: Option<String>,
}

/// GPU-hours and cost of finished work per tenant per day or week (counted in the period the
/// work ended). A tenant token sees its own tenant's.
#[utoipa::path(get, path = "/v1/usage", params(UsageParams),
    responses((status = 200, body = crate::api::UsageReport), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn usage(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(
        async {
            let role = server.principal(&headers)?;
            let Query(q) = query.map_err(|e| bad("query", e.body_text()))?;
            let tenant = listing_tenant(&role, q.tenant)?;
            let period =
                one_of("period", q.period, &["day", "week"])?.unwrap_or_else(|| "day".into());
            let kind = one_of("kind", q.kind, &["job", "batch"])?.unwrap_or_else(|| "job".into());
            // Days start at midnight UTC; weeks on Monday (1970-01-05 was one).
            let (period_s, origin) = match period.as_str() {
                "week" => (7 * 86_400, 4 * 86_400),
                _ => (86_400, 0),
            };
            let until = q.until.unwrap_or_else(|| unix_now() + 1);
            let since = q
                .since
                .unwrap_or_else(|| until.saturating_sub(30 * period_s))
                .max(origin);
            window(Some(since), Some(until))?;
            let since = origin + (since - origin) / period_s * period_s;
            if (until - since).div_ceil(period_s) > MAX_PERIODS {
                return Err(bad(
                    "since",
                    format!("the window spans more than {MAX_PERIODS} {period}s"),
                ));
            }
            let query = store::UsageQuery {
                period_s,
                origin,
                since,
                until,
                tenant,
                kind: Some(kind),
            };
            let rows = read_store(&server, move |j| j.usage(&query)).await?;
            let lines = rows
                .into_iter()
                .map(|r| crate::api::UsageLine {
                    period: rfc3339(r.period_start).get(..10).unwrap_or("").to_string(),
                    tenant: r.tenant,
                    period_start: r.period_start,
                    count: r.count,
                    gpu_hours: r.gpu_seconds as f64 / 3600.0,
                    cost_usd: r.cost_micro_usd as f64 / 1e6,
                })
                .collect();
            Ok(Json(crate::api::UsageReport {
                period,
                since,
                until,
                lines,
            })
            .into_response())
        }
        .await,
    )
}
