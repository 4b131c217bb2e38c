//! Stargrid's control-plane server: the HTTP API over the queue, with every accepted change
//! journaled durably before it is acknowledged, and agents told only what is durable.
//!
//! - `api`: the `/v1` request and response types, from the `wire` crate (shared with the
//!   agent and the CLI).
//! - `state`: the events and the state they build (`ControlPlane`): live, the queue decides and
//!   each event's record carries its decisions; replay restores recorded outcomes and never
//!   decides, so a restart or a new build rebuilds exactly the placements agents were told.
//! - `journal`: what is persisted, in types of its own: the record format (version 1: event,
//!   decisions, outcome, nodes by name) with the upgrade of version-0 journals (inputs only),
//!   the snapshot format, and the workload summaries compaction keeps.
//! - `log_tails`: task log tails relayed from agents (untrusted input: checked, bounded).
//! - `execs`: commands running in interactive sandboxes, relayed between their readers and
//!   the agents that run them (bounded, never journaled); `sessions`: when interactive
//!   sandboxes time out or idle out; `templates`: which sandbox templates the nodes offer.
//! - `http`: start-up (snapshot, replay, upgrade, first admin token), the one commit path,
//!   routes per resource, auth, the agents' long poll, log relay, OpenAPI; the replica feed
//!   and the frontend mode (a copy that follows the writer, agents fanned in, changes passed
//!   on).
//! - `tls`: the API over TLS (rustls): certificates from PEM, handshakes off the accept loop.
//! - `metrics`: `/metrics` for Prometheus, measured as things happen and counted from the
//!   state at each scrape.
//! - `events`: the event stream's memory (`GET /v1/events`): the latest events of durable
//!   records, by tenant.
//!
//! - `http/ui.rs` with `ui/`: the web dashboard, served from the binary.

pub use wire::api;
pub mod events;
pub mod execs;
pub mod http;
pub mod journal;
pub mod live_load;
pub mod log_tails;
pub mod metrics;
pub mod sessions;
pub mod state;
pub mod templates;
pub mod tls;

pub use http::{
    router, serve, serve_frontend, serve_tls, token_hash, ApiDoc, Config, FrontendConfig, Server,
    StartError,
};
