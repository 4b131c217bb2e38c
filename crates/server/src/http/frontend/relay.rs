//! Interactive sandboxes' commands for agents behind a frontend. The writer keeps an exec's
//! order until a long poll on its node takes it. A frontend long-polls the writer itself,
//! every second anew, naming the nodes that host a live interactive sandbox and whose agents'
//! long polls wait at this frontend now (an agent's heartbeats and long poll may reach
//! different frontends behind a balancer: the long poll is where the order must go). An order
//! it gets is held until that agent's long poll takes it, for 20 s at most (the writer ends an
//! exec whose order no agent took in [`crate::execs::TAKE_WITHIN`]). The agent's output goes to
//! the writer like every other change.

use super::*;
use crate::api::ExecOrder;

/// How long one long poll waits at the writer before the nodes it names are looked at again.
const WAIT_MS: u64 = 1_000;

/// How long an order is held for its agent: well inside the writer's
/// [`crate::execs::TAKE_WITHIN`], whose clock started when it handed the order here, so that
/// no agent starts a command the writer already gave up.
const HOLD: Duration = Duration::from_secs(20);

/// An order waiting for its agent, and when it came.
pub(super) struct Relayed {
    order: ExecOrder,
    at: Instant,
}

/// Nodes an agent's long poll waits on at this frontend, for as long as it is held.
pub(in crate::http) struct Waiting {
    nodes: Vec<String>,
    waiting: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiting = lock(&self.waiting);
        for n in &self.nodes {
            if let Some(count) = waiting.get_mut(n) {
                *count -= 1;
                if *count == 0 {
                    waiting.remove(n);
                }
            }
        }
    }
}

impl Upstream {
    /// Notes that an agent's long poll waits here on `nodes` until the guard is dropped (a
    /// long poll that names none, an agent playing many nodes, is not relayed orders: such
    /// agents are hollow and run no command).
    pub(in crate::http) fn waiting_on(&self, nodes: &[String]) -> Waiting {
        let mut waiting = lock(&self.waiting);
        for n in nodes {
            *waiting.entry(n.clone()).or_default() += 1;
        }
        Waiting {
            nodes: nodes.to_vec(),
            waiting: self.waiting.clone(),
        }
    }

    /// The orders waiting for the nodes `asked` covers, handed over (each once); orders no
    /// agent took in time are dropped.
    pub(in crate::http) fn take_relayed(&self, asked: impl Fn(&str) -> bool) -> Vec<ExecOrder> {
        let mut relayed = lock(&self.relayed);
        if relayed.is_empty() {
            return Vec::new();
        }
        relayed.retain(|_, orders| {
            orders.retain(|o| o.at.elapsed() <= HOLD);
            !orders.is_empty()
        });
        let nodes: Vec<String> = relayed.keys().filter(|n| asked(n)).cloned().collect();
        nodes
            .into_iter()
            .filter_map(|n| relayed.remove(&n))
            .flatten()
            .map(|r| r.order)
            .collect()
    }

    fn hold(&self, orders: Vec<ExecOrder>) {
        let mut relayed = lock(&self.relayed);
        let now = Instant::now();
        for order in orders {
            relayed
                .entry(order.node.clone())
                .or_default()
                .push(Relayed { order, at: now });
        }
    }

    /// The nodes waited on here that host a live interactive sandbox (as the copy has it).
    fn relayed_nodes(&self, server: &Server) -> Vec<String> {
        let waiting: Vec<String> = lock(&self.waiting).keys().cloned().collect();
        if waiting.is_empty() {
            return Vec::new();
        }
        let p = server.plane();
        waiting
            .into_iter()
            .filter(|n| p.hosts_interactive_sandbox(n))
            .collect()
    }
}

/// Long-polls the writer for the exec orders of the nodes [`Upstream::relayed_nodes`] names,
/// for as long as the frontend runs (on a thread of its own: the client blocks), and wakes
/// the long polls of their agents.
pub(super) fn relay(server: &Arc<Server>) {
    let Backing::Writer(up) = &server.backing else {
        return;
    };
    let client = up
        .client
        .clone()
        .with_timeout(Duration::from_millis(WAIT_MS) + Duration::from_secs(30));
    let mut after = 0;
    while !up.stopped.load(std::sync::atomic::Ordering::Relaxed) {
        let nodes = up.relayed_nodes(server);
        if nodes.is_empty() {
            std::thread::sleep(Duration::from_millis(WAIT_MS));
            continue;
        }
        let asked = crate::api::WaitForChanges {
            nodes,
            after,
            timeout_ms: WAIT_MS,
        };
        match client.wait_for_changes(&asked) {
            Ok(changes) => {
                after = changes.version;
                if changes.execs.is_empty() {
                    continue;
                }
                let nodes: Vec<String> = changes.execs.iter().map(|o| o.node.clone()).collect();
                up.hold(changes.execs);
                let mut log = server.change_log();
                for node in nodes {
                    log.wake(&node);
                }
            }
            Err(e) => {
                tracing::debug!("relaying exec orders: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
