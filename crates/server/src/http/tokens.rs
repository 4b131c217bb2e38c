//! `/v1/tokens`: issue, list and revoke API tokens (admin only).

use super::*;

/// Issue a token (admin only): admin, tenant (with `tenant`) or agent.
#[utoipa::path(post, path = "/v1/tokens", request_body = IssueToken,
    responses((status = 201, body = Token), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn issue_token(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    match server.principal(&headers) {
        Ok(Role::Admin) => {}
        Ok(_) => return Refusal::forbidden("only an admin token issues tokens").into_response(),
        Err(r) => return r.into_response(),
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let req: IssueToken = match parse_json(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if req.nodes.is_some() && req.role != "agent" {
        return problem(
            StatusCode::BAD_REQUEST,
            "nodes",
            "only agent credentials name nodes",
        );
    }
    let role = match (req.role.as_str(), req.tenant) {
        ("admin", None) => Role::Admin,
        ("agent", None) => match req.nodes.as_deref().map(crate::state::NodeScope::parse) {
            Some(Ok(scope)) => Role::Agent { nodes: Some(scope) },
            Some(Err(e)) => return problem(StatusCode::BAD_REQUEST, "nodes", e.to_string()),
            None => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "nodes",
                    "an agent credential names the nodes it reports for, as a hostlist \
                     expression (e.g. 'gpu-[0000-0127]')",
                )
            }
        },
        ("metrics", None) => Role::Metrics,
        ("tenant", Some(tenant)) => Role::Tenant { tenant },
        ("tenant", None) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "tenant",
                "a tenant token names its tenant",
            )
        }
        ("admin" | "agent" | "metrics", Some(_)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "tenant",
                "only tenant tokens name a tenant",
            )
        }
        (other, _) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "role",
                format!("unknown role '{other}' (admin, tenant, agent, metrics)"),
            )
        }
    };
    if req.expires_in_s == Some(0) {
        return problem(
            StatusCode::BAD_REQUEST,
            "expires_in_s",
            "must be at least 1",
        );
    }
    let token = match new_token() {
        Ok(t) => t,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, "", e.to_string()),
    };
    let hash = token_hash(&token);
    let made = server
        .commit(
            |p, at| {
                if let Role::Tenant { tenant } = &role {
                    if !p.has_tenant(tenant) {
                        return Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "tenant",
                            format!("unknown tenant '{tenant}'"),
                        ));
                    }
                }
                Ok(vec![Event::TokenIssued {
                    hash: hash.clone(),
                    role,
                    at,
                    expires_at: req.expires_in_s.map(|s| at.saturating_add(s)),
                }])
            },
            OnRefusal::Answer("tenant"),
        )
        .await;
    match made.map(|c| c.events.into_iter().next()) {
        Ok(Some(Event::TokenIssued { expires_at, .. })) => (
            StatusCode::CREATED,
            Json(Token {
                id: crate::state::token_id(&hash).to_string(),
                token,
                expires_at,
            }),
        )
            .into_response(),
        Ok(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "", "not a token"),
        Err(r) => r.into_response(),
    }
}

/// Every token that was not revoked: ids, roles, the nodes an agent credential is bound to,
/// expiry, and reports refused for nodes it is not bound to (admin only; never the tokens).
#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, body = [crate::api::TokenView]),
    (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn list_tokens(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    respond((|| {
        if server.principal(&headers)? != Role::Admin {
            return Err(Refusal::forbidden("only an admin token lists tokens"));
        }
        let now = unix_now();
        let tokens = server.plane().token_list();
        let refused = server.refused_reports();
        let list: Vec<crate::api::TokenView> = tokens
            .into_iter()
            .map(|(id, t)| {
                let (role, tenant, nodes) = match t.role {
                    Role::Admin => ("admin", None, None),
                    Role::Agent { nodes } => (
                        "agent",
                        None,
                        Some(nodes.map_or_else(|| "*".to_string(), |s| s.expr().to_string())),
                    ),
                    Role::Tenant { tenant } => ("tenant", Some(tenant), None),
                    Role::Metrics => ("metrics", None, None),
                };
                crate::api::TokenView {
                    refused_reports: refused.get(&id).copied().unwrap_or(0),
                    id,
                    role: role.into(),
                    tenant,
                    nodes,
                    issued_at: t.issued_at,
                    expires_at: t.expires_at,
                    expired: t.expires_at.is_some_and(|e| e <= now),
                }
            })
            .collect();
        Ok(Json(list).into_response())
    })())
}

/// Revoke a token by its id (admin only): it stops working at once. A token cannot revoke
/// itself.
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", params(("id" = String, Path, description = "token id")),
    responses((status = 200, description = "revoked"), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn revoke_token(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(
        async {
            if server.principal(&headers)? != Role::Admin {
                return Err(Refusal::forbidden("only an admin token revokes tokens"));
            }
            let own = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| token_hash(t.trim()));
            if own
                .as_deref()
                .is_some_and(|h| crate::state::token_id(h) == id)
            {
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "id",
                    "a token cannot revoke itself (use another admin token)",
                ));
            }
            server
                .commit(
                    |p, at| {
                        if p.token_list().iter().any(|(t, _)| *t == id) {
                            Ok(vec![Event::TokenRevoked { id: id.clone(), at }])
                        } else {
                            Err(Refusal::new(
                                StatusCode::NOT_FOUND,
                                "id",
                                format!("no token {id}"),
                            ))
                        }
                    },
                    OnRefusal::Answer("id"),
                )
                .await?;
            Ok(Json(serde_json::json!({ "revoked": id })).into_response())
        }
        .await,
    )
}
