//! `/v1/jobs`: submit, list (paginated), get, cancel, and why a job is where it is.

use super::*;

/// Queue a training job.
#[utoipa::path(post, path = "/v1/jobs", request_body = SubmitJob,
    responses((status = 201, body = Submitted), (status = 400, body = ApiError), (status = 413, description = "body over 1 MiB")))]
pub(super) async fn submit_job(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        submit_work(
            &server,
            &headers,
            body,
            |r: &SubmitJob| Ok(r.tenant.clone()),
            ControlPlane::submit_event,
            "",
        )
        .await
        .map(created),
    )
}

/// A submission's answer: 201 with its id and record.
pub(super) fn created(s: Submitted) -> Response {
    (StatusCode::CREATED, Json(s)).into_response()
}

/// What every submission route does: read the body, screen it (`screen` gives its tenant or
/// refuses it), check the token's tenant, turn the
/// request into its event, apply and journal it, and answer the new id once it is durable.
/// A refusal by the state is answered by its kind, naming `field` when it names none.
pub(super) async fn submit_work<T: serde::de::DeserializeOwned>(
    server: &Server,
    headers: &HeaderMap,
    body: axum::body::Body,
    screen: impl FnOnce(&T) -> Result<String, Refusal>,
    make: impl FnOnce(&ControlPlane, &T, u64) -> Result<Event, FieldProblem>,
    field: &'static str,
) -> Result<Submitted, Refusal> {
    let role = server.submitter(headers)?;
    let req: T = parse_json(&read_body(body).await?)?;
    check_tenant(&role, &screen(&req)?)?;
    let committed = server
        .commit(
            |p, at| {
                let event = make(p, &req, at).map_err(bad_request)?;
                p.check_limits(&server.limits, &event)
                    .map_err(Refusal::from_limit)?;
                Ok(vec![event])
            },
            OnRefusal::Answer(field),
        )
        .await?;
    let seq = committed.first_seq;
    let id = match committed.events.first() {
        Some(Event::Submit { id, .. }) => id.0,
        Some(Event::ServiceCreate { id, .. }) => id.0,
        Some(Event::SandboxBatch { id, .. }) => id.0,
        _ => {
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "",
                "not a submission",
            ))
        }
    };
    Ok(Submitted { id, seq })
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Only this tenant's jobs.
    tenant: Option<String>,
    /// Only jobs in this state.
    state: Option<String>,
    /// Jobs with a larger id (the previous page's `next_after`).
    after: Option<u64>,
    /// Page size, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// List jobs, in id order, a page at a time.
#[utoipa::path(get, path = "/v1/jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = ApiError)))]
pub(super) async fn list_jobs(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let role = match server.principal(&headers) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let Query(mut q) = match query {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "query", e.body_text()),
    };
    const STATES: [&str; 5] = ["pending", "running", "preempting", "finished", "cancelled"];
    if let Some(s) = &q.state {
        if !STATES.contains(&s.as_str()) {
            return problem(
                StatusCode::BAD_REQUEST,
                "state",
                format!("unknown state '{s}' ({})", STATES.join(", ")),
            );
        }
    }
    match &role {
        Role::Admin => {}
        Role::Agent { .. } | Role::Metrics => {
            return Refusal::forbidden("an agent token cannot list jobs").into_response()
        }
        // A tenant sees its own work only.
        Role::Tenant { tenant } => {
            if q.tenant.as_ref().is_some_and(|t| t != tenant) {
                return Refusal::new(
                    StatusCode::FORBIDDEN,
                    "tenant",
                    format!("this token sees tenant '{tenant}' only"),
                )
                .into_response();
            }
            q.tenant = Some(tenant.clone());
        }
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return problem(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("must be 1..={MAX_PAGE}"),
        );
    }
    let jobs = server.plane().list(
        q.tenant.as_deref(),
        q.state.as_deref(),
        q.after.unwrap_or(0),
        limit + 1,
        viewer(&role),
    );
    let more = jobs.len() > limit;
    let jobs: Vec<JobView> = jobs.into_iter().take(limit).collect();
    let next_after = if more {
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    Json(JobList { jobs, next_after }).into_response()
}

/// One job.
#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = u64, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 404, body = ApiError)))]
pub(super) async fn get_job(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let (role, id) = match server.caller_and_id(&headers, &raw) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    match server.plane().job_view_as(JobId(id), viewer(&role)) {
        // Another tenant's job does not exist, as far as this token can tell.
        Some(v) if may_touch(&role, &v.tenant) => Json(v).into_response(),
        _ => not_found(id),
    }
}

/// Cancel a job (pending or running).
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", params(("id" = u64, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn cancel_job(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let (role, id) = match server.caller_and_id(&headers, &raw) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let cancelled = server
        .commit(
            |p, at| {
                if !p.job_tenant(JobId(id)).is_some_and(|t| may_touch(&role, t)) {
                    return Err(Refusal::new(
                        StatusCode::NOT_FOUND,
                        "id",
                        format!("no job {id}"),
                    ));
                }
                Ok(vec![Event::Cancel { id, at }])
            },
            OnRefusal::Answer("id"),
        )
        .await;
    if let Err(r) = cancelled {
        return r.into_response();
    }
    match server.plane().job_view_as(JobId(id), viewer(&role)) {
        Some(v) => Json(v).into_response(),
        None => not_found(id),
    }
}

/// Why a job is where it is.
#[utoipa::path(get, path = "/v1/jobs/{id}/why", params(("id" = u64, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 404, body = ApiError)))]
pub(super) async fn why_job(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    get_job(State(server), headers, Path(raw)).await
}
