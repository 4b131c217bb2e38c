//! Interactive sandboxes: `POST /v1/sandboxes/{id}/exec` (a command, its output streamed as
//! lines of JSON), `PUT` and `GET /v1/sandboxes/{id}/files` (a file written or read, as the
//! sandbox's own user sees it), and `POST /v1/agent/exec` (the output, from the agent that runs
//! it). Files move through the same path as commands: the server asks the sandbox to `cat` its
//! input into the file or `dd` the file out, so the sandbox's user, namespaces and limits decide
//! what may be touched, and the agent never writes into a tenant's files as root.

use super::*;
use crate::execs::{Piece, TextStream};
use crate::sessions::SessionClocks;
use base64::Engine as _;
use wire::api::{ExecAck, ExecEnd, ExecEvent, ExecOrder, ExecOutput, ExecRequest, FileWritten};

/// Seconds an exec's reader waits past the command's own timeout before giving up on its node.
const NODE_GRACE_S: u64 = 15;
/// Seconds an agent's post waits for a reader that does not read before the exec is dropped
/// (less than the agent's request timeout, so that it hears the answer instead of trying again).
const READER_PATIENCE_S: u64 = 20;
/// Most a file read returns in one request, bytes.
pub(super) const MAX_FILE_READ: u64 = 1 << 20;
/// Seconds a file read or write may take.
const FILE_TIMEOUT_S: u32 = 60;

/// A file's bytes as they travel (the body itself, not JSON): a binary string in the OpenAPI
/// document.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub(super) struct FileBytes(#[allow(dead_code)] Vec<u8>);

/// Query naming one sandbox of a batch.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct SandboxQuery {
    /// The sandbox's index in its batch (default 0).
    index: Option<u32>,
}

/// Query of the file endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct FileQuery {
    /// The sandbox's index in its batch (default 0).
    index: Option<u32>,
    /// The file, as the sandbox sees it (relative paths start at its `/sandbox`).
    path: String,
    /// Writing: add to the end of the file instead of replacing it.
    #[serde(default)]
    append: bool,
    /// Reading: the first byte wanted (default 0).
    offset: Option<u64>,
    /// Reading: most bytes wanted (default and most 1 MiB).
    #[param(maximum = 1048576)]
    limit: Option<u64>,
}

/// An open exec as its reader holds it: the output channel, and the guard that forgets the
/// exec (and lets its session's idle clock run again) when the reader goes away.
pub(super) struct OpenExec {
    rx: tokio::sync::mpsc::Receiver<Piece>,
    deadline: tokio::time::Instant,
    _guard: ExecGuard,
}

struct ExecGuard {
    server: Arc<Server>,
    id: u64,
    batch: u64,
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        self.server.execs().close(self.id);
        self.server
            .sessions()
            .exec_ended(self.batch, Instant::now());
    }
}

impl OpenExec {
    /// The next piece of output; the end when the node does not answer in time.
    async fn next(&mut self) -> Option<Piece> {
        match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
            Ok(piece) => piece,
            Err(_) => Some(Piece::End(ExecEnd {
                exit_code: None,
                error: Some("the sandbox's node did not answer in time".into()),
            })),
        }
    }
}

