//! Service replicas' endpoints end to end: a real agent gives a replica (a real HTTP server)
//! its port, probes its readiness path, and the server lists it once ready; a deleted
//! service lists none.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

#[test]
fn a_replica_gets_a_port_and_is_listed_once_its_readiness_path_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(&dir.path().join("data"));
    let _agent = start_agent(
        &url,
        &dir.path().join("agent"),
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
    // The replica serves HTTP on the port its agent gave it, after a second of "loading".
    let created: Value = post(&format!("{url}/v1/services"))
        .send_json(json!({
            "name": "web", "tenant": "default", "gpu": "GB200", "nodes_per_replica": 1,
            "gpus_per_node": 4, "min_replicas": 1, "ready_path": "/",
            "command": ["sh", "-c",
                "sleep 1; exec python3 -m http.server \"$PORT\" --bind 127.0.0.1"],
        }))
        .unwrap()
        .into_json()
        .unwrap();
    let id = created["id"].as_u64().unwrap();
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
    // Deleted: no endpoint is left.
    post(&format!("{url}/v1/services/{id}/delete"))
        .call()
        .unwrap();
    wait_for("the endpoint to go", || {
        endpoints().as_array().is_some_and(|a| a.is_empty())
    });
}
