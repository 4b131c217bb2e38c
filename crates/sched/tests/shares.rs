//! GPU shares (`gpu_milli`): several pack onto one device with exact per-device accounting,
//! a device is whole again when its last share leaves, and single-node work chosen by a node
//! score (the fragmentation gradient keeps capacity usable where best fit does not).

#![allow(clippy::unwrap_used)]

mod common;

use common::{fleet, gang, Shape};
use model::{GangRequest, GpuModel, NodeId, WorkloadId};
use sched::{Engine, EngineError, MixShape, NodeScore, SharedDevice};

/// `hosts` single-host domains of `gpus` devices (144 CPUs each).
fn hosts(hosts: u32, gpus: u8) -> Engine {
    Engine::new(fleet(Shape {
        zones: 1,
        spines: 1,
        blocks: 1,
        domains: hosts,
        trays: 1,
        gpus,
        cpu_hosts: 0,
    }))
}

/// A research job of tenant 0.
fn research(gang: GangRequest, time_limit: u64) -> model::JobSpec {
    model::JobSpec {
        tenant: model::TenantId(0),
        priority: model::PriorityClass::Research,
        gang,
        time_limit,
        placement: Default::default(),
    }
}

/// A queue over two 4-GPU hosts with one tenant of `gpus` GPUs of quota.
fn queue(gpus: u64, config: sched::SchedConfig) -> sched::Scheduler {
    sched::Scheduler::new(
        hosts(2, 4),
        vec![common::tenant("t", 1.0, gpus, None)],
        config,
    )
    .unwrap()
}

fn share(milli: u16, cpu: u32) -> GangRequest {
    let mut g = gang(1, 1, None);
    g.gpu_milli = milli;
    g.cpu_millis_per_node = cpu;
    g
}

fn place(e: &mut Engine, id: u64, req: &GangRequest) -> (NodeId, u8) {
    let p = e.place_gang(WorkloadId(id), req, 0).unwrap();
    e.check_invariants().unwrap();
    let s = p.slots[0];
    (s.node, s.gpu_mask.trailing_zeros() as u8)
}

#[test]
fn shares_pack_onto_one_device_and_leave_it_whole() {
    let mut e = hosts(1, 8);
    let a = place(&mut e, 1, &share(300, 0));
    let b = place(&mut e, 2, &share(300, 0));
    let c = place(&mut e, 3, &share(300, 0));
    assert_eq!((a, b), (a, c), "three 0.3 shares share one device");
    assert_eq!(
        e.shared_devices(a.0),
        &[SharedDevice {
            device: a.1,
            used_milli: 900
        }]
    );
    // 0.2 does not fit the 0.1 left: a second device.
    let d = place(&mut e, 4, &share(200, 0));
    assert_ne!(d.1, a.1);
    // 0.1 fits the first device exactly (best fit: the tightest room).
    assert_eq!(place(&mut e, 5, &share(100, 0)), a);
    // Seven whole devices are not free now: two are shared.
    assert_eq!(e.node_free(a.0).0.count_ones(), 6);
    assert!(e.place_gang(WorkloadId(9), &gang(1, 7, None), 0).is_err());
    for id in [1, 2, 3, 5] {
        e.release(WorkloadId(id)).unwrap();
        e.check_invariants().unwrap();
    }
    assert_eq!(
        e.node_free(a.0).0.count_ones(),
        7,
        "the device is whole again"
    );
    e.release(WorkloadId(4)).unwrap();
    assert!(e.shared_devices(a.0).is_empty());
    e.place_gang(WorkloadId(9), &gang(1, 8, None), 0).unwrap();
    e.check_invariants().unwrap();
}

#[test]
fn usage_counts_thousandths() {
    let mut e = hosts(2, 4);
    assert_eq!(e.gpu_milli_usage(), (8000, 8000));
    place(&mut e, 1, &share(250, 0));
    place(&mut e, 2, &gang(1, 2, None));
    assert_eq!(e.gpu_milli_usage(), (8000, 8000 - 250 - 2000));
}

#[test]
fn a_share_needs_the_cpu_too() {
    let mut e = hosts(2, 8);
    let a = place(&mut e, 1, &share(500, 140_000));
    // Room on a's device but not the CPU: the next share goes to the other host.
    let b = place(&mut e, 2, &share(400, 10_000));
    assert_ne!(a.0, b.0);
}

#[test]
fn reinstating_a_share_needs_its_room_back() {
    let mut e = hosts(1, 1);
    place(&mut e, 1, &share(600, 0));
    let alloc = e.release(WorkloadId(1)).unwrap();
    place(&mut e, 2, &share(500, 0));
    let err = e.reinstate(WorkloadId(1), alloc.clone()).unwrap_err();
    assert!(matches!(err, EngineError::BadRelease { .. }), "{err}");
    e.check_invariants().unwrap();
    e.release(WorkloadId(2)).unwrap();
    e.reinstate(WorkloadId(1), alloc).unwrap();
    e.check_invariants().unwrap();
}

