//! `stargrid sim frag`: the static fragmentation experiment (see `sim::frag`): pods drawn from
//! a mix arrive until they ask for 130% of the fleet's GPUs, none ends, and each policy's
//! share of GPU capacity allocated at the first failure is reported.

use crate::fleet_cmd::{catalog, load_fleet};
use anyhow::{bail, Result};
use clap::Args;
use sim::frag::{self, Policy, PolicyResult};
use std::path::PathBuf;

#[derive(Args)]
pub struct FragArgs {
    /// Fleet file (default: the built-in reference cluster of 1,213 nodes and 6,212 GPUs).
    #[arg(long)]
    pub fleet: Option<PathBuf>,
    /// Policies, in table order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,dot-product,packing,best-fit,fgd,stargrid"
    )]
    pub policies: Vec<String>,
    /// Pods arrive until they ask for this share of the fleet's GPUs.
    #[arg(long, default_value_t = 1.3)]
    pub arrive: f64,
    /// Runs (seeds) per policy; each run draws its own pods, the same for every policy.
    #[arg(long, default_value_t = 10)]
    pub runs: u32,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &FragArgs) -> Result<()> {
    let fleet = match &a.fleet {
        Some(p) => load_fleet(p, catalog(None)?)?,
        None => frag::reference_fleet()?,
    };
    let mut policies = Vec::new();
    for name in &a.policies {
        let Some(p) = Policy::parse(name) else {
            let known: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
            bail!(
                "--policies: unknown policy '{name}' (known: {})",
                known.join(", ")
            );
        };
        policies.push(p);
    }
    if a.runs == 0 || a.runs > 1000 {
        bail!("--runs: must be 1..=1000");
    }
    let mix = frag::reference_mix();
    let results = frag::experiment(&fleet, &mix, &policies, a.arrive, a.runs, a.seed)?;
    let gpus: u64 = fleet
        .nodes()
        .iter()
        .map(|n| u64::from(n.capacity.gpus))
        .sum();
    if a.json {
        let out = serde_json::json!({
            "nodes": fleet.nodes().len(),
            "gpus": gpus,
            "arrive": a.arrive,
            "runs": a.runs,
            "seed": a.seed,
            "policies": results.iter().map(summary_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "static fragmentation: {} nodes, {gpus} GPUs; pods arrive until they ask for {:.0}% of \
         the GPUs, none ends; {} runs from seed {}",
        fleet.nodes().len(),
        a.arrive * 100.0,
        a.runs,
        a.seed
    );
    print!("{}", table(&results));
    Ok(())
}

fn summary_json(r: &PolicyResult) -> serde_json::Value {
    serde_json::json!({
        "policy": r.policy.name(),
        "allocated_at_first_failure": r.allocated_at_first_failure,
        "first_failure_min": r.first_failure_range.0,
        "first_failure_max": r.first_failure_range.1,
        "allocated_at_end": r.allocated_at_end,
        "failed_pods": r.failed,
    })
}

/// The results as a table, one policy a line.
pub fn table(results: &[PolicyResult]) -> String {
    let mut out = format!(
        "{:<12} {:>22} {:>16} {:>10} {:>12}\n",
        "POLICY", "ALLOCATED AT 1ST FAIL", "RANGE", "AT END", "FAILED PODS"
    );
    for r in results {
        out.push_str(&format!(
            "{:<12} {:>21.1}% {:>7.1}–{:<7.1} {:>9.1}% {:>12.0}\n",
            r.policy.name(),
            r.allocated_at_first_failure * 100.0,
            r.first_failure_range.0 * 100.0,
            r.first_failure_range.1 * 100.0,
            r.allocated_at_end * 100.0,
            r.failed
        ));
    }
    out
}
