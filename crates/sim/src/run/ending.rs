//! When a run is over: every workload done, or only work left that can never start. Events
//! that recur for ever (samples, random failures and repairs, autoscaling ticks) do not keep a
//! run going; the others are counted as they are queued and taken (`Sim::push`, `Sim::pop`).

use super::*;

/// How long a run goes on with nothing queued but recurring events, and pending work that
/// might still fit, before it ends with that work unfinished: 30 days.
const STALL_LIMIT: Time = 30 * 86_400;

impl Event {
    /// Whether the event queues its own next one for ever (samples, random failures and
    /// repairs, a service's autoscaler): such events alone do not keep a run going.
    pub(super) fn recurs(&self) -> bool {
        matches!(
            self,
            Event::Sample | Event::Fail(_) | Event::Repair(_) | Event::Autoscale(_)
        )
    }
}

impl Sim<'_> {
    pub(super) fn push(&mut self, t: Time, e: Event) {
        if !e.recurs() {
            self.finite_queued += 1;
        }
        if e == Event::Wake {
            self.wakes_queued += 1;
        }
        self.heap.push(Reverse((t, e)));
    }

    /// Takes the next event off the heap.
    pub(super) fn pop(&mut self) -> Option<(Time, Event)> {
        let Reverse((t, e)) = self.heap.pop()?;
        if !e.recurs() {
            self.finite_queued -= 1;
        }
        if e == Event::Wake {
            self.wakes_queued -= 1;
        }
        Some((t, e))
    }

    /// Whether the run is to end with work left that can never start, looked at at samples.
    /// With work waiting, no job or sandbox running, nothing queued to arrive or change (but
    /// the queue's wake-ups), and nothing started or ended for [`STALL_LIMIT`], it ends (a
    /// placement rule no node meets, a service's load that never falls, reservations that keep
    /// moving). Else, once no event is queued but those that recur for ever
    /// (nothing runs, nothing more arrives): without random failures or a service that may
    /// still shrink, nothing will change, and it ends; otherwise it ends when no pending work
    /// fits the fleet as it could become (the nodes random failures hold down repaired, holds
    /// lifted).
    pub(super) fn only_the_impossible_left(&mut self, now: Time) -> bool {
        // Anything started or ended since the last look is progress.
        let progress = self.tally.starts
            + self.tally.replica_starts
            + self.units_done()
            + self.sandboxes_ended
            + self.backlog.len() as u64;
        if self.stalled_since.is_none_or(|(p, _)| p != progress) {
            self.stalled_since = Some((progress, now));
        }
        let since = self.stalled_since.map_or(now, |(_, t)| t);
        // Stuck: work waits, nothing but replicas runs, and nothing will arrive or change
        // (the only other events queued are the queue's own wake-ups).
        // (CPU work on GPU hosts holds no GPU: count running jobs, not busy GPUs.)
        let nothing_runs =
            self.s.running_count() == self.running_replicas.len() && self.busy_cpu == 0;
        let waiting = self.s.pending_count() > 0 || !self.backlog.is_empty();
        let nothing_comes = self.finite_queued == self.wakes_queued;
        if waiting && nothing_runs && nothing_comes && now.saturating_sub(since) >= STALL_LIMIT {
            return true;
        }
        if self.finite_queued > 0 {
            return false;
        }
        if self.s.more_to_place() {
            // The last pass stopped at its depth: one more looks further.
            self.push(now + 1, Event::Wake);
            return false;
        }
        let shrinking = self
            .services
            .iter()
            .zip(&self.trace.services)
            .any(|(run, v)| run.live && v.end.is_none() && run.desired > v.min_replicas);
        if self.config.faults.random.is_none() && !shrinking {
            return true;
        }
        if shrinking {
            return false;
        }
        // The fleet as it could become: the nodes random failures hold down repaired, holds
        // lifted (what runs now, replicas of services without an end, stays).
        let mut engine = self.s.engine().clone();
        let nodes = engine.fleet().nodes().len();
        let all: Vec<NodeId> = (0..nodes as u32)
            .map(NodeId)
            .filter(|n| engine.is_held(*n))
            .collect();
        // Holds stack (a node held twice needs two lifts); a few are ever stacked.
        for _ in 0..64 {
            if !all.iter().any(|n| engine.is_held(*n)) {
                break;
            }
            engine.unhold(&all);
        }
        for (n, &down) in self.down.iter().enumerate() {
            if down > 0 && down == u8::from(self.repairing[n]) && self.drained[n] == 0 {
                engine.set_state(
                    sched::Scope::Node(NodeId(n as u32)),
                    model::NodeState::Ready,
                );
            }
        }
        let mut tried = rustc_hash::FxHashSet::default();
        let fits = self.s.pending_jobs().into_iter().any(|w| {
            let gang = match w.as_replica() {
                Some((k, _)) => self.shapes.replica_gang(&self.trace.services[k as usize]),
                None => self.gang(w.0 as usize),
            };
            tried.insert(gang.clone()) && engine.plan_gang(&gang).is_ok()
        });
        // Waiting sandboxes start once a CPU host that holds the first of them, and is only
        // down for a repair, is back.
        let front = self
            .backlog
            .front()
            .map(|&(b, _)| &self.trace.sandboxes[b as usize]);
        let sandboxes_can_start = front.is_some_and(|b| {
            engine.fleet().nodes().iter().enumerate().any(|(n, node)| {
                node.capacity.gpus == 0
                    && node.capacity.cpu_millis >= b.cpu_millis
                    && node.capacity.memory_mib >= b.memory_mib
                    && self.drained[n] == 0
                    && self.down[n] <= u8::from(self.repairing[n])
            })
        });
        !fits && !sandboxes_can_start
    }
}
