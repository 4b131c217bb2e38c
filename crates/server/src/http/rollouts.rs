//! `/v1/services/{id}/rollout`: rolling updates of a service (start one, see where it stands,
//! promote its canary, undo it), through `services::change_service`. The steps between are
//! the writer's: [`Server::rollouts_due`], in the pass loop, commits what
//! `ControlPlane::rollout_events` says.

use super::*;
use crate::api::{RolloutView, StartRollout, UndoRollout};

/// Roll a new version (command, environment, label) over a service's replicas: a few at a
/// time, each old one retired once new ones are ready; rolled back when they are not.
#[utoipa::path(post, path = "/v1/services/{id}/rollout", request_body = StartRollout,
    params(("id" = u64, Path, description = "service id")),
    responses((status = 200, body = RolloutView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn start_rollout(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: axum::body::Body,
) -> Response {
    if let Err(r) = server.submitter(&headers) {
        return r.into_response();
    }
    let req: StartRollout = match read_body(body).await.and_then(|b| parse_json(&b)) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    change_service(
        server,
        headers,
        raw,
        move |p, id, at| {
            p.rollout_event(ServiceId(id), &req, at)
                .map_err(bad_request)
        },
        rollout_answer,
    )
    .await
}

/// Go back to the version before: an update under way rolls back; a finished one is undone
/// by rolling the previous version out again.
#[utoipa::path(post, path = "/v1/services/{id}/rollout/undo", request_body = UndoRollout,
    params(("id" = u64, Path, description = "service id")),
    responses((status = 200, body = RolloutView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn undo_rollout(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: axum::body::Body,
) -> Response {
    if let Err(r) = server.submitter(&headers) {
        return r.into_response();
    }
    let req: UndoRollout = match read_body(body).await.and_then(|b| {
        if b.is_empty() {
            Ok(UndoRollout::default())
        } else {
            parse_json(&b)
        }
    }) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let reason = req
        .reason
        .unwrap_or_else(|| "undone by an operator".into())
        .chars()
        .take(256)
        .collect::<String>();
    change_service(
        server,
        headers,
        raw,
        move |_, id, at| {
            Ok(Event::RolloutUndo {
                id: ServiceId(id),
                reason,
                at,
            })
        },
        rollout_answer,
    )
    .await
}

/// Promote a rolling update's canary: the update goes on over every replica.
#[utoipa::path(post, path = "/v1/services/{id}/rollout/promote",
    params(("id" = u64, Path, description = "service id")),
    responses((status = 200, body = RolloutView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn promote_rollout(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    change_service(
        server,
        headers,
        raw,
        |_, id, at| {
            Ok(Event::RolloutPromote {
                id: ServiceId(id),
                at,
            })
        },
        rollout_answer,
    )
    .await
}

/// Where a service's rolling update stands.
#[utoipa::path(get, path = "/v1/services/{id}/rollout", params(("id" = u64, Path, description = "service id")),
    responses((status = 200, body = RolloutView), (status = 404, body = ApiError)))]
pub(super) async fn rollout_status(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    respond((|| {
        let (role, id) = server.caller_and_id(&headers, &raw)?;
        let p = server.plane();
        Ok(match p.service_tenant(ServiceId(id)) {
            Some(t) if may_touch(&role, t) => match p.rollout_view(ServiceId(id)) {
                Some(v) => Json(v).into_response(),
                None => no_such("service", id),
            },
            _ => no_such("service", id),
        })
    })())
}

/// The rolling update's view (`change_service`'s answer for rollout changes).
fn rollout_answer(p: &ControlPlane, id: u64, _: &Role) -> Option<Response> {
    p.rollout_view(ServiceId(id))
        .map(|v| Json(v).into_response())
}

impl Server {
    /// The steps rolling updates take now, as events (once a second).
    pub(super) fn rollouts_due(&self, p: &ControlPlane, at: u64) -> Vec<Event> {
        let mut last = lock(&self.rollouts_looked);
        if *last == at {
            return Vec::new();
        }
        *last = at;
        p.rollout_events(at)
    }
}
