//! The sandbox fast path: batches of up to a million identical CPU sandboxes on CPU hosts.
//!
//! No per-sandbox topology search: a next-fit scan over a bitmap of hosts that have room,
//! taking as many sandboxes per host as fit in one division. A batch costs one step per host
//! it lands on, not per sandbox; it is recorded as runs of consecutive sandbox indices per host
//! plus one live bit per sandbox, so that single sandboxes can end on their own.

use crate::engine::{count_live, Allocation, Engine, EngineError, Time, Unplaceable};
use model::{NodeId, SandboxRequest, WorkloadId};
use serde::{Deserialize, Serialize};

/// Sandboxes `first .. first + count` of a batch run on `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRun {
    /// Host.
    pub node: NodeId,
    /// Index of the first sandbox of the run within its batch.
    pub first: u32,
    /// Number of sandboxes in the run.
    pub count: u32,
}

/// Where a batch went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SandboxPlacement {
    /// Runs of sandboxes per host, in sandbox-index order.
    pub runs: Vec<SandboxRun>,
    /// Position in the host list where the next batch should start looking.
    #[serde(skip)]
    next_cursor: usize,
}

impl SandboxPlacement {
    /// Number of hosts used.
    pub fn hosts(&self) -> usize {
        self.runs.len()
    }
}

impl Engine {
    fn check_sandbox_request(request: &SandboxRequest) -> Result<(), Unplaceable> {
        if request.count == 0 || request.count > SandboxRequest::MAX_BATCH {
            return Err(Unplaceable::new(format!(
                "count {} is outside 1..={}",
                request.count,
                SandboxRequest::MAX_BATCH
            )));
        }
        if request.cpu_millis == 0 || request.memory_mib == 0 {
            return Err(Unplaceable::new(
                "a sandbox needs at least 1 CPU millicore and 1 MiB of memory",
            ));
        }
        Ok(())
    }

    /// How many sandboxes of `request` fit on host node `n` now.
    fn host_fit(&self, n: u32, request: &SandboxRequest) -> u32 {
        let f = &self.free[n as usize];
        (f.cpu_millis / request.cpu_millis).min(f.memory_mib / request.memory_mib)
    }

