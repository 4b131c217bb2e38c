//! The live plane under attack from its nodes, on loopback: what an agent or a tenant's task
//! could send or read to break the server, take over other nodes or reach other tenants' files
//! is refused, and nothing accepted before is lost. Each test names the attack it plays; the
//! attacks through the API itself are in `adversarial_api.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use common::hostile::{place_a_job_on, start_server, start_server_with};
use common::wait_for;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

#[test]
fn log_chunks_that_wrap_come_unasked_or_from_another_node_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path());
    let (ours, other) = ("nvl00000t00", "nvl00000t01");
    place_a_job_on(&s, ours);
    s.beat(other, json!([]));
    // Unasked: nobody reads the job's logs yet.
    let chunk = |offset: u64, len: u64, data: &str| json!([{"job": 1, "run": 0, "rank": 0, "offset": offset, "len": len, "data": data}]);
    s.beat(ours, chunk(0, 5, "early"));
    let first = s.get("/v1/jobs/1/logs").unwrap();
    assert_eq!(first["data"], "", "{first}");
    // The wrap: a zero-length chunk with text (every read panicked after it).
    s.beat(ours, chunk(0, 0, "evil"));
    // Another node claims the job's log.
    s.beat(other, chunk(0, 6, "forged"));
    let after = s.get("/v1/jobs/1/logs").unwrap();
    assert_eq!(after["data"], "", "{after}");
    assert_eq!(after["next"], 0, "{after}");
    // The real node's chunk is taken.
    s.beat(ours, chunk(0, 6, "hello\n"));
    let ok = s.get("/v1/jobs/1/logs").unwrap();
    assert_eq!(ok["data"], "hello\n", "{ok}");
    assert_eq!(
        s.get("/v1/jobs/1/logs?from=18446744073709551615").unwrap()["data"],
        ""
    );
    // Nothing accepted before is lost.
    assert_eq!(s.get("/v1/jobs/1").unwrap()["state"], "running");
}

#[test]
fn a_task_cannot_read_its_agents_token_from_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let work = dir.path().join("node");
    let (mut agent, _) = common::start_agent_saying(
        &s.url,
        &work,
        &s.token,
        &["--node", "nvl00000t00", "--grace-s", "1"],
        &[("AGENT_SECRET", "do-not-leak")],
    );
    s.post(
        "/v1/jobs",
        json!({"name": "snoop", "tenant": "default", "nodes": 1, "gpus_per_node": 4,
               "time_limit_s": 600, "env": {"MINE": "yes"},
               "command": ["sh", "-c", "env > $STARGRID_CHECKPOINT_FILE.env; sleep 30"]}),
    )
    .unwrap();
    let file = work.join("1-0-0/checkpoint.env");
    wait_for("the task's environment", || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("STARGRID_JOB_ID"))
    });
    let env = std::fs::read_to_string(&file).unwrap();
    agent.kill();
    assert!(
        !env.contains(&s.token),
        "the agent's token reached the task:\n{env}"
    );
    assert!(!env.contains("STARGRID_TOKEN"), "{env}");
    assert!(!env.contains("do-not-leak"), "{env}");
    // What the job asked for, and the task's own variables, are there.
    assert!(env.contains("MINE=yes"), "{env}");
    assert!(env.contains("STARGRID_RANK=0"), "{env}");
    assert!(env.contains("PATH="), "{env}");
}

#[test]
fn a_forged_exit_from_a_node_the_task_is_not_on_does_not_end_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path());
    let (ours, other) = ("nvl00000t00", "nvl00000t01");
    place_a_job_on(&s, ours);
    let exit = |node: &str, code: i32| {
        s.post(
            "/v1/agent/heartbeat",
            json!({"node": node, "tasks": [
                {"job": 1, "run": 0, "rank": 0, "exit_code": code, "checkpoint_at": 5}
            ]}),
        )
        .unwrap()
    };
    // Another node reports the task killed: dropped, the job runs on.
    exit(other, 137);
    assert_eq!(s.get("/v1/jobs/1").unwrap()["state"], "running");
    // The node that runs it reports its exit: the job ends.
    exit(ours, 0);
    assert_eq!(s.get("/v1/jobs/1").unwrap()["state"], "finished");
}

