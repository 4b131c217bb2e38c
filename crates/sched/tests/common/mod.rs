//! Test fleets, tenants and a tiny scenario language shared by the engine's and the queue's
//! tests.

#![allow(dead_code)]

pub mod queue_script;

use model::fleet::Location;
use model::{
    CapacityPool, Fleet, FleetBuilder, GangRequest, GpuModel, NodeState, PricingKind, ResourceVec,
    Resources, SandboxRequest, TenantSpec, WorkloadId,
};
use sched::{Engine, EngineError, Scope};
use std::fmt::Write as _;

/// Shape of a synthetic test fleet.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub zones: u32,
    pub spines: u32,
    pub blocks: u32,
    pub domains: u32,
    pub trays: u32,
    pub gpus: u8,
    pub cpu_hosts: u32,
}

pub const GB200_TRAY: Resources = Resources {
    gpu_model: Some(GpuModel::Gb200),
    gpus: 4,
    cpu_millis: 144_000,
    memory_mib: 983_040,
    disk_gib: 0,
};

pub fn fleet(shape: Shape) -> Fleet {
    let mut b = FleetBuilder::new();
    let gpu_pool = b
        .add_pool(CapacityPool {
            name: "gpu".into(),
            cloud: "aws".into(),
            region: "r".into(),
            instance_type: "p6e-gb200.36xlarge".into(),
            pricing: PricingKind::Committed,
            price_per_hour: 1.0,
        })
        .expect("pool");
    let cpu_pool = b
        .add_pool(CapacityPool {
            name: "cpu".into(),
            cloud: "aws".into(),
            region: "r".into(),
            instance_type: "m7i.48xlarge".into(),
            pricing: PricingKind::OnDemand,
            price_per_hour: 1.0,
        })
        .expect("pool");
    let mut cap = GB200_TRAY;
    cap.gpus = shape.gpus;
    for z in 0..shape.zones {
        for s in 0..shape.spines {
            for bl in 0..shape.blocks {
                for d in 0..shape.domains {
                    let loc = Location {
                        zone: format!("z{z}"),
                        network: vec![format!("s{s}"), format!("b{bl}")],
                        domain: Some(format!("d{d}")),
                    };
                    for t in 0..shape.trays {
                        let name = format!("z{z}s{s}b{bl}d{d}t{t}");
                        b.add_node(&name, gpu_pool, &loc, cap, NodeState::Ready)
                            .expect("node");
                    }
                }
            }
        }
        for h in 0..shape.cpu_hosts {
            let loc = Location {
                zone: format!("z{z}"),
                network: vec!["cpu".into()],
                domain: None,
            };
            let res = Resources {
                gpu_model: None,
                gpus: 0,
                cpu_millis: 8_000,
                memory_mib: 16_384,
                disk_gib: 0,
            };
            b.add_node(
                &format!("z{z}cpu{h}"),
                cpu_pool,
                &loc,
                res,
                NodeState::Ready,
            )
            .expect("node");
        }
    }
    b.build().expect("fleet")
}

pub fn gang(nodes: u32, gpus_per_node: u8, segment: Option<u32>) -> GangRequest {
    GangRequest {
        class: Default::default(),
        gpu: GpuModel::Gb200,
        nodes,
        gpus_per_node,
        cpu_millis_per_node: 0,
        memory_mib_per_node: 0,
        segment,
        spares: 0,
        parts: Vec::new(),
        gpu_milli: 0,
        models: Vec::new(),
    }
}

