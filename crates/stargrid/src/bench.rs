//! `stargrid bench engine`: the engine's figures on the reference fleet (499,968 GB200 GPUs in
//! NVL72 domains + 100,000 CPU hosts). The fleet is first filled by the engine itself with a
//! realistic mix (gangs, inference replicas, partial-tray jobs, sandbox batches), overshot and
//! then partly released so that its holes are what the engine's own policy leaves behind.

use crate::bench_queue::{bench_queue, ModelMix};
use crate::fleet_cmd::GenArgs;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use fleet::generate::generate;
use indicatif::{ProgressBar, ProgressStyle};
use model::{GangRequest, GpuModel, InstanceCatalog, SandboxRequest, WorkloadClass, WorkloadId};
use sched::Engine;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Gang latency by size, sandbox throughput and peak memory.
    Engine(EngineArgs),
    /// Simulator speed: the Philly trace at its own scale and a synthetic year on the
    /// 500K-GPU fleet.
    Sim(SimBenchArgs),
    /// The control plane on loopback: durable submissions per second, submit-to-running latency.
    Live(crate::bench_live::LiveBenchArgs),
    /// One cell at the fleet's real size: every node up and heartbeating (hollow agents),
    /// the server's CPU and memory, jobs accepted and submit-to-running latency with a backlog.
    Scale(crate::bench_scale::ScaleBenchArgs),
    /// Isolated sandboxes started for real on this host: how fast, and what each costs it.
    Sandboxes(crate::bench_sandboxes::SandboxBenchArgs),
    /// The history of finished work at a million jobs: pages with filters and usage sums
    /// through the API.
    History(crate::bench_history::HistoryBenchArgs),
    /// The request gateway on loopback: requests a second and the latency it adds against
    /// calling a replica directly, and an autoscaled replica's time to serving.
    Gateway(crate::bench_gateway::GatewayBenchArgs),
}

#[derive(Args)]
pub struct SimBenchArgs {
    /// Path of philly.csv.
    #[arg(long)]
    pub philly: PathBuf,
    /// GPUs of the Philly-scale fleet (8-GPU hosts).
    #[arg(long, default_value_t = 2504)]
    pub philly_gpus: u64,
    /// Jobs of the synthetic year on the reference fleet (0: skip it).
    #[arg(long, default_value_t = 1_000_000)]
    pub year_jobs: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EngineArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Fraction of GPUs and CPU to fill before measuring.
    #[arg(long, default_value_t = 0.6)]
    pub fill: f64,
    /// Seed of the fill and churn.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scale the number of timed attempts (1.0 = 2,000 for small gangs).
    #[arg(long, default_value_t = 1.0)]
    pub iterations: f64,
    #[command(flatten)]
    pub fleet: GenArgs,
}

/// SplitMix64: a small seeded generator for the benchmark's workload mix.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(crate) fn pick<'a, T>(&mut self, weighted: &'a [(u32, T)]) -> &'a T {
        let total: u32 = weighted.iter().map(|(w, _)| *w).sum();
        let mut r = self.below(u64::from(total)) as u32;
        for (w, t) in weighted {
            if r < *w {
                return t;
            }
            r -= w;
        }
        &weighted[weighted.len() - 1].1
    }
}

/// (weight, GPUs, GPUs per node, class): the fill mix.
pub(crate) const MIX: [(u32, (u32, u8, WorkloadClass)); 15] = [
    (300, (8, 4, WorkloadClass::InferenceReplica)),
    (50, (72, 4, WorkloadClass::InferenceReplica)),
    (30, (1, 1, WorkloadClass::Training)),
    (30, (2, 2, WorkloadClass::Training)),
    (200, (4, 4, WorkloadClass::Training)),
    (150, (8, 4, WorkloadClass::Training)),
    (100, (16, 4, WorkloadClass::Training)),
    (80, (32, 4, WorkloadClass::Training)),
    (60, (64, 4, WorkloadClass::Training)),
    (40, (144, 4, WorkloadClass::Training)),
    (30, (288, 4, WorkloadClass::Training)),
    (20, (576, 4, WorkloadClass::Training)),
    (10, (1152, 4, WorkloadClass::Training)),
    (5, (2304, 4, WorkloadClass::Training)),
    (3, (4608, 4, WorkloadClass::Training)),
];

