//! What each node must run (tasks and sandbox ranges), as agents are told in heartbeat
//! answers (in full, or only its digest when the agent holds it already), and where a job's
//! logs are.

use super::*;

impl ControlPlane {
    /// What a workload's tasks run: a job's own task, or its service's for a replica.
    pub(super) fn task_of(&self, w: WorkloadId) -> Option<&TaskSpec> {
        match w.as_replica() {
            Some((service, _)) => self
                .services
                .get(&ServiceId(service))
                .map(|m| self.replica_task(w, m)),
            None => self.jobs.get(&JobId(w.0)).map(|m| &m.task),
        }
    }

    /// Names the cell, as job views carry it.
    pub fn set_cell(&mut self, cell: &str) {
        self.cell = std::sync::Arc::from(cell);
    }

    /// Seals secret environment values from now on (the server's key, kept outside the
    /// journal).
    pub fn set_secret_key(&mut self, key: std::sync::Arc<SecretKey>) {
        self.secret_key = Some(key);
    }

    /// A task's environment as its node gets it: `env` with the secret values opened.
    fn task_env(&self, task: &TaskSpec) -> BTreeMap<String, String> {
        let mut env = task.env.clone();
        if let Some(sealed) = &task.sealed_env {
            match self.secret_key.as_ref().map(|k| k.open(sealed)) {
                Some(Ok(secrets)) => env.extend(secrets),
                Some(Err(e)) => tracing::error!("a task's secret env: {e}"),
                None => tracing::error!("a task has secret env but the server has no key"),
            }
        }
        env
    }

    /// Whether the node exists and is up (its agent registered and still heartbeats).
    pub fn node_is_up(&self, name: &str) -> Option<bool> {
        let n = self.sched.engine().fleet().node_by_name(name)?;
        Some(self.sched.engine().fleet().node(n).state != NodeState::Down)
    }

    /// A node's name.
    pub fn node_name(&self, n: NodeId) -> Option<String> {
        let fleet = self.sched.engine().fleet();
        ((n.0 as usize) < fleet.nodes().len()).then(|| fleet.node(n).name.to_string())
    }

    /// Names of the nodes that are up.
    pub fn up_nodes(&self) -> Vec<String> {
        self.sched
            .engine()
            .fleet()
            .nodes()
            .iter()
            .filter(|n| n.state != NodeState::Down)
            .map(|n| n.name.to_string())
            .collect()
    }

    /// Every task and sandbox node `name` must run now.
    pub fn assignments(&self, name: &str) -> (Vec<Assignment>, Vec<SandboxAssignment>) {
        let (mut tasks, mut sandboxes) = (Vec::new(), Vec::new());
        let Some(n) = self.sched.engine().fleet().node_by_name(name) else {
            return (tasks, sandboxes);
        };
        self.each_work_on(n, |work| match work {
            NodeWork::Task {
                job,
                spec,
                task,
                rank,
                world,
                gpu_mask,
                stop_by,
                per_node,
                slots,
            } => {
                let replica = job.workload().as_replica();
                // A unit replica's node runs its role, on the port its peers know; only the
                // first node serves.
                let unit = replica
                    .and_then(|(s, _)| self.services.get(&ServiceId(s)))
                    .and_then(|m| self.unit_rank(job, spec.restarts, rank, slots, &m.spec, task));
                let mut env = self.task_env(task);
                let (command, port, serves) = match unit {
                    Some(u) => {
                        env.extend(u.env);
                        (u.command, Some(u.port), rank == 0)
                    }
                    None => (task.command.clone(), None, replica.is_some()),
                };
                let cpu_memory = model::GangRequest::node_asks(&spec.spec.gang)
                    .nth(rank as usize)
                    .filter(|_| spec.spec.gang.is_unit())
                    .map_or((per_node.cpu_millis, per_node.memory_mib), |a| {
                        (a.cpu_millis, a.memory_mib)
                    });
                let node_model = self.sched.engine().fleet().node(n).capacity.gpu_model;
                tasks.push(Assignment {
                    job: job.0,
                    run: spec.restarts,
                    rank,
                    world,
                    tenant: self.tenant_name(spec.spec.tenant).to_string(),
                    tenant_id: Some(spec.spec.tenant.0),
                    command,
                    env,
                    workdir: task.workdir.clone(),
                    gpus: (0..32).filter(|b| gpu_mask & (1 << b) != 0).collect(),
                    stop_by,
                    cpu_millis: cpu_memory.0,
                    memory_mib: cpu_memory.1,
                    serves,
                    ready_path: task.ready_path.clone(),
                    live_path: task.live_path.clone(),
                    ready_command: task.ready_command.clone(),
                    live_command: task.live_command.clone(),
                    port,
                    gpu_milli: spec.spec.gang.gpu_milli,
                    mig_profile: node_model
                        .filter(|_| spec.spec.gang.is_share())
                        .and_then(|m| m.mig_profile(spec.spec.gang.gpu_milli))
                        .map(str::to_string),
                    gpu_model: node_model.map(|m| m.name().to_string()),
                })
            }
            NodeWork::Sandboxes {
                batch,
                meta,
                first,
                count,
                request,
            } => sandboxes.push(SandboxAssignment {
                batch: batch.0,
                tenant: self.tenant_name(meta.tenant).to_string(),
                tenant_id: Some(meta.tenant.0),
                first,
                count,
                command: meta.task.command.clone(),
                env: self.task_env(&meta.task),
                workdir: meta.task.workdir.clone(),
                cpu_millis: request.cpu_millis,
                memory_mib: request.memory_mib,
                interactive: meta.task.interactive.is_some(),
                template: meta.task.template.clone(),
                egress: meta.task.egress.clone(),
            }),
        });
        (tasks, sandboxes)
    }

