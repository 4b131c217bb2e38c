//! What the API shows of the state: job, service, batch, node and tenant views, and the
//! fingerprint and placements that restarts and upgrades are checked against.

use super::*;
use crate::events::rfc3339;

/// The API's name of a queue state.
pub(super) fn state_name(state: &JobState) -> &'static str {
    match state {
        JobState::Pending => "pending",
        JobState::Running { .. } => "running",
        JobState::Preempting { .. } => "preempting",
        JobState::Finished => "finished",
        JobState::Cancelled => "cancelled",
    }
}

impl ControlPlane {
    /// What the agents are told to run, node by node, with each job's state: the part of the
    /// state an upgrade must never change. One line per node with work, then one per job.
    pub fn placements(&self) -> String {
        let mut out = String::new();
        for name in self.up_nodes() {
            let (tasks, sandboxes) = self.assignments(&name);
            if tasks.is_empty() && sandboxes.is_empty() {
                continue;
            }
            out.push_str(&name);
            for t in &tasks {
                out.push_str(&format!(
                    " job{}/run{}/rank{} gpus{:?} stop_by{:?};",
                    t.job, t.run, t.rank, t.gpus, t.stop_by
                ));
            }
            for s in &sandboxes {
                out.push_str(&format!(" batch{}[{}+{}];", s.batch, s.first, s.count));
            }
            out.push('\n');
        }
        for (id, m) in &self.jobs {
            let state = self.job_state(*id).map_or("unknown", state_name);
            out.push_str(&format!(
                "job {id} {} {state} restarts {}\n",
                m.name, m.restarts
            ));
        }
        out
    }

    /// The name of the tenant that owns service `id`.
    pub fn service_tenant(&self, id: ServiceId) -> Option<&str> {
        self.services.get(&id).map(|m| self.tenant_name(m.tenant))
    }

    /// The name of the tenant that owns batch `id`.
    pub fn batch_tenant(&self, id: BatchId) -> Option<&str> {
        self.batches.get(&id).map(|m| self.tenant_name(m.tenant))
    }

    /// Whether `id` names a sandbox batch.
    pub fn is_batch(&self, id: BatchId) -> bool {
        self.batches.contains_key(&id)
    }

    /// The service as the API shows it.
    pub fn service_view(&self, id: ServiceId) -> Option<ServiceView> {
        self.service_view_as(id, None)
    }

    /// Which tenant a reader is, for reasons (`None`: an operator, who sees every job named).
    /// A name that is no tenant sees no other job named.
    fn viewer(&self, tenant: Option<&str>) -> Option<TenantId> {
        tenant.map(|name| {
            self.tenants
                .iter()
                .position(|t| t.name == name)
                .map_or(TenantId(u32::MAX), |i| TenantId(i as u32))
        })
    }

