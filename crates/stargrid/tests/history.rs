//! The history of finished work end to end, with real server and agent processes: rows written
//! as jobs end (finished, failed, cancelled) with their accounting, kept across a `kill -9` and
//! a compaction, filtered, shown to each tenant alone, summed per day; `stargrid history` and
//! `stargrid usage` in each format; refusals by field.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

fn status(r: Result<ureq::Response, ureq::Error>) -> u16 {
    match r {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn finished_work_is_kept_with_its_accounting_through_a_crash_and_a_compaction() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = two_tenants(dir.path());
        let data = dir.path().join("data");
        let mut flags = flags(&backend);
        flags.extend([
            "--tenants",
            tenants.to_str().unwrap(),
            "--snapshot-every",
            "0",
        ]);
        let (mut server, url) = start_server_with(&data, &flags);
        let admin = admin_token(&url);
        let vision = tenant_token(&url, "vision");
        let speech = tenant_token(&url, "speech");
        let nodes = ["nvl00000t00", "nvl00000t01"];
        let _agents = start_node_agents(&url, &dir.path().join("agents"), &nodes);
        wait_for("both nodes up", || nodes_up(&url) == 2);
        let submit = |name: &str, tenant: &str, command: &str| -> u64 {
            let mut spec = job(name, 1);
            spec["tenant"] = json!(tenant);
            spec["command"] = json!(["sh", "-c", command]);
            let s: Value = post(&format!("{url}/v1/jobs"))
                .send_json(spec)
                .unwrap()
                .into_json()
                .unwrap();
            s["id"].as_u64().unwrap()
        };
        let ok = submit("train-ok", "vision", "sleep 2");
        let bad = submit("train-bad", "vision", "sleep 1; exit 3");
        let theirs = submit("asr", "speech", "sleep 1");
        let long = submit("long", "speech", "sleep 600");
        wait_for("the long job running", || {
            get_job(&url, long)["state"] == "running"
        });
        // Times are in seconds: let it hold its GPUs for some.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        post(&format!("{url}/v1/jobs/{long}/cancel"))
            .call()
            .unwrap();
        wait_for("every job ended", || {
            [ok, bad, theirs, long].iter().all(|id| {
                matches!(
                    get_job(&url, *id)["state"].as_str(),
                    Some("finished" | "cancelled")
                )
            })
        });
        let history = |url: &str, token: &str, query: &str| -> Vec<Value> {
            let page: Value = ureq::get(&format!("{url}/v1/history?{query}"))
                .set("Authorization", &format!("Bearer {token}"))
                .call()
                .unwrap()
                .into_json()
                .unwrap();
            page["items"].as_array().unwrap().clone()
        };
        let states = |rows: &[Value]| -> Vec<(u64, String)> {
            rows.iter()
                .map(|r| {
                    (
                        r["id"].as_u64().unwrap(),
                        r["state"].as_str().unwrap().into(),
                    )
                })
                .collect()
        };
        // A job's view can be ahead of the journal for a moment; history rows are durable.
        let mut all = Vec::new();
        wait_for("the four jobs' rows", || {
            all = history(&url, &admin, "kind=job");
            all.len() == 4
        });
        assert_eq!(
            states(&all),
            [
                (ok, "finished".into()),
                (bad, "failed".into()),
                (theirs, "finished".into()),
                (long, "cancelled".into())
            ],
            "{backend:?}"
        );
        let row = |id: u64| all.iter().find(|r| r["id"] == id).unwrap().clone();
        // The accounting: waits, GPU-hours of what ran, exit codes, times in RFC 3339.
        let done = row(ok);
        assert_eq!(done["exit_code"], 0);
        assert_eq!(row(bad)["exit_code"], 3);
        assert!(
            done["gpu_hours"].as_f64().unwrap() >= 4.0 * 2.0 / 3600.0,
            "{done}"
        );
        assert!(done["cost_usd"].as_f64().unwrap() > 0.0, "{done}");
        assert!(done["wait_s"].as_u64().is_some(), "{done}");
        assert!(done["ended_time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(done["nodes"].as_array().unwrap().len(), 1);
        assert!(
            row(long)["gpu_hours"].as_f64().unwrap() > 0.0,
            "{}",
            row(long)
        );

        // Filters, and each tenant its own.
        assert_eq!(
            states(&history(&url, &admin, "state=failed")),
            [(bad, "failed".into())]
        );
        assert_eq!(states(&history(&url, &admin, "name=asr")).len(), 1);
        let far = unix_now() + 86_400;
        assert!(history(&url, &admin, &format!("since={far}")).is_empty());
        let mine: Vec<u64> = history(&url, &vision, "")
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect();
        assert_eq!(mine, [ok, bad]);
        let refused = ureq::get(&format!("{url}/v1/history?tenant=speech"))
            .set("Authorization", &format!("Bearer {vision}"))
            .call();
        assert_eq!(status(refused), 403);
        for (query, field) in [
            ("state=bogus", "state"),
            ("kind=node", "kind"),
            ("since=10&until=5", "until"),
            ("limit=0", "limit"),
        ] {
            match get(&format!("{url}/v1/history?{query}")).call() {
                Err(ureq::Error::Status(400, r)) => {
                    let e: Value = r.into_json().unwrap();
                    assert_eq!(e["error"]["field"], field, "{query}");
                }
                other => panic!("{query}: {other:?}"),
            }
        }

        // Usage per tenant per day: what ran, summed by the database.
        let usage: Value = get(&format!("{url}/v1/usage"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        let lines = usage["lines"].as_array().unwrap();
        let tenants: Vec<&str> = lines
            .iter()
            .map(|l| l["tenant"].as_str().unwrap())
            .collect();
        assert_eq!(tenants, ["speech", "vision"], "{usage}");
        let vision_line = &lines[1];
        assert_eq!(vision_line["count"], 2);
        let expected: f64 = [ok, bad]
            .iter()
            .map(|id| row(*id)["gpu_hours"].as_f64().unwrap())
            .sum();
        assert!((vision_line["gpu_hours"].as_f64().unwrap() - expected).abs() < 1e-9);
        let theirs_only: Value = ureq::get(&format!("{url}/v1/usage?period=week"))
            .set("Authorization", &format!("Bearer {speech}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        assert!(theirs_only["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["tenant"] == "speech"));

        // The CLI: a table, CSV with a header and one line per row, a tenant's own.
        let (success, table, err) = cli(&url, &admin, &["history", "--kind", "job"]);
        assert!(success, "{err}");
        assert!(
            table.contains("train-bad") && table.contains("failed"),
            "{table}"
        );
        let (_, csv, _) = cli(
            &url,
            &admin,
            &["history", "--format", "csv", "--state", "finished"],
        );
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].starts_with("kind,id,name,tenant,state"), "{csv}");
        assert_eq!(lines.len(), 3, "{csv}");
        let (_, json_rows, _) = cli(&url, &vision, &["history", "--format", "json"]);
        let parsed: Vec<Value> = serde_json::from_str(&json_rows).unwrap();
        assert_eq!(parsed.len(), 2);
        let (success, usage_table, err) = cli(&url, &admin, &["usage", "--since", "2d"]);
        assert!(success, "{err}");
        assert!(
            usage_table.contains("vision") && usage_table.contains("total"),
            "{usage_table}"
        );
        let (success, _, err) = cli(&url, &admin, &["history", "--since", "yesterday"]);
        assert!(
            !success && err.contains("--since") && err.contains("is not a time"),
            "{err}"
        );

        // A crash and a compaction later, the same history.
        signal(server.id(), "-KILL");
        server.kill();
        let (_server, url) = start_server_with(&data, &flags);
        let admin = admin_token(&url);
        assert_eq!(history(&url, &admin, "kind=job"), all, "{backend:?}");
        post(&format!("{url}/v1/journal/compact")).call().unwrap();
        assert_eq!(history(&url, &admin, "kind=job"), all, "{backend:?}");
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