    /// Decides where a batch would go, without changing anything.
    pub fn plan_sandboxes(
        &self,
        request: &SandboxRequest,
    ) -> Result<SandboxPlacement, Unplaceable> {
        Self::check_sandbox_request(request)?;
        let hosts = self.cpu_hosts.len();
        let mut runs = Vec::new();
        let mut left = request.count;
        let mut next_cursor = self.host_cursor;
        let start = self.host_cursor.min(hosts);
        // Two sweeps over the room bitmap: from the cursor to the end, then from 0 to it.
        'sweep: for (from, to) in [(start, hosts), (0, start)] {
            let mut word = from / 64;
            while word * 64 < to {
                let mut bits = self.host_room[word];
                if word == from / 64 {
                    bits &= u64::MAX << (from % 64);
                }
                while bits != 0 {
                    let i = word * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if i >= to {
                        break;
                    }
                    let node = self.cpu_hosts[i];
                    let take = self.host_fit(node, request).min(left);
                    if take == 0 {
                        continue;
                    }
                    runs.push(SandboxRun {
                        node: NodeId(node),
                        first: request.count - left,
                        count: take,
                    });
                    left -= take;
                    if left == 0 {
                        next_cursor = i;
                        break 'sweep;
                    }
                }
                word += 1;
            }
        }
        if left > 0 {
            return Err(self.explain_sandboxes(request));
        }
        Ok(SandboxPlacement { runs, next_cursor })
    }

    fn explain_sandboxes(&self, request: &SandboxRequest) -> Unplaceable {
        let (mut fit, mut by_cpu, mut by_mem, mut out) = (0u64, 0u64, 0u64, 0u64);
        for &h in &self.cpu_hosts {
            if !self.open(h) {
                out += 1;
                continue;
            }
            let f = &self.free[h as usize];
            fit += u64::from(self.host_fit(h, request));
            by_cpu += u64::from(f.cpu_millis / request.cpu_millis);
            by_mem += u64::from(f.memory_mib / request.memory_mib);
        }
        let mut u = Unplaceable::new(format!(
            "needs {} sandboxes of {} CPU millicores and {} MiB; ready CPU hosts have room for {fit}",
            request.count, request.cpu_millis, request.memory_mib
        ));
        u.details.push(format!(
            "free CPU alone would allow {by_cpu}, free memory alone {by_mem}"
        ));
        if out > 0 {
            u.details.push(format!(
                "{out} CPU hosts are cordoned, draining, down or held"
            ));
        }
        if self.cpu_hosts.is_empty() {
            u.details.push("the fleet has no CPU-only hosts".into());
        }
        u
    }

    pub(crate) fn commit_sandboxes(
        &mut self,
        id: WorkloadId,
        request: &SandboxRequest,
        placement: &SandboxPlacement,
        now: Time,
    ) {
        for run in &placement.runs {
            let n = run.node.0 as usize;
            let f = &mut self.free[n];
            f.cpu_millis -= run.count * request.cpu_millis;
            f.memory_mib -= run.count * request.memory_mib;
            self.node_work[n].push(id);
            if let Some(i) = self.host_index(run.node.0) {
                self.refresh_host_room(i);
            }
        }
        self.host_cursor = placement.next_cursor;
        let words = (request.count as usize).div_ceil(64);
        let mut live = vec![u64::MAX; words];
        let tail = request.count as usize % 64;
        if tail != 0 {
            live[words - 1] = (1u64 << tail) - 1;
        }
        self.allocations.insert(
            id,
            Allocation::Sandboxes {
                request: request.clone(),
                runs: placement.runs.clone(),
                live,
                live_count: request.count,
                placed_at: now,
            },
        );
    }

    /// Ends single sandboxes of a batch (by index); the batch goes when its last one does.
    /// Returns how many were released. Unknown or already-ended indices are an error and
    /// change nothing.
    pub fn release_sandboxes(
        &mut self,
        id: WorkloadId,
        indices: &[u32],
    ) -> Result<u32, EngineError> {
        let Some(Allocation::Sandboxes {
            request,
            runs,
            live,
            ..
        }) = self.allocations.get(&id)
        else {
            return Err(match self.allocations.get(&id) {
                None => EngineError::UnknownWorkload(id),
                Some(_) => EngineError::BadRelease {
                    id,
                    reason: "not a sandbox batch".into(),
                },
            });
        };
        let mut seen = live.clone();
        for &i in indices {
            if i >= request.count || seen[i as usize / 64] >> (i % 64) & 1 == 0 {
                return Err(EngineError::BadRelease {
                    id,
                    reason: format!("sandbox {i} is not live"),
                });
            }
            seen[i as usize / 64] &= !(1 << (i % 64));
        }
        let request = request.clone();
        let runs = runs.clone();
        let mut run_of: Vec<usize> = indices
            .iter()
            .map(|&i| runs.partition_point(|run| run.first <= i) - 1)
            .collect();
        run_of.sort_unstable();
        let mut per_run: Vec<(usize, u32)> = Vec::new();
        for r in run_of {
            match per_run.last_mut() {
                Some((k, c)) if *k == r => *c += 1,
                _ => per_run.push((r, 1)),
            }
        }
        let mut emptied = Vec::new();
        for (r, c) in per_run {
            let run = runs[r];
            self.return_sandboxes(run.node, c, &request);
            if count_live(&seen, run.first, run.count) == 0 {
                emptied.push(run.node);
            }
        }
        for node in emptied {
            // A batch may have several runs on one host (after a relocation).
            let still = runs
                .iter()
                .any(|r| r.node == node && count_live(&seen, r.first, r.count) > 0);
            if !still {
                self.node_work[node.0 as usize].retain(|w| *w != id);
            }
        }
        let released = indices.len() as u32;
        if let Some(Allocation::Sandboxes {
            live, live_count, ..
        }) = self.allocations.get_mut(&id)
        {
            *live = seen;
            *live_count -= released;
            if *live_count == 0 {
                self.allocations.remove(&id);
            }
        }
        Ok(released)
    }
}

