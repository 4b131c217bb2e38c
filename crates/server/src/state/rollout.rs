//! Rolling updates. A service's new version (command, environment, a version label) is a
//! [`Event::ServiceRollout`]: its task becomes the target and each replica keeps the revision
//! it started with. The writer's clock asks [`ControlPlane::rollout_events`] each second for
//! the next [`Event::RolloutStep`]: a surge of new replicas (up to `max_surge` above the
//! desired count) and old replicas retired once enough replicas are ready (never fewer than
//! the desired count less `max_unavailable`); not-ready old ones go first. When no old replica
//! is left the surge ends and the update is done. New replicas that crash as they start, or do
//! not become ready within the progress deadline, roll it back ([`Event::RolloutUndo`], also
//! `stargrid rollout undo`): the old version becomes the target and rolls back the same way.

use super::admission::{bad, check_task};
use super::*;
use crate::api::{RolloutView, StartRollout, MAX_VERSION_LEN};

/// A version of a service's task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Its number (0: the task the service was created with).
    pub number: u32,
    /// Its label.
    pub version: String,
    /// What its replicas run.
    pub task: TaskSpec,
}

/// A rolling update under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The revision replicas move away from.
    pub from: Revision,
    /// Replicas above the desired count while new ones come up.
    pub max_surge: u32,
    /// Ready replicas it may take below the desired count.
    pub max_unavailable: u32,
    /// Seconds new replicas have to become ready after the last step that retired any.
    pub progress_deadline_s: u32,
    /// When it started.
    pub started_at: u64,
    /// Its last step that retired replicas (or its start).
    pub progress_at: u64,
    /// Rolled back, and why.
    pub rolled_back: Option<String>,
    /// A canary first: the share of traffic, per cent, its one new replica gets.
    #[serde(default)]
    pub canary_percent: Option<u32>,
    /// The canary was promoted: the update goes on.
    #[serde(default)]
    pub promoted: bool,
    /// Replicas of the new version that exited as they started, in a row.
    #[serde(default)]
    pub new_quick_exits: u32,
}

impl Rollout {
    /// The share of traffic the new version's replicas get now, while a canary holds.
    pub fn canary(&self) -> Option<u32> {
        self.canary_percent
            .filter(|_| !self.promoted && self.rolled_back.is_none())
    }
}

/// Replica crashes in a row (as they start) that roll an update back.
const CRASHES_TO_ROLL_BACK: u32 = 3;

