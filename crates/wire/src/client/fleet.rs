//! The client's calls that change the fleet of a running cell: fleet files applied and read
//! back, and nodes their agents register under an admin's rule.

use super::{accepted, answer, Client, ClientError, Result};

impl Client {
    /// Applies a fleet file to the running cell, or with `dry_run` says what it would change
    /// (`POST /v1/fleet/apply`; admin only).
    pub fn apply_fleet(&self, ask: &crate::api::ApplyFleet) -> Result<crate::api::FleetChange> {
        self.post_json("fleet/apply", ask)
    }

    /// The registration rule and the registrations waiting (`GET /v1/fleet/registrations`;
    /// admin only).
    pub fn registrations(&self) -> Result<crate::api::RegistrationsView> {
        self.get("fleet/registrations", &[])
    }

    /// Sets or stops the registration rule (`PUT /v1/fleet/registrations`; admin only).
    pub fn set_registration_rule(
        &self,
        rule: &crate::api::SetRegistrationRule,
    ) -> Result<crate::api::RegistrationsView> {
        answer(
            self.http
                .put(&self.url("fleet/registrations"))
                .set("Authorization", &self.auth)
                .send_json(rule),
        )
    }

    /// Approves waiting registrations: their nodes join the fleet
    /// (`POST /v1/fleet/registrations/approve`; admin only).
    pub fn approve_registrations(&self, nodes: &str) -> Result<crate::api::FleetChange> {
        self.post_json(
            "fleet/registrations/approve",
            &crate::api::ApproveNodes {
                nodes: nodes.to_string(),
            },
        )
    }

    /// Drops waiting registrations (`POST /v1/fleet/registrations/reject`; admin only);
    /// answers those still waiting.
    pub fn reject_registrations(&self, nodes: &str) -> Result<crate::api::RegistrationsView> {
        self.post_json(
            "fleet/registrations/reject",
            &crate::api::ApproveNodes {
                nodes: nodes.to_string(),
            },
        )
    }

    /// Registers a node under the cell's rule (`POST /v1/agent/register`).
    pub fn register_node(&self, node: &crate::api::RegisterNode) -> Result<crate::api::Registered> {
        self.post_json("agent/register", node)
    }

    /// The cell's fleet file now (`GET /v1/fleet/file`; admin only).
    pub fn fleet_file(&self) -> Result<String> {
        use std::io::Read;
        let limit = crate::api::MAX_FLEET_FILE_BYTES;
        let resp = accepted(
            self.http
                .get(&self.url("fleet/file"))
                .set("Authorization", &self.auth)
                .call(),
        )?;
        let mut text = String::new();
        resp.into_reader()
            .take(limit as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if text.len() > limit {
            return Err(ClientError::Decode(format!(
                "the fleet file is larger than {limit} bytes"
            )));
        }
        Ok(text)
    }
}
