//! Spend accounting and cost-aware placement through the queue: exact spend on hand-computed
//! scenarios, committed capacity before paid-for capacity, the cheapest paid-for capacity
//! next, and placement rules (pins, exclusions, spot only for preemptible work) under random
//! fleets and workloads.

#![allow(clippy::unwrap_used)]

mod common;

use common::{gang, GB200_TRAY};
use model::fleet::Location;
use model::{
    CapacityPool, Fleet, FleetBuilder, JobSpec, NodeState, PlacementRule, PricingKind,
    PriorityClass, ResourceVec, Resources, SandboxRequest, TenantId, TenantSpec, WorkloadId,
};
use proptest::prelude::*;
use sched::cost::SpendClass;
use sched::{Decision, Engine, SchedConfig, Scheduler};

/// A pool with `domains` NVL domains of `trays` 4-GPU trays (GPU pools), or `hosts` CPU hosts
/// of 8,000 millicores.
#[derive(Debug)]
struct PoolDef {
    cloud: &'static str,
    region: &'static str,
    pricing: PricingKind,
    price: f64,
    domains: u32,
    trays: u32,
    hosts: u32,
}

fn fleet(pools: &[PoolDef]) -> Fleet {
    let mut b = FleetBuilder::new();
    for (i, p) in pools.iter().enumerate() {
        let id = b
            .add_pool(CapacityPool {
                name: format!("p{i}"),
                cloud: p.cloud.into(),
                region: p.region.into(),
                instance_type: if p.hosts > 0 {
                    "m7i.48xlarge".into()
                } else {
                    "p6e-gb200.36xlarge".into()
                },
                pricing: p.pricing,
                price_per_hour: p.price,
            })
            .unwrap();
        for d in 0..p.domains {
            let loc = Location {
                zone: format!("{}-z{i}", p.region),
                network: vec![format!("s{i}")],
                domain: Some(format!("p{i}d{d}")),
            };
            for t in 0..p.trays {
                b.add_node(
                    &format!("p{i}d{d}t{t}"),
                    id,
                    &loc,
                    GB200_TRAY,
                    NodeState::Ready,
                )
                .unwrap();
            }
        }
        for h in 0..p.hosts {
            let loc = Location {
                zone: format!("{}-z{i}", p.region),
                network: vec![format!("cpu{i}")],
                domain: None,
            };
            let res = Resources {
                gpu_model: None,
                gpus: 0,
                cpu_millis: 8_000,
                memory_mib: 16_384,
                disk_gib: 0,
            };
            b.add_node(&format!("p{i}h{h}"), id, &loc, res, NodeState::Ready)
                .unwrap();
        }
    }
    b.build().unwrap()
}

fn tenants() -> Vec<TenantSpec> {
    let quota = ResourceVec::UNLIMITED;
    ["a", "b"]
        .iter()
        .map(|n| TenantSpec {
            name: n.to_string(),
            weight: 1.0,
            cohort: None,
            quota,
        })
        .collect()
}

/// A queue over a fleet of these pools, with tenants a and b.
fn queue(pools: &[PoolDef]) -> Scheduler {
    Scheduler::new(Engine::new(fleet(pools)), tenants(), SchedConfig::default()).unwrap()
}

fn job(tenant: u32, nodes: u32, placement: PlacementRule) -> JobSpec {
    JobSpec {
        tenant: TenantId(tenant),
        priority: PriorityClass::Research,
        gang: gang(nodes, 4, None),
        time_limit: 86_400,
        placement,
    }
}

fn preemptible() -> PlacementRule {
    PlacementRule {
        preemptible: true,
        ..PlacementRule::default()
    }
}

/// The pools a started job landed on.
fn pools_of(s: &Scheduler, decisions: &[Decision], id: WorkloadId) -> Vec<String> {
    let fleet = s.engine().fleet();
    let mut out: Vec<String> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Start { job, slots } if *job == id => Some(slots),
            _ => None,
        })
        .flatten()
        .map(|slot| fleet.pool(fleet.node(slot.node).pool).name.clone())
        .collect();
    out.dedup();
    out
}

