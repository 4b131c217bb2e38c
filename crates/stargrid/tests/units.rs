//! Prefill/decode units and command probes live: a service whose replica is one prefill
//! worker and two decode workers, on real agents. The prefill front (`model-standin --decode-from
//! STARGRID_DECODE_ADDRS`) streams each answer from its decode workers, reached at the
//! addresses and ports its environment names; requests through the gateway are answered by
//! both; scaling adds and removes whole units. A replica's readiness and liveness commands
//! gate its traffic and restart it.

#![allow(clippy::unwrap_used)]

mod common;

use common::serving::*;
use common::*;
use serde_json::{json, Value};

#[test]
fn a_prefill_front_streams_from_the_decode_workers_its_env_names() {
    let dir = tempfile::tempdir().unwrap();
    let cell = Cell::start(dir.path());
    let role = |name: &str, workers: u32, gpus: u32, args: &str| {
        json!({"name": name, "workers": workers, "gpus_per_node": gpus,
               "command": cell.standin(args).split(' ').collect::<Vec<_>>()})
    };
    let spec = json!({
        "name": "pd", "tenant": "default", "gpu": "GB200",
        "min_replicas": 1, "max_replicas": 2, "ready_path": "/ready",
        "roles": [
            role("prefill", 1, 2, "--decode-from STARGRID_DECODE_ADDRS"),
            role("decode", 2, 1, "--tokens 4 --token-delay-ms 5"),
        ],
    });
    let created: Value = post(&format!("{}/v1/services", cell.url))
        .send_json(spec)
        .unwrap()
        .into_json()
        .unwrap();
    let id = created["id"].as_u64().unwrap();
    // Ready only once the front reaches both decode workers.
    wait_long(40, "the unit to be ready", || {
        cell.service(id)["ready"] == 1
    });
    let v = cell.service(id);
    assert_eq!(v["gpus_per_replica"], 4, "{v}");
    assert_eq!(v["roles"][1]["workers"], 2, "{v}");
    let endpoints = get_path(&cell.url, &format!("/v1/services/{id}/endpoints"));
    let port = endpoints[0]["port"].as_u64().unwrap();
    assert!(
        (20_000..32_000).contains(&port),
        "the server's port: {endpoints}"
    );

    // Through the gateway: every answer streamed whole from a decode worker, both used.
    let mut decoders = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let r = ureq::get(&format!("{}/default/pd/generate", cell.gateway))
            .call()
            .unwrap();
        let by = r.header("x-decoded-by").unwrap().to_string();
        let body = r.into_string().unwrap();
        assert_eq!(body.lines().count(), 4, "{body}");
        let (host, port) = by.rsplit_once(':').unwrap();
        assert_eq!(host, "127.0.0.1");
        assert!((20_000..32_000).contains(&port.parse::<u32>().unwrap()));
        decoders.insert(by);
    }
    assert_eq!(decoders.len(), 2, "{decoders:?}");

    // Scaling adds a whole unit (4 more GPUs: the two trays are then full) and removes it.
    post(&format!("{}/v1/services/{id}/scale", cell.url))
        .send_json(json!({"replicas": 2}))
        .unwrap();
    wait_long(40, "the second unit to be ready", || {
        cell.service(id)["ready"] == 2
    });
    let v = cell.service(id);
    let nodes: usize = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().len())
        .sum();
    assert_eq!(nodes, 6, "two units of three workers: {v}");
    post(&format!("{}/v1/services/{id}/scale", cell.url))
        .send_json(json!({"replicas": 1}))
        .unwrap();
    wait_long(20, "one unit again", || {
        let v = cell.service(id);
        v["running"] == 1 && v["ready"] == 1
    });
}

#[test]
fn command_probes_gate_readiness_and_restart_a_replica_that_fails_them() {
    let dir = tempfile::tempdir().unwrap();
    let cell = Cell::start(dir.path());
    let (die, loaded) = (dir.path().join("die"), dir.path().join("loaded"));
    // Ready once its port listens (read from /proc, as a probe of a server that speaks no
    // HTTP would) and a `loaded` file exists; alive while no `die` file exists. Both run as
    // the replica's user.
    let listening = format!(
        r#"grep -qi ":$(printf %04X $PORT) 00000000:0000 0A" /proc/net/tcp && test -e {}"#,
        loaded.display()
    );
    let alive = format!("test ! -e {}", die.display());
    let spec = json!({
        "name": "probed", "tenant": "default", "gpu": "GB200", "gpus_per_node": 1,
        "min_replicas": 1,
        "command": cell.standin("--tokens 2 --warmup-ms 1500").split(' ').collect::<Vec<_>>(),
        "ready_command": ["sh", "-c", listening],
        "live_command": ["sh", "-c", alive],
    });
    // A probe given both ways is refused by name.
    let mut both = spec.clone();
    both["ready_path"] = json!("/ready");
    match post(&format!("{}/v1/services", cell.url)).send_json(both) {
        Err(ureq::Error::Status(400, r)) => {
            let body: Value = r.into_json().unwrap();
            assert_eq!(body["error"]["field"], "ready_command", "{body}");
        }
        other => panic!("{other:?}"),
    }
    let created: Value = post(&format!("{}/v1/services", cell.url))
        .send_json(spec)
        .unwrap()
        .into_json()
        .unwrap();
    let id = created["id"].as_u64().unwrap();
    wait_long(30, "the replica to run", || {
        cell.service(id)["running"] == 1
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        cell.service(id)["ready"],
        0,
        "not ready while its command fails"
    );
    std::fs::write(&loaded, "").unwrap();
    wait_long(30, "the replica to be ready", || {
        cell.service(id)["ready"] == 1
    });
    let r = ureq::get(&format!("{}/default/probed/", cell.gateway))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Its liveness command fails: three in a row and it is stopped and replaced.
    std::fs::write(&die, "").unwrap();
    wait_long(30, "the replica to be replaced", || {
        cell.service(id)["replaced"].as_u64().unwrap() >= 1
    });
    std::fs::remove_file(&die).unwrap();
    wait_long(60, "a replacement to be ready", || {
        let v = cell.service(id);
        v["ready"] == 1 && v["running"] == 1
    });
}
