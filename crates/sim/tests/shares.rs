//! Trace jobs that ask for part of a GPU, for CPU work on GPU hosts, for CPU and memory, or for
//! any of several models, in the simulator's runs: shares pack onto one device (hand-computed
//! completion times and a full GPU), CPU work waits for CPU, and work of several models runs
//! where there is room and is counted on the model it got.

#![allow(clippy::unwrap_used)]

mod common;

use common::Hosts;
use model::GpuModel;
use sim::faults::FaultPlan;
use sim::fit::check;
use sim::trace::{read_jsonl, write_jsonl};
use sim::{Report, SimConfig};

/// `hosts` of (model, GPUs) with 16 CPUs and 64 GiB each, under one spine.
fn fleet(hosts: &[(GpuModel, u8)]) -> model::Fleet {
    const NAMES: [&str; 8] = ["h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7"];
    let groups: Vec<Hosts> = hosts
        .iter()
        .enumerate()
        .map(|(i, (model, gpus))| Hosts {
            prefix: NAMES[i],
            model: *model,
            gpus: *gpus,
            cpu_millis: 16_000,
            memory_mib: 64 * 1024,
            count: 1,
        })
        .collect();
    common::hosts(&groups)
}

fn run(fleet: model::Fleet, text: &str) -> Report {
    let mut t = read_jsonl("t.jsonl", text, false).unwrap();
    check(&mut t, &fleet, false).unwrap();
    // What is written reads back the same.
    assert_eq!(
        read_jsonl("t.jsonl", &write_jsonl(&t), false).unwrap().jobs,
        t.jobs
    );
    let cfg = SimConfig {
        policy: "stargrid".into(),
        sched: sched::SchedConfig::policy("stargrid").unwrap(),
        check_invariants: true,
        faults: FaultPlan::default(),
        ..SimConfig::default()
    };
    sim::simulate(fleet, &t, &cfg, &mut |_, _| {}).unwrap()
}

fn jobs(lines: &[String]) -> String {
    lines.join("\n")
}

#[test]
fn shares_pack_onto_one_gpu() {
    // Eight quarter-GPU jobs of 100 s on one 1-GPU host: four run at once, then four more.
    let text = jobs(
        &(0..8)
            .map(|i| {
                format!(
                    r#"{{"id": {i}, "submit": 0, "duration": 100, "gpus": 1, "gpu_milli": 250, "tenant": "a"}}"#
                )
            })
            .collect::<Vec<_>>(),
    );
    let r = run(fleet(&[(GpuModel::T4, 1)]), &text);
    assert_eq!(r.finished, 8);
    assert_eq!(
        r.jct_sorted,
        [100.0, 100.0, 100.0, 100.0, 200.0, 200.0, 200.0, 200.0]
    );
    // The GPU is wholly busy all along, in quarters.
    assert!(
        (r.gpu_utilization - 1.0).abs() < 1e-9,
        "{}",
        r.gpu_utilization
    );
}

#[test]
fn cpu_work_runs_on_gpu_hosts_and_waits_for_cpu() {
    // A GPU job of 4 CPUs, then CPU jobs of 10 CPUs on a host of 16: the first runs beside
    // the GPU job, the second waits for its CPU.
    let text = r#"{"id": 1, "submit": 0, "duration": 50, "gpus": 2, "cpu_millis": 4000, "memory_mib": 1024, "tenant": "a"}
{"id": 2, "submit": 1, "duration": 100, "gpus": 0, "cpu_millis": 10000, "tenant": "a"}
{"id": 3, "submit": 1, "duration": 100, "gpus": 0, "cpu_millis": 10000, "tenant": "a"}"#;
    let r = run(fleet(&[(GpuModel::A100, 2)]), text);
    assert_eq!(r.finished, 3);
    assert_eq!(r.jct_sorted, [50.0, 100.0, 200.0]);
}

#[test]
fn work_of_several_models_runs_where_there_is_room() {
    // One L4 host and one A10 host of 1 GPU each; three 1-GPU jobs of 100 s naming L4, the
    // last two also taking any model: the second runs at once on the A10.
    let text = r#"{"id": 1, "submit": 0, "duration": 100, "gpus": 1, "gpu": "L4", "tenant": "a"}
{"id": 2, "submit": 0, "duration": 100, "gpus": 1, "gpu": "L4", "models": ["any"], "tenant": "a"}
{"id": 3, "submit": 0, "duration": 100, "gpus": 1, "gpu": "L4", "models": ["A10"], "tenant": "a"}"#;
    let r = run(fleet(&[(GpuModel::L4, 1), (GpuModel::A10, 1)]), text);
    assert_eq!(r.finished, 3);
    assert_eq!(r.jct_sorted, [100.0, 100.0, 200.0]);
    let by: Vec<(&str, u64)> = r
        .by_model
        .iter()
        .map(|m| (m.model.as_str(), m.jobs))
        .collect();
    assert!(by.contains(&("A10", 1)), "{by:?}");
    assert!(by.contains(&("L4", 2)), "{by:?}");
}

#[test]
fn bad_shares_cpu_work_and_model_lists_are_refused_by_field() {
    for (line, field) in [
        (r#""gpus": 1, "gpu_milli": 1000"#, "gpu_milli"),
        (r#""gpus": 2, "gpu_milli": 500"#, "gpu_milli"),
        (r#""gpus": 0"#, "gpus"),
        (r#""gpus": 0, "cpu_millis": 1000, "nodes": 2"#, "nodes"),
        (r#""gpus": 1, "models": ["H100", "Z9"]"#, "models[1]"),
    ] {
        let text = format!(r#"{{"id": 1, "submit": 0, "duration": 10, "tenant": "a", {line}}}"#);
        let e = read_jsonl("b.jsonl", &text, false).unwrap_err();
        assert_eq!((e.line, e.column.as_str()), (1, field), "{e}");
    }
}
