//! Why a pending job waits, in words: reasons are small values a pass writes and are
//! rendered only when someone asks.

use super::*;

impl Scheduler {
    /// Why a pending job is not running.
    pub fn pending_reason(&self, id: WorkloadId) -> Option<String> {
        self.pending_reason_for(id, None)
    }

    /// Why a pending job is not running, as tenant `viewer` may read it (`None`: an operator,
    /// who sees everything): other tenants' jobs are never named, only what they hold.
    pub fn pending_reason_for(&self, id: WorkloadId, viewer: Option<TenantId>) -> Option<String> {
        let job = self.jobs.get(&id)?;
        let seen = |w: WorkloadId| match viewer {
            None => true,
            Some(t) => self.jobs.get(&w).is_some_and(|j| j.spec.tenant == t),
        };
        let held = |h: &Option<HeldFor>| match h {
            Some(h) if seen(h.job) => format!(
                "; {} nodes are held for {}'s reservation until t={}",
                h.nodes, h.job, h.start
            ),
            Some(h) => format!(
                "; {} nodes are held for a reservation until t={}",
                h.nodes, h.start
            ),
            None => String::new(),
        };
        let same_shape = |like: WorkloadId, when: &str| {
            if seen(like) {
                format!("a job of the same shape ({like}) could not be placed in {when}")
            } else {
                format!("a job of the same shape could not be placed in {when}")
            }
        };
        let tenant = &self.tenants[job.spec.tenant.0 as usize];
        let like = self.failed_like(job);
        Some(match job.reason.as_ref()? {
            Reason::NotConsidered | Reason::Requeued if like.is_some() => {
                same_shape(like.unwrap_or(id), "the last pass")
            }
            Reason::NotConsidered => "not yet considered by a scheduling pass".into(),
            Reason::Requeued => "requeued; waiting for the next pass".into(),
            Reason::Quota { what, want, have, cohort: false } => format!(
                "tenant '{}' quota: would use {} {what}, quota is {} (no cohort to borrow from)",
                tenant.spec.name,
                what.amount(*want),
                what.amount(*have)
            ),
            Reason::Quota { what, want, have, cohort: true } => format!(
                "tenant '{}' quota: cohort '{}' would use {} {what}, its quotas total {}",
                tenant.spec.name,
                tenant.spec.cohort.as_deref().unwrap_or("?"),
                what.amount(*want),
                what.amount(*have)
            ),
            Reason::Unplaceable { text, held_for } => {
                let text = match text {
                    Some(t) => t.to_string(),
                    None => {
                        let spread = self.spread_filter(id);
                        match self.engine.explain_gang(&job.spec.gang, &|t| spread.allows(t)) {
                            Some(u) => u.reason,
                            None => "it fits now; it starts at the next pass".into(),
                        }
                    }
                };
                format!("{text}{}", held(held_for))
            }
            Reason::SameShape { like, held_for } => {
                format!("{}{}", same_shape(*like, "this pass"), held(held_for))
            }
            Reason::WaitingForPreemption { until } => {
                let (named, others): (Vec<WorkloadId>, Vec<WorkloadId>) =
                    job.waiting_for.iter().partition(|w| seen(**w));
                let whom = match (named.is_empty(), others.len()) {
                    (_, 0) => list(&named),
                    (true, n) => format!("{n} jobs"),
                    (false, n) => format!("{} and {n} more", list(&named)),
                };
                format!("waiting for preemption grace of {whom} until t={until}")
            }
            Reason::BehindHead { head } if seen(*head) => {
                format!("first in, first out: waiting behind {head}, which cannot start")
            }
            Reason::BehindHead { .. } => {
                "first in, first out: waiting behind the job at the head of the queue, which cannot start".into()
            }
            Reason::Reserved { start, nodes } => format!(
                "reserved {nodes} nodes from t={start} (when running jobs reach their time limits)"
            ),
        })
    }

    /// A job a pass passed over (its shape had already failed) has no fresh reason: the job of
    /// its shape, no larger, that failed in the last pass.
    pub(super) fn failed_like(&self, job: &Job) -> Option<WorkloadId> {
        self.last_failed
            .get(&shape_of(&job.spec))
            .filter(|f| job.spec.gang.nodes >= f.nodes)
            .map(|f| f.job)
    }

    /// Like [`Scheduler::pending_reason`], but a job passed over because a job of its shape
    /// failed gets that job's reason (followed a few steps), naming it.
    pub fn pending_root_reason(&self, id: WorkloadId) -> Option<String> {
        self.pending_root_reason_for(id, None)
    }

    /// [`Scheduler::pending_root_reason`] as tenant `viewer` may read it: the chain is followed
    /// only through its own jobs.
    pub fn pending_root_reason_for(
        &self,
        id: WorkloadId,
        viewer: Option<TenantId>,
    ) -> Option<String> {
        let seen = |w: WorkloadId| match viewer {
            None => true,
            Some(t) => self.jobs.get(&w).is_some_and(|j| j.spec.tenant == t),
        };
        let mut at = id;
        for _ in 0..4 {
            let job = self.jobs.get(&at)?;
            let like = match job.reason.as_ref()? {
                Reason::SameShape { like, .. } => Some(*like),
                Reason::NotConsidered | Reason::Requeued => self.failed_like(job),
                _ => None,
            };
            match like {
                Some(l) if l != at && self.jobs.contains_key(&l) && seen(l) => at = l,
                _ => break,
            }
        }
        let reason = self.pending_reason_for(at, viewer)?;
        Some(if at == id {
            reason
        } else {
            format!("as for {at}, a job of its shape: {reason}")
        })
    }
}
