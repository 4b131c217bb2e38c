//! Money and failover in the simulator: exact spend of a hand-computed run (committed,
//! on-demand, a commitment's burn-down), failover of a provider that keeps the services'
//! spread rules and restarts replicas before training, and the what-if of losing each provider.

#![allow(clippy::unwrap_used)]

use model::commitment::Commitment;
use model::fleet::Location;
use model::{
    CapacityPool, Fleet, FleetBuilder, GpuModel, NodeState, PlacementRule, PricingKind,
    PriorityClass, Resources, SpreadLevel, SpreadRule,
};
use sim::faults::{Change, ChangeKind, FaultPlan};
use sim::trace::{LoadCurve, TraceService};
use sim::{SimConfig, Trace, TraceJob};

const TRAY: Resources = Resources {
    gpu_model: Some(GpuModel::Gb200),
    gpus: 4,
    cpu_millis: 144_000,
    memory_mib: 983_040,
    disk_gib: 0,
};

/// `(cloud, pricing, price, domains)`: each domain has 2 trays of 4 GPUs.
fn fleet(pools: &[(&str, PricingKind, f64, u32)]) -> Fleet {
    let mut b = FleetBuilder::new();
    for (i, (cloud, pricing, price, domains)) in pools.iter().enumerate() {
        let pool = b
            .add_pool(CapacityPool {
                name: format!("{cloud}-{i}"),
                cloud: cloud.to_string(),
                region: format!("{cloud}-r"),
                instance_type: "p6e-gb200.36xlarge".into(),
                pricing: *pricing,
                price_per_hour: *price,
            })
            .unwrap();
        for d in 0..*domains {
            let loc = Location {
                zone: format!("{cloud}-z{i}"),
                network: vec![format!("s{i}")],
                domain: Some(format!("{cloud}{i}d{d}")),
            };
            for t in 0..2 {
                b.add_node(
                    &format!("{cloud}{i}d{d}t{t}"),
                    pool,
                    &loc,
                    TRAY,
                    NodeState::Ready,
                )
                .unwrap();
            }
        }
    }
    b.build().unwrap()
}

fn job(id: u64, submit: u64, duration: u64, gpus: u32, priority: PriorityClass) -> TraceJob {
    TraceJob {
        gpu: None,
        gpus_per_node: None,
        nodes: None,
        id,
        submit,
        duration,
        gpus,
        tenant: "t".into(),
        priority,
        time_limit: duration * 2,
        checkpoint_interval: Some(600),
        placement: None,
        memory_mib: 0,
        gpu_milli: 0,
        models: Box::default(),
        cpu_millis: 0,
    }
}

const EPOCH: u64 = 1_798_761_600; // 2027-01-01

#[test]
fn spend_of_a_run_is_exact_and_burns_down_its_commitment() {
    // One committed domain ($40 a tray-hour) and one on-demand domain ($60).
    let f = fleet(&[
        ("aws", PricingKind::Committed, 40.0, 1),
        ("gcp", PricingKind::OnDemand, 60.0, 1),
    ]);
    // Two 8-GPU (2-tray) jobs at once: the first takes the committed domain for 2 h, the
    // second pays on demand for 1 h.
    let trace = Trace {
        jobs: vec![
            job(1, 0, 7_200, 8, PriorityClass::Research),
            job(2, 0, 3_600, 8, PriorityClass::Research),
        ],
        ..Trace::default()
    };
    let commitment = Commitment {
        provider: "aws".into(),
        total_usd: 10.0 * 24.0 * 80.0,
        start: EPOCH,
        end: EPOCH + 10 * 86_400,
        ramp: Vec::new(),
        yearly_minimum_usd: Vec::new(),
    };
    let cfg = SimConfig {
        check_invariants: true,
        commitments: vec![commitment],
        epoch: EPOCH,
        ..SimConfig::default()
    };
    let r = sim::simulate(f, &trace, &cfg, &mut |_, _| {}).unwrap();
    let c = &r.cost;
    assert_eq!(c.start_date, "2027-01-01");
    // Committed: 2 trays × $40 × 2 h = $160, all used; on demand: 2 × $60 × 1 h = $120.
    assert_eq!(c.total_usd, 280.0);
    assert_eq!(c.idle_committed_usd, 0.0);
    let pricing: Vec<(String, f64)> = c
        .by_pricing
        .iter()
        .map(|r| (r.name.clone(), r.usd))
        .collect();
    assert_eq!(
        pricing,
        [("committed".into(), 160.0), ("on-demand".into(), 120.0)]
    );
    assert_eq!(c.by_tenant[0].name, "t");
    // Two hours into a ten-day term at $80 an hour: exactly on the straight line.
    let b = &c.commitments[0].burn_down;
    assert_eq!(b.spent_usd, 160.0);
    assert!((b.straight_line_usd - 160.0).abs() < 1e-9);
    assert!((b.forecast_usd - commitment_total()).abs() < 1e-6);
    assert!(b.shortfall_usd < 1e-6 && b.overrun_usd < 1e-6);
}

fn commitment_total() -> f64 {
    10.0 * 24.0 * 80.0
}

fn service(id: u64, replicas: u32, spread_max: u32) -> TraceService {
    TraceService {
        gpu: None,
        id,
        submit: 0,
        end: Some(6 * 3600),
        tenant: "chat".into(),
        priority: PriorityClass::ProductionInference,
        gpus_per_replica: 8,
        roles: Vec::new(),
        min_replicas: replicas,
        max_replicas: replicas,
        inflight_per_replica: 1.0,
        load: LoadCurve::Points(vec![(0, f64::from(replicas))]),
        spread: Some(SpreadRule {
            level: SpreadLevel::Cloud,
            max_per: spread_max,
        }),
        placement: PlacementRule::default(),
        min_providers: Default::default(),
        models: Box::default(),
    }
}

