//! Frontends end to end: a writer, two `stargrid frontend` processes behind one address (a
//! round-robin TCP balancer that skips a backend refusing connections, as a load balancer's
//! health check would), hollow agents and clients reaching the cell only through that
//! address. Heartbeats are fanned in (the writer hears far fewer requests than the agents
//! send), reads come from the frontends' copies, writes reach the writer; one frontend is
//! killed with work running and more submitted: no node goes down, every accepted job runs
//! once and ends, and a new frontend catches up with the writer. Without the writer, a
//! frontend stops answering heartbeats (its agents fence) and still answers reads.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One address in front of several backends: each connection goes to the next backend that
/// takes it.
struct Balancer {
    addr: SocketAddr,
}

impl Balancer {
    fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let next = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let start = next.fetch_add(1, Ordering::Relaxed);
                let backend = (0..backends.len()).find_map(|k| {
                    let b = backends[(start + k) % backends.len()];
                    TcpStream::connect_timeout(&b, Duration::from_millis(200)).ok()
                });
                let Some(backend) = backend else { continue };
                let _ = client.set_nodelay(true);
                let _ = backend.set_nodelay(true);
                pump(client, backend);
            }
        });
        Balancer { addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Copies bytes both ways until either side closes.
fn pump(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let one_way = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
        });
    };
    one_way(a, b2);
    one_way(b, a2);
}

