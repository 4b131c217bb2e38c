//! `GET /v1/jobs/{id}/logs` and `GET /v1/sandboxes/{id}/logs`, and what each node is asked to
//! send of the logs someone reads (the tails themselves are kept by [`crate::log_tails`]).

use super::*;

/// What node `node` should send: for each task of a job someone reads that runs there, the
/// offset after what the server has.
pub(super) fn wanted_on(
    logs: &mut LogTails,
    node: &str,
    plane: &ControlPlane,
) -> Vec<crate::api::LogWanted> {
    logs.expire(Instant::now());
    let mut out = Vec::new();
    let jobs: Vec<u64> = logs.wanted_jobs().collect();
    for job in jobs {
        for (run, rank) in plane.log_tasks_on(JobId(job), node) {
            out.push(crate::api::LogWanted {
                job,
                run,
                rank,
                from: logs.next_of(&TaskKey { job, run, rank }),
            });
        }
    }
    let sandboxes: Vec<(u64, u32)> = logs.wanted_sandboxes().collect();
    for (batch, index) in sandboxes {
        if plane.sandbox_runs_on(BatchId(batch), index, node) {
            let task = TaskKey {
                job: batch,
                run: 0,
                rank: index,
            };
            out.push(crate::api::LogWanted {
                job: batch,
                run: 0,
                rank: index,
                from: logs.next_of(&task),
            });
        }
    }
    out
}

/// Query of `GET /v1/sandboxes/{id}/logs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct SandboxLogQuery {
    /// The sandbox's index in its batch (default 0).
    index: Option<u32>,
    /// The first byte wanted (the previous answer's `next`; default 0).
    from: Option<u64>,
}

/// A sandbox's log, as far as the server has it: asking makes its host's agent send what
/// follows, within a heartbeat, while the sandbox lives (and the server keeps what it got for
/// a while after); ask again with `from = next`. The answer's `job` is the batch and `rank`
/// the sandbox's index.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/logs",
    params(("id" = u64, Path, description = "batch id"), SandboxLogQuery),
    responses((status = 200, body = crate::api::LogView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn sandbox_logs(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<SandboxLogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond((|| {
        let (role, id) = server.caller_and_id(&headers, &raw)?;
        let Query(q) =
            query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "query", e.body_text()))?;
        let index = q.index.unwrap_or(0);
        let task = TaskKey {
            job: id,
            run: 0,
            rank: index,
        };
        let host = {
            let p = server.plane();
            let view = p.batch_view(BatchId(id));
            match view {
                Some(v) if may_touch(&role, &v.tenant) => {
                    if index >= v.count {
                        return Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "index",
                            format!("batch {id} has sandboxes 0..{}", v.count),
                        ));
                    }
                }
                _ => return Ok(no_such("batch", id)),
            }
            p.sandbox_host(BatchId(id), index)
        };
        let now = Instant::now();
        if let Some(host) = host {
            let newly = server.logs().want_sandbox(id, index, now);
            if newly {
                // Wake its host's agent: it heartbeats, hears what is wanted, and sends it.
                server.change_log().publish(0, vec![host]);
            }
        } else if server.logs().next_of(&task) == 0 {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                "index",
                format!(
                    "sandbox {index} of batch {id} is not running, and its log was not read \
                     while it ran"
                ),
            ));
        }
        let tail = server.logs().view(&task, q.from.unwrap_or(0));
        Ok(Json(crate::api::LogView {
            job: id,
            run: 0,
            rank: index,
            from: tail.from,
            next: tail.next,
            data: tail.data,
        })
        .into_response())
    })())
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
        let newly = server.logs().want(id, Instant::now());
        if newly {
            // Wake the job's agents: they heartbeat, hear what is wanted, and send it.
            server.change_log().publish(0, nodes);
        }
        let tail = server
            .logs()
            .view(&TaskKey { job: id, run, rank }, q.from.unwrap_or(0));
        let view = crate::api::LogView {
            job: id,
            run,
            rank,
            from: tail.from,
            next: tail.next,
            data: tail.data,
        };
        Ok(Json(view).into_response())
    })())
}

impl Server {
    /// The nodes whose task or sandbox logs someone reads now (what a frontend must forward
    /// in full); as many as the jobs read have ranks, never the fleet.
    pub(super) fn nodes_with_logs_wanted(&self) -> Vec<String> {
        let (jobs, sandboxes): (Vec<u64>, Vec<(u64, u32)>) = {
            let mut logs = self.logs();
            logs.expire(Instant::now());
            (
                logs.wanted_jobs().collect(),
                logs.wanted_sandboxes().collect(),
            )
        };
        if jobs.is_empty() && sandboxes.is_empty() {
            return Vec::new();
        }
        let p = self.plane();
        let mut nodes: Vec<String> = jobs
            .into_iter()
            .filter_map(|job| p.log_nodes(JobId(job)))
            .flat_map(|(_, nodes)| nodes)
            .chain(
                sandboxes
                    .into_iter()
                    .filter_map(|(batch, index)| p.sandbox_host(BatchId(batch), index)),
            )
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }
}
