//! Live inference end to end: a server, real agents on two trays, replicas of the model
//! stand-in (`stargrid model-standin`, streaming tokens), a `stargrid gateway` in front and
//! `stargrid load` driving it. Traffic ramps 10×, the service scales up on its gateway's load
//! and back down once traffic drops; no request fails through the scale-up or the
//! scale-down; a replica stopped under load drains, and one killed outright costs at most the
//! requests it was serving.

#![allow(clippy::unwrap_used)]

mod common;

use common::serving::*;
use common::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

#[test]
fn replicas_follow_traffic_up_and_down_and_no_request_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cell = Cell::start(dir.path());
    let id = cell.chat(1, 6);
    wait_long(30, "the first replica to be ready", || {
        cell.service(id)["ready"] == 1
    });
    let target = format!("{}/default/chat/v1/completions", cell.gateway);
    // An unknown service is refused by name; a path without one too.
    let missing = ureq::get(&format!("{}/default/nothing/", cell.gateway)).call();
    assert!(matches!(missing, Err(ureq::Error::Status(404, _))));

    // Traffic ramps 10×: 2 clients to 20 (each request takes about 200 ms).
    let ramp = load(
        &target,
        &[
            "--concurrency",
            "2",
            "--ramp-to",
            "20",
            "--duration-s",
            "12",
        ],
    );
    let mut most = 0;
    wait_long(20, "the service to scale up", || {
        let v = cell.service(id);
        most = most.max(v["ready"].as_u64().unwrap());
        most >= 5
    });
    let ramp = ramp.join().unwrap();
    assert_eq!(ramp["failed"], 0, "{ramp}");
    assert!(ramp["replicas_seen"].as_u64().unwrap() >= 5, "{ramp}");

    // Traffic drops to one client: the service scales back down to one replica, within the
    // 4 s window, while requests go on, and none fails.
    let low = load(&target, &["--concurrency", "1", "--duration-s", "14"]);
    wait_long(14, "the service to scale down", || {
        cell.service(id)["desired"] == 1
    });
    let low = low.join().unwrap();
    assert_eq!(low["failed"], 0, "{low}");
    assert!(low["ok"].as_u64().unwrap() > 20, "{low}");
    let v = cell.service(id);
    assert_eq!(
        (v["desired"].as_u64(), v["ready"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
}

#[test]
fn a_stopped_replica_drains_and_a_killed_one_costs_only_its_own_requests() {
    let dir = tempfile::tempdir().unwrap();
    let cell = Cell::start(dir.path());
    // Three replicas, scaled by hand only (the autoscaler would react to the kill).
    let id = cell.standin_service(
        &cell.standin("--tokens 10 --token-delay-ms 21"),
        json!({"name": "steady", "min_replicas": 3}),
    );
    wait_long(30, "three ready replicas", || {
        cell.service(id)["ready"] == 3
    });
    let target = format!("{}/default/steady/", cell.gateway);
    let replica_pids = || -> Vec<u32> {
        let out = Command::new("pgrep")
            .args(["-f", "model-standin --tokens 10 --token-delay-ms 21"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };

    // A replica told to stop (SIGTERM, as its agent stops it) finishes what it has while
    // the gateway moves on: nothing fails.
    let steady = load(&target, &["--concurrency", "6", "--duration-s", "6"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pids = replica_pids();
    assert!(!pids.is_empty(), "no replica process found");
    signal(pids[0], "-TERM");
    let steady = steady.join().unwrap();
    assert_eq!(steady["failed"], 0, "{steady}");
    wait_long(30, "the stopped replica to be replaced", || {
        cell.service(id)["ready"] == 3
    });

    // One killed outright cuts the answers it was streaming, and only those: at most its
    // share of the clients' requests fail; the next ones go to the others.
    let killed = load(&target, &["--concurrency", "6", "--duration-s", "6"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pids = replica_pids();
    signal(pids[0], "-KILL");
    let killed = killed.join().unwrap();
    let failed = killed["failed"].as_u64().unwrap();
    assert!(failed <= 6, "{killed}");
    assert!(killed["ok"].as_u64().unwrap() > 50, "{killed}");
}

#[test]
fn up_serves_its_demo_service_through_its_gateway_and_scales_it_on_load() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let data = dir.path().join("up");
    let mut up = Proc(
        Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--gateway-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--tasks-dir")
            .arg(dir.path().join("tasks"))
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(up.0.stdout.take().unwrap()).lines();
    let mut said = String::new();
    let (mut server, mut load_line) = (None, None);
    while load_line.is_none() {
        let line = lines.next().expect("up ended early").unwrap();
        said.push_str(&line);
        said.push('\n');
        if server.is_none() {
            server = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(str::to_string);
        }
        if let Some((_, command)) = line.split_once("load it: ") {
            load_line = Some(command.to_string());
        }
    }
    // Keep reading what it prints, so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let server = server.unwrap();
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let service = |field: &str| -> u64 {
        ureq::get(&format!("{server}/v1/services/1"))
            .set("Authorization", &format!("Bearer {}", token.trim()))
            .call()
            .unwrap()
            .into_json::<Value>()
            .unwrap()[field]
            .as_u64()
            .unwrap()
    };
    wait_long(60, "the demo service's replicas to be ready", || {
        service("ready") == 2
    });
    // The printed command, run as printed (shorter): the service scales to its most.
    let command = load_line.unwrap();
    let mut words = command.split_whitespace();
    assert_eq!(
        (words.next(), words.next()),
        (Some("stargrid"), Some("load")),
        "{said}"
    );
    let url = words.next().unwrap().to_string();
    let report = load(&url, &["--concurrency", "32", "--duration-s", "12"]);
    wait_long(30, "the demo service to scale up", || service("ready") == 4);
    let report = report.join().unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["replicas_seen"].as_u64().unwrap() >= 3, "{report}");
    // Ctrl-C: everything stops, the replicas with it.
    let _ = Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status();
    for _ in 0..300 {
        if !matches!(up.0.try_wait(), Ok(None)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(up.0.try_wait().unwrap().is_some(), "up did not stop");
}

#[test]
fn the_gateway_bench_reports_its_figures_with_no_request_failed() {
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args([
            "bench",
            "gateway",
            "--seconds",
            "1",
            "--clients",
            "8",
            "--json",
        ])
        .args(["--nginx", "/nonexistent/nginx-is-optional"])
        .output()
        .unwrap();
    // The nginx named does not exist: the bench says so rather than measure without it.
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nginx-is-optional"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args([
            "bench",
            "gateway",
            "--seconds",
            "1",
            "--clients",
            "8",
            "--json",
        ])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(figures["failed_requests"], 0, "{figures}");
    for key in [
        "gateway_requests_per_s",
        "direct_requests_per_s",
        "scale_up_to_serving_s",
    ] {
        assert!(figures[key].as_f64().unwrap() > 0.0, "{key}: {figures}");
    }
    for key in ["gateway_added_p50_ms", "gateway_added_p99_ms"] {
        assert!(figures[key].is_f64(), "{key}: {figures}");
    }
}

#[test]
fn a_service_scaled_to_zero_wakes_on_its_first_request_and_sleeps_again() {
    let dir = tempfile::tempdir().unwrap();
    let cell = Cell::start(dir.path());
    let id = cell.standin_service(
        &cell.standin("--tokens 2 --token-delay-ms 22"),
        json!({"name": "sleepy", "min_replicas": 0, "max_replicas": 2,
               "autoscale": {"target_inflight_per_replica": 4, "scale_down_window_s": 2}}),
    );
    assert_eq!(cell.service(id)["desired"], 0);
    let target = format!("{}/default/sleepy/v1/completions", cell.gateway);
    // The gateway knows the service (an unknown one is refused at once, a known one held).
    wait_long(10, "the gateway to route the service", || {
        !matches!(
            ureq::get(&format!("{}/default/sleepy-not/", cell.gateway)).call(),
            Err(ureq::Error::Status(503, _))
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    // The first request is held while the autoscaler wakes a replica, then answered by it.
    let answer = ureq::post(&target)
        .timeout(std::time::Duration::from_secs(30))
        .send_string("{\"prompt\": \"wake up\"}")
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.into_string().unwrap().contains("token 1"));
    assert_eq!(cell.service(id)["desired"], 1);
    // Idle for the 2 s window: back to zero.
    wait_long(20, "the service to sleep again", || {
        let v = cell.service(id);
        v["desired"] == 0 && v["ready"] == 0
    });
}
