//! Agents hear only durable changes: a heartbeat's answer reflects the state at some journal
//! record and is sent only once that record is durable. The test holds the journal's SQLite
//! write lock from outside, so that a pass's record cannot commit, and shows that a heartbeat
//! does not answer with the pass's placement until the lock is released.

#![allow(clippy::unwrap_used)]

mod common;

use common::call;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_never_tells_an_agent_of_a_placement_that_is_not_durable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let (srv, token) = common::start_server(dir.path()).await;
    let app = server::router(srv.clone());
    let node = "nvl00000t00";
    let beat = json!({"node": node, "tasks": []});
    assert_eq!(
        call(&app, &token, "/v1/agent/heartbeat", beat.clone())
            .await
            .0,
        200
    );
    let job = json!({"name": "j", "tenant": "default", "nodes": 1, "gpus_per_node": 4,
                     "time_limit_s": 60, "command": ["true"]});
    assert_eq!(call(&app, &token, "/v1/jobs", job).await.0, 201);

    // Another connection takes the journal's write lock: no commit can finish.
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let pass = {
        let srv = srv.clone();
        tokio::spawn(async move {
            let mut last = 0;
            srv.pass_if_due(&mut last).await
        })
    };
    // The pass placed the job in memory; its record is not durable.
    for _ in 0..100 {
        if srv.fingerprint().contains("\"state\":\"running\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(srv.fingerprint().contains("\"state\":\"running\""));
    let heartbeat = {
        let (app, token, beat) = (app.clone(), token.clone(), beat.clone());
        tokio::spawn(async move { call(&app, &token, "/v1/agent/heartbeat", beat).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !heartbeat.is_finished(),
        "a heartbeat answered while the placement it would show was not durable"
    );
    lock.execute_batch("ROLLBACK").unwrap();
    let (status, answer) = heartbeat.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer["assignments"][0]["job"], 1, "{answer}");
    assert!(pass.await.unwrap());
    srv.close();
}
