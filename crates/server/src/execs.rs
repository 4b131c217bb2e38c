//! Commands running in interactive sandboxes, as the server relays them: each exec is an order
//! waiting for its node's agent, then a channel its output flows through to the one client
//! reading it. Nothing here is journaled: an exec is a conversation, not a change of intent,
//! and a server restart ends the ones in flight (their readers see the connection close).
//!
//! Every count is bounded ([`ExecLimits`]): execs in flight in all, per tenant and per sandbox;
//! each channel holds a few chunks, so a reader that stops reading stops its agent's posts
//! (and, through the pipe, the command) instead of growing the server's memory.

use std::collections::{HashMap, HashSet};
use wire::api::{ExecEnd, ExecOrder};

/// What flows from an exec's agent to its reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes of standard output.
    Stdout(Vec<u8>),
    /// Bytes of standard error.
    Stderr(Vec<u8>),
    /// The end.
    End(ExecEnd),
}

/// Chunks a channel holds before the agent's post waits for the reader (each at most 64 KiB:
/// half a MiB per exec, at most 2 GiB with every exec of a full server unread).
pub const CHANNEL_CHUNKS: usize = 8;

/// Most standard input (base64) handed to a node's agent in one long-poll answer; the orders
/// past it go in the next.
pub const ORDERS_BYTES: usize = 8 << 20;

/// How many execs may be in flight.
#[derive(Clone, Copy, Debug)]
pub struct ExecLimits {
    /// In all.
    pub total: usize,
    /// Per tenant.
    pub per_tenant: u32,
    /// Per sandbox.
    pub per_sandbox: u32,
}

impl Default for ExecLimits {
    fn default() -> Self {
        ExecLimits {
            total: 4096,
            per_tenant: 256,
            per_sandbox: 16,
        }
    }
}

/// Why an exec was not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecRefused {
    /// A bound on execs in flight was reached.
    #[error("{0}")]
    TooMany(String),
}

struct Entry {
    order: ExecOrder,
    tenant: String,
    /// When its order went out in a long-poll answer.
    delivered: Option<std::time::Instant>,
    /// Its agent posted for it (the first post says it took the order).
    taken: bool,
    tx: tokio::sync::mpsc::Sender<Piece>,
}

/// How long an agent has to say it took an order before the exec is given up (the answer that
/// carried it was lost, or the agent restarted).
pub const TAKE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Execs in flight.
#[derive(Default)]
pub struct Execs {
    limits: ExecLimits,
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// Orders not yet handed to their node's agent, by node.
    undelivered: HashMap<String, Vec<u64>>,
    by_tenant: HashMap<String, u32>,
    by_sandbox: HashMap<(u64, u32), u32>,
}

impl Execs {
    /// An empty registry under `limits`. Its ids start from the time in microseconds, so that
    /// an id is not given again by a server started later (an agent may still post for an
    /// exec of the one before).
    pub fn new(limits: ExecLimits) -> Execs {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Execs {
            limits,
            next_id: now_us,
            ..Execs::default()
        }
    }

    /// Registers `order` (its `id` is set here) for `tenant`; returns its id and the channel
    /// its output comes through.
    pub fn open(
        &mut self,
        mut order: ExecOrder,
        tenant: &str,
    ) -> Result<(u64, tokio::sync::mpsc::Receiver<Piece>), ExecRefused> {
        if self.entries.len() >= self.limits.total {
            return Err(ExecRefused::TooMany(format!(
                "the server runs {} execs, its most; try again shortly",
                self.entries.len()
            )));
        }
        let of_tenant = self.by_tenant.get(tenant).copied().unwrap_or(0);
        if of_tenant >= self.limits.per_tenant {
            return Err(ExecRefused::TooMany(format!(
                "tenant {tenant} has {of_tenant} execs running, its most"
            )));
        }
        let sandbox = (order.batch, order.index);
        let of_sandbox = self.by_sandbox.get(&sandbox).copied().unwrap_or(0);
        if of_sandbox >= self.limits.per_sandbox {
            return Err(ExecRefused::TooMany(format!(
                "sandbox {} of batch {} has {of_sandbox} execs running, its most",
                order.index, order.batch
            )));
        }
        self.next_id += 1;
        let id = self.next_id;
        order.id = id;
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
        self.undelivered
            .entry(order.node.clone())
            .or_default()
            .push(id);
        *self.by_tenant.entry(tenant.to_string()).or_default() += 1;
        *self.by_sandbox.entry(sandbox).or_default() += 1;
        self.entries.insert(
            id,
            Entry {
                order,
                tenant: tenant.to_string(),
                delivered: None,
                taken: false,
                tx,
            },
        );
        Ok((id, rx))
    }

    /// Whether orders wait for any of `nodes`.
    pub fn waiting_for(&self, nodes: &HashSet<&str>) -> bool {
        self.undelivered.keys().any(|n| nodes.contains(n.as_str()))
    }

