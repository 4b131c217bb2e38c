//! The engine's books: taking and giving back gang slots (per node, per shared device, per
//! domain), reinstating a released allocation exactly, and keeping each domain's counters and
//! index entries and each CPU host's room current (at once, or deferred over a batch).

use super::*;

impl Engine {
    /// Takes (`take`) or gives back the resources of gang slots, keeps each node's workload list
    /// and the touched domains' counters up to date.
    pub(crate) fn charge_slots(
        &mut self,
        id: WorkloadId,
        slots: &[NodeSlot],
        request: &GangRequest,
        per_node: &Resources,
        take: bool,
    ) {
        let mut touched = Vec::new();
        for (s, per_node) in slots.iter().zip(slot_asks(request, per_node)) {
            let n = s.node.0 as usize;
            if request.is_share() {
                self.charge_share(s.node.0, s.gpu_mask, request.gpu_milli, take);
            }
            let devices = if request.is_share() { 0 } else { s.gpu_mask };
            let f = &mut self.free[n];
            if take {
                f.gpu_mask &= !devices;
                f.cpu_millis -= per_node.cpu_millis;
                f.memory_mib -= per_node.memory_mib;
                // Workers of one unit may share a node: the workload is listed once.
                if !self.node_work[n].contains(&id) {
                    self.node_work[n].push(id);
                }
            } else {
                f.gpu_mask |= devices;
                f.cpu_millis += per_node.cpu_millis;
                f.memory_mib += per_node.memory_mib;
                self.node_work[n].retain(|w| *w != id);
            }
            if self.node_domain[n] != NO_DOMAIN {
                touched.push(self.node_domain[n]);
            }
        }
        if let Some(deferred) = &mut self.deferred {
            deferred.extend(touched);
            return;
        }
        touched.sort_unstable();
        touched.dedup();
        for d in touched {
            self.reindex_domain(d);
        }
    }

    /// Batches the domain bookkeeping of the gang releases and reinstates that follow until
    /// [`Engine::settle`]; nothing may be planned or placed in between.
    pub(crate) fn defer_reindex(&mut self) {
        self.deferred.get_or_insert_with(Vec::new);
    }

    /// Brings every domain touched since [`Engine::defer_reindex`] up to date and ends the
    /// batch. Counters and indexes come out exactly as if each change had been indexed at once.
    pub(crate) fn settle(&mut self) {
        if let Some(mut touched) = self.deferred.take() {
            touched.sort_unstable();
            touched.dedup();
            for d in touched {
                self.reindex_domain(d);
            }
        }
    }

    /// Returns one slot's resources to its node and drops the node from the workload's list
    /// when the workload holds nothing else there.
    pub(super) fn give_back(&mut self, id: WorkloadId, slot: NodeSlot, per_node: &Resources) {
        let n = slot.node.0 as usize;
        let f = &mut self.free[n];
        f.gpu_mask |= slot.gpu_mask;
        f.cpu_millis += per_node.cpu_millis;
        f.memory_mib += per_node.memory_mib;
        let still_there = match self.allocations.get(&id) {
            Some(Allocation::Gang { slots, spares, .. }) => {
                slots.iter().chain(spares).any(|s| s.node == slot.node)
            }
            _ => false,
        };
        if !still_there {
            self.node_work[n].retain(|w| *w != id);
        }
        if self.node_domain[n] != NO_DOMAIN {
            self.reindex_domain(self.node_domain[n]);
        }
    }