impl Server {
    pub(super) fn execs(&self) -> std::sync::MutexGuard<'_, crate::execs::Execs> {
        lock(&self.execs)
    }

    pub(super) fn sessions(&self) -> std::sync::MutexGuard<'_, SessionClocks> {
        lock(&self.sessions)
    }

    /// Opens an exec in sandbox `index` of interactive batch `batch` for `role`: refused when
    /// the caller may not touch it (404, as for a batch that does not exist), it is not live,
    /// or a bound on execs is reached; the node's agent is woken to take the order.
    #[allow(clippy::too_many_arguments)]
    fn open_exec(
        self: &Arc<Self>,
        role: &Role,
        batch: u64,
        index: u32,
        command: Vec<String>,
        env: std::collections::BTreeMap<String, String>,
        stdin: &[u8],
        timeout_s: u32,
    ) -> Result<OpenExec, Refusal> {
        let (tenant, node) = {
            let p = self.plane();
            let tenant = match p.session_tenant(BatchId(batch)) {
                Some(t) if may_touch(role, t) => t.to_string(),
                _ => {
                    return Err(Refusal::new(
                        StatusCode::NOT_FOUND,
                        "id",
                        format!("no live interactive sandbox batch {batch}"),
                    ))
                }
            };
            let node = p.sandbox_host(BatchId(batch), index).ok_or_else(|| {
                Refusal::new(
                    StatusCode::NOT_FOUND,
                    "index",
                    format!("sandbox {index} of batch {batch} is not live"),
                )
            })?;
            (tenant, node)
        };
        let order = ExecOrder {
            id: 0,
            node: node.clone(),
            batch,
            index,
            command,
            env,
            stdin_b64: base64::engine::general_purpose::STANDARD.encode(stdin),
            timeout_s,
        };
        let (id, rx) = self
            .execs()
            .open(order, &tenant)
            .map_err(|e| Refusal::new(StatusCode::TOO_MANY_REQUESTS, "", e.to_string()))?;
        self.sessions().exec_started(batch, Instant::now());
        let guard = ExecGuard {
            server: self.clone(),
            id,
            batch,
        };
        // After the order is in: a long poll that registered before sees the wake, one that
        // registers after sees the order.
        self.change_log().wake(&node);
        Ok(OpenExec {
            rx,
            deadline: tokio::time::Instant::now()
                + Duration::from_secs(u64::from(timeout_s) + NODE_GRACE_S),
            _guard: guard,
        })
    }

    /// Ends the execs whose sandbox no longer lives where their order went (it ended, or its
    /// node went down and it moved or was lost): their readers hear why at once instead of at
    /// their timeout.
    pub fn end_orphaned_execs(&self) {
        let untaken = self
            .execs()
            .untaken(Instant::now(), crate::execs::TAKE_WITHIN);
        for id in untaken {
            self.execs()
                .end(id, "the sandbox's node did not take the command");
        }
        let in_flight = self.execs().in_flight();
        if in_flight.is_empty() {
            return;
        }
        let orphans: Vec<u64> = {
            let p = self.plane();
            in_flight
                .into_iter()
                .filter(|(_, batch, index, node)| {
                    p.sandbox_host(BatchId(*batch), *index).as_deref() != Some(node.as_str())
                })
                .map(|(id, ..)| id)
                .collect()
        };
        let mut execs = self.execs();
        for id in orphans {
            execs.end(id, "the sandbox ended or left its node");
        }
    }

    /// Ends the interactive sandboxes whose time is up (timeout, or idle). Durable when this
    /// returns.
    pub async fn expire_sessions(&self) {
        let expired = {
            let p = self.plane();
            self.sessions()
                .expired(Instant::now(), |id| p.session_tenant(BatchId(id)).is_some())
        };
        if expired.is_empty() {
            return;
        }
        let cancel = |_: &ControlPlane, at: u64| {
            Ok(expired
                .iter()
                .map(|&id| {
                    tracing::info!(batch = id, "interactive sandbox timed out");
                    Event::Cancel { id, at }
                })
                .collect())
        };
        let _ = self.commit(cancel, OnRefusal::Skip).await;
    }

    /// Starts the clocks of a new interactive batch.
    pub(super) fn start_session(&self, id: u64) {
        let view = self.plane().batch_view(BatchId(id));
        if let Some(v) = view {
            if let (Some(expires_at), Some(idle)) = (v.expires_at, v.idle_timeout_s) {
                self.sessions().start(id, expires_at, idle, Instant::now());
            }
        }
    }
}

/// Run a command in a live interactive sandbox. The answer streams as lines of JSON
/// (`application/x-ndjson`, one `ExecEvent` per line): output as it comes, then one line with
/// `exit_code` (or `error`). The command runs as the sandbox's user, in its namespaces and
/// limits, with the sandbox's environment and `env` added.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec",
    params(("id" = u64, Path, description = "batch id"), SandboxQuery),
    request_body = ExecRequest,
    responses((status = 200, description = "lines of ExecEvent", body = ExecEvent, content_type = "application/x-ndjson"),
        (status = 404, body = ApiError), (status = 429, body = ApiError)))]
pub(super) async fn exec(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<SandboxQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let (role, id, q) = caller_and_query(&server, &headers, &raw, query)?;
            let req: ExecRequest = parse_json(&read_body(body).await?)?;
            if req.command.is_empty() {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "command",
                    "names no program",
                ));
            }
            crate::state::check_command(&req.command, &req.env).map_err(bad_request)?;
            let stdin = req.stdin.unwrap_or_default();
            if stdin.len() > wire::api::MAX_STDIN_BYTES {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "stdin",
                    format!(
                        "{} bytes; at most {}",
                        stdin.len(),
                        wire::api::MAX_STDIN_BYTES
                    ),
                ));
            }
            let timeout_s = timeout(req.timeout_s)?;
            let open = server.open_exec(
                &role,
                id,
                q.index.unwrap_or(0),
                req.command,
                req.env,
                stdin.as_bytes(),
                timeout_s,
            )?;
            Ok(stream_events(open))
        }
        .await,
    )
}

