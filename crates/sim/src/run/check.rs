//! What a run samples now and then (utilisation, queue, fairness), and the check of every
//! count the loop keeps against the queue and the engine, from scratch.

use super::*;

impl Sim<'_> {
    pub(super) fn sample(&mut self, now: Time) {
        // What each tenant holds and asks for, in GPUs.
        let report = self.s.tenant_report();
        // Thousandths of GPUs, as the demand.
        let held: Vec<f64> = report.iter().map(|t| t.gpu_milli_in_use as f64).collect();
        let mut demand: Vec<f64> = held
            .iter()
            .zip(&self.pending_gpus)
            .map(|(h, p)| h + *p as f64)
            .collect();
        for (k, v) in self.trace.services.iter().enumerate() {
            if let Some(st) = self.s.service_status(k as u64) {
                let t = self.tenant_ids[&v.tenant].0 as usize;
                demand[t] +=
                    f64::from(st.pending) * self.services[k].gpus_per_replica as f64 * 1000.0;
            }
        }
        let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
        self.samples.push(Sample {
            t: now,
            gpu_util: ratio(self.busy_gpus, self.gpus_up * 1000),
            cpu_util: ratio(self.busy_cpu, self.cpu_up),
            gpus_up: self.gpus_up,
            queue_len: self.s.pending_count() as u64,
            running: self.s.running_count() as u64,
            sandboxes_waiting: self
                .backlog
                .iter()
                .map(|(b, placed)| u64::from(self.trace.sandboxes[*b as usize].count - placed))
                .sum(),
            whole_free_domains: self.s.engine().whole_free_domains(),
            fair_dev: fair_deviation(&held, &demand),
        });
    }

    /// Every count the loop keeps, checked against the queue and the engine from scratch.
    pub(super) fn check(&self, now: Time) -> Result<(), String> {
        let s = &self.s;
        s.check_invariants().map_err(|v| format!("t={now}: {v}"))?;
        // In thousandths of GPUs: shares hold part of a device.
        let (_, free) = s.engine().gpu_milli_usage();
        let running_gpus: u64 = s
            .running_jobs()
            .iter()
            .map(|id| s.job(*id).map_or(0, |j| j.spec.gang.total_gpu_milli()))
            .sum();
        let fleet = s.engine().fleet();
        let ready_gpus: u64 = fleet
            .nodes()
            .iter()
            .filter(|n| n.state == NodeState::Ready)
            .map(|n| u64::from(n.capacity.gpus) * 1000)
            .sum();
        let up_gpus: u64 = fleet
            .nodes()
            .iter()
            .filter(|n| n.state != NodeState::Down)
            .map(|n| u64::from(n.capacity.gpus))
            .sum();
        let fail = |what: String| Err(format!("t={now}: {what}"));
        if running_gpus != self.busy_gpus {
            return fail(format!(
                "loop counts {} busy GPUs, jobs hold {running_gpus}",
                self.busy_gpus
            ));
        }
        if up_gpus != self.gpus_up {
            return fail(format!(
                "loop counts {} GPUs in service, nodes say {up_gpus}",
                self.gpus_up
            ));
        }
        // Busy + free = in service, where nothing is drained.
        if !self.drained.iter().any(|d| *d > 0) && running_gpus + free != ready_gpus {
            return fail(format!(
                "{running_gpus} busy + {free} free != {ready_gpus} on ready nodes"
            ));
        }
        let running_runs = self.runs.iter().filter(|r| r.started.is_some()).count();
        if running_runs + self.running_replicas.len() != s.running_jobs().len() {
            return fail(format!(
                "{running_runs} runs and {} replicas in progress but the queue runs {}",
                self.running_replicas.len(),
                s.running_jobs().len()
            ));
        }
        let live_cpu: u64 = (0..self.chunks.len())
            .filter_map(|c| {
                let id = WorkloadId(SANDBOX_BASE + c as u64);
                match s.engine().allocation(id) {
                    Some(Allocation::Sandboxes {
                        request,
                        live_count,
                        ..
                    }) => Some(u64::from(*live_count) * u64::from(request.cpu_millis)),
                    _ => None,
                }
            })
            .sum();
        if live_cpu != self.busy_cpu {
            return fail(format!(
                "loop counts {} busy millicores, live sandboxes hold {live_cpu}",
                self.busy_cpu
            ));
        }
        for (i, n) in fleet.nodes().iter().enumerate() {
            let want = if self.down[i] > 0 {
                NodeState::Down
            } else if self.drained[i] > 0 {
                NodeState::Draining
            } else {
                NodeState::Ready
            };
            if n.state != want {
                return fail(format!(
                    "node {} is {:?}, its reasons say {want:?}",
                    n.name, n.state
                ));
            }
        }
        Ok(())
    }
}
