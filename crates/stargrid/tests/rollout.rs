//! Rolling updates end to end: a service of the model stand-in serving through a gateway under
//! load gets a new version a replica at a time and no request fails; a version whose replicas
//! never become ready is rolled back by itself, still with no request failed; the CLI shows
//! where the update stands and undoes one.

#![allow(clippy::unwrap_used)]

mod common;

use common::serving::*;
use common::*;
use serde_json::json;

/// The replica's version as a request through the gateway finds it.
fn label(target: &str) -> String {
    let answer = ureq::post(target)
        .timeout(std::time::Duration::from_secs(10))
        .send_string("{}")
        .unwrap();
    answer.header("x-label").unwrap_or_default().to_string()
}

#[test]
fn a_new_version_rolls_over_under_load_and_a_bad_one_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let cell = Cell::start(dir.path());
    let standin = |version: &str| {
        cell.standin(&format!(
            "--tokens 10 --token-delay-ms 23 --label {version}"
        ))
    };
    let id = cell.standin_service(
        &standin("v1"),
        json!({"name": "roll", "min_replicas": 3, "max_replicas": 4}),
    );
    wait_long(30, "three ready replicas", || {
        cell.service(id)["ready"] == 3
    });
    let target = format!("{}/default/roll/v1/completions", cell.gateway);
    wait_long(10, "the gateway to route", || {
        ureq::post(&target).send_string("{}").is_ok()
    });
    assert_eq!(label(&target), "v1");
    let admin = admin_token(&cell.url);
    let rollout = |args: &[&str]| {
        let (ok, out, err) = cli(&cell.url, &admin, &[&["rollout"], args].concat());
        assert!(ok, "{err}");
        out
    };

    // v2 under load, one surge replica at a time: nothing fails, every replica ends on v2.
    let traffic = load(&target, &["--concurrency", "4", "--duration-s", "25"]);
    let said = rollout(&[
        "start",
        &id.to_string(),
        "--version",
        "v2",
        "--command",
        &standin("v2"),
    ]);
    assert!(said.contains("rolling to version v2 (from 1)"), "{said}");
    wait_long(60, "the update to finish", || {
        rollout(&["status", &id.to_string()]).contains("done to version v2")
    });
    for _ in 0..6 {
        assert_eq!(label(&target), "v2");
    }
    let v = cell.service(id);
    assert_eq!(
        (v["desired"].as_u64(), v["ready"].as_u64()),
        (Some(3), Some(3)),
        "{v}"
    );

    // v3 never becomes ready: after its deadline it rolls back to v2, with nothing failed.
    let said = rollout(&[
        "start",
        &id.to_string(),
        "--version",
        "v3",
        "--command",
        "sleep 600",
        "--progress-deadline-s",
        "10",
    ]);
    assert!(said.contains("rolling to version v3"), "{said}");
    // A second update while one is under way is refused by field.
    let (ok, _, err) = cli(
        &cell.url,
        &admin,
        &["rollout", "start", &id.to_string(), "--version", "v4"],
    );
    assert!(!ok && err.contains("version"), "{err}");
    wait_long(40, "the bad update to roll back", || {
        rollout(&["status", &id.to_string()]).contains("rolled-back to version v2")
    });
    let status = rollout(&["status", &id.to_string()]);
    assert!(status.contains("not ready within 10 s"), "{status}");
    let traffic = traffic.join().unwrap();
    assert_eq!(traffic["failed"], 0, "{traffic}");
    assert_eq!(label(&target), "v2");
    let v = cell.service(id);
    assert_eq!(
        (v["desired"].as_u64(), v["ready"].as_u64()),
        (Some(3), Some(3)),
        "{v}"
    );
}

#[test]
fn a_canary_takes_its_share_of_traffic_until_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let cell = Cell::start(dir.path());
    let standin =
        |version: &str| cell.standin(&format!("--tokens 1 --token-delay-ms 24 --label {version}"));
    let id = cell
        .standin_service(
            &standin("v1"),
            json!({"name": "can", "min_replicas": 2, "max_replicas": 3}),
        )
        .to_string();
    wait_long(30, "two ready replicas", || {
        cell.service(id.parse().unwrap())["ready"] == 2
    });
    let target = format!("{}/default/can/", cell.gateway);
    let admin = admin_token(&cell.url);
    let rollout = |args: &[&str]| {
        let (ok, out, err) = cli(&cell.url, &admin, &[&["rollout"], args].concat());
        assert!(ok, "{err}");
        out
    };
    // Promoting without a canary is refused.
    let (ok, _, err) = cli(&cell.url, &admin, &["rollout", "promote", &id]);
    assert!(!ok && err.contains("409"), "{err}");
    let said = rollout(&[
        "start",
        &id,
        "--version",
        "v2",
        "--command",
        &standin("v2"),
        "--canary-percent",
        "25",
    ]);
    assert!(said.contains("canary to version v2"), "{said}");
    wait_long(30, "the canary to serve", || {
        (0..8).any(|_| label(&target) == "v2")
    });
    let status = rollout(&["status", &id]);
    assert!(
        status.contains("2 old replicas, 1 new (1 ready)"),
        "{status}"
    );
    assert!(status.contains("25% of the traffic"), "{status}");
    // A quarter of the requests reach the canary; nothing old is retired meanwhile.
    let to_canary = (0..200).filter(|_| label(&target) == "v2").count();
    assert!((40..=60).contains(&to_canary), "{to_canary} of 200");
    // Promoted, the update goes on over every replica.
    rollout(&["promote", &id]);
    wait_long(60, "the update to finish", || {
        rollout(&["status", &id]).contains("done to version v2")
    });
    for _ in 0..6 {
        assert_eq!(label(&target), "v2");
    }
}
