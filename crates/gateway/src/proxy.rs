//! One request through the gateway. `/{tenant}/{service}/rest?query` goes to `/rest?query` on
//! one of the service's ready replicas (see [`crate::table`]); the body is read first (up to
//! the configured limit) so that a failed attempt can go to another replica, and so that its
//! prefix can pick one. The response streams back as the replica sends it; the request counts
//! as in flight, for its replica and its service, until the last byte is sent or the client
//! goes away. A service with no ready replica holds the request until one is ready (a service
//! scaled to zero wakes this way), up to the hold timeout.

use crate::stats::ServiceStats;
use crate::table::{key_of, Replica, Routes, Service};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What a response's body is: the replica's, streamed, or the gateway's own.
pub type GatewayBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Most replicas one request is tried on.
const MAX_ATTEMPTS: usize = 3;

/// How requests are proxied.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// Requests carrying this header go to the replica its value hashes to.
    pub affinity_header: Option<HeaderName>,
    /// Without that header, the first this-many bytes of the body pick the replica (requests
    /// sharing a prompt prefix reach the replica holding its KV cache); 0: off.
    pub prefix_affinity_bytes: usize,
    /// How long a request waits for a ready replica when its service has none.
    pub hold_timeout: Duration,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
    /// How long a replica may take to start answering (a streamed answer may then take as
    /// long as it streams).
    pub answer_timeout: Duration,
    /// Most requests in flight through the gateway (held ones too); more are answered 503.
    pub max_inflight: usize,
    /// Retry requests that are not idempotent (POST, PATCH) on another replica after a
    /// failure past the connection (inference requests have no side effects). Requests
    /// whose connection failed are always retried: nothing reached the replica.
    pub retry_unsafe: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_body: 8 << 20,
            affinity_header: None,
            prefix_affinity_bytes: 0,
            hold_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            answer_timeout: Duration::from_secs(300),
            max_inflight: 10_000,
            retry_unsafe: false,
        }
    }
}

/// The proxy: the routes, a pooled client to the replicas, the configuration.
pub struct Proxy {
    routes: Arc<Routes>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// One permit per request in flight ([`ProxyConfig::max_inflight`]).
    slots: Arc<tokio::sync::Semaphore>,
    config: ProxyConfig,
}

