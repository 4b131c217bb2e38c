//! What shape trace work takes on a fleet, and whether it could ever fit it.
//!
//! A trace job asks for `gpus`, with optional `gpus_per_node` or `nodes`, on its `gpu` model or
//! the run's default one. Without a shape the whole-host rule gives it, from the node sizes of
//! that model (never from the order of groups in the fleet file):
//! - a job no larger than the largest node is one node;
//! - else, with a node size that divides it, the largest such size, on whole nodes;
//! - else as few of the largest nodes as hold it, the GPUs spread evenly (rounded up).
//!
//! The run's default model is the fleet's model with the most GPUs (ties: the model order).
//!
//! [`check`] refuses, before a run, a job, service or sandbox batch that could not fit the
//! whole fleet even empty (naming its file and line), or skips and counts it.

use crate::trace::{Trace, TraceError, TraceJob, TraceService};
use model::{Fleet, GangRequest, GpuModel};
use sched::Engine;

/// The fleet's accelerator models and their node sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Shapes {
    /// The model trace work that names none runs on.
    pub model: GpuModel,
    /// GPUs per node of the default model's nodes, distinct, largest first.
    pub sizes: Vec<u8>,
    /// The same for every model, by [`GpuModel::index`] (empty: the fleet has none).
    pub by_model: Vec<Vec<u8>>,
}

impl Shapes {
    /// The shapes of `fleet` (`None`: it has no GPU nodes).
    pub fn of(fleet: &Fleet) -> Option<Shapes> {
        let mut per_model = [0u64; GpuModel::ALL.len()];
        for n in fleet.nodes() {
            if let Some(m) = n.capacity.gpu_model.filter(|_| n.capacity.gpus > 0) {
                per_model[m.index()] += u64::from(n.capacity.gpus);
            }
        }
        // The most GPUs; the first model in the model order on a tie.
        let (best, gpus) =
            per_model
                .iter()
                .enumerate()
                .fold((0, 0), |b, (i, &g)| if g > b.1 { (i, g) } else { b });
        if gpus == 0 {
            return None;
        }
        let mut by_model: Vec<Vec<u8>> = vec![Vec::new(); GpuModel::ALL.len()];
        for n in fleet.nodes() {
            if let Some(m) = n.capacity.gpu_model.filter(|_| n.capacity.gpus > 0) {
                by_model[m.index()].push(n.capacity.gpus);
            }
        }
        for sizes in &mut by_model {
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            sizes.dedup();
        }
        let model = GpuModel::ALL[best];
        Some(Shapes {
            model,
            sizes: by_model[model.index()].clone(),
            by_model,
        })
    }

    /// A fleet's shapes made by hand: one model of these node sizes.
    pub fn single(model: GpuModel, sizes: Vec<u8>) -> Shapes {
        let mut by_model = vec![Vec::new(); GpuModel::ALL.len()];
        by_model[model.index()] = sizes.clone();
        Shapes {
            model,
            sizes,
            by_model,
        }
    }

    /// The node sizes of `model` (largest first; empty when the fleet has none).
    fn sizes_of(&self, model: GpuModel) -> &[u8] {
        self.by_model
            .get(model.index())
            .map_or(&self.sizes[..], |s| &s[..])
    }

    /// The gang `gpus` GPUs of the default model become under the whole-host rule.
    pub fn whole_hosts(&self, gpus: u32) -> GangRequest {
        self.whole_hosts_of(self.model, gpus)
    }

    /// The gang `gpus` GPUs of `model` become under the whole-host rule.
    pub fn whole_hosts_of(&self, model: GpuModel, gpus: u32) -> GangRequest {
        let sizes = self.sizes_of(model);
        let largest = u32::from(sizes.first().copied().unwrap_or(1).max(1));
        let (nodes, per_node) = if gpus <= largest {
            (1, gpus)
        } else if let Some(s) = sizes
            .iter()
            .map(|&s| u32::from(s))
            .find(|&s| s > 0 && gpus.is_multiple_of(s))
        {
            (gpus / s, s)
        } else {
            let nodes = gpus.div_ceil(largest);
            (nodes, gpus.div_ceil(nodes))
        };
        gang(model, nodes, per_node)
    }