    /// A digest of what node `name` must run (`None`: no such node). It changes whenever
    /// [`assignments`](Self::assignments) would answer differently, and is computed without
    /// building them: a heartbeat that still holds this digest is answered with nothing.
    pub fn assignment_digest(&self, name: &str) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let n = self.sched.engine().fleet().node_by_name(name)?;
        // Fixed keys: the same work gives the same digest after a restart.
        let mut h = std::hash::DefaultHasher::new();
        self.each_work_on(n, |work| match work {
            NodeWork::Task {
                job,
                spec,
                rank,
                world,
                gpu_mask,
                stop_by,
                per_node,
                ..
            } => {
                (0u8, job.0, spec.restarts, rank, world, gpu_mask, stop_by).hash(&mut h);
                (per_node.cpu_millis, per_node.memory_mib).hash(&mut h);
            }
            NodeWork::Sandboxes {
                batch,
                first,
                count,
                request,
                ..
            } => {
                (1u8, batch.0, first, count).hash(&mut h);
                (request.cpu_millis, request.memory_mib).hash(&mut h);
            }
        });
        Some(h.finish())
    }

    /// Walks what node `n` runs, in the engine's order: each task of a running (or
    /// preempting) job, and each range of live sandboxes.
    fn each_work_on(&self, n: NodeId, mut each: impl FnMut(NodeWork<'_>)) {
        let engine = self.sched.engine();
        for w in engine.workloads_on(n) {
            match engine.allocation(w) {
                Some(Allocation::Gang {
                    slots, per_node, ..
                }) => {
                    let (Some(spec), Some(task)) = (self.sched.job(w), self.task_of(w)) else {
                        continue;
                    };
                    let stop_by = match spec.state {
                        JobState::Running { .. } => None,
                        JobState::Preempting { deadline, .. } => Some(deadline),
                        _ => continue,
                    };
                    for (rank, slot) in slots.iter().enumerate().filter(|(_, s)| s.node == n) {
                        each(NodeWork::Task {
                            job: JobId(w.0),
                            spec,
                            task,
                            rank: rank as u32,
                            world: slots.len() as u32,
                            gpu_mask: slot.gpu_mask,
                            stop_by,
                            per_node,
                            slots,
                        });
                    }
                }
                Some(Allocation::Sandboxes {
                    runs,
                    live,
                    request,
                    ..
                }) => {
                    let Some(meta) = self.batches.get(&BatchId(w.0)) else {
                        continue;
                    };
                    let is_live = |i: u32| live[i as usize / 64] >> (i % 64) & 1 == 1;
                    for run in runs.iter().filter(|r| r.node == n) {
                        // Split the run into ranges of live sandboxes.
                        let mut i = run.first;
                        let end = run.first + run.count;
                        while i < end {
                            if !is_live(i) {
                                i += 1;
                                continue;
                            }
                            let first = i;
                            while i < end && is_live(i) {
                                i += 1;
                            }
                            each(NodeWork::Sandboxes {
                                batch: BatchId(w.0),
                                meta,
                                first,
                                count: i - first,
                                request,
                            });
                        }
                    }
                }
                None => {}
            }
        }
    }

    /// Whether rank `rank` of job `job`'s current run is placed on node `n`.
    pub(super) fn runs_rank_on(&self, job: JobId, rank: u32, n: NodeId) -> bool {
        matches!(
            self.sched.engine().allocation(job.workload()),
            Some(Allocation::Gang { slots, .. })
                if slots.get(rank as usize).is_some_and(|s| s.node == n)
        )
    }

    /// Whether sandbox `index` of `batch` is live on node `n`.
    pub(super) fn sandbox_live_on(&self, batch: BatchId, index: u32, n: NodeId) -> bool {
        let Some(Allocation::Sandboxes { runs, live, .. }) =
            self.sched.engine().allocation(batch.workload())
        else {
            return false;
        };
        let k = runs.partition_point(|r| r.first <= index);
        k > 0
            && runs[k - 1].node == n
            && index < runs[k - 1].first + runs[k - 1].count
            && live
                .get(index as usize / 64)
                .is_some_and(|w| w >> (index % 64) & 1 == 1)
    }

    /// The host sandbox `index` of `batch` runs on, while it is live.
    pub fn sandbox_host(&self, batch: BatchId, index: u32) -> Option<String> {
        let Some(Allocation::Sandboxes { runs, .. }) =
            self.sched.engine().allocation(batch.workload())
        else {
            return None;
        };
        let k = runs.partition_point(|r| r.first <= index).checked_sub(1)?;
        let node = runs[k].node;
        self.sandbox_live_on(batch, index, node)
            .then(|| self.sched.engine().fleet().node(node).name.to_string())
    }

    /// Whether node `name` hosts a sandbox of a live interactive batch (commands may be sent
    /// to it).
    pub fn hosts_interactive_sandbox(&self, name: &str) -> bool {
        let engine = self.sched.engine();
        let Some(node) = engine.fleet().node_by_name(name) else {
            return false;
        };
        engine.workloads_on(node).into_iter().any(|w| {
            self.batches
                .get(&BatchId(w.0))
                .is_some_and(|m| m.ended_at.is_none() && m.task.interactive.is_some())
        })
    }

    /// Whether sandbox `index` of `batch` runs on node `name` (its log lives there).
    pub fn sandbox_runs_on(&self, batch: BatchId, index: u32, name: &str) -> bool {
        self.sched
            .engine()
            .fleet()
            .node_by_name(name)
            .is_some_and(|n| self.sandbox_live_on(batch, index, n))
    }

    /// The tasks of job `id` on node `name` whose logs live there: (run, rank) of its latest
    /// run.
    pub fn log_tasks_on(&self, id: JobId, name: &str) -> Vec<(u32, u32)> {
        let Some(meta) = self.jobs.get(&id) else {
            return Vec::new();
        };
        // By name: a job some of whose nodes left the fleet keeps its logs on the others.
        self.ran_on_names(id, meta)
            .iter()
            .enumerate()
            .filter(|(_, n)| *n == name)
            .map(|(rank, _)| (meta.restarts, rank as u32))
            .collect()
    }

    /// The latest run of job `id` and the nodes of its ranks.
    pub fn log_nodes(&self, id: JobId) -> Option<(u32, Vec<String>)> {
        let meta = self.jobs.get(&id)?;
        Some((meta.restarts, self.ran_on_names(id, meta)))
    }
}

/// One piece of what a node runs, as [`ControlPlane::each_work_on`] walks it.
enum NodeWork<'a> {
    /// A rank of a running (or preempting) job.
    Task {
        job: JobId,
        spec: &'a sched::Job,
        task: &'a TaskSpec,
        rank: u32,
        world: u32,
        gpu_mask: u32,
        stop_by: Option<u64>,
        per_node: &'a model::Resources,
        /// Every node of its gang, in rank order.
        slots: &'a [sched::NodeSlot],
    },
    /// A range of live sandboxes of a batch.
    Sandboxes {
        batch: BatchId,
        meta: &'a BatchMeta,
        first: u32,
        count: u32,
        request: &'a model::SandboxRequest,
    },
}