impl ControlPlane {
    /// Turns a request into a `ServiceRollout` event, checking every field.
    pub fn rollout_event(
        &self,
        id: ServiceId,
        req: &StartRollout,
        at: u64,
    ) -> Result<Event, FieldProblem> {
        let m = self
            .services
            .get(&id)
            .filter(|m| m.deleted_at.is_none())
            .ok_or_else(|| bad("id", format!("no active service {}", id.0)))?;
        if req.version.is_empty()
            || req.version.len() > MAX_VERSION_LEN
            || !req.version.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(bad("version", "1 to 64 printable characters".into()));
        }
        if req.version == m.version {
            return Err(bad(
                "version",
                format!("the service runs version '{}' already", m.version),
            ));
        }
        if m.rollout.is_some() {
            return Err(bad(
                "version",
                "a rolling update is under way: wait for it, or undo it".into(),
            ));
        }
        if req.max_surge == 0 && req.max_unavailable == 0 {
            return Err(bad(
                "max_surge",
                "max_surge and max_unavailable cannot both be 0: nothing could move".into(),
            ));
        }
        if req.max_surge > m.spec.max_replicas.max(1) {
            return Err(bad(
                "max_surge",
                format!("at most max_replicas ({})", m.spec.max_replicas),
            ));
        }
        if !(10..=3600).contains(&req.progress_deadline_s) {
            return Err(bad("progress_deadline_s", "10 to 3600 seconds".into()));
        }
        if req.canary_percent.is_some_and(|p| !(1..=99).contains(&p)) {
            return Err(bad("canary_percent", "1 to 99 per cent".into()));
        }
        if req.command.is_some() && !m.task.roles.is_empty() {
            return Err(bad(
                "command",
                "a service with roles runs its roles' commands; roll out env or a version".into(),
            ));
        }
        let command = req.command.as_ref().unwrap_or(&m.task.command);
        let env = req.env.as_ref().unwrap_or(&m.task.env);
        check_task(command, env, &BTreeMap::new(), m.task.workdir.as_ref())?;
        let task = TaskSpec {
            command: command.clone(),
            env: env.clone(),
            ..m.task.clone()
        };
        Ok(Event::ServiceRollout {
            id,
            version: req.version.clone(),
            task,
            max_surge: req.max_surge,
            max_unavailable: req.max_unavailable,
            progress_deadline_s: req.progress_deadline_s,
            canary_percent: req.canary_percent,
            at,
        })
    }

    /// Applies a new version: it becomes the target; running replicas keep theirs.
    pub(super) fn start_rollout(
        &mut self,
        id: ServiceId,
        version: &str,
        task: &TaskSpec,
        limits: (u32, u32, u32),
        canary_percent: Option<u32>,
        at: u64,
    ) -> Result<(), StateError> {
        self.live_service(id)?;
        let replicas = self.sched.service_replicas(id.0);
        let Some(m) = self.services.get_mut(&id) else {
            return Ok(());
        };
        // What admission checked, checked again: a journal's event must hold on its own.
        let (max_surge, max_unavailable, _) = limits;
        if m.rollout.is_some() || (max_surge == 0 && max_unavailable == 0) {
            return Err(StateError::Conflict(
                "a rolling update is under way, or could not move".into(),
            ));
        }
        let from = Revision {
            number: m.revision,
            version: m.version.clone(),
            task: std::mem::replace(&mut m.task, task.clone()),
        };
        // Replicas that never had a revision noted (from before rolling updates) run the old.
        for r in replicas {
            self.replica_revisions
                .entry(JobId(r.0))
                .or_insert(from.number);
        }
        m.revision = m.next_revision;
        m.next_revision += 1;
        m.version = version.to_string();
        m.rolled_back = None;
        m.quick_exits = 0;
        m.replace_at = None;
        let (max_surge, max_unavailable, progress_deadline_s) = limits;
        m.rollout = Some(Rollout {
            from,
            max_surge,
            max_unavailable,
            progress_deadline_s,
            started_at: at,
            progress_at: at,
            rolled_back: None,
            canary_percent,
            promoted: false,
            new_quick_exits: 0,
        });
        Ok(())
    }

    /// Promotes a rolling update's canary.
    pub(super) fn promote_rollout(&mut self, id: ServiceId) -> Result<(), StateError> {
        self.live_service(id)?;
        match self
            .services
            .get_mut(&id)
            .and_then(|m| m.rollout.as_mut())
            .filter(|r| r.canary().is_some())
        {
            Some(r) => {
                r.promoted = true;
                // The deadline counts from the promotion, not from the canary's start.
                r.progress_at = r.progress_at.max(self.now);
                Ok(())
            }
            None => Err(StateError::Conflict(
                "the service has no canary to promote".into(),
            )),
        }
    }

    /// Rolls an update back (or, once done, goes back to the previous version): the version
    /// left becomes the target again.
    pub(super) fn undo_rollout(
        &mut self,
        id: ServiceId,
        reason: &str,
        at: u64,
    ) -> Result<(), StateError> {
        self.live_service(id)?;
        let replicas = self.sched.service_replicas(id.0);
        let Some(m) = self.services.get_mut(&id) else {
            return Ok(());
        };
        // Refused before anything changes: a refused event leaves the state as it was.
        match (&m.rollout, &m.previous) {
            (Some(r), _) if r.rolled_back.is_some() => {
                return Err(StateError::Conflict(
                    "the update is being rolled back already".into(),
                ))
            }
            (None, None) => {
                return Err(StateError::Conflict(
                    "the service has no earlier version to go back to".into(),
                ))
            }
            _ => {}
        }
        let back = match (m.rollout.take(), m.previous.take()) {
            (Some(r), previous) => {
                // An earlier finished version stays what a later undo goes back to.
                m.previous = previous;
                (
                    r.from,
                    r.max_surge,
                    r.max_unavailable,
                    r.progress_deadline_s,
                )
            }
            (None, Some(p)) => (p, 1, 0, 120),
            (None, None) => return Ok(()),
        };
        let (to, max_surge, max_unavailable, progress_deadline_s) = back;
        for r in replicas {
            self.replica_revisions
                .entry(JobId(r.0))
                .or_insert(m.revision);
        }
        let from = Revision {
            number: m.revision,
            version: std::mem::replace(&mut m.version, to.version),
            task: std::mem::replace(&mut m.task, to.task),
        };
        m.revision = to.number;
        m.quick_exits = 0;
        m.replace_at = None;
        m.rollout = Some(Rollout {
            from,
            max_surge: max_surge.max(1),
            max_unavailable,
            progress_deadline_s,
            started_at: at,
            progress_at: at,
            rolled_back: Some(reason.to_string()),
            canary_percent: None,
            promoted: false,
            new_quick_exits: 0,
        });
        Ok(())
    }

    /// Applies a step: the surge set, the named old replicas retired; or the update done.
    pub(super) fn rollout_step(
        &mut self,
        id: ServiceId,
        surge: u32,
        retire: &[JobId],
        done: bool,
        at: u64,
    ) -> Result<(), StateError> {
        self.live_service(id)?;
        let retire: Vec<WorkloadId> = retire.iter().map(|j| j.workload()).collect();
        // One step of the queue's, refused before it changes anything.
        self.decide(|s| s.step_service(id.0, surge, &retire, at).map(|_| ()))?;
        self.forget_stopped_endpoints(id);
        if let Some(m) = self.services.get_mut(&id) {
            if done {
                if let Some(r) = m.rollout.take() {
                    m.rolled_back = r.rolled_back;
                    m.previous = Some(r.from);
                }
            } else if let Some(r) = m.rollout.as_mut().filter(|_| !retire.is_empty()) {
                r.progress_at = at;
            }
        }
        self.routes_changed();
        Ok(())
    }

    /// A replica that starts for the first time runs its service's target revision, but
    /// while a canary holds only one does: the others (scale-ups, replacements) run the old.
    pub(super) fn note_replica_revision(&mut self, job: WorkloadId) {
        let Some((service, _)) = job.as_replica() else {
            return;
        };
        let Some(m) = self.services.get(&ServiceId(service)) else {
            return;
        };
        if self.replica_revisions.contains_key(&JobId(job.0)) {
            return;
        }
        let revision = match m.rollout.as_ref().filter(|r| r.canary().is_some()) {
            Some(r) => {
                let has_canary = self.sched.service_replicas(service).iter().any(|w| {
                    *w != job && self.replica_revisions.get(&JobId(w.0)) == Some(&m.revision)
                });
                if has_canary {
                    r.from.number
                } else {
                    m.revision
                }
            }
            None => m.revision,
        };
        self.replica_revisions.insert(JobId(job.0), revision);
    }

    /// Whether replica `job` of service `id` runs the version being rolled out (its exits are
    /// what roll an update back).
    pub(super) fn runs_new_version(&self, id: ServiceId, job: JobId) -> bool {
        self.services
            .get(&id)
            .filter(|m| m.rollout.is_some())
            .is_some_and(|m| self.replica_is_new(job.workload(), m))
    }

    /// The task replica `job` of service `m` runs: its revision's.
    pub(super) fn replica_task<'a>(&'a self, job: WorkloadId, m: &'a ServiceMeta) -> &'a TaskSpec {
        match self.replica_revisions.get(&JobId(job.0)) {
            Some(rev) if *rev != m.revision => match (&m.rollout, &m.previous) {
                (Some(r), _) if r.from.number == *rev => &r.from.task,
                (None, Some(p)) if p.number == *rev => &p.task,
                _ => &m.task,
            },
            _ => &m.task,
        }
    }

    /// The share of traffic service `id`'s canary gets now, if it has one.
    pub(super) fn canary_share(&self, id: ServiceId) -> Option<u32> {
        self.services.get(&id)?.rollout.as_ref()?.canary()
    }

    /// Whether replica `job` of service `id` is its canary (runs the new version while a
    /// canary holds).
    pub(super) fn is_canary(&self, id: ServiceId, job: WorkloadId) -> bool {
        self.canary_share(id).is_some()
            && self
                .services
                .get(&id)
                .is_some_and(|m| self.replica_is_new(job, m))
    }

    fn replica_is_new(&self, job: WorkloadId, m: &ServiceMeta) -> bool {
        self.replica_revisions
            .get(&JobId(job.0))
            .is_none_or(|rev| *rev == m.revision)
    }

    /// The steps rolling updates take now (see the module documentation).
    pub fn rollout_events(&self, at: u64) -> Vec<Event> {
        let mut out = Vec::new();
        for (id, m) in &self.services {
            let (Some(r), None) = (&m.rollout, m.deleted_at) else {
                continue;
            };
            let Some(status) = self.sched.service_status(id.0) else {
                continue;
            };
            let replicas = self.sched.service_replicas(id.0);
            let ready: BTreeSet<u64> = self
                .service_endpoints(*id)
                .iter()
                .map(|e| e.replica)
                .collect();
            let (new, old): (Vec<WorkloadId>, Vec<WorkloadId>) =
                replicas.iter().partition(|w| self.replica_is_new(**w, m));
            if old.is_empty() {
                out.push(Event::RolloutStep {
                    id: *id,
                    surge: 0,
                    retire: Vec::new(),
                    done: true,
                    at,
                });
                continue;
            }
            if r.rolled_back.is_none() {
                let late = at > r.progress_at + u64::from(r.progress_deadline_s);
                let new_not_ready = new.iter().any(|w| !ready.contains(&w.0));
                let crashing = r.new_quick_exits >= CRASHES_TO_ROLL_BACK;
                if crashing || (late && new_not_ready) {
                    let reason = if crashing {
                        format!(
                            "{} new replicas in a row exited as they started",
                            r.new_quick_exits
                        )
                    } else {
                        format!(
                            "new replicas were not ready within {} s",
                            r.progress_deadline_s
                        )
                    };
                    out.push(Event::RolloutUndo {
                        id: *id,
                        reason,
                        at,
                    });
                    continue;
                }
            }
            if r.canary().is_some() {
                // One new replica takes its share; nothing is retired until the promotion.
                if status.surge != 1 {
                    out.push(Event::RolloutStep {
                        id: *id,
                        surge: 1,
                        retire: Vec::new(),
                        done: false,
                        at,
                    });
                }
                continue;
            }
            // The surge stays until no old replica is left; one that shrinks (a promoted canary
            // with none) does so in a step of its own, so that what it cancels is counted.
            let surge = r.max_surge;
            if surge < status.surge {
                out.push(Event::RolloutStep {
                    id: *id,
                    surge,
                    retire: Vec::new(),
                    done: false,
                    at,
                });
                continue;
            }
            let available = replicas.iter().filter(|w| ready.contains(&w.0)).count() as u32;
            let floor = status.desired.saturating_sub(r.max_unavailable);
            let mut may_take = available.saturating_sub(floor);
            let mut retire: Vec<JobId> = Vec::new();
            // Old replicas that serve nothing go at once; ready ones while enough stay ready.
            for w in &old {
                if !ready.contains(&w.0) {
                    retire.push(JobId(w.0));
                } else if may_take > 0 {
                    may_take -= 1;
                    retire.push(JobId(w.0));
                }
            }
            if surge != status.surge || !retire.is_empty() {
                out.push(Event::RolloutStep {
                    id: *id,
                    surge,
                    retire,
                    done: false,
                    at,
                });
            }
        }
        out
    }

    /// Where service `id`'s rolling update stands.
    pub fn rollout_view(&self, id: ServiceId) -> Option<RolloutView> {
        let m = self.services.get(&id)?;
        let replicas = self.sched.service_replicas(id.0);
        let ready: BTreeSet<u64> = self
            .service_endpoints(id)
            .iter()
            .map(|e| e.replica)
            .collect();
        let (new, old): (Vec<WorkloadId>, Vec<WorkloadId>) =
            replicas.iter().partition(|w| self.replica_is_new(**w, m));
        let state = match (&m.rollout, &m.previous) {
            (Some(r), _) if r.rolled_back.is_some() => "rolling-back",
            (Some(r), _) if r.canary().is_some() => "canary",
            (Some(_), _) => "rolling",
            (None, _) if m.rolled_back.is_some() => "rolled-back",
            (None, Some(_)) => "done",
            (None, None) => "none",
        };
        Some(RolloutView {
            service: id.0,
            state: state.into(),
            version: m.version.clone(),
            previous_version: match (&m.rollout, &m.previous) {
                (Some(r), _) => Some(r.from.version.clone()),
                (None, p) => p.as_ref().map(|p| p.version.clone()),
            },
            old_replicas: old.len() as u32,
            new_replicas: new.len() as u32,
            new_ready: new.iter().filter(|w| ready.contains(&w.0)).count() as u32,
            surge: self.sched.service_status(id.0).map_or(0, |s| s.surge),
            started_at: m.rollout.as_ref().map(|r| r.started_at),
            reason: match &m.rollout {
                Some(r) => r.rolled_back.clone(),
                None => m.rolled_back.clone(),
            },
            canary_percent: m.rollout.as_ref().and_then(Rollout::canary),
        })
    }
}
