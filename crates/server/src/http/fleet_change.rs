//! `POST /v1/fleet/apply` and `GET /v1/fleet/file`: the cell's fleet changed while it runs
//! (admin only), and the fleet file it has now; `/v1/fleet/registrations` (admin: the rule for
//! nodes their agents register, those waiting, approvals) and `POST /v1/agent/register`. A fleet file is larger than any other request
//! (the reference fleet's is about 1.4 MB), so this route reads up to
//! [`MAX_FLEET_FILE_BYTES`], once the token was checked.

use super::*;
use crate::api::{
    ApplyFleet, ApproveNodes, FleetChange, RegisterNode, Registered, RegistrationsView,
    SetRegistrationRule, MAX_FLEET_FILE_BYTES,
};

/// The route whose bodies may be as large as a fleet file.
pub(super) const APPLY_PATH: &str = "/v1/fleet/apply";

/// Apply a fleet file to the running cell (admin only): the nodes, domains, network nodes and
/// pools it adds join (each node takes work once its agent reports); removed nodes that hold
/// nothing leave at once, the others are drained and leave once their work ends; running work
/// keeps its nodes. Journaled like every change. With `dry_run`, says what would change.
#[utoipa::path(post, path = "/v1/fleet/apply", request_body = ApplyFleet,
    responses((status = 200, body = FleetChange), (status = 400, body = ApiError),
        (status = 409, body = ApiError)))]
pub(super) async fn apply_fleet(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            server.admin(&headers, "changes the fleet")?;
            let body = axum::body::to_bytes(body, MAX_FLEET_FILE_BYTES)
                .await
                .map_err(|_| fleet_file_too_large())?;
            let ask: ApplyFleet = parse_json(&body)?;
            if ask.dry_run {
                let plan = server
                    .plane()
                    .plan_fleet(&ask.fleet_toml)
                    .map_err(|e| Refusal::from_state(e, "fleet_toml"))?;
                return Ok(Json(plan.change().clone()).into_response());
            }
            let fleet_toml = ask.fleet_toml;
            let committed = server
                .commit(
                    |_, at| Ok(vec![Event::FleetApply { fleet_toml, at }]),
                    OnRefusal::Answer("fleet_toml"),
                )
                .await?;
            let change = server.fleet_change_at(committed.first_seq)?;
            tracing::info!(?change, "fleet changed");
            Ok(Json(change).into_response())
        }
        .await,
    )
}

/// The cell's fleet file now (admin only): what was applied last, with the removed nodes that
/// still run work and every pool the cell has had. Edit it and apply it again.
#[utoipa::path(get, path = "/v1/fleet/file",
    responses((status = 200, body = String, content_type = "application/toml"),
        (status = 403, body = ApiError)))]
pub(super) async fn fleet_file(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Err(r) = server.admin(&headers, "reads the fleet file") {
        return r.into_response();
    }
    let text = server.plane().fleet_file().to_string();
    (
        [(axum::http::header::CONTENT_TYPE, "application/toml")],
        text,
    )
        .into_response()
}

pub(super) fn fleet_file_too_large() -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body",
        format!("a fleet file is limited to {MAX_FLEET_FILE_BYTES} bytes"),
    )
}

/// The rule for nodes their agents register, and the registrations waiting (admin only).
#[utoipa::path(get, path = "/v1/fleet/registrations",
    responses((status = 200, body = RegistrationsView), (status = 403, body = ApiError)))]
pub(super) async fn registrations(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Response {
    match server.admin(&headers, "reads registrations") {
        Ok(()) => Json(server.plane().registration_view()).into_response(),
        Err(r) => r.into_response(),
    }
}

/// Set the rule for nodes their agents register (admin only): the names they may register,
/// the pools they may join, and whether they join without an approval; `null` stops
/// registrations and drops those waiting.
#[utoipa::path(put, path = "/v1/fleet/registrations", request_body = SetRegistrationRule,
    responses((status = 200, body = RegistrationsView), (status = 400, body = ApiError),
        (status = 409, body = ApiError)))]
