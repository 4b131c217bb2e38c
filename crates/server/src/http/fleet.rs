//! `/v1/nodes`, `/v1/cell`, `/v1/tenants`, `/v1/cost`, `/v1/fleet/overview`,
//! `/v1/fleet/domain`: the fleet's nodes, the cell's capacity summary (drain and resume by node or topology path), tenants and their usage, what the
//! fleet has cost, and the fleet as the dashboard draws it (domains as cells, a domain's trays).

use super::*;

/// Which nodes `GET /v1/nodes` lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeQuery {
    /// Only nodes in this state: ready, cordoned, draining, down.
    state: Option<String>,
    /// Nodes after this one in fleet order (the last name of the previous page).
    after: Option<String>,
    /// Page size, 1..=10000 (default 10000).
    limit: Option<usize>,
}

/// Most nodes on one page.
pub const MAX_NODE_PAGE: usize = 10_000;

/// Nodes in fleet order, with their state and free capacity, a page at a time: a full page
/// may be followed by more (ask again with `after` = its last name).
#[utoipa::path(get, path = "/v1/nodes",
    params(("state" = Option<String>, Query, description = "ready, cordoned, draining or down"),
        ("after" = Option<String>, Query, description = "the last node of the previous page"),
        ("limit" = Option<usize>, Query, description = "page size, 1..=10000 (default 10000)")),
    responses((status = 200, body = [NodeView]), (status = 400, body = ApiError)))]
pub(super) async fn list_nodes(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<NodeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let role = match server.principal(&headers) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "query", e.body_text()),
    };
    let limit = q.limit.unwrap_or(MAX_NODE_PAGE);
    if limit == 0 || limit > MAX_NODE_PAGE {
        return problem(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("must be 1..={MAX_NODE_PAGE}"),
        );
    }
    // An agent credential sees the nodes it is bound to (a hollow agent picks from them).
    let visible = |name: &str| match &role {
        Role::Agent { nodes: Some(_) } => role.may_report_for(name),
        _ => true,
    };
    let page = server
        .plane()
        .node_page(q.state.as_deref(), q.after.as_deref(), limit, visible);
    match page {
        Ok(nodes) => Json(nodes).into_response(),
        Err(p) => bad_request(p).into_response(),
    }
}

/// The cell's capacity at a glance: nodes by state, GPUs by model and CPU (free, used,
/// unavailable), jobs waiting and running. Any token but a metrics one may read it.
#[utoipa::path(get, path = "/v1/cell", responses((status = 200, body = crate::api::CellSummary)))]
pub(super) async fn cell_summary(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Response {
    match server.principal(&headers) {
        Ok(_) => Json(server.plane().cell_summary(&server.cell)).into_response(),
        Err(r) => r.into_response(),
    }
}

/// What the fleet has cost since the journal began, by provider, region, tenant, class and
/// kind of capacity, per day; committed capacity left idle; each commitment's burn-down.
/// Admin tokens only (it shows every tenant's spend).
#[utoipa::path(get, path = "/v1/cost",
    responses((status = 200, description = "the spend summary (JSON: total_usd, idle_committed_usd, by_provider, by_region, by_tenant, by_class, by_pricing, idle_by_provider, commitments)"),
        (status = 403, body = ApiError)))]
pub(super) async fn cost(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    match server.principal(&headers) {
        Ok(Role::Admin) => {
            let plane = server.plane();
            let now = plane.stamp(unix_now());
            Json(plane.spend(now)).into_response()
        }
        Ok(_) => Refusal::forbidden("spend reports are for admin tokens").into_response(),
        Err(r) => r.into_response(),
    }
}

