//! Applying events: live, the queue decides what an event leads to and the outcome becomes the
//! journal record; during replay the recorded outcome is restored and nothing is decided.
//! Also which nodes' assignments each change touched, for the agents' long poll.

use super::*;

impl ControlPlane {
    /// Applies one new event, deciding what it leads to with this build's rules; returns the
    /// journal record (the event, the decisions, their outcome). On error nothing changed.
    /// Notes the nodes whose assignments it changed (see `take_changed_nodes`).
    pub fn apply(&mut self, e: &Event) -> Result<Record, StateError> {
        self.replaying = None;
        let decisions = self.apply_noting_changes(e)?;
        Ok(Record {
            event: e.clone(),
            decisions,
            outcome: self.sched.take_outcome(),
        })
    }

    /// Applies a journaled record: the queue is brought to its recorded outcome, nothing is
    /// decided again.
    pub fn apply_recorded(&mut self, r: &Record) -> Result<(), StateError> {
        self.replaying = Some(Replaying {
            record: r.clone(),
            restored: false,
        });
        let result = self
            .apply_noting_changes(&r.event)
            .and_then(|_| self.restore_once());
        self.replaying = None;
        // Whatever the replay's own steps touched is in the record already.
        let _ = self.sched.take_outcome();
        result
    }

    /// During replay, brings the queue to the recorded outcome (once per record); live, does
    /// nothing.
    pub(super) fn restore_once(&mut self) -> Result<(), StateError> {
        let Some(r) = self.replaying.as_mut() else {
            return Ok(());
        };
        if r.restored {
            return Ok(());
        }
        r.restored = true;
        let at = r.record.event.at();
        self.sched
            .restore(&r.record.outcome, at)
            .map_err(StateError::Restore)
    }

    /// Runs the queue's policy (`live`) on a new event; during replay restores the recorded
    /// outcome instead.
    pub(super) fn decide<T: Default>(
        &mut self,
        live: impl FnOnce(&mut Scheduler) -> Result<T, sched::SchedError>,
    ) -> Result<T, StateError> {
        if self.replaying.is_some() {
            self.restore_once()?;
            return Ok(T::default());
        }
        live(&mut self.sched).map_err(StateError::Queue)
    }

    /// [`Self::decide`] for policies that return decisions: during replay, the recorded ones.
    pub(super) fn decisions(
        &mut self,
        live: impl FnOnce(&mut Scheduler) -> Vec<Decision>,
    ) -> Result<Vec<Decision>, StateError> {
        if self.replaying.is_some() {
            self.restore_once()?;
            return Ok(self
                .replaying
                .as_ref()
                .map(|r| r.record.decisions.clone())
                .unwrap_or_default());
        }
        Ok(live(&mut self.sched))
    }

    pub(super) fn apply_noting_changes(&mut self, e: &Event) -> Result<Vec<Decision>, StateError> {
        let service = match e {
            Event::ServiceScale { id, .. }
            | Event::ServiceDelete { id, .. }
            | Event::RolloutStep { id, .. } => Some(id.0),
            Event::TaskExited { job, .. } => job.workload().as_replica().map(|(s, _)| s),
            _ => None,
        };
        let mut touched: Vec<WorkloadId> = service
            .map(|s| self.sched.service_replicas(s))
            .unwrap_or_default();
        let decisions = self.apply_event(e)?;
        touched.extend(decisions.iter().filter_map(|d| match d {
            Decision::Start { job, .. }
            | Decision::Preempt { job, .. }
            | Decision::Requeue { job, .. }
            | Decision::Replace { job, .. } => Some(*job),
            Decision::SandboxesMoved { batch, .. } | Decision::SandboxesLost { batch, .. } => {
                Some(*batch)
            }
            Decision::Reserve { .. } => None,
        }));
        match e {
            Event::Cancel { id, .. } => touched.push(WorkloadId(*id)),
            Event::SandboxBatch { id, .. } => touched.push(id.workload()),
            Event::TaskExited { job, .. } => touched.push(job.workload()),
            // Only the reporting node's sandboxes changed, and its heartbeat's answer says so.
            Event::SandboxesExited { batch, .. }
                if self.sched.engine().allocation(batch.workload()).is_none() =>
            {
                self.placed.remove(&batch.0);
            }
            _ => {}
        }
        if let Some(s) = service {
            touched.extend(self.sched.service_replicas(s));
        }
        // A replica started, preempted or requeued may change what gateways route to; one
        // that starts for the first time runs its service's target revision.
        if touched.iter().any(|w| w.as_replica().is_some()) {
            self.routes_changed();
        }
        for d in &decisions {
            if let Decision::Start { job, .. } = d {
                self.note_replica_revision(*job);
            }
        }
        self.note_changes(touched);
        // Every applied event is the next journal record.
        self.seq += 1;
        Ok(decisions)
    }

