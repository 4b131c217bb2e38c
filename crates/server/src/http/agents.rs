//! `/v1/agent/heartbeats` and `/v1/agent/heartbeat`: agents report their nodes' tasks and hear
//! what the nodes must run. Many nodes go in one request, and a node whose assignments did not
//! change since the digest its agent holds is left out of the answer; the one-node form is the
//! same path, kept for agents of older builds. A node's first heartbeat brings it up.

use super::*;
use crate::api::{Heartbeats, HeartbeatsReply, NodeAnswer, NodeWork, MAX_ALIVE, MAX_BEATS};

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
            if req.beats.len() > MAX_BEATS || (req.beats.is_empty() && req.alive.is_none()) {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "beats",
                    format!("must hold 1 to {MAX_BEATS} heartbeats (or none, with `alive`)"),
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
            let fans_in = caller.0.may_report_for_every_node();
            if let Some(alive) = &req.alive {
                if server.journal().is_none() {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "alive",
                        "a frontend takes heartbeats of agents, not lists of live nodes",
                    ));
                }
                if !fans_in {
                    return Err(Refusal::new(
                        StatusCode::FORBIDDEN,
                        "alive",
                        "only a credential that reports for every node sends `alive`",
                    ));
                }
                note_alive(&server, alive)?;
            }
            let (nodes, seq) = if req.beats.is_empty() {
                (Vec::new(), server.plane().seq())
            } else {
                beat(&server, &caller, req.beats).await?
            };
            let logs_on = if fans_in {
                server.nodes_with_logs_wanted()
            } else {
                Vec::new()
            };
            Ok(Json(HeartbeatsReply {
                nodes,
                seq,
                logs_on,
            })
            .into_response())
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
            let answer = beat(&server, &caller, vec![hb]).await?.0.pop();
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

/// Marks the nodes of a frontend's `alive` expression as heard from now: nodes that are up, by
/// name (a name that is no node, or a node that is down, is passed over: a down node comes up
/// only through a heartbeat of its own).
fn note_alive(server: &Server, alive: &str) -> Result<(), Refusal> {
    let names = model::hostlist::expand_at_most(alive, MAX_ALIVE)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "alive", e.reason))?;
    let up: Vec<String> = {
        let p = server.plane();
        names
            .into_iter()
            .filter(|n| p.node_is_up(n) == Some(true))
            .collect()
    };
    server.metrics.heartbeats.inc_by(up.len() as u64);
    let now = Instant::now();
    let mut seen = server.seen();
    for node in up {
        seen.insert(node, now);
    }
    Ok(())
}

/// The one path of every heartbeat: reports applied in one commit, liveness noted, log chunks
/// taken, and the answers of the nodes with news, sent once the state they tell of is durable.
/// Returns the answers and the record they were read at.
pub(super) async fn beat(
    server: &Arc<Server>,
    caller: &(Role, String),
    beats: Vec<Heartbeat>,
) -> Result<(Vec<NodeAnswer>, u64), Refusal> {
    if let Backing::Writer(up) = &server.backing {
        return frontend::beat_through_writer(server, up, caller, beats).await;
    }
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
                answers.push(refused_answer(&hb.node, problem));
                continue;
            }
            answers.push(answer_for(&p, hb));
        }
        p.seq()
    };
    server.durable_through(read_at).await;
    take_logs(server, beats, &mut answers);
    answers.retain(|a| a.work.is_some() || a.refused.is_some() || !a.logs_wanted.is_empty());
    Ok((answers, read_at))
}

/// The answer of a node whose heartbeat was refused.
pub(super) fn refused_answer(node: &str, problem: FieldProblem) -> NodeAnswer {
    NodeAnswer {
        node: node.to_string(),
        digest: 0,
        work: None,
        logs_wanted: Vec::new(),
        refused: Some(problem),
    }
}

/// What node `hb.node` must run, as a digest, and in full when the agent's digest is stale.
pub(super) fn answer_for(p: &ControlPlane, hb: &Heartbeat) -> NodeAnswer {
    let digest = p.assignment_digest(&hb.node).unwrap_or(0);
    let work = (hb.known != Some(digest)).then(|| {
        let (assignments, sandboxes) = p.assignments(&hb.node);
        NodeWork {
            assignments,
            sandboxes,
        }
    });
    NodeAnswer {
        node: hb.node.clone(),
        digest,
        work,
        logs_wanted: Vec::new(),
        refused: None,
    }
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
