//! Fleets the simulator builds on its own: a Philly-scale cluster of 8-GPU hosts (with CPU
//! hosts for sandboxes if asked), and the reference GB200 fleet from the `fleet` crate's
//! generator.

use model::fleet::Location;
use model::{CapacityPool, Fleet, FleetBuilder, InstanceCatalog, NodeState, PricingKind};

/// `gpus` GPUs (rounded up to whole hosts) in 8-GPU H100 hosts, 16 hosts per rack, 8 racks per
/// spine, one zone (`onprem/site/zone0`): the scale of the cluster the Philly trace came from;
/// plus `cpu_hosts` 192-core CPU hosts (`c00000`...) under their own spine `cpu`.
pub fn hosts_fleet(gpus: u64, cpu_hosts: u64) -> Result<Fleet, model::FleetError> {
    let catalog = InstanceCatalog::builtin();
    let itype = "p5.48xlarge";
    let res = catalog
        .get(itype)
        .map(|t| t.resources())
        .unwrap_or_default();
    let mut b = FleetBuilder::new();
    let pool = b.add_pool(CapacityPool {
        name: "onprem-h100".into(),
        cloud: "onprem".into(),
        region: "site".into(),
        instance_type: itype.into(),
        pricing: PricingKind::Committed,
        price_per_hour: 0.0,
    })?;
    let per_host = u64::from(res.gpus.max(1));
    for h in 0..gpus.div_ceil(per_host) {
        let rack = h / 16;
        let loc = Location {
            zone: "zone0".into(),
            network: vec![format!("sp{}", rack / 8), format!("rack{rack}")],
            domain: None,
        };
        b.add_node(&format!("h{h:05}"), pool, &loc, res, NodeState::Ready)?;
    }
    if cpu_hosts > 0 {
        let ctype = "m7i.48xlarge";
        let cres = catalog
            .get(ctype)
            .map(|t| t.resources())
            .unwrap_or_default();
        let cpool = b.add_pool(CapacityPool {
            name: "onprem-cpu".into(),
            cloud: "onprem".into(),
            region: "site".into(),
            instance_type: ctype.into(),
            pricing: PricingKind::Committed,
            price_per_hour: 0.0,
        })?;
        for h in 0..cpu_hosts {
            let loc = Location {
                zone: "zone0".into(),
                network: vec!["cpu".into(), format!("crack{}", h / 32)],
                domain: None,
            };
            b.add_node(&format!("c{h:05}"), cpool, &loc, cres, NodeState::Ready)?;
        }
    }
    b.build()
}
