//! Property tests of the engine's invariants over random fleets and random operation
//! sequences: no over-commit, gangs whole or not at all, failed attempts change nothing,
//! determinism, and release restoring capacity exactly.

#![allow(clippy::unwrap_used)]

mod common;

use common::{fleet, gang, Shape};
use model::{
    GangPart, GangRequest, GpuModel, NodeId, NodeState, SandboxRequest, TopoId, WorkloadId,
};
use proptest::prelude::*;
use sched::{Allocation, Engine, EngineError, MixShape, NodeScore, Scope, SharedDevice};

#[derive(Clone, Debug)]
enum Op {
    Hold {
        first: u32,
        len: u32,
        lift: bool,
    },
    ReleaseAndReinstate {
        pick: usize,
    },
    Gang {
        nodes: u32,
        gpn: u8,
        segment: Option<u32>,
        spares: u32,
    },
    /// A share of one GPU, with CPU.
    Share {
        milli: u16,
        cpu: u32,
    },
    /// How single-node work is scored from now on (0 best fit, 1 fragmentation, 2 packing,
    /// 3 dot product, 4 random).
    Score {
        pick: u8,
    },
    /// A unit gang: (workers, nodes per worker, GPUs per node, CPU per node) per part.
    Unit {
        parts: Vec<(u32, u32, u8, u32)>,
    },
    FailAndReplace {
        pick: usize,
        slot: usize,
    },
    FailAndRelocate {
        pick: usize,
        run: usize,
    },
    Sandboxes {
        count: u32,
        cpu: u32,
        mem: u32,
    },
    Release {
        pick: usize,
    },
    EndSandboxes {
        pick: usize,
        take: u32,
    },
    State {
        node: bool,
        target: u32,
        state: NodeState,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..40, 1u8..=5, proptest::option::of(1u32..8), 0u32..3)
            .prop_map(|(nodes, gpn, segment, spares)| Op::Gang { nodes, gpn, segment, spares }),
        2 => proptest::collection::vec((1u32..4, 1u32..3, 1u8..=4, 0u32..3000), 1..4)
            .prop_map(|parts| Op::Unit { parts }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(pick, slot)| Op::FailAndReplace { pick, slot }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(pick, run)| Op::FailAndRelocate { pick, run }),
        2 => (1u32..200, 1u32..4000, 1u32..9000)
            .prop_map(|(count, cpu, mem)| Op::Sandboxes { count, cpu, mem }),
        3 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => (any::<usize>(), 1u32..20).prop_map(|(pick, take)| Op::EndSandboxes { pick, take }),
        1 => (any::<bool>(), any::<u32>(), prop_oneof![
                Just(NodeState::Ready), Just(NodeState::Cordoned),
                Just(NodeState::Draining), Just(NodeState::Down)])
            .prop_map(|(node, target, state)| Op::State { node, target, state }),
        1 => (any::<u32>(), 1u32..10, any::<bool>())
            .prop_map(|(first, len, lift)| Op::Hold { first, len, lift }),
        1 => any::<usize>().prop_map(|pick| Op::ReleaseAndReinstate { pick }),
        3 => (0u16..1000, 0u32..50_000).prop_map(|(milli, cpu)| Op::Share { milli, cpu }),
        1 => (0u8..5).prop_map(|pick| Op::Score { pick }),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        1u32..=2,
        1u32..=2,
        1u32..=2,
        1u32..=3,
        1u32..=5,
        1u8..=4,
        0u32..=4,
    )
        .prop_map(
            |(zones, spines, blocks, domains, trays, gpus, cpu_hosts)| Shape {
                zones,
                spines,
                blocks,
                domains,
                trays,
                gpus,
                cpu_hosts,
            },
        )
}

/// Everything observable about capacity: free resources of every node and live ids.
type Snapshot = (Vec<(u32, u32, u32)>, Vec<Vec<SharedDevice>>, usize);

fn snapshot(e: &Engine) -> Snapshot {
    let nodes = 0..e.fleet().nodes().len() as u32;
    let free = nodes.clone().map(|n| e.node_free(NodeId(n))).collect();
    let shared = nodes
        .map(|n| e.shared_devices(NodeId(n)).to_vec())
        .collect();
    (free, shared, e.live_workloads())
}