    /// The orders waiting for `nodes`, handed over (each once), oldest first, up to
    /// [`ORDERS_BYTES`] of standard input (at least one).
    pub fn take_orders(&mut self, asked: impl Fn(&str) -> bool) -> Vec<ExecOrder> {
        let ready: Vec<String> = self
            .undelivered
            .keys()
            .filter(|n| asked(n.as_str()))
            .cloned()
            .collect();
        let mut out = Vec::new();
        let mut bytes = 0;
        for node in ready {
            let Some(ids) = self.undelivered.get_mut(&node) else {
                continue;
            };
            let mut taken = 0;
            for id in ids.iter() {
                let Some(e) = self.entries.get_mut(id) else {
                    taken += 1;
                    continue;
                };
                let size = order_bytes(&e.order);
                if !out.is_empty() && bytes + size > ORDERS_BYTES {
                    break;
                }
                bytes += size;
                e.delivered = Some(std::time::Instant::now());
                // The input goes with the order; the registry keeps no copy of it.
                let stdin_b64 = std::mem::take(&mut e.order.stdin_b64);
                out.push(ExecOrder {
                    stdin_b64,
                    ..e.order.clone()
                });
                taken += 1;
            }
            ids.drain(..taken);
            if ids.is_empty() {
                self.undelivered.remove(&node);
            }
        }
        out
    }

    /// Where exec `id`'s output goes, when `node` runs it, for sandbox `index` of `batch`, and
    /// it was handed over.
    pub fn sender(
        &mut self,
        id: u64,
        node: &str,
        batch: u64,
        index: u32,
    ) -> Option<tokio::sync::mpsc::Sender<Piece>> {
        let e = self.entries.get_mut(&id).filter(|e| {
            e.delivered.is_some()
                && e.order.node == node
                && e.order.batch == batch
                && e.order.index == index
        })?;
        e.taken = true;
        Some(e.tx.clone())
    }

    /// Execs whose order went out more than `within` before `now` and that their agent never
    /// took.
    pub fn untaken(&self, now: std::time::Instant, within: std::time::Duration) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| {
                !e.taken && e.delivered.is_some_and(|d| now.duration_since(d) > within)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forgets exec `id` (its reader went away, or it ended).
    pub fn close(&mut self, id: u64) {
        let Some(e) = self.entries.remove(&id) else {
            return;
        };
        if e.delivered.is_none() {
            if let Some(ids) = self.undelivered.get_mut(&e.order.node) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.undelivered.remove(&e.order.node);
                }
            }
        }
        decrement(&mut self.by_tenant, &e.tenant);
        decrement(&mut self.by_sandbox, &(e.order.batch, e.order.index));
    }

    /// Every exec in flight: (id, batch, index, node).
    pub fn in_flight(&self) -> Vec<(u64, u64, u32, String)> {
        self.entries
            .iter()
            .map(|(id, e)| (*id, e.order.batch, e.order.index, e.order.node.clone()))
            .collect()
    }

    /// Ends exec `id` with `why` (its reader is told, if it has room for one more line) and
    /// forgets it.
    pub fn end(&mut self, id: u64, why: &str) {
        if let Some(e) = self.entries.get(&id) {
            let _ = e.tx.try_send(Piece::End(ExecEnd {
                exit_code: None,
                error: Some(why.to_string()),
            }));
        }
        self.close(id);
    }

    /// Execs in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What an order weighs in a long-poll answer: its input, command and environment (JSON may
/// escape a byte into six).
fn order_bytes(order: &ExecOrder) -> usize {
    let text: usize = order.command.iter().map(String::len).sum::<usize>()
        + order
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    order.stdin_b64.len() + 6 * text
}

