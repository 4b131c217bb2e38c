//! Several accelerator models in one fleet and one run: each job runs on the model it names,
//! or on the run's default one (the model with the most GPUs); the report breaks use and
//! waits down by model; a model no node has is refused at load.

#![allow(clippy::unwrap_used)]

mod common;

use common::Hosts;
use model::GpuModel;
use sim::fit::{check, Shapes};
use sim::trace::read_jsonl;
use sim::SimConfig;

/// Two 8-GPU H200 hosts, then three 8-GPU H100 hosts under one spine.
fn two_models() -> model::Fleet {
    common::hosts(&[
        Hosts::eight("h200-", GpuModel::H200, 2),
        Hosts::eight("h100-", GpuModel::H100, 3),
    ])
}

/// Stargrid's policy, every invariant checked as the run goes.
fn checked() -> SimConfig {
    SimConfig {
        policy: "stargrid".into(),
        sched: sched::SchedConfig::policy("stargrid").unwrap(),
        check_invariants: true,
        ..SimConfig::default()
    }
}

#[test]
fn a_two_model_trace_uses_both_models() {
    let mut text = String::new();
    for i in 0..6 {
        // Even ids name H200; odd ones name nothing (the default: H100, with more GPUs).
        let gpu = if i % 2 == 0 { r#", "gpu": "H200""# } else { "" };
        text.push_str(&format!(
            "{{\"id\": {i}, \"submit\": 0, \"duration\": 3600, \"gpus\": 8, \"tenant\": \"a\"{gpu}}}\n"
        ));
    }
    let fleet = two_models();
    assert_eq!(Shapes::of(&fleet).unwrap().model, GpuModel::H100);
    let mut t = read_jsonl("two.jsonl", &text, false).unwrap();
    check(&mut t, &fleet, false).unwrap();
    let cfg = checked();
    let r = sim::simulate(fleet, &t, &cfg, &mut |_, _| {}).unwrap();
    assert_eq!(r.finished, 6);
    let by: Vec<(&str, u64, u64, u64)> = r
        .by_model
        .iter()
        .map(|m| (m.model.as_str(), m.gpus, m.jobs, m.finished))
        .collect();
    assert_eq!(by, [("H200", 16, 3, 3), ("H100", 24, 3, 3)]);
    // Three 8-GPU jobs on two H200 hosts: one waits an hour; the H100 jobs start at once.
    let h200 = &r.by_model[0];
    assert!((h200.wait_mean_s - 1200.0).abs() < 1.0, "{h200:?}");
    assert_eq!(r.by_model[1].wait_mean_s, 0.0);
    assert!(r.by_model.iter().all(|m| m.gpu_utilization > 0.0));
}

#[test]
fn a_model_the_fleet_lacks_or_does_not_know_is_refused_by_line() {
    let fleet = two_models();
    let text =
        r#"{"id": 1, "submit": 0, "duration": 60, "gpus": 8, "tenant": "a", "gpu": "GB200"}"#;
    let mut t = read_jsonl("m.jsonl", text, false).unwrap();
    let e = check(&mut t, &fleet, false).unwrap_err();
    assert_eq!((e.line, e.column.as_str()), (1, "gpus"));
    assert!(e.reason.contains("no GB200 nodes"), "{e}");
    let e = read_jsonl("m.jsonl", &text.replace("GB200", "Z80"), false).unwrap_err();
    assert_eq!((e.line, e.column.as_str()), (1, "gpu"));
}

#[test]
fn a_slower_model_runs_its_jobs_longer() {
    let text = r#"{"id": 1, "submit": 0, "duration": 3600, "gpus": 8, "tenant": "a", "gpu": "H200"}
{"id": 2, "submit": 0, "duration": 3600, "gpus": 8, "tenant": "a"}
"#;
    let t = read_jsonl("s.jsonl", text, false).unwrap();
    let mut cfg = checked();
    cfg.speed.models = vec![(GpuModel::H200, 0.5)];
    let r = sim::simulate(two_models(), &t, &cfg, &mut |_, _| {}).unwrap();
    // On H200 at half speed: twice the hour; on H100: the hour.
    assert_eq!(r.jct_sorted, [3600.0, 7200.0]);
}

#[test]
fn a_service_that_accepts_another_model_runs_replicas_on_both() {
    // Four 8-GPU replicas: the two H200 hosts hold two, the H100 hosts the rest.
    let line = |models: &str| {
        format!(
            r#"{{"kind": "service", "id": 1, "submit": 0, "end": 3600, "tenant": "chat", "gpu": "H200"{models}, "gpus_per_replica": 8, "min_replicas": 4, "max_replicas": 4, "inflight_per_replica": 10, "load": {{"points": [[0, 40]]}}}}"#
        )
    };
    let run = |text: &str| {
        let fleet = two_models();
        let mut t = read_jsonl("svc.jsonl", text, false).unwrap();
        check(&mut t, &fleet, false).unwrap();
        let cfg = checked();
        let r = sim::simulate(fleet, &t, &cfg, &mut |_, _| {}).unwrap();
        r.by_model
            .iter()
            .map(|m| (m.model.clone(), m.gpu_utilization))
            .collect::<Vec<_>>()
    };
    let both = run(&line(r#", "models": ["H100"]"#));
    assert!(both.iter().all(|(_, u)| *u > 0.0), "{both:?}");
    // Without the list, the H100 hosts stay idle.
    let one = run(&line(""));
    let h100 = one.iter().find(|(m, _)| m == "H100").unwrap();
    assert_eq!(h100.1, 0.0, "{one:?}");
    // The list survives writing the trace out and reading it back; roles refuse it.
    let t = read_jsonl("svc.jsonl", &line(r#", "models": ["any"]"#), false).unwrap();
    assert_eq!(t.services[0].models.len(), GpuModel::ALL.len());
    let again = read_jsonl("again.jsonl", &sim::trace::write_jsonl(&t), false).unwrap();
    assert_eq!(again.services, t.services);
    let unit = line(r#", "models": ["H100"], "roles": [{"name": "p", "gpus": 8, "workers": 1}]"#)
        .replace(r#""gpus_per_replica": 8, "#, "");
    let e = read_jsonl("unit.jsonl", &unit, false).unwrap_err();
    assert_eq!((e.line, e.column.as_str()), (1, "models"), "{e}");
    let e = read_jsonl("bad.jsonl", &line(r#", "models": ["Z80"]"#), false).unwrap_err();
    assert!(e.to_string().contains("Z80"), "{e}");
}

#[test]
fn a_model_named_twice_runs_as_named_once() {
    let text = r#"{"id": 1, "submit": 0, "duration": 60, "gpus": 8, "tenant": "a", "gpu": "H200", "models": ["H100", "H100"]}
{"kind": "service", "id": 2, "submit": 0, "end": 60, "tenant": "chat", "gpu": "H200", "models": ["H100", "H100"], "gpus_per_replica": 8, "min_replicas": 1, "max_replicas": 1, "inflight_per_replica": 10, "load": {"points": [[0, 5]]}}
"#;
    let fleet = two_models();
    let mut t = read_jsonl("twice.jsonl", text, false).unwrap();
    check(&mut t, &fleet, false).unwrap();
    let cfg = checked();
    let r = sim::simulate(fleet, &t, &cfg, &mut |_, _| {}).unwrap();
    assert_eq!(r.finished, 1);
}