#[test]
fn a_journal_or_data_dir_left_open_to_others_is_made_private_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let set = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    {
        let s = start_server(&data);
        s.post(
            "/v1/jobs",
            json!({"name": "j", "tenant": "default", "nodes": 1, "gpus_per_node": 4,
                   "time_limit_s": 60, "command": ["true"], "env": {"API_KEY": "s3cret"}}),
        )
        .unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("journal.db")), 0o600);
        assert_eq!(mode(&data.join("admin.token")), 0o600);
    }
    // An operator (or a restore from backup) leaves them open.
    set(&data, 0o755);
    set(&data.join("journal.db"), 0o644);
    let s = start_server(&data);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("journal.db")), 0o600);
    // Nothing accepted before is lost.
    assert_eq!(s.get("/v1/jobs/1").unwrap()["name"], "j");
}

#[test]
fn an_agent_credential_reports_only_for_its_own_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let (ours, other) = ("nvl00000t00", "nvl00000t01");
    place_a_job_on(&s, other);
    // An agent credential names its nodes; one without is refused by field.
    let (code, body) = s.post("/v1/tokens", json!({"role": "agent"})).unwrap_err();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"nodes\""), "{body}");
    let (code, body) = s
        .post("/v1/tokens", json!({"role": "agent", "nodes": "n[5-"}))
        .unwrap_err();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"nodes\""), "{body}");
    let issued = s
        .post("/v1/tokens", json!({"role": "agent", "nodes": ours}))
        .unwrap();
    let cred = issued["token"].as_str().unwrap().to_string();
    let beat = |node: &str, tasks: Value| {
        s.post_as(
            &cred,
            "/v1/agent/heartbeat",
            json!({"node": node, "tasks": tasks, "logs": []}),
        )
    };
    // Its own node: accepted.
    beat(ours, json!([])).unwrap();
    // Someone else's node, to keep it up, read its tasks' env or forge an exit: 403.
    for attempt in [
        json!([]),
        json!([{"job": 1, "run": 0, "rank": 0, "exit_code": 137}]),
    ] {
        let (code, body) = beat(other, attempt).unwrap_err();
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("not bound to node 'nvl00000t01'"), "{body}");
    }
    let (code, _) = s
        .post_as(
            &cred,
            "/v1/agent/wait",
            json!({"nodes": [ours, other], "after": 0, "timeout_ms": 10}),
        )
        .unwrap_err();
    assert_eq!(code, 403);
    // The credential sees its own node only; it cannot submit.
    let seen = s.get_as(&cred, "/v1/nodes").unwrap();
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen[0]["name"], ours);
    let (code, _) = s
        .post_as(
            &cred,
            "/v1/jobs",
            json!({"name": "x", "tenant": "default", "nodes": 1,
            "gpus_per_node": 1, "time_limit_s": 60, "command": ["true"]}),
        )
        .unwrap_err();
    assert_eq!(code, 403);
    // The refusals are counted against the credential, for the operator to see.
    let tokens = s.get("/v1/tokens").unwrap();
    let listed = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == issued["id"])
        .unwrap()
        .clone();
    assert_eq!(listed["nodes"], ours, "{listed}");
    assert_eq!(listed["refused_reports"], 3, "{listed}");
    // Nothing accepted before is lost: the other node's job still runs.
    assert_eq!(s.get("/v1/jobs/1").unwrap()["state"], "running");
}