/// The caller's role, the batch id of the path and the query, each refused by its field.
fn caller_and_query<Q>(
    server: &Server,
    headers: &HeaderMap,
    raw: &str,
    query: Result<Query<Q>, axum::extract::rejection::QueryRejection>,
) -> Result<(Role, u64, Q), Refusal> {
    let (role, id) = server.caller_and_id(headers, raw)?;
    let Query(q) =
        query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "query", e.body_text()))?;
    Ok((role, id, q))
}

fn timeout(asked: Option<u32>) -> Result<u32, Refusal> {
    let t = asked.unwrap_or(60);
    if t == 0 || t > wire::api::MAX_EXEC_TIMEOUT_S {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "timeout_s",
            format!("must be 1..={}", wire::api::MAX_EXEC_TIMEOUT_S),
        ));
    }
    Ok(t)
}

/// The exec's output as lines of JSON, as it comes.
fn stream_events(open: OpenExec) -> Response {
    struct State {
        open: OpenExec,
        out: TextStream,
        err: TextStream,
        done: bool,
    }
    let state = State {
        open,
        out: TextStream::default(),
        err: TextStream::default(),
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let event = match s.open.next().await {
            Some(Piece::Stdout(b)) => ExecEvent {
                stdout: Some(s.out.push(&b)),
                ..ExecEvent::default()
            },
            Some(Piece::Stderr(b)) => ExecEvent {
                stderr: Some(s.err.push(&b)),
                ..ExecEvent::default()
            },
            Some(Piece::End(end)) => {
                s.done = true;
                let (out, err) = (s.out.finish(), s.err.finish());
                ExecEvent {
                    stdout: (!out.is_empty()).then_some(out),
                    stderr: (!err.is_empty()).then_some(err),
                    exit_code: end.exit_code,
                    error: end.error.or_else(|| {
                        end.exit_code
                            .is_none()
                            .then(|| "the command's end is unknown".into())
                    }),
                }
            }
            None => {
                s.done = true;
                ExecEvent {
                    error: Some("the exec was dropped".into()),
                    ..ExecEvent::default()
                }
            }
        };
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), s))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Everything an exec wrote, with its end; standard output is cut off past `max_out` bytes
/// (the exec is dropped, which stops its command).
async fn collect(mut open: OpenExec, max_out: u64) -> (Vec<u8>, Vec<u8>, ExecEnd) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match open.next().await {
            Some(Piece::Stdout(b)) => {
                out.extend_from_slice(&b);
                if out.len() as u64 > max_out {
                    out.truncate(max_out as usize);
                    let end = ExecEnd {
                        exit_code: None,
                        error: Some(format!("more than {max_out} bytes")),
                    };
                    return (out, err, end);
                }
            }
            Some(Piece::Stderr(b)) => {
                // What a failing `cat` or `dd` says is short; more is not kept.
                if err.len() < 4096 {
                    err.extend_from_slice(&b);
                }
            }
            Some(Piece::End(end)) => return (out, err, end),
            None => {
                let end = ExecEnd {
                    exit_code: None,
                    error: Some("the exec was dropped".into()),
                };
                return (out, err, end);
            }
        }
    }
}

/// A file operation's failure, in the words of the sandbox's own tools.
fn file_refusal(path: &str, err: &[u8], end: &ExecEnd) -> Refusal {
    let said = String::from_utf8_lossy(err).trim().to_string();
    let reason = match (&end.error, said.is_empty()) {
        (Some(e), _) => e.clone(),
        (None, false) => said,
        (None, true) => format!("failed (exit code {})", end.exit_code.unwrap_or(-1)),
    };
    Refusal::new(StatusCode::BAD_REQUEST, "path", format!("{path}: {reason}"))
}

fn check_path(path: &str) -> Result<(), Refusal> {
    if path.is_empty() || path.len() > 4096 || path.contains('\0') {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "path",
            "must be 1 to 4096 bytes, without NUL",
        ));
    }
    Ok(())
}

/// Write a file in a live interactive sandbox (the body, at most 1 MiB, is its content; with
/// `append`, added to its end). It is written by the sandbox's own user: what that user may
/// not write is refused with the sandbox's reason.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files",
    params(("id" = u64, Path, description = "batch id"), FileQuery),
    request_body(content = FileBytes, content_type = "application/octet-stream"),
    responses((status = 200, body = FileWritten), (status = 400, body = ApiError),
        (status = 404, body = ApiError), (status = 429, body = ApiError)))]
pub(super) async fn write_file(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<FileQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let (role, id, q) = caller_and_query(&server, &headers, &raw, query)?;
            check_path(&q.path)?;
            let data = read_body(body).await?;
            let script = if q.append {
                "exec cat >> \"$1\""
            } else {
                "exec cat > \"$1\""
            };
            let command = ["/bin/sh", "-c", script, "sh", q.path.as_str()]
                .map(String::from)
                .to_vec();
            let open = server.open_exec(
                &role,
                id,
                q.index.unwrap_or(0),
                command,
                Default::default(),
                &data,
                FILE_TIMEOUT_S,
            )?;
            let (_, err, end) = collect(open, 0).await;
            if end.exit_code != Some(0) {
                return Err(file_refusal(&q.path, &err, &end));
            }
            Ok(Json(FileWritten {
                path: q.path,
                bytes: data.len() as u64,
            })
            .into_response())
        }
        .await,
    )
}