    /// The service as tenant `viewer` sees it (`None`: an operator): its pending replica's
    /// reason never names another tenant's job.
    pub fn service_view_as(&self, id: ServiceId, viewer: Option<&str>) -> Option<ServiceView> {
        let viewer = self.viewer(viewer);
        let meta = self.services.get(&id)?;
        let status = self.sched.service_status(id.0);
        let engine = self.sched.engine();
        let mut replicas = Vec::new();
        let mut replica_models = Vec::new();
        let mut reason = None;
        for r in self.sched.service_replicas(id.0) {
            let job = self.sched.job(r);
            match job.map(|j| &j.state) {
                Some(JobState::Running { .. } | JobState::Preempting { .. }) => {
                    if let Some(Allocation::Gang { slots, .. }) = engine.allocation(r) {
                        if let Some(j) = job {
                            replica_models.push(j.spec.gang.gpu.name().to_string());
                        }
                        replicas.push(
                            slots
                                .iter()
                                .map(|s| engine.fleet().node(s.node).name.to_string())
                                .collect(),
                        );
                    }
                }
                Some(JobState::Pending) if reason.is_none() => {
                    reason = self.sched.pending_reason_for(r, viewer);
                }
                _ => {}
            }
        }
        Some(ServiceView {
            id: id.0,
            name: meta.name.clone(),
            tenant: self.tenant_name(meta.tenant).to_string(),
            state: meta.state_name().into(),
            desired: status.as_ref().map_or(0, |s| s.desired),
            running: status.as_ref().map_or(0, |s| s.running),
            pending: status.as_ref().map_or(0, |s| s.pending),
            ready: self.ready_replicas(id),
            min_replicas: meta.spec.min_replicas,
            max_replicas: meta.spec.max_replicas,
            gpus_per_replica: meta.spec.replica.total_gpus(),
            roles: meta
                .spec
                .replica
                .parts
                .iter()
                .zip(&meta.task.roles)
                .map(|(p, r)| crate::api::ServiceRole {
                    name: r.name.clone(),
                    workers: p.nodes / p.segment.max(1),
                    nodes_per_worker: p.segment,
                    gpus_per_node: p.gpus_per_node,
                    cpu_millis_per_node: p.cpu_millis_per_node,
                    memory_mib_per_node: p.memory_mib_per_node,
                    command: r.command.clone(),
                    env: r.env.clone(),
                })
                .collect(),
            replicas,
            gpu: meta.spec.replica.gpu.name().to_string(),
            models: meta
                .spec
                .replica
                .models
                .iter()
                .map(|m| m.name().to_string())
                .collect(),
            replica_models,
            reason: match meta.replace_at {
                Some(t) if meta.deleted_at.is_none() => Some(format!(
                    "{} replicas in a row exited within {QUICK_EXIT} s of starting: the next replacement waits until t={t}",
                    meta.quick_exits
                )),
                _ => reason,
            },
            replaced: meta.replaced,
            created_at: meta.created_at,
            load: None,
        })
    }

