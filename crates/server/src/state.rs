//! The control plane's state as a function of its journal.
//!
//! Every accepted change is an [`Event`]; [`ControlPlane::apply`] is deterministic (the time is
//! in the event, the queue never reads a clock), so replaying the journal rebuilds the very same
//! queue and engine: same placements, same reasons, same reservations. The server applies an
//! event in memory and queues it for the journal in one critical section, so the journal's
//! order is the order of application; it answers the client only once the event is durable.

use crate::api::{FieldProblem, JobView, NodeView, SubmitJob, TenantView};
use model::{
    Fleet, GangRequest, GpuModel, InstanceCatalog, JobSpec, PriorityClass, TenantId, TenantSpec,
    WorkloadClass, WorkloadId,
};
use sched::{Decision, Engine, JobState, SchedConfig, Scheduler};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One accepted change. The journal holds these as JSON, one per record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The first record of a journal: the fleet (a fleet file's text) and the tenants.
    Init {
        /// The fleet, in the TOML fleet-file format.
        fleet_toml: String,
        /// Tenants; a tenant's id is its index.
        tenants: Vec<TenantSpec>,
        /// Unix seconds.
        at: u64,
    },
    /// A training job was accepted.
    Submit {
        /// Its id, assigned by the server.
        id: u64,
        /// Its name (not unique).
        name: String,
        /// What it asks for.
        spec: JobSpec,
        /// Unix seconds.
        at: u64,
    },
    /// A job was cancelled.
    Cancel {
        /// The job.
        id: u64,
        /// Unix seconds.
        at: u64,
    },
    /// A scheduling pass ran.
    Pass {
        /// Unix seconds.
        at: u64,
    },
}

impl Event {
    /// The event's time.
    pub fn at(&self) -> u64 {
        match self {
            Event::Init { at, .. }
            | Event::Submit { at, .. }
            | Event::Cancel { at, .. }
            | Event::Pass { at } => *at,
        }
    }
}

/// Why an event cannot be applied. For a new request this is the client's error; during replay
/// it means the journal does not belong to this build or was damaged.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The journal does not start with `Init`, or has a second one.
    #[error("journal record {0}: {1}")]
    Sequence(u64, String),
    /// The fleet text in `Init` does not parse.
    #[error("fleet in the journal: {0}")]
    Fleet(String),
    /// The queue refused the change.
    #[error("{0}")]
    Refused(String),
}

#[derive(Clone, Debug)]
struct JobMeta {
    name: String,
    tenant: TenantId,
    gpus: u64,
    submitted_at: u64,
    /// When it was cancelled.
    ended_at: Option<u64>,
}

/// The queue, the engine and what the API shows of them.
pub struct ControlPlane {
    sched: Scheduler,
    tenants: Vec<TenantSpec>,
    jobs: BTreeMap<u64, JobMeta>,
    next_id: u64,
    now: u64,
    /// Something was submitted or cancelled since the last pass.
    dirty: bool,
}

/// A small fleet for a local control plane: two GB200 NVL72 domains and four CPU hosts, as a
/// fleet file's text.
pub fn default_fleet_toml() -> Result<String, StateError> {
    let spec = fleet::generate::GenSpec {
        gpus: 144,
        cpu_hosts: 4,
        ..fleet::generate::GenSpec::default()
    };
    let mut spec = spec;
    spec.clouds.truncate(1);
    let catalog = InstanceCatalog::builtin();
    let fleet =
        fleet::generate::generate(&spec, &catalog).map_err(|e| StateError::Fleet(e.to_string()))?;
    Ok(fleet::file::write(&fleet, &catalog))
}

/// One tenant, `default`, with the whole fleet as quota.
pub fn default_tenants() -> Vec<TenantSpec> {
    let mut quota = model::ResourceVec {
        cpu_millis: u64::MAX / 4,
        memory_mib: u64::MAX / 4,
        ..model::ResourceVec::default()
    };
    for g in quota.gpus.iter_mut() {
        *g = u64::MAX / 4;
    }
    vec![TenantSpec {
        name: "default".into(),
        weight: 1.0,
        cohort: None,
        quota,
    }]
}