/// A counter's value in a scrape, summed over the series whose line holds `labels`.
fn counter_with(url: &str, name: &str, labels: &str) -> f64 {
    let text = get(&format!("{url}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn counter(url: &str, name: &str) -> f64 {
    counter_with(url, name, "")
}

/// Requests the writer answered on the heartbeat routes.
fn writer_heartbeat_requests(url: &str) -> f64 {
    counter_with(url, "stargrid_http_requests_total", "/v1/agent/heartbeat")
}

/// Submits a `sleep 2` job through `url`, as a fresh client would; its id once accepted.
fn submit(url: &str, name: &str) -> Option<u64> {
    let job = json!({"name": name, "tenant": "default", "nodes": 1, "gpus_per_node": 4,
        "time_limit_s": 600, "command": ["sleep", "2"]});
    let answer: Value = post(&format!("{url}/v1/jobs"))
        .send_json(job)
        .ok()?
        .into_json()
        .ok()?;
    answer["id"].as_u64()
}

#[test]
fn agents_and_clients_behind_two_frontends_lose_nothing_when_one_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (_writer, writer) =
        start_server_with(&dir.path().join("w"), &["--heartbeat-timeout-s", "3"]);
    let (mut front_a, addr_a) = start_frontend(&writer, dir.path());
    let (_front_b, addr_b) = start_frontend(&writer, dir.path());
    let lb = Balancer::start(vec![addr_a, addr_b]);
    let cell = lb.url();
    let admin = admin_token(&writer);
    tokens().insert(cell.clone(), admin.clone());
    for front in [addr_a, addr_b] {
        tokens().insert(format!("http://{front}"), admin.clone());
    }

    // Two hollow agents, each bound to half the fleet, reach the cell through the balancer.
    let names: Vec<String> = get_path(&writer, "/v1/nodes")
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    let halves: Vec<&[String]> = names.chunks(names.len().div_ceil(2)).collect();
    let mut agents = Vec::new();
    for (i, half) in halves.iter().enumerate() {
        let t: Value = post(&format!("{writer}/v1/tokens"))
            .send_json(json!({"role": "agent", "nodes": model::hostlist::compress(half)}))
            .unwrap()
            .into_json()
            .unwrap();
        let work = dir.path().join(format!("agent-{i}"));
        agents.push(start_agent_as(
            &cell,
            &work,
            t["token"].as_str().unwrap(),
            &["--hollow", &half.len().to_string(), "--fence-after-s", "60"],
        ));
    }
    wait_for("every node up, seen through the frontends", || {
        nodes_up(&cell) == names.len()
    });
    assert_eq!(nodes_up(&writer), names.len());

    // Fan-in: the agents beat every 200 ms; the writer hears a list of live nodes a second
    // from each frontend and the heartbeats that change something.
    let front_beats = || {
        counter(&format!("http://{addr_a}"), "stargrid_heartbeats_total")
            + counter(&format!("http://{addr_b}"), "stargrid_heartbeats_total")
    };
    let (beats0, writer0) = (front_beats(), writer_heartbeat_requests(&writer));
    std::thread::sleep(Duration::from_secs(3));
    let (beats1, writer1) = (front_beats(), writer_heartbeat_requests(&writer));
    let taken = beats1 - beats0;
    let passed = writer1 - writer0;
    assert!(
        taken >= names.len() as f64 * 5.0,
        "frontends took {taken} heartbeats"
    );
    assert!(
        passed <= 12.0,
        "the writer answered {passed} heartbeat requests in 3 s"
    );

    // Clients through the balancer: writes reach the writer, reads come from either copy.
    let mut accepted = Vec::new();
    for i in 0..12 {
        accepted.push(submit(&cell, &format!("before-{i}")).expect("accepted"));
    }
    wait_for("the jobs running, as both frontends tell", || {
        [addr_a, addr_b].iter().all(|f| {
            accepted
                .iter()
                .all(|id| get_job(&format!("http://{f}"), *id)["state"] == "running")
        })
    });

    // An interactive sandbox's command reaches the agent behind a frontend (relayed by the
    // writer to the frontend its node's heartbeats come through) and its end comes back to
    // the client: the hollow agent runs no process and says so.
    let batch: Value = post(&format!("{cell}/v1/sandboxes"))
        .send_json(
            json!({"name": "box", "tenant": "default", "count": 1, "cpu_millis": 500,
            "memory_mib": 256, "interactive": true}),
        )
        .unwrap()
        .into_json()
        .unwrap();
    let batch = batch["id"].as_u64().unwrap();
    wait_for("the sandbox running", || {
        get_path(&writer, &format!("/v1/sandboxes/{batch}"))["live"] == 1
    });
    let answer = post(&format!("{cell}/v1/sandboxes/{batch}/exec"))
        .send_json(json!({"command": ["true"]}))
        .unwrap()
        .into_string()
        .unwrap();
    let end: Value = serde_json::from_str(answer.lines().last().unwrap()).unwrap();
    assert!(
        end["error"].as_str().is_some_and(|e| e.contains("hollow")),
        "{answer}"
    );

    // Frontend A dies with work running; submissions go on through the balancer.
    front_a.kill();
    let t_killed = Instant::now();
    for i in 0..12 {
        // A request cut by the kill is not acknowledged: only acknowledged ones count.
        if let Some(id) = submit(&cell, &format!("after-{i}")) {
            accepted.push(id);
        }
    }
    assert!(
        accepted.len() >= 20,
        "only {} submissions accepted",
        accepted.len()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states: Vec<(u64, Value)> = accepted
            .iter()
            .map(|id| (*id, get_job(&writer, *id)["state"].clone()))
            .collect();
        if states.iter().all(|(_, s)| s == "finished") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs not ended: {states:?}\n{}\n{}",
            agent_said(&dir.path().join("agent-0")),
            agent_said(&dir.path().join("agent-1"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for id in &accepted {
        let j = get_job(&writer, *id);
        assert_eq!(j["restarts"], 0, "job {id} ran twice: {j}");
        assert_eq!(j["exit_code"], 0, "job {id}: {j}");
    }
    // No node went down: agents behind the killed frontend came back through the other one
    // well inside the writer's timeout.
    assert_eq!(counter(&writer, "stargrid_heartbeats_missed_total"), 0.0);
    assert_eq!(nodes_up(&writer), names.len());
    assert!(t_killed.elapsed() < Duration::from_secs(60));

    // A new frontend loads the writer's state and answers as the writer does.
    let (_front_c, addr_c) = start_frontend(&writer, dir.path());
    let front_c = format!("http://{addr_c}");
    tokens().insert(front_c.clone(), admin.clone());
    let states = |url: &str| -> Vec<(u64, String)> {
        all_jobs(url)
            .iter()
            .map(|j| {
                (
                    j["id"].as_u64().unwrap(),
                    j["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let on_writer = states(&writer);
    assert_eq!(on_writer.len(), accepted.len());
    wait_for("the new frontend caught up", || {
        states(&front_c) == on_writer
    });
    // What a frontend refuses on its own: lists of live nodes are the writer's to take.
    let refused = post(&format!("{front_c}/v1/agent/heartbeats"))
        .send_json(json!({"beats": [], "alive": "nvl00000t00"}))
        .unwrap_err();
    assert!(
        matches!(refused, ureq::Error::Status(400, _)),
        "{refused:?}"
    );
    drop(agents);
}
