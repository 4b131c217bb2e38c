//! The event stream end to end, with real server and agent processes: what `GET /v1/events`
//! tells and to whom, resuming from an id (across a restart too), refusals, and the CLI's
//! `stargrid events` and `queue --watch`.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The events the server keeps after `after`, as `token` sees them (the stream ends once
/// caught up).
fn events(url: &str, token: &str, after: &str) -> Vec<Value> {
    let resp = ureq::get(&format!("{url}/v1/events?follow=false&after={after}"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(resp.content_type(), "text/event-stream");
    let mut reader = BufReader::new(resp.into_reader());
    let mut out = Vec::new();
    while let Some(m) = wire::sse::next_message(&mut reader).unwrap() {
        let e: Value = serde_json::from_str(&m.data).unwrap();
        // The SSE id and kind are the event's own.
        assert_eq!(m.id.as_deref(), e["id"].as_str());
        assert_eq!(m.event, e["change"]["type"].as_str().unwrap());
        out.push(e);
    }
    out
}

fn status(r: Result<ureq::Response, ureq::Error>) -> u16 {
    match r {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    }
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["change"]["type"] == kind)
        .collect()
}

#[test]
fn the_stream_tells_each_tenant_its_own_work_in_order_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = two_tenants(dir.path());
    let data = dir.path().join("data");
    let tenant_flags = ["--tenants", tenants.to_str().unwrap()];
    let (mut server, url) = start_server_with(&data, &tenant_flags);
    let admin = admin_token(&url);
    let vision = tenant_token(&url, "vision");
    let speech = tenant_token(&url, "speech");
    let mut agents = start_agent(&url, &dir.path().join("agents"), &["--hollow", "4"]);
    wait_for("four nodes up", || nodes_up(&url) == 4);
    let submit = |tenant: &str, token: &str| -> u64 {
        let mut body = job(&format!("{tenant}-job"), 1);
        body["tenant"] = json!(tenant);
        let s: Value = ureq::post(&format!("{url}/v1/jobs"))
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(body)
            .unwrap()
            .into_json()
            .unwrap();
        s["id"].as_u64().unwrap()
    };
    let v = submit("vision", &vision);
    let s = submit("speech", &speech);
    wait_for("both jobs running", || {
        get_job(&url, v)["state"] == "running" && get_job(&url, s)["state"] == "running"
    });

    // The operator sees the nodes come up, then each job pending and then running, in order.
    // (A job's view can be ahead of the journal for a moment; events wait for durability.)
    let mut all = Vec::new();
    wait_for("both jobs' running events", || {
        all = events(&url, &admin, "0");
        of_type(&all, "job")
            .iter()
            .filter(|e| e["change"]["state"] == "running")
            .count()
            == 2
    });
    let ids: Vec<wire::api::EventId> = all
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(of_type(&all, "node").len(), 4, "{all:#?}");
    let states = |events: &[Value], id: u64| -> Vec<String> {
        of_type(events, "job")
            .iter()
            .filter(|e| e["change"]["job"] == id)
            .map(|e| e["change"]["state"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(states(&all, v), ["pending", "running"]);
    assert_eq!(states(&all, s), ["pending", "running"]);
    let running = of_type(&all, "job")
        .into_iter()
        .find(|e| e["change"]["job"] == v && e["change"]["state"] == "running")
        .unwrap();
    assert!(running["change"]["nodes"]
        .as_str()
        .unwrap()
        .starts_with("nvl"));
    assert!(running["time"].as_str().unwrap().ends_with('Z'));

    // Each tenant sees its own job's events and the fleet's, never the other's.
    let seen_by_vision = events(&url, &vision, "0");
    assert_eq!(states(&seen_by_vision, v), ["pending", "running"]);
    assert!(states(&seen_by_vision, s).is_empty());
    assert_eq!(of_type(&seen_by_vision, "node").len(), 4);
    // A tenant cannot ask for another's events.
    let other = ureq::get(&format!("{url}/v1/events?follow=false&tenant=speech"))
        .set("Authorization", &format!("Bearer {vision}"))
        .call();
    assert_eq!(status(other), 403);

    // Resuming after an event gives exactly what followed it.
    let middle = all[all.len() / 2]["id"].as_str().unwrap().to_string();
    let rest = events(&url, &admin, &middle);
    assert_eq!(rest, all[all.len() / 2 + 1..].to_vec());

    // Bad ids are refused by name.
    let bad = get(&format!("{url}/v1/events?after=12x")).call();
    assert_eq!(status(bad), 400);
    let bad_header = get(&format!("{url}/v1/events?follow=false"))
        .set("Last-Event-ID", "nope")
        .call();
    match bad_header {
        Err(ureq::Error::Status(400, r)) => {
            assert!(r.into_string().unwrap().contains("Last-Event-ID"))
        }
        other => panic!("{other:?}"),
    }

    // After a restart the same ids still resume: the server tells its latest records again.
    let last = all.last().unwrap()["id"].as_str().unwrap().to_string();
    server.kill();
    agents.kill();
    let (_server, url) = start_server_with(&data, &tenant_flags);
    let again = events(&url, &admin_token(&url), "0");
    assert_eq!(
        again[..all.len()],
        all[..],
        "the same events under the same ids"
    );
    // The nodes went silent while the server was down: that is news after the last id.
    let _agents = start_agent(&url, &dir.path().join("agents2"), &["--hollow", "4"]);
    wait_for("a node event after the restart", || {
        !of_type(&events(&url, &admin_token(&url), &last), "node").is_empty()
    });
    // An id this journal never reached asks the reader to resync.
    let ahead = events(&url, &admin_token(&url), "999999.0");
    assert_eq!(ahead.len(), 1);
    assert_eq!(ahead[0]["change"]["type"], "resync");
}

#[test]
fn stargrid_events_follows_and_queue_watch_prints_again_on_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(&dir.path().join("data"));
    let _agents = start_agent(&url, &dir.path().join("agents"), &["--hollow", "2"]);
    wait_for("two nodes up", || nodes_up(&url) == 2);
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args(args)
            .env("STARGRID_SERVER", &url)
            .env("STARGRID_TOKEN", admin_token(&url))
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let mut follow = Proc(cli(&["events", "--output", "json"]));
    let mut watch = Proc(cli(&["queue", "--watch"]));
    let mut follow_out = BufReader::new(follow.0.stdout.take().unwrap());
    let mut watch_out = BufReader::new(watch.0.stdout.take().unwrap());
    // The queue is printed once at the start: empty.
    let mut header = String::new();
    watch_out.read_line(&mut header).unwrap();
    assert!(header.contains("STATE"), "{header}");
    // Give both a moment to connect, then submit.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let s: Value = post(&format!("{url}/v1/jobs"))
        .send_json(job("watched", 1))
        .unwrap()
        .into_json()
        .unwrap();
    let id = s["id"].as_u64().unwrap();
    // `events` prints the job's events as JSON lines, as they come.
    let mut states = Vec::new();
    while states.len() < 2 {
        let mut line = String::new();
        assert!(follow_out.read_line(&mut line).unwrap() > 0, "events ended");
        let e: Value = serde_json::from_str(&line).unwrap();
        if e["change"]["job"] == id {
            states.push(e["change"]["state"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(states, ["pending", "running"]);
    // `queue --watch` prints the queue again, now with the job.
    let mut seen = false;
    for _ in 0..20 {
        let mut line = String::new();
        if watch_out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains("watched") {
            seen = true;
            break;
        }
    }
    assert!(seen, "queue --watch never showed the job");
    // `events --no-follow --after 0` prints what the server keeps, then ends.
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(["events", "--no-follow", "--after", "0"])
        .env("STARGRID_SERVER", &url)
        .env("STARGRID_TOKEN", admin_token(&url))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("job {id} watched (default): running on nvl")),
        "{text}"
    );
    assert!(text.contains("node nvl"), "{text}");
    // The listing commands' other outputs: the API's objects, and a wide table.
    let listing = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args(args)
            .env("STARGRID_SERVER", &url)
            .env("STARGRID_TOKEN", admin_token(&url))
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let jobs: Vec<Value> = serde_json::from_str(&listing(&["queue", "-o", "json"])).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["id"], id);
    assert!(jobs[0]["submitted_time"].as_str().unwrap().ends_with('Z'));
    let wide = listing(&["queue", "--output", "wide"]);
    assert!(wide.contains("NODELIST") && wide.contains("nvl"), "{wide}");
    let nodes: Vec<Value> = serde_json::from_str(&listing(&["nodes", "-o", "json"])).unwrap();
    assert_eq!(nodes.len(), 40);
}