/// Read a file of a live interactive sandbox: its bytes from `offset`, at most `limit` (1 MiB);
/// a shorter answer means the file ended. Read by the sandbox's own user.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files",
    params(("id" = u64, Path, description = "batch id"), FileQuery),
    responses((status = 200, description = "the bytes", body = FileBytes, content_type = "application/octet-stream"),
        (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 429, body = ApiError)))]
pub(super) async fn read_file(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<FileQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(
        async {
            let (role, id, q) = caller_and_query(&server, &headers, &raw, query)?;
            check_path(&q.path)?;
            let limit = q.limit.unwrap_or(MAX_FILE_READ);
            if limit == 0 || limit > MAX_FILE_READ {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "limit",
                    format!("must be 1..={MAX_FILE_READ}"),
                ));
            }
            let offset = q.offset.unwrap_or(0);
            // `dd` reads a regular file, a directory or a missing one fails with its reason.
            let command = [
                "/bin/sh".to_string(),
                "-c".to_string(),
                "[ -d \"$1\" ] && { echo \"$1: is a directory\" >&2; exit 1; }; exec dd if=\"$1\" \
                 bs=65536 iflag=skip_bytes,count_bytes skip=\"$2\" count=\"$3\" status=none"
                    .to_string(),
                "sh".to_string(),
                q.path.clone(),
                offset.to_string(),
                limit.to_string(),
            ]
            .to_vec();
            let open = server.open_exec(
                &role,
                id,
                q.index.unwrap_or(0),
                command,
                Default::default(),
                &[],
                FILE_TIMEOUT_S,
            )?;
            let (out, err, end) = collect(open, limit).await;
            if end.exit_code != Some(0) {
                return Err(file_refusal(&q.path, &err, &end));
            }
            Ok((
                [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
                out,
            )
                .into_response())
        }
        .await,
    )
}

/// An agent's post of an exec's output (in order) and, last, its end. The answer says whether
/// anyone still reads it; `wanted: false` means stop the command.
#[utoipa::path(post, path = "/v1/agent/exec", request_body = ExecOutput,
    responses((status = 200, body = ExecAck), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn exec_output(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let caller = server.caller(&headers)?;
            let out: ExecOutput = parse_json(&read_body(body).await?)?;
            server.reporter(&caller, [out.node.as_str()])?;
            if out.chunks.len() > 64 {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "chunks",
                    "at most 64 per post",
                ));
            }
            let mut pieces = Vec::with_capacity(out.chunks.len() + 1);
            for (i, c) in out.chunks.iter().enumerate() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&c.data_b64)
                    .map_err(|e| {
                        Refusal::new(
                            StatusCode::BAD_REQUEST,
                            &format!("chunks[{i}].data_b64"),
                            e.to_string(),
                        )
                    })?;
                if bytes.len() > wire::api::MAX_CHUNK_BYTES {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        &format!("chunks[{i}].data_b64"),
                        format!("at most {} bytes", wire::api::MAX_CHUNK_BYTES),
                    ));
                }
                pieces.push(match c.stream.as_str() {
                    "stdout" => Piece::Stdout(bytes),
                    "stderr" => Piece::Stderr(bytes),
                    _ => {
                        return Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            &format!("chunks[{i}].stream"),
                            "must be stdout or stderr",
                        ))
                    }
                });
            }
            if let Some(end) = &out.end {
                pieces.push(Piece::End(end.clone()));
            }
            // Only the node the order went to may speak for the exec, and only for its sandbox.
            let sender = server
                .execs()
                .sender(out.id, &out.node, out.batch, out.index);
            let Some(tx) = sender else {
                return Ok(Json(ExecAck { wanted: false }).into_response());
            };
            // One deadline for the whole post: the agent hears the answer before its own
            // timeout, and never sends the same output twice.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(READER_PATIENCE_S);
            for piece in pieces {
                if !matches!(
                    tokio::time::timeout_at(deadline, tx.send(piece)).await,
                    Ok(Ok(()))
                ) {
                    // The reader went away or stopped reading: the exec is over.
                    server.execs().close(out.id);
                    return Ok(Json(ExecAck { wanted: false }).into_response());
                }
            }
            Ok(Json(ExecAck {
                wanted: out.end.is_none(),
            })
            .into_response())
        }
        .await,
    )
}