fn parse_fleet(text: &str) -> Result<Fleet, StateError> {
    fleet::file::parse("journal", text, InstanceCatalog::builtin())
        .map_err(|e| StateError::Fleet(e.to_string()))
}

impl ControlPlane {
    /// The state right after `Init`.
    pub fn new(init: &Event) -> Result<ControlPlane, StateError> {
        let Event::Init {
            fleet_toml,
            tenants,
            at,
        } = init
        else {
            return Err(StateError::Sequence(
                1,
                "the first record must be Init".into(),
            ));
        };
        let fleet = parse_fleet(fleet_toml)?;
        let sched = Scheduler::new(Engine::new(fleet), tenants.clone(), SchedConfig::default())
            .map_err(|e| StateError::Refused(e.to_string()))?;
        Ok(ControlPlane {
            sched,
            tenants: tenants.clone(),
            jobs: BTreeMap::new(),
            next_id: 1,
            now: *at,
            dirty: false,
        })
    }

    /// Rebuilds the state from a whole journal (`Init` first).
    pub fn replay(
        events: impl IntoIterator<Item = (u64, Event)>,
    ) -> Result<Option<ControlPlane>, StateError> {
        let mut plane: Option<ControlPlane> = None;
        for (seq, e) in events {
            match &mut plane {
                None => plane = Some(ControlPlane::new(&e)?),
                Some(p) => {
                    if matches!(e, Event::Init { .. }) {
                        return Err(StateError::Sequence(seq, "a second Init".into()));
                    }
                    p.apply(&e).map_err(|err| {
                        StateError::Sequence(seq, format!("does not apply: {err}"))
                    })?;
                }
            }
        }
        Ok(plane)
    }

    /// The time to stamp a new event with: the wall clock, never before the last event.
    pub fn stamp(&self, wall: u64) -> u64 {
        wall.max(self.now)
    }

    /// Whether a pass has anything new to look at.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// The time of the last applied event.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Applies one event. On error nothing changed.
    pub fn apply(&mut self, e: &Event) -> Result<Vec<Decision>, StateError> {
        let refused = |e: sched::SchedError| StateError::Refused(e.to_string());
        let decisions = match e {
            Event::Init { .. } => {
                return Err(StateError::Refused("the journal already has Init".into()))
            }
            Event::Submit { id, name, spec, at } => {
                self.sched
                    .submit(WorkloadId(*id), spec.clone(), *at)
                    .map_err(refused)?;
                self.jobs.insert(
                    *id,
                    JobMeta {
                        name: name.clone(),
                        tenant: spec.tenant,
                        gpus: spec.gang.total_gpus(),
                        submitted_at: *at,
                        ended_at: None,
                    },
                );
                self.next_id = self.next_id.max(id + 1);
                self.dirty = true;
                Vec::new()
            }
            Event::Cancel { id, at } => {
                self.sched.cancel(WorkloadId(*id), *at).map_err(refused)?;
                if let Some(m) = self.jobs.get_mut(id) {
                    m.ended_at = Some(*at);
                }
                self.dirty = true;
                Vec::new()
            }
            Event::Pass { at } => {
                self.dirty = false;
                self.sched.schedule(*at)
            }
        };
        self.now = self.now.max(e.at());
        Ok(decisions)
    }