/// Hop-by-hop headers, which are the connection's, not the request's.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Proxy {
    /// A proxy over `routes`.
    pub fn new(routes: Arc<Routes>, config: ProxyConfig) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Proxy {
            routes,
            client,
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_inflight)),
            config,
        }
    }

    /// Answers one request from `peer`.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<GatewayBody> {
        let path = req.uri().path();
        if path == "/healthz" {
            return answer(StatusCode::OK, "ok");
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "the gateway carries its most requests ({}) now",
                    self.config.max_inflight
                ),
            );
        };
        let Some(target) = Target::parse(path, req.uri().query()) else {
            return answer(
                StatusCode::NOT_FOUND,
                "the path must name a service: /{tenant}/{service}/…",
            );
        };
        if let Err(refusal) = self.lookup(&target) {
            return refusal;
        }
        let (parts, body) = req.into_parts();
        let read = Limited::new(body, self.config.max_body).collect();
        let body = match tokio::time::timeout(self.config.body_timeout, read).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "a request body is limited to {} bytes",
                        self.config.max_body
                    ),
                )
            }
            Ok(Err(_)) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                )
            }
            Err(_) => {
                return answer(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "the request body did not arrive within {} s",
                        self.config.body_timeout.as_secs()
                    ),
                )
            }
        };
        // Counted in flight from here: a slow upload is not load on the service.
        let mut counted = match self.lookup(&target) {
            Ok(service) => Counted::start(service.stats.clone()),
            Err(refusal) => return refusal,
        };
        let key = self.affinity(&parts.headers, &body);
        let retry_any = self.config.retry_unsafe || is_idempotent(&parts.method);
        let mut tried: Vec<u64> = Vec::new();
        let mut last_error = String::new();
        while tried.len() < MAX_ATTEMPTS {
            // The routes as they are now: a replica that left since is not tried.
            let service = match self.lookup(&target) {
                Ok(s) => s,
                Err(refusal) => return refusal,
            };
            let replica = match self.routes.pick(&service, key, &tried) {
                Some(r) => r,
                None if tried.is_empty() => match self.hold(&target).await {
                    Ok(()) => continue,
                    Err(refusal) => {
                        counted.unrecorded();
                        return refusal;
                    }
                },
                None => break,
            };
            tried.push(replica.id);
            let upstream = upstream_request(&parts, &target, &replica, peer, body.clone());
            let sent = Sent::start(replica.clone());
            let asked =
                tokio::time::timeout(self.config.answer_timeout, self.client.request(upstream));
            match asked.await {
                Ok(Ok(resp)) => {
                    let (parts, incoming) = resp.into_parts();
                    let body = Tracked {
                        inner: incoming,
                        _sent: sent,
                        _counted: counted,
                        _slot: slot,
                    };
                    return Response::from_parts(parts, body.boxed_unsync());
                }
                Ok(Err(e)) => {
                    let connect = e.is_connect();
                    if connect {
                        self.routes.bench(&replica);
                    }
                    last_error = format!("replica {}: {}", replica.id, error_chain(&e));
                    tracing::debug!(%last_error, "attempt failed");
                    if !(connect || retry_any) {
                        break;
                    }
                }
                Err(_) => {
                    last_error = format!(
                        "replica {}: no answer within {} s",
                        replica.id,
                        self.config.answer_timeout.as_secs()
                    );
                    if !retry_any {
                        break;
                    }
                }
            }
        }
        answer(
            StatusCode::BAD_GATEWAY,
            &format!("no replica answered ({last_error})"),
        )
    }

    /// The service `target` names, as the routes have it now, or the answer that says why
    /// there is none.
    #[allow(clippy::result_large_err)]
    fn lookup(&self, target: &Target) -> Result<Arc<Service>, Response<GatewayBody>> {
        let table = self.routes.now();
        if !table.loaded() {
            return Err(answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway has not had the server's routes yet",
            ));
        }
        table
            .service(&target.tenant, &target.service)
            .cloned()
            .ok_or_else(|| {
                answer(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "no service '{}' of tenant '{}' here",
                        target.service, target.tenant
                    ),
                )
            })
    }

    /// The affinity key of a request: its affinity header's value, else its body's prefix.
    fn affinity(&self, headers: &hyper::HeaderMap, body: &Bytes) -> Option<u64> {
        if let Some(h) = &self.config.affinity_header {
            if let Some(v) = headers.get(h) {
                return Some(key_of(v.as_bytes()));
            }
        }
        let n = self.config.prefix_affinity_bytes.min(body.len());
        (n > 0).then(|| key_of(&body[..n]))
    }

    /// Waits for `target` to have a ready replica, or says why it has none.
    #[allow(clippy::result_large_err)]
    async fn hold(&self, target: &Target) -> Result<(), Response<GatewayBody>> {
        let mut changed = self.routes.watch();
        let deadline = tokio::time::Instant::now() + self.config.hold_timeout;
        loop {
            if !self.lookup(target)?.replicas.is_empty() {
                return Ok(());
            }
            if !matches!(
                tokio::time::timeout_at(deadline, changed.changed()).await,
                Ok(Ok(()))
            ) {
                return Err(answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "service '{}' had no ready replica within {} s",
                        target.service,
                        self.config.hold_timeout.as_secs()
                    ),
                ));
            }
        }
    }
}

/// Where a request goes: the service, and the path and query the replica sees.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The tenant's name.
    pub tenant: String,
    /// The service's name.
    pub service: String,
    /// The path and query on the replica (starting with '/').
    pub rest: String,
}

