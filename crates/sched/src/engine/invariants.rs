//! The engine's invariants, checked from scratch (tests call it after every operation): free
//! = capacity − what allocations hold on every node, shares summed per device, node →
//! workloads, per-domain counters and their indexes, the sandbox-host bitmap.

use super::*;

impl Engine {
    /// Checks every internal invariant from scratch; returns the first violation.
    ///
    /// Used by tests after every operation: free = capacity − what allocations hold, on
    /// every node; per-domain counters and indexes match the nodes; no over-commit.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.deferred.is_some() {
            return Err("a batch of deferred domain updates was left open".into());
        }
        let nodes = self.fleet.nodes();
        let mut used_gpu = vec![0u32; nodes.len()];
        let mut used_cpu = vec![0u64; nodes.len()];
        let mut used_mem = vec![0u64; nodes.len()];
        // (node, device) → thousandths taken by shares.
        let mut share_sums: std::collections::BTreeMap<(u32, u8), u32> = Default::default();
        let mut ids: Vec<_> = self.allocations.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            match &self.allocations[&id] {
                Allocation::Gang {
                    request,
                    slots,
                    spares,
                    per_node,
                    ..
                } => {
                    if spares.len() > request.spares as usize {
                        return Err(format!(
                            "{id}: {} spares for {} asked",
                            spares.len(),
                            request.spares
                        ));
                    }
                    if slots.len() != request.nodes as usize {
                        return Err(format!(
                            "{id}: {} slots for {} nodes",
                            slots.len(),
                            request.nodes
                        ));
                    }
                    for (s, ask) in slots.iter().chain(spares).zip(slot_asks(request, per_node)) {
                        let n = s.node.0 as usize;
                        if s.gpu_mask.count_ones() != u32::from(ask.gpus) {
                            return Err(format!("{id}: wrong device count on {}", nodes[n].name));
                        }
                        if nodes[n].capacity.gpu_model != Some(request.gpu) {
                            return Err(format!("{id}: wrong GPU model on {}", nodes[n].name));
                        }
                        if request.is_share() {
                            let key = (n as u32, s.gpu_mask.trailing_zeros() as u8);
                            *share_sums.entry(key).or_default() += u32::from(request.gpu_milli);
                        } else if used_gpu[n] & s.gpu_mask != 0 {
                            return Err(format!("{id}: device on {} given twice", nodes[n].name));
                        }
                        if !request.is_share() {
                            used_gpu[n] |= s.gpu_mask;
                        }
                        used_cpu[n] += u64::from(ask.cpu_millis);
                        used_mem[n] += u64::from(ask.memory_mib);
                    }
                }
                Allocation::Sandboxes {
                    request,
                    runs,
                    live,
                    live_count,
                    ..
                } => {
                    // Runs tile the batch's index range: sorted, disjoint, no holes.
                    let mut expect_first = 0;
                    for r in runs {
                        if r.first != expect_first || r.count == 0 {
                            return Err(format!("{id}: runs do not tile 0..{}", request.count));
                        }
                        expect_first = r.first + r.count;
                    }
                    if expect_first != request.count {
                        return Err(format!(
                            "{id}: runs cover {expect_first} of {}",
                            request.count
                        ));
                    }
                    let mut total = 0;
                    for r in runs {
                        let alive = count_live(live, r.first, r.count);
                        total += alive;
                        let n = r.node.0 as usize;
                        used_cpu[n] += u64::from(alive) * u64::from(request.cpu_millis);
                        used_mem[n] += u64::from(alive) * u64::from(request.memory_mib);
                    }
                    if total != *live_count {
                        return Err(format!(
                            "{id}: live count {live_count} but {total} live bits"
                        ));
                    }
                }
            }
        }
        self.check_shares(&share_sums, &mut used_gpu)?;
        // node → workloads agrees with what the allocations hold.
        let mut expect_work: Vec<Vec<WorkloadId>> = vec![Vec::new(); nodes.len()];
        for (id, alloc) in &self.allocations {
            match alloc {
                Allocation::Gang { slots, spares, .. } => {
                    for s in slots.iter().chain(spares) {
                        expect_work[s.node.0 as usize].push(*id);
                    }
                }
                Allocation::Sandboxes { runs, live, .. } => {
                    for r in runs {
                        if count_live(live, r.first, r.count) > 0 {
                            expect_work[r.node.0 as usize].push(*id);
                        }
                    }
                }
            }
        }
        for (i, want) in expect_work.iter_mut().enumerate() {
            want.sort_unstable();
            want.dedup();
            let mut have = self.node_work[i].clone();
            have.sort_unstable();
            if *want != have {
                return Err(format!(
                    "{}: workload list {:?} but allocations say {:?}",
                    nodes[i].name, have, want
                ));
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            let f = &self.free[i];
            let cap = &n.capacity;
            if used_gpu[i] & !mask_of(cap.gpus) != 0 {
                return Err(format!("{}: device beyond capacity", n.name));
            }
            if used_cpu[i] > u64::from(cap.cpu_millis) || used_mem[i] > u64::from(cap.memory_mib) {
                return Err(format!("{}: over-committed", n.name));
            }
            let expect = Free {
                gpu_mask: mask_of(cap.gpus) & !used_gpu[i],
                cpu_millis: cap.cpu_millis - used_cpu[i] as u32,
                memory_mib: cap.memory_mib - used_mem[i] as u32,
            };
            if *f != expect {
                return Err(format!(
                    "{}: free {:?} but allocations leave {:?}",
                    n.name, f, expect
                ));
            }
        }
        let mut check = self.clone();
        for d in 0..self.domains.len() {
            check.recount_domain(d as u32);
            let (a, b) = (&self.domains[d], &check.domains[d]);
            if (a.free_gpus, a.whole_free) != (b.free_gpus, b.whole_free) {
                return Err(format!("domain {d}: stale counters"));
            }
            let i = index_of(a.model, a.tier);
            if !self.by_free_gpus[i].contains(&(a.free_gpus, d as u32))
                || !self.by_whole_free[i].contains(&(a.whole_free, d as u32))
            {
                return Err(format!("domain {d}: index out of date"));
            }
        }
        for (i, _) in self.cpu_hosts.iter().enumerate() {
            let before = self.host_room[i / 64] >> (i % 64) & 1;
            check.refresh_host_room(i);
            if check.host_room[i / 64] >> (i % 64) & 1 != before {
                return Err(format!("host {i}: stale room bit"));
            }
        }
        let mut open_free = vec![0u64; self.open_free_gpus.len()];
        for d in &self.domains {
            open_free[d.model.index()] += u64::from(d.free_gpus);
        }
        if open_free != self.open_free_gpus {
            return Err(format!(
                "free GPUs per model {:?}, domains say {open_free:?}",
                self.open_free_gpus
            ));
        }
        let idx_len: usize = self.by_free_gpus.iter().map(BTreeSet::len).sum();
        if idx_len != self.domains.len() {
            return Err("free-GPU index has stale entries".into());
        }
        Ok(())
    }
}