    /// The gang trace job `j` becomes: a share of one GPU, CPU work on one GPU host, or its
    /// own shape or the whole-host rule's; with its CPU and memory per node and the other
    /// models it accepts that the fleet has.
    pub fn job_gang(&self, j: &TraceJob) -> GangRequest {
        let model = j.gpu.unwrap_or(self.model);
        let mut g = if j.gpu_milli > 0 || j.gpus == 0 {
            let mut one = gang(model, 1, 1);
            one.gpus_per_node = u8::from(j.gpus > 0);
            one.gpu_milli = j.gpu_milli;
            one
        } else {
            match (j.gpus_per_node, j.nodes) {
                (Some(g), _) => gang(model, j.gpus / u32::from(g.max(1)), u32::from(g)),
                (None, Some(n)) => gang(model, n, j.gpus / n.max(1)),
                (None, None) => self.whole_hosts_of(model, j.gpus),
            }
        };
        g.cpu_millis_per_node = j.cpu_millis;
        g.memory_mib_per_node = j.memory_mib;
        g.models = self.other_models(model, &j.models);
        g
    }

    /// Of `models`, those other than `model` of its kind that the fleet has, each once, at
    /// most [`GangRequest::MAX_MODELS`], in order.
    fn other_models(&self, model: GpuModel, models: &[GpuModel]) -> Vec<GpuModel> {
        let mut out: Vec<GpuModel> = Vec::new();
        for m in models {
            if *m != model
                && m.kind() == model.kind()
                && !self.sizes_of_exact(*m).is_empty()
                && !out.contains(m)
                && out.len() < GangRequest::MAX_MODELS
            {
                out.push(*m);
            }
        }
        out
    }

    /// The node sizes of `model` in this fleet (empty: none).
    fn sizes_of_exact(&self, model: GpuModel) -> &[u8] {
        self.by_model.get(model.index()).map_or(&[], |s| &s[..])
    }

    /// The gang a replica of trace service `v` becomes: a unit of its roles (each worker on
    /// whole hosts, as a job), or one gang of its GPUs on its model or the others it accepts.
    pub fn replica_gang(&self, v: &TraceService) -> GangRequest {
        let model = v.gpu.unwrap_or(self.model);
        if v.roles.is_empty() {
            let mut g = self.whole_hosts_of(model, v.gpus_per_replica);
            g.models = self.other_models(model, &v.models);
            return g;
        }
        let parts = v
            .roles
            .iter()
            .map(|r| {
                let worker = self.whole_hosts_of(model, r.gpus);
                model::GangPart {
                    nodes: worker.nodes * r.workers,
                    gpus_per_node: worker.gpus_per_node,
                    cpu_millis_per_node: 0,
                    memory_mib_per_node: 0,
                    segment: worker.nodes,
                }
            })
            .collect();
        GangRequest::unit(model::WorkloadClass::InferenceReplica, model, parts)
    }
}

fn gang(model: GpuModel, nodes: u32, per_node: u32) -> GangRequest {
    GangRequest {
        class: Default::default(),
        gpu: model,
        nodes: nodes.max(1),
        gpus_per_node: per_node.clamp(1, u32::from(model::Resources::MAX_GPUS)) as u8,
        cpu_millis_per_node: 0,
        memory_mib_per_node: 0,
        segment: None,
        spares: 0,
        parts: Vec::new(),
        gpu_milli: 0,
        models: Vec::new(),
    }
}

