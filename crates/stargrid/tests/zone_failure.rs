//! A whole zone's agents go silent at once (a partition between them and the server, their
//! tasks still running): the cell marks the zone's nodes down, requeues their work onto the
//! other zone and keeps answering; when the zone comes back, its agent stops the old runs, so
//! no job runs twice. The server and two hollow agents (one per zone) run in this process, the
//! zone's agent behind a TCP relay the test cuts and heals.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wire::api::{IssueToken, SubmitJob};
use wire::Client;

/// A TCP relay to `target` that can be cut (every connection closed, new ones dropped) and
/// healed.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
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
                let mut list = o.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn job(name: String) -> SubmitJob {
    SubmitJob {
        name,
        tenant: "default".into(),
        priority: "research".into(),
        gpu: "GB200".into(),
        nodes: 1,
        gpus_per_node: 4,
        cpu_millis_per_node: 0,
        memory_mib_per_node: 0,
        segment: None,
        spares: 0,
        time_limit_s: 3600,
        // A hollow task that runs until it is stopped.
        command: vec!["train".into()],
        env: Default::default(),
        secret_env: Default::default(),
        workdir: None,
        placement: Default::default(),
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Which jobs run on which agent, as its `started` and `stopped` hooks tell.
#[derive(Default)]
struct Running {
    by_agent: [BTreeMap<u64, i64>; 2],
}

impl Running {
    fn drain(&mut self, rx: &[std::sync::mpsc::Receiver<(u64, Instant)>; 4]) {
        for (i, r) in rx.iter().enumerate() {
            let (agent, delta) = (i / 2, if i % 2 == 0 { 1 } else { -1 });
            while let Ok((job, _)) = r.try_recv() {
                *self.by_agent[agent].entry(job).or_default() += delta;
            }
        }
    }

    fn on(&self, agent: usize) -> BTreeSet<u64> {
        self.by_agent[agent]
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(j, _)| *j)
            .collect()
    }
}

#[test]
fn a_silent_zone_is_marked_down_its_work_moves_and_nothing_runs_twice_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = model::InstanceCatalog::builtin();
    let mut spec = fleet::generate::GenSpec {
        gpus: 72 * 8,
        cpu_hosts: 0,
        zones_per_region: 2,
        ..fleet::generate::GenSpec::default()
    };
    spec.clouds.truncate(1);
    let fleet = fleet::generate::generate(&spec, &catalog).unwrap();
    // The nodes of each zone.
    let mut zones: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, n) in fleet.nodes().iter().enumerate() {
        let domain = fleet.domain_of(model::NodeId(i as u32)).unwrap();
        let zone = fleet.zone_of(domain).unwrap();
        zones
            .entry(fleet.topo_path(zone))
            .or_default()
            .push(n.name.to_string());
    }
    // Zone A, and every other zone (played by the second agent).
    assert!(zones.len() >= 2, "zones: {:?}", zones.keys());
    let mut zones = zones.into_iter();
    let zone_a: (String, Vec<String>) = zones.next().unwrap();
    let others: Vec<(String, Vec<String>)> = zones.collect();
    let zone_b: (Vec<String>, Vec<String>) = (
        others.iter().map(|(p, _)| p.clone()).collect(),
        others.iter().flat_map(|(_, n)| n.clone()).collect(),
    );
    let config = server::Config {
        fleet_toml: Some(fleet::file::write(&fleet, &catalog)),
        heartbeat_timeout: Duration::from_secs(2),
        ..server::Config::new(
            format!("sqlite:{}", dir.path().join("journal.db").display()),
            dir.path(),
        )
    };
    let srv = server::Server::start(&config).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let server_addr = listener.local_addr().unwrap();
    let stop_server = Arc::new(AtomicBool::new(false));
    let serving = {
        let stop = stop_server.clone();
        runtime.spawn(server::serve(srv, listener, async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }))
    };
    let url = format!("http://{server_addr}");
    let admin_token = std::fs::read_to_string(&config.admin_token_file).unwrap();
    let admin = Client::new(&url, admin_token.trim());
    let relay = Relay::start(server_addr);

    // One hollow agent per zone; zone A's talks through the relay and keeps its tasks for a
    // long time without answers (as a partitioned node would).
    let stop_agents = Arc::new(AtomicBool::new(false));
    let mut hooks = Vec::new();
    let mut agents = Vec::new();
    for (i, nodes) in [&zone_a.1, &zone_b.1].into_iter().enumerate() {
        let token = admin
            .issue_token(&IssueToken {
                role: "agent".into(),
                tenant: None,
                expires_in_s: None,
                nodes: Some(model::hostlist::compress(nodes)),
            })
            .unwrap();
        let base = if i == 0 {
            format!("http://{}", relay.addr)
        } else {
            url.clone()
        };
        let (started, started_rx) = std::sync::mpsc::channel();
        let (stopped, stopped_rx) = std::sync::mpsc::channel();
        hooks.push(started_rx);
        hooks.push(stopped_rx);
        let config = agent::AgentConfig {
            client: Client::new(&base, &token.token).with_timeout(Duration::from_secs(2)),
            nodes: nodes.clone(),
            hollow: true,
            work_dir: dir.path().join(format!("agent-{i}")),
            interval: Duration::from_millis(300),
            grace: Duration::from_secs(1),
            fence_after: Duration::from_secs(600),
            started: Some(started),
            stopped: Some(stopped),
            cgroups: None,
            inventory: None,
            run_as: agent::RunAs::AgentUser,
            workdir_root: None,
            isolation: agent::isolation::Isolation::None,
            isolate_tasks: false,
            warm_pools: Vec::new(),
            templates: Default::default(),
            egress: Default::default(),
            init_program: None,
        };
        let stop = stop_agents.clone();
        agents.push(std::thread::spawn(move || agent::run(&config, &stop)));
    }
    let hooks: [std::sync::mpsc::Receiver<(u64, Instant)>; 4] = hooks.try_into().unwrap();
    let mut running = Running::default();
    let down = |admin: &Client| {
        admin
            .cell()
            .unwrap()
            .nodes
            .get("down")
            .copied()
            .unwrap_or(0)
    };
    wait_until("every node is up", Duration::from_secs(30), || {
        down(&admin) == 0
    });

    // Work on zone A: the other zones drained while it is placed, then resumed.
    for path in &zone_b.0 {
        admin.drain(path).unwrap();
    }
    let count = zone_a.1.len().min(zone_b.1.len()) / 2;
    let ids: Vec<u64> = (0..count)
        .map(|i| admin.submit_job(&job(format!("z{i}"))).unwrap().id)
        .collect();
    wait_until("zone A runs every job", Duration::from_secs(30), || {
        running.drain(&hooks);
        running.on(0).len() == count
    });
    for path in &zone_b.0 {
        admin.resume(path).unwrap();
    }

    // Zone A goes silent at once.
    relay.cut();
    let t_cut = Instant::now();
    wait_until("zone A is down", Duration::from_secs(30), || {
        down(&admin) == zone_a.1.len() as u64
    });
    let b_nodes: BTreeSet<&str> = zone_b.1.iter().map(String::as_str).collect();
    wait_until(
        "every job runs again, in the other zones",
        Duration::from_secs(30),
        || {
            running.drain(&hooks);
            ids.iter().all(|id| {
                let v = admin.job(*id).unwrap();
                v.state == "running" && v.nodes.iter().all(|n| b_nodes.contains(n.as_str()))
            }) && running.on(1).len() == count
        },
    );
    // The cell keeps answering: new work starts at once elsewhere.
    let t = Instant::now();
    let late = admin.submit_job(&job("late".into())).unwrap().id;
    wait_until(
        "new work starts during the outage",
        Duration::from_secs(10),
        || {
            running.drain(&hooks);
            running.on(1).contains(&late)
        },
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Meanwhile zone A's agent still runs the old runs (it has not heard from the server).
    running.drain(&hooks);
    assert_eq!(running.on(0).len(), count, "zone A fenced itself early");
    assert!(t_cut.elapsed() < Duration::from_secs(60));

    // Zone A comes back: its nodes are up again and its agent stops every old run.
    relay.heal();
    wait_until("zone A is back", Duration::from_secs(30), || {
        down(&admin) == 0
    });
    wait_until(
        "zone A stopped the old runs",
        Duration::from_secs(30),
        || {
            running.drain(&hooks);
            running.on(0).is_empty()
        },
    );
    // Nothing runs twice: each job runs on exactly one agent.
    running.drain(&hooks);
    let (on_a, on_b) = (running.on(0), running.on(1));
    for id in ids.iter().chain([&late]) {
        assert!(on_b.contains(id) && !on_a.contains(id), "job {id}");
    }
    for id in &ids {
        assert_eq!(
            admin.job(*id).unwrap().restarts,
            1,
            "job {id} requeued once"
        );
    }

    stop_agents.store(true, Ordering::Relaxed);
    for a in agents {
        let _ = a.join();
    }
    stop_server.store(true, Ordering::Relaxed);
    let _ = runtime.block_on(serving);
}
