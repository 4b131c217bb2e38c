//! The simulator always ends: work that could never fit the fleet is refused at load (by
//! file and line) or skipped; a run whose remaining work can never start (capacity gone for
//! good, with or without random failures besides) ends and counts it as unfinished. And a
//! trace job's shape does not depend on the order of the fleet's groups.

#![allow(clippy::unwrap_used)]

mod common;

use common::Hosts;
use sim::faults::FaultPlan;
use sim::fit::{check, Shapes};
use sim::fleets::hosts_fleet;
use sim::trace::read_jsonl;
use sim::{FaultSpec, SimConfig, Trace};

fn config(policy: &str, faults: FaultPlan) -> SimConfig {
    SimConfig {
        policy: policy.into(),
        sched: sched::SchedConfig::policy(policy).unwrap(),
        check_invariants: true,
        faults,
        ..SimConfig::default()
    }
}

const TINY: &str = r#"{"id": 1, "submit": 0, "duration": 3600, "gpus": 8, "tenant": "a"}
{"id": 2, "submit": 0, "duration": 3600, "gpus": 24, "tenant": "a"}
{"kind": "sandboxes", "id": 3, "submit": 0, "tenant": "a", "count": 1, "cpu_millis": 1000, "memory_mib": 1024, "lifetime": {"fixed": 60}}
"#;

