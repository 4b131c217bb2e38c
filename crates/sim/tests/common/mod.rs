//! Fleets for the simulator's tests: groups of standalone GPU hosts under one spine, in one
//! committed pool at no price.

#![allow(dead_code, clippy::unwrap_used)]

use model::fleet::Location;
use model::{CapacityPool, Fleet, FleetBuilder, GpuModel, NodeState, PricingKind, Resources};

/// `count` hosts named `{prefix}{i}`, each of `gpus` GPUs of `model` with `cpu_millis` and
/// `memory_mib`.
#[derive(Clone, Copy, Debug)]
pub struct Hosts {
    pub prefix: &'static str,
    pub model: GpuModel,
    pub gpus: u8,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    pub count: u32,
}

impl Hosts {
    /// `count` hosts of 8 GPUs of `model`, 96 CPUs and 1 TiB.
    pub fn eight(prefix: &'static str, model: GpuModel, count: u32) -> Hosts {
        Hosts {
            prefix,
            model,
            gpus: 8,
            cpu_millis: 96_000,
            memory_mib: 1 << 20,
            count,
        }
    }
}

/// The groups' hosts, in the order given.
pub fn hosts(groups: &[Hosts]) -> Fleet {
    let mut b = FleetBuilder::new();
    let pool = b
        .add_pool(CapacityPool {
            name: "p".into(),
            cloud: "onprem".into(),
            region: "site".into(),
            instance_type: "custom".into(),
            pricing: PricingKind::Committed,
            price_per_hour: 0.0,
        })
        .unwrap();
    let loc = Location {
        zone: "z".into(),
        network: vec!["sp0".into()],
        domain: None,
    };
    for g in groups {
        let res = Resources {
            gpu_model: Some(g.model),
            gpus: g.gpus,
            cpu_millis: g.cpu_millis,
            memory_mib: g.memory_mib,
            disk_gib: 0,
        };
        for i in 0..g.count {
            b.add_node(
                &format!("{}{i}", g.prefix),
                pool,
                &loc,
                res,
                NodeState::Ready,
            )
            .unwrap();
        }
    }
    b.build().unwrap()
}
