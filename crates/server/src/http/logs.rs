//! Task logs relayed from the nodes: the server asks agents (in heartbeat answers) for what
//! follows what it has, and keeps each task's tail in memory, never in the journal.

use super::*;

/// How long agents keep sending a job's log after someone last asked for it.
pub(super) const LOG_INTEREST: Duration = Duration::from_secs(30);

/// The most of a task's log the server keeps (its tail).
pub(super) const LOG_TAIL_BYTES: usize = 1 << 20;

/// Task logs being read. They stay on the nodes; the server asks agents for what follows what
/// it has (in heartbeat answers) and keeps each task's tail in memory, not in the journal.
#[derive(Default)]
pub(super) struct Logs {
    /// Jobs whose logs someone read lately, and until when agents are asked for more.
    wanted: HashMap<u64, Instant>,
    /// The tail received of each task.
    tails: HashMap<TaskKey, Tail>,
}

/// One task: a rank of one run of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct TaskKey {
    job: u64,
    run: u32,
    rank: u32,
}

/// The received end of one task's log.
#[derive(Default)]
pub(super) struct Tail {
    /// Offset of `text`'s first byte in the log.
    start: u64,
    /// Offset of the next byte wanted.
    next: u64,
    text: String,
}

impl Logs {
    pub(super) fn ingest(&mut self, chunk: crate::api::LogChunk) {
        let tail = self
            .tails
            .entry(TaskKey {
                job: chunk.job,
                run: chunk.run,
                rank: chunk.rank,
            })
            .or_default();
        if chunk.offset != tail.next {
            // Stale or out of order: the next answer asks again from `next`.
            return;
        }
        tail.text.push_str(&chunk.data);
        tail.next += chunk.len;
        if tail.text.len() > LOG_TAIL_BYTES {
            let mut cut = tail.text.len() - LOG_TAIL_BYTES;
            while !tail.text.is_char_boundary(cut) {
                cut += 1;
            }
            tail.text.drain(..cut);
            tail.start = tail.next - tail.text.len() as u64;
        }
    }

    /// Someone reads job `id`'s logs: agents are asked for them for a while. Whether nobody was
    /// reading them already (then the job's agents must be woken to hear of it).
    pub(super) fn want(&mut self, id: u64) -> bool {
        self.wanted
            .insert(id, Instant::now() + LOG_INTEREST)
            .is_none()
    }

    /// What node `node` should send: for each task of a job someone reads that runs there,
    /// the offset after what the server has.
    pub(super) fn wanted_on(
        &mut self,
        node: &str,
        plane: &ControlPlane,
    ) -> Vec<crate::api::LogWanted> {
        let now = Instant::now();
        self.wanted.retain(|_, until| *until > now);
        let mut out = Vec::new();
        for &job in self.wanted.keys() {
            for (run, rank) in plane.log_tasks_on(JobId(job), node) {
                let key = TaskKey { job, run, rank };
                out.push(crate::api::LogWanted {
                    job,
                    run,
                    rank,
                    from: self.tails.get(&key).map_or(0, |t| t.next),
                });
            }
        }
        out
    }
}

/// Query of `GET /v1/jobs/{id}/logs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    /// The task's rank (default 0).
    rank: Option<u32>,
    /// The first byte wanted (the previous answer's `next`; default 0).
    from: Option<u64>,
}

/// A task's log (its latest run), as far as the server has it. Logs stay on the nodes: asking
/// makes the agents send what follows, within a heartbeat; ask again with `from = next`.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", params(("id" = u64, Path, description = "job id"), LogQuery),
    responses((status = 200, body = crate::api::LogView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn job_logs(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond((|| {
        let (role, id) = server.caller_and_id(&headers, &raw)?;
        let Query(q) =
            query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "query", e.body_text()))?;
        let (run, nodes) = {
            let p = server.plane();
            if !p.job_tenant(JobId(id)).is_some_and(|t| may_touch(&role, t)) {
                return Ok(not_found(id));
            }
            p.log_nodes(JobId(id)).unwrap_or_default()
        };
        if nodes.is_empty() {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                "id",
                format!("job {id} has not run yet: it has no logs"),
            ));
        }
        let rank = q.rank.unwrap_or(0);
        if rank as usize >= nodes.len() {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "rank",
                format!("job {id} has ranks 0..{}", nodes.len()),
            ));
        }
        let newly = server.logs().want(id);
        if newly {
            // Wake the job's agents: they heartbeat, hear what is wanted, and send it.
            server.change_log().publish(nodes);
        }
        let logs = server.logs();
        let view = match logs.tails.get(&TaskKey { job: id, run, rank }) {
            Some(t) => {
                let from = q.from.unwrap_or(0).clamp(t.start, t.next);
                let skip = (from - t.start) as usize;
                crate::api::LogView {
                    job: id,
                    run,
                    rank,
                    from,
                    next: t.next,
                    data: t.text.get(skip..).unwrap_or(&t.text).to_string(),
                }
            }
            None => crate::api::LogView {
                job: id,
                run,
                rank,
                from: 0,
                next: 0,
                data: String::new(),
            },
        };
        Ok(Json(view).into_response())
    })())
}
