//! The agents' long poll: nodes whose assignments changed, numbered by version, published only
//! once the change is durable, and the waiters woken by them.

use super::*;

/// Most node changes remembered for waiting agents; one that asks about older ones is told to
/// heartbeat every node.
pub(super) const CHANGE_LOG_LEN: usize = 100_000;

/// Longest wait an agent may ask for.
pub(super) const MAX_WAIT_MS: u64 = 30_000;

/// Nodes whose assignments changed, numbered by version, and the agents waiting on them.
#[derive(Default)]
pub(super) struct ChangeLog {
    version: u64,
    /// (version, node), oldest first.
    log: std::collections::VecDeque<(u64, String)>,
    /// Versions up to this one were dropped from the log.
    dropped_through: u64,
    /// Waiting requests, by the nodes they wait on.
    waiters: HashMap<String, Vec<Arc<tokio::sync::Notify>>>,
    /// Waiting requests for every node their credential reports for (agents that play many
    /// nodes): woken by any change, each then looks for its own.
    broad: Vec<Arc<tokio::sync::Notify>>,
}

impl ChangeLog {
    /// Publishes a change to `nodes` under a new version, at least `at_least`: the record
    /// that made it (0: a change no record made), so that frontends following the same
    /// records number their changes alike and an agent's cursor means the same at each.
    pub(super) fn publish(&mut self, at_least: u64, nodes: Vec<String>) {
        if nodes.is_empty() {
            return;
        }
        self.version = (self.version + 1).max(at_least);
        for w in self.broad.drain(..) {
            w.notify_one();
        }
        for n in nodes {
            if let Some(waiting) = self.waiters.remove(&n) {
                for w in waiting {
                    w.notify_one();
                }
            }
            self.log.push_back((self.version, n));
        }
        while self.log.len() > CHANGE_LOG_LEN {
            if let Some((v, _)) = self.log.pop_front() {
                self.dropped_through = v;
            }
        }
    }

    /// Forgets every change up to version `through` (a frontend's copy loaded anew: what
    /// changed in between is unknown) and wakes every waiter, whose next look is told so.
    pub(super) fn forget_through(&mut self, through: u64) {
        self.version = self.version.max(through);
        self.dropped_through = self.version;
        self.log.clear();
        for w in self.broad.drain(..) {
            w.notify_one();
        }
        for (_, waiting) in self.waiters.drain() {
            for w in waiting {
                w.notify_one();
            }
        }
    }

    /// The asked-about nodes changed after `after`; `None`: cannot tell (all of them).
    pub(super) fn since(&self, after: u64, asked: impl Fn(&str) -> bool) -> Option<Vec<String>> {
        if after > self.version || after < self.dropped_through {
            return None;
        }
        let mut changed: Vec<String> = self
            .log
            .iter()
            .rev()
            .take_while(|(v, _)| *v > after)
            .filter(|(_, n)| asked(n))
            .map(|(_, n)| n.clone())
            .collect();
        changed.sort_unstable();
        changed.dedup();
        Some(changed)
    }

    /// Wakes the requests waiting on `node` without a change to its assignments (an exec
    /// order for it came in).
    pub(super) fn wake(&mut self, node: &str) {
        for w in self.broad.drain(..) {
            w.notify_one();
        }
        if let Some(waiting) = self.waiters.remove(node) {
            for w in waiting {
                w.notify_one();
            }
        }
    }

    /// Registers a waiter on `nodes` (none: on every change).
    pub(super) fn register(&mut self, nodes: &[String], waiter: &Arc<tokio::sync::Notify>) {
        if nodes.is_empty() {
            self.broad.push(waiter.clone());
        }
        for n in nodes {
            self.waiters
                .entry(n.clone())
                .or_default()
                .push(waiter.clone());
        }
    }

    pub(super) fn unregister(&mut self, nodes: &[String], waiter: &Arc<tokio::sync::Notify>) {
        if nodes.is_empty() {
            self.broad.retain(|w| !Arc::ptr_eq(w, waiter));
        }
        for n in nodes {
            if let Some(v) = self.waiters.get_mut(n) {
                v.retain(|w| !Arc::ptr_eq(w, waiter));
                if v.is_empty() {
                    self.waiters.remove(n);
                }
            }
        }
    }
}

/// Waits until some of the agent's nodes have new assignments (or the timeout passes), and
/// says which: the agent heartbeats those at once, so work starts without waiting for the
/// next heartbeat. An agent that names no node waits on every node its credential reports
/// for: an agent playing many nodes asks without sending (or the server matching) their names
/// each time.
#[utoipa::path(post, path = "/v1/agent/wait", request_body = crate::api::WaitForChanges,
    responses((status = 200, body = crate::api::Changes), (status = 400, body = ApiError)))]
