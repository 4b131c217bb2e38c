//! Rolling updates of a service: a new version of its command or environment rolled over its
//! replicas a few at a time, gated on the new ones being ready, rolled back when they are not.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Longest version label.
pub const MAX_VERSION_LEN: usize = 64;

/// A new version of a service (`POST /v1/services/{id}/rollout`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRollout {
    /// The new version's label (1 to 64 printable characters, e.g. "v2" or an image tag).
    #[schema(min_length = 1, max_length = 64)]
    pub version: String,
    /// Its command (absent: the current one).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Its environment (absent: the current one; secrets stay as they are).
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Replicas above the desired count while new ones come up (default 1).
    #[serde(default = "one")]
    pub max_surge: u32,
    /// Ready replicas the update may take below the desired count (default 0).
    #[serde(default)]
    pub max_unavailable: u32,
    /// Seconds the new replicas may take to become ready, from the update's start or its
    /// last step, before it is rolled back (default 120).
    #[serde(default = "default_deadline")]
    pub progress_deadline_s: u32,
    /// Start with a canary: one new replica, given this share of the traffic (1 to 99 per
    /// cent) by the gateways, and nothing retired until `promote`.
    #[serde(default)]
    pub canary_percent: Option<u32>,
}

fn one() -> u32 {
    1
}

fn default_deadline() -> u32 {
    120
}

/// Where a service's rolling update stands (`GET /v1/services/{id}/rollout`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RolloutView {
    /// The service.
    pub service: u64,
    /// none (never updated), canary, rolling, rolling-back, done or rolled-back.
    pub state: String,
    /// The version replicas are moving to (or run, when done).
    pub version: String,
    /// The version before it (what `undo` goes back to).
    pub previous_version: Option<String>,
    /// Replicas of the version being left.
    pub old_replicas: u32,
    /// Replicas of the target version.
    pub new_replicas: u32,
    /// Of those, ready.
    pub new_ready: u32,
    /// Replicas kept above the desired count now.
    pub surge: u32,
    /// When the update started (Unix seconds).
    pub started_at: Option<u64>,
    /// Why it was rolled back.
    pub reason: Option<String>,
    /// The share of traffic the new version gets while it is a canary, per cent.
    #[serde(default)]
    pub canary_percent: Option<u32>,
}

/// Goes back to the previous version (`POST /v1/services/{id}/rollout/undo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UndoRollout {
    /// Why (kept with the rollout; default "undone by an operator").
    #[serde(default)]
    pub reason: Option<String>,
}