fn standard() -> Vec<PoolDef> {
    let gpu = |cloud, region, pricing, price| PoolDef {
        cloud,
        region,
        pricing,
        price,
        domains: 1,
        trays: 2,
        hosts: 0,
    };
    vec![
        // p0: committed, already paid for.
        gpu("aws", "r1", PricingKind::Committed, 40.0),
        // p1: on-demand, $15 per GPU-hour.
        gpu("gcp", "r2", PricingKind::OnDemand, 60.0),
        // p2: spot, $5 per GPU-hour.
        gpu("aws", "r3", PricingKind::Spot, 20.0),
        // p3: one CPU host of 8,000 millicores at $8 an hour.
        PoolDef {
            cloud: "aws",
            region: "r1",
            pricing: PricingKind::OnDemand,
            price: 8.0,
            domains: 0,
            trays: 0,
            hosts: 1,
        },
    ]
}

#[test]
fn committed_first_then_cheapest_allowed_and_spend_is_exact() {
    let mut s = queue(&standard());
    // Tenant a fills the committed domain; b's ordinary job must pay on-demand (spot is
    // cheaper but it is not preemptible); b's preemptible job takes the spot trays.
    s.submit(WorkloadId(1), job(0, 2, PlacementRule::default()), 0)
        .unwrap();
    let d = s.schedule(0);
    assert_eq!(pools_of(&s, &d, WorkloadId(1)), ["p0"]);
    s.submit(WorkloadId(2), job(1, 1, PlacementRule::default()), 0)
        .unwrap();
    s.submit(WorkloadId(3), job(1, 1, preemptible()), 0)
        .unwrap();
    let d = s.schedule(0);
    assert_eq!(pools_of(&s, &d, WorkloadId(2)), ["p1"]);
    assert_eq!(pools_of(&s, &d, WorkloadId(3)), ["p2"]);
    // Four sandboxes of 1,000 millicores on the CPU host for b; two end at 30 min, two at 1 h.
    let req = SandboxRequest {
        count: 4,
        cpu_millis: 1_000,
        memory_mib: 1_024,
    };
    s.place_sandboxes(WorkloadId(9), Some(TenantId(1)), &req, 0, 0)
        .unwrap();
    s.end_sandboxes(WorkloadId(9), &[0, 1], 1_800).unwrap();
    s.end_sandboxes(WorkloadId(9), &[2, 3], 3_600).unwrap();
    s.finish(WorkloadId(1), 3_600).unwrap();
    s.finish(WorkloadId(2), 7_200).unwrap();
    s.finish(WorkloadId(3), 7_200).unwrap();
    s.check_invariants().unwrap();

    let r = s.spend(7_200);
    // Committed p0: 2 trays × $40 × 2 h = $160 paid, of which a used 1 h ($80).
    // On-demand p1: 1 tray × $60 × 2 h = $120 (b). Spot p2: 1 tray × $20 × 2 h = $40 (b).
    // CPU: (4 × 1,000 + 2 × 1,000) millicores × 1,800 s of an 8,000-millicore $8 host = $3.
    assert_eq!(r.total_usd(), 160.0 + 120.0 + 40.0 + 3.0);
    assert_eq!(r.idle_committed_usd(), 80.0);
    let by_tenant = r.by(|l| l.tenant.clone());
    assert_eq!(
        by_tenant
            .iter()
            .map(|(t, usd, _)| (t.clone(), *usd))
            .collect::<Vec<_>>(),
        [
            (None, 80.0),
            (Some("a".into()), 80.0),
            (Some("b".into()), 160.0 + 3.0)
        ]
    );
    let by_provider = r.by(|l| l.provider.clone());
    assert_eq!(by_provider[0].0, "aws");
    assert_eq!(by_provider[0].1, 160.0 + 40.0 + 3.0);
    assert_eq!(by_provider[1].1, 120.0);
    let sandboxes: f64 = r
        .lines
        .iter()
        .filter(|l| l.class == Some(SpendClass::Sandboxes))
        .map(|l| l.usd)
        .sum();
    assert_eq!(sandboxes, 3.0);
    // Node-hours: a held 2 committed trays for an hour.
    let a = r
        .lines
        .iter()
        .find(|l| l.tenant.as_deref() == Some("a"))
        .unwrap();
    assert_eq!(a.node_hours, 2.0);
    // A report is a view: asking again later adds only the idle committed time since.
    let later = s.spend(10_800);
    assert_eq!(later.total_usd() - r.total_usd(), 80.0);
}