/// Tenants: quota, GPUs in use and borrowed, fair share, losses (a tenant token: its own).
#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = [TenantView])))]
pub(super) async fn list_tenants(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Response {
    match server.principal(&headers) {
        Ok(Role::Agent { .. }) => {
            Refusal::forbidden("an agent token cannot list tenants").into_response()
        }
        Ok(role) => {
            let all = server.plane().tenants();
            let mine: Vec<TenantView> = all
                .into_iter()
                .filter(|t| may_touch(&role, &t.name))
                .collect();
            Json(mine).into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// Drain or resume a node (admin only); answers the node.
pub(super) async fn set_drain(
    server: Arc<Server>,
    headers: HeaderMap,
    name: String,
    drain: bool,
) -> Response {
    respond(
        async {
            match server.principal(&headers)? {
                Role::Admin => {}
                _ => return Err(Refusal::forbidden("only an admin token drains nodes")),
            }
            server
                .commit(
                    |p, at| match p.target_nodes(&name) {
                        Ok(_) => Ok(vec![Event::NodeDrain {
                            node: name.clone(),
                            drain,
                            at,
                        }]),
                        Err(e) => Err(Refusal::new(StatusCode::NOT_FOUND, "name", e.to_string())),
                    },
                    OnRefusal::Answer("name"),
                )
                .await?;
            // The node, or for a topology path every node under it.
            let views: Vec<NodeView> = {
                let p = server.plane();
                let names: std::collections::HashSet<String> = p
                    .target_nodes(&name)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|n| p.node_name(n))
                    .collect();
                p.nodes()
                    .into_iter()
                    .filter(|v| names.contains(&v.name))
                    .collect()
            };
            Ok(Json(views).into_response())
        }
        .await,
    )
}

/// Drain a node, or every node under a topology path (with `/` sent as `%2F`): they take no new
/// work, and what runs there finishes (admin only). They stay drained when their agents
/// restart, until resumed. Answers the nodes.
#[utoipa::path(post, path = "/v1/nodes/{name}/drain", params(("name" = String, Path, description = "node name or topology path")),
    responses((status = 200, body = [NodeView]), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn drain_node(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    set_drain(server, headers, name, true).await
}

/// Resume a drained node, or the drained nodes under a topology path: they take work again
/// (admin only). Answers the nodes.
#[utoipa::path(post, path = "/v1/nodes/{name}/resume", params(("name" = String, Path, description = "node name or topology path")),
    responses((status = 200, body = [NodeView]), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn resume_node(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    set_drain(server, headers, name, false).await
}

/// Every NVLink domain as one cell (GPUs used, trays down or drained) grouped by provider,
/// region, zone and network level; CPU hosts summed per zone; totals. What the dashboard's
/// fleet page draws; its size follows the domains, not the nodes.
#[utoipa::path(get, path = "/v1/fleet/overview",
    responses((status = 200, body = crate::api::FleetOverview), (status = 403, body = ApiError)))]
pub(super) async fn fleet_overview(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Response {
    match server.principal(&headers) {
        Ok(Role::Agent { .. }) => {
            Refusal::forbidden("an agent token cannot read the fleet's overview").into_response()
        }
        Ok(_) => {
            // Serialised after the state's lock is let go.
            let overview = server.plane().fleet_overview();
            Json(overview).into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// Query of `GET /v1/fleet/domain`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct DomainQuery {
    /// The domain's topology path (as the overview's group path and the cell's name make it).
    path: String,
}

/// One domain's trays (or any subtree of at most 512 nodes) and the work on each; another
/// tenant's work is shown as such, without its name.
#[utoipa::path(get, path = "/v1/fleet/domain", params(DomainQuery),
    responses((status = 200, body = crate::api::DomainDetail), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn fleet_domain(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<DomainQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond((|| {
        let role = server.principal(&headers)?;
        if let Role::Agent { .. } = role {
            return Err(Refusal::forbidden(
                "an agent token cannot read the fleet's work",
            ));
        }
        let Query(q) =
            query.map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "query", e.body_text()))?;
        if q.path.len() > 1024 {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "path",
                "longer than 1024 bytes",
            ));
        }
        let detail = server.plane().domain_detail(&q.path, viewer(&role));
        match detail {
            Some(d) => Ok(Json(d).into_response()),
            None => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "path",
                format!(
                    "no topology path '{}' of at most {} nodes",
                    q.path.chars().take(128).collect::<String>(),
                    crate::state::MAX_DETAIL_NODES
                ),
            )),
        }
    })())
}
