//! Why a pending job waits, in words: reasons are small values a pass writes and are
//! rendered only when someone asks.

use super::*;

impl Scheduler {
    /// Why a pending job is not running.
    pub fn pending_reason(&self, id: WorkloadId) -> Option<String> {
        let job = self.jobs.get(&id)?;
        let held = |h: &Option<HeldFor>| match h {
            Some(h) => format!(
                "; {} nodes are held for {}'s reservation until t={}",
                h.nodes, h.job, h.start
            ),
            None => String::new(),
        };
        let tenant = &self.tenants[job.spec.tenant.0 as usize];
        let like = self.failed_like(job);
        Some(match job.reason.as_ref()? {
            Reason::NotConsidered | Reason::Requeued if like.is_some() => format!(
                "a job of the same shape ({}) could not be placed in the last pass",
                like.map_or_else(String::new, |l| l.to_string())
            ),
            Reason::NotConsidered => "not yet considered by a scheduling pass".into(),
            Reason::Requeued => "requeued; waiting for the next pass".into(),
            Reason::Quota { what, want, have, cohort: false } => format!(
                "tenant '{}' quota: would use {want} {what}, quota is {have} (no cohort to borrow from)",
                tenant.spec.name
            ),
            Reason::Quota { what, want, have, cohort: true } => format!(
                "tenant '{}' quota: cohort '{}' would use {want} {what}, its quotas total {have}",
                tenant.spec.name,
                tenant.spec.cohort.as_deref().unwrap_or("?")
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
            Reason::SameShape { like, held_for } => format!(
                "a job of the same shape ({like}) could not be placed in this pass{}",
                held(held_for)
            ),
            Reason::WaitingForPreemption { until } => format!(
                "waiting for preemption grace of {} until t={until}",
                list(&job.waiting_for)
            ),
            Reason::BehindHead { head } => {
                format!("first in, first out: waiting behind {head}, which cannot start")
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
        let mut at = id;
        for _ in 0..4 {
            let job = self.jobs.get(&at)?;
            let like = match job.reason.as_ref()? {
                Reason::SameShape { like, .. } => Some(*like),
                Reason::NotConsidered | Reason::Requeued => self.failed_like(job),
                _ => None,
            };
            match like {
                Some(l) if l != at && self.jobs.contains_key(&l) => at = l,
                _ => break,
            }
        }
        let reason = self.pending_reason(at)?;
        Some(if at == id {
            reason
        } else {
            format!("as for {at}, a job of its shape: {reason}")
        })
    }
}
