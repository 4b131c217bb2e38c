//! Where service replicas listen. A replica's agent gives it a port and probes it (its
//! service's `ready_path`, or its port taking connections); a change in what a replica's rank
//! 0 reports is journaled ([`Event::ReplicaEndpoint`]), and the service's ready replicas are
//! its endpoints (`GET /v1/services/{id}/endpoints`). A run that ends takes its endpoint with
//! it.

use super::*;
use crate::api::{ServiceEndpoint, TaskEndpoint};

/// A replica's endpoint as its agent last reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEndpoint {
    /// The run it belongs to.
    pub run: u32,
    /// The node of its rank 0.
    pub node: String,
    /// The address the node is reached at.
    pub address: String,
    /// The port.
    pub port: u16,
    /// Its probe passed.
    pub ready: bool,
}

/// The longest probe path a service may give.
pub const MAX_PROBE_PATH: usize = 256;

/// Checks a service's readiness or liveness path (`field`): absolute, printable, short.
pub(super) fn check_probe_path(field: &str, path: &str) -> Result<(), FieldProblem> {
    let bad = |reason: &str| FieldProblem {
        field: field.into(),
        reason: reason.into(),
    };
    if !path.starts_with('/') {
        return Err(bad("must start with '/'"));
    }
    if path.len() > MAX_PROBE_PATH {
        return Err(bad("longer than 256 bytes"));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("printable ASCII only, no spaces"));
    }
    Ok(())
}

/// Most words a probe command may have.
pub const MAX_PROBE_WORDS: usize = 64;
/// Most bytes a probe command may have, over its words.
pub const MAX_PROBE_COMMAND: usize = 4096;

/// Checks a service's readiness or liveness command (`field`): a program, short, no NUL, and
/// not given with the path of the same probe (`with_path`).
pub(super) fn check_probe_command(
    field: &str,
    command: &[String],
    with_path: bool,
) -> Result<(), FieldProblem> {
    let bad = |reason: String| FieldProblem {
        field: field.into(),
        reason,
    };
    if with_path {
        let path = field.replace("_command", "_path");
        return Err(bad(format!("give {field} or {path}, not both")));
    }
    if command.first().is_none_or(String::is_empty) {
        return Err(bad("needs a program".into()));
    }
    let bytes: usize = command.iter().map(String::len).sum();
    if command.len() > MAX_PROBE_WORDS || bytes > MAX_PROBE_COMMAND {
        return Err(bad(format!(
            "at most {MAX_PROBE_WORDS} words and {MAX_PROBE_COMMAND} bytes"
        )));
    }
    if command.iter().any(|w| w.contains('\0')) {
        return Err(bad("a word holds a NUL byte".into()));
    }
    Ok(())
}

impl ControlPlane {
    /// The event a replica's report brings, if its endpoint changed (rank 0 of a live
    /// replica's current run only; the caller checked the run and the node).
    pub(super) fn endpoint_event(
        &self,
        job: JobId,
        run: u32,
        rank: u32,
        node: &str,
        reported: &TaskEndpoint,
        at: u64,
    ) -> Option<Event> {
        if rank != 0 || job.workload().as_replica().is_none() {
            return None;
        }
        let now = ReplicaEndpoint {
            run,
            node: node.to_string(),
            address: reported.address.clone(),
            port: reported.port,
            ready: reported.ready,
        };
        if self.endpoints.get(&job) == Some(&now) {
            return None;
        }
        let valid = !now.address.is_empty() && now.address.len() <= 253 && now.port != 0;
        valid.then(|| Event::ReplicaEndpoint {
            job,
            endpoint: now,
            at,
        })
    }

    /// Keeps a replica's endpoint (refused for a replica that is not running that run).
    pub(super) fn set_endpoint(
        &mut self,
        job: JobId,
        e: &ReplicaEndpoint,
    ) -> Result<(), StateError> {
        self.current_world(job, e.run)?;
        self.endpoints.insert(job, e.clone());
        self.routes_changed();
        Ok(())
    }

    /// Forgets the endpoint of a replica whose run ended.
    pub(super) fn endpoint_gone(&mut self, job: JobId) {
        if self.endpoints.remove(&job).is_some() {
            self.routes_changed();
        }
    }

    /// Forgets the endpoints of service `id`'s replicas that a scaling, a deletion or a
    /// rolling update's step stopped (their runs end without an exit report), and the
    /// revisions of replicas gone.
    pub(super) fn forget_stopped_endpoints(&mut self, id: ServiceId) {
        let first = JobId(WorkloadId::replica(id.0, 0).0);
        let last = JobId(WorkloadId::replica(id.0, 0xFFFF_FFFF).0);
        let stopped: Vec<JobId> = self
            .endpoints
            .range(first..=last)
            .filter(|(job, e)| self.current_world(**job, e.run).is_err())
            .map(|(job, _)| *job)
            .collect();
        for job in stopped {
            self.endpoints.remove(&job);
        }
        // And the revisions of replicas the queue no longer has.
        let live: BTreeSet<u64> = self
            .sched
            .service_replicas(id.0)
            .iter()
            .map(|w| w.0)
            .collect();
        let gone: Vec<JobId> = self
            .replica_revisions
            .range(first..=last)
            .filter(|(j, _)| !live.contains(&j.0))
            .map(|(j, _)| *j)
            .collect();
        for j in gone {
            self.replica_revisions.remove(&j);
        }
    }

    /// How many of service `id`'s replicas are running with a ready endpoint.
    pub(super) fn ready_replicas(&self, id: ServiceId) -> u32 {
        self.service_endpoints(id).len() as u32
    }

    /// The ready endpoints of service `id`'s replicas, in replica order.
    pub fn service_endpoints(&self, id: ServiceId) -> Vec<ServiceEndpoint> {
        self.sched
            .service_replicas(id.0)
            .into_iter()
            .filter_map(|w| {
                let e = self.endpoints.get(&JobId(w.0))?;
                // A replica being preempted is stopping: no new requests.
                let running = self.sched.job(w).is_some_and(|j| {
                    j.restarts == e.run && matches!(j.state, JobState::Running { .. })
                });
                (running && e.ready).then(|| ServiceEndpoint {
                    replica: w.0,
                    node: e.node.clone(),
                    address: e.address.clone(),
                    port: e.port,
                    canary: self.is_canary(id, w),
                })
            })
            .collect()
    }
}
