//! Sandbox batches on the queue: placed at once through the engine's fast path (no queueing:
//! an agent platform wants an answer in milliseconds and retries itself), and, when a host
//! fails, moved to other hosts up to a bounded number of times per batch.
//!
//! Not yet charged to tenant quotas (see the README's list of what is not built).

use super::{Decision, SchedError, Scheduler};
use crate::engine::{Allocation, EngineError, Time};
use crate::sandbox::SandboxPlacement;
use model::{NodeId, NodeState, ResourceVec, SandboxRequest, TenantId, WorkloadId};
use serde::{Deserialize, Serialize};

/// A live batch and its retry budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Batch {
    pub(crate) max_retries: u32,
    pub(crate) retries: u32,
    /// Whose it is (its spend is charged to it).
    #[serde(default)]
    pub(crate) tenant: Option<TenantId>,
    /// Live sandboxes counted in the tenant's load (see [`Scheduler::settle_batch`]).
    #[serde(default)]
    pub(crate) charged: u64,
    /// Each sandbox's size, as counted.
    #[serde(default)]
    pub(crate) size: (u32, u32),
}

impl Scheduler {
    /// Places a batch of sandboxes now, or says why not. `max_retries` bounds how many host
    /// failures the batch survives by moving its sandboxes; `tenant`, when known, pays for it.
    pub fn place_sandboxes(
        &mut self,
        id: WorkloadId,
        tenant: Option<TenantId>,
        request: &SandboxRequest,
        max_retries: u32,
        now: Time,
    ) -> Result<SandboxPlacement, SchedError> {
        if let Some(t) = tenant.filter(|t| t.0 as usize >= self.tenants.len()) {
            return Err(SchedError::Invalid {
                field: "tenant",
                reason: format!("no tenant with id {}", t.0),
            });
        }
        request.validate().map_err(|e| SchedError::Invalid {
            field: e.field,
            reason: e.reason,
        })?;
        if let Some(t) = tenant {
            self.check_sandbox_quota(t, request)?;
        }
        if self.jobs.contains_key(&id)
            || self.batches.contains_key(&id)
            || self.ended.contains_key(&id)
        {
            return Err(SchedError::DuplicateJob(id));
        }
        let placement = self
            .engine
            .place_sandboxes(id, request, now)
            .map_err(|e| match e {
                EngineError::Unplaceable(u) => SchedError::NoRoom {
                    field: "count",
                    reason: u.reason,
                },
                other => SchedError::Invalid {
                    field: "id",
                    reason: other.to_string(),
                },
            })?;
        self.batches.insert(
            id,
            Batch {
                max_retries,
                retries: 0,
                tenant,
                charged: 0,
                size: (request.cpu_millis, request.memory_mib),
            },
        );
        self.settle_batch(id);
        self.charge(id, now);
        self.touch(id);
        Ok(placement)
    }

    /// A batch must fit the tenant's own quota (CPU and memory) with what its running jobs
    /// and live sandboxes already hold.
    fn check_sandbox_quota(&self, t: TenantId, request: &SandboxRequest) -> Result<(), SchedError> {
        let Some(ts) = self.tenants.get(t.0 as usize) else {
            return Ok(());
        };
        let count = u64::from(request.count);
        let ask = ResourceVec {
            cpu_millis: count * u64::from(request.cpu_millis),
            memory_mib: count * u64::from(request.memory_mib),
            ..ResourceVec::default()
        };
        let after = ts.usage.plus(&ts.load.sandbox_usage()).plus(&ask);
        match after.first_excess(&ts.quota) {
            None => Ok(()),
            Some((what, want, have)) => Err(SchedError::NoRoom {
                field: "count",
                reason: format!(
                    "tenant '{}' would hold {} {what} with this batch; its quota is {}",
                    ts.spec.name,
                    what.amount(want),
                    what.amount(have)
                ),
            }),
        }
    }

    /// Brings the tenant's load up to date with the batch's live sandboxes; call after any
    /// change to them.
    pub(super) fn settle_batch(&mut self, id: WorkloadId) {
        let live = match self.engine.allocation(id) {
            Some(Allocation::Sandboxes { live_count, .. }) => u64::from(*live_count),
            _ => 0,
        };
        let Some(b) = self.batches.get_mut(&id) else {
            return;
        };
        let (before, tenant, size) = (b.charged, b.tenant, b.size);
        b.charged = live;
        self.add_sandbox_load(tenant, size, before, live);
    }

    /// Forgets a batch, taking its sandboxes out of its tenant's load.
    pub(super) fn drop_batch(&mut self, id: WorkloadId) -> Option<Batch> {
        let b = self.batches.remove(&id)?;
        self.add_sandbox_load(b.tenant, b.size, b.charged, 0);
        Some(b)
    }

    fn add_sandbox_load(&mut self, tenant: Option<TenantId>, size: (u32, u32), from: u64, to: u64) {
        let Some(t) = tenant.and_then(|t| self.tenants.get_mut(t.0 as usize)) else {
            return;
        };
        let load = &mut t.load;
        let (cpu, mem) = (u64::from(size.0), u64::from(size.1));
        load.sandboxes = load.sandboxes - from + to;
        load.sandbox_cpu_millis = load.sandbox_cpu_millis - from * cpu + to * cpu;
        load.sandbox_memory_mib = load.sandbox_memory_mib - from * mem + to * mem;
        load.batches = load.batches - u64::from(from > 0) + u64::from(to > 0);
    }

