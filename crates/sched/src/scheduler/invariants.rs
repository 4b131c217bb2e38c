//! The queue's invariants, checked from scratch (tests call it after every event).

use super::*;

impl Scheduler {
    /// Checks the queue's invariants from scratch; returns the first violation.
    ///
    /// The engine's own invariants; every running job holds exactly its gang and every other
    /// job holds nothing (so no two gangs can each hold part of what the other needs); tenant
    /// usage is the sum of their running jobs; work admitted on a tenant's own quota fits it;
    /// every hold on a node belongs to the reservation or to a preemptor waiting on victims.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.engine.check_invariants()?;
        self.ledger.check(&self.engine)?;
        if !self.mix.same_as(&self.jobs) {
            return Err("the mix of single-node shapes disagrees with the jobs".into());
        }
        for id in self.running.iter().chain(self.batches.keys()) {
            let want = allocation_units(self.engine.fleet(), self.engine.allocation(*id));
            let have = self
                .ledger
                .held(*id)
                .map(|h| h.1.clone())
                .unwrap_or_default();
            if !want.is_empty() && have.is_empty() {
                return Err(format!("{id} holds {want:?} but is not charged for it"));
            }
        }
        let mut ends = vec![BTreeSet::new(); self.running_ends.len()];
        for j in self.jobs.values() {
            if let Some((m, key)) = Self::end_key(j) {
                ends[m].insert(key);
            }
        }
        if ends != self.running_ends {
            return Err("the index of running jobs' ends is out of date".into());
        }
        if self.ordered.len() != self.pending.len() {
            return Err(format!(
                "{} jobs in queue order but {} pending",
                self.ordered.len(),
                self.pending.len()
            ));
        }
        let mut ids: Vec<&WorkloadId> = self.jobs.keys().collect();
        ids.sort_unstable();
        let mut usage = vec![ResourceVec::default(); self.tenants.len()];
        let mut own = vec![ResourceVec::default(); self.tenants.len()];
        let mut holds = vec![0u32; self.engine.fleet().nodes().len()];
        for id in ids {
            let j = &self.jobs[id];
            let alloc = self.engine.allocation(*id);
            let running = j.running_since().is_some();
            if running != self.running.contains(id)
                || running != self.running_by_class[j.spec.priority as usize].contains(id)
            {
                return Err(format!(
                    "{id}: running sets disagree with state {:?}",
                    j.state
                ));
            }
            let queued = self.pending.get(&(j.seq, *id)).is_some_and(|k| {
                *k == self.queue_key(j)
                    && self.ordered.get(k).is_some_and(|b| {
                        b.no_victims_at == j.no_victims_at
                            && b.shape == shape_of(&j.spec)
                            && b.nodes == j.spec.gang.nodes
                    })
            });
            if self.holding.contains(id) == j.hold.is_empty() {
                return Err(format!("{id}: holding set disagrees with its hold"));
            }
            if (j.state == JobState::Pending) != queued {
                return Err(format!(
                    "{id}: pending set disagrees with state {:?}",
                    j.state
                ));
            }
            match (running, alloc) {
                (true, Some(Allocation::Gang { request, .. })) if *request == j.spec.gang => {}
                (false, None) => {}
                _ => {
                    return Err(format!(
                        "{id}: state {:?} but allocation {:?}",
                        j.state,
                        alloc.is_some()
                    ))
                }
            }
            if running {
                let t = j.spec.tenant.0 as usize;
                let u = ResourceVec::of_gang(&j.spec.gang);
                usage[t] = usage[t].plus(&u);
                if !j.borrowed {
                    own[t] = own[t].plus(&u);
                }
            }
            if !j.hold.is_empty() && j.state != JobState::Pending {
                return Err(format!("{id}: holds nodes but is not pending"));
            }
            for n in &j.hold {
                holds[n.0 as usize] += 1;
            }
            for v in &j.waiting_for {
                let victim_ok = self.jobs.get(v).is_some_and(|x| match x.state {
                    JobState::Preempting { by, .. } => by == *id,
                    _ => true, // already stopped: the preemptor starts at its next turn
                });
                if !victim_ok {
                    return Err(format!("{id}: waits for {v} which is not preempted for it"));
                }
            }
        }
        for (i, t) in self.tenants.iter().enumerate() {
            if t.usage != usage[i] {
                return Err(format!(
                    "tenant {}: usage {:?} but jobs hold {:?}",
                    t.spec.name, t.usage, usage[i]
                ));
            }
            if !own[i].fits_in(&t.quota) {
                return Err(format!(
                    "tenant {}: own-quota work exceeds its quota",
                    t.spec.name
                ));
            }
        }
        self.check_services()?;
        self.check_batches()?;
        self.check_tenant_loads()?;
        if let Some(r) = &self.reservation {
            for n in &r.nodes {
                holds[n.0 as usize] += 1;
            }
        }
        for (i, h) in holds.iter().enumerate() {
            let actual = u32::from(self.engine.is_held(NodeId(i as u32)));
            if actual != u32::from(*h > 0) {
                return Err(format!("node {i}: held {actual} but {h} holders"));
            }
        }
        Ok(())
    }

    /// Each tenant's load is what its live jobs and batches hold, counted afresh.
    fn check_tenant_loads(&self) -> Result<(), String> {
        let mut loads = vec![super::TenantLoad::default(); self.tenants.len()];
        for j in self.jobs.values() {
            if let Some(l) = loads.get_mut(j.spec.tenant.0 as usize) {
                l.live_jobs += 1;
            }
        }
        for (id, b) in &self.batches {
            let Some(l) = b.tenant.and_then(|t| loads.get_mut(t.0 as usize)) else {
                continue;
            };
            let Some(Allocation::Sandboxes {
                live_count,
                request,
                ..
            }) = self.engine.allocation(*id)
            else {
                continue;
            };
            let live = u64::from(*live_count);
            l.batches += u64::from(live > 0);
            l.sandboxes += live;
            l.sandbox_cpu_millis += live * u64::from(request.cpu_millis);
            l.sandbox_memory_mib += live * u64::from(request.memory_mib);
        }
        for (t, counted) in self.tenants.iter().zip(loads) {
            if t.load != counted {
                return Err(format!(
                    "tenant {}: load {:?} but its work holds {counted:?}",
                    t.spec.name, t.load
                ));
            }
        }
        Ok(())
    }
}
