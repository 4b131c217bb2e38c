//! A typed blocking client of the `/v1` API, on `ureq`: one method per endpoint, every URL
//! built in one place ([`Client`]'s private `url`), bearer-token authentication, and errors
//! that keep their kind ([`ClientError`]): a refusal with the server's field and reason, a
//! server that cannot be reached, or an answer that cannot be read.
//!
//! ```no_run
//! # fn main() -> Result<(), wire::ClientError> {
//! let client = wire::Client::new("http://127.0.0.1:7070/", "token");
//! for node in client.nodes()? {
//!     println!("{} {}", node.name, node.state);
//! }
//! # Ok(())
//! # }
//! ```

use crate::api::{
    ApiError, BatchList, BatchView, Changes, ExecAck, ExecEvent, ExecOutput, ExecRequest,
    FileWritten, Heartbeat, HeartbeatReply, Heartbeats, HeartbeatsReply, IssueToken, JobList,
    JobView, LogView, NodeView, ScaleService, ServiceList, ServiceView, SubmitJob, SubmitSandboxes,
    SubmitService, Submitted, TenantView, Token, TokenView, WaitForChanges,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// How long a request may take unless [`Client::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status: which field, and why (the raw body as the
    /// reason, with no field, when the body is not the API's error document).
    #[error("refused ({status}): {}", refusal_text(field, reason))]
    Refused {
        /// The HTTP status (4xx or 5xx).
        status: u16,
        /// The field refused (empty when the request as a whole was).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The server could not be reached (connection, timeout, TLS, a bad URL).
    #[error("reaching the server: {0}")]
    Unreachable(String),
    /// The server answered, but not with what was expected.
    #[error("reading the server's answer: {0}")]
    Decode(String),
}

impl ClientError {
    /// Whether the server said there is no such thing (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Refused { status: 404, .. })
    }

    /// A refusal from its status and body: the API's error document when it is one.
    fn refused(status: u16, body: &str) -> ClientError {
        match serde_json::from_str::<ApiError>(body) {
            Ok(e) => ClientError::Refused {
                status,
                field: e.error.field,
                reason: e.error.reason,
            },
            Err(_) => ClientError::Refused {
                status,
                field: String::new(),
                reason: body.to_string(),
            },
        }
    }
}

/// `field: reason`, or the reason alone when no field is named.
fn refusal_text(field: &str, reason: &str) -> String {
    if field.is_empty() {
        reason.to_string()
    } else {
        format!("{field}: {reason}")
    }
}

/// What a client call returns.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Which jobs `GET /v1/jobs` lists, and which page (unset: the server's default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// Only this tenant's jobs.
    pub tenant: Option<String>,
    /// Only jobs in this state (pending, running, preempting, finished, cancelled).
    pub state: Option<String>,
    /// Jobs with a larger id (the previous page's `next_after`).
    pub after: Option<u64>,
    /// Page size, 1..=1000 (the server's default is 100).
    pub limit: Option<usize>,
}

/// Which sandbox batches `GET /v1/sandboxes` lists, and which page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchQuery {
    /// Only this tenant's batches.
    pub tenant: Option<String>,
    /// Batches with a larger id (the previous page's `next_after`).
    pub after: Option<u64>,
    /// Page size, 1..=1000 (the server's default is 100).
    pub limit: Option<usize>,
}

/// Which rows of the history `GET /v1/history` gives (unset: no filter).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Keys above this one (the previous page's `next_after`).
    pub after: Option<u64>,
    /// Page size, 1..=1000 (the server's default is 100).
    pub limit: Option<usize>,
    /// job, batch or service.
    pub kind: Option<String>,
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// Only in this state (finished, failed, cancelled, ...).
    pub state: Option<String>,
    /// Only with this name.
    pub name: Option<String>,
    /// Only what ended at or after this (Unix seconds).
    pub since: Option<u64>,
    /// Only what ended before this.
    pub until: Option<u64>,
}