fn outage(scope: &str, at: u64, lasts: u64) -> FaultPlan {
    FaultPlan {
        changes: vec![Change {
            kind: ChangeKind::Fail,
            at,
            scope: scope.into(),
            lasts: Some(lasts),
        }],
        ..FaultPlan::default()
    }
}

#[test]
fn failover_keeps_the_spread_rule_and_says_what_could_not_move() {
    // Two providers of two domains; two replicas, at most one per provider (so one on each);
    // a training job pinned to aws. aws goes dark after an hour.
    let f = fleet(&[
        ("aws", PricingKind::Committed, 40.0, 2),
        ("gcp", PricingKind::Committed, 40.0, 2),
    ]);
    let mut pinned = job(10, 0, 4 * 3600, 8, PriorityClass::Training);
    pinned.placement = Some(Box::new(PlacementRule {
        providers: vec!["aws".into()],
        ..PlacementRule::default()
    }));
    let trace = Trace {
        jobs: vec![pinned],
        services: vec![service(1, 2, 1)],
        ..Trace::default()
    };
    let cfg = SimConfig {
        // Every instant: among the checks, every service's spread rule.
        check_invariants: true,
        faults: outage("aws", 3_600, 3_600),
        ..SimConfig::default()
    };
    let r = sim::simulate(f.clone(), &trace, &cfg, &mut |_, _| {}).unwrap();
    let fo = &r.failovers[0];
    assert_eq!(fo.scope, "aws");
    assert_eq!((fo.replicas_displaced, fo.jobs_displaced), (1, 1), "{fo:?}");
    // gcp has a free domain, but it already holds its one replica: the replica waits, and the
    // pinned job cannot leave aws.
    assert_eq!((fo.replicas_replaced, fo.jobs_replaced), (0, 0), "{fo:?}");
    let reasons: Vec<&str> = fo.not_replaced.iter().map(|n| n.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("spread rule: at most 1 replicas of service 0 per cloud")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("placement rule (only on aws; no spot capacity")),
        "{reasons:?}"
    );
    assert!(r.service_shortfall > 0.0);
    // Two per provider (both replicas may start on aws): whatever aws held moves to gcp's
    // free domains at once, and the pinned job still cannot.
    let trace = Trace {
        services: vec![service(1, 2, 2)],
        ..trace
    };
    let r = sim::simulate(f, &trace, &cfg, &mut |_, _| {}).unwrap();
    let fo = &r.failovers[0];
    assert!(fo.replicas_displaced >= 1, "{fo:?}");
    assert_eq!(fo.replicas_replaced, fo.replicas_displaced, "{fo:?}");
    assert_eq!(fo.jobs_replaced, 0);
    assert!(fo.in_priority_order);
    assert_eq!(r.service_shortfall, 0.0);
}

#[test]
fn losing_a_provider_costs_what_moves_to_paid_capacity() {
    // aws and gcp each have one committed domain; gcp also has an on-demand one. Two jobs fill
    // the committed domains for four hours; aws goes dark after one hour for two hours.
    let f = fleet(&[
        ("aws", PricingKind::Committed, 40.0, 1),
        ("gcp", PricingKind::Committed, 40.0, 1),
        ("gcp", PricingKind::OnDemand, 60.0, 1),
    ]);
    let mut j1 = job(1, 0, 4 * 3600, 8, PriorityClass::Training);
    let mut j2 = job(2, 0, 4 * 3600, 8, PriorityClass::Training);
    j1.checkpoint_interval = None;
    j2.checkpoint_interval = None;
    let trace = Trace {
        jobs: vec![j1, j2],
        ..Trace::default()
    };
    let cfg = SimConfig {
        check_invariants: true,
        ..SimConfig::default()
    };
    let base = sim::simulate(f.clone(), &trace, &cfg, &mut |_, _| {}).unwrap();
    // Baseline: 2 domains × 2 trays × $40 × 4 h.
    assert_eq!(base.cost.total_usd, 640.0);
    let out = sim::cost::provider_outages(&f, &trace, &cfg, &base, 3_600, 7_200, 2).unwrap();
    let names: Vec<&str> = out.iter().map(|o| o.provider.as_str()).collect();
    assert_eq!(names, ["aws", "gcp"]);
    let aws = &out[0];
    // The aws job restarts from scratch on gcp's on-demand trays at 1 h and runs 4 h more:
    // 2 trays × $60 × 4 h = $480 paid. aws's committed trays are paid for all 5 h of the
    // run, idle from 1 h: 2 × $40 × 4 h = $320 idle; gcp's committed domain runs its job for
    // 4 h and is then idle for 1 h: $80 more idle.
    assert_eq!(aws.extra_paid_usd, 480.0);
    assert_eq!(aws.extra_idle_committed_usd, 320.0 + 80.0);
    assert_eq!(aws.extra_usd, 480.0 + 2.0 * 80.0);
    assert_eq!(aws.extra_gpu_hours_lost, 8.0);
    let fo = aws.failover.as_ref().unwrap();
    assert_eq!((fo.jobs_displaced, fo.jobs_replaced), (1, 1));
    // The same answer on one thread.
    let again = sim::cost::provider_outages(&f, &trace, &cfg, &base, 3_600, 7_200, 1).unwrap();
    assert_eq!(again, out);
}