#[test]
fn work_that_could_never_fit_is_refused_by_line_or_skipped() {
    // Two 8-GPU hosts and no CPU host: the 24-GPU job and the sandboxes can never run.
    let fleet = hosts_fleet(16, 0).unwrap();
    let mut t = read_jsonl("tiny.jsonl", TINY, false).unwrap();
    let e = check(&mut t, &fleet, false).unwrap_err();
    assert_eq!(
        (e.file.as_str(), e.line, e.column.as_str()),
        ("tiny.jsonl", 2, "gpus")
    );
    assert!(e.reason.contains("job 2 can never run"), "{e}");
    let mut t = read_jsonl("tiny.jsonl", TINY, false).unwrap();
    check(&mut t, &fleet, true).unwrap();
    assert_eq!((t.jobs.len(), t.sandboxes.len(), t.skipped), (1, 0, 2));
    assert_eq!(t.lines.jobs, [1]);
    // What is left runs to its end at once.
    let r = sim::simulate(
        fleet,
        &t,
        &config("fifo", FaultPlan::default()),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((r.jobs, r.finished, r.unfinished), (1, 1, 0));
}

/// Two 8-GPU hosts; job 2 needs both, and one is gone for good from t=10.
fn one_host_gone_for_good() -> (Trace, FaultPlan) {
    let text = r#"{"id": 1, "submit": 0, "duration": 3600, "gpus": 8, "tenant": "a"}
{"id": 2, "submit": 100, "duration": 3600, "gpus": 16, "tenant": "a"}
{"id": 3, "submit": 200, "duration": 60, "gpus": 8, "tenant": "b"}
"#;
    let plan =
        FaultPlan::parse("plan.toml", "[[fail]]\nat = \"10s\"\nscope = \"h00001\"\n").unwrap();
    (read_jsonl("t.jsonl", text, false).unwrap(), plan)
}

#[test]
fn a_run_whose_capacity_never_comes_back_ends_and_counts_what_never_finished() {
    let (trace, plan) = one_host_gone_for_good();
    for policy in ["fifo", "stargrid", "first-fit"] {
        let r = sim::simulate(
            hosts_fleet(16, 0).unwrap(),
            &trace,
            &config(policy, plan.clone()),
            &mut |_, _| {},
        )
        .unwrap();
        // Job 2 can never start; fifo keeps job 3 behind it.
        assert_eq!(r.jobs, r.finished + r.unfinished, "{policy}");
        let expect = if policy == "fifo" { 2 } else { 1 };
        assert_eq!(r.unfinished, expect, "{policy}");
        // The samples stopped with the run.
        assert!(
            r.samples.len() < 100,
            "{policy}: {} samples",
            r.samples.len()
        );
        assert_eq!(r.jct_sorted.len() as u64, r.finished);
    }
}

#[test]
fn random_failures_besides_do_not_keep_such_a_run_going() {
    let (trace, mut plan) = one_host_gone_for_good();
    plan.random = Some(FaultSpec {
        node_mtbf: 50_000.0,
        repair: 600,
    });
    let r = sim::simulate(
        hosts_fleet(16, 0).unwrap(),
        &trace,
        &config("stargrid", plan),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((r.finished, r.unfinished), (2, 1));
    // Without the host gone for good, every job ends (random failures are repaired).
    let (trace, _) = one_host_gone_for_good();
    let r = sim::simulate(
        hosts_fleet(16, 0).unwrap(),
        &trace,
        &config(
            "stargrid",
            FaultPlan {
                random: Some(FaultSpec {
                    node_mtbf: 50_000.0,
                    repair: 600,
                }),
                ..FaultPlan::default()
            },
        ),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((r.finished, r.unfinished), (3, 0));
}

/// Eight 1-GPU hosts and two 8-GPU hosts (all H100), the small group first or last.
fn mixed_hosts(small_first: bool) -> model::Fleet {
    let small = Hosts {
        gpus: 1,
        ..Hosts::eight("small", model::GpuModel::H100, 8)
    };
    let big = Hosts::eight("big", model::GpuModel::H100, 2);
    common::hosts(&if small_first {
        [small, big]
    } else {
        [big, small]
    })
}

#[test]
fn a_jobs_shape_is_the_same_whatever_the_order_of_the_fleets_groups() {
    let a = Shapes::of(&mixed_hosts(true)).unwrap();
    let b = Shapes::of(&mixed_hosts(false)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.sizes, [8, 1]);
    let text = r#"{"id": 1, "submit": 0, "duration": 3600, "gpus": 8, "tenant": "a"}
{"id": 2, "submit": 0, "duration": 3600, "gpus": 4, "tenant": "a"}
{"id": 3, "submit": 0, "duration": 3600, "gpus": 16, "tenant": "a"}
{"id": 4, "submit": 0, "duration": 3600, "gpus": 6, "gpus_per_node": 1, "tenant": "a"}
{"id": 5, "submit": 0, "duration": 3600, "gpus": 12, "tenant": "a"}
"#;
    let t = read_jsonl("shapes.jsonl", text, false).unwrap();
    let shape = |i: usize| {
        let g = a.job_gang(&t.jobs[i]);
        (g.nodes, g.gpus_per_node)
    };
    // One 8-GPU host; one node of 4; two 8-GPU hosts; six 1-GPU nodes as asked; 12 GPUs:
    // 8 does not divide them, 1 does: twelve 1-GPU hosts.
    assert_eq!(
        (0..5).map(shape).collect::<Vec<_>>(),
        [(1, 8), (1, 4), (2, 8), (6, 1), (12, 1)]
    );
    // On 8-GPU hosts alone, nothing divides 12: as few hosts as hold it, evenly (2 × 6).
    let only_big = Shapes::of(&hosts_fleet(16, 0).unwrap()).unwrap();
    let g = only_big.job_gang(&t.jobs[4]);
    assert_eq!((g.nodes, g.gpus_per_node), (2, 6));
    // The same runs give the same report either way.
    let run = |small_first: bool| {
        let r = sim::simulate(
            mixed_hosts(small_first),
            &t,
            &config("stargrid", FaultPlan::default()),
            &mut |_, _| {},
        )
        .unwrap();
        (r.finished, r.jct_sorted, r.makespan)
    };
    assert_eq!(run(true), run(false));
    // A bad explicit shape is refused by field.
    let bad = text.replace(r#""gpus_per_node": 1"#, r#""gpus_per_node": 4"#);
    let e = read_jsonl("shapes.jsonl", &bad, false).unwrap_err();
    assert_eq!((e.line, e.column.as_str()), (4, "gpus_per_node"));
}

#[test]
fn a_job_waiting_on_a_service_without_an_end_ends_the_run_after_the_stall_limit() {
    // Two 8-GPU hosts; a service without an end keeps two 8-GPU replicas (its load never
    // falls) above its minimum of one; a 16-GPU job waits for a scale-down that never comes.
    let text = r#"{"kind": "service", "id": 1, "submit": 0, "tenant": "chat", "gpus_per_replica": 8, "min_replicas": 1, "max_replicas": 2, "inflight_per_replica": 10, "load": {"points": [[0, 20]]}}
{"id": 2, "submit": 100, "duration": 3600, "gpus": 16, "tenant": "a", "priority": "research"}
{"id": 3, "submit": 100, "duration": 60, "gpus": 8, "tenant": "b", "priority": "research"}
"#;
    let t = read_jsonl("svc.jsonl", text, false).unwrap();
    let r = sim::simulate(
        hosts_fleet(16, 0).unwrap(),
        &t,
        &config("fifo", FaultPlan::default()),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(r.jobs, r.finished + r.unfinished);
    assert!(r.unfinished >= 1, "{} unfinished", r.unfinished);
    // It ended within the stall limit (30 days) after the last change, not never.
    let last = r.samples.last().unwrap().t;
    assert!(last <= 31 * 86_400, "ended at {last}");
}

#[test]
fn a_long_quiet_gap_before_the_next_arrival_does_not_end_the_run() {
    // A service without an end holds both hosts' GPUs for ever; a job arrives 60 days later
    // and can never start, so the run ends then, with the job counted: the 60 quiet days
    // before it did not end the run early (it is counted unfinished, not dropped).
    let text = r#"{"kind": "service", "id": 1, "submit": 0, "tenant": "chat", "gpus_per_replica": 8, "min_replicas": 2, "max_replicas": 2, "inflight_per_replica": 10, "load": {"points": [[0, 20]]}}
{"id": 2, "submit": 0, "duration": 60, "gpus": 8, "tenant": "a", "priority": "preemptible"}
{"id": 3, "submit": 5184000, "duration": 60, "gpus": 8, "tenant": "a"}
"#;
    let t = read_jsonl("gap.jsonl", text, false).unwrap();
    let r = sim::simulate(
        hosts_fleet(16, 0).unwrap(),
        &t,
        &config("stargrid", FaultPlan::default()),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((r.jobs, r.unfinished), (2, 2));
    let last = r.samples.last().unwrap().t;
    assert!(last >= 5_184_000, "ended at {last}, before job 3 arrived");
}
