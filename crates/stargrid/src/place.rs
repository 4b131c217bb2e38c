//! `stargrid place`: places a workload file's entries, in order, on a fleet, and prints each
//! decision with its quality score, or the reason it could not be placed.

use crate::fleet_cmd::{catalog, load_fleet};
use crate::workload_file::{self, Entry};
use anyhow::{Context, Result};
use clap::Args;
use model::hostlist;
use model::WorkloadId;
use sched::{Engine, EngineError};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct PlaceArgs {
    /// Fleet file (a scenario may name or generate its own).
    #[arg(long, required_unless_present = "scenario")]
    pub fleet: Option<PathBuf>,
    /// Workload file: workloads placed one after another, no queue.
    #[arg(
        long,
        conflicts_with = "scenario",
        required_unless_present = "scenario"
    )]
    pub workload: Option<PathBuf>,
    /// Scenario file: tenants and timed events played through the queue.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Cordon these nodes or subtrees (path as `fleet show` prints it) before placing.
    #[arg(long)]
    pub cordon: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// TOML file with extra `[[instance_types]]`.
    #[arg(long)]
    pub types: Option<PathBuf>,
}

/// One decision, as printed.
#[derive(Serialize)]
pub struct Decision {
    pub name: String,
    pub placed: bool,
    /// Compressed hostlist of the nodes used.
    pub nodes: String,
    pub node_count: usize,
    /// Gangs only.
    pub quality: Option<sched::Quality>,
    pub reason: Option<String>,
    pub details: Vec<String>,
}

impl Decision {
    pub fn print(&self) {
        if self.placed {
            match &self.quality {
                Some(q) => println!(
                    "{}: placed on {} nodes under {} (domains {}/{} min, levels {}/{} min, quality {:.2})\n    nodes {}",
                    self.name,
                    self.node_count,
                    q.common_ancestor,
                    q.domains_spanned,
                    q.min_domains,
                    q.levels_spanned,
                    q.min_levels,
                    q.score,
                    self.nodes
                ),
                None => println!(
                    "{}: placed on {} hosts: {}",
                    self.name, self.node_count, self.nodes
                ),
            }
        } else {
            println!(
                "{}: NOT PLACED: {}",
                self.name,
                self.reason.as_deref().unwrap_or("")
            );
            for d in &self.details {
                println!("    - {d}");
            }
        }
    }
}

/// Places one entry and describes the outcome.
pub fn place_entry(engine: &mut Engine, id: WorkloadId, entry: &Entry, now: u64) -> Decision {
    let names = |engine: &Engine, ids: &mut dyn Iterator<Item = model::NodeId>| {
        let mut v: Vec<String> = ids
            .map(|n| engine.fleet().node(n).name.to_string())
            .collect();
        v.sort_unstable();
        (hostlist::compress(&v), v.len())
    };
    let result = match entry {
        Entry::Gang(_, req) => engine.place_gang(id, req, now).map(|p| {
            let (nodes, count) = names(engine, &mut p.slots.iter().map(|s| s.node));
            (nodes, count, Some(p.quality))
        }),
        Entry::Sandboxes(_, req) => engine.place_sandboxes(id, req, now).map(|p| {
            let (nodes, count) = names(engine, &mut p.runs.iter().map(|r| r.node));
            (nodes, count, None)
        }),
    };
    match result {
        Ok((nodes, node_count, quality)) => Decision {
            name: entry.name().to_string(),
            placed: true,
            nodes,
            node_count,
            quality,
            reason: None,
            details: Vec::new(),
        },
        Err(e) => {
            let (reason, details) = match e {
                EngineError::Unplaceable(u) => (u.reason, u.details),
                other => (other.to_string(), Vec::new()),
            };
            Decision {
                name: entry.name().to_string(),
                placed: false,
                nodes: String::new(),
                node_count: 0,
                quality: None,
                reason: Some(reason),
                details,
            }
        }
    }
}

/// Applies `--cordon` paths (node names or topology paths).
pub fn cordon(engine: &mut Engine, targets: &[String]) -> Result<()> {
    for t in targets {
        let scope = match engine.fleet().node_by_name(t) {
            Some(n) => sched::Scope::Node(n),
            None => sched::Scope::Subtree(
                engine
                    .fleet()
                    .find_topo(t)
                    .with_context(|| format!("--cordon: no node or topology path '{t}'"))?,
            ),
        };
        engine.set_state(scope, model::NodeState::Cordoned);
    }
    Ok(())
}

pub fn run(a: &PlaceArgs) -> Result<()> {
    if let Some(scenario) = &a.scenario {
        print!(
            "{}",
            crate::scenario::run(scenario, a.fleet.as_deref(), a.types.as_ref())?
        );
        return Ok(());
    }
    let (Some(fleet_path), Some(workload)) = (&a.fleet, &a.workload) else {
        anyhow::bail!("--fleet and --workload are needed without --scenario");
    };
    let fleet = load_fleet(fleet_path, catalog(a.types.as_ref())?)?;
    let text = std::fs::read_to_string(workload)
        .with_context(|| format!("reading {}", workload.display()))?;
    let entries = workload_file::parse(&workload.display().to_string(), &text)?;
    let mut engine = Engine::new(fleet);
    cordon(&mut engine, &a.cordon)?;
    let decisions: Vec<Decision> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| place_entry(&mut engine, WorkloadId(i as u64), e, 0))
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&decisions)?);
    } else {
        decisions.iter().for_each(Decision::print);
    }
    Ok(())
}
