//! `/v1/agent/heartbeat`: an agent reports its nodes' tasks and hears what they must run.

use super::*;

/// An agent's heartbeat: it reports its tasks and gets back every task its node must run.
/// The first heartbeat of a node brings it up.
#[utoipa::path(post, path = "/v1/agent/heartbeat", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatReply), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn heartbeat(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // The token is checked before the body is read, its binding to the node after.
    let caller = match server.caller(&headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let hb: Heartbeat = match parse_json(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = server.reporter(&caller, [hb.node.as_str()]) {
        return r.into_response();
    }
    if let Err(e) = server.templates().offer(&hb.node, &hb.templates) {
        return Refusal::new(StatusCode::BAD_REQUEST, "templates", e.to_string()).into_response();
    }
    server.seen().insert(hb.node.clone(), Instant::now());
    server.metrics.heartbeats.inc();
    let reported = server
        .commit(
            |p, at| p.heartbeat_events(&hb, at).map_err(bad_request),
            // A report that raced with the state (a task already requeued) is left out.
            OnRefusal::Skip,
        )
        .await;
    if let Err(r) = reported {
        return r.into_response();
    }
    // The answer is the state at some record; it is sent only once that record is durable,
    // so an agent never starts work a restart would forget.
    let ((assignments, sandboxes), read_at) = {
        let p = server.plane();
        (p.assignments(&hb.node), p.seq())
    };
    server.durable_through(read_at).await;
    let logs_wanted = {
        // Which of the reported chunks are for tasks this node runs (asked of the state first:
        // the locks are taken one after the other, never inside each other).
        let assigned: Vec<bool> = {
            let p = server.plane();
            hb.logs
                .iter()
                .map(|c| {
                    p.log_tasks_on(JobId(c.job), &hb.node)
                        .contains(&(c.run, c.rank))
                        || (c.run == 0 && p.sandbox_runs_on(BatchId(c.job), c.rank, &hb.node))
                })
                .collect()
        };
        let now = Instant::now();
        let mut logs = server.logs();
        for (chunk, assigned) in hb.logs.into_iter().zip(assigned) {
            let chunk = Chunk {
                task: TaskKey {
                    job: chunk.job,
                    run: chunk.run,
                    rank: chunk.rank,
                },
                offset: chunk.offset,
                len: chunk.len,
                data: chunk.data,
            };
            if let Err(e) = logs.ingest(chunk, assigned, now) {
                tracing::warn!(node = %hb.node, "log chunk refused: {e}");
            }
        }
        wanted_on(&mut logs, &hb.node, &server.plane())
    };
    Json(HeartbeatReply {
        assignments,
        sandboxes,
        logs_wanted,
    })
    .into_response()
}