#[test]
fn spend_is_split_at_midnight_and_undelivered_capacity_is_not_paid_for() {
    let mut s = queue(&standard());
    // The committed trays arrive only at 22:00 on day 0 (a capacity ramp).
    let committed: Vec<model::NodeId> = (0..s.engine().fleet().nodes().len() as u32)
        .map(model::NodeId)
        .filter(|n| s.engine().fleet().node(*n).pool.0 == 0)
        .collect();
    for n in &committed {
        s.set_delivered(*n, false, 0);
    }
    for n in &committed {
        s.set_delivered(*n, true, 79_200);
    }
    // An on-demand job from 23:00 to 01:00.
    s.submit(
        WorkloadId(1),
        job(
            0,
            1,
            PlacementRule {
                providers: vec!["gcp".into()],
                ..PlacementRule::default()
            },
        ),
        82_800,
    )
    .unwrap();
    let d = s.schedule(82_800);
    assert_eq!(pools_of(&s, &d, WorkloadId(1)), ["p1"], "pinned to gcp");
    s.finish(WorkloadId(1), 90_000).unwrap();
    let r = s.spend(2 * 86_400);
    let gcp = r.by(|l| l.provider.clone());
    let (_, usd, by_day) = gcp.iter().find(|(p, _, _)| p == "gcp").unwrap();
    assert_eq!(*usd, 120.0);
    assert_eq!(by_day, &vec![60.0, 60.0]);
    // Committed: 2 trays × $40 from 22:00 on day 0 (2 h), then all of day 1 (24 h).
    let idle: Vec<f64> = r
        .by(|l| l.class.is_none())
        .into_iter()
        .find(|(idle, _, _)| *idle)
        .unwrap()
        .2;
    assert_eq!(idle, vec![160.0, 1_920.0]);
}

#[test]
fn a_rule_that_leaves_no_room_says_so() {
    let mut s = queue(&standard());
    let rule = PlacementRule {
        exclude_providers: vec!["aws".into(), "gcp".into()],
        ..PlacementRule::default()
    };
    s.submit(WorkloadId(1), job(0, 1, rule), 0).unwrap();
    s.schedule(0);
    let why = s.pending_reason(WorkloadId(1)).unwrap();
    assert!(
        why.contains(
            "placement rule (not on aws, gcp; no spot capacity (not preemptible)) leaves no room"
        ),
        "{why}"
    );
    // A job of the same shape without the rule is not held back by it.
    s.submit(WorkloadId(2), job(0, 1, PlacementRule::default()), 0)
        .unwrap();
    let d = s.schedule(1);
    assert_eq!(pools_of(&s, &d, WorkloadId(2)), ["p0"]);
}

fn arb_pool() -> impl Strategy<Value = PoolDef> {
    (
        prop::sample::select(vec!["aws", "gcp", "azure"]),
        prop::sample::select(vec!["r1", "r2"]),
        prop::sample::select(vec![
            PricingKind::Committed,
            PricingKind::OnDemand,
            PricingKind::Spot,
        ]),
        1u32..100,
        1u32..3,
        1u32..5,
    )
        .prop_map(|(cloud, region, pricing, price, domains, trays)| PoolDef {
            cloud,
            region,
            pricing,
            price: f64::from(price),
            domains,
            trays,
            hosts: 0,
        })
}