#[test]
fn bad_shares_are_refused_by_field() {
    for (milli, nodes, gpus) in [(1000, 1, 1), (500, 2, 1), (500, 1, 2)] {
        let mut g = gang(nodes, gpus, None);
        g.gpu_milli = milli;
        let err = g.validate().unwrap_err();
        assert_eq!(err.field, "gpu_milli", "{err}");
    }
    let mut g = share(500, 0);
    g.spares = 1;
    assert_eq!(g.validate().unwrap_err().field, "gpu_milli");
}

#[test]
fn no_room_for_a_share_is_explained() {
    let mut e = hosts(1, 1);
    place(&mut e, 1, &share(800, 0));
    let err = e.place_gang(WorkloadId(2), &share(300, 0), 0).unwrap_err();
    let EngineError::Unplaceable(u) = err else {
        panic!("{err}")
    };
    assert!(
        u.reason.contains("300/1000 of one GB200 GPU"),
        "{}",
        u.reason
    );
    e.check_invariants().unwrap();
}

/// Two 3-GPU hosts; a CPU-heavy job (1 GPU, 134 of 144 CPUs) sits on the first. Work of
/// 1 GPU and 4 CPUs is what arrives. A job of 1 GPU and 7 CPUs: best fit takes the fuller
/// first host and strands its last GPU (3 CPUs left); the fragmentation gradient sees that
/// and takes the other host.
#[test]
fn the_fragmentation_gradient_keeps_gpus_usable_where_best_fit_strands_them() {
    let mix = vec![MixShape {
        gpu: GpuModel::Gb200,
        gpus: 1,
        gpu_milli: 0,
        cpu_millis: 4_000,
        memory_mib: 0,
        weight: 1.0,
    }];
    let ask = |cpu| {
        let mut g = gang(1, 1, None);
        g.cpu_millis_per_node = cpu;
        g
    };
    let run = |score: NodeScore| {
        let mut e = hosts(2, 3);
        let hog = place(&mut e, 1, &ask(134_000)).0;
        e.set_node_score(score);
        let chosen = place(&mut e, 2, &ask(7_000)).0;
        (hog, chosen)
    };
    let (hog, fit) = run(NodeScore::BestFit);
    assert_eq!(fit, hog, "best fit packs onto the fuller host");
    let (hog, fgd) = run(NodeScore::Fragmentation(mix));
    assert_ne!(fgd, hog, "the gradient spares the host it would strand");
}

#[test]
fn every_score_places_whole_and_shared_work_on_open_nodes_only() {
    for score in [
        NodeScore::BestFit,
        NodeScore::Packing,
        NodeScore::DotProduct,
        NodeScore::Random { seed: 3 },
        NodeScore::Fragmentation(Vec::new()),
    ] {
        let mut e = hosts(3, 4);
        e.set_node_score(score.clone());
        e.hold(&[NodeId(0), NodeId(2)]);
        for id in 0..8 {
            let (n, _) = place(&mut e, id, &share(500, 0));
            assert_eq!(n, NodeId(1), "{score:?}");
        }
        assert!(e.place_gang(WorkloadId(99), &share(500, 0), 0).is_err());
        e.unhold(&[NodeId(0), NodeId(2)]);
        let (n, _) = place(&mut e, 100, &gang(1, 3, None));
        assert_ne!(n, NodeId(1), "{score:?}");
    }
}

#[test]
fn cpu_work_runs_beside_gpu_work_on_a_gpu_host() {
    let mut e = hosts(2, 4);
    // A host whose GPUs are all taken is the best place for CPU work: its CPU is idle.
    let full = place(&mut e, 1, &gang(1, 4, None)).0;
    let mut cpu = gang(1, 0, None);
    cpu.cpu_millis_per_node = 100_000;
    cpu.validate().unwrap();
    let (n, _) = place(&mut e, 2, &cpu);
    assert_eq!(n, full);
    let Some(sched::Allocation::Gang { slots, .. }) = e.allocation(WorkloadId(2)) else {
        panic!("placed")
    };
    assert_eq!(slots[0].gpu_mask, 0, "CPU work takes no device");
    // Not without CPU, and not on two nodes.
    cpu.cpu_millis_per_node = 0;
    assert_eq!(cpu.validate().unwrap_err().field, "gpus_per_node");
    let mut two = gang(2, 0, None);
    two.cpu_millis_per_node = 1000;
    assert_eq!(two.validate().unwrap_err().field, "gpus_per_node");
    e.release(WorkloadId(2)).unwrap();
    e.check_invariants().unwrap();
}

