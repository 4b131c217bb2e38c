//! API tokens as the journal keeps them (only their SHA-256), their roles, and the lookup of a
//! request's role.

use super::*;

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
    /// Register nodes and report (heartbeats) only.
    Agent,
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
