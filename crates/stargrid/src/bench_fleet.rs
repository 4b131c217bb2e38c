//! `stargrid bench scale`'s fleet-change phase: while jobs run, a new region of GPU trays is
//! applied to the running cell (`POST /v1/fleet/apply`), its agent brings the trays up and
//! jobs pinned to the region run there; then the first zone, where jobs still run, is
//! removed: its idle nodes leave at once, its busy ones are drained and leave once their
//! jobs end. Timed: each apply, the new trays up, jobs running on them, the departure.

use crate::bench_outage::{wait_until, Tally};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::api::{ApplyFleet, IssueToken};
use wire::Client;

/// The region the phase adds.
const NEW_REGION: &str = "bench-new-region";
/// Trays in one NVL72 domain.
const TRAYS_PER_DOMAIN: usize = 18;

/// What the phase needs of the run around it.
pub(crate) struct Phase<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) admin: &'a Client,
    pub(crate) url: &'a str,
    /// The run's agents' tally: agent `zone_agent` plays the first zone alone.
    pub(crate) tally: &'a Tally,
    pub(crate) zone_agent: usize,
    /// The first zone's name (its last path element), which the phase removes.
    pub(crate) zone: &'a str,
    /// GPU trays in the first zone.
    pub(crate) zone_trays: usize,
    /// The first zone's path, drained while the phase's other jobs are placed elsewhere.
    pub(crate) zone_path: &'a str,
    /// The other zones' paths, drained while the phase's first jobs are placed in the first.
    pub(crate) other_zones: &'a [String],
    /// Trays the new region brings (whole domains of 18).
    pub(crate) trays: usize,
    /// Endless one-tray jobs run before the change, and as many pinned to the new region.
    pub(crate) jobs: usize,
    pub(crate) interval: Duration,
    pub(crate) limit: Duration,
}

/// The new region's pool and trays, as fleet-file tables.
fn new_region(trays: usize) -> String {
    let mut out = format!(
        "\n[[pools]]\nname = \"bench-new-gb200\"\ncloud = \"aws\"\nregion = \"{NEW_REGION}\"\n\
         instance_type = \"p6e-gb200.36xlarge\"\npricing = \"committed\"\nprice_per_hour = 55.0\n"
    );
    for d in 0..trays.div_ceil(TRAYS_PER_DOMAIN) {
        out.push_str(&format!(
            "\n[[groups]]\npool = \"bench-new-gb200\"\nzone = \"{NEW_REGION}-z{}\"\n\
             network = [\"nsp{}\", \"nblk{}\"]\ndomain = \"new-d{d:05}\"\nnodes = \"new-d{d:05}-t[00-17]\"\n",
            d / 256,
            d / 64,
            d / 8
        ));
    }
    out
}

/// Submits `count` endless one-tray jobs named `prefix-I`, pinned to `region` when given.
fn endless(admin: &Client, prefix: &str, count: usize, region: Option<&str>) -> Result<Vec<u64>> {
    (0..count)
        .map(|i| {
            let mut job = crate::bench_scale::job("bench", format!("{prefix}-{i}"), "infinity");
            if let Some(r) = region {
                job.placement.regions = vec![r.to_string()];
            }
            Ok(admin.submit_job(&job)?.id)
        })
        .collect()
}

fn node_total(admin: &Client) -> Result<u64> {
    Ok(admin.cell()?.nodes.values().sum())
}

