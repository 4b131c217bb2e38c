//! Snapshots: the state after one record, written and read in the snapshot format's own types
//! ([`crate::journal::snapshot`]), never as a copy of this build's memory. Loading one builds
//! the state the way replay does: `Init`, the nodes' states, the queued jobs, then every
//! workload restored from its record, the ledger's meters, and a check of every invariant.

use super::*;
use crate::journal::snapshot::{
    self as format, BatchMetaV1, JobMetaV1, NodeStateV1, ServiceMetaV1, SnapshotV1, TokenV1,
    SNAPSHOT_FORMAT,
};
use crate::journal::Codec;

impl ControlPlane {
    /// The whole state as bytes, for the journal's snapshot table.
    pub fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        format::encode(&self.snapshot_value()).map_err(StateError::Snapshot)
    }

    /// The whole state in the snapshot format's types.
    pub(super) fn snapshot_value(&self) -> SnapshotV1 {
        let fleet = self.sched.engine().fleet();
        let name = |n: &NodeId| fleet.node(*n).name.to_string();
        SnapshotV1 {
            v: SNAPSHOT_FORMAT,
            seq: self.seq,
            init: Event::Init {
                fleet_toml: self.fleet_toml.to_string(),
                tenants: self.tenants.clone(),
                at: self.init_at,
                commitments: self.commitments.clone(),
            },
            now: self.now,
            next_id: self.next_id,
            next_service: self.next_service,
            dirty: self.dirty,
            nodes: fleet
                .nodes()
                .iter()
                .filter(|n| n.state != NodeState::Down)
                .map(|n| NodeStateV1 {
                    node: n.name.to_string(),
                    state: n.state,
                    address: self.node_addresses.get(&*n.name).map(|a| a.to_string()),
                })
                .collect(),
            drained: self.drained.iter().map(name).collect(),
            tokens: self
                .tokens
                .iter()
                .map(|(hash, t)| TokenV1 {
                    hash: hash.clone(),
                    role: t.role.clone(),
                    issued_at: t.issued_at,
                    expires_at: t.expires_at,
                })
                .collect(),
            jobs: self
                .jobs
                .iter()
                .map(|(id, m)| JobMetaV1 {
                    id: id.0,
                    name: m.name.clone(),
                    tenant: m.tenant.0,
                    gpus: m.gpus,
                    gpu_milli: m.gpu_milli,
                    submitted_at: m.submitted_at,
                    task: m.task.clone(),
                    ended_at: m.ended_at,
                    exit_code: m.exit_code,
                    oom_killed: m.oom_killed,
                    done_ranks: m.done_ranks.clone(),
                    checkpoint_at: m.checkpoint_at,
                    restarts: m.restarts,
                    ran_on: self.ran_on_names(*id, m),
                    started_at: m.started_at,
                    run_since: m.run_since,
                    gpu_seconds: m.gpu_seconds,
                    lost_gpu_seconds: m.lost_gpu_seconds,
                    cost_micro_usd: m.cost_micro_usd,
                })
                .collect(),
            services: self
                .services
                .iter()
                .map(|(id, m)| ServiceMetaV1 {
                    id: id.0,
                    name: m.name.clone(),
                    tenant: m.tenant.0,
                    spec: m.spec.clone(),
                    task: m.task.clone(),
                    created_at: m.created_at,
                    deleted_at: m.deleted_at,
                    replaced: m.replaced,
                    quick_exits: m.quick_exits,
                    replace_at: m.replace_at,
                    autoscale: m.autoscale.clone(),
                    revision: m.revision,
                    version: m.version.clone(),
                    next_revision: m.next_revision,
                    previous: m.previous.clone(),
                    rollout: m.rollout.clone(),
                    rolled_back: m.rolled_back.clone(),
                })
                .collect(),
            batches: self
                .batches
                .iter()
                .map(|(id, m)| BatchMetaV1 {
                    id: id.0,
                    name: m.name.clone(),
                    tenant: m.tenant.0,
                    count: m.count,
                    task: m.task.clone(),
                    submitted_at: m.submitted_at,
                    ended_at: m.ended_at,
                    cancelled: m.cancelled,
                    succeeded: m.succeeded,
                    failed: m.failed,
                    oom_killed: m.oom_killed,
                    lost: m.lost,
                    moved: m.moved,
                })
                .collect(),
            queue: Codec::new(fleet).store_queue(&self.sched.state()),
            leaving: self.leaving.iter().map(name).collect(),
            registration_rule: self.registration_rule.clone(),
            registrations: self.registrations.values().cloned().collect(),
            endpoints: self
                .endpoints
                .iter()
                .map(|(j, e)| (j.0, e.clone()))
                .collect(),
            replica_revisions: self
                .replica_revisions
                .iter()
                .map(|(j, r)| (j.0, *r))
                .collect(),
        }
    }

    /// The state a snapshot holds. A snapshot of another format, or one whose state does not
    /// hold together (its invariants are checked), is refused: the caller replays the whole
    /// journal instead.
    pub fn from_snapshot(bytes: &[u8]) -> Result<ControlPlane, StateError> {
        let s = format::decode(bytes).map_err(|e| StateError::Snapshot(e.to_string()))?;
        ControlPlane::from_snapshot_value(s)
    }

    /// The state a snapshot's value holds (see [`Self::from_snapshot`]).
    pub(super) fn from_snapshot_value(s: SnapshotV1) -> Result<ControlPlane, StateError> {
        let bad = |e: String| StateError::Snapshot(e);
        let mut p = ControlPlane::new(&s.init)?;
        let node = |p: &ControlPlane, name: &str| {
            p.sched
                .engine()
                .fleet()
                .node_by_name(name)
                .ok_or_else(|| bad(format!("no node '{name}' in the fleet")))
        };
        for n in &s.nodes {
            let id = node(&p, &n.node)?;
            p.sched.set_state(Scope::Node(id), n.state);
            if let Some(a) = &n.address {
                p.set_node_address(&n.node, a);
            }
        }
        for d in &s.drained {
            let id = node(&p, d)?;
            p.drained.insert(id);
        }
        for d in &s.leaving {
            let id = node(&p, d)?;
            p.leaving.insert(id);
        }
        p.registration_rule = s.registration_rule.clone();
        p.endpoints = s
            .endpoints
            .iter()
            .map(|(j, e)| (JobId(*j), e.clone()))
            .collect();
        p.routes_seq = s.seq;
        p.replica_revisions = s
            .replica_revisions
            .iter()
            .map(|(j, r)| (JobId(*j), *r))
            .collect();
        p.registrations = s
            .registrations
            .iter()
            .map(|r| (r.node.clone(), r.clone()))
            .collect();
        for t in s.tokens {
            p.tokens.insert(
                t.hash,
                TokenRecord {
                    role: t.role,
                    issued_at: t.issued_at,
                    expires_at: t.expires_at,
                },
            );
        }
        for m in s.jobs {
            // A job that ran on nodes which have left the fleet since keeps their names.
            let fleet = p.sched.engine().fleet();
            let ran_on = match m.ran_on.iter().map(|n| fleet.node_by_name(n)).collect() {
                Some(ids) => ids,
                None => {
                    let names = m.ran_on.iter().map(|n| n.as_str().into()).collect();
                    p.departed_ran_on.insert(JobId(m.id), names);
                    Vec::new()
                }
            };
            if p.jobs_by_tenant.insert((TenantId(m.tenant), JobId(m.id))) {
                *p.jobs_per_tenant.entry(TenantId(m.tenant)).or_default() += 1;
            }
            p.jobs.insert(
                JobId(m.id),
                JobMeta {
                    name: m.name,
                    tenant: TenantId(m.tenant),
                    gpus: m.gpus,
                    gpu_milli: m.gpu_milli,
                    submitted_at: m.submitted_at,
                    task: m.task,
                    ended_at: m.ended_at,
                    exit_code: m.exit_code,
                    oom_killed: m.oom_killed,
                    done_ranks: m.done_ranks,
                    checkpoint_at: m.checkpoint_at,
                    restarts: m.restarts,
                    ran_on,
                    started_at: m.started_at,
                    run_since: m.run_since,
                    gpu_seconds: m.gpu_seconds,
                    lost_gpu_seconds: m.lost_gpu_seconds,
                    cost_micro_usd: m.cost_micro_usd,
                },
            );
        }
        for m in s.services {
            p.services.insert(
                ServiceId(m.id),
                ServiceMeta {
                    name: m.name,
                    tenant: TenantId(m.tenant),
                    spec: m.spec,
                    task: m.task,
                    created_at: m.created_at,
                    deleted_at: m.deleted_at,
                    replaced: m.replaced,
                    quick_exits: m.quick_exits,
                    replace_at: m.replace_at,
                    autoscale: m.autoscale,
                    revision: m.revision,
                    version: m.version,
                    next_revision: m.next_revision,
                    previous: m.previous,
                    rollout: m.rollout,
                    rolled_back: m.rolled_back,
                },
            );
        }
        for m in s.batches {
            p.batches.insert(
                BatchId(m.id),
                BatchMeta {
                    name: m.name,
                    tenant: TenantId(m.tenant),
                    count: m.count,
                    task: m.task,
                    submitted_at: m.submitted_at,
                    ended_at: m.ended_at,
                    cancelled: m.cancelled,
                    succeeded: m.succeeded,
                    failed: m.failed,
                    oom_killed: m.oom_killed,
                    lost: m.lost,
                    moved: m.moved,
                },
            );
        }
        let queue = Codec::new(p.sched.engine().fleet())
            .load_queue(&s.queue, s.v)
            .map_err(|e| bad(e.to_string()))?;
        p.sched
            .load_state(&queue, s.now)
            .map_err(|e| bad(e.to_string()))?;
        // Format 1 counted a share of a GPU as the whole device: live work is charged as this
        // build counts it from the snapshot's time on.
        if s.v < 2 {
            p.sched.recharge_live(s.now);
        }
        p.sched.check_invariants().map_err(bad)?;
        // A snapshot of a build before jobs' accounting: a running job's counts from what the
        // queue kept of it (its current run's start, its GPU-seconds and losses so far).
        for (id, m) in p.jobs.iter_mut() {
            if let (None, Some(j)) = (m.run_since, p.sched.job(id.workload())) {
                if let JobState::Running { since } | JobState::Preempting { since, .. } = j.state {
                    m.run_since = Some(since);
                    m.gpu_seconds = j.attained_gpu_seconds;
                    m.lost_gpu_seconds = (j.lost_gpu_hours * 3600.0).round().max(0.0) as u64;
                }
            }
        }
        // Restoring is not a change: nothing is owed to the next outcome or to the agents.
        let _ = p.sched.take_outcome();
        p.seq = s.seq;
        p.now = s.now;
        p.next_id = s.next_id;
        p.next_service = s.next_service;
        p.dirty = s.dirty;
        p.placed = p.placements_by_workload();
        p.changed.clear();
        Ok(p)
    }

    /// The nodes of every placed workload (what `placed` keeps as changes happen).
    fn placements_by_workload(&self) -> HashMap<u64, Vec<NodeId>> {
        let engine = self.sched.engine();
        let mut out = HashMap::new();
        let ids = self
            .sched
            .running_jobs()
            .into_iter()
            .chain(self.batches.keys().map(|b| b.workload()));
        for w in ids {
            let mut nodes: Vec<NodeId> = match engine.allocation(w) {
                Some(Allocation::Gang { slots, .. }) => slots.iter().map(|s| s.node).collect(),
                Some(Allocation::Sandboxes { runs, .. }) => runs.iter().map(|r| r.node).collect(),
                None => continue,
            };
            nodes.sort_unstable();
            nodes.dedup();
            out.insert(w.0, nodes);
        }
        out
    }
}