#[test]
fn a_hollow_agent_plays_its_credentials_range_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let issued = s
        .post(
            "/v1/tokens",
            json!({"role": "agent", "nodes": "nvl00000t[00-03]"}),
        )
        .unwrap();
    let cred = issued["token"].as_str().unwrap().to_string();
    let hollow = |count: &str, work: &str| {
        Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args(["agent", "--server", &s.url, "--hollow", count, "--work-dir"])
            .arg(dir.path().join(work))
            .env("STARGRID_TOKEN_FILE", common::token_file(dir.path(), &cred))
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // More than the range: refused before it starts.
    let out = hollow("5", "too-many").wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only 4 of this credential's nodes"), "{err}");
    // The range itself: exactly those four come up.
    let mut agent = common::Proc(hollow("4", "hollow"));
    let up = || {
        s.get("/v1/nodes")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["state"] != "down")
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    wait_for("four hollow nodes up", || up().len() == 4);
    assert_eq!(
        up(),
        ["nvl00000t00", "nvl00000t01", "nvl00000t02", "nvl00000t03"]
    );
    agent.kill();
    // Given on the command line (where every user of the node can read it), it is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args([
            "agent",
            "--server",
            &s.url,
            "--node",
            "nvl00000t00",
            "--token",
            &cred,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("visible to every user of the node"), "{err}");
}

