//! Simulator tests: determinism, conservation, hand-computed scenarios (jobs, sandboxes,
//! structured faults, drains, ramps), failures, services, and a snapshot of a small report.

#![allow(clippy::unwrap_used)]

use expect_test::expect;
use model::PriorityClass;
use sim::faults::FaultPlan;
use sim::fleets::hosts_fleet;
use sim::synth::{generate, generate_jobs, SynthSpec};
use sim::trace::{Lifetime, LoadCurve, TraceSandboxes, TraceService};
use sim::{FaultSpec, Report, SimConfig, Trace, TraceJob};

/// Runs jobs alone on `fleet`.
fn simulate(
    fleet: model::Fleet,
    jobs: &[TraceJob],
    cfg: &SimConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, String> {
    let trace = Trace {
        jobs: jobs.to_vec(),
        ..Trace::default()
    };
    sim::simulate(fleet, &trace, cfg, progress)
}

fn random_faults(node_mtbf: f64, repair: u64) -> FaultPlan {
    FaultPlan {
        random: Some(FaultSpec { node_mtbf, repair }),
        ..FaultPlan::default()
    }
}

fn job(id: u64, submit: u64, duration: u64, gpus: u32, limit: u64) -> TraceJob {
    TraceJob {
        gpu: None,
        gpus_per_node: None,
        nodes: None,
        id,
        submit,
        duration,
        gpus,
        tenant: "t".into(),
        priority: PriorityClass::Research,
        time_limit: limit,
        checkpoint_interval: None,
        placement: None,
        memory_mib: 0,
        gpu_milli: 0,
        models: Box::default(),
        cpu_millis: 0,
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
            hosts_fleet(16, 0).unwrap(),
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
    generate_jobs(&SynthSpec {
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
        faults: random_faults(20.0 * 86_400.0, 3600),
        seed: 3,
        ..config("stargrid")
    };
    let a = simulate(
        hosts_fleet(2048, 0).unwrap(),
        &jobs,
        &faults,
        &mut |_, _| {},
    )
    .unwrap();
    let b = simulate(
        hosts_fleet(2048, 0).unwrap(),
        &jobs,
        &faults,
        &mut |_, _| {},
    )
    .unwrap();
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
        hosts_fleet(2048, 0).unwrap(),
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
        faults: random_faults(2.0 * 86_400.0, 1800),
        ..config("stargrid")
    };
    let r = simulate(hosts_fleet(2048, 0).unwrap(), &jobs, &cfg, &mut |_, _| {}).unwrap();
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
            hosts_fleet(2048, 0).unwrap(),
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
        hosts_fleet(16, 0).unwrap(),
        &jobs,
        &config("stargrid"),
        &mut |_, _| {},
    )
    .unwrap();
    let mut text = String::from(sim::Report::summary_header());
    text.push_str(&r.summary_row());
    expect![[r#"
        policy,jobs,jct_mean_s,jct_p50_s,jct_p95_s,jct_p99_s,queue_mean_s,queue_p99_s,makespan_s,gpu_util,cpu_util,small_gangs_one_domain,mean_levels_spanned,gpu_hours_lost,restarts,sandbox_start_p50_s,sandbox_start_p99_s,service_shortfall,fair_share_deviation
        stargrid,4,4008.5,5497.0,6337.0,6337.0,2244.2,5437.0,6457,0.6748,0.0000,1.0000,0.250,0.00,0,0.0,0.0,0.0000,0.0000
    "#]].assert_eq(&text);
}

fn plan(toml: &str) -> FaultPlan {
    FaultPlan::parse("plan.toml", toml).unwrap()
}

fn jcts_with(jobs: &[TraceJob], faults: FaultPlan) -> Vec<f64> {
    let cfg = SimConfig {
        faults,
        ..config("stargrid")
    };
    let r = simulate(hosts_fleet(16, 0).unwrap(), jobs, &cfg, &mut |_, _| {}).unwrap();
    let mut v = r.jct_sorted.clone();
    v.sort_by(f64::total_cmp);
    v
}

/// Two 8-GPU hosts h00000 and h00001 under rack0.
#[test]
fn timed_failures_drains_and_ramps_are_hand_computable() {
    // The whole rack fails at t=50 for 100 s: the job checkpointed at 30, so 70 s of work are
    // left when the rack is back at 150: JCT 220.
    let mut j = job(1, 0, 100, 8, 200);
    j.checkpoint_interval = Some(30);
    let rack = r#"[[fail]]
at = 50
scope = "onprem/site/zone0/sp0/rack0"
for = 100
"#;
    assert_eq!(jcts_with(std::slice::from_ref(&j), plan(rack)), vec![220.0]);
    // Only its own host fails: it restarts at once on the other one: JCT 50 + 70 = 120.
    let host = rack.replace("onprem/site/zone0/sp0/rack0", "h00000");
    assert_eq!(
        jcts_with(std::slice::from_ref(&j), plan(&host)),
        vec![120.0]
    );
    // A drain of one host for 50 s: two 100 s jobs, the second starts when the drain ends.
    let two = [job(1, 0, 100, 8, 100), job(2, 0, 100, 8, 100)];
    let drain = "[[drain]]\nat = 0\nscope = \"h00000\"\nfor = 50\n";
    assert_eq!(jcts_with(&two, plan(drain)), vec![100.0, 150.0]);
    // Without an end, the second waits for the first.
    let forever = "[[drain]]\nat = 0\nscope = \"h00000\"\n";
    assert_eq!(jcts_with(&two, plan(forever)), vec![100.0, 200.0]);
    // A ramp: the second host arrives at t=1000; a 16-GPU job (50 s, two hosts under one
    // rack: speed 0.92, 55 s) starts then: JCT 1055.
    let ramp = "[[ramp]]\nscope = \"onprem/site/zone0\"\nstart = 0\nevery = 1000\nsteps = 2\n";
    assert_eq!(
        jcts_with(&[job(1, 0, 50, 16, 100)], plan(ramp)),
        vec![1055.0]
    );
    // Overlapping reasons: a host fails at 10 for 100 s inside a rack failure from 20 to 50;
    // it stays down until 110 (the 8-GPU job without checkpoints then restarts from zero on
    // the other host at 50: JCT 50 + 100 = 150).
    let both = r#"[[fail]]
at = 10
scope = "h00000"
for = 100
[[fail]]
at = 20
scope = "onprem/site/zone0/sp0/rack0"
for = 30
"#;
    let r = simulate(
        hosts_fleet(16, 0).unwrap(),
        &[job(1, 0, 100, 8, 200)],
        &SimConfig {
            faults: plan(both),
            ..config("stargrid")
        },
        &mut |_, _| {},
    )
    .unwrap();
    // It started on h00000, failed at 10, restarted on h00001, failed again at 20, and
    // restarted at 50 on h00001 (h00000 is still down): JCT 150.
    assert_eq!((r.jct_sorted.clone(), r.failures), (vec![150.0], 2));
}

fn sandboxes(id: u64, submit: u64, count: u32, lifetime: Lifetime) -> TraceSandboxes {
    TraceSandboxes {
        id,
        submit,
        tenant: "agents".into(),
        count,
        cpu_millis: 1000,
        memory_mib: 1024,
        lifetime,
        max_retries: 1,
    }
}

/// Two 192-core CPU hosts hold 384 one-core sandboxes: of a batch of 400 living 100 s, 16
/// wait for the first to end.
#[test]
fn sandboxes_wait_for_room_and_latency_is_exact() {
    let trace = Trace {
        sandboxes: vec![sandboxes(1, 0, 400, Lifetime::Fixed(100))],
        ..Trace::default()
    };
    let cfg = SimConfig {
        sandbox_tick: 1,
        sample_interval: 50,
        ..config("stargrid")
    };
    let r = sim::simulate(hosts_fleet(8, 2).unwrap(), &trace, &cfg, &mut |_, _| {}).unwrap();
    let lat = r.sandbox_start_latency.clone().unwrap();
    assert_eq!((lat.p50, lat.p99, lat.mean), (0.0, 100.0, 4.0));
    assert_eq!(r.sandboxes, 400);
    // CPU busy: 384 of 384 cores for 100 s, then 16 for 100 s; in service all along.
    let want = (384.0 * 100.0 + 16.0 * 100.0) / (384.0 * 200.0);
    assert!(
        (r.cpu_utilization - want).abs() < 1e-9,
        "{}",
        r.cpu_utilization
    );
    assert_eq!(r.samples[1].sandboxes_waiting, 16);
    // A host failure with no room elsewhere loses its sandboxes; the rest still end.
    let faults = plan("[[fail]]\nat = 10\nscope = \"c00000\"\nfor = 1000\n");
    let r = sim::simulate(
        hosts_fleet(8, 2).unwrap(),
        &trace,
        &SimConfig { faults, ..cfg },
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(r.sandboxes_lost, 192);
}

fn service(id: u64, load: LoadCurve, max: u32) -> TraceService {
    TraceService {
        gpu: None,
        id,
        submit: 0,
        end: Some(3 * 86_400),
        tenant: "chat".into(),
        priority: model::PriorityClass::ProductionInference,
        gpus_per_replica: 8,
        roles: Vec::new(),
        min_replicas: 1,
        max_replicas: max,
        inflight_per_replica: 10.0,
        load,
        spread: None,
        placement: model::PlacementRule::default(),
        min_providers: Default::default(),
        models: Box::default(),
    }
}

#[test]
fn services_follow_their_load_and_preempt_research() {
    // 4 hosts; the service wants 1 replica at night and 3 at its peak; research jobs fill the
    // rest and are preempted at the peak.
    let daily = LoadCurve::Daily {
        base: 10.0,
        peak: 30.0,
        peak_hour: 12.0,
    };
    let jobs: Vec<TraceJob> = (0..40)
        .map(|i| {
            let mut j = job(100 + i, i * 3600, 4 * 3600, 8, 5 * 3600);
            j.checkpoint_interval = Some(600);
            j
        })
        .collect();
    let trace = Trace {
        jobs,
        services: vec![service(1, daily, 3)],
        ..Trace::default()
    };
    let r = sim::simulate(
        hosts_fleet(32, 0).unwrap(),
        &trace,
        &config("stargrid"),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(r.services, 1);
    assert!(r.replica_starts >= 3, "{}", r.replica_starts);
    assert!(
        r.service_shortfall < 0.05,
        "replicas preempt research within the grace period: {}",
        r.service_shortfall
    );
    assert_eq!(r.jct_sorted.len(), 40);
    // A service that wants more than the fleet has is short, and says so.
    let trace = Trace {
        services: vec![service(1, LoadCurve::Points(vec![(0, 100.0)]), 10)],
        ..Trace::default()
    };
    let r = sim::simulate(
        hosts_fleet(32, 0).unwrap(),
        &trace,
        &config("stargrid"),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(
        (r.service_shortfall - 0.6).abs() < 0.01,
        "{}",
        r.service_shortfall
    );
}

#[test]
fn prefill_decode_units_follow_their_load_whole() {
    // 8 H100 hosts of 8 GPUs; each replica is one prefill worker of 8 GPUs and two decode
    // workers of 4: 16 GPUs on at least two hosts, placed whole. The load wants 1 unit at
    // night and 4 at its peak (the whole fleet).
    let mut v = service(
        1,
        LoadCurve::Daily {
            base: 10.0,
            peak: 40.0,
            peak_hour: 12.0,
        },
        4,
    );
    v.gpus_per_replica = 16;
    v.roles = vec![
        sim::trace::TraceRole {
            name: "prefill".into(),
            workers: 1,
            gpus: 8,
        },
        sim::trace::TraceRole {
            name: "decode".into(),
            workers: 2,
            gpus: 4,
        },
    ];
    let shapes = sim::fit::Shapes::single(model::GpuModel::H100, vec![8]);
    let gang = shapes.replica_gang(&v);
    assert_eq!(
        (gang.nodes, gang.total_gpus(), gang.parts.len()),
        (3, 16, 2)
    );
    let trace = Trace {
        services: vec![v],
        ..Trace::default()
    };
    let r = sim::simulate(
        hosts_fleet(64, 0).unwrap(),
        &trace,
        &config("stargrid"),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(r.services, 1);
    assert!(r.replica_starts >= 4, "{}", r.replica_starts);
    assert!(r.service_shortfall < 0.05, "{}", r.service_shortfall);
}

#[test]
fn a_synthetic_mix_runs_with_every_invariant_checked() {
    let trace = generate(&SynthSpec {
        jobs: 200,
        fleet_gpus: 2048,
        horizon: 2 * 86_400,
        load: 0.7,
        max_job_share: 0.25,
        gpus_per_node: 8,
        services_per_500k: 1000.0,
        cpu_hosts: 20,
        sandbox_bursts_per_day: 4.0,
        seed: 11,
        ..SynthSpec::default()
    });
    assert!(!trace.services.is_empty() && !trace.sandboxes.is_empty());
    let faults = plan(
        r#"[random]
node_mtbf = "20d"
repair = "2h"
[[fail]]
at = "12h"
scope = "onprem/site/zone0/sp0"
for = "3h"
[[drain]]
at = "1d"
scope = "onprem/site/zone0/cpu"
for = "1h"
[[ramp]]
scope = "onprem/site/zone0/sp1"
start = 0
every = "6h"
steps = 4
"#,
    );
    let cfg = SimConfig {
        faults,
        ..config("stargrid")
    };
    let fleet = || hosts_fleet(2048, 20).unwrap();
    let a = sim::simulate(fleet(), &trace, &cfg, &mut |_, _| {}).unwrap();
    let b = sim::simulate(fleet(), &trace, &cfg, &mut |_, _| {}).unwrap();
    assert_eq!(a.to_json(), b.to_json());
    assert_eq!(a.jct_sorted.len(), 200);
    assert!(a.sandbox_start_latency.is_some() && a.cpu_utilization > 0.0);
    assert!(
        a.samples.iter().any(|s| s.gpus_up < 2048),
        "the ramp and failures show"
    );
}

#[test]
fn fair_share_counts_demand_not_equality() {
    use sim::run::{fair_deviation, max_min_fair};
    assert_eq!(
        max_min_fair(100.0, &[10.0, 200.0, 200.0]),
        vec![10.0, 45.0, 45.0]
    );
    // A tenant alone, or one whose small demand is met, is treated fairly.
    assert_eq!(fair_deviation(&[10.0, 0.0], &[50.0, 0.0]), 0.0);
    assert_eq!(fair_deviation(&[10.0, 90.0], &[10.0, 500.0]), 0.0);
    // Two hungry tenants, one holds everything: half of the GPUs are misplaced.
    assert_eq!(fair_deviation(&[100.0, 0.0], &[100.0, 100.0]), 0.5);
    assert_eq!(fair_deviation(&[75.0, 25.0], &[100.0, 100.0]), 0.25);
}
