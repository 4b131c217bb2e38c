//! One scheduling pass as a value: what a pass carries from one job to the next (the shapes
//! that failed, the victim searches that found nothing, the jobs left for backfill, the
//! strict-FIFO head) and its steps, in the order the module doc of `scheduler` gives them.

use super::{
    admit_on, admit_with, searched_recently, shape_of, Brief, Decision, JobState, Reason,
    Reservation, Scheduler, ShapeKey, Time,
};
use crate::engine::EngineError;
use model::{NodeId, PriorityClass, ResourceVec, TenantId, WorkloadId};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// A shape that failed to place: the fewest nodes that failed, and the job that did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShapeFailure {
    /// Nodes of the smallest job of the shape that failed.
    pub(crate) nodes: u32,
    /// That job.
    pub(crate) job: WorkloadId,
}

/// A victim search that found nothing: until `until`, a job of `shape` with `nodes` or more
/// and no higher class than `class` does not search (when its victims are exactly the lower
/// classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VainShape {
    /// Class of the job that searched.
    pub(crate) class: PriorityClass,
    /// Its shape.
    pub(crate) shape: ShapeKey,
    /// Its node count.
    pub(crate) nodes: u32,
    /// When the search may be tried again.
    pub(crate) until: Time,
}

/// A job that could not start in the main loop, for the backfill step.
#[derive(Clone, Copy, Debug)]
struct BackfillCandidate {
    id: WorkloadId,
    time_limit: Time,
    shape: ShapeKey,
    nodes: u32,
}

/// What one pass carries from job to job.
pub(crate) struct Pass {
    now: Time,
    out: Vec<Decision>,
    /// Strict FIFO: the head that could not start (nothing passes it).
    blocked_head: Option<WorkloadId>,
    /// Preemption searches made so far.
    searches: u32,
    /// Shapes that failed in this pass.
    failed: FxHashMap<ShapeKey, ShapeFailure>,
    /// Victim searches that found nothing lately (carried across passes).
    vain: Vec<VainShape>,
    /// Jobs that could not start, for backfill.
    backfill: Vec<BackfillCandidate>,
    /// The reserved job's nodes, while it is tried with them unheld: unless it ends up holding
    /// exactly those again, capacity grew and earlier failures say nothing any more.
    unheld: Option<Vec<NodeId>>,
}

impl Pass {
    /// Capacity grew: what failed so far in this pass says nothing any more.
    fn forget_failures(&mut self) {
        self.failed.clear();
        self.vain.clear();
    }

    /// Records that a job of `shape` with `nodes` failed to place.
    fn note_failure(&mut self, shape: ShapeKey, nodes: u32, job: WorkloadId) {
        self.failed
            .entry(shape)
            .and_modify(|f| {
                if nodes < f.nodes {
                    *f = ShapeFailure { nodes, job }
                }
            })
            .or_insert(ShapeFailure { nodes, job });
    }

    /// The job of this shape, no larger, that failed in this pass.
    fn failed_like(&self, shape: &ShapeKey, nodes: u32) -> Option<WorkloadId> {
        self.failed
            .get(shape)
            .filter(|f| nodes >= f.nodes)
            .map(|f| f.job)
    }

    /// Whether a search that found nothing speaks for a job of this class, shape and size.
    fn vain_like(&self, class: PriorityClass, shape: &ShapeKey, nodes: u32) -> bool {
        self.vain
            .iter()
            .any(|v| v.class >= class && v.shape == *shape && v.nodes <= nodes)
    }

    /// Leaves a job for the backfill step (and, under strict FIFO, blocks the rest).
    fn leave_for_backfill(&mut self, c: BackfillCandidate, head_of_line_blocking: bool) {
        self.backfill.push(c);
        if head_of_line_blocking {
            self.blocked_head = Some(c.id);
        }
    }
}

/// What became of a job the main loop considered.
enum Considered {
    /// Started, preempted for, given a reservation, or left as it was: next job.
    Done,
    /// It could not be placed; the error, if placing was tried, and the job of its shape that
    /// failed before it, if that spoke for it.
    Unplaced {
        error: Option<EngineError>,
        known_fail: Option<WorkloadId>,
        previous: Option<Reservation>,
        borrowed: bool,
    },
}