#[test]
fn a_tenants_task_cannot_read_another_tenants_files_or_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = common::hostile::two_tenants(dir.path(), "");
    let data = dir.path().join("data");
    let s = start_server_with(&data, &["--tenants", tenants.to_str().unwrap()]);
    let work = dir.path().join("node");
    let (_agent, said) = common::start_agent_saying(
        &s.url,
        &work,
        &s.token,
        &["--node", "nvl00000t00", "--grace-s", "1", "--no-cgroups"],
        &[],
    );
    // Where the agent's credential lies (next to its work dir).
    let cred = common::token_file(dir.path(), &s.token);
    let root = nix_is_root();
    if !root {
        // Not root: the agent cannot switch users, and says so rather than pretend.
        assert!(said.contains("NOT kept apart"), "{said}");
        return;
    }
    assert!(said.contains("tasks run as their tenant's user"), "{said}");
    let job = |tenant: &str, script: &str| {
        json!({"name": "j", "tenant": tenant, "nodes": 1, "gpus_per_node": 1,
               "time_limit_s": 600, "command": ["sh", "-c", script]})
    };
    // Alpha's task keeps a secret in its directory and its log.
    s.post(
        "/v1/jobs",
        job(
            "alpha",
            "echo alpha-secret; echo alpha-secret > mine; sleep 60",
        ),
    )
    .unwrap();
    wait_for("alpha's secret on disk", || {
        std::fs::read_to_string(work.join("1-0-0/mine")).is_ok()
    });
    // Beta's task tries to read it, the server's data dir and secrets key, and the agent's
    // credential.
    let admin = data.join("admin.token");
    let probe = format!(
        "id -u; cat {a}/log {a}/mine {admin} {journal} {key} {cred} 2>&1; ls {work} 2>&1; \
         echo done",
        a = work.join("1-0-0").display(),
        admin = admin.display(),
        journal = data.join("journal.db").display(),
        key = data.join("secrets.key").display(),
        cred = cred.display(),
        work = work.display(),
    );
    s.post("/v1/jobs", job("beta", &probe)).unwrap();
    let beta_log = work.join("2-0-0/log");
    wait_for("beta's probe", || {
        std::fs::read_to_string(&beta_log).is_ok_and(|t| t.contains("done"))
    });
    let seen = std::fs::read_to_string(&beta_log).unwrap();
    assert!(!seen.contains("alpha-secret"), "{seen}");
    assert!(!seen.contains(&s.token), "{seen}");
    assert_eq!(seen.matches("Permission denied").count(), 7, "{seen}");
    let beta_uid: u32 = seen.lines().next().unwrap().trim().parse().unwrap();
    assert_ne!(beta_uid, 0, "{seen}");
    // Each tenant's task directory is its user's alone.
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(work.join("1-0-0")).unwrap(),
        std::fs::metadata(work.join("2-0-0")).unwrap(),
    );
    assert_eq!(b.uid(), beta_uid);
    assert_ne!(a.uid(), b.uid());
    assert_eq!(a.mode() & 0o777, 0o700);
    // A workdir outside the node's allowed root (it has none) is refused: the task fails.
    let mut escape = job("beta", "pwd");
    escape["workdir"] = json!("/");
    s.post("/v1/jobs", escape).unwrap();
    wait_for("the job with a forbidden workdir to fail", || {
        s.get("/v1/jobs/3").unwrap()["exit_code"] == 127
    });
    // The tenant's environment reaches only its own process, never the root stages before the
    // drop (entering the cgroup, setpriv): a preload that the loader cannot find is complained
    // of once, by the task's program, not by every process on the way.
    let mut preload = job("beta", "");
    preload["command"] = json!(["/bin/true"]);
    preload["env"] = json!({"LD_PRELOAD": "/nonexistent/evil.so"});
    s.post("/v1/jobs", preload).unwrap();
    wait_for("the preload job to end", || {
        s.get("/v1/jobs/4").unwrap()["state"] == "finished"
    });
    let said = std::fs::read_to_string(work.join("4-0-0/log")).unwrap();
    assert_eq!(said.matches("cannot be preloaded").count(), 1, "{said}");
    // A log the task swapped for a link is never followed when it is read.
    let mut swap = job("beta", "rm log; ln -s /etc/shadow log; sleep 60");
    swap["name"] = json!("swap");
    let swapped = s.post("/v1/jobs", swap).unwrap()["id"].clone();
    let link = work.join(format!("{swapped}-0-0/log"));
    wait_for("the swapped log", || {
        std::fs::symlink_metadata(&link).is_ok_and(|m| m.is_symlink())
    });
    for _ in 0..10 {
        let logs = s.get(&format!("/v1/jobs/{swapped}/logs")).unwrap();
        assert!(
            !logs["data"].as_str().unwrap_or("").contains("root:"),
            "{logs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Nothing accepted before is lost.
    assert_eq!(s.get("/v1/jobs/1").unwrap()["state"], "running");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

#[test]
fn secret_env_values_reach_the_task_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start_server(&data);
    let work = dir.path().join("node");
    let _agent = common::start_agent_as(
        &s.url,
        &work,
        &s.token,
        &["--node", "nvl00000t00", "--no-cgroups"],
    );
    let secret = "sk-live-0123456789abcdef";
    let job = |env: Value, secret_env: Value| {
        json!({"name": "s", "tenant": "default", "nodes": 1, "gpus_per_node": 1,
               "time_limit_s": 600, "env": env, "secret_env": secret_env,
               "command": ["sh", "-c", "env > seen; sleep 30"]})
    };
    // A name in both is refused by name.
    let (code, body) = s
        .post(
            "/v1/jobs",
            job(json!({"API_KEY": "x"}), json!({"API_KEY": secret})),
        )
        .unwrap_err();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("secret_env.API_KEY"), "{body}");
    let id = s
        .post(
            "/v1/jobs",
            job(json!({"MODE": "eval"}), json!({"API_KEY": secret})),
        )
        .unwrap()["id"]
        .clone();
    // The task gets it.
    let seen = work.join(format!("{id}-0-0/seen"));
    wait_for("the task's environment", || {
        std::fs::read_to_string(&seen).is_ok_and(|t| t.contains("MODE=eval"))
    });
    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(env.contains(&format!("API_KEY={secret}")), "{env}");
    // The API never shows it, and the journal (with its WAL and a snapshot) holds only
    // ciphertext.
    let view = s.get(&format!("/v1/jobs/{id}")).unwrap().to_string();
    assert!(!view.contains(secret), "{view}");
    s.post("/v1/journal/compact", json!({})).unwrap();
    for file in ["journal.db", "journal.db-wal"] {
        let bytes = std::fs::read(data.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{file} holds the secret in clear"
        );
    }
    // The key is outside the journal, the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("secrets.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // After a restart (from the snapshot) the node still gets it.
    drop(s);
    let s = start_server(&data);
    let answer = s.beat("nvl00000t00", json!([]));
    assert_eq!(
        answer["assignments"][0]["env"]["API_KEY"], secret,
        "{answer}"
    );
}

