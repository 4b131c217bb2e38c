//! `/metrics` end to end: what a scrape shows after real work (a job queued, a CPU host's agent
//! heartbeating), who may read it, and a real Prometheus (Debian's `prometheus`) scraping the
//! server and answering queries for its series.

#![allow(clippy::unwrap_used)]

mod common;

use common::hostile::{start_cpu_host, start_server, Server};
use common::wait_for;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};

fn scrape(s: &Server, token: &str) -> Result<String, u16> {
    match ureq::get(&format!("{}/metrics", s.url))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
    {
        Ok(r) => Ok(r.into_string().unwrap()),
        Err(ureq::Error::Status(code, _)) => Err(code),
        Err(e) => panic!("{e}"),
    }
}

/// The value of the series whose line starts with `series` (name and labels, as written).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn a_scrape_counts_the_fleet_the_queue_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let (_agent, _) = start_cpu_host(&s, &dir.path().join("host"));
    // A job waits in the queue: no GPU node has an agent.
    s.post(
        "/v1/jobs",
        json!({"name": "wait", "tenant": "default", "nodes": 1, "gpus_per_node": 4,
               "time_limit_s": 3600}),
    )
    .unwrap();
    let text = scrape(&s, &s.token).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(
        value(
            &text,
            "stargrid_jobs{state=\"pending\",class=\"research\",tenant=\"default\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(value(&text, "stargrid_nodes{state=\"ready\"}").unwrap() >= 1.0);
    assert!(value(&text, "stargrid_nodes{state=\"down\"}").unwrap() >= 1.0);
    assert!(text.contains("stargrid_gpus{state=\"free\""), "{text}");
    assert!(
        text.contains("stargrid_nvlink_domains_whole_free "),
        "{text}"
    );
    assert!(value(&text, "stargrid_heartbeats_total").unwrap() >= 1.0);
    assert!(
        text.contains(
            "stargrid_http_requests_total{method=\"POST\",route=\"/v1/jobs\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("stargrid_journal_commit_duration_seconds_bucket"),
        "{text}"
    );
    assert!(value(&text, "stargrid_journal_records_total").unwrap() >= 2.0);
    // Tenants and agents do not read it; nobody reads it without a token.
    let tenant = s.tenant_token("default");
    assert_eq!(scrape(&s, &tenant).unwrap_err(), 403);
    assert_eq!(scrape(&s, "nope").unwrap_err(), 401);
    // A metrics token reads it, and nothing else.
    let scraper = metrics_token(&s);
    assert!(scrape(&s, &scraper).unwrap().ends_with("# EOF\n"));
    for path in [
        "/v1/jobs",
        "/v1/nodes",
        "/v1/events?follow=false",
        "/v1/history",
    ] {
        let r = ureq::get(&format!("{}{path}", s.url))
            .set("Authorization", &format!("Bearer {scraper}"))
            .call();
        assert!(
            matches!(r, Err(ureq::Error::Status(403, _))),
            "{path}: {r:?}"
        );
    }
}

/// A new metrics token (reads `/metrics` only).
fn metrics_token(s: &Server) -> String {
    let t: Value = ureq::post(&format!("{}/v1/tokens", s.url))
        .set("Authorization", &format!("Bearer {}", s.token))
        .send_json(json!({"role": "metrics"}))
        .unwrap()
        .into_json()
        .unwrap();
    t["token"].as_str().unwrap().to_string()
}

/// A free port on loopback (free when this returns).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn prometheus_scrapes_the_server_and_answers_for_its_series() {
    let Some(prometheus) = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        // CI installs it (Debian's `prometheus`) and requires this test to run.
        assert!(
            std::env::var_os("STARGRID_REQUIRE_PROMETHEUS").is_none(),
            "prometheus is not installed"
        );
        eprintln!("prometheus is not installed: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let (_agent, _) = start_cpu_host(&s, &dir.path().join("host"));
    // Prometheus holds a metrics token: it reads /metrics and nothing else.
    let token = dir.path().join("scrape.token");
    std::fs::write(&token, metrics_token(&s)).unwrap();
    let target = s.url.trim_start_matches("http://").trim_end_matches('/');
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: stargrid\n    \
             metrics_path: /metrics\n    authorization:\n      credentials_file: {}\n    \
             static_configs:\n      - targets: ['{target}']\n",
            token.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = common::Proc(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let query = |q: &str| -> Option<Value> {
        let r = ureq::get(&format!("http://127.0.0.1:{port}/api/v1/query"))
            .query("query", q)
            .call()
            .ok()?;
        let v: Value = r.into_json().ok()?;
        let result = v["data"]["result"].as_array()?.clone();
        (!result.is_empty()).then_some(Value::Array(result))
    };
    wait_for("Prometheus to scrape the server", || {
        query("up{job=\"stargrid\"} == 1").is_some()
    });
    for series in [
        "stargrid_nodes{state=\"ready\"}",
        "stargrid_heartbeats_total",
        "sum(stargrid_gpus{state=\"unavailable\"})",
        "stargrid_journal_commit_duration_seconds_count",
        "stargrid_http_requests_total{route=\"/v1/agent/heartbeats\"}",
    ] {
        let found = query(series).unwrap_or_else(|| panic!("no {series} in Prometheus"));
        let v: f64 = found[0]["value"][1].as_str().unwrap().parse().unwrap();
        assert!(v > 0.0, "{series}: {found}");
    }
}

/// Every series name a scrape can show: its samples' names, and the names each declared
/// family's samples take (`_total` for counters; `_bucket`, `_count`, `_sum` for histograms).
fn series_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_count", "_sum"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[test]
fn the_shipped_dashboard_and_alerts_use_only_series_the_server_exports() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&dir.path().join("data"));
    let exported = series_names(&scrape(&s, &s.token).unwrap());
    let ops = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ops");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ops}/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let alerts = format!("{ops}/prometheus-alerts.yml");
    exprs.push(std::fs::read_to_string(&alerts).unwrap());
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("stargrid_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exported.contains(&name),
                "{name} (in {expr}) is not exported"
            );
            rest = &rest[at + name.len()..];
        }
    }
    // The rules load in Prometheus's own checker where it is installed.
    if let Ok(out) = Command::new("promtool")
        .args(["check", "rules", &alerts])
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
