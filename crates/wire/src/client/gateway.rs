//! The client's calls a request gateway makes: the routes it follows (long-polled) and the
//! load it reports.

use super::{accepted, Client, Result};
use crate::api::{GatewayLoad, GatewayRoutes};

impl Client {
    /// The services this token may reach and their ready replicas; with `after` (a version
    /// held), waits up to about 20 s for them to change (`GET /v1/gateway/routes`). The
    /// client's timeout must be longer than the wait.
    pub fn gateway_routes(&self, after: u64) -> Result<GatewayRoutes> {
        self.get("gateway/routes", &[("after", after.to_string())])
    }

    /// Reports the load a gateway carries (`POST /v1/gateway/load`).
    pub fn report_load(&self, load: &GatewayLoad) -> Result<()> {
        accepted(
            self.http
                .post(&self.url("gateway/load"))
                .set("Authorization", &self.auth)
                .send_json(load),
        )
        .map(|_| ())
    }
}