    /// Services (of one tenant, if given), in id order.
    pub fn list_services(
        &self,
        tenant: Option<&str>,
        viewer: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Vec<ServiceView> {
        self.services
            .range(ServiceId(after.saturating_add(1))..)
            .map(|(id, _)| *id)
            .filter(|id| tenant.is_none_or(|t| self.service_tenant(*id) == Some(t)))
            .take(limit)
            .filter_map(|id| self.service_view_as(id, viewer))
            .collect()
    }

    /// The sandbox batch as the API shows it.
    pub fn batch_view(&self, id: BatchId) -> Option<BatchView> {
        let meta = self.batches.get(&id)?;
        let (live, hosts) = match self.sched.engine().allocation(id.workload()) {
            Some(Allocation::Sandboxes {
                runs, live_count, ..
            }) => {
                let mut nodes: Vec<NodeId> = runs.iter().map(|r| r.node).collect();
                nodes.sort_unstable();
                nodes.dedup();
                (*live_count, nodes.len() as u32)
            }
            _ => (0, 0),
        };
        Some(BatchView {
            id: id.0,
            name: meta.name.clone(),
            tenant: self.tenant_name(meta.tenant).to_string(),
            state: match (meta.ended_at, meta.cancelled) {
                (None, _) => "running",
                (Some(_), true) => "cancelled",
                (Some(_), false) => "finished",
            }
            .into(),
            count: meta.count,
            live,
            succeeded: meta.succeeded,
            failed: meta.failed,
            oom_killed: meta.oom_killed,
            lost: meta.lost,
            moved: meta.moved,
            hosts,
            submitted_at: meta.submitted_at,
            ended_at: meta.ended_at,
            interactive: meta.task.interactive.is_some(),
            expires_at: meta
                .task
                .interactive
                .map(|i| meta.submitted_at.saturating_add(i.timeout_s)),
            idle_timeout_s: meta.task.interactive.map(|i| i.idle_timeout_s),
            template: meta.task.template.clone(),
            egress: meta.task.egress.clone(),
            submitted_time: rfc3339(meta.submitted_at),
            ended_time: meta.ended_at.map(rfc3339),
        })
    }

    /// Live interactive batches: (batch, when it ends at the latest, its idle timeout).
    pub fn live_sessions(&self) -> Vec<(BatchId, u64, u64)> {
        self.batches
            .iter()
            .filter(|(_, m)| m.ended_at.is_none())
            .filter_map(|(id, m)| {
                let i = m.task.interactive?;
                Some((
                    *id,
                    m.submitted_at.saturating_add(i.timeout_s),
                    i.idle_timeout_s,
                ))
            })
            .collect()
    }

    /// Whether batch `id` is live and interactive, and its tenant's name.
    pub fn session_tenant(&self, id: BatchId) -> Option<&str> {
        let m = self.batches.get(&id)?;
        (m.ended_at.is_none() && m.task.interactive.is_some()).then(|| self.tenant_name(m.tenant))
    }

    /// Batches after id `after` (ascending), at most `limit`, optionally of one tenant.
    pub fn list_batches(&self, tenant: Option<&str>, after: u64, limit: usize) -> Vec<BatchView> {
        self.batches
            .range(BatchId(after.saturating_add(1))..)
            .map(|(id, _)| *id)
            .filter(|id| tenant.is_none_or(|t| self.batch_tenant(*id) == Some(t)))
            .take(limit)
            .filter_map(|id| self.batch_view(id))
            .collect()
    }

    /// The job's queue state, live or ended.
    pub(super) fn job_state(&self, id: JobId) -> Option<&JobState> {
        let wid = id.workload();
        match self.sched.job(wid) {
            Some(j) => Some(&j.state),
            None => self.sched.ended_state(wid),
        }
    }

    /// The name of the tenant that owns job `id` (cheap: no view is built).
    pub fn job_tenant(&self, id: JobId) -> Option<&str> {
        let meta = self.jobs.get(&id)?;
        self.tenants
            .get(meta.tenant.0 as usize)
            .map(|t| t.name.as_str())
    }

    /// The job as the API shows it.
    pub fn job_view(&self, id: JobId) -> Option<JobView> {
        self.job_view_as(id, None)
    }

    /// The job as tenant `viewer` sees it (`None`: an operator): its reason never names
    /// another tenant's job.
    pub fn job_view_as(&self, id: JobId, viewer: Option<&str>) -> Option<JobView> {
        let viewer = self.viewer(viewer);
        let meta = self.jobs.get(&id)?;
        let wid = id.workload();
        let state = self.job_state(id)?.clone();
        let nodes = match self.sched.engine().allocation(wid) {
            Some(sched::Allocation::Gang { slots, .. }) => slots
                .iter()
                .map(|s| self.sched.engine().fleet().node(s.node).name.to_string())
                .collect(),
            _ => Vec::new(),
        };
        let since = match &state {
            JobState::Pending => None,
            JobState::Running { since } | JobState::Preempting { since, .. } => Some(*since),
            JobState::Finished | JobState::Cancelled => meta.ended_at,
        };
        let state_name = state_name(&state);
        Some(JobView {
            id: id.0,
            cell: self.cell.to_string(),
            name: meta.name.clone(),
            tenant: self
                .tenants
                .get(meta.tenant.0 as usize)
                .map_or_else(String::new, |t| t.name.clone()),
            state: state_name.into(),
            since,
            submitted_at: meta.submitted_at,
            gpus: meta.gpus,
            // The queue's record while it holds the job, else the nodes it last ran on.
            gpu: self
                .sched
                .job(wid)
                .map(|j| j.spec.gang.gpu)
                .or_else(|| {
                    meta.ran_on
                        .first()
                        .and_then(|n| self.sched.engine().fleet().node(*n).capacity.gpu_model)
                })
                .map_or_else(String::new, |m| m.to_string()),
            gpu_milli: meta.gpu_milli,
            restarts: meta.restarts,
            exit_code: meta.exit_code,
            exit_reason: meta.oom_killed.then(|| "oom_killed".to_string()),
            nodes,
            reason: if state == JobState::Pending {
                self.sched.pending_reason_for(wid, viewer)
            } else {
                None
            },
            expected_start: match self.sched.reservation() {
                Some((job, start, _)) if job == wid && state == JobState::Pending => Some(start),
                _ => None,
            },
            submitted_time: rfc3339(meta.submitted_at),
            since_time: since.map(rfc3339),
            expected_start_time: None,
        })
        .map(|v| JobView {
            expected_start_time: v.expected_start.map(rfc3339),
            ..v
        })
    }

    /// Jobs after id `after` (ascending), at most `limit`, optionally of one tenant and state,
    /// as tenant `viewer` sees them (`None`: an operator).
    pub fn list(
        &self,
        tenant: Option<&str>,
        state: Option<&str>,
        after: u64,
        limit: usize,
        viewer: Option<&str>,
    ) -> Vec<JobView> {
        let from = JobId(after.saturating_add(1));
        let tenant_id = match tenant {
            Some(name) => match self.tenants.iter().position(|t| t.name == name) {
                Some(i) => Some(TenantId(i as u32)),
                None => return Vec::new(),
            },
            None => None,
        };
        let of_tenant =
            |id: &JobId| tenant_id.is_none_or(|t| self.jobs.get(id).is_some_and(|m| m.tenant == t));
        let in_state =
            |id: &JobId| state.is_none_or(|s| self.job_state(*id).map(state_name) == Some(s));
        // Walk the fewest jobs that can match: the running ones (in id order already) for a
        // running state, the pending ones (sorted first) for pending unless most jobs are
        // pending, one tenant's for a tenant when it has fewer, else every job. The walk
        // stops at a page; views (which render pending reasons) are built for the page only.
        let of_tenant_count = tenant_id.map_or(usize::MAX, |t| {
            self.jobs_per_tenant.get(&t).copied().unwrap_or(0)
        });
        let all = self.jobs.len();
        let pending = self.sched.pending_count();
        let page = |ids: &mut dyn Iterator<Item = JobId>| -> Vec<JobId> {
            ids.filter(|id| of_tenant(id) && in_state(id))
                .take(limit)
                .collect()
        };
        let ids: Vec<JobId> = match state {
            Some("running" | "preempting") if self.sched.running_count() <= of_tenant_count => {
                page(&mut self.sched.running_from(from.workload()).map(|w| JobId(w.0)))
            }
            Some("pending") if pending <= of_tenant_count && pending * 2 <= all => {
                let mut live: Vec<JobId> = self
                    .sched
                    .pending_jobs()
                    .into_iter()
                    .map(|w| JobId(w.0))
                    .filter(|id| *id >= from)
                    .collect();
                live.sort_unstable();
                page(&mut live.into_iter())
            }
            _ if tenant_id.is_some() && of_tenant_count < all => {
                let t = tenant_id.unwrap_or(TenantId(0));
                page(
                    &mut self
                        .jobs_by_tenant
                        .range((t, from)..=(t, JobId(u64::MAX)))
                        .map(|(_, id)| *id),
                )
            }
            _ => page(&mut self.jobs.range(from..).map(|(id, _)| *id)),
        };
        ids.into_iter()
            .filter_map(|id| self.job_view_as(id, viewer))
            .collect()
    }

    /// Nodes with their state and free GPUs.
    pub fn nodes(&self) -> Vec<NodeView> {
        let count = self.sched.engine().fleet().nodes().len();
        (0..count)
            .map(|i| self.node_view(model::NodeId(i as u32)))
            .collect()
    }

    /// A page of nodes in fleet order: those after node `after` (by name), in state `state`,
    /// that `visible` lets through, at most `limit`. The walk stops at a full page.
    pub fn node_page(
        &self,
        state: Option<&str>,
        after: Option<&str>,
        limit: usize,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Vec<NodeView>, FieldProblem> {
        let fleet = self.sched.engine().fleet();
        let from = match after {
            None => 0,
            Some(name) => match fleet.node_by_name(name) {
                Some(n) => n.0 as usize + 1,
                None => {
                    return Err(FieldProblem {
                        field: "after".into(),
                        reason: format!("no node '{name}' in the fleet"),
                    })
                }
            },
        };
        let wanted = match state {
            None => None,
            Some(s) => Some(
                [
                    NodeState::Ready,
                    NodeState::Cordoned,
                    NodeState::Draining,
                    NodeState::Down,
                ]
                .into_iter()
                .find(|k| node_state_name(*k) == s)
                .ok_or_else(|| FieldProblem {
                    field: "state".into(),
                    reason: format!("unknown state '{s}' (ready, cordoned, draining, down)"),
                })?,
            ),
        };
        Ok(fleet.nodes()[from.min(fleet.nodes().len())..]
            .iter()
            .enumerate()
            .filter(|(_, n)| wanted.is_none_or(|w| n.state == w) && visible(&n.name))
            .take(limit)
            .map(|(i, _)| self.node_view(model::NodeId((from + i) as u32)))
            .collect())
    }

    /// One node as the API shows it.
    fn node_view(&self, id: model::NodeId) -> NodeView {
        let engine = self.sched.engine();
        let n = engine.fleet().node(id);
        let (free_mask, free_cpu, _) = engine.node_free(id);
        NodeView {
            name: n.name.to_string(),
            state: node_state_name(n.state).into(),
            gpus: u32::from(n.capacity.gpus),
            free_gpus: free_mask.count_ones(),
            cpu_millis: n.capacity.cpu_millis,
            free_cpu_millis: free_cpu,
            leaving: self.is_leaving(id),
        }
    }

    /// Tenants with their usage.
    pub fn tenants(&self) -> Vec<TenantView> {
        self.sched
            .tenant_report()
            .into_iter()
            .map(|t| {
                let in_use = t.usage.gpus.iter().fold(0u64, |a, g| a.saturating_add(*g));
                // A quota of any model past the unlimited amount does not bind: no number.
                let quota = (!t
                    .quota
                    .gpus
                    .iter()
                    .any(|g| *g >= model::ResourceVec::UNLIMITED_AMOUNT))
                .then(|| t.quota.gpus.iter().copied().max().unwrap_or(0));
                // Borrowed: what each model's use goes past that model's quota.
                let borrowed = t
                    .usage
                    .gpus
                    .iter()
                    .zip(&t.quota.gpus)
                    .fold(0u64, |a, (used, q)| {
                        a.saturating_add(used.saturating_sub(*q))
                    });
                TenantView {
                    name: t.name,
                    gpus_in_use: in_use,
                    dominant_share: t.dominant_share,
                    lost_gpu_hours: t.lost_gpu_hours,
                    quota_gpus: quota,
                    borrowed_gpus: borrowed,
                    weight: t.weight,
                    cohort: t.cohort,
                }
            })
            .collect()
    }

    /// Everything a restart must reproduce, as text: every job's view (but its pending
    /// reason) and placement, the engine's usage and the reservation. Two planes with equal
    /// fingerprints are the same to every client once a pass has run.
    pub fn fingerprint(&self) -> String {
        // Pending reasons are advice the next pass rewrites, not state: a replayed queue has
        // not run the passes that wrote them.
        let views: Vec<JobView> = self
            .jobs
            .keys()
            .filter_map(|id| self.job_view(*id))
            .map(|v| JobView {
                reason: None,
                expected_start: None,
                expected_start_time: None,
                ..v
            })
            .collect();
        let mut out = serde_json::to_string(&views).unwrap_or_default();
        let services: Vec<ServiceView> = self
            .list_services(None, None, 0, usize::MAX)
            .into_iter()
            .map(|v| ServiceView { reason: None, ..v })
            .collect();
        let batches: Vec<BatchView> = self
            .batches
            .keys()
            .filter_map(|id| self.batch_view(*id))
            .collect();
        out.push_str(&serde_json::to_string(&services).unwrap_or_default());
        out.push_str(&serde_json::to_string(&batches).unwrap_or_default());
        for name in self.up_nodes() {
            out.push_str(&format!("\n{name}: {:?}", self.assignments(&name)));
        }
        let fleet = self.sched.engine().fleet();
        out.push_str(&format!(
            "\nfleet {} nodes, registrations {:?} {:?}, leaving {:?}",
            fleet.nodes().len(),
            self.registration_rule,
            self.registrations.keys().collect::<Vec<_>>(),
            self.leaving
                .iter()
                .map(|n| &fleet.node(*n).name)
                .collect::<Vec<_>>()
        ));
        out.push_str(&format!(
            "\nusage {:?} reservation {:?} next {} {} now {}",
            self.sched.engine().gpu_usage(),
            self.sched.reservation(),
            self.next_id,
            self.next_service,
            self.now
        ));
        out
    }
}

/// A node state's name in the API.
fn node_state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Ready => "ready",
        NodeState::Cordoned => "cordoned",
        NodeState::Draining => "draining",
        NodeState::Down => "down",
    }
}
