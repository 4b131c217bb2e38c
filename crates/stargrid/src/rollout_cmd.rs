//! `stargrid rollout start|status|undo`: rolling updates of an inference service.

use anyhow::{Context, Result};
use clap::Subcommand;
use std::collections::BTreeMap;
use wire::api::{RolloutView, StartRollout};

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Roll a new version over a service's replicas, a few at a time, gated on readiness.
    Start {
        /// Service id.
        id: u64,
        /// The new version's label (e.g. v2, an image tag).
        #[arg(long)]
        version: String,
        /// Its command, as one shell-like string split on spaces (default: the current one).
        #[arg(long)]
        command: Option<String>,
        /// Its environment, NAME=VALUE, repeated (given: it replaces the current one).
        #[arg(long = "env")]
        env: Vec<String>,
        /// Replicas above the desired count while new ones come up.
        #[arg(long, default_value_t = 1)]
        max_surge: u32,
        /// Ready replicas it may take below the desired count.
        #[arg(long, default_value_t = 0)]
        max_unavailable: u32,
        /// Seconds new replicas have to become ready before the update rolls back.
        #[arg(long, default_value_t = 120)]
        progress_deadline_s: u32,
        /// Start with one new replica taking this share of the traffic (per cent) until
        /// `rollout promote`.
        #[arg(long)]
        canary_percent: Option<u32>,
    },
    /// Promote a canary: the update goes on over every replica.
    Promote {
        /// Service id.
        id: u64,
    },
    /// Where a service's rolling update stands.
    Status {
        /// Service id.
        id: u64,
    },
    /// Go back to the version before (an update under way rolls back).
    Undo {
        /// Service id.
        id: u64,
        /// Why (kept with the rollout).
        #[arg(long)]
        reason: Option<String>,
    },
}

pub fn run(client: &wire::Client, c: &RolloutCommand) -> Result<()> {
    let view = match c {
        RolloutCommand::Start {
            id,
            version,
            command,
            env,
            max_surge,
            max_unavailable,
            progress_deadline_s,
            canary_percent,
        } => {
            let env = if env.is_empty() {
                None
            } else {
                let mut map = BTreeMap::new();
                for kv in env {
                    let (k, v) = kv
                        .split_once('=')
                        .with_context(|| format!("--env '{kv}': NAME=VALUE"))?;
                    map.insert(k.to_string(), v.to_string());
                }
                Some(map)
            };
            let ask = StartRollout {
                version: version.clone(),
                command: command
                    .as_ref()
                    .map(|c| c.split_whitespace().map(str::to_string).collect()),
                env,
                max_surge: *max_surge,
                max_unavailable: *max_unavailable,
                progress_deadline_s: *progress_deadline_s,
                canary_percent: *canary_percent,
            };
            client
                .start_rollout(*id, &ask)
                .map_err(crate::client::fail)?
        }
        RolloutCommand::Status { id } => client.rollout(*id).map_err(crate::client::fail)?,
        RolloutCommand::Promote { id } => {
            client.promote_rollout(*id).map_err(crate::client::fail)?
        }
        RolloutCommand::Undo { id, reason } => client
            .undo_rollout(*id, reason.clone())
            .map_err(crate::client::fail)?,
    };
    print(&view);
    Ok(())
}

fn print(v: &RolloutView) {
    let from = v
        .previous_version
        .as_deref()
        .map_or(String::new(), |p| format!(" (from {p})"));
    println!(
        "service {}: {} to version {}{from}: {} old replicas, {} new ({} ready), surge {}",
        v.service, v.state, v.version, v.old_replicas, v.new_replicas, v.new_ready, v.surge
    );
    if let Some(p) = v.canary_percent {
        println!("  the new version is a canary: {p}% of the traffic, until `rollout promote`");
    }
    if let Some(r) = &v.reason {
        println!("  rolled back: {r}");
    }
}