pub(crate) fn gang(gpus: u32, per_node: u8, class: WorkloadClass) -> GangRequest {
    GangRequest {
        class,
        gpu: GpuModel::Gb200,
        nodes: gpus.div_ceil(u32::from(per_node)),
        gpus_per_node: per_node,
        cpu_millis_per_node: 8_000 * u32::from(per_node),
        memory_mib_per_node: 64 * 1024 * u32::from(per_node),
        segment: None,
        spares: 0,
        parts: Vec::new(),
        gpu_milli: 0,
        models: Vec::new(),
    }
}

struct Filler {
    rng: Rng,
    next_id: u64,
    live_gangs: Vec<(WorkloadId, u64)>,
}

impl Filler {
    fn id(&mut self) -> WorkloadId {
        self.next_id += 1;
        WorkloadId(self.next_id)
    }

    fn place_random_gang(&mut self, e: &mut Engine) -> bool {
        let (gpus, per_node, class) = *self.rng.pick(&MIX);
        let id = self.id();
        let req = gang(gpus, per_node, class);
        let ok = e.place_gang(id, &req, 0).is_ok();
        if ok {
            self.live_gangs.push((id, req.total_gpus()));
        }
        ok
    }

    fn release_random_gang(&mut self, e: &mut Engine) -> u64 {
        if self.live_gangs.is_empty() {
            return 0;
        }
        let i = self.rng.below(self.live_gangs.len() as u64) as usize;
        let (id, gpus) = self.live_gangs.swap_remove(i);
        match e.release(id) {
            Ok(_) => gpus,
            Err(_) => 0,
        }
    }
}

fn percentile(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ns.len() as f64 - 1.0) * p).round() as usize;
    sorted_ns[i] as f64 / 1e6
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1).map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpu}, {cores} cores")
}

pub(crate) fn bar(len: u64, msg: &'static str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb
}

