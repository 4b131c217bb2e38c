//! `stargrid sim frag` as a user runs it (the table, the JSON keys, a bad policy named), and a
//! simulation run under a node score.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn stargrid(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(args)
        .output()
        .expect("run stargrid")
}

#[test]
fn the_static_experiment_prints_a_table_and_json() {
    let out = stargrid(&[
        "sim",
        "frag",
        "--runs",
        "1",
        "--policies",
        "best-fit,packing",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1213 nodes, 6212 GPUs"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("packing")), "{text}");
    let out = stargrid(&[
        "sim",
        "frag",
        "--runs",
        "2",
        "--policies",
        "best-fit",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpus"], 6212);
    let p = &v["policies"][0];
    assert_eq!(p["policy"], "best-fit");
    let first = p["allocated_at_first_failure"].as_f64().unwrap();
    let (lo, hi) = (
        p["first_failure_min"].as_f64().unwrap(),
        p["first_failure_max"].as_f64().unwrap(),
    );
    assert!(lo <= first && first <= hi, "{p}");
    assert!(first <= p["allocated_at_end"].as_f64().unwrap(), "{p}");
}

#[test]
fn an_unknown_policy_is_named() {
    let out = stargrid(&["sim", "frag", "--policies", "tetris"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown policy 'tetris'"), "{err}");
}

#[test]
fn a_run_takes_a_node_score_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    let lines: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"id": {i}, "submit": {i}, "duration": 600, "gpus": 1, "gpu_milli": 300, "cpu_millis": 2000, "tenant": "a"}}"#
            )
        })
        .collect();
    std::fs::write(&trace, lines.join("\n")).unwrap();
    let out_dir = dir.path().join("out");
    let args = |score: &str| {
        vec![
            "sim".to_string(),
            "run".into(),
            "--trace".into(),
            trace.display().to_string(),
            "--gpus".into(),
            "72".into(),
            "--cpu-hosts".into(),
            "0".into(),
            "--no-what-if".into(),
            "--no-plots".into(),
            "--json".into(),
            "--out".into(),
            out_dir.display().to_string(),
            "--node-score".into(),
            score.into(),
        ]
    };
    let run = |score: &str| {
        let a = args(score);
        stargrid(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run("packed-gradient");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["finished"], 12, "{v}");
    let out = run("tetris");
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--node-score: unknown score 'tetris'"),
        "{err}"
    );
}