impl Scheduler {
    /// One pass at `now` (see the module doc of `scheduler` for the steps).
    pub(super) fn pass(&mut self, now: Time) -> Vec<Decision> {
        let mut pass = Pass {
            now,
            out: Vec::new(),
            blocked_head: None,
            searches: 0,
            failed: FxHashMap::default(),
            vain: std::mem::take(&mut self.vain_searches),
            backfill: Vec::new(),
            unheld: None,
        };
        pass.vain.retain(|v| v.until > now);
        self.expire_preemptions(&mut pass);
        self.drop_stale_reservation();
        let (queue, deep) = self.queue_in_order(now);
        for (id, brief) in queue {
            self.settle_unheld(&mut pass);
            if let Some(head) = pass.blocked_head {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.reason = Some(Reason::BehindHead { head });
                }
                continue;
            }
            if self.pass_over(&mut pass, id, &brief) {
                continue;
            }
            if let Considered::Unplaced {
                error,
                known_fail,
                previous,
                borrowed,
            } = self.consider(&mut pass, id)
            {
                self.after_failure(&mut pass, id, error, known_fail, previous, borrowed);
            }
        }
        self.settle_unheld(&mut pass);
        self.cut_short = deep && pass.out.iter().any(|d| matches!(d, Decision::Start { .. }));
        self.last_failed = std::mem::take(&mut pass.failed);
        self.vain_searches = std::mem::take(&mut pass.vain);
        self.backfill_reservation(&mut pass);
        pass.out
    }

    /// Step 1: preemptions whose grace has ended stop their victims (requeued).
    fn expire_preemptions(&mut self, pass: &mut Pass) {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.preempting.first() {
            if deadline > pass.now {
                break;
            }
            self.preempting.pop_first();
            let due = matches!(
                self.jobs.get(&id).map(|j| &j.state),
                Some(JobState::Preempting { deadline: d, .. }) if *d == deadline
            );
            if due {
                expired.push(id);
            }
        }
        expired.sort_unstable();
        for id in expired {
            self.requeue(id, pass.now, &mut pass.out);
        }
    }

    /// A reservation outlives passes (so that nothing queued ahead can take its nodes) until
    /// its job starts, leaves the queue, or a higher-priority job needs it.
    fn drop_stale_reservation(&mut self) {
        let stale = self.reservation.as_ref().is_some_and(|r| {
            self.jobs
                .get(&r.job)
                .is_none_or(|j| j.state != JobState::Pending)
        });
        if stale {
            if let Some(r) = self.reservation.take() {
                self.engine.unhold(&r.nodes);
            }
        }
    }

    /// Step 2: the queue in order (priority class, weighted dominant share, submission), as
    /// deep as this pass goes. Tenants are ranked once per pass; jobs sort on integers.
    /// Also says whether the pass stops at its depth (a shallow pass with as many jobs as it
    /// may look at).
    fn queue_in_order(&mut self, now: Time) -> (Vec<(WorkloadId, Brief)>, bool) {
        let mut by_share: Vec<(f64, usize)> = (0..self.tenants.len())
            .map(|t| (self.tenant_share(TenantId(t as u32)), t))
            .collect();
        by_share.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let depth = if now >= self.next_full_pass {
            self.next_full_pass = now.saturating_add(self.config.full_pass_interval);
            usize::MAX
        } else {
            self.config.pass_depth
        };
        // In a pass that does not go all the way, a job its tenant's own quota refuses (a
        // tenant outside any cohort) is left out without using up the depth: a tenant with a
        // long backlog over its quota must not hide the rest of the queue until the next full
        // pass. Its reason is the quota's.
        let shallow = depth != usize::MAX;
        if !shallow {
            // The floors made exact again (what left the queue no longer lowers them).
            let mut floors: Vec<Option<ResourceVec>> = vec![None; self.tenants.len()];
            for brief in self.ordered.values() {
                if let Some(floor) = floors.get_mut(brief.tenant.0 as usize) {
                    let ask = brief.least_ask();
                    *floor = Some(floor.map_or(ask, |f| super::floor_of(&f, &ask)));
                }
            }
            self.queued_floor = floors;
        }
        let held: Vec<Option<ResourceVec>> = self
            .tenants
            .iter()
            .map(|t| (shallow && t.cohort.is_none()).then(|| t.usage.plus(&t.load.sandbox_usage())))
            .collect();
        let queue = match self.config.order {
            super::QueueOrder::PriorityFairShare => {
                let mut v = Vec::new();
                'classes: for class in 0..4u64 {
                    for &(_, t) in &by_share {
                        // Every queued job of a tenant its quota refuses at its floor is
                        // refused: its range is not even walked.
                        let floor = self.queued_floor.get(t).copied().flatten();
                        if let (Some(held), Some(floor)) = (&held[t], floor) {
                            if !held.plus(&floor).fits_in(&self.tenants[t].quota) {
                                continue;
                            }
                        }
                        let (lo, hi) = (
                            (class, t as u64, 0, WorkloadId(0)),
                            (class, t as u64, u64::MAX, WorkloadId(u64::MAX)),
                        );
                        for (key, brief) in self.ordered.range(lo..=hi) {
                            if v.len() >= depth {
                                break 'classes;
                            }
                            if let Some(held) = &held[t] {
                                let quota = &self.tenants[t].quota;
                                if !brief.fits(held, quota) {
                                    // Refused on every model it accepts: the reason is its
                                    // first model's.
                                    if let Some(job) = self.jobs.get_mut(&key.3) {
                                        let (tenant, g) = (job.spec.tenant, &job.spec.gang);
                                        if let Err(why) =
                                            admit_on(&self.tenants, &self.cohorts, tenant, g, g.gpu)
                                        {
                                            job.reason = Some(why);
                                        }
                                    }
                                    continue;
                                }
                            }
                            v.push((key.3, *brief));
                        }
                    }
                }
                v
            }
            _ => self
                .ordered
                .iter()
                .take(depth)
                .map(|(k, b)| (k.3, *b))
                .collect(),
        };
        let deep = shallow && queue.len() >= depth;
        (queue, deep)
    }

    /// After the reserved job was tried with its nodes unheld: unless it holds exactly those
    /// again, capacity grew.
    fn settle_unheld(&mut self, pass: &mut Pass) {
        if let Some(nodes) = pass.unheld.take() {
            if self.reservation.as_ref().is_none_or(|r| r.nodes != nodes) {
                pass.forget_failures();
            }
        }
    }

    /// Passes a job over without reading its record: its shape already failed in this pass, it
    /// may not search for victims, and it could not take the reservation over. (Its reason is
    /// rendered from this pass's failures when asked; quota is checked again by backfill.)
    fn pass_over(&mut self, pass: &mut Pass, id: WorkloadId, brief: &Brief) -> bool {
        let reserved = self.reservation.as_ref().is_some_and(|r| r.job == id);
        if reserved || self.holding.contains(&id) {
            return false;
        }
        let like = pass.failed_like(&brief.shape, brief.nodes).is_some();
        let no_search = !self.config.preemption
            || pass.searches >= self.config.preemption_searches_per_pass
            || searched_recently(brief.no_victims_at, self.changes, pass.now)
            // (Taken as within its quota: a job that may reclaim has more victims.)
            || (Self::monotone_search(
                &self.config.order,
                true,
                self.tenants[brief.tenant.0 as usize].spec.cohort.as_ref(),
            ) && pass.vain_like(brief.priority, &brief.shape, brief.nodes));
        let no_takeover = self
            .reservation
            .as_ref()
            .is_some_and(|r| r.priority >= brief.priority);
        if like && no_search && no_takeover {
            pass.leave_for_backfill(
                BackfillCandidate {
                    id,
                    time_limit: brief.time_limit,
                    shape: brief.shape,
                    nodes: brief.nodes,
                },
                self.config.head_of_line_blocking,
            );
            return true;
        }
        false
    }

    /// Step 3: admits and places a job (a preemptor on the capacity held for it, the reserved
    /// job on its nodes unheld), or says why it stays.
    fn consider(&mut self, pass: &mut Pass, id: WorkloadId) -> Considered {
        // The reserved job itself gets its nodes back to try them (and a fresh reservation).
        let mut previous: Option<Reservation> = None;
        if self.reservation.as_ref().is_some_and(|r| r.job == id) {
            if let Some(r) = self.reservation.take() {
                self.engine.unhold(&r.nodes);
                pass.unheld = Some(r.nodes.clone());
                previous = Some(r);
            }
        }
        // Fast path, one lookup: most of a long queue is refused by quota or spoken for by a
        // shape that already failed in this pass.
        if previous.is_none() && self.refused_at_once(pass, id) {
            return Considered::Done;
        }
        let Some(job) = self.jobs.get(&id) else {
            return Considered::Done;
        };
        // A preemptor whose victims are gone starts on the capacity held for it.
        if !job.hold.is_empty() {
            let waiting = job.waiting_for.iter().any(|v| self.running.contains(v));
            if waiting {
                return Considered::Done;
            }
            let hold = job.hold.clone();
            let admitted = self.admit(job);
            self.engine.unhold(&hold);
            self.touch(id);
            pass.forget_failures();
            if let Some(j) = self.jobs.get_mut(&id) {
                j.hold.clear();
                self.holding.remove(&id);
                j.waiting_for.clear();
            }
            // Quota is checked again: other work of the tenant may have started meanwhile.
            if let Ok(borrowed) = admitted {
                if self
                    .try_start(id, pass.now, borrowed, &mut pass.out)
                    .is_ok()
                {
                    return Considered::Done;
                }
            }
        }
        let Some(job) = self.jobs.get(&id) else {
            return Considered::Done;
        };
        let borrowed = match self.admit(job) {
            Ok(b) => b,
            Err(reason) => {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.reason = Some(reason);
                }
                return Considered::Done;
            }
        };
        let shape = shape_of(&job.spec);
        // Failures of this pass were on less capacity than the reserved job has now.
        let known_fail = pass
            .failed_like(&shape, job.spec.gang.nodes)
            .filter(|_| previous.is_none());
        let placed = match known_fail {
            Some(_) => Err(None),
            None => self
                .try_start(id, pass.now, borrowed, &mut pass.out)
                .map_err(Some),
        };
        match placed {
            Ok(()) => Considered::Done,
            Err(error) => Considered::Unplaced {
                error,
                known_fail,
                previous,
                borrowed,
            },
        }
    }

    /// The fast path: a job its quota refuses, or that a failure of its shape speaks for and
    /// that may neither search for victims nor take the reservation over, is settled with one
    /// lookup. Whether it was.
    fn refused_at_once(&mut self, pass: &mut Pass, id: WorkloadId) -> bool {
        let hlb = self.config.head_of_line_blocking;
        let max_searches = self.config.preemption_searches_per_pass;
        let (changes, now) = (self.changes, pass.now);
        let held_for = self.reservation.as_ref().map(Reservation::held_for);
        let takeover_floor = self.reservation.as_ref().map(|r| r.priority);
        let Some(job) = self.jobs.get_mut(&id) else {
            return true;
        };
        if !job.hold.is_empty() {
            return false;
        }
        match admit_with(&self.tenants, &self.cohorts, job) {
            Err(reason) => {
                job.reason = Some(reason);
                true
            }
            Ok(_) => {
                let g = &job.spec.gang;
                let shape = shape_of(&job.spec);
                let like = pass.failed_like(&shape, g.nodes);
                let no_search = pass.searches >= max_searches
                    || searched_recently(job.no_victims_at, changes, now);
                let no_takeover = takeover_floor.is_some_and(|p| p >= job.spec.priority);
                match (like, no_search, no_takeover) {
                    (Some(like), true, true) => {
                        job.reason = Some(Reason::SameShape { like, held_for });
                        let c = BackfillCandidate {
                            id,
                            time_limit: job.spec.time_limit,
                            shape,
                            nodes: g.nodes,
                        };
                        pass.leave_for_backfill(c, hlb);
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    /// Steps 4 and 5 for a job that could not be placed: preemption (not searched again while
    /// nothing started or stopped), then a reservation for the first such job (or a more
    /// urgent one), else its reason.
    fn after_failure(
        &mut self,
        pass: &mut Pass,
        id: WorkloadId,
        error: Option<EngineError>,
        known_fail: Option<WorkloadId>,
        previous: Option<Reservation>,
        borrowed: bool,
    ) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let g = job.spec.gang.clone();
        let shape = shape_of(&job.spec);
        pass.note_failure(shape, g.nodes, id);
        let priority = job.spec.priority;
        let searched_in_vain = searched_recently(job.no_victims_at, self.changes, pass.now);
        let cohort = self.tenants[job.spec.tenant.0 as usize]
            .spec
            .cohort
            .as_ref();
        // (Work of several models may be within its own quota on one and borrow on another.)
        let monotone =
            Self::monotone_search(&self.config.order, !borrowed, cohort) && g.models.is_empty();
        let like_vain = monotone && previous.is_none() && pass.vain_like(priority, &shape, g.nodes);
        if self.config.preemption
            && pass.searches < self.config.preemption_searches_per_pass
            && !searched_in_vain
            && !like_vain
        {
            pass.searches += 1;
            if let Some(decisions) = self.try_preempt(id, pass.now) {
                pass.out.extend(decisions);
                return;
            }
            self.note_no_victims(id, pass.now);
            if monotone {
                pass.vain.push(VainShape {
                    class: priority,
                    shape,
                    nodes: g.nodes,
                    until: pass.now.saturating_add(self.config.preemption_retry),
                });
            }
        }
        // A reservation nothing could have moved earlier is kept as it was.
        if let Some(r) = previous.filter(|r| {
            (r.stops_at == self.stops || pass.now < r.computed_at + self.config.reservation_refresh)
                && self.reservation.is_none()
        }) {
            self.engine.hold(&r.nodes);
            self.reservation = Some(r);
            return;
        }
        if self.reserve(pass, id, &g, priority) {
            return;
        }
        let held_for = self.reservation.as_ref().map(Reservation::held_for);
        let reason = match (error, known_fail) {
            (_, Some(like)) => Reason::SameShape { like, held_for },
            (Some(EngineError::Unplaceable(u)), _) => Reason::Unplaceable {
                text: (!u.reason.is_empty()).then(|| u.reason.into()),
                held_for,
            },
            (Some(e), _) => Reason::Unplaceable {
                text: Some(e.to_string().into()),
                held_for,
            },
            (None, None) => Reason::Unplaceable {
                text: None,
                held_for,
            },
        };
        if let Some(j) = self.jobs.get_mut(&id) {
            j.reason = Some(reason);
            pass.backfill.push(BackfillCandidate {
                id,
                time_limit: j.spec.time_limit,
                shape,
                nodes: g.nodes,
            });
        }
        if self.config.head_of_line_blocking {
            pass.blocked_head = Some(id);
        }
    }

    /// Step 5: the reservation for the first job that could not be placed (or a more urgent
    /// one): nodes held at its earliest start. Whether it got one.
    fn reserve(
        &mut self,
        pass: &mut Pass,
        id: WorkloadId,
        g: &model::GangRequest,
        priority: PriorityClass,
    ) -> bool {
        let takes_over = self.config.backfill
            && match &self.reservation {
                None => true,
                Some(r) => r.priority < priority,
            };
        if !takes_over {
            return false;
        }
        if let Some(r) = self.reservation.take() {
            self.engine.unhold(&r.nodes);
            pass.forget_failures();
        }
        let spread = self.spread_filter(id);
        let tenant = self.jobs.get(&id).map(|j| j.spec.tenant);
        let Some((start, slots)) =
            tenant.and_then(|t| self.earliest_start(t, g, &spread, pass.now))
        else {
            return false;
        };
        let mut nodes: Vec<NodeId> = slots.iter().map(|s| s.node).collect();
        nodes.sort_unstable();
        self.engine.hold(&nodes);
        let unchanged = self
            .last_reserved
            .as_ref()
            .is_some_and(|a| a.job == id && a.start == start && a.nodes == nodes);
        if !unchanged {
            pass.out.push(Decision::Reserve {
                job: id,
                start,
                nodes: nodes.len(),
            });
            self.last_reserved = Some(super::Announced {
                job: id,
                start,
                nodes: nodes.clone(),
            });
        }
        if let Some(j) = self.jobs.get_mut(&id) {
            j.reason = Some(Reason::Reserved {
                start,
                nodes: nodes.len(),
            });
        }
        self.reservation = Some(Reservation {
            job: id,
            start,
            nodes,
            stops_at: self.stops,
            priority,
            computed_at: pass.now,
        });
        true
    }

    /// Step 6: backfill onto reserved nodes, only jobs that end before the reservation starts.
    fn backfill_reservation(&mut self, pass: &mut Pass) {
        let Some(r) = self.reservation.clone() else {
            return;
        };
        self.engine.unhold(&r.nodes);
        let mut failed: FxHashMap<ShapeKey, u32> = FxHashMap::default();
        for c in std::mem::take(&mut pass.backfill) {
            if pass.now + c.time_limit > r.start
                || failed.get(&c.shape).is_some_and(|n| c.nodes >= *n)
            {
                continue;
            }
            let Some(j) = self.jobs.get(&c.id) else {
                continue;
            };
            if j.state != JobState::Pending || !j.hold.is_empty() {
                continue;
            }
            // Quota again: work started since the main loop counts.
            if let Ok(borrowed) = self.admit(j) {
                if self
                    .try_start(c.id, pass.now, borrowed, &mut pass.out)
                    .is_err()
                {
                    let n = failed.entry(c.shape).or_insert(c.nodes);
                    *n = (*n).min(c.nodes);
                }
            }
        }
        self.engine.hold(&r.nodes);
    }
}
