//! End-to-end tests of the journal with real processes: `kill -9` under submissions, restarts
//! with and without snapshots, a standby taking over, a rolling upgrade that keeps every task
//! running, and compaction — on SQLite and, where `STARGRID_TEST_POSTGRES` names one, PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn kill_9_under_a_stream_of_submissions_loses_no_acknowledged_job() {
    for backend in backends() {
        kill_9_under_submissions(&flags(&backend));
    }
}

fn kill_9_under_submissions(store: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start_server_with(dir.path(), store);
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients submit as fast as they can and remember what was acknowledged.
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acked: Vec<(u64, String)> = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("c{c}-{i}");
                    match post(&format!("{url}/v1/jobs")).send_json(job(&name, 1)) {
                        Ok(r) => {
                            let v: Value = r.into_json().unwrap();
                            acked.push((v["id"].as_u64().unwrap(), name));
                        }
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill(); // SIGKILL
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<(u64, String)> = clients
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(
        acked.len() > 20,
        "only {} submissions acknowledged",
        acked.len()
    );

    let (mut server, url) = start_server_with(dir.path(), store);
    let jobs = all_jobs(&url);
    let by_id: BTreeMap<u64, String> = jobs
        .iter()
        .map(|j| {
            (
                j["id"].as_u64().unwrap(),
                j["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(by_id.len(), jobs.len(), "a job id is listed twice");
    for (id, name) in &acked {
        assert_eq!(
            by_id.get(id),
            Some(name),
            "acknowledged job {id} ({name}) lost ({store:?}: {} acknowledged, {} listed)",
            acked.len(),
            by_id.len()
        );
    }
    let names: BTreeSet<&String> = by_id.values().collect();
    assert_eq!(names.len(), by_id.len(), "a submission was journaled twice");
    // The server goes on where it stopped: new ids follow the old ones.
    let v: Value = post(&format!("{url}/v1/jobs"))
        .send_json(job("after-restart", 1))
        .unwrap()
        .into_json()
        .unwrap();
    assert!(v["id"].as_u64().unwrap() > *by_id.keys().last().unwrap());
    server.kill();
}

#[test]
fn a_restart_shows_the_same_jobs_on_the_same_nodes() {
    for snapshot in [false, true] {
        // A fresh journal on each backend for each run.
        for backend in backends() {
            restart_shows_the_same_jobs(&flags(&backend), snapshot);
        }
    }
}

/// With `snapshot`, the server saves snapshots every 10 records and the restart loads one.
fn restart_shows_the_same_jobs(store: &[&str], snapshot: bool) {
    let dir = tempfile::tempdir().unwrap();
    let every = if snapshot { "10" } else { "0" };
    let flags: Vec<&str> = store
        .iter()
        .copied()
        .chain(["--snapshot-every", every, "--snapshot-min-interval-s", "0"])
        .collect();
    let store = flags.as_slice();
    let (mut server, url) = start_server_with(dir.path(), store);
    // Nodes take work once an agent plays them: hollow ones here, all 40 of the default fleet.
    let mut agents = start_agent(&url, &dir.path().join("agents"), &["--hollow", "40"]);
    wait_for("40 nodes up", || nodes_up(&url) == 40);
    for (name, nodes) in [("a", 18), ("b", 9), ("c", 18), ("d", 18)] {
        post(&format!("{url}/v1/jobs"))
            .send_json(job(name, nodes))
            .unwrap();
    }
    post(&format!("{url}/v1/jobs/2/cancel")).call().unwrap();
    // Wait until the passes placed what fits (b may have started before it was cancelled,
    // which delays c by a pass).
    let states = |jobs: &[Value]| -> Vec<String> {
        jobs.iter()
            .map(|j| j["state"].as_str().unwrap().to_string())
            .collect()
    };
    wait_for("a and c running, d pending", || {
        states(&all_jobs(&url)) == ["running", "cancelled", "running", "pending"]
    });
    let before = all_jobs(&url);
    let summary = |jobs: &[Value]| -> Vec<(u64, String, Value)> {
        jobs.iter()
            .map(|j| {
                (
                    j["id"].as_u64().unwrap(),
                    j["state"].as_str().unwrap().to_string(),
                    j["nodes"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        states(&before),
        ["running", "cancelled", "running", "pending"]
    );
    if snapshot {
        // The pass loop saves a due snapshot within a second.
        std::thread::sleep(Duration::from_secs(2));
    }
    signal(server.id(), "-KILL");
    server.kill();
    let (mut server, url, said) = start_server_saying(dir.path(), store);
    assert_eq!(
        said.contains("after the snapshot at record"),
        snapshot,
        "{said}"
    );
    assert_eq!(summary(&all_jobs(&url)), summary(&before), "{said}");
    server.kill();
    agents.kill();
}

#[test]
fn a_standby_server_takes_over_the_journal_when_the_leader_dies() {
    for extra in backends() {
        let dir = tempfile::tempdir().unwrap();
        // Both servers name the same journal.
        let store = match extra.as_slice() {
            [_, url] => url.clone(),
            _ => format!("sqlite:{}", dir.path().join("a/journal.db").display()),
        };
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        let (mut leader, leader_url) =
            start_server_with(&dir.path().join("a"), &["--store", &store]);
        for i in 0..5 {
            post(&format!("{leader_url}/v1/jobs"))
                .send_json(job(&format!("j{i}"), 1))
                .unwrap();
        }
        let mut standby = Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args(["server", "--data-dir"])
            .arg(dir.path().join("b"))
            .args(["--listen", "127.0.0.1:0", "--store", &store])
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut waiting = String::new();
        BufReader::new(standby.stderr.take().unwrap())
            .read_line(&mut waiting)
            .unwrap();
        assert!(waiting.contains("standing by"), "{waiting}");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = standby.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // The standby serves nothing while the leader lives, and the leader still takes work.
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
        let v: Value = post(&format!("{leader_url}/v1/jobs"))
            .send_json(job("j5", 1))
            .unwrap()
            .into_json()
            .unwrap();
        assert_eq!(v["id"], 6);
        signal(leader.id(), "-KILL");
        leader.kill();
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        let _standby = Proc(standby);
        // Tokens are in the journal: the leader's admin token works on the new leader.
        let token = admin_token(&leader_url);
        tokens().insert(url.clone(), token);
        let names: Vec<String> = all_jobs(&url)
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["j0", "j1", "j2", "j3", "j4", "j5"], "{extra:?}");
        let v: Value = post(&format!("{url}/v1/jobs"))
            .send_json(job("j6", 1))
            .unwrap()
            .into_json()
            .unwrap();
        assert_eq!(v["id"], 7, "{extra:?}");
    }
}

#[test]
fn a_rolling_upgrade_keeps_every_task_running_where_it_runs() {
    for extra in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = match extra.as_slice() {
            [_, url] => url.clone(),
            _ => format!("sqlite:{}", dir.path().join("journal.db").display()),
        };
        // Agents know one address; the new server binds it once it leads.
        let listen = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().to_string()
        };
        let url = format!("http://{listen}");
        let (old, said) = spawn_server_on(&dir.path().join("old"), &listen, &["--store", &store]);
        let mut old = old;
        said.recv_timeout(Duration::from_secs(30)).unwrap();
        let token = std::fs::read_to_string(dir.path().join("old/admin.token")).unwrap();
        tokens().insert(url.clone(), token.trim().to_string());
        let _agents = start_node_agents(&url, dir.path(), &["nvl00000t00", "nvl00000t01"]);
        wait_for("both nodes up", || nodes_up(&url) == 2);
        let script = "echo $$ > $STARGRID_CHECKPOINT_FILE.pid; exec sleep 300";
        for name in ["a", "b"] {
            let mut spec = job(name, 1);
            spec["command"] = json!(["sh", "-c", script]);
            post(&format!("{url}/v1/jobs")).send_json(spec).unwrap();
        }
        wait_for("both jobs running", || {
            all_jobs(&url).iter().all(|j| j["state"] == "running")
        });
        let before = all_jobs(&url);
        let pids: Vec<String> = before
            .iter()
            .map(|j| {
                let node = j["nodes"][0].as_str().unwrap();
                let file = dir
                    .path()
                    .join(node)
                    .join(format!("{}-0-0/checkpoint.pid", j["id"]));
                wait_for("the task's pid", || {
                    std::fs::read_to_string(&file).is_ok_and(|s| !s.trim().is_empty())
                });
                std::fs::read_to_string(&file).unwrap().trim().to_string()
            })
            .collect();
        // The new build stands by on the same journal and address, with other rules.
        let (_new, serving) = spawn_server_on(
            &dir.path().join("new"),
            &listen,
            &["--store", &store, "--policy", "first-fit"],
        );
        assert!(serving.recv_timeout(Duration::from_millis(500)).is_err());
        // The operator stops the old one; the new one takes over the journal and the address.
        signal(old.id(), "-INT");
        old.kill();
        let line = serving.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(line.contains(&listen), "{line}");
        // Agents keep reporting to the same address; nothing they run is stopped or moved.
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(nodes_up(&url), 2, "{extra:?}");
        let after = all_jobs(&url);
        let placed = |jobs: &[Value]| -> Vec<(Value, Value, Value, Value)> {
            jobs.iter()
                .map(|j| {
                    (
                        j["id"].clone(),
                        j["state"].clone(),
                        j["nodes"].clone(),
                        j["restarts"].clone(),
                    )
                })
                .collect()
        };
        assert_eq!(placed(&after), placed(&before), "{extra:?}");
        for pid in &pids {
            assert!(alive(pid), "task {pid} was stopped by the upgrade");
        }
        // The new build decides new work.
        post(&format!("{url}/v1/jobs/1/cancel")).call().unwrap();
        post(&format!("{url}/v1/jobs"))
            .send_json(job("c", 1))
            .unwrap();
        wait_for("the new job running", || {
            get_job(&url, 3)["state"] == "running"
        });
        wait_for("the cancelled task stopped", || !alive(&pids[0]));
        assert!(alive(&pids[1]));
    }
}

#[test]
fn compaction_drops_old_records_and_a_restart_starts_from_its_snapshot() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let mut flags = flags(&backend);
        flags.extend(["--snapshot-every", "0"]);
        let (mut server, url) = start_server_with(dir.path(), &flags);
        let mut agents = start_agent(&url, &dir.path().join("agents"), &["--hollow", "40"]);
        wait_for("40 nodes up", || nodes_up(&url) == 40);
        for (name, nodes) in [("a", 18), ("b", 9), ("c", 36)] {
            post(&format!("{url}/v1/jobs"))
                .send_json(job(name, nodes))
                .unwrap();
        }
        post(&format!("{url}/v1/jobs/2/cancel")).call().unwrap();
        wait_for("a running", || get_job(&url, 1)["state"] == "running");
        // Only an admin compacts.
        let tenant: Value = post(&format!("{url}/v1/tokens"))
            .send_json(json!({"role": "tenant", "tenant": "default"}))
            .unwrap()
            .into_json()
            .unwrap();
        let refused = ureq::post(&format!("{url}/v1/journal/compact"))
            .set(
                "Authorization",
                &format!("Bearer {}", tenant["token"].as_str().unwrap()),
            )
            .call();
        assert!(matches!(refused, Err(ureq::Error::Status(403, _))));
        let c: Value = post(&format!("{url}/v1/journal/compact"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        assert!(c["dropped"].as_u64().unwrap() > 40, "{c}");
        assert_eq!(c["summaries"], 3, "{c}");
        let history: Value = get(&format!("{url}/v1/history"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        let names: Vec<(&str, &str)> = history["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["name"].as_str().unwrap(), h["state"].as_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [("a", "running"), ("b", "cancelled"), ("c", "pending")],
            "{backend:?}"
        );
        // Work goes on after compaction, and a restart starts from the snapshot.
        post(&format!("{url}/v1/jobs"))
            .send_json(job("d", 2))
            .unwrap();
        wait_for("d running", || get_job(&url, 4)["state"] == "running");
        let before = all_jobs(&url);
        signal(server.id(), "-KILL");
        server.kill();
        let (mut server, url, said) = start_server_saying(dir.path(), &flags);
        assert!(said.contains("after the snapshot at record"), "{said}");
        let after = all_jobs(&url);
        let view = |jobs: &[Value]| -> Vec<(Value, Value, Value)> {
            jobs.iter()
                .map(|j| (j["id"].clone(), j["state"].clone(), j["nodes"].clone()))
                .collect()
        };
        assert_eq!(view(&after), view(&before), "{backend:?}");
        server.kill();
        agents.kill();
    }
}
