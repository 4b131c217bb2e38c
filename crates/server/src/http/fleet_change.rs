//! `POST /v1/fleet/apply` and `GET /v1/fleet/file`: the cell's fleet changed while it runs
//! (admin only), and the fleet file it has now. A fleet file is larger than any other request
//! (the reference fleet's is about 1.4 MB), so this route reads up to
//! [`MAX_FLEET_FILE_BYTES`], once the token was checked.

use super::*;
use crate::api::{ApplyFleet, FleetChange, MAX_FLEET_FILE_BYTES};

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
            match server.principal(&headers)? {
                Role::Admin => {}
                _ => return Err(Refusal::forbidden("only an admin token changes the fleet")),
            }
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
            server
                .commit(
                    |_, at| Ok(vec![Event::FleetApply { fleet_toml, at }]),
                    OnRefusal::Answer("fleet_toml"),
                )
                .await?;
            let change = server.plane().last_fleet_change().cloned();
            tracing::info!(?change, "fleet changed");
            Ok(Json(change.unwrap_or_default()).into_response())
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
    match server.principal(&headers) {
        Ok(Role::Admin) => {}
        Ok(_) => {
            return Refusal::forbidden("only an admin token reads the fleet file").into_response()
        }
        Err(r) => return r.into_response(),
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