pub(super) async fn set_registration_rule(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            server.admin(&headers, "sets the registration rule")?;
            let ask: SetRegistrationRule = parse_json(&read_body(body).await?)?;
            server
                .commit(
                    |p, at| {
                        Ok(vec![p
                            .registration_rule_event(ask.rule.as_ref(), at)
                            .map_err(bad_request)?])
                    },
                    OnRefusal::Answer("rule"),
                )
                .await?;
            Ok(Json(server.plane().registration_view()).into_response())
        }
        .await,
    )
}

/// Approve waiting registrations (admin only): their nodes join the fleet in one change.
#[utoipa::path(post, path = "/v1/fleet/registrations/approve", request_body = ApproveNodes,
    responses((status = 200, body = FleetChange), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub(super) async fn approve_registrations(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let make = |nodes, at| Event::RegistrationsApproved { nodes, at };
            let seq = settle(&server, &headers, body, "approves registrations", make).await?;
            Ok(Json(server.fleet_change_at(seq)?).into_response())
        }
        .await,
    )
}

/// Drop waiting registrations (admin only); answers the rule and those still waiting.
#[utoipa::path(post, path = "/v1/fleet/registrations/reject", request_body = ApproveNodes,
    responses((status = 200, body = RegistrationsView), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub(super) async fn reject_registrations(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let make = |nodes, at| Event::RegistrationsRejected { nodes, at };
            settle(&server, &headers, body, "rejects registrations", make).await?;
            Ok(Json(server.plane().registration_view()).into_response())
        }
        .await,
    )
}

/// An admin's approval or rejection of waiting registrations (`ApproveNodes` in the body),
/// committed as `make` says; the record's number.
async fn settle(
    server: &Server,
    headers: &HeaderMap,
    body: axum::body::Body,
    what: &str,
    make: impl FnOnce(String, u64) -> Event,
) -> Result<u64, Refusal> {
    server.admin(headers, what)?;
    let ask: ApproveNodes = parse_json(&read_body(body).await?)?;
    let committed = server
        .commit(
            |_, at| Ok(vec![make(ask.nodes, at)]),
            OnRefusal::Answer("nodes"),
        )
        .await?;
    Ok(committed.first_seq)
}

/// Register a node (an agent credential that may report for it, or an admin): it waits for
/// approval under the cell's rule, then joins the fleet, and its agent's heartbeats bring it
/// up. Checked against the rule and the pool's instance type; registering again while it
/// waits is not news.
#[utoipa::path(post, path = "/v1/agent/register", request_body = RegisterNode,
    responses((status = 200, body = Registered), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn register_node(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let role = server.principal(&headers)?;
            let ask: RegisterNode = parse_json(&read_body(body).await?)?;
            let allowed = match &role {
                Role::Admin => true,
                Role::Agent { .. } => role.may_report_for(&ask.node),
                _ => false,
            };
            if !allowed {
                return Err(Refusal::forbidden(format!(
                    "this credential does not report for node '{}'",
                    ask.node
                )));
            }
            let joined = |p: &ControlPlane| p.node_is_up(&ask.node).is_some();
            server
                .commit(
                    |p, at| {
                        if joined(p) {
                            return Ok(Vec::new());
                        }
                        Ok(p.register_event(&ask, at)
                            .map_err(bad_request)?
                            .into_iter()
                            .collect())
                    },
                    OnRefusal::Answer("node"),
                )
                .await?;
            let state = if joined(&server.plane()) {
                "joined"
            } else {
                "waiting"
            };
            Ok(Json(Registered {
                node: ask.node,
                state: state.into(),
            })
            .into_response())
        }
        .await,
    )
}

impl Server {
    /// What the fleet change of record `seq` did (a change is answered after its record is
    /// durable; by then a departure or another change may have followed it).
    fn fleet_change_at(&self, seq: u64) -> Result<FleetChange, Refusal> {
        self.plane().fleet_change_at(seq).cloned().ok_or_else(|| {
            Refusal::new(
                StatusCode::CONFLICT,
                "fleet_toml",
                format!("record {seq} was applied, and more fleet changes followed it at once: read the fleet with `fleet current`"),
            )
        })
    }
}