impl Engine {
    /// Moves a batch's live sandboxes off `from` (e.g. a failed host) onto other hosts with
    /// room, keeping their indices. All or nothing: when they do not all fit, nothing changes.
    /// Returns how many moved.
    pub fn relocate_sandboxes(&mut self, id: WorkloadId, from: NodeId) -> Result<u32, EngineError> {
        let Some(Allocation::Sandboxes {
            request,
            runs,
            live,
            ..
        }) = self.allocations.get(&id)
        else {
            return Err(EngineError::UnknownWorkload(id));
        };
        let request = request.clone();
        let moving: Vec<SandboxRun> = runs.iter().copied().filter(|r| r.node == from).collect();
        // Live indices with the moving run each belongs to (new runs never cross runs, so
        // that runs keep disjoint index ranges).
        let live_idx: Vec<(u32, usize)> = moving
            .iter()
            .enumerate()
            .flat_map(|(k, r)| (r.first..r.first + r.count).map(move |i| (i, k)))
            .filter(|(i, _)| live[*i as usize / 64] >> (i % 64) & 1 == 1)
            .collect();
        if live_idx.is_empty() {
            return Ok(0);
        }
        let count = live_idx.len() as u32;
        // Plan as a batch of the moving count, never back onto `from`.
        let ask = SandboxRequest {
            count,
            cpu_millis: request.cpu_millis,
            memory_mib: request.memory_mib,
        };
        let blocked = self.open(from.0);
        if blocked {
            self.hold(&[from]);
        }
        let plan = self.plan_sandboxes(&ask);
        if blocked {
            self.unhold(&[from]);
        }
        let plan = plan?;
        // New runs cover the moved live indices in order; each new host gets a contiguous
        // index range holding exactly the live sandboxes it takes.
        let mut new_runs: Vec<SandboxRun> = Vec::new();
        let mut k = 0usize;
        for p in &plan.runs {
            let take = &live_idx[k..k + p.count as usize];
            for group in take.chunk_by(|a, b| a.1 == b.1) {
                let (start, end) = (group[0].0, group[group.len() - 1].0);
                new_runs.push(SandboxRun {
                    node: p.node,
                    first: start,
                    count: end - start + 1,
                });
            }
            k += p.count as usize;
        }
        // Indices of the old runs that are not covered by a new run (dead ones in gaps
        // between live ones are covered; dead ones before the first or after the last are not).
        let mut gaps = Vec::new();
        for r in &moving {
            let mut i = r.first;
            while i < r.first + r.count {
                if !new_runs
                    .iter()
                    .any(|n| n.first <= i && i < n.first + n.count)
                {
                    gaps.push(i);
                }
                i += 1;
            }
        }
        // Give back what the failed host held, charge the new hosts.
        self.return_sandboxes(from, count, &request);
        self.node_work[from.0 as usize].retain(|w| *w != id);
        for p in &plan.runs {
            let n = p.node.0 as usize;
            let f = &mut self.free[n];
            f.cpu_millis -= p.count * request.cpu_millis;
            f.memory_mib -= p.count * request.memory_mib;
            if !self.node_work[n].contains(&id) {
                self.node_work[n].push(id);
            }
            if let Some(i) = self.host_index(p.node.0) {
                self.refresh_host_room(i);
            }
        }
        if let Some(Allocation::Sandboxes { runs, .. }) = self.allocations.get_mut(&id) {
            runs.retain(|r| r.node != from);
            runs.extend(new_runs);
            // Dead indices outside the new runs keep a zero-cost run on `from` so that every
            // index stays covered (release walks runs by index).
            for g in gaps {
                runs.push(SandboxRun {
                    node: from,
                    first: g,
                    count: 1,
                });
            }
            runs.sort_by_key(|r| r.first);
        }
        Ok(count)
    }
}