fn arb_rule() -> impl Strategy<Value = PlacementRule> {
    let names = |v: Vec<&'static str>| {
        prop::sample::subsequence(v.clone(), 0..=v.len())
            .prop_map(|v| v.into_iter().map(String::from).collect::<Vec<_>>())
    };
    (
        names(vec!["aws", "gcp", "azure"]),
        names(vec!["aws", "gcp", "azure"]),
        names(vec!["r1", "r2"]),
        any::<bool>(),
    )
        .prop_map(|(providers, exclude, regions, preemptible)| PlacementRule {
            exclude_providers: exclude
                .into_iter()
                .filter(|p| !providers.contains(p))
                .collect(),
            providers,
            regions,
            exclude_regions: Vec::new(),
            preemptible,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every job lands only on pools its rule allows; a job that fits one domain lands on
    /// committed capacity whenever committed capacity its rule allows has room for it; the
    /// ledger always matches the engine; spend never goes down and idle committed spend never
    /// exceeds what committed capacity costs.
    #[test]
    fn placement_honours_rules_and_prefers_committed(
        pools in prop::collection::vec(arb_pool(), 1..6),
        jobs in prop::collection::vec((0u32..2, 1u32..5, arb_rule(), 1u64..4), 1..30),
    ) {
        let fleet = fleet(&pools);
        let mut s = Scheduler::new(Engine::new(fleet.clone()), tenants(), SchedConfig::default()).unwrap();
        let mut now = 0;
        let mut last_total = 0.0;
        let mut running: Vec<(WorkloadId, u64)> = Vec::new();
        for (i, (tenant, nodes, rule, hours)) in jobs.into_iter().enumerate() {
            now += 600;
            // Jobs whose time is up finish first.
            running.retain(|(id, end)| {
                if *end <= now {
                    s.finish(*id, now).unwrap();
                    false
                } else {
                    true
                }
            });
            // What a committed-only placement under the rule would find, before the pass.
            let committed_ok = |t: model::TopoId| {
                let first = fleet.topo_node(t).nodes.start;
                let p = fleet.pool(fleet.node(model::NodeId(first)).pool);
                p.pricing == PricingKind::Committed && rule.allows(p)
            };
            let spec = job(tenant, nodes, rule.clone());
            let fits_committed = s.engine().plan_gang_in(&spec.gang, &committed_ok).is_ok();
            let id = WorkloadId(i as u64 + 1);
            s.submit(id, spec, now).unwrap();
            let d = s.schedule(now);
            for dec in &d {
                if let Decision::Start { job, slots } = dec {
                    for slot in slots {
                        let p = fleet.pool(fleet.node(slot.node).pool);
                        let spec = &s.job(*job).unwrap().spec;
                        prop_assert!(spec.placement.allows(p), "{job} on {} against {:?}", p.name, spec.placement);
                    }
                }
            }
            let started = d.iter().any(|x| matches!(x, Decision::Start { job, .. } if *job == id));
            if started {
                running.push((id, now + hours * 3600));
                // Gangs no larger than the largest domain go in one domain, where every
                // placement is of equal topology quality and cost decides.
                let single = nodes <= pools.iter().map(|p| p.trays).max().unwrap_or(0);
                // Jobs queued earlier may start first in the same pass and take the room.
                let first = d.iter().find(|x| matches!(x, Decision::Start { .. }));
                let first = matches!(first, Some(Decision::Start { job, .. }) if *job == id);
                // A reservation for a job blocked earlier may hold the committed nodes: the
                // job then backfills elsewhere, as it must.
                let held = s.reservation().is_some();
                if fits_committed && single && first && !held {
                    for pool in pools_of(&s, &d, id) {
                        let p = fleet.pools().iter().find(|p| p.name == pool).unwrap();
                        prop_assert_eq!(p.pricing, PricingKind::Committed, "{} took {} though committed capacity had room", id, pool);
                    }
                }
            }
            s.check_invariants().map_err(TestCaseError::fail)?;
            let r = s.spend(now);
            prop_assert!(r.total_usd() + 1e-6 >= last_total);
            last_total = r.total_usd();
            let committed_cost: f64 = r.lines.iter().filter(|l| l.pricing == PricingKind::Committed).map(|l| l.usd).sum();
            prop_assert!(r.idle_committed_usd() <= committed_cost + 1e-6);
        }
    }
}

fn three_providers() -> Vec<PoolDef> {
    ["aws", "gcp", "oci"]
        .into_iter()
        .map(|cloud| PoolDef {
            cloud,
            region: "r1",
            pricing: PricingKind::Committed,
            price: 40.0,
            domains: 2,
            trays: 2,
            hosts: 0,
        })
        .collect()
}

/// The providers the service's running replicas are on, sorted.
fn replica_providers(s: &Scheduler) -> Vec<String> {
    let fleet = s.engine().fleet();
    let mut out: Vec<String> = s
        .running_jobs()
        .into_iter()
        .filter(|j| j.as_replica().is_some())
        .filter_map(|j| match s.engine().allocation(j) {
            Some(sched::Allocation::Gang { slots, .. }) => {
                Some(fleet.pool(fleet.node(slots[0].node).pool).cloud.clone())
            }
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn cloud(s: &Scheduler, name: &str) -> model::TopoId {
    let fleet = s.engine().fleet();
    (0..fleet.topo().len() as u32)
        .map(model::TopoId)
        .find(|t| {
            let n = fleet.topo_node(*t);
            n.kind == model::TopoKind::Cloud && &*n.name == name
        })
        .unwrap()
}

fn replicas(n: u32, min_providers: u32) -> model::ServiceSpec {
    model::ServiceSpec {
        tenant: TenantId(0),
        priority: PriorityClass::ProductionInference,
        replica: gang(2, 4, None),
        min_replicas: n,
        max_replicas: n,
        spread: None,
        placement: PlacementRule::default(),
        min_providers,
    }
}

#[test]
fn services_span_their_providers_and_fail_over_within_the_rule() {
    // Three replicas over three providers of two domains each.
    let mut s = queue(&three_providers());
    s.create_service(0, replicas(3, 3), 0).unwrap();
    s.schedule(0);
    assert_eq!(replica_providers(&s), ["aws", "gcp", "oci"]);
    // aws goes dark: its replica cannot go to gcp or oci (they hold one each and the rule
    // still wants three providers), so it waits and says why.
    let aws = cloud(&s, "aws");
    s.fail(sched::Scope::Subtree(aws), 60);
    s.schedule(60);
    s.check_invariants().unwrap();
    assert_eq!(replica_providers(&s), ["gcp", "oci"]);
    let waiting = s
        .pending_jobs()
        .into_iter()
        .find(|j| j.as_replica().is_some())
        .unwrap();
    let why = s.pending_reason(waiting).unwrap();
    assert!(
        why.contains("spans at least 3 providers; its replicas are on gcp, oci only"),
        "{why}"
    );

    // With two providers wanted, the lost replica moves at once to a provider's second
    // domain.
    let mut s = queue(&three_providers());
    s.create_service(0, replicas(2, 2), 0).unwrap();
    s.schedule(0);
    let before = replica_providers(&s);
    assert_eq!(before.len(), 2);
    assert_ne!(before[0], before[1], "two replicas, two providers");
    let lost = before[0].clone();
    let t = cloud(&s, &lost);
    s.fail(sched::Scope::Subtree(t), 60);
    s.schedule(60);
    s.check_invariants().unwrap();
    let after = replica_providers(&s);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_ne!(after[0], after[1], "still two providers: {after:?}");
    assert!(!after.contains(&lost));
}