    /// Ends single sandboxes of a batch; the batch goes when its last sandbox does.
    pub fn end_sandboxes(
        &mut self,
        id: WorkloadId,
        indices: &[u32],
        now: Time,
    ) -> Result<u32, SchedError> {
        let given_back = self.units_of(id, indices);
        let n = self
            .engine
            .release_sandboxes(id, indices)
            .map_err(|e| SchedError::Invalid {
                field: "indices",
                reason: e.to_string(),
            })?;
        self.touch(id);
        self.settle_batch(id);
        for (pool, units) in given_back {
            self.ledger.give_back(id, pool, units, now);
        }
        if self.engine.allocation(id).is_none() {
            self.drop_batch(id);
            self.ledger.release(id, now);
        }
        Ok(n)
    }

    /// Ends a whole batch.
    pub fn end_batch(&mut self, id: WorkloadId, now: Time) -> Result<(), SchedError> {
        self.drop_batch(id).ok_or(SchedError::UnknownJob(id))?;
        self.touch(id);
        let _ = self.engine.release(id);
        self.ledger.release(id, now);
        Ok(())
    }

    /// After hosts went down: moves each affected batch's sandboxes off them while its retry
    /// budget lasts; otherwise (or when they no longer fit) those sandboxes end.
    pub(crate) fn recover_batch(&mut self, id: WorkloadId, now: Time, out: &mut Vec<Decision>) {
        self.recover_batch_hosts(id, now, out);
        self.settle_batch(id);
        self.charge(id, now);
        if self.engine.allocation(id).is_none() {
            self.ledger.release(id, now);
        }
    }

    /// Units per pool of the live sandboxes among `indices` (what ending them gives back);
    /// indices that are not live are left to the engine to refuse.
    fn units_of(&self, id: WorkloadId, indices: &[u32]) -> Vec<(model::PoolId, u64)> {
        let Some(Allocation::Sandboxes {
            request,
            runs,
            live,
            ..
        }) = self.engine.allocation(id)
        else {
            return Vec::new();
        };
        let mut out: Vec<(model::PoolId, u64)> = Vec::new();
        for &i in indices {
            if i >= request.count || live[i as usize / 64] >> (i % 64) & 1 == 0 {
                continue;
            }
            let r = runs.partition_point(|run| run.first <= i);
            let Some(run) = r.checked_sub(1).and_then(|r| runs.get(r)) else {
                continue;
            };
            let pool = self.engine.fleet().node(run.node).pool;
            match out.iter_mut().find(|e| e.0 == pool) {
                Some(e) => e.1 += u64::from(request.cpu_millis),
                None => out.push((pool, u64::from(request.cpu_millis))),
            }
        }
        out
    }

    fn recover_batch_hosts(&mut self, id: WorkloadId, now: Time, out: &mut Vec<Decision>) {
        let Some(Allocation::Sandboxes { runs, .. }) = self.engine.allocation(id) else {
            return;
        };
        let mut down: Vec<NodeId> = runs
            .iter()
            .map(|r| r.node)
            .filter(|n| self.engine.fleet().node(*n).state == NodeState::Down)
            .collect();
        down.sort_unstable();
        down.dedup();
        for from in down {
            let Some(batch) = self.batches.get(&id).cloned() else {
                return;
            };
            if batch.retries < batch.max_retries {
                if let Ok(moved) = self.engine.relocate_sandboxes(id, from) {
                    if moved > 0 {
                        if let Some(b) = self.batches.get_mut(&id) {
                            b.retries += 1;
                        }
                        out.push(Decision::SandboxesMoved {
                            batch: id,
                            from,
                            count: moved,
                        });
                    }
                    continue;
                }
            }
            // Out of retries or of room: the sandboxes on that host end.
            let Some(Allocation::Sandboxes { runs, live, .. }) = self.engine.allocation(id) else {
                return;
            };
            let lost: Vec<u32> = runs
                .iter()
                .filter(|r| r.node == from)
                .flat_map(|r| r.first..r.first + r.count)
                .filter(|i| live[*i as usize / 64] >> (i % 64) & 1 == 1)
                .collect();
            if lost.is_empty() {
                continue;
            }
            let count = lost.len() as u32;
            let _ = self.end_sandboxes(id, &lost, now);
            out.push(Decision::SandboxesLost {
                batch: id,
                from,
                count,
            });
        }
    }
}

impl Scheduler {
    /// Every live batch has an engine allocation and the other way round.
    pub(crate) fn check_batches(&self) -> Result<(), String> {
        if self.engine.live_workloads() != self.running.len() + self.batches.len() {
            return Err(format!(
                "engine holds {} workloads, queue knows {} running jobs and {} batches",
                self.engine.live_workloads(),
                self.running.len(),
                self.batches.len()
            ));
        }
        for id in self.batches.keys() {
            if !matches!(
                self.engine.allocation(*id),
                Some(Allocation::Sandboxes { .. })
            ) {
                return Err(format!("batch {id} has no sandboxes placed"));
            }
        }
        Ok(())
    }
}