    /// Marks the old and new nodes of each touched workload as changed.
    pub(super) fn note_changes(&mut self, mut touched: Vec<WorkloadId>) {
        touched.sort_unstable();
        touched.dedup();
        let engine = self.sched.engine();
        for w in touched {
            let mut now: Vec<NodeId> = match engine.allocation(w) {
                Some(Allocation::Gang { slots, .. }) => slots.iter().map(|s| s.node).collect(),
                Some(Allocation::Sandboxes { runs, .. }) => runs.iter().map(|r| r.node).collect(),
                None => Vec::new(),
            };
            now.sort_unstable();
            now.dedup();
            if let Some(before) = self.placed.remove(&w.0) {
                self.changed.extend(before);
            }
            self.changed.extend(now.iter().copied());
            if !now.is_empty() {
                self.placed.insert(w.0, now);
            }
        }
    }

    /// Names of the nodes whose assignments changed since the last call (an agent that learns
    /// of them asks for its assignments at once instead of at its next heartbeat).
    pub fn take_changed_nodes(&mut self) -> Vec<String> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        let fleet = self.sched.engine().fleet();
        changed
            .into_iter()
            .map(|n| fleet.node(n).name.to_string())
            .collect()
    }

    pub(super) fn apply_event(&mut self, e: &Event) -> Result<Vec<Decision>, StateError> {
        let refused = StateError::Queue;
        let decisions = match e {
            Event::Init { .. } => {
                return Err(StateError::Conflict("the journal already has Init".into()))
            }
            Event::Submit {
                id,
                name,
                spec,
                task,
                at,
            } => {
                // Checked again on replay too: a journal is read from disk, and a record a
                // damaged file makes must not put an impossible job in the queue.
                self.sched
                    .submit(id.workload(), spec.clone(), *at)
                    .map_err(refused)?;
                if self.jobs_by_tenant.insert((spec.tenant, *id)) {
                    *self.jobs_per_tenant.entry(spec.tenant).or_default() += 1;
                }
                self.jobs.insert(
                    *id,
                    JobMeta {
                        name: name.clone(),
                        tenant: spec.tenant,
                        gpus: spec.gang.total_gpus(),
                        gpu_milli: spec.gang.gpu_milli,
                        submitted_at: *at,
                        task: task.clone(),
                        ended_at: None,
                        exit_code: None,
                        oom_killed: false,
                        done_ranks: BTreeSet::new(),
                        checkpoint_at: None,
                        restarts: 0,
                        ran_on: Vec::new(),
                        started_at: None,
                        run_since: None,
                        gpu_seconds: 0,
                        lost_gpu_seconds: 0,
                        cost_micro_usd: 0,
                    },
                );
                self.next_id = self.next_id.max(id.0 + 1);
                self.dirty = true;
                Vec::new()
            }
            Event::Cancel { id, at } => {
                if let Some(b) = self.batches.get(&BatchId(*id)) {
                    if b.ended_at.is_some() {
                        return Err(StateError::Conflict(format!("batch {id} already ended")));
                    }
                    self.decide(|s| s.end_batch(WorkloadId(*id), *at))?;
                    if let Some(b) = self.batches.get_mut(&BatchId(*id)) {
                        b.ended_at = Some(*at);
                        b.cancelled = true;
                    }
                } else {
                    self.decide(|s| s.cancel(WorkloadId(*id), *at))?;
                    self.run_ended(JobId(*id), *at);
                    if let Some(m) = self.jobs.get_mut(&JobId(*id)) {
                        m.ended_at = Some(*at);
                    }
                }
                self.dirty = true;
                Vec::new()
            }
            Event::ServiceCreate {
                id,
                name,
                spec,
                task,
                autoscale,
                at,
            } => {
                self.decide(|s| s.create_service(id.0, spec.clone(), *at))?;
                self.services.insert(
                    *id,
                    ServiceMeta {
                        name: name.clone(),
                        tenant: spec.tenant,
                        spec: spec.clone(),
                        task: task.clone(),
                        created_at: *at,
                        deleted_at: None,
                        replaced: 0,
                        quick_exits: 0,
                        replace_at: None,
                        autoscale: autoscale.clone(),
                        revision: 0,
                        version: "1".into(),
                        next_revision: 1,
                        previous: None,
                        rollout: None,
                        rolled_back: None,
                    },
                );
                self.next_service = self.next_service.max(id.0 + 1);
                self.routes_changed();
                self.dirty = true;
                Vec::new()
            }
            Event::ServiceScale {
                id,
                replicas,
                autoscaled,
                at,
            } => {
                self.live_service(*id)?;
                // An operator's scaling acts now, whatever a crashing replica's wait (the
                // autoscaler's waits: load must not spin a crashing image).
                if let Some(m) = self.services.get_mut(id).filter(|_| !autoscaled) {
                    m.replace_at = None;
                }
                self.decide(|s| s.scale_service(id.0, *replicas, *at).map(|_| ()))?;
                self.forget_stopped_endpoints(*id);
                self.routes_changed();
                self.dirty = true;
                Vec::new()
            }
            Event::ServiceRollout {
                id,
                version,
                task,
                max_surge,
                max_unavailable,
                progress_deadline_s,
                canary_percent,
                at,
            } => {
                let limits = (*max_surge, *max_unavailable, *progress_deadline_s);
                self.start_rollout(*id, version, task, limits, *canary_percent, *at)?;
                self.routes_changed();
                self.dirty = true;
                Vec::new()
            }
            Event::RolloutStep {
                id,
                surge,
                retire,
                done,
                at,
            } => {
                self.rollout_step(*id, *surge, retire, *done, *at)?;
                self.dirty = true;
                Vec::new()
            }
            Event::RolloutPromote { id, .. } => {
                self.promote_rollout(*id)?;
                self.routes_changed();
                self.dirty = true;
                Vec::new()
            }
            Event::RolloutUndo { id, reason, at } => {
                self.undo_rollout(*id, reason, *at)?;
                self.routes_changed();
                self.dirty = true;
                Vec::new()
            }
            Event::ServiceDelete { id, at } => {
                self.live_service(*id)?;
                self.decide(|s| s.delete_service(id.0, *at).map(|_| ()))?;
                self.forget_stopped_endpoints(*id);
                if let Some(m) = self.services.get_mut(id) {
                    m.deleted_at = Some(*at);
                }
                self.routes_changed();
                self.dirty = true;
                Vec::new()
            }
            Event::SandboxBatch {
                id,
                name,
                tenant,
                request,
                max_retries,
                task,
                at,
            } => {
                if tenant.0 as usize >= self.tenants.len() {
                    return Err(StateError::NotFound(format!("no tenant {}", tenant.0)));
                }
                self.decide(|s| {
                    s.place_sandboxes(id.workload(), Some(*tenant), request, *max_retries, *at)
                        .map(|_| ())
                })?;
                self.batches.insert(
                    *id,
                    BatchMeta {
                        name: name.clone(),
                        tenant: *tenant,
                        count: request.count,
                        task: task.clone(),
                        submitted_at: *at,
                        ended_at: None,
                        cancelled: false,
                        succeeded: 0,
                        failed: 0,
                        oom_killed: 0,
                        lost: 0,
                        moved: 0,
                    },
                );
                self.next_id = self.next_id.max(id.0 + 1);
                Vec::new()
            }
            Event::SandboxesExited {
                batch,
                exited,
                oom_killed,
                at,
            } => {
                let meta = self
                    .batches
                    .get(batch)
                    .ok_or_else(|| StateError::NotFound(format!("no batch {batch}")))?;
                if meta.ended_at.is_some() {
                    return Err(StateError::Conflict(format!("batch {batch} already ended")));
                }
                let indices: Vec<u32> = exited.iter().map(|(i, _)| *i).collect();
                self.decide(|s| s.end_sandboxes(batch.workload(), &indices, *at).map(|_| ()))?;
                let failed = exited.iter().filter(|(_, c)| *c != 0).count() as u32;
                if let Some(m) = self.batches.get_mut(batch) {
                    m.failed += failed;
                    m.succeeded += exited.len() as u32 - failed;
                    m.oom_killed += oom_killed.len() as u32;
                }
                self.end_batch_if_empty(*batch, *at);
                self.dirty = true;
                Vec::new()
            }
            Event::TokenIssued {
                hash,
                role,
                at,
                expires_at,
            } => {
                if let Role::Tenant { tenant } = role {
                    if !self.tenants.iter().any(|t| &t.name == tenant) {
                        return Err(StateError::NotFound(format!("unknown tenant '{tenant}'")));
                    }
                }
                self.tokens.insert(
                    hash.clone(),
                    TokenRecord {
                        role: role.clone(),
                        issued_at: *at,
                        expires_at: *expires_at,
                    },
                );
                Vec::new()
            }
            Event::TokenRevoked { id, .. } => {
                let hash = self
                    .tokens
                    .keys()
                    .find(|h| token_id(h) == id)
                    .cloned()
                    .ok_or_else(|| StateError::NotFound(format!("no token {id}")))?;
                self.tokens.remove(&hash);
                Vec::new()
            }
            Event::Pass { at } => {
                self.dirty = false;
                // Crashed replicas whose wait is over are replaced before the pass places them.
                let due: Vec<ServiceId> = self
                    .services
                    .iter()
                    .filter(|(_, m)| {
                        m.deleted_at.is_none() && m.replace_at.is_some_and(|t| t <= *at)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    if let Some(m) = self.services.get_mut(&id) {
                        m.replace_at = None;
                    }
                    self.replace_replicas(id, *at)?;
                }
                let decisions = self.decisions(|s| s.schedule(*at))?;
                self.account(&decisions, *at);
                decisions
            }
            Event::NodeAddress { node, address, .. } => {
                self.node(node)?;
                self.set_node_address(node, address);
                Vec::new()
            }
            Event::NodeUp { node, address, .. } => {
                let n = self.node(node)?;
                if self.sched.engine().fleet().node(n).state != NodeState::Down {
                    return Err(StateError::Conflict(format!("node {node} is already up")));
                }
                if let Some(a) = address {
                    self.set_node_address(node, a);
                }
                let state = if self.drained.contains(&n) || self.is_leaving(n) {
                    NodeState::Draining
                } else {
                    NodeState::Ready
                };
                self.sched.set_state(Scope::Node(n), state);
                self.dirty = true;
                Vec::new()
            }
            Event::NodeDrain { node, drain, .. } => {
                let nodes = self.target_nodes(node)?;
                let changed: Vec<NodeId> = nodes
                    .into_iter()
                    .filter(|n| {
                        if *drain {
                            self.drained.insert(*n)
                        } else {
                            self.drained.remove(n)
                        }
                    })
                    .collect();
                if changed.is_empty() {
                    return Err(StateError::Conflict(format!(
                        "{node} is {} drained",
                        if *drain { "already" } else { "not" }
                    )));
                }
                let state = if *drain {
                    NodeState::Draining
                } else {
                    NodeState::Ready
                };
                for n in changed {
                    // A node without its agent stays down; it comes back drained or ready.
                    // A leaving node stays drained.
                    if self.sched.engine().fleet().node(n).state != NodeState::Down
                        && !self.is_leaving(n)
                    {
                        self.sched.set_state(Scope::Node(n), state);
                    }
                }
                self.dirty = true;
                Vec::new()
            }
            Event::FleetApply { fleet_toml, at } => {
                let plan = self.plan_fleet(fleet_toml)?;
                self.apply_fleet_plan(plan, *at)?;
                Vec::new()
            }
            Event::NodesLeft { nodes, at } => {
                let plan = self.plan_departure(nodes)?;
                self.apply_fleet_plan(plan, *at)?;
                Vec::new()
            }
            Event::RegistrationRule { rule, .. } => {
                self.set_registration_rule(rule.clone());
                Vec::new()
            }
            Event::NodeRegistered { registration, .. } => {
                self.add_registration(registration)?;
                Vec::new()
            }
            Event::RegistrationsApproved { nodes, at } => {
                let plan = self.plan_approval(nodes)?;
                self.apply_fleet_plan(plan, *at)?;
                Vec::new()
            }
            Event::ReplicaEndpoint { job, endpoint, .. } => {
                self.set_endpoint(*job, endpoint)?;
                Vec::new()
            }
            Event::RegistrationsRejected { nodes, .. } => {
                self.reject_registrations(nodes)?;
                Vec::new()
            }
            Event::NodeDown { node, at } => {
                let n = self.node(node)?;
                if self.sched.engine().fleet().node(n).state == NodeState::Down {
                    return Err(StateError::Conflict(format!("node {node} is already down")));
                }
                let decisions = if self.replaying.is_some() {
                    // The node's state is an input; what its failure did is recorded.
                    self.sched.set_state(Scope::Node(n), NodeState::Down);
                    self.decisions(|_| Vec::new())?
                } else {
                    self.sched.fail(Scope::Node(n), *at)
                };
                self.account(&decisions, *at);
                self.dirty = true;
                decisions
            }
            Event::TaskExited {
                job,
                run,
                rank,
                code,
                oom_killed,
                at,
            } => {
                let world = self.current_world(*job, *run)?;
                if let Some((service, _)) = job.workload().as_replica() {
                    // A replica whose process exited is replaced: services run until scaled
                    // down or deleted. One that keeps crashing as it starts is replaced later
                    // and later (10 s, doubling, up to 5 min), not in a hot loop.
                    let since = match self.sched.job(job.workload()).map(|j| &j.state) {
                        Some(JobState::Running { since } | JobState::Preempting { since, .. }) => {
                            *since
                        }
                        _ => *at,
                    };
                    let new_version = self.runs_new_version(ServiceId(service), *job);
                    self.decide(|s| s.finish(job.workload(), *at))?;
                    let Some(m) = self.services.get_mut(&ServiceId(service)) else {
                        return Err(StateError::NotFound(format!("no service {service}")));
                    };
                    m.replaced += 1;
                    let quick = at.saturating_sub(since) < QUICK_EXIT;
                    m.quick_exits = if quick { m.quick_exits + 1 } else { 0 };
                    // An update rolls back on its own version's crashes, not the old one's.
                    if let Some(r) = m.rollout.as_mut().filter(|_| new_version) {
                        r.new_quick_exits = if quick { r.new_quick_exits + 1 } else { 0 };
                    }
                    let wait = backoff(m.quick_exits);
                    if wait == 0 {
                        m.replace_at = None;
                        self.replace_replicas(ServiceId(service), *at)?;
                    } else {
                        m.replace_at = Some(at + wait);
                    }
                    self.dirty = true;
                    self.now = self.now.max(e.at());
                    return Ok(Vec::new());
                }
                let meta = self
                    .jobs
                    .get_mut(job)
                    .ok_or_else(|| StateError::NotFound(format!("no job {job}")))?;
                if *code == 0 {
                    meta.done_ranks.insert(*rank);
                }
                if *code != 0 || meta.done_ranks.len() as u32 >= world {
                    self.decide(|s| s.finish(job.workload(), *at))?;
                    self.run_ended(*job, *at);
                    if let Some(m) = self.jobs.get_mut(job) {
                        m.exit_code = Some(*code);
                        m.oom_killed = *oom_killed;
                        m.ended_at = Some(*at);
                    }
                    self.dirty = true;
                }
                Vec::new()
            }
            Event::Checkpoint { job, run, at } => {
                self.current_world(*job, *run)?;
                self.decide(|s| s.checkpoint(job.workload(), *at))?;
                if let Some(m) = self.jobs.get_mut(job) {
                    m.checkpoint_at = Some(*at);
                }
                Vec::new()
            }
        };
        self.now = self.now.max(e.at());
        Ok(decisions)
    }

    pub(super) fn node(&self, name: &str) -> Result<NodeId, StateError> {
        self.sched
            .engine()
            .fleet()
            .node_by_name(name)
            .ok_or_else(|| StateError::NotFound(format!("no node '{name}' in the fleet")))
    }

    /// The nodes a drain names: one node by its name, or every node under a topology path
    /// (`aws/us-east-1/us-east-1-z1/sp0`).
    pub fn target_nodes(&self, target: &str) -> Result<Vec<NodeId>, StateError> {
        let fleet = self.sched.engine().fleet();
        if let Some(n) = fleet.node_by_name(target) {
            return Ok(vec![n]);
        }
        match fleet.find_topo(target) {
            Some(t) if !target.trim_matches('/').is_empty() => {
                Ok(fleet.topo_node(t).nodes.clone().map(NodeId).collect())
            }
            _ => Err(StateError::Conflict(format!(
                "no node or topology path '{target}' in the fleet"
            ))),
        }
    }

    /// The gang size of `job`'s current run, if `run` is the current one and it is running.
    pub(super) fn current_world(&self, job: JobId, run: u32) -> Result<u32, StateError> {
        let j = self
            .sched
            .job(job.workload())
            .ok_or_else(|| StateError::NotFound(format!("job {job} is not live")))?;
        if j.restarts != run
            || !matches!(
                j.state,
                JobState::Running { .. } | JobState::Preempting { .. }
            )
        {
            return Err(StateError::Conflict(format!(
                "job {job} run {run} is not the running one"
            )));
        }
        Ok(j.spec.gang.nodes)
    }

    /// Follows the queue's decisions: a requeued job starts its next run from scratch (its
    /// tasks' progress is forgotten); sandboxes moved or lost with their hosts are counted.
    pub(super) fn account(&mut self, decisions: &[Decision], at: u64) {
        for d in decisions {
            match d {
                Decision::Requeue {
                    job,
                    lost_gpu_hours,
                } => {
                    self.run_ended(JobId(job.0), at);
                    self.work_lost(JobId(job.0), *lost_gpu_hours);
                    if let Some(m) = self.jobs.get_mut(&JobId(job.0)) {
                        m.done_ranks.clear();
                        m.checkpoint_at = None;
                        m.restarts += 1;
                    }
                }
                Decision::Replace {
                    job,
                    lost_gpu_hours,
                    ..
                } => self.work_lost(JobId(job.0), *lost_gpu_hours),
                Decision::Start { job, slots } => {
                    if let Some(m) = self.jobs.get_mut(&JobId(job.0)) {
                        m.ran_on = slots.iter().map(|s| s.node).collect();
                    }
                    self.departed_ran_on.remove(&JobId(job.0));
                    self.run_started(JobId(job.0), at);
                }
                Decision::SandboxesMoved { batch, count, .. } => {
                    if let Some(m) = self.batches.get_mut(&BatchId(batch.0)) {
                        m.moved += count;
                    }
                }
                Decision::SandboxesLost { batch, count, .. } => {
                    if let Some(m) = self.batches.get_mut(&BatchId(batch.0)) {
                        m.lost += count;
                    }
                    self.end_batch_if_empty(BatchId(batch.0), at);
                }
                _ => {}
            }
        }
    }

    /// A batch ends when its last sandbox does.
    pub(super) fn end_batch_if_empty(&mut self, batch: BatchId, at: u64) {
        if self.sched.engine().allocation(batch.workload()).is_none() {
            if let Some(m) = self.batches.get_mut(&batch) {
                m.ended_at.get_or_insert(at);
            }
        }
    }

    /// Brings a service back to its desired replica count.
    pub(super) fn replace_replicas(
        &mut self,
        service: ServiceId,
        at: u64,
    ) -> Result<(), StateError> {
        let desired = self
            .sched
            .service_status(service.0)
            .map_or(0, |s| s.desired);
        self.decide(|s| s.scale_service(service.0, desired, at).map(|_| ()))
    }

    /// Whether a pass is due for a reason other than news: a crashed replica's wait is over.
    pub fn due(&self, now: u64) -> bool {
        self.services
            .values()
            .any(|m| m.deleted_at.is_none() && m.replace_at.is_some_and(|t| t <= now))
    }

    /// The service, if it exists and was not deleted.
    pub(super) fn live_service(&self, id: ServiceId) -> Result<&ServiceMeta, StateError> {
        match self.services.get(&id) {
            Some(m) if m.deleted_at.is_none() => Ok(m),
            Some(_) => Err(StateError::Conflict(format!("service {id} was deleted"))),
            None => Err(StateError::NotFound(format!("no service {id}"))),
        }
    }
}
