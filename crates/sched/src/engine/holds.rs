//! Nodes held and spares: nodes held for a preemptor or a reservation (no one else places
//! there), and a gang's spares (a failed slot replaced by a spare in place, a spare dropped).

use super::*;

impl Engine {
    /// Whether node `n` may take new work now: ready and not held.
    pub(crate) fn open(&self, n: u32) -> bool {
        self.fleet.nodes()[n as usize].state.schedulable() && self.holds[n as usize] == 0
    }

    /// Whether node `n` is held (by a reservation, a preemption or a spread rule).
    pub fn is_held(&self, n: NodeId) -> bool {
        self.holds[n.0 as usize] > 0
    }

    /// Puts a hold on each node: it takes no new work until released. Holds nest.
    pub fn hold(&mut self, nodes: &[NodeId]) {
        self.change_holds(nodes, true);
    }

    /// Lifts one hold from each node (nodes without a hold are left alone).
    pub fn unhold(&mut self, nodes: &[NodeId]) {
        self.change_holds(nodes, false);
    }

    /// Adds (`add`) or lifts one hold on each node, then refreshes the CPU hosts' room and
    /// reindexes each touched domain once.
    fn change_holds(&mut self, nodes: &[NodeId], add: bool) {
        let mut touched = Vec::new();
        for n in nodes {
            let h = &mut self.holds[n.0 as usize];
            *h = if add {
                h.saturating_add(1)
            } else {
                h.saturating_sub(1)
            };
            let d = self.node_domain[n.0 as usize];
            if d != NO_DOMAIN {
                touched.push(d);
            }
            if let Some(i) = self.host_index(n.0) {
                self.refresh_host_room(i);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for d in touched {
            self.reindex_domain(d);
        }
    }

    /// Replaces a gang's slot on `failed` by one of its spares in the same NVLink domain; the
    /// rest of the gang does not move. The failed node's share is given back. Returns the new
    /// slot, or an error (changing nothing) when the domain has no usable spare.
    pub fn replace_with_spare(
        &mut self,
        id: WorkloadId,
        failed: NodeId,
    ) -> Result<NodeSlot, EngineError> {
        let domain = self.node_domain[failed.0 as usize];
        let nodes = self.fleet.nodes();
        let Some(Allocation::Gang {
            slots,
            spares,
            per_node,
            ..
        }) = self.allocations.get_mut(&id)
        else {
            return Err(EngineError::UnknownWorkload(id));
        };
        let Some(pos) = slots.iter().position(|s| s.node == failed) else {
            return Err(EngineError::BadRelease {
                id,
                reason: format!(
                    "node {} is not one of its active nodes",
                    nodes[failed.0 as usize].name
                ),
            });
        };
        let Some(spare_pos) = spares.iter().position(|s| {
            self.node_domain[s.node.0 as usize] == domain
                && nodes[s.node.0 as usize].state.schedulable()
        }) else {
            return Err(EngineError::BadRelease {
                id,
                reason: format!(
                    "no ready spare in the NVLink domain of {}",
                    nodes[failed.0 as usize].name
                ),
            });
        };
        let spare = spares.remove(spare_pos);
        let old = std::mem::replace(&mut slots[pos], spare);
        let per_node = *per_node;
        self.give_back(id, old, &per_node);
        Ok(spare)
    }

    /// Drops a gang's spare on `node` (e.g. the node failed); its share is given back.
    pub fn drop_spare(&mut self, id: WorkloadId, node: NodeId) -> bool {
        let Some(Allocation::Gang {
            spares, per_node, ..
        }) = self.allocations.get_mut(&id)
        else {
            return false;
        };
        let Some(pos) = spares.iter().position(|s| s.node == node) else {
            return false;
        };
        let slot = spares.remove(pos);
        let per_node = *per_node;
        self.give_back(id, slot, &per_node);
        true
    }
}
