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
    let pending = {
        let mut p = server.plane();
        let at = p.stamp(unix_now());
        let events = match p.heartbeat_events(&hb, at) {
            Ok(e) => e,
            Err(fp) => return problem(StatusCode::BAD_REQUEST, &fp.field, fp.reason),
        };
        let mut records = Vec::new();
        for e in &events {
            if let Ok(record) = p.apply(e) {
                records.push(p.encode(&record));
            }
        }
        server.seen().insert(hb.node.clone(), Instant::now());
        (!records.is_empty()).then(|| server.journal.append(records))
    };
    if let Some(pending) = pending {
        server.wake.notify_one();
        if let Err(e) = pending.done().await {
            fail_stop(e);
        }
        server.publish_changes();
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
