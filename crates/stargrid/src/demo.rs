//! `stargrid demo`: the README's first command. A small multi-cloud fleet, a realistic mix of
//! work placed through the engine, a drained spine, and explanations for what cannot run.

use crate::place::{place_entry, Decision};
use crate::workload_file::Entry;
use anyhow::{Context, Result};
use clap::Args;
use fleet::generate::{generate, GenSpec};
use model::{
    GangRequest, GpuModel, InstanceCatalog, NodeState, SandboxRequest, WorkloadClass, WorkloadId,
};
use sched::{Engine, Scope};

#[derive(Args)]
pub struct DemoArgs {
    /// GPUs in the demo fleet (whole NVL72 domains).
    #[arg(long, default_value_t = 72 * 96)]
    pub gpus: u64,
    /// CPU hosts in the demo fleet.
    #[arg(long, default_value_t = 512)]
    pub cpu_hosts: u64,
}

fn gang(class: WorkloadClass, gpus: u32, segment: Option<u32>) -> GangRequest {
    GangRequest {
        class,
        gpu: GpuModel::Gb200,
        nodes: gpus / 4,
        gpus_per_node: 4,
        cpu_millis_per_node: 32_000,
        memory_mib_per_node: 256 * 1024,
        segment,
        spares: 0,
        parts: Vec::new(),
        gpu_milli: 0,
        models: Vec::new(),
    }
}

pub fn run(a: &DemoArgs) -> Result<()> {
    let mut spec = GenSpec {
        gpus: a.gpus,
        cpu_hosts: a.cpu_hosts,
        ..GenSpec::default()
    };
    // Two providers keep the demo's zones large enough for its 1,152-GPU gangs.
    spec.clouds.retain(|c| c.cloud == "aws" || c.cloud == "gcp");
    let fleet =
        generate(&spec, &InstanceCatalog::builtin()).context("generating the demo fleet")?;
    let s = fleet.summary();
    println!(
        "fleet: {} GPUs in {} NVL72 domains, {} CPU hosts, {} clouds, {} zones, {} network levels\n",
        s.gpus,
        s.multi_node_domains,
        s.nodes - fleet.nodes().iter().filter(|n| n.capacity.gpus > 0).count() as u64,
        s.clouds,
        s.zones,
        s.network_levels
    );
    let mut engine = Engine::new(fleet);
    use WorkloadClass::{InferenceReplica as Inf, Training as Tr};
    let mut plan: Vec<Entry> = vec![
        Entry::Gang("pretrain-1152gpu".into(), gang(Tr, 1152, None)),
        Entry::Gang("pretrain-1024gpu-spares".into(), gang(Tr, 1024, Some(16))),
        Entry::Gang("research-8gpu".into(), gang(Tr, 8, None)),
        Entry::Gang("research-64gpu".into(), gang(Tr, 64, None)),
        Entry::Gang("research-16gpu".into(), gang(Tr, 16, None)),
    ];
    for r in 0..4 {
        plan.push(Entry::Gang(format!("chat-replica-{r}"), gang(Inf, 8, None)));
    }
    plan.push(Entry::Gang(
        "frontier-replica-nvl72".into(),
        gang(Inf, 72, None),
    ));
    plan.push(Entry::Sandboxes(
        "agent-sandboxes".into(),
        SandboxRequest {
            count: 20_000,
            cpu_millis: 1000,
            memory_mib: 2048,
        },
    ));
    plan.push(Entry::Gang("too-big-4608gpu".into(), gang(Tr, 4608, None)));
    let mut next = 0u64;
    let mut place = |engine: &mut Engine, e: &Entry| -> Decision {
        let d = place_entry(engine, WorkloadId(next), e, 0);
        next += 1;
        d.print();
        d
    };
    for e in &plan {
        place(&mut engine, e);
    }
    let (total, free) = engine.gpu_usage();
    println!(
        "\nGPU use: {} of {} ({:.1}%); whole free NVL72 domains: {}",
        total - free,
        total,
        100.0 * (total - free) as f64 / total as f64,
        engine.whole_free_domains()
    );
    // An operator drains the spine the first gang runs on.
    if let Some(sched::Allocation::Gang { slots, .. }) = engine.allocation(WorkloadId(0)) {
        let node = slots[0].node;
        let spine = engine
            .fleet()
            .ancestors(engine.fleet().node(node).parent)
            .find(|t| engine.fleet().topo_node(*t).kind == model::TopoKind::Network { level: 0 });
        if let Some(spine) = spine {
            let path = engine.fleet().topo_path(spine);
            let change = engine.set_state(Scope::Subtree(spine), NodeState::Draining);
            let ids: Vec<String> = change.affected.iter().map(|w| w.to_string()).collect();
            println!(
                "\ndrain {path}: {} nodes draining; workloads to move: [{}]",
                change.nodes_changed,
                ids.join(", ")
            );
            println!("retrying a 1152-GPU gang with that spine out of service:");
            place(
                &mut engine,
                &Entry::Gang("pretrain-retry".into(), gang(Tr, 1152, None)),
            );
        }
    }
    Ok(())
}
