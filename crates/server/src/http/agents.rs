//! `/v1/agent/heartbeat`: an agent reports its nodes' tasks and hears what they must run.

use super::*;

/// An agent's heartbeat: it reports its tasks and gets back every task its node must run.
/// The first heartbeat of a node brings it up.
#[utoipa::path(post, path = "/v1/agent/heartbeat", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatReply), (status = 400, body = ApiError)))]
pub(super) async fn heartbeat(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match server.principal(&headers) {
        Ok(Role::Agent | Role::Admin) => {}
        Ok(Role::Tenant { .. }) => {
            return Refusal::forbidden("only agent tokens report for nodes").into_response()
        }
        Err(r) => return r.into_response(),
    }
    let hb: Heartbeat = match parse_json(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    server.seen().insert(hb.node.clone(), Instant::now());
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
    let (assignments, sandboxes) = server.plane().assignments(&hb.node);
    let logs_wanted = {
        let mut logs = server.logs();
        for chunk in hb.logs {
            logs.ingest(chunk);
        }
        logs.wanted_on(&hb.node, &server.plane())
    };
    Json(HeartbeatReply {
        assignments,
        sandboxes,
        logs_wanted,
    })
    .into_response()
}
