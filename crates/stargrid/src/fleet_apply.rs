//! `stargrid fleet apply FILE` and `stargrid fleet current`: a running cell's fleet changed
//! and read back; `fleet allow`, `registrations` and `approve`: nodes their agents register. The file is checked here first (errors name its lines), then applied by
//! the server, which answers what changed: nodes added, removed at once, leaving once their
//! work ends, moved in the topology.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use wire::api::{
    ApplyFleet, FleetChange, NodeSet, RegistrationRuleSpec, RegistrationsView, SetRegistrationRule,
};

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

#[derive(Args)]
pub struct AllowArgs {
    /// The names agents may register, as a host list (`gpu-new-[0000-0999]`).
    #[arg(long, required_unless_present = "off")]
    pub nodes: Option<String>,
    /// The pools of the cell they may join (comma-separated).
    #[arg(long, value_delimiter = ',', required_unless_present = "off")]
    pub pools: Vec<String>,
    /// The zones they may join (comma-separated; default: any).
    #[arg(long, value_delimiter = ',')]
    pub zones: Vec<String>,
    /// They join without an approval (in batches, 5 s after the first waits).
    #[arg(long)]
    pub auto_approve: bool,
    /// Stop registrations (those waiting are dropped).
    #[arg(long, conflicts_with_all = ["nodes", "pools", "zones", "auto_approve"])]
    pub off: bool,
}

#[derive(Args)]
pub struct RegistrationsArgs {
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ApproveArgs {
    /// The waiting nodes, as a host list.
    pub nodes: String,
}

/// Sets or stops the registration rule.
pub fn allow(settings: &crate::config::Settings, a: &AllowArgs) -> Result<()> {
    let rule = match &a.nodes {
        Some(nodes) if !a.off => Some(RegistrationRuleSpec {
            nodes: nodes.clone(),
            pools: a.pools.clone(),
            zones: a.zones.clone(),
            auto_approve: a.auto_approve,
        }),
        _ => None,
    };
    let view = client(settings)?.set_registration_rule(&SetRegistrationRule { rule })?;
    print!("{}", describe_registrations(&view));
    Ok(())
}

/// Prints the rule and the registrations waiting.
pub fn registrations(settings: &crate::config::Settings, a: &RegistrationsArgs) -> Result<()> {
    let view = client(settings)?.registrations()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", describe_registrations(&view));
    }
    Ok(())
}

/// Approves waiting registrations.
pub fn approve(settings: &crate::config::Settings, a: &ApproveArgs) -> Result<()> {
    let change = client(settings)?.approve_registrations(&a.nodes)?;
    print!("{}", describe(&change));
    Ok(())
}

/// Rejects waiting registrations.
pub fn reject(settings: &crate::config::Settings, a: &ApproveArgs) -> Result<()> {
    let view = client(settings)?.reject_registrations(&a.nodes)?;
    print!("{}", describe_registrations(&view));
    Ok(())
}

fn describe_registrations(v: &RegistrationsView) -> String {
    let mut out = match &v.rule {
        None => "registrations: off\n".to_string(),
        Some(r) => format!(
            "registrations: {} into {}{}{}\n",
            r.nodes,
            r.pools.join(", "),
            if r.zones.is_empty() {
                String::new()
            } else {
                format!(" in zones {}", r.zones.join(", "))
            },
            if r.auto_approve {
                " (approved at once)"
            } else {
                " (each approved by an admin: `stargrid fleet approve`)"
            }
        ),
    };
    for w in &v.waiting {
        out.push_str(&format!(
            "  waiting  {:<28} {:<24} {}/{}{}\n",
            w.node,
            w.pool,
            w.zone,
            w.network.join("/"),
            w.domain
                .as_deref()
                .map(|d| format!("/{d}"))
                .unwrap_or_default()
        ));
    }
    out
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
