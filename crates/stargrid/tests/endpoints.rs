//! Service replicas' endpoints end to end: a real agent gives a replica (a real HTTP server)
//! its port, probes its readiness path, and the server lists it once ready; a deleted
//! service lists none; a replica whose liveness path stops answering is stopped and replaced.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

/// A server and one GB200 tray's real agent (4 declared GPUs) on loopback.
struct Cell {
    url: String,
    work: std::path::PathBuf,
    _server: Proc,
    _agent: Proc,
}

impl Cell {
    fn start(dir: &std::path::Path) -> Cell {
        let (server, url) = start_server(&dir.join("data"));
        let work = dir.join("agent");
        let agent = start_agent(
            &url,
            &work,
            &[
                "--node",
                "nvl00000t00",
                "--fake-gpus",
                "4",
                "--gpu-model",
                "GB200",
                "--grace-s",
                "1",
            ],
        );
        wait_for("the node to come up", || nodes_up(&url) == 1);
        Cell {
            url,
            work,
            _server: server,
            _agent: agent,
        }
    }

    /// Creates a one-replica service running `script` under `sh -c`, with `probes` (its
    /// `ready_path` and `live_path`); its id.
    fn serve(&self, probes: Value, script: &str) -> u64 {
        let mut spec = json!({
            "name": "web", "tenant": "default", "gpu": "GB200", "nodes_per_replica": 1,
            "gpus_per_node": 4, "min_replicas": 1, "command": ["sh", "-c", script],
        });
        for (k, v) in probes.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let created: Value = post(&format!("{}/v1/services", self.url))
            .send_json(spec)
            .unwrap()
            .into_json()
            .unwrap();
        created["id"].as_u64().unwrap()
    }
}

#[test]
fn a_replica_gets_a_port_and_is_listed_once_its_readiness_path_answers() {
    let dir = tempfile::tempdir().unwrap();
    let cell = Cell::start(dir.path());
    let url = cell.url.clone();
    // The replica serves HTTP on the port its agent gave it, after a second of "loading".
    let id = cell.serve(
        json!({"ready_path": "/"}),
        "sleep 1; exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
    );
    let endpoints = || get_path(&url, &format!("/v1/services/{id}/endpoints"));
    wait_for("the replica to be ready", || {
        endpoints().as_array().is_some_and(|a| a.len() == 1)
    });
    let e = endpoints()[0].clone();
    assert_eq!(e["node"], "nvl00000t00");
    assert_eq!(e["address"], "127.0.0.1");
    let port = e["port"].as_u64().unwrap();
    let answer = ureq::get(&format!("http://127.0.0.1:{port}/"))
        .call()
        .unwrap();
    assert_eq!(answer.status(), 200);
    // The service's tenant reads them too.
    let other = tenant_token(&url, "default");
    let own = ureq::get(&format!("{url}/v1/services/{id}/endpoints"))
        .set("Authorization", &format!("Bearer {other}"))
        .call()
        .unwrap();
    assert_eq!(own.status(), 200);
    // The service's view counts it ready; the CLI lists it.
    assert_eq!(get_path(&url, &format!("/v1/services/{id}"))["ready"], 1);
    let admin = admin_token(&url);
    let (ok, listed, err) = cli(&url, &admin, &["endpoints", &id.to_string()]);
    assert!(ok, "{err}");
    assert!(listed.contains(&format!("127.0.0.1:{port}")), "{listed}");
    let (ok, table, _) = cli(&url, &admin, &["services"]);
    assert!(ok);
    assert!(table.contains("READY"), "{table}");
    // Deleted: no endpoint is left.
    post(&format!("{url}/v1/services/{id}/delete"))
        .call()
        .unwrap();
    wait_for("the endpoint to go", || {
        endpoints().as_array().is_some_and(|a| a.is_empty())
    });
}

#[test]
fn a_replica_whose_liveness_path_fails_is_stopped_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cell = Cell::start(dir.path());
    let url = cell.url.clone();
    // It serves its directory: `/alive` answers while the file is there.
    let id = cell.serve(
        json!({"ready_path": "/", "live_path": "/alive"}),
        "cd \"$HOME\" && touch alive && exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
    );
    let service = || get_path(&url, &format!("/v1/services/{id}"));
    wait_for("the replica to be ready", || service()["ready"] == 1);
    // The file goes: the liveness path answers 404, and after three probes the agent stops
    // the replica; the service replaces it.
    let alive = find(&cell.work, "alive").expect("the replica's file");
    std::fs::remove_file(&alive).unwrap();
    wait_for("the replica to be replaced", || service()["replaced"] == 1);
}

/// The first file named `name` under `dir`.
fn find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        }
    }
    None
}