    /// Puts back an allocation exactly as it was (after a tentative release). Fails, changing
    /// nothing, if the id is live or any of its resources is no longer free.
    pub fn reinstate(&mut self, id: WorkloadId, alloc: Allocation) -> Result<(), EngineError> {
        self.ensure_new(id)?;
        let busy = |what: String| EngineError::BadRelease {
            id,
            reason: format!("cannot reinstate: {what} is no longer free"),
        };
        match &alloc {
            Allocation::Gang {
                request,
                slots,
                spares,
                per_node,
                ..
            } => {
                // What each node must still have free, summed over the slots on it.
                let mut need: FxHashMap<NodeId, Free> = FxHashMap::default();
                for (s, ask) in slots.iter().chain(spares).zip(slot_asks(request, per_node)) {
                    let e = need.entry(s.node).or_insert(Free {
                        gpu_mask: 0,
                        cpu_millis: 0,
                        memory_mib: 0,
                    });
                    if request.is_share() {
                        // A share needs its device free or partly used with room for it.
                        let device = s.gpu_mask.trailing_zeros() as u8;
                        if s.gpu_mask.count_ones() != 1
                            || self.device_room(s.node.0, device) < request.gpu_milli
                        {
                            return Err(busy(self.fleet.node(s.node).name.to_string()));
                        }
                    } else if e.gpu_mask & s.gpu_mask != 0 {
                        return Err(busy(self.fleet.node(s.node).name.to_string()));
                    } else {
                        e.gpu_mask |= s.gpu_mask;
                    }
                    e.cpu_millis = e.cpu_millis.saturating_add(ask.cpu_millis);
                    e.memory_mib = e.memory_mib.saturating_add(ask.memory_mib);
                }
                for (node, want) in &need {
                    let f = &self.free[node.0 as usize];
                    if f.gpu_mask & want.gpu_mask != want.gpu_mask
                        || f.cpu_millis < want.cpu_millis
                        || f.memory_mib < want.memory_mib
                    {
                        return Err(busy(self.fleet.node(*node).name.to_string()));
                    }
                }
                let all: Vec<NodeSlot> = slots.iter().chain(spares).copied().collect();
                self.charge_slots(id, &all, request, per_node, true);
            }
            Allocation::Sandboxes {
                request,
                runs,
                live,
                ..
            } => {
                let need: Vec<(NodeId, u32)> = runs
                    .iter()
                    .map(|r| (r.node, count_live(live, r.first, r.count)))
                    .collect();
                for (node, n) in &need {
                    let f = &self.free[node.0 as usize];
                    if f.cpu_millis < n * request.cpu_millis
                        || f.memory_mib < n * request.memory_mib
                    {
                        return Err(busy(self.fleet.node(*node).name.to_string()));
                    }
                }
                for (node, n) in need {
                    let f = &mut self.free[node.0 as usize];
                    f.cpu_millis -= n * request.cpu_millis;
                    f.memory_mib -= n * request.memory_mib;
                    if n > 0 && !self.node_work[node.0 as usize].contains(&id) {
                        self.node_work[node.0 as usize].push(id);
                    }
                    if let Some(i) = self.host_index(node.0) {
                        self.refresh_host_room(i);
                    }
                }
            }
        }
        self.allocations.insert(id, alloc);
        Ok(())
    }

    /// Recomputes a domain's counters from its nodes (does not touch the indexes).
    pub(super) fn recount_domain(&mut self, d: u32) {
        let ds = &self.domains[d as usize];
        let full = mask_of(ds.capacity.gpus);
        let (mut free_gpus, mut whole, mut open) = (0u32, 0u32, 0u32);
        for n in ds.first_node..ds.end_node {
            if !self.open(n) {
                continue;
            }
            open += 1;
            let f = &self.free[n as usize];
            free_gpus += f.gpus();
            // Wholly free: no work at all (CPU work may sit beside free devices).
            whole += u32::from(
                f.gpu_mask == full
                    && f.cpu_millis == ds.capacity.cpu_millis
                    && f.memory_mib == ds.capacity.memory_mib,
            );
        }
        let ds = &mut self.domains[d as usize];
        ds.free_gpus = free_gpus;
        ds.whole_free = whole;
        ds.open_nodes = open;
    }

    /// Brings a domain's counters and its index entries up to date.
    pub(crate) fn reindex_domain(&mut self, d: u32) {
        self.recount_domain(d);
        let ds = &mut self.domains[d as usize];
        let m = ds.model.index();
        if ds.indexed_free_gpus != ds.free_gpus {
            self.open_free_gpus[m] =
                self.open_free_gpus[m] + u64::from(ds.free_gpus) - u64::from(ds.indexed_free_gpus);
            let i = index_of(ds.model, ds.tier);
            self.by_free_gpus[i].remove(&(ds.indexed_free_gpus, d));
            self.by_free_gpus[i].insert((ds.free_gpus, d));
            ds.indexed_free_gpus = ds.free_gpus;
        }
        if ds.indexed_whole_free != ds.whole_free {
            let i = index_of(ds.model, ds.tier);
            self.by_whole_free[i].remove(&(ds.indexed_whole_free, d));
            self.by_whole_free[i].insert((ds.whole_free, d));
            ds.indexed_whole_free = ds.whole_free;
        }
    }

    /// Updates the "has room" bit of `cpu_hosts[i]`.
    pub(crate) fn refresh_host_room(&mut self, i: usize) {
        let node = self.cpu_hosts[i] as usize;
        let f = &self.free[node];
        let room =
            self.fleet.nodes()[node].state.schedulable() && f.cpu_millis > 0 && f.memory_mib > 0;
        let (word, bit) = (i / 64, i % 64);
        if room {
            self.host_room[word] |= 1 << bit;
        } else {
            self.host_room[word] &= !(1 << bit);
        }
    }

    /// Index of a node in `cpu_hosts`, if it is a sandbox host.
    pub(crate) fn host_index(&self, node: u32) -> Option<usize> {
        self.cpu_hosts.binary_search(&node).ok()
    }
}
