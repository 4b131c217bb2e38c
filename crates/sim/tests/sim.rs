//! Simulator tests: determinism, conservation, a hand-computed scenario, failures, and a
//! snapshot of a small report.

#![allow(clippy::unwrap_used)]

use expect_test::expect;
use model::PriorityClass;
use sim::fleets::hosts_fleet;
use sim::synth::{generate, SynthSpec};
use sim::{simulate, FaultSpec, SimConfig, TraceJob};

fn job(id: u64, submit: u64, duration: u64, gpus: u32, limit: u64) -> TraceJob {
    TraceJob {
        id,
        submit,
        duration,
        gpus,
        tenant: "t".into(),
        priority: PriorityClass::Research,
        time_limit: limit,
        checkpoint_interval: None,
    }
}

fn config(policy: &str) -> SimConfig {
    SimConfig {
        policy: policy.into(),
        sched: sched::SchedConfig::policy(policy).unwrap(),
        check_invariants: true,
        ..SimConfig::default()
    }
}

/// Two 8-GPU hosts under one rack. A (8 GPUs, 100 s) starts at once; B (16 GPUs, 50 s) needs
/// both hosts, so it waits for A and then spans two domains under the rack (speed 0.92:
/// ceil(50 / 0.92) = 55 s); C (8 GPUs, 10 s, limit 10 s) arrives at t=10.
/// FIFO: C waits behind B: JCTs 100, 155, 155. Stargrid: B holds a reservation at t=100, C
/// ends before it and backfills at once: JCTs 100, 155, 10.
#[test]
fn hand_computed_jcts() {
    let jobs = vec![
        job(1, 0, 100, 8, 100),
        job(2, 0, 50, 16, 50),
        job(3, 10, 10, 8, 10),
    ];
    let jcts = |policy: &str| {
        let r = simulate(
            hosts_fleet(16).unwrap(),
            &jobs,
            &config(policy),
            &mut |_, _| {},
        )
        .unwrap();
        let mut v = r.jct_sorted.clone();
        v.sort_by(f64::total_cmp);
        (v, r.makespan)
    };
    assert_eq!(jcts("fifo"), (vec![100.0, 155.0, 155.0], 165));
    assert_eq!(jcts("stargrid"), (vec![10.0, 100.0, 155.0], 155));
}

fn synthetic() -> Vec<TraceJob> {
    generate(&SynthSpec {
        jobs: 300,
        fleet_gpus: 2048,
        horizon: 3 * 86_400,
        load: 0.9,
        max_job_share: 0.25,
        gpus_per_node: 8,
        seed: 7,
        ..SynthSpec::default()
    })
}

#[test]
fn same_seed_same_report_and_every_job_ends_once() {
    let jobs = synthetic();
    let faults = SimConfig {
        faults: Some(FaultSpec {
            node_mtbf: 20.0 * 86_400.0,
            repair: 3600,
        }),
        seed: 3,
        ..config("stargrid")
    };
    let a = simulate(hosts_fleet(2048).unwrap(), &jobs, &faults, &mut |_, _| {}).unwrap();
    let b = simulate(hosts_fleet(2048).unwrap(), &jobs, &faults, &mut |_, _| {}).unwrap();
    assert_eq!(
        a.to_json(),
        b.to_json(),
        "same inputs and seed, same report"
    );
    assert_eq!(a.jobs as usize, jobs.len());
    assert_eq!(a.jct_sorted.len(), jobs.len());
    // Every job ran at least its duration (no job ends twice or early).
    let min_duration = jobs.iter().map(|j| j.duration).min().unwrap() as f64;
    assert!(a.jct_sorted.iter().all(|j| *j >= min_duration));
    let c = simulate(
        hosts_fleet(2048).unwrap(),
        &jobs,
        &SimConfig {
            seed: 4,
            ..faults.clone()
        },
        &mut |_, _| {},
    )
    .unwrap();
    assert_ne!(
        a.to_json(),
        c.to_json(),
        "another fault seed changes the run"
    );
}

#[test]
fn failures_requeue_and_lose_at_most_a_checkpoint_interval() {
    let mut jobs = synthetic();
    for j in &mut jobs {
        j.checkpoint_interval = Some(600);
    }
    let cfg = SimConfig {
        faults: Some(FaultSpec {
            node_mtbf: 2.0 * 86_400.0,
            repair: 1800,
        }),
        ..config("stargrid")
    };
    let r = simulate(hosts_fleet(2048).unwrap(), &jobs, &cfg, &mut |_, _| {}).unwrap();
    assert!(
        r.failures > 0 && r.restarts > 0,
        "{} failures, {} restarts",
        r.failures,
        r.restarts
    );
    assert!(r.gpu_hours_lost > 0.0);
    // Each restart loses at most one checkpoint interval of the largest job (plus rounding).
    let max_gpus = jobs.iter().map(|j| j.gpus).max().unwrap() as f64;
    let bound = r.restarts as f64 * (600.0 / 0.65 + 1.0) * max_gpus / 3600.0;
    assert!(
        r.gpu_hours_lost <= bound,
        "{} lost > bound {bound}",
        r.gpu_hours_lost
    );
    assert_eq!(r.jct_sorted.len(), jobs.len(), "every job still finishes");
}

#[test]
fn every_policy_runs_the_same_trace_to_the_end() {
    let jobs = synthetic();
    for policy in sched::SchedConfig::POLICIES {
        let r = simulate(
            hosts_fleet(2048).unwrap(),
            &jobs,
            &config(policy),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(r.jct_sorted.len(), jobs.len(), "{policy}");
        assert!(
            r.gpu_utilization > 0.0 && r.gpu_utilization <= 1.0,
            "{policy}: {}",
            r.gpu_utilization
        );
    }
}

#[test]
fn small_report_snapshot() {
    let jobs = vec![
        job(1, 0, 3600, 8, 3600),
        job(2, 60, 1800, 16, 3600),
        job(3, 120, 600, 4, 600),
        job(4, 120, 900, 8, 3600),
    ];
    let r = simulate(
        hosts_fleet(16).unwrap(),
        &jobs,
        &config("stargrid"),
        &mut |_, _| {},
    )
    .unwrap();
    let mut text = String::from(sim::Report::summary_header());
    text.push_str(&r.summary_row());
    expect![[r#"
        policy,jobs,jct_mean_s,jct_p50_s,jct_p95_s,jct_p99_s,queue_mean_s,queue_p99_s,makespan_s,gpu_util,small_gangs_one_domain,mean_levels_spanned,gpu_hours_lost,restarts,fair_share_deviation
        stargrid,4,4008.5,5497.0,6337.0,6337.0,2244.2,5437.0,6457,0.6748,1.0000,0.250,0.00,0,0.0000
    "#]].assert_eq(&text);
}
