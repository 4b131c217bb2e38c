//! Nodes going down and coming back in a run: failures (random, timed, of any scope), repairs,
//! drains and deliveries, counted per node so that the queue hears of a node's first reason
//! to be down and of its last one ending, and the count of GPUs up follows.

use super::*;

impl Sim<'_> {
    /// Nodes in `range` gain a reason to be down; those that had none fail now (their jobs
    /// report their last checkpoint first).
    pub(super) fn take_down(&mut self, range: Range<u32>, now: Time, out: &mut Vec<Decision>) {
        let mut newly = Vec::new();
        for n in range.clone() {
            self.down[n as usize] += 1;
            if self.down[n as usize] == 1 {
                newly.push(n);
            }
        }
        if newly.is_empty() {
            return;
        }
        for &n in &newly {
            self.count_up(n, false);
            for w in self.s.engine().workloads_on(NodeId(n)) {
                self.report_checkpoint(w, now);
            }
        }
        let scope = if newly.len() == range.len() && range.len() > 1 {
            self.subtree_of(&range)
        } else {
            None
        };
        match scope {
            Some(t) => out.extend(self.s.fail(Scope::Subtree(t), now)),
            None => {
                for n in newly {
                    out.extend(self.s.fail(Scope::Node(NodeId(n)), now));
                }
            }
        }
    }

    /// Nodes in `range` lose a reason to be down; those with none left come back (ready, or
    /// draining if a drain covers them).
    pub(super) fn bring_up(&mut self, range: Range<u32>) {
        for n in range {
            let d = &mut self.down[n as usize];
            *d = d.saturating_sub(1);
            if *d == 0 {
                self.count_up(n, true);
                let state = if self.drained[n as usize] > 0 {
                    NodeState::Draining
                } else {
                    NodeState::Ready
                };
                self.s.set_state(Scope::Node(NodeId(n)), state);
                self.cpu_room_changed = true;
            }
        }
    }

    /// Starts (`on`) or ends a drain of `range`.
    pub(super) fn drain(&mut self, range: Range<u32>, on: bool) {
        for n in range {
            let i = n as usize;
            if on {
                self.drained[i] += 1;
            } else {
                self.drained[i] = self.drained[i].saturating_sub(1);
            }
            if self.down[i] == 0 && (self.drained[i] == 1 && on || self.drained[i] == 0 && !on) {
                let state = if on {
                    NodeState::Draining
                } else {
                    NodeState::Ready
                };
                self.s.set_state(Scope::Node(NodeId(n)), state);
            }
        }
        self.cpu_room_changed |= !on;
    }

    /// The topology element whose nodes are exactly `range`, if any.
    pub(super) fn subtree_of(&self, range: &Range<u32>) -> Option<TopoId> {
        let fleet = self.s.engine().fleet();
        let node = fleet.node(NodeId(range.start));
        let mut t = fleet.domain_of(NodeId(range.start)).or(Some(node.parent))?;
        loop {
            let nodes = &fleet.topo_node(t).nodes;
            if nodes.start == range.start && nodes.end == range.end {
                return Some(t);
            }
            if nodes.start < range.start || nodes.end > range.end {
                return None;
            }
            t = fleet.topo_node(t).parent?;
        }
    }

    pub(super) fn count_up(&mut self, n: u32, up: bool) {
        let cap = self.s.engine().fleet().node(NodeId(n)).capacity;
        let (g, c) = if cap.gpus > 0 {
            (u64::from(cap.gpus), 0)
        } else {
            (0, u64::from(cap.cpu_millis))
        };
        if up {
            self.gpus_up += g;
            self.cpu_up += c;
        } else {
            self.gpus_up -= g;
            self.cpu_up -= c;
        }
    }
}