/// Runs the phase; returns its figures.
pub(crate) fn run(p: &Phase<'_>) -> Result<serde_json::Value> {
    let admin = p.admin;
    // Jobs before the change: half in the first zone, as far as it holds them (the others
    // drained meanwhile).
    for path in p.other_zones {
        admin.drain(path)?;
    }
    let in_zone = endless(admin, "fleet-zone", (p.jobs / 2).min(p.zone_trays), None)?;
    let in_zone_set: BTreeSet<u64> = in_zone.iter().copied().collect();
    wait_until("the first zone runs its jobs", p.limit, || {
        Ok(p.tally.on(p.zone_agent).is_superset(&in_zone_set))
    })?;
    for path in p.other_zones {
        admin.resume(path)?;
    }
    admin.drain(p.zone_path)?;
    let elsewhere = endless(admin, "fleet-rest", p.jobs - in_zone.len(), None)?;
    let running_before = in_zone.len() + elsewhere.len();
    wait_until("the jobs run", p.limit, || {
        Ok(admin.cell()?.jobs_running as usize >= running_before)
    })?;
    admin.resume(p.zone_path)?;

    // A region joins.
    let before = node_total(admin)?;
    let grown = format!("{}{}", admin.fleet_file()?, new_region(p.trays));
    let t = Instant::now();
    let added = admin.apply_fleet(&ApplyFleet {
        fleet_toml: grown.clone(),
        dry_run: false,
    })?;
    let apply_add_s = t.elapsed().as_secs_f64();
    let new_nodes: Vec<String> = (0..p.trays.div_ceil(TRAYS_PER_DOMAIN))
        .flat_map(|d| (0..TRAYS_PER_DOMAIN).map(move |t| format!("new-d{d:05}-t{t:02}")))
        .collect();
    if added.added.count != new_nodes.len() as u64 {
        bail!(
            "the region's apply added {} nodes, not {}",
            added.added.count,
            new_nodes.len()
        );
    }
    let token = admin.issue_token(&IssueToken {
        role: "agent".into(),
        tenant: None,
        expires_in_s: None,
        nodes: Some(added.added.names.clone()),
    })?;
    let new_tally = Tally::default();
    let (new_tx, _new_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let agents = crate::bench_frontends::start_agents(
        &[crate::bench_frontends::Share {
            nodes: new_nodes.clone(),
            token: token.token,
        }],
        &|_| p.url.to_string(),
        &crate::bench_frontends::AgentSettings {
            interval: p.interval,
            fence_after: p.limit,
            dir: p.dir,
            tag: "new-region",
        },
        &new_tally,
        &new_tx,
        &stop,
    );
    let result = (|| -> Result<serde_json::Value> {
        let new_up_s = wait_until("the new trays are up", p.limit, || {
            Ok(admin.cell()?.nodes.get("down").copied().unwrap_or(0) == 0)
        })?;
        let t_jobs = Instant::now();
        let on_new = endless(admin, "fleet-new", p.jobs, Some(NEW_REGION))?;
        let on_new_set: BTreeSet<u64> = on_new.iter().copied().collect();
        let new_jobs_s = wait_until("jobs run on the new trays", p.limit, || {
            Ok(new_tally.on(0).is_superset(&on_new_set))
        })?;
        let new_jobs_s = new_jobs_s.max(t_jobs.elapsed().as_secs_f64());

        // The first zone is removed while its jobs run.
        let mut file = fleet::file::read("the cell's fleet", &admin.fleet_file()?)?;
        file.groups.retain(|g| g.zone != p.zone);
        let shrunk = fleet::file::to_text(&file, 0);
        let t = Instant::now();
        let removed = admin.apply_fleet(&ApplyFleet {
            fleet_toml: shrunk,
            dry_run: false,
        })?;
        let apply_remove_s = t.elapsed().as_secs_f64();
        let kept_running = p.tally.on(p.zone_agent).intersection(&in_zone_set).count();
        // Their work ends: the drained nodes leave.
        let remaining = removed.nodes_after - removed.leaving.count;
        let t = Instant::now();
        for id in &in_zone {
            admin.cancel_job(*id)?;
        }
        wait_until("the removed zone's nodes left", p.limit, || {
            Ok(node_total(admin)? == remaining)
        })?;
        let left_s = t.elapsed().as_secs_f64();
        for id in elsewhere.iter().chain(&on_new) {
            admin.cancel_job(*id)?;
        }
        Ok(serde_json::json!({
            "nodes_before": before,
            "jobs_running_before": running_before,
            "trays_added": added.added.count,
            "apply_add_s": apply_add_s,
            "new_trays_up_s": new_up_s,
            "jobs_on_new_trays": on_new.len(),
            "jobs_on_new_trays_running_s": new_jobs_s,
            "zone_removed": p.zone,
            "nodes_removed_at_once": removed.removed.count,
            "nodes_leaving": removed.leaving.count,
            "apply_remove_s": apply_remove_s,
            "jobs_in_zone": in_zone.len(),
            "jobs_kept_running_in_removed_zone": kept_running,
            "left_after_work_ended_s": left_s,
            "nodes_after": node_total(admin)?,
        }))
    })();
    stop.store(true, Ordering::Relaxed);
    for a in agents {
        let _ = a.join();
    }
    result.context("the fleet change")
}