#[test]
fn a_task_past_its_memory_is_killed_by_the_kernel_and_said_to_be() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let (_agent, said) = common::start_agent_saying(
        &s.url,
        &dir.path().join("node"),
        &s.token,
        &["--node", "nvl00000t00", "--grace-s", "1"],
        &[],
    );
    if !said.contains("tasks limited by") {
        // No cgroups this agent may use here: it says so, and nothing is enforced.
        assert!(said.contains("WITHOUT CPU and memory limits"), "{said}");
        return;
    }
    let job = |name: &str, command: &str| {
        json!({"name": name, "tenant": "default", "nodes": 1, "gpus_per_node": 1,
               "memory_mib_per_node": 64, "time_limit_s": 600,
               "command": ["sh", "-c", command]})
    };
    s.post("/v1/jobs", job("hog", "exec tail /dev/zero"))
        .unwrap();
    wait_for("the hog to end", || {
        s.get("/v1/jobs/1").unwrap()["exit_code"].is_i64()
    });
    let hog = s.get("/v1/jobs/1").unwrap();
    assert_eq!(hog["exit_reason"], "oom_killed", "{hog}");
    // A task that fails on its own is not called an OOM kill; the node goes on taking work.
    s.post("/v1/jobs", job("fails", "exit 3")).unwrap();
    wait_for("the failing job to end", || {
        s.get("/v1/jobs/2").unwrap()["exit_code"] == 3
    });
    assert!(s.get("/v1/jobs/2").unwrap().get("exit_reason").is_none());
}

#[test]
fn a_sandbox_cannot_see_the_host_its_neighbours_or_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start_server(&data);
    let work = dir.path().join("host");
    let (_agent, said) = common::hostile::start_cpu_host(&s, &work);
    if !said.contains("sandboxes under bubblewrap") {
        // Not root, or no bubblewrap here: the agent says sandboxes run unisolated.
        assert!(said.contains("no isolation layer"), "{said}");
        return;
    }
    let cred = common::token_file(dir.path(), &s.token);
    let port = s.url.rsplit(':').next().unwrap().to_string();
    // Sandbox 0 keeps a secret in its scratch; every sandbox then tries to get out.
    let probe = format!(
        "[ \"$STARGRID_SANDBOX_INDEX\" = 0 ] && echo neighbour-secret > /sandbox/secret; \
         sleep 1; id -u; hostname; \
         cat {cred} {admin} {journal} 2>&1; ls {work} 2>&1; \
         cat {work}/{{batch}}-sandbox-0/secret 2>&1; \
         echo procs $(ls /proc | grep -c '^[0-9]'); \
         bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>&1 || echo no-network; \
         touch /usr/x /etc/x 2>&1; echo mine > /sandbox/mine && echo wrote-scratch; \
         dd if=/dev/zero of=/sandbox/big bs=1M count=100 2>&1 | grep -o 'No space left' | head -1; \
         rm -f /sandbox/big; echo done",
        cred = cred.display(),
        admin = data.join("admin.token").display(),
        journal = data.join("journal.db").display(),
        work = work.display(),
    );
    // The batch id is the next id (1): the probe names its neighbour's directory by it.
    let probe = probe.replace("{batch}", "1");
    let batch = s
        .post(
            "/v1/sandboxes",
            json!({"name": "probe", "tenant": "default", "count": 2, "cpu_millis": 500,
                   "memory_mib": 128, "command": ["sh", "-c", probe]}),
        )
        .unwrap();
    assert_eq!(batch["id"], 1);
    let log = |i: u32| work.join(format!("1-sandbox-{i}/log"));
    wait_for("both probes", || {
        (0..2).all(|i| std::fs::read_to_string(log(i)).is_ok_and(|t| t.contains("done")))
    });
    for i in 0..2 {
        let seen = std::fs::read_to_string(log(i)).unwrap();
        assert!(!seen.contains(&s.token), "sandbox {i}: {seen}");
        assert!(!seen.contains("neighbour-secret"), "sandbox {i}: {seen}");
        // The agent's credential, the data dir, the host's work dir and the neighbour's
        // scratch are simply not there.
        assert_eq!(
            seen.matches("No such file or directory").count(),
            5,
            "{seen}"
        );
        let procs: u32 = seen
            .lines()
            .find_map(|l| l.strip_prefix("procs "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(procs <= 6, "sandbox {i} sees {procs} processes: {seen}");
        assert!(seen.contains("no-network"), "{seen}");
        assert_eq!(seen.matches("Read-only file system").count(), 2, "{seen}");
        assert!(seen.contains("wrote-scratch"), "{seen}");
        // The scratch is bounded (half the sandbox's 128 MiB), in memory.
        assert!(seen.contains("No space left"), "{seen}");
        assert!(seen.lines().any(|l| l == "sandbox"), "hostname: {seen}");
    }
    // Nothing a sandbox wrote reached the host's disk.
    assert!(!work.join("1-sandbox-1/mine").exists());
}

#[test]
fn sandboxes_past_their_memory_are_killed_and_counted_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let (_agent, said) = common::hostile::start_cpu_host(&s, &dir.path().join("host"));
    if !said.contains("tasks limited by") {
        assert!(said.contains("WITHOUT CPU and memory limits"), "{said}");
        return;
    }
    // Sandbox 0 eats memory; sandbox 1 fails on its own.
    let id = s
        .post(
            "/v1/sandboxes",
            json!({"name": "hogs", "tenant": "default", "count": 2, "cpu_millis": 500,
                   "memory_mib": 64,
                   "command": ["sh", "-c",
                               "[ \"$STARGRID_SANDBOX_INDEX\" = 0 ] && exec tail /dev/zero; exit 3"]}),
        )
        .unwrap()["id"]
        .clone();
    wait_for("the batch to end", || {
        s.get(&format!("/v1/sandboxes/{id}")).unwrap()["state"] == "finished"
    });
    let batch = s.get(&format!("/v1/sandboxes/{id}")).unwrap();
    assert_eq!(batch["failed"], 2, "{batch}");
    assert_eq!(batch["oom_killed"], 1, "{batch}");
}

