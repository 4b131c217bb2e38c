//! Sandbox batches in a run: the backlog placed as room appears (what does not fit waits), and
//! sandboxes ending at the end of their drawn lifetimes.

use super::*;

impl Sim<'_> {
    /// Places waiting sandboxes, oldest batch first, in the largest parts that fit.
    pub(super) fn place_backlog(&mut self, now: Time) {
        let mut try_count = u32::MAX;
        while let Some(&(b, placed)) = self.backlog.front() {
            let batch = &self.trace.sandboxes[b as usize];
            let left = batch.count - placed;
            let mut k = left.min(try_count);
            let id = WorkloadId(SANDBOX_BASE + self.chunks.len() as u64);
            loop {
                let request = SandboxRequest {
                    count: k,
                    cpu_millis: batch.cpu_millis,
                    memory_mib: batch.memory_mib,
                };
                if self
                    .s
                    .place_sandboxes(
                        id,
                        self.tenant_ids.get(&batch.tenant).copied(),
                        &request,
                        batch.max_retries,
                        now,
                    )
                    .is_ok()
                {
                    break;
                }
                if k == 1 {
                    return; // no room for even one: wait for sandboxes to end
                }
                k /= 2;
            }
            try_count = k;
            self.latency
                .push(((now - batch.submit) as f64, u64::from(k)));
            self.busy_cpu += u64::from(k) * u64::from(batch.cpu_millis);
            let tick = self.config.sandbox_tick.max(1);
            let mut ends: Vec<(Time, u32)> = (0..k)
                .map(|i| {
                    let end = now + batch.lifetime.draw(&mut self.life_rng);
                    (end.div_ceil(tick) * tick, i)
                })
                .collect();
            ends.sort_unstable();
            let first = ends[0].0;
            let c = self.chunks.len() as u32;
            self.chunks.push(Chunk { batch: b, ends });
            self.push(first, Event::SandboxEnd(c, 0));
            if placed + k == batch.count {
                self.backlog.pop_front();
            } else if let Some(front) = self.backlog.front_mut() {
                front.1 += k;
            }
        }
    }

    /// Ends the sandboxes of chunk `c` due now, from position `pos` of its end list.
    pub(super) fn end_sandboxes(&mut self, c: u32, pos: u32, now: Time) -> Result<(), String> {
        let chunk = &self.chunks[c as usize];
        let b = chunk.batch as usize;
        let from = pos as usize;
        let to = from + chunk.ends[from..].partition_point(|(t, _)| *t <= now);
        let id = WorkloadId(SANDBOX_BASE + u64::from(c));
        // Sandboxes lost to a failed host have already ended.
        let live: Vec<u32> = match self.s.engine().allocation(id) {
            Some(Allocation::Sandboxes { live, .. }) => chunk.ends[from..to]
                .iter()
                .map(|(_, i)| *i)
                .filter(|i| live[*i as usize / 64] >> (i % 64) & 1 == 1)
                .collect(),
            _ => Vec::new(),
        };
        let next = chunk.ends.get(to).map(|(t, _)| *t);
        let ended = (to - from) as u32;
        if !live.is_empty() {
            self.s
                .end_sandboxes(id, &live, now)
                .map_err(|e| format!("sandbox chunk {c}: {e}"))?;
            self.busy_cpu -= live.len() as u64 * u64::from(self.trace.sandboxes[b].cpu_millis);
            self.cpu_room_changed = true;
        }
        self.sandboxes_ended += u64::from(ended);
        self.batch_left[b] -= ended;
        if self.batch_left[b] == 0 {
            self.batches_done += 1;
        }
        match next {
            Some(t) => self.push(t, Event::SandboxEnd(c, to as u32)),
            None => self.chunks[c as usize].ends = Vec::new(),
        }
        Ok(())
    }
}
