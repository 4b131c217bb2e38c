//! `/v1/agent/heartbeats` and `/v1/agent/heartbeat`: agents report their nodes' tasks and hear
//! what the nodes must run. Many nodes go in one request, and a node whose assignments did not
//! change since the digest its agent holds is left out of the answer; the one-node form is the
//! same path, kept for agents of older builds. A node's first heartbeat brings it up.

use super::*;
use crate::api::{Heartbeats, HeartbeatsReply, NodeAnswer, NodeWork, MAX_BEATS};

/// Heartbeats of many nodes: their tasks in, what changed out (nodes with nothing new are
/// left out). The credential must be bound to every node named; a node the state refuses
/// (unknown, a wrong inventory, bad templates) is answered with its reason, and the rest are
/// taken.
#[utoipa::path(post, path = "/v1/agent/heartbeats", request_body = Heartbeats,
    responses((status = 200, body = HeartbeatsReply), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn heartbeats(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            // The token is checked before the body is read, its binding to the nodes after.
            let caller = server.caller(&headers)?;
            let req: Heartbeats = parse_json(&read_body(body).await?)?;
            if req.beats.is_empty() || req.beats.len() > MAX_BEATS {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "beats",
                    format!("must hold 1 to {MAX_BEATS} heartbeats"),
                ));
            }
            let mut named = std::collections::HashSet::with_capacity(req.beats.len());
            if let Some(twice) = req.beats.iter().find(|b| !named.insert(b.node.as_str())) {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "beats",
                    format!("node '{}' is named twice", twice.node),
                ));
            }
            let nodes = beat(&server, &caller, req.beats).await?;
            Ok(Json(HeartbeatsReply { nodes }).into_response())
        }
        .await,
    )
}

/// One node's heartbeat (agents of older builds): its tasks in, every task it must run out.
#[utoipa::path(post, path = "/v1/agent/heartbeat", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatReply), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn heartbeat(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let caller = server.caller(&headers)?;
            let mut hb: Heartbeat = parse_json(&read_body(body).await?)?;
            // Every assignment, always: this form has no digest.
            hb.known = None;
            let answer = beat(&server, &caller, vec![hb]).await?.pop();
            let Some(answer) = answer else {
                return Err(Refusal::new(StatusCode::BAD_REQUEST, "node", "no answer"));
            };
            if let Some(problem) = answer.refused {
                return Err(bad_request(problem));
            }
            let work = answer.work.unwrap_or_default();
            Ok(Json(HeartbeatReply {
                assignments: work.assignments,
                sandboxes: work.sandboxes,
                logs_wanted: answer.logs_wanted,
            })
            .into_response())
        }
        .await,
    )
}

/// The one path of every heartbeat: reports applied in one commit, liveness noted, log chunks
/// taken, and the answers of the nodes with news, sent once the state they tell of is durable.
async fn beat(
    server: &Arc<Server>,
    caller: &(Role, String),
    beats: Vec<Heartbeat>,
) -> Result<Vec<NodeAnswer>, Refusal> {
    server.reporter(caller, beats.iter().map(|b| b.node.as_str()))?;
    server.metrics.heartbeats.inc_by(beats.len() as u64);
    // Why each node's heartbeat was refused, by its place in `beats`.
    let mut refused: Vec<Option<FieldProblem>> = vec![None; beats.len()];
    let reported = server
        .commit(
            |p, at| {
                let mut events = Vec::new();
                for (hb, refusal) in beats.iter().zip(refused.iter_mut()) {
                    match p.heartbeat_events(hb, at) {
                        Ok(e) => events.extend(e),
                        Err(problem) => *refusal = Some(problem),
                    }
                }
                Ok(events)
            },
            // A report that raced with the state (a task already requeued) is left out.
            OnRefusal::Skip,
        )
        .await;
    reported?;
    {
        // Templates and liveness only for nodes the state took: a name that is no node adds
        // nothing to memory.
        let now = Instant::now();
        let mut seen = server.seen();
        let mut templates = server.templates();
        for (hb, refusal) in beats.iter().zip(refused.iter_mut()) {
            if refusal.is_some() {
                continue;
            }
            if let Err(e) = templates.offer(&hb.node, &hb.templates) {
                *refusal = Some(FieldProblem {
                    field: "templates".into(),
                    reason: e.to_string(),
                });
                continue;
            }
            match seen.get_mut(&hb.node) {
                Some(t) => *t = now,
                None => {
                    seen.insert(hb.node.clone(), now);
                }
            }
        }
    }
    // What each node must run, as a digest, in full where the agent's digest is stale. The
    // answer is the state at some record; it is sent only once that record is durable, so an
    // agent never starts work a restart would forget.
    let mut answers: Vec<NodeAnswer> = Vec::new();
    let read_at = {
        let p = server.plane();
        for (hb, refusal) in beats.iter().zip(refused.iter_mut()) {
            if let Some(problem) = refusal.take() {
                answers.push(NodeAnswer {
                    node: hb.node.clone(),
                    digest: 0,
                    work: None,
                    logs_wanted: Vec::new(),
                    refused: Some(problem),
                });
                continue;
            }
            let digest = p.assignment_digest(&hb.node).unwrap_or(0);
            let work = (hb.known != Some(digest)).then(|| {
                let (assignments, sandboxes) = p.assignments(&hb.node);
                NodeWork {
                    assignments,
                    sandboxes,
                }
            });
            answers.push(NodeAnswer {
                node: hb.node.clone(),
                digest,
                work,
                logs_wanted: Vec::new(),
                refused: None,
            });
        }
        p.seq()
    };
    server.durable_through(read_at).await;
    take_logs(server, beats, &mut answers);
    answers.retain(|a| a.work.is_some() || a.refused.is_some() || !a.logs_wanted.is_empty());
    Ok(answers)
}

/// Takes the log chunks the beats carry (those of tasks their nodes run) and fills in the logs
/// wanted of each node answered (`answers` follow `beats`).
fn take_logs(server: &Server, beats: Vec<Heartbeat>, answers: &mut [NodeAnswer]) {
    if server.logs().is_idle() && beats.iter().all(|b| b.logs.is_empty()) {
        return;
    }
    for (hb, answer) in beats.into_iter().zip(answers.iter_mut()) {
        if answer.refused.is_some() {
            continue;
        }
        // Which of the reported chunks are for tasks this node runs (asked of the state
        // first: the locks are taken one after the other, never inside each other).
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
        answer.logs_wanted = wanted_on(&mut logs, &hb.node, &server.plane());
    }
}
