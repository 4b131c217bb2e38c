//! `stargrid fleet apply FILE` and `stargrid fleet current`: a running cell's fleet changed
//! and read back. The file is checked here first (errors name its lines), then applied by
//! the server, which answers what changed: nodes added, removed at once, leaving once their
//! work ends, moved in the topology.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use wire::api::{ApplyFleet, FleetChange, NodeSet};

#[derive(Args)]
pub struct ApplyArgs {
    /// The fleet as it should be: a fleet file (from `fleet gen`, `fleet import` of an AWS or
    /// Slurm topology, or `fleet current` edited).
    pub file: PathBuf,
    /// Say what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CurrentArgs {
    /// Output file (default: standard output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Applies `a.file` to the server `settings` name.
pub fn apply(settings: &crate::config::Settings, a: &ApplyArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    // Checked here, so that an error names the file and its line.
    fleet::file::parse(
        &a.file.display().to_string(),
        &text,
        model::InstanceCatalog::builtin(),
    )?;
    let change = client(settings)?
        .apply_fleet(&ApplyFleet {
            fleet_toml: text,
            dry_run: a.dry_run,
        })
        .context("applying the fleet")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&change)?);
    } else {
        print!("{}", describe(&change));
    }
    Ok(())
}

/// Prints (or writes) the server's fleet file.
pub fn current(settings: &crate::config::Settings, a: &CurrentArgs) -> Result<()> {
    let text = client(settings)?.fleet_file()?;
    match &a.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn client(settings: &crate::config::Settings) -> Result<wire::Client> {
    if settings.token.is_empty() {
        bail!("no token: pass --token or --token-file with an admin token (the server's first is in its data dir, admin.token)");
    }
    // Applying a change to a large fleet rebuilds the cell's state: it may take a while.
    Ok(settings
        .client(&settings.token)?
        .with_timeout(std::time::Duration::from_secs(300)))
}

/// The change in words, one line per kind.
pub fn describe(c: &FleetChange) -> String {
    let mut out = format!(
        "{}: {} nodes -> {} nodes, {} -> {} NVLink domains\n",
        if c.applied {
            "applied"
        } else {
            "would apply (dry run)"
        },
        c.nodes_before,
        c.nodes_after,
        c.domains_before,
        c.domains_after
    );
    let line = |out: &mut String, what: &str, set: &NodeSet, note: &str| {
        if set.count > 0 {
            out.push_str(&format!(
                "  {what:<8} {:>7}  {}{note}\n",
                set.count, set.names
            ));
        }
    };
    line(
        &mut out,
        "added",
        &c.added,
        "  (each takes work once its agent reports)",
    );
    line(&mut out, "removed", &c.removed, "");
    line(
        &mut out,
        "leaving",
        &c.leaving,
        "  (drained: they leave once their work ends)",
    );
    line(&mut out, "moved", &c.moved, "");
    line(
        &mut out,
        "kept",
        &c.kept,
        "  (were leaving: they take work again)",
    );
    if !c.pools_added.is_empty() {
        out.push_str(&format!("  pools added: {}\n", c.pools_added.join(", ")));
    }
    out
}