fn score(pick: u8) -> NodeScore {
    let shape = |gpus, gpu_milli, cpu_millis, weight| MixShape {
        gpu: GpuModel::Gb200,
        gpus,
        gpu_milli,
        cpu_millis,
        memory_mib: 0,
        weight,
    };
    match pick {
        0 => NodeScore::BestFit,
        1 => NodeScore::Fragmentation(vec![
            shape(0, 300, 1000, 2.0),
            shape(0, 700, 0, 1.0),
            shape(1, 0, 8000, 1.0),
            shape(4, 0, 0, 0.5),
        ]),
        2 => NodeScore::Packing,
        3 => NodeScore::DotProduct,
        _ => NodeScore::Random { seed: 7 },
    }
}

fn live_ids(e: &Engine, next: u64) -> Vec<WorkloadId> {
    (0..next)
        .map(WorkloadId)
        .filter(|id| e.allocation(*id).is_some())
        .collect()
}

/// Applies one op; returns a printable outcome (for determinism checks).
fn apply(e: &mut Engine, op: &Op, next: &mut u64) -> String {
    match op {
        Op::FailAndRelocate { pick, run } => {
            let batches: Vec<WorkloadId> = live_ids(e, *next)
                .into_iter()
                .filter(|id| matches!(e.allocation(*id), Some(Allocation::Sandboxes { .. })))
                .collect();
            if batches.is_empty() {
                return "nothing".into();
            }
            let id = batches[pick % batches.len()];
            let Some(Allocation::Sandboxes {
                runs, live_count, ..
            }) = e.allocation(id).cloned()
            else {
                unreachable!()
            };
            let from = runs[run % runs.len()].node;
            e.set_state(Scope::Node(from), NodeState::Down);
            let before = snapshot(e);
            match e.relocate_sandboxes(id, from) {
                Ok(moved) => {
                    let Some(Allocation::Sandboxes {
                        runs,
                        live,
                        live_count: after,
                        ..
                    }) = e.allocation(id)
                    else {
                        unreachable!()
                    };
                    assert_eq!(*after, live_count, "relocation keeps every live sandbox");
                    for r in runs.iter().filter(|r| r.node == from) {
                        for i in r.first..r.first + r.count {
                            assert_eq!(
                                live[i as usize / 64] >> (i % 64) & 1,
                                0,
                                "a live sandbox stayed on the failed host"
                            );
                        }
                    }
                    format!("moved {moved}")
                }
                Err(err) => {
                    assert_eq!(snapshot(e), before, "a refused relocation changes nothing");
                    format!("{err}")
                }
            }
        }
        Op::FailAndReplace { pick, slot } => {
            let gangs: Vec<WorkloadId> = live_ids(e, *next)
                .into_iter()
                .filter(|id| matches!(e.allocation(*id), Some(Allocation::Gang { .. })))
                .collect();
            if gangs.is_empty() {
                return "nothing".into();
            }
            let id = gangs[pick % gangs.len()];
            let Some(Allocation::Gang { slots, spares, .. }) = e.allocation(id).cloned() else {
                unreachable!()
            };
            let failed = slots[slot % slots.len()].node;
            e.set_state(Scope::Node(failed), NodeState::Down);
            match e.replace_with_spare(id, failed) {
                Ok(new) => {
                    // Same domain, the rest of the gang unmoved, one spare fewer.
                    let f = e.fleet();
                    assert_eq!(f.domain_of(new.node), f.domain_of(failed));
                    let Some(Allocation::Gang {
                        slots: now_slots,
                        spares: now_spares,
                        ..
                    }) = e.allocation(id)
                    else {
                        unreachable!()
                    };
                    assert_eq!(now_spares.len() + 1, spares.len());
                    let moved = slots.iter().zip(now_slots).filter(|(a, b)| a != b).count();
                    assert_eq!(moved, 1, "only the failed slot changes");
                    format!("replaced {failed:?} by {new:?}")
                }
                Err(err) => {
                    let Some(Allocation::Gang {
                        slots: now_slots, ..
                    }) = e.allocation(id)
                    else {
                        unreachable!()
                    };
                    assert_eq!(&slots, now_slots, "a refused replacement changes nothing");
                    format!("{err}")
                }
            }
        }
        Op::Gang {
            nodes,
            gpn,
            segment,
            spares,
        } => {
            let id = WorkloadId(*next);
            *next += 1;
            let mut req = gang(*nodes, *gpn, *segment);
            req.spares = *spares;
            let before = snapshot(e);
            match e.place_gang(id, &req, 7) {
                Ok(p) => {
                    // Whole: one slot per node, no node twice, right device count.
                    assert_eq!(p.slots.len() as u32, *nodes);
                    assert_eq!(p.spares.len() as u32, *spares);
                    let used: Vec<_> = p
                        .slots
                        .iter()
                        .map(|s| e.fleet().domain_of(s.node))
                        .collect();
                    for sp in &p.spares {
                        assert!(
                            used.contains(&e.fleet().domain_of(sp.node)),
                            "spare outside the gang's domains"
                        );
                        assert!(
                            p.slots.iter().all(|s| s.node != sp.node),
                            "spare is also active"
                        );
                    }
                    let mut ns: Vec<u32> = p.slots.iter().map(|s| s.node.0).collect();
                    ns.sort_unstable();
                    ns.dedup();
                    assert_eq!(ns.len() as u32, *nodes, "a node appears twice in a gang");
                    for s in &p.slots {
                        assert_eq!(s.gpu_mask.count_ones(), u32::from(*gpn));
                    }
                    // Topology: a gang that fits one domain is in one domain; never across zones.
                    let f = e.fleet();
                    let domains: Vec<TopoId> =
                        p.slots.iter().filter_map(|s| f.domain_of(s.node)).collect();
                    let zones: Vec<_> = domains.iter().map(|d| f.zone_of(*d)).collect();
                    assert!(zones.windows(2).all(|w| w[0] == w[1]), "gang spans zones");
                    let domain_size = f.topo_node(domains[0]).nodes.len() as u32;
                    if segment.is_none() && *nodes <= domain_size {
                        assert!(domains.windows(2).all(|w| w[0] == w[1]), "gang split");
                    }
                    // Each segment lies in one domain: per-domain counts can be cut into segments.
                    let seg = segment
                        .unwrap_or(if *nodes <= domain_size {
                            *nodes
                        } else {
                            domain_size
                        })
                        .min(*nodes);
                    let mut counts: Vec<u32> = Vec::new();
                    let mut sorted = domains.clone();
                    sorted.sort();
                    for w in sorted.chunk_by(|a, b| a == b) {
                        counts.push(w.len() as u32);
                    }
                    let full: u32 = counts.iter().map(|c| c / seg).sum();
                    assert!(full >= nodes / seg, "segments broken: {counts:?} seg {seg}");
                    assert!(p.quality.score > 0.0 && p.quality.score <= 1.0);
                    format!("gang ok {:?}", p.slots)
                }
                Err(EngineError::Unplaceable(u)) => {
                    assert!(!u.reason.is_empty());
                    assert_eq!(snapshot(e), before, "failed gang changed state");
                    format!("gang no {}", u.reason)
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        Op::Score { pick } => {
            e.set_node_score(score(*pick));
            format!("score {pick}")
        }
        Op::Share { milli, cpu } => {
            let id = WorkloadId(*next);
            *next += 1;
            // Milli 0: CPU work on a GPU host (with at least some CPU).
            let mut req = gang(1, u8::from(*milli > 0), None);
            req.gpu_milli = *milli;
            req.cpu_millis_per_node = (*cpu).max(u32::from(*milli == 0));
            req.validate().unwrap();
            let before = snapshot(e);
            match e.place_gang(id, &req, 7) {
                Ok(p) => {
                    assert_eq!(p.slots.len(), 1);
                    let s = p.slots[0];
                    if req.is_cpu_only() {
                        assert_eq!(s.gpu_mask, 0, "CPU work takes no device");
                        return format!("cpu ok {:?}", p.slots);
                    }
                    assert_eq!(s.gpu_mask.count_ones(), 1, "a share takes one device");
                    let device = s.gpu_mask.trailing_zeros() as u8;
                    let on = e.shared_devices(s.node);
                    assert!(
                        on.iter()
                            .any(|d| d.device == device && d.used_milli >= *milli),
                        "the share's device is not marked shared"
                    );
                    format!("share ok {:?}", p.slots)
                }
                Err(EngineError::Unplaceable(u)) => {
                    assert!(!u.reason.is_empty());
                    assert_eq!(snapshot(e), before, "failed share changed state");
                    format!("share no {}", u.reason)
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        Op::Unit { parts } => {
            let id = WorkloadId(*next);
            *next += 1;
            let req = GangRequest::unit(
                Default::default(),
                GpuModel::Gb200,
                parts
                    .iter()
                    .map(|&(workers, seg, gpus, cpu)| GangPart {
                        nodes: workers * seg,
                        gpus_per_node: gpus,
                        cpu_millis_per_node: cpu,
                        memory_mib_per_node: 0,
                        segment: seg,
                    })
                    .collect(),
            );
            req.validate().unwrap();
            let before = snapshot(e);
            match e.place_gang(id, &req, 7) {
                Ok(p) => {
                    // Whole, in part order; each worker's nodes distinct and in one domain;
                    // everything in one domain or under one network node, never across zones.
                    assert_eq!(p.slots.len() as u32, req.nodes);
                    let f = e.fleet();
                    let mut at = 0;
                    for part in &req.parts {
                        for w in p.slots[at..at + part.nodes as usize].chunks(part.segment as usize)
                        {
                            for s in w {
                                assert_eq!(s.gpu_mask.count_ones(), u32::from(part.gpus_per_node));
                                assert_eq!(
                                    f.domain_of(s.node),
                                    f.domain_of(w[0].node),
                                    "a worker spans domains"
                                );
                            }
                            let mut ns: Vec<u32> = w.iter().map(|s| s.node.0).collect();
                            ns.sort_unstable();
                            ns.dedup();
                            assert_eq!(ns.len(), w.len(), "a worker's nodes repeat");
                        }
                        at += part.nodes as usize;
                    }
                    let zone = |n: NodeId| f.node(n).name.chars().take(2).collect::<String>();
                    assert!(
                        p.slots
                            .iter()
                            .all(|s| zone(s.node) == zone(p.slots[0].node)),
                        "a unit spans zones"
                    );
                    format!("unit ok {:?}", p.slots)
                }
                Err(EngineError::Unplaceable(u)) => {
                    assert_eq!(snapshot(e), before, "failed unit changed state");
                    format!("unit no {}", u.reason)
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        Op::Sandboxes { count, cpu, mem } => {
            let id = WorkloadId(*next);
            *next += 1;
            let req = SandboxRequest {
                count: *count,
                cpu_millis: *cpu,
                memory_mib: *mem,
            };
            let before = snapshot(e);
            match e.place_sandboxes(id, &req, 7) {
                Ok(p) => {
                    let placed: u32 = p.runs.iter().map(|r| r.count).sum();
                    assert_eq!(placed, *count);
                    format!("sb ok {:?}", p.runs)
                }
                Err(_) => {
                    assert_eq!(snapshot(e), before, "failed batch changed state");
                    "sb no".into()
                }
            }
        }
        Op::Release { pick } => {
            let ids = live_ids(e, *next);
            if ids.is_empty() {
                return "nothing".into();
            }
            let id = ids[pick % ids.len()];
            e.release(id)
                .map(|_| format!("released {id}"))
                .unwrap_or_else(|x| x.to_string())
        }
        Op::EndSandboxes { pick, take } => {
            let batches: Vec<WorkloadId> = live_ids(e, *next)
                .into_iter()
                .filter(|id| matches!(e.allocation(*id), Some(Allocation::Sandboxes { .. })))
                .collect();
            if batches.is_empty() {
                return "nothing".into();
            }
            let id = batches[pick % batches.len()];
            let Some(Allocation::Sandboxes { live, request, .. }) = e.allocation(id) else {
                unreachable!()
            };
            let idx: Vec<u32> = (0..request.count)
                .filter(|i| live[*i as usize / 64] >> (i % 64) & 1 == 1)
                .take(*take as usize)
                .collect();
            format!("{:?}", e.release_sandboxes(id, &idx))
        }
        Op::Hold { first, len, lift } => {
            let n = e.fleet().nodes().len() as u32;
            let nodes: Vec<NodeId> = (0..*len).map(|i| NodeId((first % n + i) % n)).collect();
            if *lift {
                e.unhold(&nodes);
            } else {
                e.hold(&nodes);
            }
            format!("hold {nodes:?} {lift}")
        }
        Op::ReleaseAndReinstate { pick } => {
            let ids = live_ids(e, *next);
            if ids.is_empty() {
                return "nothing".into();
            }
            let id = ids[pick % ids.len()];
            let before = snapshot(e);
            let alloc = e.release(id).expect("live");
            e.reinstate(id, alloc)
                .expect("reinstate right after release");
            assert_eq!(snapshot(e), before, "release + reinstate changed state");
            let again = e.allocation(id).cloned().expect("live");
            assert!(e.reinstate(id, again).is_err());
            format!("reinstated {id}")
        }
        Op::State {
            node,
            target,
            state,
        } => {
            let scope = if *node {
                Scope::Node(NodeId(target % e.fleet().nodes().len() as u32))
            } else {
                Scope::Subtree(TopoId(target % e.fleet().topo().len() as u32))
            };
            format!("{:?}", e.set_state(scope, *state))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_every_invariant(shape in shape(), ops in proptest::collection::vec(op(), 1..60)) {
        let mut e = Engine::new(fleet(shape));
        let mut next = 0;
        for op in &ops {
            // Determinism: a clone given the same op decides the same.
            let mut twin = e.clone();
            let mut twin_next = next;
            let a = apply(&mut e, op, &mut next);
            let b = apply(&mut twin, op, &mut twin_next);
            prop_assert_eq!(a, b);
            if let Err(v) = e.check_invariants() {
                return Err(TestCaseError::fail(format!("after {op:?}: {v}")));
            }
        }
    }

    #[test]
    fn releasing_everything_restores_the_empty_fleet(shape in shape(), ops in proptest::collection::vec(op(), 1..40)) {
        let mut e = Engine::new(fleet(shape));
        let empty = snapshot(&e);
        let mut next = 0;
        for op in ops
            .iter()
            .filter(|o| !matches!(o, Op::State { .. } | Op::Hold { .. }))
        {
            apply(&mut e, op, &mut next);
        }
        for id in live_ids(&e, next) {
            e.release(id).expect("live id releases");
        }
        prop_assert_eq!(snapshot(&e), empty);
        prop_assert!(e.check_invariants().is_ok());
    }

    #[test]
    fn place_then_release_is_exact(shape in shape(), prefix in proptest::collection::vec(op(), 0..20), nodes in 1u32..20, gpn in 1u8..=4) {
        let mut e = Engine::new(fleet(shape));
        let mut next = 0;
        for op in &prefix {
            apply(&mut e, op, &mut next);
        }
        let before = snapshot(&e);
        let id = WorkloadId(1_000_000);
        if e.place_gang(id, &gang(nodes, gpn, None), 0).is_ok() {
            e.release(id).expect("release");
        }
        prop_assert_eq!(snapshot(&e), before);
    }
}

#[test]
fn duplicate_ids_are_refused_without_change() {
    let mut e = Engine::new(fleet(Shape {
        zones: 1,
        spines: 1,
        blocks: 1,
        domains: 2,
        trays: 2,
        gpus: 4,
        cpu_hosts: 1,
    }));
    e.place_gang(WorkloadId(1), &gang(1, 4, None), 0)
        .expect("first");
    let before = snapshot(&e);
    assert_eq!(
        e.place_gang(WorkloadId(1), &gang(1, 4, None), 0)
            .unwrap_err(),
        EngineError::DuplicateWorkload(WorkloadId(1))
    );
    assert_eq!(snapshot(&e), before);
}
