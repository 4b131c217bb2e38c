//! `GET /v1/events`: the event stream, as Server-Sent Events. Each message is one
//! [`crate::api::StreamEvent`] (`id:` its id, `event:` its kind, `data:` the JSON), of durable
//! records only; a tenant token sees its own work's events and the fleet's. Resumable from an
//! id (`?after=` or `Last-Event-ID`); a reader the server cannot resume is sent a `resync`
//! event. Streams open at once are capped; each costs a task and a cursor.

use super::*;
use crate::api::{EventId, StreamEvent};
use crate::events::Read;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

/// Most event streams open at once (each wakes on every commit).
pub const MAX_EVENT_STREAMS: usize = 512;

/// Most events one read takes from the ring.
const PAGE: usize = 256;

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// Events after this id (`RECORD.INDEX`; the `Last-Event-ID` header does the same).
    /// Unset: from now on.
    after: Option<String>,
    /// Only this tenant's work (and the fleet's events). A tenant token sees its own only.
    tenant: Option<String>,
    /// Keep the stream open for new events (default); `false` ends it once caught up.
    follow: Option<bool>,
}

/// Counts an open stream; uncounts it when the stream is dropped.
struct StreamSlot(Arc<Server>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.event_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A reader's place in the stream.
struct Cursor {
    slot: StreamSlot,
    after: EventId,
    viewer: Option<String>,
    follow: bool,
    durable: tokio::sync::watch::Receiver<u64>,
    ready: VecDeque<StreamEvent>,
}

impl Cursor {
    /// The next event, waiting for one while following; `None` ends the stream.
    async fn next(&mut self) -> Option<StreamEvent> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            let durable = *self.durable.borrow_and_update();
            let server = &self.slot.0;
            let read = server
                .event_log()
                .read(self.after, durable, self.viewer.as_deref(), PAGE);
            match read {
                Read::Resync(e) => {
                    if let Ok(id) = e.id.parse() {
                        self.after = id;
                    }
                    return Some(e);
                }
                Read::Events { events, next } => {
                    let moved = next != self.after;
                    self.after = next;
                    self.ready.extend(events);
                    if moved {
                        continue;
                    }
                }
            }
            if !self.follow {
                return None;
            }
            // Nothing new: wait for the next durable record (the sender lives as long as the
            // server).
            self.durable.changed().await.ok()?;
        }
    }
}

fn sse_event(e: &StreamEvent) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_default();
    SseEvent::default()
        .id(e.id.clone())
        .event(e.change.kind())
        .data(data)
}

/// Job, service, batch and node state changes, preemptions and requeues, as Server-Sent
/// Events (`text/event-stream`), each `data:` a `StreamEvent`.
#[utoipa::path(get, path = "/v1/events", params(EventsQuery),
    responses((status = 200, description = "Server-Sent Events, each data line a StreamEvent", body = StreamEvent, content_type = "text/event-stream"),
        (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub(super) async fn stream_events(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(open_stream(server, &headers, query).await)
}

async fn open_stream(
    server: Arc<Server>,
    headers: &HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Refusal> {
    let role = server.principal(headers)?;
    let Query(q) =
        query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "query", e.body_text()))?;
    let viewer = listing_tenant(&role, q.tenant)?;
    let resume = match (&q.after, headers.get("last-event-id")) {
        (Some(after), _) => Some(("after", after.clone())),
        (None, Some(h)) => Some((
            "Last-Event-ID",
            h.to_str()
                .map_err(|_| {
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "Last-Event-ID",
                        "not visible ASCII",
                    )
                })?
                .to_string(),
        )),
        (None, None) => None,
    };
    let durable = server.durable.subscribe();
    let after = match resume {
        Some((field, text)) => text
            .parse::<EventId>()
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, field, e.to_string()))?,
        None => server.event_log().latest(*durable.borrow()),
    };
    if server.event_streams.fetch_add(1, Ordering::Relaxed) >= MAX_EVENT_STREAMS {
        server.event_streams.fetch_sub(1, Ordering::Relaxed);
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            format!("{MAX_EVENT_STREAMS} event streams are open: try again later"),
        ));
    }
    let cursor = Cursor {
        slot: StreamSlot(server.clone()),
        after,
        viewer,
        follow: q.follow.unwrap_or(true),
        durable,
        ready: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        let e = c.next().await?;
        Some((Ok::<_, std::convert::Infallible>(sse_event(&e)), c))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
