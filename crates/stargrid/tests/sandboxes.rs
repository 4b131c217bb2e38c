//! Interactive sandboxes end to end, with a real server and a real agent on loopback (under
//! bubblewrap and tenants' users where this machine allows: root, bubblewrap installed): the
//! CLI's create, exec, cp, ls and end; several execs at once; a tenant reaching only its own;
//! idle and timeout ends; a reader that goes away; forged exec output; and escapes tried from
//! inside an exec.

#![allow(clippy::unwrap_used)]

mod common;

use common::hostile::{
    start_cpu_host, start_cpu_host_with, start_server, start_server_with, Server,
};
use common::sandboxes::{cli, exec_as, pooled, run};
use common::wait_for;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The CPU host every test runs its sandboxes on.
const HOST: &str = "cpu0000000";

fn create(s: &Server, body: Value) -> u64 {
    s.post("/v1/sandboxes", body).unwrap()["id"]
        .as_u64()
        .unwrap()
}

fn interactive(count: u32) -> Value {
    json!({"name": "box", "tenant": "default", "count": count, "cpu_millis": 500,
           "memory_mib": 256, "interactive": true, "env": {"GREETING": "hi"}})
}

#[test]
fn the_cli_creates_a_sandbox_runs_commands_in_it_moves_files_and_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let (_agent, said) = start_cpu_host(&s, &dir.path().join("host"));
    let (code, out, err) = cli(
        &s,
        &[
            "sandbox",
            "create",
            "--count",
            "2",
            "--env",
            "GREETING=hello",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let batch: u64 = out.trim().parse().unwrap();
    let view = s.get(&format!("/v1/sandboxes/{batch}")).unwrap();
    assert_eq!(view["interactive"], true, "{view}");
    assert!(view["expires_at"].as_u64().unwrap() > view["submitted_at"].as_u64().unwrap());
    // Several commands, one after the other, in one sandbox that keeps its files; the exit
    // code is the command's.
    let (code, out, _) = cli(
        &s,
        &[
            "sandbox",
            "exec",
            &batch.to_string(),
            "--",
            "sh",
            "-c",
            "echo $GREETING > note; cat note",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "hello\n"));
    let (code, out, err) = cli(
        &s,
        &[
            "sandbox",
            "exec",
            &format!("{batch}/0"),
            "--",
            "sh",
            "-c",
            "cat note; echo oops >&2; exit 7",
        ],
    );
    assert_eq!((code, out.as_str(), err.trim()), (7, "hello\n", "oops"));
    // Sandbox 1 is another sandbox: it has no note.
    let (code, _, _) = cli(
        &s,
        &[
            "sandbox",
            "exec",
            &format!("{batch}/1"),
            "--",
            "cat",
            "note",
        ],
    );
    assert_ne!(code, 0);
    // A file in and out, bigger than one request, every byte kept.
    let data: Vec<u8> = (0..2_000_003u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let local = dir.path().join("data.bin");
    std::fs::write(&local, &data).unwrap();
    let (code, _, err) = cli(
        &s,
        &[
            "sandbox",
            "cp",
            local.to_str().unwrap(),
            &format!("{batch}/1:data.bin"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let back = dir.path().join("back.bin");
    let (code, _, err) = cli(
        &s,
        &[
            "sandbox",
            "cp",
            &format!("{batch}/1:data.bin"),
            back.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&back).unwrap() == data, "the copy differs");
    let (code, out, _) = cli(&s, &["sandbox", "ls", &format!("{batch}/1")]);
    assert_eq!(code, 0);
    assert!(out.contains("data.bin") && out.contains("2000003"), "{out}");
    // What the sandbox's user may not write is refused with the sandbox's reason.
    if said.contains("bubblewrap") {
        let (code, _, err) = cli(
            &s,
            &[
                "sandbox",
                "cp",
                local.to_str().unwrap(),
                &format!("{batch}:/usr/evil"),
            ],
        );
        assert_ne!(code, 0);
        assert!(
            err.contains("path: /usr/evil") && err.contains("Read-only"),
            "{err}"
        );
    }
    let (code, _, err) = cli(
        &s,
        &[
            "sandbox",
            "cp",
            &format!("{batch}:/no/such"),
            back.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("No such file"), "{err}");
    // End: the batch is over and takes no more commands.
    let (code, out, _) = cli(&s, &["sandbox", "end", &batch.to_string()]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("batch {batch} cancelled").as_str())
    );
    let (code, _, err) = cli(&s, &["sandbox", "exec", &batch.to_string(), "--", "true"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("404") && err.contains("no live interactive sandbox"),
        "{err}"
    );
}

#[test]
fn commands_run_side_by_side_and_stream_their_output_as_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let (_agent, _) = start_cpu_host(&s, &dir.path().join("host"));
    let batch = create(&s, interactive(1));
    // The first line of a slow command arrives long before its end.
    let started = Instant::now();
    let r = ureq::post(&format!("{}/v1/sandboxes/{batch}/exec", s.url))
        .set("Authorization", &format!("Bearer {}", s.token))
        .send_json(json!({"command": ["sh", "-c", "echo first; sleep 3; echo second"]}))
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(r.into_reader()));
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["stdout"], "first\n", "{first}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let rest: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(rest.last().unwrap()["exit_code"], 0, "{rest:?}");
    // Eight at once, each with its own output and exit code, in about one command's time.
    let started = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (url, token) = (s.url.clone(), s.token.clone());
            std::thread::spawn(move || {
                let r = ureq::post(&format!("{url}/v1/sandboxes/{batch}/exec"))
                    .set("Authorization", &format!("Bearer {token}"))
                    .send_json(json!({"command": ["sh", "-c", format!("sleep 1; echo run {i}; exit {i}")]}))
                    .unwrap()
                    .into_string()
                    .unwrap();
                r.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let events = h.join().unwrap();
        let out: String = events.iter().filter_map(|e| e["stdout"].as_str()).collect();
        assert_eq!(out, format!("run {i}\n"));
        assert_eq!(events.last().unwrap()["exit_code"], i as i64);
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // The sandbox's environment and the command's own.
    let r = ureq::post(&format!("{}/v1/sandboxes/{batch}/exec", s.url))
        .set("Authorization", &format!("Bearer {}", s.token))
        .send_json(
            json!({"command": ["sh", "-c", "echo $GREETING $EXTRA; cat"], "env": {"EXTRA": "there"},
                          "stdin": "from stdin\n"}),
        )
        .unwrap()
        .into_string()
        .unwrap();
    let out: String = r
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["stdout"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(out, "hi there\nfrom stdin\n");
}

#[test]
fn a_tenant_reaches_only_its_own_sandboxes() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = common::hostile::two_tenants(dir.path(), "cpus = 64\nmemory_gib = 64\n");
    let s = start_server_with(
        &dir.path().join("data"),
        &["--tenants", tenants.to_str().unwrap()],
    );
    let (_agent, _) = start_cpu_host(&s, &dir.path().join("host"));
    let (alpha, beta) = (s.tenant_token("alpha"), s.tenant_token("beta"));
    let batch = s
        .post_as(
            &alpha,
            "/v1/sandboxes",
            json!({"name": "mine", "tenant": "alpha", "count": 1,
            "cpu_millis": 500, "memory_mib": 128, "interactive": true}),
        )
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let events = exec_as(&s, &alpha, batch, 0, &["echo", "ok"]).unwrap();
    assert_eq!(events.last().unwrap()["exit_code"], 0, "{events:?}");
    // Another tenant cannot tell it exists: not to exec, not to read or write its files.
    let (code, body) = exec_as(&s, &beta, batch, 0, &["echo", "in"]).unwrap_err();
    assert_eq!(code, 404, "{body}");
    let files = format!("{}/v1/sandboxes/{batch}/files?path=x", s.url);
    for r in [
        ureq::get(&files)
            .set("Authorization", &format!("Bearer {beta}"))
            .call(),
        ureq::put(&files)
            .set("Authorization", &format!("Bearer {beta}"))
            .send_bytes(b"x"),
    ] {
        assert!(matches!(r, Err(ureq::Error::Status(404, _))), "{r:?}");
    }
    // Nor can it end it.
    let (code, _) = s
        .post_as(&beta, &format!("/v1/sandboxes/{batch}/cancel"), json!({}))
        .unwrap_err();
    assert_eq!(code, 404);
    // An agent's credential runs nothing in sandboxes.
    let agent = s
        .post("/v1/tokens", json!({"role": "agent", "nodes": HOST}))
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _) = exec_as(&s, &agent, batch, 0, &["echo", "in"]).unwrap_err();
    assert!(code == 403 || code == 404, "{code}");
    // A batch that runs a command takes no execs; nor does a request that bends the rules.
    let plain = s
        .post_as(
            &alpha,
            "/v1/sandboxes",
            json!({"name": "cmd", "tenant": "alpha", "count": 1,
            "cpu_millis": 500, "memory_mib": 64, "command": ["sleep", "30"]}),
        )
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(exec_as(&s, &alpha, plain, 0, &["true"]).unwrap_err().0, 404);
    for (body, field) in [
        (
            json!({"name": "x", "tenant": "alpha", "count": 1, "cpu_millis": 500, "memory_mib": 64,
                "interactive": true, "command": ["sh"]}),
            "command",
        ),
        (
            json!({"name": "x", "tenant": "alpha", "count": 1, "cpu_millis": 500, "memory_mib": 64,
                "interactive": true, "timeout_s": 10, "idle_timeout_s": 20}),
            "idle_timeout_s",
        ),
        (
            json!({"name": "x", "tenant": "alpha", "count": 1, "cpu_millis": 500, "memory_mib": 64,
                "timeout_s": 10}),
            "timeout_s",
        ),
    ] {
        let (code, text) = s.post_as(&alpha, "/v1/sandboxes", body).unwrap_err();
        assert_eq!(code, 400, "{text}");
        assert!(text.contains(&format!("\"field\":\"{field}\"")), "{text}");
    }
    for (body, field) in [
        (json!({"command": []}), "command"),
        (json!({"command": ["true"], "timeout_s": 0}), "timeout_s"),
        (
            json!({"command": ["true"], "stdin": "x".repeat(600_000)}),
            "stdin",
        ),
        (json!({"command": ["true"], "shell": true}), ""),
    ] {
        let r = ureq::post(&format!("{}/v1/sandboxes/{batch}/exec", s.url))
            .set("Authorization", &format!("Bearer {alpha}"))
            .send_json(body);
        let Err(ureq::Error::Status(400, r)) = r else {
            panic!("{r:?}")
        };
        let text = r.into_string().unwrap();
        assert!(text.contains(&format!("\"field\":\"{field}")), "{text}");
    }
}

#[test]
fn an_idle_sandbox_ends_by_itself_and_a_busy_one_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let (_agent, _) = start_cpu_host(&s, &dir.path().join("host"));
    let idle = create(
        &s,
        json!({"name": "idle", "tenant": "default", "count": 1, "cpu_millis": 500,
        "memory_mib": 64, "interactive": true, "idle_timeout_s": 2}),
    );
    let busy = create(
        &s,
        json!({"name": "busy", "tenant": "default", "count": 1, "cpu_millis": 500,
        "memory_mib": 64, "interactive": true, "timeout_s": 4, "idle_timeout_s": 2}),
    );
    // The busy one runs a command past its idle timeout: it is not idle, but its timeout ends
    // it (and the command with it).
    let handle = {
        let (url, token) = (s.url.clone(), s.token.clone());
        std::thread::spawn(move || {
            ureq::post(&format!("{url}/v1/sandboxes/{busy}/exec"))
                .set("Authorization", &format!("Bearer {token}"))
                .send_json(json!({"command": ["sleep", "30"]}))
                .unwrap()
                .into_string()
                .unwrap()
        })
    };
    let state = |id: u64| s.get(&format!("/v1/sandboxes/{id}")).unwrap()["state"].clone();
    wait_for("the idle sandbox to end", || state(idle) == "cancelled");
    assert_eq!(
        state(busy),
        "running",
        "busy with a command, it is not idle"
    );
    wait_for("the busy sandbox's timeout", || state(busy) == "cancelled");
    let answer = handle.join().unwrap();
    let end: Value = serde_json::from_str(answer.lines().last().unwrap()).unwrap();
    assert_ne!(end["exit_code"], 0, "{answer}");
}

#[test]
fn a_reader_that_goes_away_stops_its_command() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let (_agent, _) = start_cpu_host(&s, &dir.path().join("host"));
    let batch = create(&s, interactive(1));
    // A command that writes for ever; its reader reads a line and leaves.
    let r = ureq::post(&format!("{}/v1/sandboxes/{batch}/exec", s.url))
        .set("Authorization", &format!("Bearer {}", s.token))
        .send_json(json!({"command": ["sh", "-c", "yes"], "timeout_s": 600}))
        .unwrap();
    let mut reader = std::io::BufReader::new(r.into_reader());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    drop(reader);
    // The command is gone soon after: nothing in the sandbox runs `yes` any more.
    wait_for("the writer to be stopped", || {
        let (out, _) = run(
            &s,
            batch,
            0,
            &["sh", "-c", "ps -e -o comm= | grep -c '^yes$' || true"],
        );
        out.trim() == "0"
    });
}

#[test]
fn exec_output_is_taken_only_from_the_node_the_order_went_to() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let agent_token = |nodes: &str| {
        s.post("/v1/tokens", json!({"role": "agent", "nodes": nodes}))
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (other, ours) = (agent_token("cpu0000001"), agent_token(HOST));
    let post = |token: &str, body: Value| s.post_as(token, "/v1/agent/exec", body);
    // A node speaking for another node is refused; output for an exec nobody ordered is not
    // wanted; garbage is refused by field.
    let (code, _) = post(
        &other,
        json!({"node": HOST, "id": 1, "batch": 1, "index": 0, "chunks": []}),
    )
    .unwrap_err();
    assert_eq!(code, 403);
    let ack = post(
        &ours,
        json!({"node": HOST, "id": 77, "batch": 1, "index": 0, "chunks": [{"stream": "stdout", "data_b64": "aGk="}]}),
    )
    .unwrap();
    assert_eq!(ack["wanted"], false);
    for (chunk, field) in [
        (
            json!({"stream": "stdout", "data_b64": "%%%"}),
            "chunks[0].data_b64",
        ),
        (
            json!({"stream": "stdin", "data_b64": "aGk="}),
            "chunks[0].stream",
        ),
        (
            json!({"stream": "stdout", "data_b64": "A".repeat(100_000)}),
            "chunks[0].data_b64",
        ),
    ] {
        let (code, text) = post(
            &ours,
            json!({"node": HOST, "id": 1, "batch": 1, "index": 0, "chunks": [chunk]}),
        )
        .unwrap_err();
        assert_eq!(code, 400, "{text}");
        assert!(text.contains(&format!("\"field\":\"{field}\"")), "{text}");
    }
}

#[test]
fn escapes_tried_from_inside_an_exec_fail_and_the_neighbours_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start_server(&data);
    let work = dir.path().join("host");
    let (_agent, said) = start_cpu_host(&s, &work);
    if !said.contains("sandboxes under bubblewrap") {
        assert!(said.contains("no isolation layer"), "{said}");
        return;
    }
    let batch = create(
        &s,
        json!({"name": "box", "tenant": "default", "count": 2, "cpu_millis": 500,
        "memory_mib": 512, "interactive": true}),
    );
    run(
        &s,
        batch,
        1,
        &["sh", "-c", "echo neighbour-secret > /sandbox/secret"],
    );
    let cred = work.parent().unwrap().join("agent.token");
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let probe = format!(
        "cat {cred} {admin} {journal} 2>&1; ls {work} 2>&1; cat {work}/{batch}-sandbox-1/secret 2>&1; \
         echo procs $(ls /proc | grep -c '^[0-9]'); \
         bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>&1 || echo no-server; \
         bash -c 'exec 3<>/dev/tcp/1.1.1.1/443' 2>&1 || echo no-internet; \
         touch /usr/x /etc/x /x 2>&1; \
         unshare --user --map-root-user true 2>&1 || echo no-user-namespace; \
         grep Seccomp: /proc/self/status; echo done",
        cred = cred.display(),
        admin = data.join("admin.token").display(),
        journal = data.join("journal.db").display(),
        work = work.display(),
    );
    let events = exec_as(&s, &s.token, batch, 0, &["sh", "-c", &probe]).unwrap();
    let end = events.last().unwrap().clone();
    let seen: String = events.iter().filter_map(|e| e["stdout"].as_str()).collect();
    let all: String = events
        .iter()
        .flat_map(|e| [e["stdout"].as_str(), e["stderr"].as_str()])
        .flatten()
        .collect();
    assert_eq!(end["exit_code"], 0, "{end}");
    assert!(seen.contains("done"), "{seen}");
    assert!(
        !all.contains(&s.token) && !all.contains("neighbour-secret"),
        "{all}"
    );
    assert!(
        all.contains("no-server") && all.contains("no-internet"),
        "{all}"
    );
    // The seccomp filter: no user namespace, and the kernel says the filter is on.
    assert!(all.contains("no-user-namespace"), "{all}");
    assert!(all.contains("Seccomp:\t2"), "{all}");
    assert!(
        all.matches("Read-only file system").count() + all.matches("Permission denied").count()
            >= 3,
        "{all}"
    );
    // Only the sandbox's own processes: bubblewrap's init, the sandbox's init and the probe's.
    let procs: u32 = seen
        .split("procs ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(procs < 10, "{seen}");
    // Memory: a command that allocates past the sandbox's 512 MiB is killed; pids: a fork bomb
    // stops at the sandbox's limit. The neighbour answers throughout, and so does this one.
    let (_, end) = run(
        &s,
        batch,
        0,
        &["python3", "-c", "b = b'x' * (1536 << 20); print(len(b))"],
    );
    assert_ne!(end["exit_code"], 0, "{end}");
    // Disk: the scratch is in memory, half the sandbox's 512 MiB; filling it with 2 GiB fails,
    // nothing reaches the host's disk, and the sandbox goes on.
    let (out, end) = run(
        &s,
        batch,
        0,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/sandbox/fill bs=1M count=2048 2>&1; rm -f /sandbox/fill",
        ],
    );
    assert!(out.contains("No space left"), "{out} {end}");
    let on_disk: u64 = std::fs::read_dir(work.join(format!("{batch}-sandbox-0")))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(on_disk < 1 << 20, "{on_disk} bytes on the host's disk");
    let (out, _) = run(
        &s,
        batch,
        0,
        &["sh", "-c", "df -k /sandbox | tail -1; echo alive"],
    );
    assert!(out.contains("alive"), "{out}");
    // The bomb's children hold no pipe of the exec's, and the count needs no fork (the
    // sandbox is at its limit): a glob and builtins.
    let (out, end) = run(
        &s,
        batch,
        0,
        &[
            "sh",
            "-c",
            "(for i in $(seq 1 3000); do sleep 4 </dev/null >/dev/null 2>&1 & done) 2>/dev/null; \
             set -- /proc/[0-9]*; echo started $#",
        ],
    );
    let started: u32 = out
        .trim()
        .rsplit(" ")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{out:?} {end}"));
    // It got as far as the limit (1,024 processes in the sandbox), and no further.
    assert!((900..=1100).contains(&started), "{out}");
    let (out, end) = run(&s, batch, 1, &["cat", "/sandbox/secret"]);
    assert_eq!(
        (out.as_str(), end["exit_code"].as_i64()),
        ("neighbour-secret\n", Some(0))
    );
}

#[test]
fn a_warm_pool_hands_out_sandboxes_that_already_run_and_refills() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let work = dir.path().join("host");
    let (_agent, said) = start_cpu_host_with(&s, &work, &["--warm-pool", "2"]);
    assert!(
        said.contains("2 interactive sandboxes kept warm per node"),
        "{said}"
    );
    wait_for("the pool to fill", || pooled(&work) == 2);
    let batch = create(
        &s,
        json!({"name": "box", "tenant": "default", "count": 1, "cpu_millis": 500,
               "memory_mib": 300, "interactive": true, "env": {"GREETING": "hi"}}),
    );
    // The sandbox is a pooled one, given to its tenant: its directory, its environment, its
    // user, its limits.
    let (out, end) = run(
        &s,
        batch,
        0,
        &[
            "sh",
            "-c",
            "echo $GREETING $STARGRID_BATCH_ID; id -u; touch mine && ls",
        ],
    );
    assert_eq!(end["exit_code"], 0, "{end} {out}");
    assert!(out.starts_with(&format!("hi {batch}\n")), "{out}");
    assert!(out.contains("mine"), "{out}");
    // One of the two was taken (a third was started in its place), not a sandbox started cold.
    wait_for("the pool's third sandbox", || {
        work.join(format!("warm-{HOST}-3")).exists()
    });
    assert!(work.join(format!("{batch}-sandbox-0")).is_dir());
    if said.contains("tenant's user") && said.contains("cgroup v1") {
        let uid: u32 = out.lines().nth(1).unwrap().parse().unwrap();
        assert_eq!(uid, agent::users::DEFAULT_UID_BASE, "{out}");
        // This agent's pool groups (named after its work dir, its node and the pooled sandbox).
        let tag = agent::task_group_tag(&std::fs::canonicalize(&work).unwrap());
        let ours = format!("{tag}-{HOST}-warm-");
        let limits: Vec<String> = std::fs::read_dir("/sys/fs/cgroup/memory/stargrid")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&ours))
            .filter_map(|e| std::fs::read_to_string(e.path().join("memory.limit_in_bytes")).ok())
            .map(|l| l.trim().to_string())
            .collect();
        assert!(limits.contains(&(300u64 << 20).to_string()), "{limits:?}");
    }
    // The pool is full again.
    wait_for("the pool to refill", || pooled(&work) == 2);
}

#[test]
fn an_exec_whose_node_goes_down_ends_at_once_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server_with(&dir.path().join("data"), &["--heartbeat-timeout-s", "2"]);
    let (mut agent, _) = start_cpu_host(&s, &dir.path().join("host"));
    let batch = create(&s, interactive(1));
    run(&s, batch, 0, &["true"]);
    let handle = {
        let (url, token) = (s.url.clone(), s.token.clone());
        std::thread::spawn(move || {
            let at = Instant::now();
            let text = ureq::post(&format!("{url}/v1/sandboxes/{batch}/exec"))
                .set("Authorization", &format!("Bearer {token}"))
                .send_json(json!({"command": ["sleep", "600"], "timeout_s": 600}))
                .unwrap()
                .into_string()
                .unwrap();
            (text, at.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // The agent dies without a word; its node goes down after two silent seconds.
    agent.kill();
    let (text, took) = handle.join().unwrap();
    let end: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(
        end["error"]
            .as_str()
            .unwrap()
            .contains("the sandbox ended or left its node"),
        "{text}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}
