//! API tokens as the journal keeps them (only their SHA-256), their roles, the nodes an agent
//! credential is bound to, and the lookup of a request's role.

use super::*;
use std::collections::HashSet;
use std::sync::Arc;

/// Most nodes one agent credential may cover (a whole fleet of the reference size fits).
pub const MAX_SCOPE_NODES: usize = 1_000_000;

/// Longest hostlist expression an agent credential may carry.
pub const MAX_SCOPE_EXPR: usize = 64 * 1024;

/// The nodes an agent credential may report for: a hostlist expression (`gpu-[0000-1023]`,
/// `cpu-7,cpu-9`), kept as written in the journal and expanded once in memory (shared: a
/// request's role is a cheap copy, whatever the scope's size).
#[derive(Clone, Debug)]
pub struct NodeScope {
    expr: Arc<str>,
    names: Arc<HashSet<Box<str>>>,
}

/// Why a node scope is not accepted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not a hostlist expression.
    #[error(transparent)]
    Malformed(#[from] model::hostlist::HostlistError),
    /// Longer than [`MAX_SCOPE_EXPR`] bytes.
    #[error("the expression is {0} bytes; at most {MAX_SCOPE_EXPR}")]
    TooLong(usize),
    /// Covers more than [`MAX_SCOPE_NODES`] names.
    #[error("the expression names {0} nodes; at most {MAX_SCOPE_NODES}")]
    TooMany(usize),
}

impl NodeScope {
    /// The scope of a hostlist expression.
    pub fn parse(expr: &str) -> Result<NodeScope, ScopeError> {
        if expr.len() > MAX_SCOPE_EXPR {
            return Err(ScopeError::TooLong(expr.len()));
        }
        let names = model::hostlist::expand(expr)?;
        if names.len() > MAX_SCOPE_NODES {
            return Err(ScopeError::TooMany(names.len()));
        }
        Ok(NodeScope {
            expr: expr.trim().into(),
            names: Arc::new(names.into_iter().map(String::into_boxed_str).collect()),
        })
    }

    /// Whether the credential may report for `node`.
    pub fn covers(&self, node: &str) -> bool {
        self.names.contains(node)
    }

    /// The expression as issued.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// How many names it covers.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it covers no name (never, for a parsed scope).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl PartialEq for NodeScope {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Eq for NodeScope {}

impl Serialize for NodeScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

impl<'de> Deserialize<'de> for NodeScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expr = String::deserialize(d)?;
        NodeScope::parse(&expr).map_err(serde::de::Error::custom)
    }
}

/// An issued token, as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// What it may do.
    pub role: Role,
    /// When it was issued (Unix seconds).
    pub issued_at: u64,
    /// When it stops working.
    pub expires_at: Option<u64>,
}

/// A token's public id: the first 16 hex digits of its SHA-256.
pub fn token_id(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// Why a token does not work.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenProblem {
    /// Never issued, or revoked.
    Unknown,
    /// Past its expiry.
    Expired(u64),
}

/// What a token may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Submit, see and cancel the work of one tenant.
    Tenant {
        /// The tenant's name.
        tenant: String,
    },
    /// Report (heartbeats, long polls) for nodes only.
    Agent {
        /// The nodes it may report for. `None`: every node, as agent tokens issued before
        /// credentials were bound to nodes do (still honoured, flagged in listings).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nodes: Option<NodeScope>,
    },
    /// Read `/metrics` only: what a Prometheus scrape is given, so that it holds no token
    /// that can read or change work.
    Metrics,
}

impl Role {
    /// Whether this role may report for `node`: admins and unbound agent tokens for every
    /// node, a bound agent credential for its own, tenants for none.
    pub fn may_report_for(&self, node: &str) -> bool {
        match self {
            Role::Admin | Role::Agent { nodes: None } => true,
            Role::Agent { nodes: Some(scope) } => scope.covers(node),
            Role::Tenant { .. } | Role::Metrics => false,
        }
    }

    /// Whether this role reports for any node at all, as a frontend fanning agents in does:
    /// admins and unbound agent tokens.
    pub fn may_report_for_every_node(&self) -> bool {
        matches!(self, Role::Admin | Role::Agent { nodes: None })
    }
}

impl ControlPlane {
    /// The role of the token whose SHA-256 is `hash`.
    pub fn role_of(&self, hash: &str, now: u64) -> Result<&Role, TokenProblem> {
        let t = self.tokens.get(hash).ok_or(TokenProblem::Unknown)?;
        match t.expires_at {
            Some(end) if end <= now => Err(TokenProblem::Expired(end)),
            _ => Ok(&t.role),
        }
    }

    /// Every token that works or expired (revoked ones are gone), by id.
    pub fn token_list(&self) -> Vec<(String, TokenRecord)> {
        self.tokens
            .iter()
            .map(|(h, t)| (token_id(h).to_string(), t.clone()))
            .collect()
    }

    /// Whether any token was issued yet.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn agent_roles_keep_their_journal_form() {
        // Written before credentials were bound to nodes: still reads, as unbound.
        let old: Role = serde_json::from_str(r#"{"role":"agent"}"#).unwrap();
        assert_eq!(old, Role::Agent { nodes: None });
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"role":"agent"}"#);
        assert!(old.may_report_for("anything"));
        let bound: Role =
            serde_json::from_str(r#"{"role":"agent","nodes":"gpu-[000-127],cpu-7"}"#).unwrap();
        assert!(bound.may_report_for("gpu-042") && bound.may_report_for("cpu-7"));
        assert!(!bound.may_report_for("gpu-128") && !bound.may_report_for("gpu-42"));
        assert_eq!(
            serde_json::to_string(&bound).unwrap(),
            r#"{"role":"agent","nodes":"gpu-[000-127],cpu-7"}"#
        );
        // A damaged scope is refused when read, not taken as "every node".
        assert!(serde_json::from_str::<Role>(r#"{"role":"agent","nodes":"gpu-["}"#).is_err());
        let tenant = Role::Tenant { tenant: "t".into() };
        assert!(!tenant.may_report_for("gpu-000"));
    }

    #[test]
    fn scopes_are_bounded() {
        assert!(matches!(
            NodeScope::parse("n[0-2000000]"),
            Err(ScopeError::TooMany(2_000_001))
        ));
        let long = "a,".repeat(MAX_SCOPE_EXPR);
        assert!(matches!(
            NodeScope::parse(&long),
            Err(ScopeError::TooLong(_))
        ));
    }

    proptest! {
        #[test]
        fn any_expression_parses_or_is_refused(expr in "[a-z0-9\\[\\],-]{0,40}") {
            if let Ok(scope) = NodeScope::parse(&expr) {
                let names = model::hostlist::expand(&expr).unwrap();
                prop_assert!(names.iter().all(|n| scope.covers(n)));
                let again: NodeScope =
                    serde_json::from_str(&serde_json::to_string(&scope).unwrap()).unwrap();
                prop_assert_eq!(again.len(), scope.len());
            }
        }
    }
}
