//! A zone's agents going silent at once, for `stargrid bench scale`: the zone's agent talks to
//! the server through a TCP relay that is cut (a partition: its tasks keep running) and then
//! healed. Measured: how long until the cell marks the zone down and runs its work elsewhere,
//! submit → running meanwhile, and how long until the zone is back and its agent has stopped
//! the old runs (each job then runs once, elsewhere).

use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wire::Client;

/// A TCP relay to a target that can be cut (every connection closed, new ones dropped) and
/// healed: a network partition between an agent and the server.
pub(crate) struct Relay {
    /// Where the agent connects.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub(crate) fn start(target: SocketAddr) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = server.set_nodelay(true);
                let pipes = (|| -> std::io::Result<_> {
                    let mut list = o.lock().unwrap_or_else(|p| p.into_inner());
                    list.push(client.try_clone()?);
                    list.push(server.try_clone()?);
                    Ok([(client.try_clone()?, server.try_clone()?), (server, client)])
                })();
                for (mut from, mut to) in pipes.into_iter().flatten() {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Ok(Relay { addr, cut, open })
    }

    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for s in open.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub(crate) fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// An agent's hook: (job or batch id, when).
pub(crate) type Hook = Sender<(u64, Instant)>;

/// What each agent runs, as its `started` and `stopped` hooks tell: tasks started minus
/// stopped, per job.
#[derive(Clone, Default)]
pub(crate) struct Tally {
    counts: Arc<Mutex<Vec<BTreeMap<u64, i64>>>>,
}

impl Tally {
    /// Hooks for agent `agent`: its starts are counted and passed on to `starts`.
    /// (started, stopped).
    pub(crate) fn hooks(&self, agent: usize, starts: Hook) -> (Hook, Hook) {
        {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            if counts.len() <= agent {
                counts.resize(agent + 1, BTreeMap::new());
            }
        }
        let (started, started_rx) = std::sync::mpsc::channel::<(u64, Instant)>();
        let (stopped, stopped_rx) = std::sync::mpsc::channel::<(u64, Instant)>();
        let count = |rx: Receiver<(u64, Instant)>, delta: i64, pass: Option<Sender<_>>| {
            let counts = self.counts.clone();
            std::thread::spawn(move || {
                for (job, at) in rx {
                    {
                        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
                        *c[agent].entry(job).or_default() += delta;
                    }
                    if let Some(tx) = &pass {
                        let _ = tx.send((job, at));
                    }
                }
            });
        };
        count(started_rx, 1, Some(starts));
        count(stopped_rx, -1, None);
        (started, stopped)
    }

    /// The jobs agent `agent` runs now.
    pub(crate) fn on(&self, agent: usize) -> BTreeSet<u64> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .get(agent)
            .map(|m| m.iter().filter(|(_, n)| **n > 0).map(|(j, _)| *j).collect())
            .unwrap_or_default()
    }

    /// The jobs some agent other than `agent` runs now.
    fn elsewhere(&self, agent: usize) -> BTreeSet<u64> {
        let len = self.counts.lock().unwrap_or_else(|p| p.into_inner()).len();
        (0..len)
            .filter(|a| *a != agent)
            .flat_map(|a| self.on(a))
            .collect()
    }
}

/// Seconds until `done`, asked every 200 ms; an error after `limit`.
pub(crate) fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<f64> {
    let t = Instant::now();
    while !done()? {
        if t.elapsed() > limit {
            bail!("timed out after {limit:?} waiting until {what}");
        }
        // Not too often: the cell's summary is a pass over every node.
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Runs the outage: `jobs` endless one-node jobs placed in the zone at `zone_paths[0]` (the
/// agent `zone_agent` plays it, behind `relay`; the other zones are drained meanwhile), the
/// relay cut, the cell watched, `latency_jobs` timed, the relay healed. Returns its figures.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    admin: &Client,
    relay: &Relay,
    tally: &Tally,
    zone_agent: usize,
    zone_nodes: usize,
    other_zones: &[String],
    jobs: usize,
    latency_jobs: usize,
    started: &Receiver<(u64, Instant)>,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let down = || -> Result<u64> { Ok(admin.cell()?.nodes.get("down").copied().unwrap_or(0)) };
    for path in other_zones {
        admin.drain(path)?;
    }
    let ids: Vec<u64> = (0..jobs)
        .map(|i| {
            Ok(admin
                .submit_job(&crate::bench_scale::job(
                    "bench",
                    format!("zone-{i}"),
                    "infinity",
                ))?
                .id)
        })
        .collect::<Result<_>>()?;
    let ids_set: BTreeSet<u64> = ids.iter().copied().collect();
    wait_until("the zone runs its jobs", timeout * 3, || {
        Ok(tally.on(zone_agent).is_superset(&ids_set))
    })?;
    for path in other_zones {
        admin.resume(path)?;
    }
    relay.cut();
    let marked_down_s = wait_until("the zone is down", timeout * 3, || {
        Ok(down()? >= zone_nodes as u64)
    })?;
    let moved_s = marked_down_s
        + wait_until("its jobs run elsewhere", timeout * 3, || {
            Ok(tally.elsewhere(zone_agent).is_superset(&ids_set))
        })?;
    // Meanwhile new work starts as fast as ever.
    while started.try_recv().is_ok() {}
    let mut latencies_ms = Vec::with_capacity(latency_jobs);
    for i in 0..latency_jobs {
        let t = Instant::now();
        let s = admin.submit_job(&crate::bench_scale::job(
            "bench",
            format!("during-{i}"),
            "1",
        ))?;
        loop {
            let left = Duration::from_secs(30).saturating_sub(t.elapsed());
            let (job, at) = started.recv_timeout(left)?;
            if job == s.id {
                latencies_ms.push(at.duration_since(t).as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    latencies_ms.sort_by(f64::total_cmp);
    // The partitioned agent heard nothing: it still runs the old runs.
    let kept_running = tally.on(zone_agent).intersection(&ids_set).count();
    relay.heal();
    let back_s = wait_until("the zone is back", timeout * 3, || Ok(down()? == 0))?;
    let stopped_s = back_s
        + wait_until("the zone's agent stopped the old runs", timeout * 3, || {
            Ok(tally.on(zone_agent).is_disjoint(&ids_set))
        })?;
    // Each job runs once: elsewhere, and (waited for above) no longer in the zone.
    let others = tally.elsewhere(zone_agent);
    let still_running = ids.iter().filter(|id| others.contains(id)).count();
    for id in &ids {
        admin.cancel_job(*id)?;
    }
    Ok(serde_json::json!({
        "zone_nodes": zone_nodes,
        "jobs": jobs,
        "marked_down_s": marked_down_s,
        "running_elsewhere_s": moved_s,
        "submit_to_running_p50_ms": crate::bench_live::percentile(&latencies_ms, 0.5),
        "submit_to_running_p99_ms": crate::bench_live::percentile(&latencies_ms, 0.99),
        "kept_running_while_partitioned": kept_running,
        "back_s": back_s,
        "old_runs_stopped_s": stopped_s,
        "running_after": still_running,
    }))
}