pub fn run(cmd: &BenchCommand) -> Result<()> {
    let a = match cmd {
        BenchCommand::Engine(a) => a,
        BenchCommand::Sim(a) => return bench_sim(a),
        BenchCommand::Live(a) => return crate::bench_live::run(a),
        BenchCommand::Scale(a) => return crate::bench_scale::run(a),
        BenchCommand::Sandboxes(a) => return crate::bench_sandboxes::run(a),
        BenchCommand::History(a) => return crate::bench_history::run(a),
        BenchCommand::Gateway(a) => return crate::bench_gateway::run(a),
    };
    let quiet = a.json;
    let t0 = Instant::now();
    let fleet =
        generate(&a.fleet.spec()?, &InstanceCatalog::builtin()).context("generating the fleet")?;
    let gen_s = t0.elapsed().as_secs_f64();
    let summary = fleet.summary();
    let fleet_heap = fleet.heap_bytes();
    let mut e = Engine::new(fleet);
    let mut f = Filler {
        rng: Rng(a.seed),
        next_id: 0,
        live_gangs: Vec::new(),
    };
    // Fill GPUs past the target, then release at random down to it: realistic holes.
    let (total_gpus, _) = e.gpu_usage();
    let target = (total_gpus as f64 * a.fill) as u64;
    let overshoot = (total_gpus as f64 * (a.fill + 0.15).min(0.97)) as u64;
    let pb = bar(overshoot, "filling GPUs", quiet);
    let mut used = 0u64;
    let mut misses = 0;
    while used < overshoot && misses < 2_000 {
        let before = f.live_gangs.len();
        if f.place_random_gang(&mut e) {
            used += f.live_gangs[before].1;
            pb.set_position(used);
        } else {
            misses += 1;
        }
    }
    while used > target {
        used -= f.release_random_gang(&mut e);
    }
    pb.finish_and_clear();
    // Fill CPU hosts with sandbox batches of mixed shapes.
    let shapes = [
        (1u32, (500u32, 1024u32)),
        (4, (1000, 2048)),
        (2, (2000, 4096)),
        (1, (4000, 16384)),
    ];
    let (cpu_total, _) = e.cpu_host_usage();
    let cpu_target = (cpu_total as f64 * a.fill) as u64;
    let pb = bar(cpu_target, "filling CPU hosts", quiet);
    let mut cpu_used = 0u64;
    let mut sandboxes_live = 0u64;
    while cpu_used < cpu_target {
        let (cpu, mem) = *f.rng.pick(&shapes);
        let count = 1_000 + f.rng.below(99_000) as u32;
        let id = f.id();
        if e.place_sandboxes(
            id,
            &SandboxRequest {
                count,
                cpu_millis: cpu,
                memory_mib: mem,
            },
            0,
        )
        .is_err()
        {
            break;
        }
        cpu_used += u64::from(count) * u64::from(cpu);
        sandboxes_live += u64::from(count);
        pb.set_position(cpu_used.min(cpu_target));
    }
    pb.finish_and_clear();
    let (_, free_gpus) = e.gpu_usage();
    let gpu_fill = 1.0 - free_gpus as f64 / total_gpus.max(1) as f64;
    let whole_free = e.whole_free_domains();

    // Gang latency by size, each attempt after one random churn step (untimed).
    let mut p50 = Map::new();
    let mut p99 = Map::new();
    let mut placed = Map::new();
    let mut quality = Map::new();
    for (gpus, base_iters) in [(8u32, 2000.0), (72, 2000.0), (1152, 300.0), (32768, 40.0)] {
        let iters = ((base_iters * a.iterations) as usize).max(5);
        let pb = bar(iters as u64, "timing gangs", quiet);
        let mut ns = Vec::with_capacity(iters);
        let mut ok = 0;
        let mut score = 0.0;
        for _ in 0..iters {
            // Churn: one random gang ends, then the fill level is restored around the target.
            used -= f.release_random_gang(&mut e);
            let mut misses = 0;
            while used < target && misses < 50 {
                let before = f.live_gangs.len();
                if f.place_random_gang(&mut e) {
                    used += f.live_gangs[before].1;
                } else {
                    misses += 1;
                }
            }
            while used > target + target / 50 {
                used -= f.release_random_gang(&mut e);
            }
            let req = gang(gpus, 4, WorkloadClass::Training);
            let id = f.id();
            let start = Instant::now();
            let r = e.place_gang(id, &req, 0);
            ns.push(start.elapsed().as_nanos() as u64);
            if let Err(err) = &r {
                if std::env::var_os("STARGRID_BENCH_DEBUG").is_some() {
                    eprintln!("{gpus}: {err}");
                }
            }
            if let Ok(p) = r {
                ok += 1;
                score += p.quality.score;
                let _ = e.release(id);
            }
            pb.inc(1);
        }
        pb.finish_and_clear();
        ns.sort_unstable();
        let key = gpus.to_string();
        p50.insert(key.clone(), json!(percentile(&ns, 0.50)));
        p99.insert(key.clone(), json!(percentile(&ns, 0.99)));
        placed.insert(key.clone(), json!(format!("{ok}/{iters}")));
        quality.insert(key, json!(if ok > 0 { score / f64::from(ok) } else { 0.0 }));
    }

    // Sandbox throughput: a batch of 1,000,000, placed and released several times.
    let req = SandboxRequest {
        count: 1_000_000,
        cpu_millis: 1000,
        memory_mib: 2048,
    };
    let mut rates = Vec::new();
    for round in 0..5 {
        let id = f.id();
        let start = Instant::now();
        let r = e.place_sandboxes(id, &req, 0);
        let secs = start.elapsed().as_secs_f64();
        if r.is_ok() {
            rates.push(f64::from(req.count) / secs);
            if round < 4 {
                let _ = e.release(id);
            } else {
                sandboxes_live += u64::from(req.count);
            }
        }
    }
    rates.sort_by(f64::total_cmp);
    let sandbox_rate = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    // Small batches (100 sandboxes each) show the per-request cost, not only the bulk path.
    let small = SandboxRequest {
        count: 100,
        cpu_millis: 1000,
        memory_mib: 2048,
    };
    let mut small_ids = Vec::new();
    let start = Instant::now();
    for _ in 0..10_000 {
        let id = f.id();
        if e.place_sandboxes(id, &small, 0).is_ok() {
            small_ids.push(id);
        }
    }
    let small_secs = start.elapsed().as_secs_f64();
    let small_rate = (small_ids.len() as f64 * f64::from(small.count)) / small_secs.max(1e-9);
    for id in small_ids {
        let _ = e.release(id);
    }
    let rss = peak_rss_bytes();
    let cpu_hosts = e
        .fleet()
        .nodes()
        .iter()
        .filter(|n| n.capacity.gpus == 0)
        .count();
    drop(e);
    let queue = bench_queue(a, quiet, ModelMix::OneModel)?;
    let models = crate::bench_queue::two_models(a, quiet)?;

    let out: Value = json!({
        "machine": machine(),
        "fleet": {
            "nodes": summary.nodes,
            "gpus": summary.gpus,
            "nvlink_domains": summary.nvlink_domains,
            "cpu_hosts": cpu_hosts,
            "generate_s": gen_s,
            "heap_bytes": fleet_heap,
        },
        "gpu_fill": gpu_fill,
        "whole_free_nvl72_domains": whole_free,
        "live_sandboxes": sandboxes_live,
        "gang_p50_ms": p50,
        "gang_p99_ms": p99,
        "gang_placed": placed,
        "gang_quality_mean": quality,
        "sandbox_placements_per_s": sandbox_rate,
        "sandbox_batch100_placements_per_s": small_rate,
        "peak_rss_bytes": rss,
        "queue_pass_ms": queue.pass_ms,
        "queue_first_pass_ms": queue.first_pass_ms,
        "queue_full_pass_ms": queue.full_pass_ms,
        "queue": queue.details,
        "spine_failure_requeue_ms": queue.failure_ms,
        "queue_models": models,
    });
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// `stargrid bench sim`.
fn bench_sim(a: &SimBenchArgs) -> Result<()> {
    use sim::synth::{generate as synth, SynthSpec};
    use sim::{simulate, SimConfig};
    let quiet = a.json;
    let name = a.philly.display().to_string();
    let t0 = Instant::now();
    let text = std::fs::read_to_string(&a.philly).with_context(|| format!("reading {name}"))?;
    let trace = sim::trace::read_philly(&name, &text, false)?;
    let parse_s = t0.elapsed().as_secs_f64();
    let fleet = sim::fleets::hosts_fleet(a.philly_gpus, 0).context("building the Philly fleet")?;
    let pb = bar(trace.jobs.len() as u64, "philly", quiet);
    let t1 = Instant::now();
    let philly = simulate(fleet, &trace, &SimConfig::default(), &mut |d, _| {
        pb.set_position(d)
    })
    .map_err(|e| anyhow::anyhow!("simulating philly: {e}"))?;
    let philly_s = t1.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let mut year = json!(null);
    let mut year_seconds = json!(null);
    if a.year_jobs > 0 {
        let t2 = Instant::now();
        let spec = fleet::generate::GenSpec::default();
        let fleet = generate(&spec, &InstanceCatalog::builtin())
            .context("generating the reference fleet")?;
        let gpus = fleet.summary().gpus;
        let jobs = synth(&SynthSpec {
            jobs: a.year_jobs,
            fleet_gpus: gpus,
            cpu_hosts: spec.cpu_hosts,
            ..SynthSpec::default()
        });
        let units = jobs.jobs.len() + jobs.sandboxes.len() + jobs.services.len();
        let pb = bar(units as u64, "synthetic year", quiet);
        let r = simulate(fleet, &jobs, &SimConfig::default(), &mut |d, _| {
            pb.set_position(d)
        })
        .map_err(|e| anyhow::anyhow!("simulating the year: {e}"))?;
        pb.finish_and_clear();
        let secs = t2.elapsed().as_secs_f64();
        year_seconds = json!(secs);
        year = json!({
            "jobs": jobs.jobs.len(),
            "services": jobs.services.len(),
            "sandbox_batches": jobs.sandboxes.len(),
            "sandboxes": r.sandboxes,
            "fleet_gpus": gpus,
            "cpu_hosts": spec.cpu_hosts,
            "cpu_utilization": r.cpu_utilization,
            "sandbox_start_p99_s": r.sandbox_start_latency.as_ref().map(|s| s.p99),
            "service_shortfall": r.service_shortfall,
            "gpu_utilization": r.gpu_utilization,
            "jct_mean_h": r.jct.mean / 3600.0,
            "queueing_mean_h": r.queueing.mean / 3600.0,
            "makespan_days": r.makespan as f64 / 86_400.0,
        });
    }
    let out = json!({
        "machine": machine(),
        "philly_jobs": trace.jobs.len(),
        "philly_parse_s": parse_s,
        "philly_simulate_s": philly_s,
        "philly_jobs_per_s": trace.jobs.len() as f64 / (parse_s + philly_s),
        "philly": {
            "fleet_gpus": a.philly_gpus,
            "gpu_utilization": philly.gpu_utilization,
            "jct_mean_h": philly.jct.mean / 3600.0,
            "makespan_days": philly.makespan as f64 / 86_400.0,
        },
        "year_500k_seconds": year_seconds,
        "year": year,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
