//! What a frontend asks of its writer: the replica's snapshot and records
//! ([`crate::replica`]), and requests of its own clients passed on as they came.

use super::{accepted, Client, ClientError, Result};
use crate::replica::{parse_records, ReplicaRecord, ReplicaSnapshot, CELL_HEADER, SEQ_HEADER};
use std::io::Read;
use std::time::Duration;

/// A request passed on to the writer as its client sent it.
#[derive(Debug)]
pub struct Forward<'a> {
    /// `GET`, `POST`, `PUT`, ...
    pub method: &'a str,
    /// The path and query, from the first `/`.
    pub path_and_query: &'a str,
    /// The headers passed on, by name (the client's `Authorization`, `Content-Type`, ...).
    pub headers: &'a [(String, String)],
    /// The body (empty: none).
    pub body: &'a [u8],
}

/// The writer's answer to a passed-on request, its body still to be read (it may be a
/// stream).
pub struct Forwarded {
    /// The status.
    pub status: u16,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body as it comes.
    pub body: Box<dyn Read + Send + Sync + 'static>,
}

impl std::fmt::Debug for Forwarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarded")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The writer's state now (`GET /v1/replica/snapshot`).
    pub fn replica_snapshot(&self) -> Result<ReplicaSnapshot> {
        let resp = accepted(
            self.http
                .get(&self.url("replica/snapshot"))
                .set("Authorization", &self.auth)
                .call(),
        )?;
        let seq = resp
            .header(SEQ_HEADER)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::Decode(format!("no {SEQ_HEADER} header")))?;
        let cell = resp.header(CELL_HEADER).unwrap_or("cell-0").to_string();
        let mut body = Vec::new();
        resp.into_reader()
            .read_to_end(&mut body)
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        Ok(ReplicaSnapshot { seq, cell, body })
    }

    /// Durable records after `after`, waiting up to `wait` for one (`GET /v1/replica/records`).
    /// The client's timeout must exceed the wait. A writer whose journal no longer holds
    /// record `after + 1` (compacted) refuses with 410: load the snapshot again.
    pub fn replica_records(&self, after: u64, wait: Duration) -> Result<Vec<ReplicaRecord>> {
        let resp = accepted(
            self.http
                .get(&self.url("replica/records"))
                .set("Authorization", &self.auth)
                .query("after", &after.to_string())
                .query("wait_ms", &wait.as_millis().to_string())
                .call(),
        )?;
        let mut body = Vec::new();
        resp.into_reader()
            .read_to_end(&mut body)
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        parse_records(&body, after).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Passes `request` on to the server as it came, with the caller's own credential (not
    /// this client's token). Any status comes back as an answer; only a server that cannot
    /// be reached is an error. The body is read as it arrives (up to ten minutes between
    /// reads), over connections kept for such requests.
    pub fn forward(&self, request: &Forward<'_>) -> Result<Forwarded> {
        let url = format!("{}{}", self.base, request.path_and_query);
        let mut req = self.stream.request(request.method, &url);
        for (name, value) in request.headers {
            req = req.set(name, value);
        }
        let sent = if request.body.is_empty() {
            req.call()
        } else {
            req.send_bytes(request.body)
        };
        let resp = match sent {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(ClientError::Unreachable(t.to_string())),
        };
        Ok(Forwarded {
            status: resp.status(),
            content_type: resp.header("Content-Type").map(str::to_string),
            body: Box::new(resp.into_reader()),
        })
    }
}
