//! Refusals: every refused request is answered with a status and a JSON body naming the field
//! and the reason.

use super::*;

/// A refused request: status, field and reason.
pub(super) struct Refusal {
    status: StatusCode,
    field: String,
    reason: String,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, field: &str, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    pub(super) fn forbidden(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, "authorization", reason)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        problem(self.status, &self.field, self.reason)
    }
}

/// Reads a JSON body; a refusal names the field (a path such as `env.X` for nested ones).
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "" } else { path.as_str() };
        Refusal::new(StatusCode::BAD_REQUEST, field, e.inner().to_string())
    })
}

pub(super) fn problem(status: StatusCode, field: &str, reason: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: FieldProblem {
                field: field.to_string(),
                reason: reason.into(),
            },
        }),
    )
        .into_response()
}

pub(super) fn not_found(id: u64) -> Response {
    problem(StatusCode::NOT_FOUND, "id", format!("no job {id}"))
}

pub(super) fn bad_request(fp: FieldProblem) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, &fp.field, fp.reason)
}

pub(super) fn no_such(what: &str, id: u64) -> Response {
    problem(StatusCode::NOT_FOUND, "id", format!("no {what} {id}"))
}

pub(super) fn respond(r: Result<Response, Refusal>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}
