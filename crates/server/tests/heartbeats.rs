//! Heartbeats of many nodes in one request: each node's answer carries a digest of its
//! assignments, and a node whose agent holds the current digest is left out of the answer. A
//! node the state refuses is answered with its reason while the others are taken; a malformed
//! batch is refused whole.

#![allow(clippy::unwrap_used)]

mod common;

use common::call;
use serde_json::{json, Value};

/// The answers by node name.
fn by_node(reply: &Value) -> std::collections::BTreeMap<String, Value> {
    reply["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["node"].as_str().unwrap().to_string(), a.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_heartbeats_is_answered_with_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, token) = common::start_server(dir.path()).await;
    let app = server::router(srv.clone());
    let (a, b) = ("nvl00000t00", "nvl00000t01");
    // First beats: no digest held, so both nodes are answered, with nothing to run.
    let (status, reply) = call(
        &app,
        &token,
        "/v1/agent/heartbeats",
        json!({"beats": [{"node": a}, {"node": b}]}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let first = by_node(&reply);
    assert_eq!(first.len(), 2);
    for answer in first.values() {
        assert_eq!(answer["work"]["assignments"], json!([]));
    }
    let digest = |node: &str| first[node]["digest"].as_u64().unwrap();
    let beats =
        |da: u64, db: u64| json!({"beats": [{"node": a, "known": da}, {"node": b, "known": db}]});
    // Digests held: nothing to say.
    let (status, reply) = call(
        &app,
        &token,
        "/v1/agent/heartbeats",
        beats(digest(a), digest(b)),
    )
    .await;
    assert_eq!((status, reply["nodes"].clone()), (200, json!([])));

    // A one-node job is placed: only its node is answered, with the task and a new digest.
    let job = json!({"name": "j", "tenant": "default", "nodes": 1, "gpus_per_node": 4,
                     "time_limit_s": 60, "command": ["true"]});
    let (status, submitted) = call(&app, &token, "/v1/jobs", job).await;
    assert_eq!(status, 201, "{submitted}");
    let mut last = 0;
    assert!(srv.pass_if_due(&mut last).await);
    let (_, reply) = call(
        &app,
        &token,
        "/v1/agent/heartbeats",
        beats(digest(a), digest(b)),
    )
    .await;
    let changed = by_node(&reply);
    assert_eq!(changed.len(), 1, "{reply}");
    let (node, answer) = changed.iter().next().unwrap();
    let tasks = answer["work"]["assignments"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["job"], submitted["id"]);
    assert_ne!(answer["digest"].as_u64().unwrap(), digest(node));
    // With the new digest held, the node is quiet again; an old digest gets the work again.
    let new = answer["digest"].as_u64().unwrap();
    let held = |n: &str| if n == node { new } else { digest(n) };
    let (_, reply) = call(
        &app,
        &token,
        "/v1/agent/heartbeats",
        beats(held(a), held(b)),
    )
    .await;
    assert_eq!(reply["nodes"], json!([]));
    // The one-node form answers every assignment, digest or not.
    let (status, reply) = call(
        &app,
        &token,
        "/v1/agent/heartbeat",
        json!({"node": node, "known": new}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["assignments"].as_array().unwrap().len(), 1);

    // A node that is not in the fleet is refused by name; the others are taken.
    let (status, reply) = call(
        &app,
        &token,
        "/v1/agent/heartbeats",
        json!({"beats": [{"node": "no-such-node"}, {"node": a, "known": held(a)}]}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let answers = by_node(&reply);
    assert_eq!(answers.len(), 1, "{reply}");
    let refused = &answers["no-such-node"]["refused"];
    assert_eq!(refused["field"], "node");
    assert!(refused["reason"].as_str().unwrap().contains("no-such-node"));

    // Malformed batches are refused whole, naming the field.
    for (bad, why) in [
        (json!({"beats": []}), "1 to 2000"),
        (json!({"beats": [{"node": a}, {"node": a}]}), "twice"),
        (
            json!({"beats": (0..2001).map(|i| json!({"node": format!("n{i}")})).collect::<Vec<_>>()}),
            "1 to 2000",
        ),
    ] {
        let (status, reply) = call(&app, &token, "/v1/agent/heartbeats", bad).await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["error"]["field"], "beats");
        assert!(
            reply["error"]["reason"].as_str().unwrap().contains(why),
            "{reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_live_nodes_keeps_them_up_and_is_for_fan_in_credentials_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = server::Config {
        idle_pass_interval: 3600,
        heartbeat_timeout: std::time::Duration::from_millis(600),
        snapshot_every: 0,
        ..server::Config::new(
            format!("sqlite:{}", dir.path().join("journal.db").display()),
            dir.path(),
        )
    };
    let srv = tokio::task::spawn_blocking(move || server::Server::start(&config))
        .await
        .unwrap()
        .unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let token = token.trim();
    let app = server::router(srv.clone());
    let (a, b) = ("nvl00000t00", "nvl00000t01");
    let (status, reply) = call(
        &app,
        token,
        "/v1/agent/heartbeats",
        json!({"beats": [{"node": a}, {"node": b}]}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["seq"].as_u64().unwrap() > 0, "{reply}");
    // Only `a` is said to be alive (with names that are no node, passed over), past the
    // timeout: `b` goes down, `a` stays up.
    for _ in 0..4 {
        let (status, reply) = call(
            &app,
            token,
            "/v1/agent/heartbeats",
            json!({"beats": [], "alive": format!("{a},nope[0-3]")}),
        )
        .await;
        assert_eq!(
            (status, reply["nodes"].clone()),
            (200, json!([])),
            "{reply}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    srv.expire_silent_nodes().await;
    let nodes: Vec<Value> = {
        let (_, reply) = common::get(&app, token, "/v1/nodes").await;
        reply.as_array().unwrap().clone()
    };
    let state = |n: &str| {
        nodes
            .iter()
            .find(|v| v["name"] == n)
            .map(|v| v["state"].clone())
            .unwrap()
    };
    assert_eq!((state(a), state(b)), (json!("ready"), json!("down")));

    // An agent bound to its nodes cannot vouch for others; a list is bounded; a request must
    // carry something.
    let (_, agent) = call(
        &app,
        token,
        "/v1/tokens",
        json!({"role": "agent", "nodes": a}),
    )
    .await;
    let agent = agent["token"].as_str().unwrap();
    let (status, reply) = call(
        &app,
        agent,
        "/v1/agent/heartbeats",
        json!({"beats": [], "alive": a}),
    )
    .await;
    assert_eq!(
        (status, reply["error"]["field"].clone()),
        (403, json!("alive"))
    );
    let (status, reply) = call(
        &app,
        token,
        "/v1/agent/heartbeats",
        json!({"beats": [], "alive": "n[0-2000000]"}),
    )
    .await;
    assert_eq!(
        (status, reply["error"]["field"].clone()),
        (400, json!("alive")),
        "{reply}"
    );
    let (status, reply) = call(&app, token, "/v1/agent/heartbeats", json!({"beats": []})).await;
    assert_eq!(
        (status, reply["error"]["field"].clone()),
        (400, json!("beats"))
    );
}