    /// Turns a request into a `Submit` event, checking every field; changes nothing.
    pub fn submit_event(&self, req: &SubmitJob, at: u64) -> Result<Event, FieldProblem> {
        let bad = |field: &str, reason: String| FieldProblem {
            field: field.to_string(),
            reason,
        };
        if req.name.is_empty() || req.name.len() > 128 {
            return Err(bad("name", "must be 1 to 128 characters".into()));
        }
        if let Some(c) = req
            .name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
        {
            return Err(bad(
                "name",
                format!("'{c}' is not allowed (letters, digits, '-', '_', '.')"),
            ));
        }
        let tenant = self
            .tenants
            .iter()
            .position(|t| t.name == req.tenant)
            .ok_or_else(|| {
                let known: Vec<&str> = self.tenants.iter().map(|t| t.name.as_str()).collect();
                bad(
                    "tenant",
                    format!(
                        "unknown tenant '{}' (known: {})",
                        req.tenant,
                        known.join(", ")
                    ),
                )
            })?;
        let priority: PriorityClass = serde_json::from_value(serde_json::Value::String(
            req.priority.clone(),
        ))
        .map_err(|_| {
            bad(
                "priority",
                format!(
                    "unknown class '{}' (preemptible, research, training, production-inference)",
                    req.priority
                ),
            )
        })?;
        let gpu: GpuModel = req.gpu.parse().map_err(|e| bad("gpu", format!("{e}")))?;
        let spec = JobSpec {
            tenant: TenantId(tenant as u32),
            priority,
            gang: GangRequest {
                class: WorkloadClass::Training,
                gpu,
                nodes: req.nodes,
                gpus_per_node: req.gpus_per_node,
                cpu_millis_per_node: req.cpu_millis_per_node,
                memory_mib_per_node: req.memory_mib_per_node,
                segment: req.segment,
                spares: req.spares,
            },
            time_limit: req.time_limit_s,
        };
        spec.validate().map_err(|e| {
            let field = if e.field == "time_limit" {
                "time_limit_s"
            } else {
                e.field
            };
            bad(field, e.reason)
        })?;
        Ok(Event::Submit {
            id: self.next_id,
            name: req.name.clone(),
            spec,
            at,
        })
    }

    /// The job as the API shows it.
    pub fn job_view(&self, id: u64) -> Option<JobView> {
        let meta = self.jobs.get(&id)?;
        let wid = WorkloadId(id);
        let state = match self.sched.job(wid) {
            Some(j) => j.state.clone(),
            None => self.sched.ended_state(wid)?.clone(),
        };
        let nodes = match self.sched.engine().allocation(wid) {
            Some(sched::Allocation::Gang { slots, .. }) => slots
                .iter()
                .map(|s| self.sched.engine().fleet().node(s.node).name.to_string())
                .collect(),
            _ => Vec::new(),
        };
        let (state_name, since) = match &state {
            JobState::Pending => ("pending", None),
            JobState::Running { since } => ("running", Some(*since)),
            JobState::Preempting { since, .. } => ("preempting", Some(*since)),
            JobState::Finished | JobState::Cancelled => (
                if state == JobState::Finished {
                    "finished"
                } else {
                    "cancelled"
                },
                meta.ended_at,
            ),
        };
        Some(JobView {
            id,
            name: meta.name.clone(),
            tenant: self
                .tenants
                .get(meta.tenant.0 as usize)
                .map_or_else(String::new, |t| t.name.clone()),
            state: state_name.into(),
            since,
            submitted_at: meta.submitted_at,
            gpus: meta.gpus,
            nodes,
            reason: if state == JobState::Pending {
                self.sched.pending_reason(wid)
            } else {
                None
            },
        })
    }