/// What `GET /v1/usage` sums (unset: the server's defaults: per day, the last 30 days, jobs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// day or week.
    pub period: Option<String>,
    /// Work that ended at or after this (Unix seconds).
    pub since: Option<u64>,
    /// Work that ended before this.
    pub until: Option<u64>,
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// job or batch.
    pub kind: Option<String>,
}

/// Which events `GET /v1/events` streams.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Events after this id (`RECORD.INDEX`); unset: from now on.
    pub after: Option<String>,
    /// Only this tenant's work (and the fleet's events); a tenant token sees its own only.
    pub tenant: Option<String>,
    /// Keep waiting for new events (unset: end once caught up).
    pub follow: bool,
}

/// A connection to one server with one token. Cheap to clone (clones share their connection
/// pool).
#[derive(Clone)]
pub struct Client {
    /// The base URL, without a trailing '/'.
    base: String,
    /// `Bearer <token>`.
    auth: String,
    /// The trust for an `https://` server: only the certificate authorities given, or the
    /// platform's web roots when none was.
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    http: ureq::Agent,
    /// For requests passed on whose answers stream ([`Client::forward`]): its own pool, no
    /// limit on the whole request.
    stream: ureq::Agent,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:7070`; a trailing '/' is
    /// dropped) sending `token` as its bearer token, with requests limited to 30 s.
    pub fn new(base_url: &str, token: &str) -> Client {
        Client {
            base: base_url.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
            tls: None,
            timeout: DEFAULT_TIMEOUT,
            http: agent(DEFAULT_TIMEOUT, None),
            stream: stream_agent(DEFAULT_TIMEOUT, None),
        }
    }

    /// The same client with requests limited to `timeout` instead (a long poll needs more
    /// than it waits for; a heartbeat may want less).
    pub fn with_timeout(self, timeout: Duration) -> Client {
        Client {
            http: agent(timeout, self.tls.clone()),
            stream: stream_agent(timeout, self.tls.clone()),
            timeout,
            ..self
        }
    }

    /// The same client trusting, for an `https://` server, exactly the certificate
    /// authorities in `pem` (a private CA's certificate, PEM).
    pub fn with_ca_pem(self, pem: &[u8]) -> Result<Client> {
        use rustls::pki_types::pem::PemObject;
        let bad = |why: String| ClientError::Unreachable(format!("the CA file: {why}"));
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = Some(Arc::new(config));
        Ok(Client {
            http: agent(self.timeout, tls.clone()),
            stream: stream_agent(self.timeout, tls.clone()),
            tls,
            ..self
        })
    }

