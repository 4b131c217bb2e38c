//! Unit gangs (prefill/decode replicas): several parts of different shapes placed all or
//! nothing, inside one NVLink domain when one holds them, else under one network node; and
//! services whose replicas are units scale by whole units.

#![allow(clippy::unwrap_used)]

mod common;

use common::{fleet, gang, tenant, Shape};
use model::{
    GangPart, GangRequest, GpuModel, NodeId, PlacementRule, PriorityClass, ServiceSpec, TenantId,
    WorkloadClass, WorkloadId,
};
use sched::{Allocation, Engine, EngineError, SchedConfig, Scheduler};

fn part(workers: u32, nodes_per_worker: u32, gpus: u8) -> GangPart {
    GangPart {
        nodes: workers * nodes_per_worker,
        gpus_per_node: gpus,
        cpu_millis_per_node: 1000,
        memory_mib_per_node: 1024,
        segment: nodes_per_worker,
    }
}

/// One prefill worker of 8 GPUs and two decode workers of 4, on nodes of `tray` GPUs.
fn prefill_decode(tray: u8) -> GangRequest {
    let prefill = if tray >= 8 {
        part(1, 1, 8)
    } else {
        part(1, 8 / u32::from(tray), tray)
    };
    GangRequest::unit(
        WorkloadClass::InferenceReplica,
        GpuModel::Gb200,
        vec![prefill, part(2, 1, 4)],
    )
}

fn domain_of(e: &Engine, n: NodeId) -> String {
    let name = &e.fleet().node(n).name;
    name[..name.find('t').unwrap()].to_string()
}

#[test]
fn a_unit_goes_inside_one_nvlink_domain_when_one_holds_it() {
    // Four domains of 18 trays of 4 GPUs (an NVL72 each).
    let shape = Shape {
        zones: 1,
        spines: 1,
        blocks: 2,
        domains: 2,
        trays: 18,
        gpus: 4,
        cpu_hosts: 0,
    };
    let mut e = Engine::new(fleet(shape));
    // Fill one domain partly: best fit puts the unit in the fullest domain that holds it.
    e.place_gang(WorkloadId(1), &gang(10, 4, None), 0).unwrap();
    let unit = prefill_decode(4);
    unit.validate().unwrap();
    let p = e.place_gang(WorkloadId(2), &unit, 0).unwrap();
    e.check_invariants().unwrap();
    // Part order: two prefill trays, then one tray per decode worker.
    assert_eq!(p.slots.len(), 4);
    let Some(Allocation::Gang { slots: first, .. }) = e.allocation(WorkloadId(1)) else {
        panic!("placed");
    };
    let busy = domain_of(&e, first[0].node);
    for s in &p.slots {
        assert_eq!(s.gpu_mask.count_ones(), 4);
        assert_eq!(
            domain_of(&e, s.node),
            busy,
            "not in the fullest domain that holds it"
        );
    }
    assert_eq!(p.quality.domains_spanned, 1);
    assert_eq!(p.quality.score, 1.0);
    // Released, capacity comes back exactly.
    e.release(WorkloadId(2)).unwrap();
    e.check_invariants().unwrap();
}

fn host_names(e: &Engine, p: &sched::GangPlacement) -> Vec<String> {
    p.slots
        .iter()
        .map(|s| e.fleet().node(s.node).name.to_string())
        .collect()
}

#[test]
fn a_unit_larger_than_a_host_goes_under_one_network_node_and_shares_hosts() {
    // Hosts of 8 GPUs, each its own NVLink domain, two per block, two blocks.
    let shape = Shape {
        zones: 1,
        spines: 1,
        blocks: 2,
        domains: 2,
        trays: 1,
        gpus: 8,
        cpu_hosts: 0,
    };
    let mut e = Engine::new(fleet(shape));
    let p = e.place_gang(WorkloadId(2), &prefill_decode(8), 0).unwrap();
    e.check_invariants().unwrap();
    let names = host_names(&e, &p);
    // One block; the prefill worker has a host to itself, the decode workers share the
    // other.
    assert_eq!(p.slots[0].gpu_mask.count_ones(), 8);
    assert!(names.iter().all(|n| n[..6] == names[0][..6]), "{names:?}");
    assert_ne!(names[0], names[1]);
    assert_eq!(names[1], names[2], "{names:?}");
    assert_eq!(p.slots[1].gpu_mask & p.slots[2].gpu_mask, 0);
    assert_eq!(p.quality.domains_spanned, 2);
    // The node lists each workload once, even where two of its workers share a node.
    assert_eq!(e.workloads_on(p.slots[1].node), [WorkloadId(2)]);
    // A release and a reinstate restore it exactly.
    let alloc = e.release(WorkloadId(2)).unwrap();
    e.reinstate(WorkloadId(2), alloc).unwrap();
    e.check_invariants().unwrap();
}

