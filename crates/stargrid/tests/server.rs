//! End-to-end tests of `stargrid server` on loopback: a real server process and real HTTP —
//! requests and refusals, the client commands, tokens, `stargrid up` (the agents' end-to-end
//! tests are in `agents.rs`, the journal's in `journal.rs`).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

use serde_json::{json, Value};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn bad_requests_get_a_json_body_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start_server(dir.path());
    let refuse = |body: Value| -> (u16, Value) {
        match post(&format!("{url}/v1/jobs")).send_json(body) {
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
            other => panic!("accepted: {other:?}"),
        }
    };
    let (code, e) = refuse(
        json!({"name": "x", "tenant": "default", "nodes": "many", "gpus_per_node": 4, "time_limit_s": 5}),
    );
    assert_eq!((code, e["error"]["field"].as_str()), (400, Some("nodes")));
    let (code, e) = refuse(
        json!({"name": "x", "tenant": "nobody", "nodes": 1, "gpus_per_node": 4, "time_limit_s": 5}),
    );
    assert_eq!((code, e["error"]["field"].as_str()), (400, Some("tenant")));
    assert!(e["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("unknown tenant 'nobody'"));
    let (code, e) = refuse(
        json!({"name": "x", "tenant": "default", "nodes": 1, "gpus_per_node": 4, "time_limit_s": 5, "colour": "red"}),
    );
    assert_eq!((code, e["error"]["field"].as_str()), (400, Some("colour")));
    // Placement rules: a provider the fleet lacks, or one both pinned and excluded.
    let (code, e) = refuse(
        json!({"name": "x", "tenant": "default", "nodes": 1, "gpus_per_node": 4, "time_limit_s": 5,
               "placement": {"providers": ["ibm"]}}),
    );
    assert_eq!(
        (code, e["error"]["field"].as_str()),
        (400, Some("placement.providers"))
    );
    assert!(e["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("'ibm' is not in this fleet (it has aws)"));
    let (code, e) = refuse(
        json!({"name": "x", "tenant": "default", "nodes": 1, "gpus_per_node": 4, "time_limit_s": 5,
               "placement": {"providers": ["aws"], "exclude_providers": ["aws"]}}),
    );
    assert_eq!(
        (code, e["error"]["field"].as_str()),
        (400, Some("placement.exclude_providers"))
    );
    // Over the size limit: refused from the declared length, before the body is read.
    {
        use std::io::{Read, Write};
        let addr = url.trim_start_matches("http://");
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{",
            admin_token(&url),
            2 << 20
        );
        conn.write_all(head.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    match get(&format!("{url}/v1/jobs/99")).call() {
        Err(ureq::Error::Status(code, r)) => {
            assert_eq!(code, 404);
            let e: Value = r.into_json().unwrap();
            assert_eq!(e["error"]["field"], "id");
        }
        other => panic!("found: {other:?}"),
    }
    // Nothing refused was journaled: the next id is 1.
    let v: Value = post(&format!("{url}/v1/jobs"))
        .send_json(job("first", 1))
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(v["id"], 1);
    let doc: Value = get(&format!("{url}/openapi.json"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert!(doc["paths"]["/v1/jobs"]["post"].is_object());
    server.kill();
}

#[test]
fn up_runs_the_demo_mix_to_the_end_with_real_processes() {
    let dir = tempfile::tempdir().unwrap();
    // Run as root, tasks run as tenants' users: their directory must be reachable by them.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let tasks = dir.path().join("tasks");
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args([
            "up",
            "--exit-when-done",
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("up"))
        .arg("--tasks-dir")
        .arg(&tasks)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("agents for 40 nodes"), "{stdout}");
    // The dashboard's login link, with the admin token in its fragment.
    let link = stdout
        .lines()
        .find_map(|l| l.strip_prefix("dashboard: "))
        .unwrap_or_else(|| panic!("no dashboard link in {stdout}"));
    assert!(link.contains("/ui/login#token="), "{link}");
    let last = stdout.lines().rfind(|l| l.contains("llm-train")).unwrap();
    // Five jobs and the sandbox batch ended; the service has both replicas up.
    assert_eq!(last.matches("finished").count(), 6, "{last}");
    assert!(last.contains("chat 2/2 replicas"), "{last}");
    assert!(
        last.contains("agent-rollouts finished (0 live, 24 ok)"),
        "{last}"
    );
    // The training run's two ranks ran for real and checkpointed.
    for rank in 0..2 {
        let log = std::fs::read_to_string(tasks.join(format!("1-0-{rank}/log"))).unwrap();
        assert!(log.contains(&format!("rank {rank}/2 step 10")), "{log}");
        let checkpoint =
            std::fs::read_to_string(tasks.join(format!("1-0-{rank}/checkpoint"))).unwrap();
        assert_eq!(checkpoint.trim(), "10");
    }
    // Run as root, `up`'s tasks ran as their tenant's user, who cannot enter the data dir
    // (the journal, the admin token, the secrets key).
    {
        use std::os::unix::fs::MetadataExt;
        let task_dir = std::fs::metadata(tasks.join("1-0-0")).unwrap();
        let data_dir = std::fs::metadata(dir.path().join("up")).unwrap();
        if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
            assert_ne!(task_dir.uid(), 0);
            assert_eq!(task_dir.mode() & 0o777, 0o700);
        }
        assert_eq!(data_dir.mode() & 0o777, 0o700);
    }
    // Each sandbox ran as its own process, knowing its index; each replica ran on its node.
    let logs: Vec<String> = std::fs::read_dir(&tasks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("-sandbox-"))
        .map(|p| std::fs::read_to_string(p.join("log")).unwrap())
        .collect();
    assert_eq!(logs.len(), 24);
    for i in 0..24 {
        assert!(
            logs.iter()
                .any(|l| l.starts_with(&format!("sandbox {i} of batch 6"))),
            "{logs:?}"
        );
    }
    let serving = std::fs::read_dir(&tasks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| std::fs::read_to_string(p.join("log")).ok())
        .filter(|l| {
            l.starts_with("model stand-in serving on 127.0.0.1:") && l.contains("on node nvl")
        })
        .count();
    assert!(serving >= 2, "{serving} replica processes");
}

#[test]
fn the_client_commands_submit_the_example_job_and_show_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start_server(dir.path());
    let _agents = start_agent(&url, &dir.path().join("agents"), &["--hollow", "40"]);
    wait_for("40 nodes up", || nodes_up(&url) == 40);
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args(args)
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
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/job.toml");
    let (ok, out) = cli(&["submit", example]);
    assert!(ok, "{out}");
    assert!(out.contains("submitted job 1"), "{out}");
    wait_for("the example running", || {
        get_job(&url, 1)["state"] == "running"
    });
    let (ok, out) = cli(&["queue"]);
    assert!(
        ok && out.contains("llm-train") && out.contains("running"),
        "{out}"
    );
    let (ok, out) = cli(&["why", "1"]);
    assert!(ok && out.contains("job 1 is running on"), "{out}");
    let (ok, out) = cli(&["cancel", "1"]);
    assert!(ok && out.contains("job 1 is cancelled"), "{out}");
    // A refusal names the field and fails the command.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\ntenant = \"nobody\"\nnodes = 1\ngpus_per_node = 4\ntime_limit_s = 5\n",
    )
    .unwrap();
    let (ok, out) = cli(&["submit", bad.to_str().unwrap()]);
    assert!(
        !ok && out.contains("tenant: unknown tenant 'nobody'"),
        "{out}"
    );
    std::fs::write(&bad, "kind = \"cronjob\"\nname = \"x\"\n").unwrap();
    let (ok, out) = cli(&["submit", bad.to_str().unwrap()]);
    assert!(!ok && out.contains("kind: unknown kind 'cronjob'"), "{out}");
    // The example service: two replicas, scaled to three, then deleted.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/service.toml");
    let (ok, out) = cli(&["submit", example]);
    assert!(ok && out.contains("created service 1"), "{out}");
    wait_for("both replicas running", || {
        cli(&["services"]).1.contains("chat") && get_path(&url, "/v1/services/1")["running"] == 2
    });
    let (ok, out) = cli(&["scale", "1", "3"]);
    assert!(ok && out.contains("service 1: 3 replicas wanted"), "{out}");
    let (ok, out) = cli(&["services"]);
    assert!(ok && out.contains("spread rule"), "{out}");
    let (ok, out) = cli(&["delete-service", "1"]);
    assert!(ok && out.contains("service 1 is deleted"), "{out}");
    // The example prefill/decode service: one unit of three workers, its roles listed.
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/prefill-decode.toml"
    );
    let (ok, out) = cli(&["submit", example]);
    assert!(ok && out.contains("created service 2"), "{out}");
    wait_for("the unit running", || {
        get_path(&url, "/v1/services/2")["running"] == 1
    });
    assert_eq!(
        get_path(&url, "/v1/services/2")["replicas"][0]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let (ok, out) = cli(&["services", "-o", "wide"]);
    assert!(ok && out.contains("prefill 1×1×2, decode 2×1×1"), "{out}");
    let (ok, out) = cli(&["delete-service", "2"]);
    assert!(ok && out.contains("service 2 is deleted"), "{out}");
    // The example batch: placed at once, listed, cancelled (hollow sandboxes run until stopped).
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sandboxes.toml");
    let (ok, out) = cli(&["submit", example]);
    assert!(ok && out.contains("placed sandbox batch 2 of 100"), "{out}");
    let (ok, out) = cli(&["sandboxes"]);
    assert!(
        ok && out.contains("rollouts") && out.contains("running"),
        "{out}"
    );
    let (ok, out) = cli(&["get", "2"]);
    assert!(ok && out.contains("\"live\": 100"), "{out}");
    let (ok, out) = cli(&["cancel", "2"]);
    assert!(ok && out.contains("sandbox batch 2 is cancelled"), "{out}");
    let (ok, out) = cli(&["cancel", "99"]);
    assert!(!ok && out.contains("404"), "{out}");
    // Drain and resume a node.
    let (ok, out) = cli(&["drain", "nvl00000t00"]);
    assert!(ok && out.contains("node nvl00000t00 is draining"), "{out}");
    let (ok, out) = cli(&["drain", "nvl00000t00"]);
    assert!(
        !ok && out.contains("409") && out.contains("already drained"),
        "{out}"
    );
    let (ok, out) = cli(&["resume", "nvl00000t00"]);
    assert!(ok && out.contains("node nvl00000t00 is ready"), "{out}");
    let (ok, out) = cli(&["drain", "nope"]);
    assert!(!ok && out.contains("404"), "{out}");
    // A whole NVL72 domain, by its topology path.
    let fleet = fleet::file::parse(
        "default",
        &server::state::default_fleet_toml().unwrap(),
        model::InstanceCatalog::builtin(),
    )
    .unwrap();
    let first = fleet.node_by_name("nvl00000t00").unwrap();
    let domain = fleet.topo_path(fleet.domain_of(first).unwrap());
    let (ok, out) = cli(&["drain", &domain]);
    assert!(
        ok && out.contains(&format!("{domain}: 18 nodes: 18 draining")),
        "{out}"
    );
    let (ok, out) = cli(&["resume", &domain]);
    assert!(ok && out.contains("18 nodes: 18 ready"), "{out}");
    // A Slurm batch script with an array: one job per index, the ignored directive named.
    let script = dir.path().join("train.sbatch");
    std::fs::write(
        &script,
        "#!/bin/bash\n#SBATCH -J sweep -N 2 --gpus-per-node=4 -t 30:00\n#SBATCH --array=0-2 --partition=gpu\nsleep 1\n",
    )
    .unwrap();
    let (ok, out) = cli(&["submit", script.to_str().unwrap()]);
    assert!(ok && out.contains("submitted 3 jobs, 3 to 5"), "{out}");
    assert!(out.contains("line 3: --partition is not used"), "{out}");
    let v = get_job(&url, 5);
    assert_eq!(
        (v["name"].as_str(), v["gpus"].as_u64()),
        (Some("sweep"), Some(8))
    );
    server.kill();
}

#[test]
fn tokens_keep_tenants_apart_and_agents_to_reporting() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(
        &tenants,
        "[[tenants]]\nname = \"vision\"\ngpus = 100\n\n[[tenants]]\nname = \"speech\"\ngpus = 100\n",
    )
    .unwrap();
    let (mut server, url) = start_server_with(
        &dir.path().join("data"),
        &["--tenants", tenants.to_str().unwrap()],
    );
    let issue = |role: Value| -> String {
        let t: Value = post(&format!("{url}/v1/tokens"))
            .send_json(role)
            .unwrap()
            .into_json()
            .unwrap();
        t["token"].as_str().unwrap().to_string()
    };
    let vision = issue(json!({"role": "tenant", "tenant": "vision"}));
    let speech = issue(json!({"role": "tenant", "tenant": "speech"}));
    let agent = issue(json!({"role": "agent", "nodes": "nvl00000t00,cpu0000000"}));
    let status = |r: Result<ureq::Response, ureq::Error>| match r {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    };
    let with =
        |token: &str, req: ureq::Request| req.set("Authorization", &format!("Bearer {token}"));
    let submit = |token: &str, tenant: &str| {
        let mut body = job("j", 1);
        body["tenant"] = json!(tenant);
        status(with(token, ureq::post(&format!("{url}/v1/jobs"))).send_json(body))
    };
    // Each tenant submits its own work, and not the other's.
    assert_eq!(submit(&vision, "vision"), 201);
    assert_eq!(submit(&speech, "speech"), 201);
    assert_eq!(submit(&vision, "speech"), 403);
    // An agent token cannot submit; a tenant token cannot report for a node.
    assert_eq!(submit(&agent, "vision"), 403);
    let hb = json!({"node": "nvl00000t00", "tasks": []});
    assert_eq!(
        status(
            with(&vision, ureq::post(&format!("{url}/v1/agent/heartbeat"))).send_json(hb.clone())
        ),
        403
    );
    assert_eq!(
        status(with(&agent, ureq::post(&format!("{url}/v1/agent/heartbeat"))).send_json(hb)),
        200
    );
    // Vision sees job 1 only; speech's job 2 does not exist for it, and cannot be cancelled.
    let listed: Value = with(&vision, ureq::get(&format!("{url}/v1/jobs")))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let ids: Vec<u64> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1]);
    assert_eq!(
        status(with(&vision, ureq::get(&format!("{url}/v1/jobs/2"))).call()),
        404
    );
    assert_eq!(
        status(with(&vision, ureq::post(&format!("{url}/v1/jobs/2/cancel"))).call()),
        404
    );
    assert_eq!(
        status(with(&vision, ureq::get(&format!("{url}/v1/jobs?tenant=speech"))).call()),
        403
    );
    assert_eq!(
        get_job(&url, 2)["state"],
        "pending",
        "speech's job was touched"
    );
    // The same for services and sandbox batches.
    let service = json!({"name": "s", "tenant": "speech", "gpus_per_node": 4, "min_replicas": 1});
    assert_eq!(
        status(with(&speech, ureq::post(&format!("{url}/v1/services"))).send_json(service)),
        201
    );
    let hb = json!({"node": "cpu0000000", "tasks": []});
    assert_eq!(
        status(with(&agent, ureq::post(&format!("{url}/v1/agent/heartbeat"))).send_json(hb)),
        200
    );
    let batch =
        json!({"name": "b", "tenant": "speech", "count": 2, "cpu_millis": 100, "memory_mib": 64});
    assert_eq!(
        status(with(&agent, ureq::post(&format!("{url}/v1/sandboxes"))).send_json(batch.clone())),
        403
    );
    assert_eq!(
        status(with(&speech, ureq::post(&format!("{url}/v1/sandboxes"))).send_json(batch)),
        201
    );
    for (method, path) in [
        ("GET", "/v1/services/1"),
        ("POST", "/v1/services/1/delete"),
        ("GET", "/v1/sandboxes/3"),
        ("POST", "/v1/sandboxes/3/cancel"),
    ] {
        let req = with(&vision, ureq::request(method, &format!("{url}{path}")));
        assert_eq!(status(req.call()), 404, "{method} {path}");
    }
    assert_eq!(
        status(
            with(&vision, ureq::post(&format!("{url}/v1/services/1/scale")))
                .send_json(json!({"replicas": 0}))
        ),
        404
    );
    let listed: Value = with(&vision, ureq::get(&format!("{url}/v1/services")))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(listed, json!({"services": [], "next_after": null}));
    assert_eq!(get_path(&url, "/v1/services/1")["state"], "active");
    assert_eq!(get_path(&url, "/v1/sandboxes/3")["state"], "running");
    // Only an admin issues tokens; no token or a wrong one is 401.
    assert_eq!(
        status(
            with(&vision, ureq::post(&format!("{url}/v1/tokens")))
                .send_json(json!({"role": "admin"}))
        ),
        403
    );
    assert_eq!(status(ureq::get(&format!("{url}/v1/jobs")).call()), 401);
    assert_eq!(
        status(with("not-a-token", ureq::get(&format!("{url}/v1/jobs"))).call()),
        401
    );
    // A token that expires works until then; a revoked one stops at once.
    let short: Value = post(&format!("{url}/v1/tokens"))
        .send_json(json!({"role": "tenant", "tenant": "vision", "expires_in_s": 1}))
        .unwrap()
        .into_json()
        .unwrap();
    let short = short["token"].as_str().unwrap().to_string();
    let jobs_with = |token: &str| status(with(token, ureq::get(&format!("{url}/v1/jobs"))).call());
    assert_eq!(jobs_with(&short), 200);
    let revoked: Value = post(&format!("{url}/v1/tokens"))
        .send_json(json!({"role": "agent", "nodes": "nvl00000t00"}))
        .unwrap()
        .into_json()
        .unwrap();
    let revoked_id = revoked["id"].as_str().unwrap().to_string();
    let listed: Value = get(&format!("{url}/v1/tokens"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == revoked_id.as_str()));
    post(&format!("{url}/v1/tokens/{revoked_id}/revoke"))
        .call()
        .unwrap();
    let hb = json!({"node": "nvl00000t01", "tasks": []});
    assert_eq!(
        status(
            with(
                revoked["token"].as_str().unwrap(),
                ureq::post(&format!("{url}/v1/agent/heartbeat"))
            )
            .send_json(hb)
        ),
        401
    );
    assert_eq!(
        status(
            with(
                &vision,
                ureq::post(&format!("{url}/v1/tokens/{revoked_id}/revoke"))
            )
            .call()
        ),
        403
    );
    let admin_id = &sha256_hex(&admin_token(&url))[..16];
    assert_eq!(
        status(post(&format!("{url}/v1/tokens/{admin_id}/revoke")).call()),
        409,
        "a token cannot revoke itself"
    );
    std::thread::sleep(Duration::from_millis(2100));
    match with(&short, ureq::get(&format!("{url}/v1/jobs"))).call() {
        Err(ureq::Error::Status(401, r)) => {
            assert!(r.into_string().unwrap().contains("expired"));
        }
        other => panic!("an expired token answered {other:?}"),
    }
    // Tokens and revocations are journaled: after a restart they hold.
    server.kill();
    let (mut server, url) = start_server_with(&dir.path().join("data"), &[]);
    let listed: Value = ureq::get(&format!("{url}/v1/jobs"))
        .set("Authorization", &format!("Bearer {speech}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(
        status(
            with(
                revoked["token"].as_str().unwrap(),
                ureq::get(&format!("{url}/v1/jobs"))
            )
            .call()
        ),
        401
    );
    server.kill();
}

fn sha256_hex(text: &str) -> String {
    server::token_hash(text)
}

#[test]
fn the_client_prints_times_as_utc_dates_and_durations() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::hostile::start_server(&dir.path().join("data"));
    let run = |args: &[&str]| common::sandboxes::cli(&s, args);
    let (code, _, said) = run(&[
        "token",
        "--role",
        "tenant",
        "--tenant",
        "default",
        "--expires-in-s",
        "7200",
    ]);
    assert_eq!(code, 0, "{said}");
    // "token id …, expires 15:30 UTC, in 2 h" (or "in 1 h 59 min", a second later).
    assert!(said.contains(" UTC, in "), "{said}");
    assert!(said.contains(" h"), "{said}");
    let (code, out, err) = run(&["tokens"]);
    assert_eq!(code, 0, "{err}");
    // Issued and expiry as dates, not Unix seconds.
    let row = out.lines().find(|l| l.contains("tenant")).unwrap();
    assert_eq!(row.matches(" UTC").count(), 2, "{out}");
    let unix_seconds = row
        .split_whitespace()
        .any(|w| w.len() == 10 && w.chars().all(|c| c.is_ascii_digit()));
    assert!(!unix_seconds, "{row}");
}

#[test]
fn the_server_logs_one_json_object_per_line_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut server = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args([
            "server",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("stargrid server on"), "{line}");
    let _ = server.kill();
    let _ = server.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let replayed = events
        .iter()
        .find(|e| e["fields"]["message"] == "replayed 0 records")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(replayed["level"], "INFO");
    assert!(replayed["timestamp"].as_str().unwrap().ends_with('Z'));
}
