//! Scenario files for `stargrid place --scenario`: a fleet, tenants and a timed list of events
//! (submit, pass, finish, checkpoint, cancel, fail, cordon, drain, ready, service, scale,
//! why) played through the queue, printing every decision.
//!
//! ```toml
//! fleet = "fleet.toml"                 # a fleet file beside the scenario, or:
//! [generate]
//! gpus = 7200
//! cpu_hosts = 0
//!
//! [[tenants]]
//! name = "research"
//! weight = 1.0
//! cohort = "lab"
//! gpus = { GB200 = 4096 }             # quota per GPU model; CPU/memory unlimited unless given
//!
//! [[events]]
//! at = 0
//! submit = { id = 1, tenant = "research", priority = "training", gpu = "GB200", nodes = 36, gpus_per_node = 4, time_limit = 7200 }
//! [[events]]
//! at = 0
//! pass = true
//! [[events]]
//! at = 600
//! fail = "aws/us-east-1/us-east-1-z1/sp0/agg0"   # node name or topology path
//! ```

use crate::fleet_cmd::{catalog, load_fleet};
use anyhow::{anyhow, bail, Context, Result};
use fleet::file::field_line;
use fleet::generate::{generate, GenSpec};
use model::{
    GangRequest, GpuModel, JobSpec, NodeState, PriorityClass, ResourceVec, ServiceSpec,
    SpreadLevel, SpreadRule, TenantId, TenantSpec, WorkloadId,
};
use sched::{Decision, Engine, SchedConfig, Scheduler, Scope};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    fleet: Option<String>,
    generate: Option<RawGenerate>,
    #[serde(default)]
    tenants: Vec<Spanned<RawTenant>>,
    #[serde(default)]
    config: Option<RawConfig>,
    #[serde(default)]
    events: Vec<Spanned<RawEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenerate {
    gpus: u64,
    #[serde(default)]
    cpu_hosts: u64,
    #[serde(default)]
    clouds: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    grace_period: Option<u64>,
    max_preemptions: Option<u32>,
    min_runtime: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: String,
    #[serde(default = "one")]
    weight: f64,
    cohort: Option<String>,
    #[serde(default)]
    gpus: BTreeMap<String, u64>,
    cpu_millis: Option<u64>,
    memory_mib: Option<u64>,
}

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: u64,
    submit: Option<RawSubmit>,
    pass: Option<bool>,
    finish: Option<u64>,
    checkpoint: Option<u64>,
    cancel: Option<u64>,
    fail: Option<String>,
    cordon: Option<String>,
    drain: Option<String>,
    ready: Option<String>,
    service: Option<RawService>,
    scale: Option<RawScale>,
    why: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubmit {
    id: u64,
    tenant: String,
    #[serde(default)]
    priority: PriorityClass,
    gpu: GpuModel,
    nodes: u32,
    gpus_per_node: u8,
    time_limit: u64,
    segment: Option<u32>,
    #[serde(default)]
    spares: u32,
    #[serde(default)]
    cpu_millis_per_node: u32,
    #[serde(default)]
    memory_mib_per_node: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    id: u64,
    tenant: String,
    gpu: GpuModel,
    nodes: u32,
    gpus_per_node: u8,
    min: u32,
    max: u32,
    /// `LEVEL:K`, LEVEL one of domain, zone, region, cloud.
    spread: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScale {
    service: u64,
    replicas: u32,
}

fn gang(gpu: GpuModel, nodes: u32, gpus_per_node: u8) -> GangRequest {
    GangRequest {
        class: Default::default(),
        gpu,
        nodes,
        gpus_per_node,
        cpu_millis_per_node: 0,
        memory_mib_per_node: 0,
        segment: None,
        spares: 0,
        parts: Vec::new(),
        gpu_milli: 0,
        models: Vec::new(),
    }
}

/// Plays a scenario file and returns the printed report.
pub fn run(
    path: &Path,
    fleet_override: Option<&Path>,
    types: Option<&std::path::PathBuf>,
) -> Result<String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {file}"))?;
    let raw: RawScenario = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(0, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        });
        anyhow!("{file}:{line}: {}", e.message())
    })?;
    let fleet = match (fleet_override, &raw.fleet, &raw.generate) {
        (Some(f), _, _) => load_fleet(f, catalog(types)?)?,
        (None, Some(f), _) => {
            let p = path.parent().unwrap_or(Path::new(".")).join(f);
            load_fleet(&p, catalog(types)?)?
        }
        (None, None, Some(g)) => {
            let mut spec = GenSpec {
                gpus: g.gpus,
                cpu_hosts: g.cpu_hosts,
                ..GenSpec::default()
            };
            if let Some(c) = &g.clouds {
                spec.clouds.retain(|s| c.contains(&s.cloud));
            }
            generate(&spec, &model::InstanceCatalog::builtin())
                .map_err(|e| anyhow!("{file}: generate: {e}"))?
        }
        (None, None, None) => {
            bail!("{file}: give `fleet = \"file.toml\"`, a [generate] table, or --fleet")
        }
    };
    let mut names = BTreeMap::new();
    let mut tenants = Vec::new();
    for (i, t) in raw.tenants.into_iter().enumerate() {
        let span = t.span();
        let t = t.into_inner();
        let at = |field: &str, reason: String| {
            anyhow!(
                "{file}:{}: tenants[{i}].{field}: {reason}",
                field_line(&text, span.clone(), field)
            )
        };
        let mut quota = ResourceVec {
            cpu_millis: t.cpu_millis.unwrap_or(u64::MAX / 64),
            memory_mib: t.memory_mib.unwrap_or(u64::MAX / 64),
            ..ResourceVec::default()
        };
        for (model, n) in &t.gpus {
            let m: GpuModel = model
                .parse()
                .map_err(|e: model::resources::UnknownGpuModel| at("gpus", e.to_string()))?;
            quota.gpus[m.index()] = *n;
        }
        if names.insert(t.name.clone(), TenantId(i as u32)).is_some() {
            return Err(at("name", format!("'{}' is declared twice", t.name)));
        }
        tenants.push(TenantSpec {
            name: t.name,
            weight: t.weight,
            cohort: t.cohort,
            quota,
        });
    }
    let mut config = SchedConfig::default();
    if let Some(c) = raw.config {
        config.grace_period = c.grace_period.unwrap_or(config.grace_period);
        config.max_preemptions = c.max_preemptions.unwrap_or(config.max_preemptions);
        config.min_runtime = c.min_runtime.unwrap_or(config.min_runtime);
    }
    let mut s = Scheduler::new(Engine::new(fleet), tenants, config)
        .map_err(|e| anyhow!("{file}: tenants: {e}"))?;
    let mut out = String::new();
    let mut last = 0u64;
    for (i, ev) in raw.events.into_iter().enumerate() {
        let span = ev.span();
        let ev = ev.into_inner();
        let line = field_line(&text, span.clone(), "at");
        let err = |field: &str, reason: String| {
            let key = field.split('.').next().unwrap_or(field);
            anyhow!(
                "{file}:{}: events[{i}].{field}: {reason}",
                field_line(&text, span.clone(), key)
            )
        };
        if ev.at < last {
            return Err(err(
                "at",
                format!(
                    "{} is before the previous event ({last}); events must be in time order",
                    ev.at
                ),
            ));
        }
        last = ev.at;
        let now = ev.at;
        let tenant = |name: &str, field: &str| {
            names
                .get(name)
                .copied()
                .ok_or_else(|| err(field, format!("no tenant named '{name}'")))
        };
        let scope = |s: &Scheduler, target: &str, field: &str| -> Result<Scope> {
            let f = s.engine().fleet();
            match f.node_by_name(target) {
                Some(n) => Ok(Scope::Node(n)),
                None => f
                    .find_topo(target)
                    .map(Scope::Subtree)
                    .ok_or_else(|| err(field, format!("no node or topology path '{target}'"))),
            }
        };
        let actions = [
            ev.submit.is_some(),
            ev.pass.is_some(),
            ev.finish.is_some(),
            ev.checkpoint.is_some(),
            ev.cancel.is_some(),
            ev.fail.is_some(),
            ev.cordon.is_some(),
            ev.drain.is_some(),
            ev.ready.is_some(),
            ev.service.is_some(),
            ev.scale.is_some(),
            ev.why.is_some(),
        ];
        if actions.iter().filter(|a| **a).count() != 1 {
            return Err(err("at", "each event needs exactly one action (submit, pass, finish, checkpoint, cancel, fail, cordon, drain, ready, service, scale, why)".into()));
        }
        let _ = write!(out, "t={now} ");
        let decisions: Vec<Decision> = if let Some(sub) = ev.submit {
            let spec = JobSpec {
                tenant: tenant(&sub.tenant, "submit.tenant")?,
                priority: sub.priority,
                gang: GangRequest {
                    segment: sub.segment,
                    spares: sub.spares,
                    cpu_millis_per_node: sub.cpu_millis_per_node,
                    memory_mib_per_node: sub.memory_mib_per_node,
                    ..gang(sub.gpu, sub.nodes, sub.gpus_per_node)
                },
                time_limit: sub.time_limit,
                placement: Default::default(),
            };
            s.submit(WorkloadId(sub.id), spec, now)
                .map_err(|e| err("submit", e.to_string()))?;
            let _ = writeln!(out, "submit w{}", sub.id);
            Vec::new()
        } else if ev.pass.is_some() {
            let _ = writeln!(out, "pass");
            s.schedule(now)
        } else if let Some(id) = ev.finish {
            s.finish(WorkloadId(id), now)
                .map_err(|e| err("finish", e.to_string()))?;
            let _ = writeln!(out, "finish w{id}");
            Vec::new()
        } else if let Some(id) = ev.checkpoint {
            s.checkpoint(WorkloadId(id), now)
                .map_err(|e| err("checkpoint", e.to_string()))?;
            let _ = writeln!(out, "checkpoint w{id}");
            Vec::new()
        } else if let Some(id) = ev.cancel {
            s.cancel(WorkloadId(id), now)
                .map_err(|e| err("cancel", e.to_string()))?;
            let _ = writeln!(out, "cancel w{id}");
            Vec::new()
        } else if let Some(target) = ev.fail {
            let sc = scope(&s, &target, "fail")?;
            let _ = writeln!(out, "fail {target}");
            s.fail(sc, now)
        } else if let Some((target, state, field)) = ev
            .cordon
            .map(|t| (t, NodeState::Cordoned, "cordon"))
            .or(ev.drain.map(|t| (t, NodeState::Draining, "drain")))
            .or(ev.ready.map(|t| (t, NodeState::Ready, "ready")))
        {
            let sc = scope(&s, &target, field)?;
            let affected = s.set_state(sc, state);
            let ids: Vec<String> = affected.iter().map(|w| w.to_string()).collect();
            let _ = writeln!(out, "{field} {target}: running there [{}]", ids.join(", "));
            Vec::new()
        } else if let Some(svc) = ev.service {
            let spread = match &svc.spread {
                None => None,
                Some(v) => Some(parse_spread(v).map_err(|e| err("service.spread", e))?),
            };
            let spec = ServiceSpec {
                tenant: tenant(&svc.tenant, "service.tenant")?,
                priority: PriorityClass::ProductionInference,
                replica: gang(svc.gpu, svc.nodes, svc.gpus_per_node),
                min_replicas: svc.min,
                max_replicas: svc.max,
                spread,
                placement: Default::default(),
                min_providers: Default::default(),
            };
            s.create_service(svc.id, spec, now)
                .map_err(|e| err("service", e.to_string()))?;
            let _ = writeln!(out, "service {}", svc.id);
            Vec::new()
        } else if let Some(sc) = ev.scale {
            let scaled = s
                .scale_service(sc.service, sc.replicas, now)
                .map_err(|e| err("scale", e.to_string()))?;
            let _ = writeln!(out, "scale service {} to {}", sc.service, scaled.desired);
            for r in scaled.stopped {
                let _ = writeln!(out, "stop {r} (scaled down)");
            }
            Vec::new()
        } else if let Some(id) = ev.why {
            let why = s
                .pending_reason(WorkloadId(id))
                .unwrap_or_else(|| "not pending".into());
            let _ = writeln!(out, "why w{id}: {why}");
            Vec::new()
        } else {
            return Err(anyhow!("{file}:{line}: events[{i}]: no action"));
        };
        for d in decisions {
            let _ = writeln!(out, "    {}", d.describe(s.engine().fleet()));
        }
    }
    let _ = writeln!(out, "\ntenant               usage(GPUs)  share  lost GPU-h");
    for t in s.tenant_report() {
        let gpus: u64 = t.usage.gpus.iter().sum();
        let _ = writeln!(
            out,
            "{:<20} {:>11}  {:>5.3}  {:>10.2}",
            t.name, gpus, t.dominant_share, t.lost_gpu_hours
        );
    }
    let pending = s.pending_jobs();
    if !pending.is_empty() {
        let _ = writeln!(out, "\npending:");
        for id in pending {
            let _ = writeln!(out, "  {id}: {}", s.pending_reason(id).unwrap_or_default());
        }
    }
    Ok(out)
}

fn parse_spread(v: &str) -> Result<SpreadRule, String> {
    let (level, k) = v
        .split_once(':')
        .ok_or_else(|| format!("'{v}' is not LEVEL:K (e.g. zone:1)"))?;
    let level = match level {
        "domain" => SpreadLevel::Domain,
        "zone" => SpreadLevel::Zone,
        "region" => SpreadLevel::Region,
        "cloud" => SpreadLevel::Cloud,
        other => {
            return Err(format!(
                "level '{other}' is not one of domain, zone, region, cloud"
            ))
        }
    };
    let max_per = k.parse().map_err(|_| format!("'{k}' is not a number"))?;
    Ok(SpreadRule { level, max_per })
}
