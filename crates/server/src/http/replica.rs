//! `/v1/replica/snapshot` and `/v1/replica/records` (admin only): what frontends follow the
//! writer with. A frontend loads the state once as a snapshot, then reads the journal's
//! records after it as they become durable, and applies them as a restart would.

use super::*;
use wire::replica::{write_record, CELL_HEADER, MAX_RECORDS, SEQ_HEADER};

/// Most bytes of records in one answer (a record longer than this still goes, alone).
const MAX_RECORDS_BYTES: usize = 8 << 20;

/// The records a frontend asks for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordsQuery {
    /// Records after this one.
    after: u64,
    /// How long to wait for one when there is none yet (at most 30 s).
    #[serde(default)]
    wait_ms: u64,
}

/// The state in the snapshot format: the journal's latest snapshot (no pause: the frontend
/// then follows the records after it), or, when the journal has none yet, a copy of the state
/// now (taken under the lock as a snapshot's copy is, encoded outside it) once the record it
/// holds is durable.
pub(super) async fn replica_snapshot(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            server.admin(&headers, "(a frontend's) follows the writer")?;
            let Some(_) = server.journal() else {
                return Err(not_the_writer());
            };
            let reader = server.clone();
            let saved =
                tokio::task::spawn_blocking(move || reader.journal().map(|j| j.latest_snapshot()))
                    .await
                    .map_err(|e| {
                        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "", e.to_string())
                    })?
                    .transpose()
                    .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "", e.to_string()))?
                    .flatten();
            let (seq, body) = match saved {
                Some(saved) => saved,
                None => {
                    let copy = server.plane().clone();
                    let seq = copy.seq();
                    let body = tokio::task::spawn_blocking(move || copy.snapshot())
                        .await
                        .map_err(|e| {
                            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "", e.to_string())
                        })?
                        .map_err(|e| Refusal::from_state(e, ""))?;
                    (seq, body)
                }
            };
            server.durable_through(seq).await;
            let cell = axum::http::HeaderValue::from_str(&server.cell)
                .unwrap_or(axum::http::HeaderValue::from_static("cell-0"));
            Ok((
                [
                    (
                        axum::http::header::CONTENT_TYPE,
                        axum::http::HeaderValue::from_static("application/cbor"),
                    ),
                    (
                        axum::http::HeaderName::from_static(SEQ_HEADER),
                        axum::http::HeaderValue::from(seq),
                    ),
                    (axum::http::HeaderName::from_static(CELL_HEADER), cell),
                ],
                body,
            )
                .into_response())
        }
        .await,
    )
}

/// Durable records after `after`, waiting up to `wait_ms` for the first; 410 when the journal
/// was compacted past `after`.
pub(super) async fn replica_records(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(
        async {
            server.admin(&headers, "(a frontend's) follows the writer")?;
            let Query(q) =
                query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "query", e.body_text()))?;
            let Some(_) = server.journal() else {
                return Err(not_the_writer());
            };
            let wait = Duration::from_millis(q.wait_ms.min(changes::MAX_WAIT_MS));
            let mut durable = server.durable.subscribe();
            let last = *durable.borrow();
            if q.after > last {
                // A journal that ends before what the frontend holds is not the one it
                // followed (restored from a backup, or another cell's).
                return Err(Refusal::new(
                    StatusCode::GONE,
                    "after",
                    format!("the journal ends at record {last}: load the snapshot again"),
                ));
            }
            let _ = tokio::time::timeout(wait, durable.wait_for(|d| *d > q.after)).await;
            let reader = server.clone();
            let after = q.after;
            let records = tokio::task::spawn_blocking(move || {
                reader
                    .journal()
                    .map(|j| j.read_after(after, MAX_RECORDS))
                    .unwrap_or(Ok(Vec::new()))
            })
            .await
            .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "", e.to_string()))?
            .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "", e.to_string()))?;
            if records
                .first()
                .is_some_and(|r| Some(r.seq) != after.checked_add(1))
            {
                return Err(Refusal::new(
                    StatusCode::GONE,
                    "after",
                    format!(
                        "the journal was compacted past record {after}: load the snapshot again"
                    ),
                ));
            }
            let mut out = Vec::new();
            for r in records {
                if !out.is_empty() && out.len() + r.body.len() > MAX_RECORDS_BYTES {
                    break;
                }
                if !write_record(&mut out, r.seq, &r.body) {
                    return Err(Refusal::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "",
                        format!("journal record {} holds a line break", r.seq),
                    ));
                }
            }
            Ok((
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/x-stargrid-records",
                )],
                out,
            )
                .into_response())
        }
        .await,
    )
}

fn not_the_writer() -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        "",
        "this server is a frontend: follow its writer",
    )
}
