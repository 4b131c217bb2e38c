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

    /// Why, in words.
    pub(super) fn reason(&self) -> &str {
        &self.reason
    }

    pub(super) fn forbidden(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, "authorization", reason)
    }

    /// The answer to a submission past a limit: 400 for a request larger than any may be, 429
    /// for a tenant that holds all it may.
    pub(super) fn from_limit(hit: LimitHit) -> Refusal {
        match hit {
            LimitHit::TooLarge { field, reason } => {
                Refusal::new(StatusCode::BAD_REQUEST, field, reason)
            }
            LimitHit::TenantFull { field, reason } => {
                Refusal::new(StatusCode::TOO_MANY_REQUESTS, field, reason)
            }
        }
    }

    /// The answer to a change the state refused: the status follows the error's kind (the
    /// queue's own field when it names one); `field` names what the request was about
    /// otherwise.
    pub(super) fn from_state(e: StateError, field: &str) -> Refusal {
        use sched::SchedError as Queue;
        match e {
            StateError::Queue(Queue::Invalid { field, reason }) => {
                Refusal::new(StatusCode::BAD_REQUEST, field, reason)
            }
            StateError::BadFleet { field, reason } => {
                Refusal::new(StatusCode::BAD_REQUEST, &field, reason)
            }
            StateError::Queue(Queue::NoRoom { field, reason }) => {
                Refusal::new(StatusCode::CONFLICT, field, reason)
            }
            e @ (StateError::Queue(Queue::UnknownJob(_)) | StateError::NotFound(_)) => {
                Refusal::new(StatusCode::NOT_FOUND, field, e.to_string())
            }
            e @ (StateError::Queue(Queue::DuplicateJob(_) | Queue::WrongState { .. })
            | StateError::Conflict(_)) => Refusal::new(StatusCode::CONFLICT, field, e.to_string()),
            e => Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, field, e.to_string()),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        problem(self.status, &self.field, self.reason)
    }
}

/// Reads a request's body, at most [`MAX_BODY_BYTES`] of it: called once the token was checked,
/// so that nobody without one makes the server buffer anything.
pub(super) async fn read_body(body: axum::body::Body) -> Result<Bytes, Refusal> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body",
                format!("requests are limited to {MAX_BODY_BYTES} bytes"),
            )
        })
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

/// A listing's page size: 100 unless asked, 1..=[`MAX_PAGE`].
pub(super) fn page_size(asked: Option<usize>) -> Result<usize, Refusal> {
    let limit = asked.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("must be 1..={MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

pub(super) fn respond(r: Result<Response, Refusal>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}