pub(super) async fn wait_for_changes(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            // The token is checked before the body is read.
            let caller = server.caller(&headers)?;
            let req: crate::api::WaitForChanges = parse_json(&read_body(body).await?)?;
            if req.nodes.len() > 100_000 {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "nodes",
                    "must name at most 100000 nodes",
                ));
            }
            if req.timeout_ms > MAX_WAIT_MS {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "timeout_ms",
                    format!("must be at most {MAX_WAIT_MS}"),
                ));
            }
            server.reporter(&caller, req.nodes.iter().map(String::as_str))?;
            let named: std::collections::HashSet<&str> =
                req.nodes.iter().map(String::as_str).collect();
            let role = &caller.0;
            let asked = |n: &str| match named.is_empty() {
                true => role.may_report_for(n),
                false => named.contains(n),
            };
            // At a frontend: the nodes named are waited on here (their exec orders are
            // relayed here while this lasts).
            let _waiting = match &server.backing {
                Backing::Writer(up) => Some(up.waiting_on(&req.nodes)),
                Backing::Journal(_) => None,
            };
            let waiter = Arc::new(tokio::sync::Notify::new());
            let deadline = tokio::time::Instant::now() + Duration::from_millis(req.timeout_ms);
            // What was looked through already: a wake-up looks only at what came after it.
            let mut cursor = req.after;
            loop {
                let (version, found) = {
                    let mut log = server.change_log();
                    // Registered again below if it still waits, so never twice on a node.
                    log.unregister(&req.nodes, &waiter);
                    let found = log.since(cursor, asked);
                    log.register(&req.nodes, &waiter);
                    if found.as_ref().is_some_and(Vec::is_empty) {
                        cursor = log.version;
                    }
                    (log.version, found)
                };
                // Exec orders are looked for after the waiter is registered: one that comes
                // later wakes it (the locks are taken one after the other, never nested).
                let mut execs = server.execs().take_orders(asked);
                if let Backing::Writer(up) = &server.backing {
                    execs.extend(up.take_relayed(asked));
                }
                let timed_out = tokio::time::Instant::now() >= deadline;
                if timed_out || !execs.is_empty() || found.as_ref().is_none_or(|c| !c.is_empty()) {
                    server.change_log().unregister(&req.nodes, &waiter);
                    return Ok(Json(crate::api::Changes {
                        version,
                        all: found.is_none(),
                        changed: found.unwrap_or_default(),
                        execs,
                    })
                    .into_response());
                }
                let _ = tokio::time::timeout_at(deadline, waiter.notified()).await;
            }
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    pub(super) fn the_change_log_answers_by_node_and_says_when_it_cannot_tell() {
        let mut log = ChangeLog::default();
        let set: std::collections::HashSet<&str> = ["a", "b"].into_iter().collect();
        let asked = |n: &str| set.contains(n);
        assert_eq!(log.since(0, asked), Some(vec![]));
        log.publish(0, vec!["a".into(), "c".into()]);
        log.publish(0, vec!["b".into()]);
        assert_eq!(log.since(0, asked), Some(vec!["a".into(), "b".into()]));
        assert_eq!(log.since(1, asked), Some(vec!["b".into()]));
        assert_eq!(log.since(2, asked), Some(vec![]));
        // A version from before a restart: every node.
        assert_eq!(log.since(9, asked), None);
        // A waiter is woken by a change to one of its nodes, and only then.
        let waiter = Arc::new(tokio::sync::Notify::new());
        log.register(&["a".into(), "b".into()], &waiter);
        log.publish(0, vec!["c".into()]);
        assert_eq!(log.waiters.len(), 2);
        log.publish(0, vec!["b".into()]);
        assert!(!log.waiters.contains_key("b"));
        log.unregister(&["a".into(), "b".into()], &waiter);
        assert!(log.waiters.is_empty());
        // A broad waiter is woken by any change.
        log.register(&[], &waiter);
        log.publish(0, vec!["c".into()]);
        assert!(log.broad.is_empty());
        // Old entries are dropped; asking about them gets every node.
        for _ in 0..CHANGE_LOG_LEN {
            log.publish(0, vec!["c".into()]);
        }
        assert_eq!(log.since(1, asked), None);
        assert_eq!(log.since(log.version, asked), Some(vec![]));
        // Versions follow the records that made the changes; a copy loaded anew cannot tell.
        let v = log.version;
        log.publish(v + 10, vec!["a".into()]);
        assert_eq!(log.version, v + 10);
        assert_eq!(log.since(v, asked), Some(vec!["a".into()]));
        log.forget_through(v + 20);
        assert_eq!(log.since(v + 10, asked), None);
        assert_eq!(log.since(v + 20, asked), Some(vec![]));
    }
}