/// Runs a scenario script against an engine and renders every decision, one line each.
///
/// Lines: `gang ID nodes=N gpn=G [segment=S]`, `sandboxes ID count=N cpu=M mem=M`,
/// `release ID`, `end ID INDEX..`, `cordon PATH`, `down PATH`, `ready PATH`.
pub fn run_script(engine: &mut Engine, script: &str) -> String {
    let mut out = String::new();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |key: &str| {
            words
                .iter()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .map(|v| v.parse::<u32>().expect("number"))
        };
        let id = || WorkloadId(words[1].parse().expect("id"));
        let res = match words[0] {
            "gang" => {
                let req = gang(
                    arg("nodes").expect("nodes"),
                    arg("gpn").unwrap_or(4) as u8,
                    arg("segment"),
                );
                engine.place_gang(id(), &req, 0).map(|p| {
                    let mut names: Vec<&str> = p
                        .slots
                        .iter()
                        .map(|s| &*engine.fleet().node(s.node).name)
                        .collect();
                    names.sort_unstable();
                    let masks: Vec<String> =
                        p.slots.iter().map(|s| format!("{:b}", s.gpu_mask)).collect();
                    format!(
                        "placed {} under {} (domains {}/{} min, levels {}/{} min, score {:.2}) masks {}",
                        model::hostlist::compress(&names),
                        p.quality.common_ancestor,
                        p.quality.domains_spanned,
                        p.quality.min_domains,
                        p.quality.levels_spanned,
                        p.quality.min_levels,
                        p.quality.score,
                        masks.join(",")
                    )
                })
            }
            "sandboxes" => {
                let req = SandboxRequest {
                    count: arg("count").expect("count"),
                    cpu_millis: arg("cpu").expect("cpu"),
                    memory_mib: arg("mem").expect("mem"),
                };
                engine.place_sandboxes(id(), &req, 0).map(|p| {
                    let runs: Vec<String> = p
                        .runs
                        .iter()
                        .map(|r| format!("{}x{}", engine.fleet().node(r.node).name, r.count))
                        .collect();
                    format!("placed {}", runs.join(" "))
                })
            }
            "release" => engine.release(id()).map(|_| "released".to_string()),
            "end" => {
                let idx: Vec<u32> = words[2..]
                    .iter()
                    .map(|w| w.parse().expect("index"))
                    .collect();
                engine
                    .release_sandboxes(id(), &idx)
                    .map(|n| format!("ended {n}"))
            }
            "cordon" | "down" | "ready" => {
                let state = match words[0] {
                    "cordon" => NodeState::Cordoned,
                    "down" => NodeState::Down,
                    _ => NodeState::Ready,
                };
                let scope = match engine.fleet().node_by_name(words[1]) {
                    Some(n) => Scope::Node(n),
                    None => Scope::Subtree(engine.fleet().find_topo(words[1]).expect("path")),
                };
                let c = engine.set_state(scope, state);
                let ids: Vec<String> = c.affected.iter().map(|w| w.to_string()).collect();
                Ok(format!(
                    "{} nodes changed; affected [{}]",
                    c.nodes_changed,
                    ids.join(" ")
                ))
            }
            other => panic!("unknown scenario command {other}"),
        };
        let text = match res {
            Ok(t) => t,
            Err(EngineError::Unplaceable(u)) => {
                let mut t = format!("UNPLACEABLE: {}", u.reason);
                for d in &u.details {
                    let _ = write!(t, "\n    - {d}");
                }
                t
            }
            Err(e) => format!("ERROR: {e}"),
        };
        engine
            .check_invariants()
            .expect("invariants after a scenario step");
        let _ = writeln!(out, "{line}\n  => {text}");
    }
    out
}

/// 1 zone, 2 spines × 2 blocks × 2 domains of 4 trays (4 GPUs): 32 trays, 128 GPUs.
pub const SMALL: Shape = Shape {
    zones: 1,
    spines: 2,
    blocks: 2,
    domains: 2,
    trays: 4,
    gpus: 4,
    cpu_hosts: 0,
};

pub fn quota(gpus: u64) -> ResourceVec {
    let mut q = ResourceVec {
        cpu_millis: model::ResourceVec::UNLIMITED_AMOUNT,
        memory_mib: model::ResourceVec::UNLIMITED_AMOUNT,
        ..ResourceVec::default()
    };
    q.gpus[GpuModel::Gb200.index()] = gpus;
    q
}

pub fn tenant(name: &str, weight: f64, gpus: u64, cohort: Option<&str>) -> TenantSpec {
    TenantSpec {
        name: name.into(),
        weight,
        cohort: cohort.map(str::to_string),
        quota: quota(gpus),
    }
}
