//! Stargrid's control-plane server: the HTTP API over the queue, with every accepted change
//! journaled durably before it is acknowledged.
//!
//! - `api`: request and response types (and their OpenAPI schemas), from the `wire` crate.
//! - `state`: the events and the state they build (`ControlPlane`), deterministic, so that a
//!   replay of the journal rebuilds exactly the state before a restart.
//! - `http`: routes, handlers, the pass loop, start-up.
//!
//! Not built yet: authentication, node agents and the reconcile loop (jobs are placed by the
//! queue but no process runs them), services and sandbox batches through the API, snapshots
//! (a restart replays the whole journal), the PostgreSQL backend.

pub use wire::api;
pub mod http;
pub mod journal;
pub mod state;

pub use http::{router, serve, token_hash, ApiDoc, Config, Server, StartError};