/// Checks that every job, service replica and sandbox of `trace` could fit `fleet` empty.
/// With `skip_bad`, what could not is dropped and counted in `trace.skipped`; without, the
/// first is refused as `file:line` (or its id, for a trace made in memory) and the reason.
pub fn check(trace: &mut Trace, fleet: &Fleet, skip_bad: bool) -> Result<(), TraceError> {
    let shapes = Shapes::of(fleet);
    let mut engine = Engine::new(fleet.clone());
    engine.set_explanations(true);
    // Shapes repeat: each is planned once.
    let mut seen: rustc_hash::FxHashMap<GangRequest, Option<String>> = Default::default();
    let mut why_not = |g: &GangRequest| -> Option<String> {
        seen.entry(g.clone())
            .or_insert_with(|| engine.plan_gang(g).err().map(|u| u.reason))
            .clone()
    };
    let file = trace.lines.file.clone();
    let error =
        |what: &str, id: u64, line: Option<usize>, column: &str, reason: String| TraceError {
            file: file.clone(),
            line: line.unwrap_or(0),
            column: column.to_string(),
            reason: format!("{what} {id} can never run on this fleet: {reason}"),
        };
    let no_gpus = || "the fleet has no GPU nodes".to_string();

    let mut keep = Vec::with_capacity(trace.jobs.len());
    for (i, j) in trace.jobs.iter().enumerate() {
        let reason = match &shapes {
            Some(s) => why_not(&s.job_gang(j)),
            None => Some(no_gpus()),
        };
        match reason {
            None => keep.push(true),
            Some(_) if skip_bad => keep.push(false),
            Some(r) => {
                return Err(error(
                    "job",
                    j.id,
                    trace.lines.jobs.get(i).copied(),
                    "gpus",
                    r,
                ))
            }
        }
    }
    retain(
        &mut trace.jobs,
        &mut trace.lines.jobs,
        &keep,
        &mut trace.skipped,
    );

    let mut keep = Vec::with_capacity(trace.services.len());
    for (i, v) in trace.services.iter().enumerate() {
        let reason = match &shapes {
            Some(s) => why_not(&s.replica_gang(v)),
            None => Some(no_gpus()),
        };
        match reason {
            None => keep.push(true),
            Some(_) if skip_bad => keep.push(false),
            Some(r) => {
                let line = trace.lines.services.get(i).copied();
                return Err(error("service", v.id, line, "gpus_per_replica", r));
            }
        }
    }
    retain(
        &mut trace.services,
        &mut trace.lines.services,
        &keep,
        &mut trace.skipped,
    );

    let hosts: Vec<(u32, u32)> = {
        let mut v: Vec<(u32, u32)> = fleet
            .nodes()
            .iter()
            .filter(|n| n.capacity.gpus == 0)
            .map(|n| (n.capacity.cpu_millis, n.capacity.memory_mib))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut keep = Vec::with_capacity(trace.sandboxes.len());
    for (i, b) in trace.sandboxes.iter().enumerate() {
        let holds = |&(c, m): &(u32, u32)| b.cpu_millis <= c && b.memory_mib <= m;
        let reason = if hosts.is_empty() {
            Some("the fleet has no CPU hosts".to_string())
        } else if !hosts.iter().any(holds) {
            Some(format!(
                "one sandbox asks {} millicores and {} MiB; no CPU host has both",
                b.cpu_millis, b.memory_mib
            ))
        } else {
            None
        };
        match reason {
            None => keep.push(true),
            Some(_) if skip_bad => keep.push(false),
            Some(r) => {
                let line = trace.lines.sandboxes.get(i).copied();
                return Err(error("sandbox batch", b.id, line, "cpu_millis", r));
            }
        }
    }
    retain(
        &mut trace.sandboxes,
        &mut trace.lines.sandboxes,
        &keep,
        &mut trace.skipped,
    );
    Ok(())
}

/// Keeps the rows (and their lines) `keep` marks; counts the others.
fn retain<T>(rows: &mut Vec<T>, lines: &mut Vec<usize>, keep: &[bool], skipped: &mut usize) {
    let dropped = keep.iter().filter(|k| !**k).count();
    if dropped == 0 {
        return;
    }
    *skipped += dropped;
    let mut i = 0;
    rows.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    if lines.len() == keep.len() {
        let mut i = 0;
        lines.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
}