#[test]
fn a_unit_goes_to_the_block_with_the_least_room_that_holds_it() {
    // Three 8-GPU hosts per block; one host of block 0 half busy (20 GPUs free there, 24 in
    // block 1).
    let shape = Shape {
        zones: 1,
        spines: 1,
        blocks: 2,
        domains: 3,
        trays: 1,
        gpus: 8,
        cpu_hosts: 0,
    };
    let mut e = Engine::new(fleet(shape));
    e.place_gang(WorkloadId(1), &gang(1, 4, None), 0).unwrap();
    let Some(Allocation::Gang { slots: busy, .. }) = e.allocation(WorkloadId(1)).cloned() else {
        panic!("placed");
    };
    let p = e.place_gang(WorkloadId(2), &prefill_decode(8), 0).unwrap();
    e.check_invariants().unwrap();
    let names = host_names(&e, &p);
    let half = e.fleet().node(busy[0].node).name.to_string();
    assert!(
        names.iter().all(|n| n[..6] == half[..6]),
        "{names:?} vs {half}"
    );
    // The fullest host that takes a decode worker is the half-busy one.
    assert!(names[1..].contains(&half), "{names:?}");
}

#[test]
fn a_unit_is_placed_whole_or_not_at_all() {
    let shape = Shape {
        zones: 1,
        spines: 1,
        blocks: 1,
        domains: 1,
        trays: 1,
        gpus: 8,
        cpu_hosts: 0,
    };
    let mut e = Engine::new(fleet(shape));
    e.set_explanations(true);
    let Err(EngineError::Unplaceable(u)) = e.place_gang(WorkloadId(1), &prefill_decode(8), 0)
    else {
        panic!("one 8-GPU host cannot hold 16 GPUs");
    };
    assert!(u.reason.contains("16 GPUs"), "{}", u.reason);
    assert_eq!(e.live_workloads(), 0);
    e.check_invariants().unwrap();
    // A part larger than any node is refused with its number.
    let big = GangRequest::unit(
        WorkloadClass::InferenceReplica,
        GpuModel::Gb200,
        vec![part(1, 1, 4), part(1, 1, 16)],
    );
    let Err(EngineError::Unplaceable(u)) = e.place_gang(WorkloadId(2), &big, 0) else {
        panic!("no node has 16 GPUs");
    };
    assert!(u.reason.starts_with("part 2 asks 16 GPUs"), "{}", u.reason);
}

#[test]
fn unit_requests_are_checked() {
    let mut u = prefill_decode(4);
    u.nodes += 1;
    assert_eq!(u.validate().unwrap_err().field, "parts");
    let mut u = prefill_decode(4);
    u.parts[0].segment = 3;
    assert_eq!(u.validate().unwrap_err().field, "parts.segment");
    let mut u = prefill_decode(4);
    u.spares = 1;
    assert_eq!(u.validate().unwrap_err().field, "parts");
    let u = GangRequest::unit(
        WorkloadClass::InferenceReplica,
        GpuModel::Gb200,
        vec![part(1, 1, 4); GangRequest::MAX_PARTS + 1],
    );
    assert_eq!(u.validate().unwrap_err().field, "parts");
    assert_eq!(prefill_decode(4).total_gpus(), 16);
}

#[test]
fn a_service_of_units_scales_by_whole_units() {
    let shape = Shape {
        zones: 1,
        spines: 1,
        blocks: 2,
        domains: 2,
        trays: 18,
        gpus: 4,
        cpu_hosts: 0,
    };
    let mut s = Scheduler::new(
        Engine::new(fleet(shape)),
        vec![tenant("serve", 1.0, 10_000, None)],
        SchedConfig::default(),
    )
    .unwrap();
    let spec = ServiceSpec {
        tenant: TenantId(0),
        priority: PriorityClass::ProductionInference,
        replica: prefill_decode(4),
        min_replicas: 1,
        max_replicas: 10,
        spread: None,
        placement: PlacementRule::default(),
        min_providers: 0,
    };
    s.create_service(0, spec, 0).unwrap();
    s.schedule(0);
    s.scale_service(0, 5, 1).unwrap();
    s.schedule(1);
    s.check_invariants().unwrap();
    let units = |s: &Scheduler| -> Vec<Vec<NodeId>> {
        s.running_jobs()
            .into_iter()
            .filter_map(|j| match s.engine().allocation(j) {
                Some(Allocation::Gang { slots, .. }) => {
                    Some(slots.iter().map(|x| x.node).collect())
                }
                _ => None,
            })
            .collect()
    };
    let running = units(&s);
    assert_eq!(running.len(), 5);
    for u in &running {
        assert_eq!(u.len(), 4, "each replica is a whole unit");
        let e = s.engine();
        assert!(u.iter().all(|n| domain_of(e, *n) == domain_of(e, u[0])));
    }
    let used = |s: &Scheduler| {
        let (total, free) = s.engine().gpu_usage();
        total - free
    };
    assert_eq!(used(&s), 5 * 16);
    s.scale_service(0, 2, 2).unwrap();
    s.schedule(2);
    s.check_invariants().unwrap();
    assert_eq!(units(&s).len(), 2);
    assert_eq!(used(&s), 2 * 16);
}
