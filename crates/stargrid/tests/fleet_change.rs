//! The fleet changed while the cell runs, as an operator does it: `stargrid fleet apply`
//! against a real server with a hollow agent and a frontend (a region joins and takes work,
//! a kill -9 in between, the region removed while its job runs and leaving once it ends,
//! refusals); and `stargrid bench scale`'s fleet phase at a size that fits CI: 1,008 trays
//! of a new region added while 1,000 jobs run, then a zone removed.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;

/// A new region's pool and one NVL72 domain of 18 trays, as fleet-file tables.
const EU_REGION: &str = include_str!("../../server/src/state/tests/eu_region.toml");

fn nodes(url: &str) -> Vec<Value> {
    let v: Value = get(&format!("{url}/v1/nodes"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    v.as_array().unwrap().clone()
}

fn status(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_region_joins_takes_work_survives_a_crash_and_leaves_once_its_job_ends() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, url) = start_server(&data);
    let admin = admin_token(&url);
    let (ok, current, err) = cli(&url, &admin, &["fleet", "current"]);
    assert!(ok, "{err}");
    assert!(
        current.contains("nodes = \"nvl00000t[00-17]\""),
        "{current}"
    );
    let grown = dir.path().join("grown.toml");
    std::fs::write(&grown, format!("{current}{EU_REGION}")).unwrap();
    let original = dir.path().join("original.toml");
    std::fs::write(&original, &current).unwrap();
    let grown_arg = grown.to_str().unwrap();

    // A dry run says what would change and changes nothing.
    let (ok, out, err) = cli(&url, &admin, &["fleet", "apply", "--dry-run", grown_arg]);
    assert!(ok, "{err}");
    assert!(
        out.contains("would apply (dry run): 40 nodes -> 58 nodes, 2 -> 3 NVLink domains"),
        "{out}"
    );
    assert!(out.contains("eu0-t[00-17]"), "{out}");
    assert_eq!(nodes(&url).len(), 40);

    // Refusals: not an admin, a pool's terms changed, garbage, a body past the limit.
    let tenant = tenant_token(&url, "default");
    let body = json!({"fleet_toml": format!("{current}{EU_REGION}")});
    let (code, _) = status(
        ureq::post(&format!("{url}/v1/fleet/apply"))
            .set("Authorization", &format!("Bearer {tenant}"))
            .send_json(body.clone()),
    );
    assert_eq!(code, 403);
    let repriced = current.replacen("price_per_hour = 60.0", "price_per_hour = 1.0", 1);
    let (code, e) =
        status(post(&format!("{url}/v1/fleet/apply")).send_json(json!({"fleet_toml": repriced})));
    assert_eq!(code, 400);
    assert_eq!(
        e["error"]["field"], "fleet_toml.pools[0].price_per_hour",
        "{e}"
    );
    let (code, e) = status(
        post(&format!("{url}/v1/fleet/apply"))
            .send_json(json!({"fleet_toml": "[[groups]]\nnodes = 7"})),
    );
    assert_eq!(code, 400, "{e}");
    assert!(
        e["error"]["field"]
            .as_str()
            .unwrap()
            .starts_with("fleet_toml."),
        "{e}"
    );
    let (code, e) = status(
        post(&format!("{url}/v1/fleet/apply"))
            .set("Content-Length", &(64u64 << 20).to_string())
            .send_bytes(b"{}"),
    );
    assert_eq!(code, 413, "{e}");
    // The CLI names the file's line before anything is sent.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[[pools]]\nname = \"x\"\ncloud = \"aws\"\n").unwrap();
    let (ok, _, err) = cli(&url, &admin, &["fleet", "apply", broken.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("broken.toml"), "{err}");
    assert_eq!(nodes(&url).len(), 40);

    // Applied: a frontend that follows the writer sees it too.
    let (_frontend, fe) = start_frontend(&url, dir.path());
    let fe = format!("http://{fe}");
    tokens().insert(fe.clone(), admin.clone());
    let (ok, out, err) = cli(&url, &admin, &["fleet", "apply", grown_arg]);
    assert!(ok, "{err}");
    assert!(out.contains("applied: 40 nodes -> 58 nodes"), "{out}");
    assert!(out.contains("pools added: aws-eu-west-1-gb200"), "{out}");
    assert_eq!(nodes(&url).len(), 58);
    wait_for("the frontend to follow", || nodes(&fe).len() == 58);

    // The new trays' agent brings them up; a job pinned to the region runs there.
    let agent: Value = post(&format!("{url}/v1/tokens"))
        .send_json(json!({"role": "agent", "nodes": "eu0-t[00-17]"}))
        .unwrap()
        .into_json()
        .unwrap();
    let credential = agent["token"].as_str().unwrap().to_string();
    let _agent = start_agent_as(
        &url,
        &dir.path().join("eu"),
        &credential,
        &["--hollow", "18"],
    );
    wait_for("the region's trays to come up", || nodes_up(&url) == 18);
    let mut spec = job("eu-train", 18);
    spec["command"] = json!(["sleep", "infinity"]);
    spec["placement"] = json!({"regions": ["eu-west-1"]});
    let submitted: Value = post(&format!("{url}/v1/jobs"))
        .send_json(spec)
        .unwrap()
        .into_json()
        .unwrap();
    let id = submitted["id"].as_u64().unwrap();
    wait_for("the job to run", || get_job(&url, id)["state"] == "running");
    let ran_on = get_job(&url, id)["nodes"].clone();
    assert!(
        ran_on
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n.as_str().unwrap().starts_with("eu0-t")),
        "{ran_on}"
    );

    // kill -9 and a restart on the same address: the fleet and the job are as they were.
    let addr = url.trim_start_matches("http://").to_string();
    signal(server.id(), "-KILL");
    server.kill();
    let (mut server, said) = spawn_server_on(&data, &addr, &[]);
    said.recv_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(nodes(&url).len(), 58);
    assert_eq!(get_job(&url, id)["nodes"], ran_on);
    assert_eq!(get_job(&url, id)["state"], "running");

    // The region is removed while its job runs: drained and listed as leaving, the job keeps
    // its trays; once it ends, they leave.
    let (ok, out, err) = cli(
        &url,
        &admin,
        &["fleet", "apply", original.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert!(out.contains("leaving"), "{out}");
    let (ok, listed, err) = cli(&url, &admin, &["nodes"]);
    assert!(ok, "{err}");
    let leaving: Vec<&str> = listed.lines().filter(|l| l.ends_with("leaving")).collect();
    assert_eq!(leaving.len(), 18, "{listed}");
    assert!(leaving.iter().all(|l| l.contains("draining")), "{listed}");
    assert_eq!(get_job(&url, id)["state"], "running");
    post(&format!("{url}/v1/jobs/{id}/cancel")).call().unwrap();
    wait_for("the region's trays to leave", || nodes(&url).len() == 40);
    wait_for("the frontend to follow the departure", || {
        nodes(&fe).len() == 40
    });
    let (ok, now, _) = cli(&url, &admin, &["fleet", "current"]);
    assert!(ok);
    assert!(!now.contains("eu0-t"), "{now}");
    // The region's pool stays in the cell's file: the books price what it cost.
    assert!(now.contains("aws-eu-west-1-gb200"), "{now}");
    server.kill();
}

#[test]
fn a_new_region_joins_while_a_thousand_jobs_run_then_a_zone_leaves() {
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(["bench", "scale", "--json"])
        .args(["--gpus", "4608", "--cpu-hosts", "16", "--agents", "3"])
        .args(["--interval-ms", "300", "--heartbeat-timeout-s", "2"])
        .args(["--steady-s", "1", "--queued", "100", "--jobs", "100"])
        .args(["--latency-jobs", "20", "--outage-jobs", "0"])
        .args(["--listing-jobs", "0", "--frontends", "0"])
        .args(["--fleet-trays", "1008", "--fleet-jobs", "1000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let change = &report["fleet_change"];
    let figure = |k: &str| {
        change[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k}: {change}"))
    };
    assert_eq!(figure("jobs_running_before"), 1000.0, "{change}");
    assert_eq!(figure("trays_added"), 1008.0, "{change}");
    assert_eq!(figure("jobs_on_new_trays"), 1000.0, "{change}");
    // The zone's busy trays stayed, drained, with every job on them running ...
    let in_zone = figure("jobs_in_zone");
    assert!(in_zone > 0.0, "{change}");
    assert_eq!(figure("nodes_leaving"), in_zone, "{change}");
    assert_eq!(
        figure("jobs_kept_running_in_removed_zone"),
        in_zone,
        "{change}"
    );
    // ... and left once they ended; its idle CPU hosts left at once.
    assert!(figure("nodes_removed_at_once") > 0.0, "{change}");
    let before = figure("nodes_before");
    assert_eq!(
        figure("nodes_after"),
        before + 1008.0 - in_zone - figure("nodes_removed_at_once"),
        "{change}"
    );
    // The timings are figures for the README (the bench gives up past its own limit).
    for k in [
        "apply_add_s",
        "apply_remove_s",
        "new_trays_up_s",
        "left_after_work_ended_s",
    ] {
        assert!(figure(k) >= 0.0, "{k}: {change}");
    }
}

#[test]
fn an_agent_registers_its_node_under_the_rule_and_it_takes_work_once_it_joins() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(&dir.path().join("data"));
    let admin = admin_token(&url);
    let credential: Value = post(&format!("{url}/v1/tokens"))
        .send_json(json!({"role": "agent", "nodes": "reg-cpu-[0-1]"}))
        .unwrap()
        .into_json()
        .unwrap();
    let credential = credential["token"].as_str().unwrap().to_string();
    let register = [
        "--node",
        "reg-cpu-0",
        "--register-pool",
        "aws-us-east-1-z1-cpu",
        "--register-zone",
        "us-east-1-z1",
        "--register-network",
        "cpusp0,rack9",
        "--no-cgroups",
        "--tasks-as-agent-user",
        "--isolation",
        "none",
    ];
    // Without a rule the agent is refused, and says why.
    let work = dir.path().join("agent");
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(["agent", "--server", &url, "--work-dir"])
        .arg(&work)
        .args(register)
        .env("STARGRID_TOKEN_FILE", token_file(dir.path(), &credential))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("takes no registrations"), "{said}");

    // An admin allows the names, into the CPU pool, approved at once.
    let (ok, out, err) = cli(
        &url,
        &admin,
        &[
            "fleet",
            "allow",
            "--nodes",
            "reg-cpu-[0-1]",
            "--pools",
            "aws-us-east-1-z1-cpu",
            "--auto-approve",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("reg-cpu-[0-1] into aws-us-east-1-z1-cpu (approved at once)"),
        "{out}"
    );
    // A credential that does not report for a name cannot register it.
    let other: Value = post(&format!("{url}/v1/tokens"))
        .send_json(json!({"role": "agent", "nodes": "nvl00000t00"}))
        .unwrap()
        .into_json()
        .unwrap();
    let (code, _) = status(
        ureq::post(&format!("{url}/v1/agent/register"))
            .set(
                "Authorization",
                &format!("Bearer {}", other["token"].as_str().unwrap()),
            )
            .send_json(json!({"node": "reg-cpu-1", "pool": "aws-us-east-1-z1-cpu",
                "zone": "us-east-1-z1", "inventory": {"gpus": 0, "source": "declared"}})),
    );
    assert_eq!(code, 403);

    // The agent registers; the node joins within a batch and comes up.
    let (_agent, said) = start_agent_saying(&url, &work, &credential, &register, &[]);
    assert!(
        said.contains("registered into aws-us-east-1-z1-cpu"),
        "{said}"
    );
    wait_for("the registered node to come up", || {
        nodes(&url)
            .iter()
            .any(|n| n["name"] == "reg-cpu-0" && n["state"] == "ready")
    });
    let (ok, file, _) = cli(&url, &admin, &["fleet", "current"]);
    assert!(ok);
    assert!(file.contains("reg-cpu-0"), "{file}");
    // It takes work at once: the only CPU host up runs a sandbox batch.
    let submitted: Value = post(&format!("{url}/v1/sandboxes"))
        .send_json(
            json!({"name": "on-registered", "tenant": "default", "count": 2,
            "cpu_millis": 250, "memory_mib": 64, "command": ["true"]}),
        )
        .unwrap()
        .into_json()
        .unwrap();
    let id = submitted["id"].as_u64().unwrap();
    wait_for("the sandboxes to end", || {
        let b = get_path(&url, &format!("/v1/sandboxes/{id}"));
        b["succeeded"] == 2
    });
    let (ok, registrations, _) = cli(&url, &admin, &["fleet", "registrations"]);
    assert!(ok);
    assert!(!registrations.contains("waiting"), "{registrations}");
    let (ok, _, _) = cli(&url, &admin, &["fleet", "allow", "--off"]);
    assert!(ok);
}