/// An agent for the CPU host `cpu0000000` working in `work`, once the host is up, and the line
/// it printed when it started (which limits and isolation it applies).
#[test]
fn a_sandboxs_log_reaches_its_tenant_and_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = common::hostile::two_tenants(dir.path(), "");
    let s = start_server_with(
        &dir.path().join("data"),
        &["--tenants", tenants.to_str().unwrap()],
    );
    let (_agent, _) = common::hostile::start_cpu_host(&s, &dir.path().join("host"));
    let (alpha, beta) = (s.tenant_token("alpha"), s.tenant_token("beta"));
    let id = s
        .post_as(
            &alpha,
            "/v1/sandboxes",
            json!({"name": "talk", "tenant": "alpha", "count": 3, "cpu_millis": 500,
                   "memory_mib": 64,
                   "command": ["sh", "-c", "echo hello from $STARGRID_SANDBOX_INDEX; sleep 30"]}),
        )
        .unwrap()["id"]
        .clone();
    let path = |index: u32| format!("/v1/sandboxes/{id}/logs?index={index}");
    // Its tenant asks; the host's agent sends that one sandbox's log.
    wait_for("sandbox 2's log", || {
        s.get_as(&alpha, &path(2)).unwrap()["data"]
            .as_str()
            .is_some_and(|d| d.contains("hello from 2"))
    });
    let view = s.get_as(&alpha, &path(2)).unwrap();
    assert_eq!(view["rank"], 2, "{view}");
    assert!(
        !view["data"].as_str().unwrap().contains("hello from 0"),
        "{view}"
    );
    // Another tenant cannot tell the batch exists; an index past the batch is refused by name.
    let (code, _) = s.get_as(&beta, &path(2)).unwrap_err();
    assert_eq!(code, 404);
    let (code, body) = s.get_as(&alpha, &path(3)).unwrap_err();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"index\""), "{body}");
}
