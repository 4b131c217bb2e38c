//! End-to-end tests of the agents against a real server on loopback: a silent agent's work
//! moved elsewhere, the long poll starting work at once, the inventory check, task logs from
//! the node, and the spend of what agents ran.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn a_job_whose_agent_goes_silent_is_requeued_runs_elsewhere_and_the_old_task_is_stopped() {
    for backend in backends() {
        silent_agent(&flags(&backend));
    }
}

fn silent_agent(store: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--heartbeat-timeout-s", "2"];
    args.extend_from_slice(store);
    let (mut server, url) = start_server_with(&dir.path().join("data"), &args);
    let nodes = ["nvl00000t00", "nvl00000t01"];
    let agents = start_node_agents(&url, dir.path(), &nodes);
    wait_for("both nodes up", || nodes_up(&url) == 2);
    // The first run writes its pid and a checkpoint and would run for a minute; the second
    // ends after a second.
    let script = "echo $$ > $STARGRID_CHECKPOINT_FILE.pid; touch $STARGRID_CHECKPOINT_FILE; \
                  if [ $STARGRID_RUN = 0 ]; then sleep 60; else sleep 1; fi";
    let mut spec = job("survivor", 1);
    spec["command"] = json!(["sh", "-c", script]);
    post(&format!("{url}/v1/jobs")).send_json(spec).unwrap();
    wait_for("the job running", || get_job(&url, 1)["state"] == "running");
    let first = get_job(&url, 1)["nodes"][0].as_str().unwrap().to_string();
    let which = nodes.iter().position(|n| *n == first).unwrap();
    let pid_file = dir.path().join(&first).join("1-0-0/checkpoint.pid");
    wait_for("the task's pid", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| !s.trim().is_empty())
    });
    let task_pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    // The agent freezes (a partition): its task goes on, but the node stops heartbeating.
    signal(agents[which].id(), "-STOP");
    wait_for("the job requeued onto the other node", || {
        let j = get_job(&url, 1);
        j["restarts"] == 1 && j["state"] == "running" && j["nodes"][0] != first.as_str()
    });
    assert!(alive(&task_pid), "the first run's task died on its own");
    // The agent comes back: its node is up again, and the stale task is stopped.
    signal(agents[which].id(), "-CONT");
    wait_for("the stale task stopped", || !alive(&task_pid));
    wait_for("the job finished", || {
        get_job(&url, 1)["state"] == "finished"
    });
    let j = get_job(&url, 1);
    assert_eq!(
        (j["exit_code"].as_i64(), j["restarts"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(nodes_up(&url), 2);
    drop(agents);
    server.kill();
}

#[test]
fn an_agent_starts_new_work_at_once_not_at_its_next_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start_server(&dir.path().join("data"));
    // Heartbeats 60 s apart: only the server's word through /v1/agent/wait can start the task
    // within the test's wait.
    let mut agent = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args([
            "agent",
            "--server",
            &url,
            "--interval-ms",
            "60000",
            "--node",
            "nvl00000t00",
        ])
        .arg("--work-dir")
        .arg(dir.path().join("agent"))
        .env("RUST_BACKTRACE", "0")
        .env(
            "STARGRID_TOKEN_FILE",
            token_file(dir.path(), &admin_token(&url)),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the node up", || nodes_up(&url) == 1);
    // The task writes in its own directory (it may run as its tenant's user).
    let marker = dir.path().join("agent/1-0-0/started");
    let mut body = job("now", 1);
    body["command"] = json!(["touch", "started"]);
    let v: Value = post(&format!("{url}/v1/jobs"))
        .send_json(body)
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(v["id"], 1);
    wait_for("the task started by the agent", || marker.exists());
    let _ = agent.kill();
    let _ = agent.wait();
    server.kill();
}

#[test]
fn a_node_whose_agent_finds_other_gpus_than_the_fleet_takes_no_work() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start_server(&dir.path().join("data"));
    let agent = |gpus: &str, model: &str, work: &str| {
        Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args([
                "agent",
                "--server",
                &url,
                "--interval-ms",
                "100",
                "--node",
                "nvl00000t00",
            ])
            .args(["--fake-gpus", gpus, "--gpu-model", model, "--work-dir"])
            .arg(dir.path().join(work))
            .env("RUST_BACKTRACE", "0")
            .env(
                "STARGRID_TOKEN_FILE",
                token_file(dir.path(), &admin_token(&url)),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The fleet's trays have 4 GB200s: an agent that finds 8 is refused, and says why.
    let mut wrong = agent("8", "GB200", "a");
    let mut said = String::new();
    BufReader::new(wrong.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(
        said.contains("inventory.gpus")
            && said.contains("has 4 GPUs in the fleet; its agent found 8"),
        "{said}"
    );
    assert_eq!(nodes_up(&url), 0);
    let _ = wrong.kill();
    let _ = wrong.wait();
    let mut wrong = agent("4", "H100", "b");
    let mut said = String::new();
    BufReader::new(wrong.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(said.contains("inventory.gpu_model"), "{said}");
    let _ = wrong.kill();
    let _ = wrong.wait();
    // The right inventory brings the node up.
    let mut right = agent("4", "GB200", "c");
    wait_for("the node up", || nodes_up(&url) == 1);
    let _ = right.kill();
    let _ = right.wait();
    server.kill();
}

#[test]
fn logs_come_from_the_node_while_a_job_runs_and_after_it_ended() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start_server(&dir.path().join("data"));
    let _agent = start_agent(&url, &dir.path().join("agent"), &["--node", "nvl00000t00"]);
    wait_for("the node up", || nodes_up(&url) == 1);
    let submit = |name: &str, script: &str| {
        let mut body = job(name, 1);
        body["command"] = json!(["sh", "-c", script]);
        post(&format!("{url}/v1/jobs")).send_json(body).unwrap();
    };
    submit("short", "echo first line; echo second line");
    wait_for("the short job finished", || {
        get_job(&url, 1)["state"] == "finished"
    });
    submit("long", "for i in 1 2 3; do echo step $i; done; sleep 60");
    wait_for("the long job running", || {
        get_job(&url, 2)["state"] == "running"
    });
    let logs = |id: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args(["logs", id])
            .env("STARGRID_SERVER", &url)
            .env("STARGRID_TOKEN", admin_token(&url))
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = logs("1");
    assert!(ok && out == "first line\nsecond line\n", "{out:?}");
    let (ok, out) = logs("2");
    assert!(ok && out == "step 1\nstep 2\nstep 3\n", "{out:?}");
    // A job that has not run has no logs, and says so.
    let mut body = job("never", 36);
    body["command"] = json!(["true"]);
    post(&format!("{url}/v1/jobs")).send_json(body).unwrap();
    let (ok, out) = logs("3");
    assert!(!ok && out.contains("has not run yet"), "{out}");
    server.kill();
}

#[test]
fn the_server_reports_spend_for_what_its_agents_ran() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = concat!(env!("CARGO_MANIFEST_DIR"), "/../fleet/data/catalogue.toml");
    let (mut server, url) =
        start_server_with(&dir.path().join("data"), &["--catalogue", catalogue]);
    let mut agent = start_agent(&url, &dir.path().join("agent"), &["--node", "nvl00000t00"]);
    wait_for("the node up", || nodes_up(&url) == 1);
    let mut body = job("paid", 1);
    body["command"] = json!(["sleep", "2"]);
    post(&format!("{url}/v1/jobs")).send_json(body).unwrap();
    wait_for("the job to finish", || {
        get_job(&url, 1)["state"] == "finished"
    });
    let cost = get_path(&url, "/v1/cost");
    // The tenant paid for the GPUs it held (a whole 4-GPU tray) at the catalogue's committed
    // aws rate, for whole seconds, as long as the job ran.
    let lines = cost["by_tenant"].as_array().unwrap();
    let mine = lines.iter().find(|r| r["name"] == "default").unwrap();
    let usd = mine["usd"].as_f64().unwrap();
    let gpus = get_job(&url, 1)["gpus"].as_f64().unwrap();
    let seconds = usd / (38.0 * gpus / 4.0) * 3600.0;
    assert!(
        (2.0..15.0).contains(&seconds) && (seconds - seconds.round()).abs() < 1e-6,
        "{usd} USD is {seconds} s of {gpus} GPUs"
    );
    // Committed capacity is paid for whether used or not: the rest of the fleet is idle.
    assert!(cost["idle_committed_usd"].as_f64().unwrap() > usd);
    let total = cost["total_usd"].as_f64().unwrap();
    let by_provider: f64 = cost["by_provider"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["usd"].as_f64().unwrap())
        .sum();
    assert!((total - by_provider).abs() < 1e-6 * total.max(1.0));
    assert_eq!(cost["commitments"].as_array().unwrap().len(), 4);
    // The CLI prints the same summary; a tenant token is refused.
    let plots = dir.path().join("plots");
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(["cost", "--server", &url, "--plots"])
        .arg(&plots)
        .env("STARGRID_TOKEN", admin_token(&url))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("by tenant:") && text.contains("default"),
        "{text}"
    );
    assert!(text.contains("commitments at"), "{text}");
    for f in ["spend_by_provider.png", "idle_committed.png"] {
        let png = std::fs::read(plots.join(f)).unwrap();
        assert_eq!(&png[1..4], b"PNG", "{f}");
    }
    let tenant: Value = post(&format!("{url}/v1/tokens"))
        .send_json(json!({"role": "tenant", "tenant": "default"}))
        .unwrap()
        .into_json()
        .unwrap();
    let refused = ureq::get(&format!("{url}/v1/cost"))
        .set(
            "Authorization",
            &format!("Bearer {}", tenant["token"].as_str().unwrap()),
        )
        .call();
    assert!(matches!(refused, Err(ureq::Error::Status(403, _))));
    agent.kill();
    server.kill();
}
