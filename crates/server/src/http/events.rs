//! `GET /v1/events`: the event stream, as Server-Sent Events. Each message is one
//! [`crate::api::StreamEvent`] (`id:` its id, `event:` its kind, `data:` the JSON), of durable
//! records only; a tenant token sees its own work's events and the fleet's. Resumable from an
//! id (`?after=` or `Last-Event-ID`); a reader the server cannot resume is sent a `resync`
//! event. Streams open at once are capped, in all and per token; each costs a task and a
//! cursor, and ends when its token is revoked or expires.

use super::*;
use crate::api::{EventId, StreamEvent};
use crate::events::Read;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use std::collections::VecDeque;

/// Most event streams open at once (each wakes on every commit).
pub const MAX_EVENT_STREAMS: usize = 512;

/// Most event streams one token holds open at once.
pub const MAX_STREAMS_PER_TOKEN: usize = 16;

/// How often a stream checks that its token still works (revoked or expired: it ends).
const RECHECK: Duration = Duration::from_secs(10);

/// Event streams open now: in all, and per token (by hash).
#[derive(Debug, Default)]
pub struct StreamCounts {
    total: usize,
    per_token: HashMap<String, usize>,
}

impl StreamCounts {
    /// Counts a new stream of `token`, or says why not.
    fn take(&mut self, token: &str) -> Result<(), String> {
        if self.total >= MAX_EVENT_STREAMS {
            return Err(format!(
                "{MAX_EVENT_STREAMS} event streams are open: try again later"
            ));
        }
        let mine = self.per_token.entry(token.to_string()).or_default();
        if *mine >= MAX_STREAMS_PER_TOKEN {
            return Err(format!(
                "this token holds {MAX_STREAMS_PER_TOKEN} event streams open already"
            ));
        }
        *mine += 1;
        self.total += 1;
        Ok(())
    }

    fn give_back(&mut self, token: &str) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_token.get_mut(token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_token.remove(token);
            }
        }
    }
}

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

/// Counts an open stream of a token (by hash); uncounts it when the stream is dropped.
struct StreamSlot(Arc<Server>, String);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.stream_counts().give_back(&self.1);
    }
}

impl Server {
    fn stream_counts(&self) -> std::sync::MutexGuard<'_, StreamCounts> {
        lock(&self.event_streams)
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
    /// When the token was last found to work.
    checked: Instant,
}

impl Cursor {
    /// The next event, waiting for one while following; `None` ends the stream.
    async fn next(&mut self) -> Option<StreamEvent> {
        loop {
            if self.checked.elapsed() >= RECHECK {
                // A revoked or expired token's stream ends.
                let StreamSlot(server, hash) = &self.slot;
                server.plane().role_of(hash, unix_now()).ok()?;
                self.checked = Instant::now();
            }
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
            // server), or for the next check of the token.
            let until_check = RECHECK.saturating_sub(self.checked.elapsed());
            if let Ok(changed) = tokio::time::timeout(until_check, self.durable.changed()).await {
                changed.ok()?;
            }
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
    let (role, hash) = server.caller(headers)?;
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
    server
        .stream_counts()
        .take(&hash)
        .map_err(|why| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "", why))?;
    let cursor = Cursor {
        slot: StreamSlot(server.clone(), hash),
        after,
        viewer,
        follow: q.follow.unwrap_or(true),
        durable,
        ready: VecDeque::new(),
        checked: Instant::now(),
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        let e = c.next().await?;
        Some((Ok::<_, std::convert::Infallible>(sse_event(&e)), c))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
