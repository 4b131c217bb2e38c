//! The client's calls for rolling updates of a service.

use super::{Client, Result};
use crate::api::{RolloutView, StartRollout, UndoRollout};

impl Client {
    /// Rolls a new version over a service's replicas (`POST /v1/services/{id}/rollout`).
    pub fn start_rollout(&self, id: u64, ask: &StartRollout) -> Result<RolloutView> {
        self.post_json(&format!("services/{id}/rollout"), ask)
    }

    /// Where a service's rolling update stands (`GET /v1/services/{id}/rollout`).
    pub fn rollout(&self, id: u64) -> Result<RolloutView> {
        self.get(&format!("services/{id}/rollout"), &[])
    }

    /// Promotes a rolling update's canary (`POST /v1/services/{id}/rollout/promote`).
    pub fn promote_rollout(&self, id: u64) -> Result<RolloutView> {
        self.post(&format!("services/{id}/rollout/promote"))
    }

    /// Goes back to the version before (`POST /v1/services/{id}/rollout/undo`).
    pub fn undo_rollout(&self, id: u64, reason: Option<String>) -> Result<RolloutView> {
        self.post_json(
            &format!("services/{id}/rollout/undo"),
            &UndoRollout { reason },
        )
    }
}