    /// Jobs after id `after` (ascending), at most `limit`, optionally of one tenant and state.
    pub fn list(
        &self,
        tenant: Option<&str>,
        state: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Vec<JobView> {
        self.jobs
            .range(after.saturating_add(1)..)
            .filter_map(|(id, _)| self.job_view(*id))
            .filter(|v| tenant.is_none_or(|t| v.tenant == t))
            .filter(|v| state.is_none_or(|s| v.state == s))
            .take(limit)
            .collect()
    }

    /// Nodes with their state and free GPUs.
    pub fn nodes(&self) -> Vec<NodeView> {
        let engine = self.sched.engine();
        engine
            .fleet()
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (free_mask, free_cpu, _) = engine.node_free(model::NodeId(i as u32));
                NodeView {
                    name: n.name.to_string(),
                    state: format!("{:?}", n.state).to_lowercase(),
                    gpus: u32::from(n.capacity.gpus),
                    free_gpus: free_mask.count_ones(),
                    cpu_millis: n.capacity.cpu_millis,
                    free_cpu_millis: free_cpu,
                }
            })
            .collect()
    }

    /// Tenants with their usage.
    pub fn tenants(&self) -> Vec<TenantView> {
        self.sched
            .tenant_report()
            .into_iter()
            .map(|t| TenantView {
                name: t.name,
                gpus_in_use: t.usage.gpus.iter().sum(),
                dominant_share: t.dominant_share,
                lost_gpu_hours: t.lost_gpu_hours,
            })
            .collect()
    }

    /// Everything a restart must reproduce, as text: every job's view and placement, the
    /// engine's usage and the reservation. Two planes with equal fingerprints are the same to
    /// every client.
    pub fn fingerprint(&self) -> String {
        let views: Vec<JobView> = self
            .jobs
            .keys()
            .filter_map(|id| self.job_view(*id))
            .collect();
        let mut out = serde_json::to_string(&views).unwrap_or_default();
        out.push_str(&format!(
            "\nusage {:?} reservation {:?} next {} now {}",
            self.sched.engine().gpu_usage(),
            self.sched.reservation(),
            self.next_id,
            self.now
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn init() -> Event {
        Event::Init {
            fleet_toml: default_fleet_toml().unwrap(),
            tenants: default_tenants(),
            at: 100,
        }
    }

    fn req(name: &str, nodes: u32) -> SubmitJob {
        SubmitJob {
            name: name.into(),
            tenant: "default".into(),
            priority: "research".into(),
            gpu: "GB200".into(),
            nodes,
            gpus_per_node: 4,
            cpu_millis_per_node: 0,
            memory_mib_per_node: 0,
            segment: None,
            spares: 0,
            time_limit_s: 3600,
        }
    }

    #[test]
    fn replay_rebuilds_the_same_state() {
        let mut p = ControlPlane::new(&init()).unwrap();
        let mut journal = vec![init()];
        for (i, nodes) in [18, 18, 4, 30].into_iter().enumerate() {
            let e = p
                .submit_event(&req(&format!("j{i}"), nodes), 100 + i as u64)
                .unwrap();
            p.apply(&e).unwrap();
            journal.push(e);
        }
        for e in [
            Event::Pass { at: 110 },
            Event::Cancel { id: 2, at: 120 },
            Event::Pass { at: 121 },
        ] {
            p.apply(&e).unwrap();
            journal.push(e);
        }
        let again = ControlPlane::replay(
            journal
                .into_iter()
                .enumerate()
                .map(|(i, e)| (i as u64 + 1, e)),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.fingerprint(), again.fingerprint());
        let v = again.job_view(3).unwrap();
        assert_eq!(v.state, "running");
        assert_eq!(v.nodes.len(), 4);
        assert_eq!(again.job_view(2).unwrap().state, "cancelled");
        assert_eq!(again.job_view(4).unwrap().state, "pending");
    }

    #[test]
    fn bad_requests_name_the_field() {
        let p = ControlPlane::new(&init()).unwrap();
        let cases: Vec<(SubmitJob, &str)> = vec![
            (
                SubmitJob {
                    name: "".into(),
                    ..req("x", 1)
                },
                "name",
            ),
            (
                SubmitJob {
                    name: "a b".into(),
                    ..req("x", 1)
                },
                "name",
            ),
            (
                SubmitJob {
                    tenant: "nobody".into(),
                    ..req("x", 1)
                },
                "tenant",
            ),
            (
                SubmitJob {
                    priority: "urgent".into(),
                    ..req("x", 1)
                },
                "priority",
            ),
            (
                SubmitJob {
                    gpu: "Z9".into(),
                    ..req("x", 1)
                },
                "gpu",
            ),
            (req("x", 0), "nodes"),
            (
                SubmitJob {
                    time_limit_s: 0,
                    ..req("x", 1)
                },
                "time_limit_s",
            ),
        ];
        for (r, field) in cases {
            let e = p.submit_event(&r, 1).unwrap_err();
            assert_eq!(e.field, field, "{e:?}");
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn a_journal_must_start_with_init() {
        let e = ControlPlane::replay(vec![(1, Event::Pass { at: 1 })])
            .err()
            .unwrap();
        assert!(e.to_string().contains("first record must be Init"), "{e}");
        let e = ControlPlane::replay(vec![(1, init()), (2, init())])
            .err()
            .unwrap();
        assert!(e.to_string().contains("record 2: a second Init"), "{e}");
    }
}
