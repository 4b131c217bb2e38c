//! Command probes of service replicas: the readiness or liveness command runs as the
//! replica's task does (its tenant's user, its environment with `PORT`, its isolation), in a
//! directory and a cgroup of its own with small limits, and passes on exit 0 within
//! [`PROBE_TIMEOUT`]; past that its processes are killed and it fails. Its output is kept in
//! `<job>-<run>-<rank>-probe/log` (the last probe's).

use crate::endpoint::PROBE_TIMEOUT;
use crate::task::{spawn_as, stop, task_user, Kind, Running};
use crate::AgentConfig;
use std::time::{Duration, Instant};
use wire::api::Assignment;

/// CPU millicores a probe may use at most.
const PROBE_CPU_MILLIS: u32 = 500;
/// Memory a probe may use at most, MiB.
const PROBE_MEMORY_MIB: u32 = 256;

/// Runs `command` as replica task `a` runs on `node`; whether it exited 0 in time.
pub(crate) fn run(config: &AgentConfig, node: &str, a: &Assignment, command: &[String]) -> bool {
    let limit = |own: u32, most: u32| if own == 0 { most } else { own.min(most) };
    let probe = Assignment {
        command: command.to_vec(),
        // Its own directory and cgroup: the replica's log and limits stay its own.
        rank: a.rank,
        cpu_millis: limit(a.cpu_millis, PROBE_CPU_MILLIS),
        memory_mib: limit(a.memory_mib, PROBE_MEMORY_MIB),
        gpus: Vec::new(),
        serves: false,
        ready_command: None,
        live_command: None,
        ready_path: None,
        live_path: None,
        ..a.clone()
    };
    let name = format!("{}-{}-{}-probe", a.job, a.run, a.rank);
    let started = task_user(config, a)
        .and_then(|user| spawn_as(config, node, &probe, Kind::Task, None, &name, user));
    let mut task = match started {
        Ok(t) => t,
        Err(why) => {
            tracing::debug!(node, job = a.job, "probe cannot start: {why}");
            return false;
        }
    };
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let passed = loop {
        let Running::Process { child, .. } = &mut task.running else {
            break false;
        };
        match child.try_wait() {
            Ok(Some(status)) => break status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => break false,
        }
    };
    // Whatever it left running goes now (its cgroup is removed with the task).
    while !stop(&mut task, Duration::ZERO) {}
    passed
}