fn decrement<K: std::hash::Hash + Eq + Clone>(counts: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Bytes of one stream turned into text as they come: a character split between two chunks
/// waits for its end; bytes that are not UTF-8 become U+FFFD.
#[derive(Default)]
pub struct TextStream {
    carry: Vec<u8>,
}

impl TextStream {
    /// The text `bytes` completes.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let cut = match std::str::from_utf8(&self.carry) {
            Ok(_) => self.carry.len(),
            // An incomplete character at the end waits; an invalid one is shown as such.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.carry.len(),
        };
        let rest = self.carry.split_off(cut);
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry = rest;
        text
    }

    /// What is left at the end.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn order(node: &str, batch: u64, index: u32) -> ExecOrder {
        ExecOrder {
            id: 0,
            node: node.into(),
            batch,
            index,
            command: vec!["true".into()],
            env: Default::default(),
            stdin_b64: "aGk=".into(),
            timeout_s: 60,
        }
    }

    #[test]
    fn orders_go_once_to_their_node_and_output_only_from_it() {
        let mut execs = Execs::new(ExecLimits::default());
        let (a, _ra) = execs.open(order("n1", 5, 0), "t").unwrap();
        let (b, _rb) = execs.open(order("n2", 5, 1), "t").unwrap();
        let n1: HashSet<&str> = ["n1"].into_iter().collect();
        assert!(execs.waiting_for(&n1));
        // Output before the order was handed over is refused.
        assert!(execs.sender(a, "n1", 5, 0).is_none());
        let taken = execs.take_orders(|x| n1.contains(x));
        assert_eq!(taken.iter().map(|o| o.id).collect::<Vec<_>>(), vec![a]);
        assert!(execs.take_orders(|x| n1.contains(x)).is_empty());
        assert!(!execs.waiting_for(&n1));
        assert!(execs
            .untaken(std::time::Instant::now(), TAKE_WITHIN)
            .is_empty());
        let later = std::time::Instant::now() + TAKE_WITHIN * 2;
        assert_eq!(execs.untaken(later, TAKE_WITHIN), vec![a]);
        assert!(execs.sender(a, "n1", 5, 0).is_some());
        assert!(
            execs.untaken(later, TAKE_WITHIN).is_empty(),
            "taken by its first post"
        );
        assert!(
            execs.sender(a, "n2", 5, 0).is_none(),
            "another node's agent"
        );
        assert!(execs.sender(a, "n1", 5, 1).is_none(), "another sandbox");
        assert!(execs.sender(a, "n1", 6, 0).is_none(), "another batch");
        assert!(execs.sender(b, "n2", 5, 1).is_none(), "not handed over yet");
        // The input went with the order.
        assert!(execs.entries[&a].order.stdin_b64.is_empty());
        execs.close(a);
        execs.close(b);
        assert!(execs.is_empty());
        assert!(execs.undelivered.is_empty() && execs.by_tenant.is_empty());
    }

    #[test]
    fn one_answer_carries_a_bounded_amount_of_input() {
        let mut execs = Execs::new(ExecLimits::default());
        let big = |n| ExecOrder {
            stdin_b64: "A".repeat(ORDERS_BYTES / 2 + 1),
            ..order("n", 1, n)
        };
        let (a, _ra) = execs.open(big(0), "t").unwrap();
        let (b, _rb) = execs.open(big(1), "t").unwrap();
        let n: HashSet<&str> = ["n"].into_iter().collect();
        let first: Vec<u64> = execs
            .take_orders(|x| n.contains(x))
            .iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(first, vec![a]);
        let second: Vec<u64> = execs
            .take_orders(|x| n.contains(x))
            .iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(second, vec![b]);
        assert!(!execs.waiting_for(&n));
    }

    #[test]
    fn every_bound_is_kept_and_named() {
        let mut execs = Execs::new(ExecLimits {
            total: 4,
            per_tenant: 3,
            per_sandbox: 2,
        });
        let mut keep = Vec::new();
        keep.push(execs.open(order("n", 1, 0), "a").unwrap());
        keep.push(execs.open(order("n", 1, 0), "a").unwrap());
        let e = execs.open(order("n", 1, 0), "a").unwrap_err();
        assert!(e.to_string().contains("sandbox 0 of batch 1"), "{e}");
        keep.push(execs.open(order("n", 1, 1), "a").unwrap());
        let e = execs.open(order("n", 1, 2), "a").unwrap_err();
        assert!(e.to_string().contains("tenant a"), "{e}");
        keep.push(execs.open(order("n", 2, 0), "b").unwrap());
        let e = execs.open(order("n", 3, 0), "c").unwrap_err();
        assert!(e.to_string().contains("its most"), "{e}");
        // Closing gives the room back.
        execs.close(keep[0].0);
        assert!(execs.open(order("n", 3, 0), "c").is_ok());
    }

    #[test]
    fn an_exec_ended_by_the_server_tells_its_reader_why() {
        let mut execs = Execs::new(ExecLimits::default());
        let (id, mut rx) = execs.open(order("n", 1, 0), "t").unwrap();
        assert_eq!(execs.in_flight(), vec![(id, 1, 0, "n".to_string())]);
        execs.end(id, "the sandbox is gone");
        assert!(execs.is_empty() && execs.undelivered.is_empty());
        match rx.try_recv().unwrap() {
            Piece::End(e) => assert_eq!(e.error.as_deref(), Some("the sandbox is gone")),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn text_streams_keep_every_character_whatever_the_chunking(
            text in "\\PC{0,64}",
            cuts in proptest::collection::vec(0usize..80, 0..8),
        ) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut stream = TextStream::default();
            let mut out = String::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                out.push_str(&stream.push(&bytes[at..c]));
                at = c;
            }
            out.push_str(&stream.finish());
            prop_assert_eq!(out, text);
        }

        #[test]
        fn text_streams_never_panic_on_garbage(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..16), 0..8)) {
            let mut stream = TextStream::default();
            let mut n = 0;
            for c in &chunks {
                n += stream.push(c).len();
            }
            n += stream.finish().len();
            // Every byte comes out as itself or as part of a replacement character.
            prop_assert!(n >= chunks.iter().map(Vec::len).sum::<usize>() / 4);
        }
    }
}
