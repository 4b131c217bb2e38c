//! What a journal record tells the event stream: one [`Told`] per workload its outcome touched,
//! per node it changed, and per preemption or requeue it decided. Read from the record and the
//! state right after it, live and in replay alike, so a restarted server tells the same events.

use super::*;
use crate::api::Change;
use crate::events::Told;
use sched::{JobRecord, ServiceRecord};

impl ControlPlane {
    /// The events of `record`, which was just applied.
    pub fn told(&self, record: &Record) -> Vec<Told> {
        let mut out = Vec::new();
        self.told_nodes(&record.event, &mut out);
        for d in &record.decisions {
            self.told_decision(d, &mut out);
        }
        if let Event::Checkpoint { job, .. } = &record.event {
            // The job's state is the same: say what happened instead.
            if let Some(tenant) = self.workload_tenant(job.workload()) {
                out.push(Told::tenant(
                    tenant,
                    Change::Checkpointed {
                        job: job.0,
                        tenant: tenant.to_string(),
                    },
                ));
            }
            return out;
        }
        for j in &record.outcome.jobs {
            if let Some(t) = self.told_job(j) {
                out.push(t);
            }
        }
        for b in &record.outcome.batches {
            if let Some(t) = self.told_batch(b.id()) {
                out.push(t);
            }
        }
        for s in &record.outcome.services {
            let id = match s {
                ServiceRecord::Live { id, .. } | ServiceRecord::Deleted { id } => *id,
            };
            if let Some(t) = self.told_service(ServiceId(id)) {
                out.push(t);
            }
        }
        out
    }

    fn told_nodes(&self, event: &Event, out: &mut Vec<Told>) {
        match event {
            Event::FleetApply { .. }
            | Event::NodesLeft { .. }
            | Event::RegistrationsApproved { .. } => {
                self.told_fleet_change(out);
                return;
            }
            Event::ReplicaEndpoint { job, .. } => {
                let service = job.workload().as_replica().map(|(s, _)| ServiceId(s));
                out.extend(service.and_then(|s| self.told_service(s)));
                return;
            }
            Event::NodeRegistered { registration, .. } => {
                out.push(Told::everyone(Change::Node {
                    node: registration.node.clone(),
                    state: "registered".into(),
                    reason: "its agent registered it: it joins once approved".into(),
                }));
                return;
            }
            _ => {}
        }
        let (node, reason) = match event {
            Event::NodeUp { node, .. } => (node, "its agent reported"),
            Event::NodeDown { node, .. } => (node, "its agent went silent or reported it failed"),
            Event::NodeDrain { node, drain, .. } => (
                node,
                if *drain {
                    "drained by an operator"
                } else {
                    "resumed by an operator"
                },
            ),
            _ => return,
        };
        let fleet = self.sched.engine().fleet();
        // A drain may name a topology path: one event for all of it.
        let state = match fleet.node_by_name(node) {
            Some(n) => format!("{:?}", fleet.node(n).state).to_lowercase(),
            None => match event {
                Event::NodeDrain { drain: true, .. } => "draining".into(),
                _ => "ready".into(),
            },
        };
        out.push(Told::everyone(Change::Node {
            node: node.clone(),
            state,
            reason: reason.into(),
        }));
    }

    /// A fleet change: one event for each kind of change, its nodes as a host list.
    fn told_fleet_change(&self, out: &mut Vec<Told>) {
        let Some(c) = self.last_fleet_change() else {
            return;
        };
        let kinds = [
            (
                &c.added,
                "down",
                "joined the fleet: takes work once its agent reports",
            ),
            (
                &c.leaving,
                "draining",
                "removed from the fleet: leaves once its work ends",
            ),
            (&c.removed, "gone", "left the fleet"),
            (&c.moved, "moved", "moved in the topology"),
            (&c.kept, "ready", "named again by the fleet: stays"),
        ];
        for (set, state, reason) in kinds {
            if set.count > 0 {
                out.push(Told::everyone(Change::Node {
                    node: set.names.clone(),
                    state: state.into(),
                    reason: reason.into(),
                }));
            }
        }
    }

