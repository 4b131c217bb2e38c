//! Who is asking: bearer tokens (only their SHA-256 is kept), the request's role, and which
//! tenants' work a role may see or touch.

use super::*;

/// A new random token (256 bits, hex).
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(hex(&bytes))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the journal keeps of a token.
pub fn token_hash(token: &str) -> String {
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// Whether `role` may see or touch work of `tenant`.
pub(super) fn may_touch(role: &Role, tenant: &str) -> bool {
    match role {
        Role::Admin => true,
        Role::Tenant { tenant: t } => t == tenant,
        Role::Agent { .. } | Role::Metrics => false,
    }
}

/// Refuses a request for another tenant than the token's.
pub(super) fn check_tenant(role: &Role, tenant: &str) -> Result<(), Refusal> {
    if may_touch(role, tenant) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "tenant",
            format!("this token may not act for tenant '{tenant}'"),
        ))
    }
}

/// The tenant a listing may show: the token's own for a tenant token; refused when it asks
/// for another.
pub(super) fn listing_tenant(
    role: &Role,
    asked: Option<String>,
) -> Result<Option<String>, Refusal> {
    match role {
        Role::Admin => Ok(asked),
        Role::Agent { .. } | Role::Metrics => {
            Err(Refusal::forbidden("an agent token cannot list work"))
        }
        Role::Tenant { tenant } => {
            if asked.as_ref().is_some_and(|t| t != tenant) {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "tenant",
                    format!("this token sees tenant '{tenant}' only"),
                ));
            }
            Ok(Some(tenant.clone()))
        }
    }
}

impl Server {
    /// Who sent the request: the role of its bearer token.
    pub(super) fn principal(&self, headers: &HeaderMap) -> Result<Role, Refusal> {
        self.caller(headers).map(|(role, _)| role)
    }

    /// An agent's report for `nodes`, from the request's `caller` (its role and token hash,
    /// looked up once): refused (403, and counted against the credential) when the token may
    /// not report for every one of them. Tenants never report.
    pub(super) fn reporter<'a>(
        &self,
        caller: &(Role, String),
        nodes: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Refusal> {
        let (role, hash) = caller;
        if let Role::Tenant { .. } | Role::Metrics = role {
            return Err(Refusal::forbidden("only agent tokens report for nodes"));
        }
        if let Some(other) = nodes.into_iter().find(|n| !role.may_report_for(n)) {
            let id = crate::state::token_id(hash).to_string();
            tracing::warn!(token = %id, node = %other, "report for a node the credential is not bound to");
            *self.refused_reports().entry(id).or_default() += 1;
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "node",
                format!("this agent credential is not bound to node '{other}'"),
            ));
        }
        Ok(())
    }

    /// The role of the request's bearer token, and the token's SHA-256. A metrics token is
    /// refused here: it reads `/metrics` only (see [`Server::scraper`]).
    pub(super) fn caller(&self, headers: &HeaderMap) -> Result<(Role, String), Refusal> {
        match self.token_role(headers)? {
            (Role::Metrics, _) => Err(Refusal::forbidden("a metrics token reads /metrics only")),
            found => Ok(found),
        }
    }

    /// Refuses every caller but an admin; `what` ends the refusal's reason ("only an admin
    /// token …").
    pub(super) fn admin(&self, headers: &HeaderMap, what: &str) -> Result<(), Refusal> {
        match self.principal(headers)? {
            Role::Admin => Ok(()),
            _ => Err(Refusal::forbidden(format!("only an admin token {what}"))),
        }
    }

    /// Whether the request may read `/metrics`: an admin or a metrics token.
    pub(super) fn scraper(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        match self.token_role(headers)?.0 {
            Role::Admin | Role::Metrics => Ok(()),
            _ => Err(Refusal::forbidden(
                "only an admin or a metrics token reads the metrics",
            )),
        }
    }

    /// The role of the request's bearer token, whatever it is, and the token's SHA-256.
    /// A dashboard session (see `ui::cookie_auth`) stands for its token's hash.
    fn token_role(&self, headers: &HeaderMap) -> Result<(Role, String), Refusal> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let session = headers.get(ui::SESSION_HASH).and_then(|v| v.to_str().ok());
        let hash = match (bearer, session) {
            (Some(token), _) => token_hash(token.trim()),
            (None, Some(hash)) => hash.to_string(),
            (None, None) => {
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "authorization",
                    "send 'Authorization: Bearer <token>'",
                ))
            }
        };
        let p = self.plane();
        match p.role_of(&hash, unix_now()) {
            Ok(role) => Ok((role.clone(), hash)),
            Err(TokenProblem::Unknown) => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                "unknown or revoked token",
            )),
            Err(TokenProblem::Expired(at)) => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                format!("the token expired at {at} (Unix seconds)"),
            )),
        }
    }

    /// The caller's role and the id of a `/v1/<things>/{id}` path.
    pub(super) fn caller_and_id(
        &self,
        headers: &HeaderMap,
        raw: &str,
    ) -> Result<(Role, u64), Refusal> {
        let role = self.principal(headers)?;
        let id = raw.parse::<u64>().map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "id",
                format!("'{raw}' is not an id (a positive integer)"),
            )
        })?;
        Ok((role, id))
    }

    /// The caller's role, refused when it is an agent's (agents only report).
    pub(super) fn submitter(&self, headers: &HeaderMap) -> Result<Role, Refusal> {
        match self.principal(headers)? {
            Role::Agent { .. } | Role::Metrics => Err(Refusal::forbidden(
                "an agent token cannot submit or see work",
            )),
            role => Ok(role),
        }
    }
}

/// Who reads a reason: `None` for an operator (every job named), the tenant's name for a tenant
/// (other tenants' jobs never named), and a name no tenant has for an agent.
pub(super) fn viewer(role: &Role) -> Option<&str> {
    match role {
        Role::Admin => None,
        Role::Tenant { tenant } => Some(tenant.as_str()),
        Role::Agent { .. } | Role::Metrics => Some(""),
    }
}
