//! Stargrid's HTTP API as it travels: what the server, its agents and its clients agree on,
//! without the server itself (no axum, no tokio, no journal).
//!
//! - [`api`]: the `/v1` request and response types, with their OpenAPI schemas.
//! - [`client`]: a typed blocking client, one method per endpoint, that turns the server's
//!   refusals into [`client::ClientError::Refused`] with the field and the reason.
//! - [`sse`]: Server-Sent Events read off a byte stream (the event stream).
//! - [`replica`]: what a frontend follows its writer with (a snapshot, then records).
//!
//! This crate is an API boundary: a change to a type here is a change to the wire format that
//! old agents and clients see.

pub mod api;
pub mod client;
pub mod replica;
pub mod sse;

pub use client::{Client, ClientError};