    /// The server's base URL, without a trailing '/'.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The URL of `path` under `/v1`: the one place URLs are made.
    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.base)
    }

    fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        let mut req = self
            .http
            .get(&self.url(path))
            .set("Authorization", &self.auth);
        for (name, value) in query {
            req = req.query(name, value);
        }
        answer(req.call())
    }

    fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        answer(
            self.http
                .post(&self.url(path))
                .set("Authorization", &self.auth)
                .call(),
        )
    }

    fn post_json<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        answer(
            self.http
                .post(&self.url(path))
                .set("Authorization", &self.auth)
                .send_json(body),
        )
    }

    /// Queues a training job (`POST /v1/jobs`).
    pub fn submit_job(&self, job: &SubmitJob) -> Result<Submitted> {
        self.post_json("jobs", job)
    }

    /// Creates an inference service (`POST /v1/services`).
    pub fn submit_service(&self, service: &SubmitService) -> Result<Submitted> {
        self.post_json("services", service)
    }

    /// A service's ready replicas (`GET /v1/services/{id}/endpoints`).
    pub fn service_endpoints(&self, id: u64) -> Result<Vec<crate::api::ServiceEndpoint>> {
        self.get(&format!("services/{id}/endpoints"), &[])
    }

    /// Places a batch of sandboxes, all or none (`POST /v1/sandboxes`).
    pub fn submit_sandboxes(&self, batch: &SubmitSandboxes) -> Result<Submitted> {
        self.post_json("sandboxes", batch)
    }

    /// A page of jobs, in id order (`GET /v1/jobs`).
    pub fn jobs(&self, query: &JobQuery) -> Result<JobList> {
        let mut q = Vec::new();
        push(&mut q, "tenant", query.tenant.as_ref());
        push(&mut q, "state", query.state.as_ref());
        push(&mut q, "after", query.after);
        push(&mut q, "limit", query.limit);
        self.get("jobs", &q)
    }

    /// One job (`GET /v1/jobs/{id}`).
    pub fn job(&self, id: u64) -> Result<JobView> {
        self.get(&format!("jobs/{id}"), &[])
    }

    /// Cancels a job, pending or running (`POST /v1/jobs/{id}/cancel`).
    pub fn cancel_job(&self, id: u64) -> Result<JobView> {
        self.post(&format!("jobs/{id}/cancel"))
    }

    /// Why a job is where it is (`GET /v1/jobs/{id}/why`).
    pub fn why(&self, id: u64) -> Result<JobView> {
        self.get(&format!("jobs/{id}/why"), &[])
    }

    /// A task's log from byte `from`, as far as the server has it
    /// (`GET /v1/jobs/{id}/logs`).
    pub fn logs(&self, id: u64, rank: u32, from: u64) -> Result<LogView> {
        let q = [("rank", rank.to_string()), ("from", from.to_string())];
        self.get(&format!("jobs/{id}/logs"), &q)
    }

    /// Sandbox `index` of batch `id`'s log from byte `from` (`GET /v1/sandboxes/{id}/logs`).
    pub fn sandbox_logs(&self, id: u64, index: u32, from: u64) -> Result<LogView> {
        let q = [("index", index.to_string()), ("from", from.to_string())];
        self.get(&format!("sandboxes/{id}/logs"), &q)
    }

    /// Runs a command in sandbox `index` of interactive batch `id`
    /// (`POST /v1/sandboxes/{id}/exec`): each line of output is given to `each` as it comes;
    /// the answer is the last line (its `exit_code`, or its `error`).
    pub fn exec(
        &self,
        id: u64,
        index: u32,
        request: &ExecRequest,
        mut each: impl FnMut(&ExecEvent),
    ) -> Result<ExecEvent> {
        use std::io::BufRead;
        // The request lives as long as the command may, and a little more.
        let limit = Duration::from_secs(u64::from(request.timeout_s.unwrap_or(60)) + 30);
        let resp = self
            .http
            .post(&self.url(&format!("sandboxes/{id}/exec")))
            .set("Authorization", &self.auth)
            .query("index", &index.to_string())
            .timeout(limit)
            .send_json(request);
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return answer::<ExecEvent>(Err(e)),
        };
        let reader = std::io::BufReader::new(resp.into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| ClientError::Unreachable(e.to_string()))?;
            let event: ExecEvent =
                serde_json::from_str(&line).map_err(|e| ClientError::Decode(e.to_string()))?;
            if event.is_end() {
                return Ok(event);
            }
            each(&event);
        }
        Err(ClientError::Unreachable(
            "the exec's answer ended without its end".into(),
        ))
    }

    /// Writes `data` (at most 1 MiB) into file `path` of sandbox `index` of interactive batch
    /// `id`, replacing it or, with `append`, after its end (`PUT /v1/sandboxes/{id}/files`).
    pub fn write_file(
        &self,
        id: u64,
        index: u32,
        path: &str,
        data: &[u8],
        append: bool,
    ) -> Result<FileWritten> {
        answer(
            self.http
                .put(&self.url(&format!("sandboxes/{id}/files")))
                .set("Authorization", &self.auth)
                .set("Content-Type", "application/octet-stream")
                .query("index", &index.to_string())
                .query("path", path)
                .query("append", &append.to_string())
                .send_bytes(data),
        )
    }

    /// Reads at most `limit` bytes (1 MiB) of file `path` from `offset`, in sandbox `index` of
    /// interactive batch `id` (`GET /v1/sandboxes/{id}/files`); fewer than asked: the file
    /// ended.
    pub fn read_file(
        &self,
        id: u64,
        index: u32,
        path: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<u8>> {
        use std::io::Read;
        let resp = self
            .http
            .get(&self.url(&format!("sandboxes/{id}/files")))
            .set("Authorization", &self.auth)
            .query("index", &index.to_string())
            .query("path", path)
            .query("offset", &offset.to_string())
            .query("limit", &limit.to_string())
            .call();
        match resp {
            Ok(r) => {
                let mut out = Vec::new();
                r.into_reader()
                    .take(limit)
                    .read_to_end(&mut out)
                    .map_err(|e| ClientError::Unreachable(e.to_string()))?;
                Ok(out)
            }
            Err(e) => answer::<Vec<u8>>(Err(e)),
        }
    }

    /// Every service, in id order, all pages; only `tenant`'s when given (`GET /v1/services`).
    pub fn services(&self, tenant: Option<&str>) -> Result<Vec<ServiceView>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.services_page(tenant, after, None)?;
            all.extend(page.services);
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// One page of services (`GET /v1/services?after=&limit=`).
    pub fn services_page(
        &self,
        tenant: Option<&str>,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<ServiceList> {
        let mut q = Vec::new();
        push(&mut q, "tenant", tenant);
        push(&mut q, "after", after);
        push(&mut q, "limit", limit);
        self.get("services", &q)
    }

    /// One service (`GET /v1/services/{id}`).
    pub fn service(&self, id: u64) -> Result<ServiceView> {
        self.get(&format!("services/{id}"), &[])
    }

    /// Sets a service's desired replica count (`POST /v1/services/{id}/scale`).
    pub fn scale_service(&self, id: u64, replicas: u32) -> Result<ServiceView> {
        self.post_json(&format!("services/{id}/scale"), &ScaleService { replicas })
    }

    /// Deletes a service: its replicas stop (`POST /v1/services/{id}/delete`).
    pub fn delete_service(&self, id: u64) -> Result<ServiceView> {
        self.post(&format!("services/{id}/delete"))
    }

    /// A page of sandbox batches, in id order (`GET /v1/sandboxes`).
    pub fn batches(&self, query: &BatchQuery) -> Result<BatchList> {
        let mut q = Vec::new();
        push(&mut q, "tenant", query.tenant.as_ref());
        push(&mut q, "after", query.after);
        push(&mut q, "limit", query.limit);
        self.get("sandboxes", &q)
    }

    /// One sandbox batch (`GET /v1/sandboxes/{id}`).
    pub fn batch(&self, id: u64) -> Result<BatchView> {
        self.get(&format!("sandboxes/{id}"), &[])
    }

    /// Cancels a sandbox batch (`POST /v1/sandboxes/{id}/cancel`).
    pub fn cancel_batch(&self, id: u64) -> Result<BatchView> {
        self.post(&format!("sandboxes/{id}/cancel"))
    }

    /// Every node, with its state and free capacity (`GET /v1/nodes`, page by page).
    pub fn nodes(&self) -> Result<Vec<NodeView>> {
        // A page at a time: a full page may be followed by more.
        const PAGE: usize = 10_000;
        let mut all: Vec<NodeView> = Vec::new();
        loop {
            let mut q = vec![("limit", PAGE.to_string())];
            if let Some(last) = all.last() {
                q.push(("after", last.name.clone()));
            }
            let page: Vec<NodeView> = self.get("nodes", &q)?;
            let full = page.len() == PAGE;
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// The metrics in Prometheus' text format (`GET /metrics`; an admin or metrics token).
    pub fn metrics_text(&self) -> Result<String> {
        // The one route outside `/v1`.
        let url = format!("{}/metrics", self.base);
        accepted(self.http.get(&url).set("Authorization", &self.auth).call())?
            .into_string()
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The cell's capacity summary (`GET /v1/cell`).
    pub fn cell(&self) -> Result<crate::api::CellSummary> {
        self.get("cell", &[])
    }

    /// Drains a node, or every node under a topology path (`POST /v1/nodes/{name}/drain`);
    /// answers the nodes.
    pub fn drain(&self, name: &str) -> Result<Vec<NodeView>> {
        self.post(&format!("nodes/{}/drain", segment(name)))
    }

    /// Resumes a drained node, or the drained nodes under a topology path
    /// (`POST /v1/nodes/{name}/resume`); answers the nodes.
    pub fn resume(&self, name: &str) -> Result<Vec<NodeView>> {
        self.post(&format!("nodes/{}/resume", segment(name)))
    }

    /// Tenants and their usage, as far as the token sees (`GET /v1/tenants`).
    pub fn tenants(&self) -> Result<Vec<TenantView>> {
        self.get("tenants", &[])
    }

    /// Issues a token (admin; `POST /v1/tokens`). The answer holds the token, once.
    pub fn issue_token(&self, request: &IssueToken) -> Result<Token> {
        self.post_json("tokens", request)
    }

    /// Tokens that were not revoked (admin; `GET /v1/tokens`).
    pub fn tokens(&self) -> Result<Vec<TokenView>> {
        self.get("tokens", &[])
    }

    /// Revokes a token by its id (admin; `POST /v1/tokens/{id}/revoke`).
    pub fn revoke_token(&self, id: &str) -> Result<()> {
        let _: serde_json::Value = self.post(&format!("tokens/{}/revoke", segment(id)))?;
        Ok(())
    }

    /// What the fleet has cost since the journal began (admin; `GET /v1/cost`).
    pub fn cost(&self) -> Result<sched::cost::CostSummary> {
        self.get("cost", &[])
    }

    /// Snapshots the state and drops the journal's records before it, keeping a summary of
    /// every workload (admin; `POST /v1/journal/compact`).
    pub fn compact(&self) -> Result<crate::api::Compacted> {
        self.post("journal/compact")
    }

    /// A page of the history of finished work, with filters (`GET /v1/history`).
    pub fn history(&self, query: &HistoryQuery) -> Result<crate::api::HistoryList> {
        let mut q = Vec::new();
        push(&mut q, "after", query.after);
        push(&mut q, "limit", query.limit);
        push(&mut q, "kind", query.kind.as_ref());
        push(&mut q, "tenant", query.tenant.as_ref());
        push(&mut q, "state", query.state.as_ref());
        push(&mut q, "name", query.name.as_ref());
        push(&mut q, "since", query.since);
        push(&mut q, "until", query.until);
        self.get("history", &q)
    }

    /// GPU-hours and cost per tenant per day or week (`GET /v1/usage`).
    pub fn usage(&self, query: &UsageQuery) -> Result<crate::api::UsageReport> {
        let mut q = Vec::new();
        push(&mut q, "period", query.period.as_ref());
        push(&mut q, "since", query.since);
        push(&mut q, "until", query.until);
        push(&mut q, "tenant", query.tenant.as_ref());
        push(&mut q, "kind", query.kind.as_ref());
        self.get("usage", &q)
    }

    /// Reads the event stream (`GET /v1/events`), giving each event to `each` until it
    /// answers `false` or the stream ends (caught up, unless following). Returns the id of the
    /// last event read, to resume from after a lost connection. A silent connection (no event
    /// and no keep-alive for a minute) is an error.
    pub fn events(
        &self,
        query: &EventQuery,
        mut each: impl FnMut(crate::api::StreamEvent) -> bool,
    ) -> Result<Option<String>> {
        let http = reader_agent(self.timeout, Duration::from_secs(60), self.tls.clone());
        let mut req = http
            .get(&self.url("events"))
            .set("Authorization", &self.auth)
            .set("Accept", "text/event-stream");
        let mut q = Vec::new();
        push(&mut q, "after", query.after.as_ref());
        push(&mut q, "tenant", query.tenant.as_ref());
        push(&mut q, "follow", Some(query.follow));
        for (name, value) in &q {
            req = req.query(name, value);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(e) => return answer::<()>(Err(e)).map(|()| None),
        };
        let mut reader = std::io::BufReader::new(resp.into_reader());
        let mut last = None;
        loop {
            let message = crate::sse::next_message(&mut reader).map_err(|e| match e {
                crate::sse::SseError::Io(e) => ClientError::Unreachable(e.to_string()),
                e => ClientError::Decode(e.to_string()),
            })?;
            let Some(message) = message else {
                return Ok(last);
            };
            let event: crate::api::StreamEvent = serde_json::from_str(&message.data)
                .map_err(|e| ClientError::Decode(format!("event {:?}: {e}", message.id)))?;
            last = Some(event.id.clone());
            if !each(event) {
                return Ok(last);
            }
        }
    }

    /// An agent's heartbeat for one node: its tasks in, every task it must run out
    /// (`POST /v1/agent/heartbeat`).
    pub fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<HeartbeatReply> {
        self.post_json("agent/heartbeat", heartbeat)
    }

    /// An agent's heartbeats for several nodes: their tasks in, what changed out
    /// (`POST /v1/agent/heartbeats`).
    pub fn heartbeats(&self, heartbeats: &Heartbeats) -> Result<HeartbeatsReply> {
        self.post_json("agent/heartbeats", heartbeats)
    }

    /// Waits until some of the agent's nodes have new assignments, or `timeout_ms` passes
    /// (`POST /v1/agent/wait`). The client's timeout must exceed the wait.
    pub fn wait_for_changes(&self, request: &WaitForChanges) -> Result<Changes> {
        self.post_json("agent/wait", request)
    }

    /// An agent's post of an exec's output and end (`POST /v1/agent/exec`).
    pub fn exec_output(&self, output: &ExecOutput) -> Result<ExecAck> {
        self.post_json("agent/exec", output)
    }
}

/// How long a passed-on answer may go without a byte (an exec's command may be silent).
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(600);

/// An agent for answers that stream: connecting within `timeout`, then no limit on the whole
/// request, `read_timeout` between reads.
fn reader_agent(
    timeout: Duration,
    read_timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> ureq::Agent {
    let builder = ureq::AgentBuilder::new()
        .timeout_connect(timeout)
        .timeout_read(read_timeout);
    match tls {
        Some(config) => builder.tls_config(config),
        None => builder,
    }
    .build()
}

fn stream_agent(timeout: Duration, tls: Option<Arc<rustls::ClientConfig>>) -> ureq::Agent {
    reader_agent(timeout, STREAM_READ_TIMEOUT, tls)
}

fn agent(timeout: Duration, tls: Option<Arc<rustls::ClientConfig>>) -> ureq::Agent {
    let builder = ureq::AgentBuilder::new().timeout(timeout);
    match tls {
        Some(config) => builder.tls_config(config),
        None => builder,
    }
    .build()
}

/// Adds `name=value` to a query when the value is given.
fn push(query: &mut Vec<(&'static str, String)>, name: &'static str, value: Option<impl ToString>) {
    if let Some(v) = value {
        query.push((name, v.to_string()));
    }
}

/// `raw` as one path segment: every byte but letters, digits and `-._~` percent-encoded (a
/// topology path's '/' travels as `%2F`).
fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The answer's body as `T`, or the error with its kind.
fn answer<T: DeserializeOwned>(r: std::result::Result<ureq::Response, ureq::Error>) -> Result<T> {
    accepted(r)?
        .into_json::<T>()
        .map_err(|e| ClientError::Decode(e.to_string()))
}

/// The response of an accepted request, or the refusal or transport failure as an error.
fn accepted(r: std::result::Result<ureq::Response, ureq::Error>) -> Result<ureq::Response> {
    match r {
        Ok(resp) => Ok(resp),
        Err(ureq::Error::Status(status, resp)) => Err(ClientError::refused(
            status,
            &resp.into_string().unwrap_or_default(),
        )),
        Err(ureq::Error::Transport(t)) => Err(ClientError::Unreachable(t.to_string())),
    }
}

mod fleet;
mod gateway;
mod rollout;
mod upstream;
pub use upstream::{Forward, Forwarded};

#[cfg(test)]
mod tests;