    fn told_decision(&self, decision: &Decision, out: &mut Vec<Told>) {
        let fleet = self.sched.engine().fleet();
        match decision {
            Decision::Preempt { job, by, deadline } => {
                let Some(tenant) = self.workload_tenant(*job) else {
                    return;
                };
                let mut told = Told::tenant(
                    tenant,
                    Change::Preempted {
                        job: job.0,
                        tenant: tenant.to_string(),
                        by: Some(by.0),
                        stops_at: *deadline,
                    },
                );
                told.preemptor = self.workload_tenant(*by).map(str::to_string);
                out.push(told);
            }
            Decision::Requeue {
                job,
                lost_gpu_hours,
            } => out.extend(self.requeued(
                *job,
                "preempted or a node failed: queued again".into(),
                *lost_gpu_hours,
            )),
            Decision::Replace {
                job,
                failed,
                replacement,
                lost_gpu_hours,
            } => out.extend(self.requeued(
                *job,
                format!(
                    "node {} failed: restarted in place with spare {}",
                    fleet.node(*failed).name,
                    fleet.node(*replacement).name
                ),
                *lost_gpu_hours,
            )),
            _ => {}
        }
    }

    /// A job stopped and was queued again, or restarted in place, and why.
    fn requeued(&self, job: WorkloadId, reason: String, lost_gpu_hours: f64) -> Option<Told> {
        let tenant = self.workload_tenant(job)?;
        Some(Told::tenant(
            tenant,
            Change::Requeued {
                job: job.0,
                tenant: tenant.to_string(),
                reason,
                lost_gpu_hours,
            },
        ))
    }

    /// The tenant of a job, a service's replica or a batch.
    fn workload_tenant(&self, id: WorkloadId) -> Option<&str> {
        if let Some((service, _)) = id.as_replica() {
            return self.service_tenant(ServiceId(service));
        }
        match self.jobs.get(&JobId(id.0)) {
            Some(m) => Some(self.tenant_name(m.tenant)),
            None => self.batch_tenant(BatchId(id.0)),
        }
    }

    fn told_job(&self, record: &JobRecord) -> Option<Told> {
        let id = record.id();
        let (name, tenant, exit_code) = match id.as_replica() {
            Some((service, _)) => (
                id.to_string(),
                self.service_tenant(ServiceId(service))?,
                None,
            ),
            None => {
                let m = self.jobs.get(&JobId(id.0))?;
                (m.name.clone(), self.tenant_name(m.tenant), m.exit_code)
            }
        };
        let fleet = self.sched.engine().fleet();
        let (state, nodes) = match record {
            JobRecord::Live(l) => {
                let nodes = l.gang.as_ref().map(|g| {
                    let mut names: Vec<&str> =
                        g.slots.iter().map(|s| &*fleet.node(s.node).name).collect();
                    names.sort_unstable();
                    model::hostlist::compress(&names)
                });
                (views::state_name(&l.state), nodes)
            }
            JobRecord::Ended { state, .. } => (views::state_name(state), None),
        };
        let service = id.as_replica().map(|(s, _)| s);
        Some(Told::tenant(
            tenant,
            Change::Job {
                job: id.0,
                name,
                tenant: tenant.to_string(),
                state: state.into(),
                nodes,
                service,
                exit_code,
            },
        ))
    }

    fn told_batch(&self, id: WorkloadId) -> Option<Told> {
        let view = self.batch_view(BatchId(id.0))?;
        let tenant = self.batch_tenant(BatchId(id.0))?;
        Some(Told::tenant(
            tenant,
            Change::Batch {
                batch: id.0,
                name: view.name,
                tenant: view.tenant,
                state: view.state,
                live: view.live,
                count: view.count,
            },
        ))
    }

    fn told_service(&self, id: ServiceId) -> Option<Told> {
        let meta = self.services.get(&id)?;
        let tenant = self.tenant_name(meta.tenant);
        let status = self.sched.service_status(id.0);
        Some(Told::tenant(
            tenant,
            Change::Service {
                service: id.0,
                name: meta.name.clone(),
                tenant: tenant.to_string(),
                state: meta.state_name().into(),
                desired: status.as_ref().map_or(0, |s| s.desired),
                replicas: status.as_ref().map_or(0, |s| s.running + s.pending),
                ready: self.ready_replicas(id),
            },
        ))
    }
}