impl Target {
    /// `/{tenant}/{service}[/rest]` with an optional query; `None` for any other path.
    pub fn parse(path: &str, query: Option<&str>) -> Option<Target> {
        let mut parts = path.strip_prefix('/')?.splitn(3, '/');
        let tenant = parts.next().filter(|t| !t.is_empty())?;
        let service = parts.next().filter(|s| !s.is_empty())?;
        let mut rest = format!("/{}", parts.next().unwrap_or(""));
        if let Some(q) = query {
            rest.push('?');
            rest.push_str(q);
        }
        Some(Target {
            tenant: tenant.to_string(),
            service: service.to_string(),
            rest,
        })
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

fn upstream_request(
    parts: &hyper::http::request::Parts,
    target: &Target,
    replica: &Replica,
    peer: SocketAddr,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = format!("http://{}{}", replica.authority, target.rest)
        .parse()
        .unwrap_or_default();
    let headers = req.headers_mut();
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != HOST {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(host) = HeaderValue::from_str(&replica.authority) {
        headers.insert(HOST, host);
    }
    if let Ok(ip) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.append("x-forwarded-for", ip);
    }
    req
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The gateway's own answer: a JSON error, or plain text for a health check.
fn answer(status: StatusCode, text: &str) -> Response<GatewayBody> {
    let (body, kind) = if status.is_success() {
        (text.to_string(), "text/plain")
    } else {
        (
            serde_json::json!({ "error": text }).to_string(),
            "application/json",
        )
    };
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

/// A request counted in flight for its service, from its body's arrival until its response
/// ends; its latency is recorded then, unless it was never sent.
struct Counted {
    stats: Arc<ServiceStats>,
    since: Instant,
    record: bool,
}

impl Counted {
    fn start(stats: Arc<ServiceStats>) -> Counted {
        stats.inflight.fetch_add(1, Ordering::Relaxed);
        Counted {
            stats,
            since: Instant::now(),
            record: true,
        }
    }

    /// It ends without a latency (it waited for a replica that never came).
    fn unrecorded(&mut self) {
        self.record = false;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stats.inflight.fetch_sub(1, Ordering::Relaxed);
        if self.record {
            self.stats.ended(self.since.elapsed());
        }
    }
}

/// A request counted in flight on the replica it was sent to.
struct Sent(Arc<Replica>);

impl Sent {
    fn start(replica: Arc<Replica>) -> Sent {
        replica.inflight.fetch_add(1, Ordering::Relaxed);
        Sent(replica)
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A replica's response body, counted until it ends or is dropped.
struct Tracked {
    inner: Incoming,
    _sent: Sent,
    _counted: Counted,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_path_names_tenant_and_service_and_keeps_the_rest() {
        let t = Target::parse("/acme/chat/v1/completions", Some("stream=1")).unwrap();
        assert_eq!(
            (t.tenant.as_str(), t.service.as_str(), t.rest.as_str()),
            ("acme", "chat", "/v1/completions?stream=1")
        );
        assert_eq!(Target::parse("/acme/chat", None).unwrap().rest, "/");
        assert_eq!(Target::parse("/acme/chat/", None).unwrap().rest, "/");
        for bad in ["/", "/acme", "/acme/", "//chat/x", "acme/chat"] {
            assert!(Target::parse(bad, None).is_none(), "{bad}");
        }
    }

    proptest! {
        /// Any path either names a service or is refused; what is kept starts with '/'.
        #[test]
        fn any_path_parses_or_is_refused(path in ".{0,64}", query in proptest::option::of("[a-z=&]{0,16}")) {
            if let Some(t) = Target::parse(&path, query.as_deref()) {
                prop_assert!(t.rest.starts_with('/'));
                prop_assert!(!t.tenant.is_empty() && !t.service.is_empty());
                prop_assert!(!t.tenant.contains('/') && !t.service.contains('/'));
            }
        }
    }
}