#[test]
fn the_queue_hands_the_engine_the_mix_of_the_jobs_it_holds() {
    use sched::{NodeScoring, SchedConfig};
    let config = SchedConfig {
        node_scoring: NodeScoring::PackedGradient,
        ..SchedConfig::default()
    };
    let mut s = queue(1000, config);
    let spec = |gang| research(gang, 3600);
    for id in 0..3 {
        s.submit(WorkloadId(id), spec(share(500, 1000)), 0).unwrap();
    }
    s.submit(WorkloadId(9), spec(gang(1, 2, None)), 0).unwrap();
    s.schedule(0);
    s.check_invariants().unwrap();
    let NodeScore::PackedGradient(mix) = s.engine().node_score() else {
        panic!("{:?}", s.engine().node_score())
    };
    // Two shapes: three half-GPU shares (weight 3 × 0.5) and one 2-GPU job (1 × 2).
    let weights: Vec<(u8, u16, f64)> = mix
        .iter()
        .map(|m| (m.gpus, m.gpu_milli, m.weight))
        .collect();
    assert_eq!(weights, [(0, 500, 1.5), (2, 0, 2.0)]);
    // Two shares pack onto one device, the third onto another.
    let devices: std::collections::BTreeSet<(u32, u32)> = (0..3)
        .map(|id| match s.engine().allocation(WorkloadId(id)) {
            Some(sched::Allocation::Gang { slots, .. }) => (slots[0].node.0, slots[0].gpu_mask),
            _ => panic!("w{id} runs"),
        })
        .collect();
    assert_eq!(devices.len(), 2, "{devices:?}");
    // When they end, the mix follows.
    for id in 0..3 {
        s.finish(WorkloadId(id), 10).unwrap();
    }
    s.schedule(10);
    s.check_invariants().unwrap();
    let NodeScore::PackedGradient(mix) = s.engine().node_score() else {
        panic!()
    };
    assert_eq!(mix.len(), 1);
}

#[test]
fn quotas_count_shares_in_thousandths() {
    use sched::SchedConfig;
    // A tenant with one GPU of quota: four quarter shares run, a fifth waits.
    let mut s = queue(1, SchedConfig::default());
    let spec = |gang| research(gang, 3600);
    for id in 0..5 {
        s.submit(WorkloadId(id), spec(share(250, 0)), 0).unwrap();
    }
    s.schedule(0);
    s.check_invariants().unwrap();
    let running = (0..5)
        .filter(|id| s.engine().allocation(WorkloadId(*id)).is_some())
        .count();
    assert_eq!(running, 4);
    let report = &s.tenant_report()[0];
    assert_eq!(report.gpu_milli_in_use, 1000);
    assert_eq!(report.usage.gpus[GpuModel::Gb200.index()], 1);
    let why = s.pending_reason_for(WorkloadId(4), None).unwrap();
    assert!(
        why.contains("would use 1.25 GB200 GPUs, quota is 1"),
        "{why}"
    );
}

#[test]
fn a_share_pays_for_its_share_and_loses_only_its_share() {
    use sched::cost::SpendClass;
    use sched::{Decision, SchedConfig, Scheduler, Scope};
    // Two 4-GPU hosts at 1 USD an hour each: a GPU-hour is 0.25 USD.
    let mut s = queue(1000, SchedConfig::default());
    let spec = |gang| research(gang, 7200);
    s.submit(WorkloadId(1), spec(share(250, 0)), 0).unwrap();
    s.submit(WorkloadId(2), spec(gang(1, 1, None)), 0).unwrap();
    // CPU work on a GPU host uses CPU the devices' work left: it is charged nothing.
    let mut cpu = gang(1, 0, None);
    cpu.cpu_millis_per_node = 72_000;
    s.submit(WorkloadId(3), spec(cpu), 0).unwrap();
    s.schedule(0);
    s.check_invariants().unwrap();
    for id in 1..=3 {
        assert!(
            s.engine().allocation(WorkloadId(id)).is_some(),
            "w{id} runs"
        );
    }
    let training = |s: &Scheduler, at| -> f64 {
        s.spend(at)
            .lines
            .iter()
            .filter(|l| l.class == Some(SpendClass::Training))
            .map(|l| l.usd)
            .sum()
    };
    // An hour: a quarter GPU and one GPU.
    let want = 0.25 * (0.25 + 1.0);
    assert!(
        (training(&s, 3600) - want).abs() < 1e-9,
        "{}",
        training(&s, 3600)
    );
    // The whole fleet is committed: what no work held is idle, and all of it adds up.
    let total = s.spend(3600).total_usd();
    assert!((total - 2.0).abs() < 1e-9, "{total}");
    // The share's host fails after an hour: an hour of a quarter GPU is lost.
    let Some(sched::Allocation::Gang { slots, .. }) = s.engine().allocation(WorkloadId(1)) else {
        panic!("placed")
    };
    let node = slots[0].node;
    let lost: f64 = s
        .fail(Scope::Node(node), 3600)
        .iter()
        .filter_map(|d| match d {
            Decision::Requeue {
                job: WorkloadId(1),
                lost_gpu_hours,
            } => Some(*lost_gpu_hours),
            _ => None,
        })
        .sum();
    assert!((lost - 0.25).abs() < 1e-9, "{lost}");
    s.check_invariants().unwrap();
}
