//! `stargrid sim run|compare|trace` (and `frag`, in `sim_frag.rs`): replay a trace (Philly CSV, Stargrid JSONL, or synthetic)
//! through the real queue and engine in virtual time; reports as JSON, CSV and PNG plots.

use crate::fleet_cmd::{catalog, load_fleet};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use fleet::generate::{generate, GenSpec};
use indicatif::{ProgressBar, ProgressStyle};
use model::{Fleet, InstanceCatalog};
use sched::SchedConfig;
use sim::faults::FaultPlan;
use sim::synth::{self, SynthSpec};
use sim::{FaultSpec, Report, SimConfig, Trace};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum SimCommand {
    /// Run one policy over a trace.
    Run(SimArgs),
    /// Run several policies over the same trace and print them side by side.
    Compare(CompareArgs),
    /// Write a synthetic frontier trace in Stargrid's JSONL format.
    Trace(TraceArgs),
    /// The static fragmentation experiment: pods arrive until they ask for 130% of the GPUs,
    /// none ends; the GPU capacity each placement policy has allocated at the first failure.
    Frag(crate::sim_frag::FragArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TraceFormat {
    /// The Philly CSV (`timestamp,duration,num_gpus,gpu_time,cluster`).
    Philly,
    /// Stargrid's JSONL trace.
    Jsonl,
}

#[derive(Args, Clone)]
pub struct Input {
    /// Trace file (.csv: Philly, .jsonl: Stargrid's format).
    #[arg(long, required_unless_present = "synthetic")]
    pub trace: Option<PathBuf>,
    /// Trace format (default: from the extension).
    #[arg(long)]
    pub format: Option<TraceFormat>,
    /// Skip bad rows (counted in the output) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// A model's speed against full speed, e.g. `H100=0.5` (a job there takes twice as long);
    /// repeat for each. Models not named run at full speed.
    #[arg(long, value_name = "MODEL=FACTOR")]
    pub model_speed: Vec<String>,
    /// Instead of a trace: this many synthetic frontier jobs over `--days`.
    #[arg(long, conflicts_with = "trace")]
    pub synthetic: Option<usize>,
    /// Horizon of the synthetic trace in days.
    #[arg(long, default_value_t = 30)]
    pub days: u64,
    /// Offered training load of the synthetic trace (share of the fleet's GPU-seconds).
    #[arg(long, default_value_t = 0.7)]
    pub load: f64,
    /// Inference services per 500,000 GPUs in the synthetic trace (0: none).
    #[arg(long, default_value_t = 8.0)]
    pub services_per_500k: f64,
    /// Sandbox bursts per day in the synthetic trace (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub sandbox_bursts_per_day: f64,
    /// Fleet file (default: 8-GPU hosts for a Philly trace, GB200 NVL72 otherwise).
    #[arg(long)]
    pub fleet: Option<PathBuf>,
    /// GPUs of the built-in fleet (8-GPU hosts for Philly; NVL72 domains otherwise).
    #[arg(long)]
    pub gpus: Option<u64>,
    /// CPU hosts of the built-in fleet (default: none for Philly, one per 5 GPUs otherwise).
    #[arg(long)]
    pub cpu_hosts: Option<u64>,
    /// Fault file (TOML): random failures, timed failures and drains of any scope, capacity
    /// ramps. See `sim::faults` for the format.
    #[arg(long)]
    pub faults: Option<PathBuf>,
    /// Node failures: mean time between failures of one node, in hours.
    #[arg(long)]
    pub node_mtbf_hours: Option<f64>,
    /// Hours a failed node stays down.
    #[arg(long, default_value_t = 4.0)]
    pub repair_hours: f64,
    /// How single-node work (GPU shares, CPU work, one node of whole GPUs) chooses its node:
    /// best-fit, packing, dot-product, fragmentation or packed-gradient.
    #[arg(long, default_value = "best-fit")]
    pub node_score: String,
    /// Seed (faults and synthetic traces).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output folder for report JSON, CSV and PNG plots.
    #[arg(long, default_value = "sim-out")]
    pub out: PathBuf,
    /// Print the report as JSON (run) instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Cost catalogue (TOML: prices and commitments; default: the built-in example
    /// catalogue, which `stargrid catalogue` prints). Prices a `--fleet` file only when given.
    #[arg(long)]
    pub catalogue: Option<PathBuf>,
    /// Date of the run's start, YYYY-MM-DD (default: the earliest commitment's start).
    #[arg(long)]
    pub start_date: Option<String>,
    /// Share of the built-in GB200 fleet's NVLink domains bought on demand.
    #[arg(long, default_value_t = 0.1)]
    pub on_demand_share: f64,
    /// Share of the built-in GB200 fleet's NVLink domains bought as spot capacity.
    #[arg(long, default_value_t = 0.05)]
    pub spot_share: f64,
    /// No plots.
    #[arg(long)]
    pub no_plots: bool,
}

#[derive(Args)]
pub struct SimArgs {
    #[command(flatten)]
    pub input: Input,
    /// Policy: stargrid, fifo, first-fit, slurm, sjf, las.
    #[arg(long, default_value = "stargrid")]
    pub policy: String,
    /// Skip the what-if (one more run per provider, with that provider dark).
    #[arg(long)]
    pub no_what_if: bool,
    /// When the provider goes dark in the what-if, in days from the start (default: a third
    /// of the way through the trace's submissions).
    #[arg(long)]
    pub outage_at_days: Option<f64>,
    /// How long it stays dark, in hours.
    #[arg(long, default_value_t = 24.0)]
    pub outage_hours: f64,
}

#[derive(Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub input: Input,
    /// Policies to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "stargrid,fifo,first-fit,slurm,sjf,las"
    )]
    pub policies: Vec<String>,
}

#[derive(Args)]
pub struct TraceArgs {
    /// Training jobs.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// CPU hosts the sandbox bursts are scaled to (default: one per 5 GPUs; 0: no sandboxes).
    #[arg(long)]
    pub cpu_hosts: Option<u64>,
    /// Inference services per 500,000 GPUs (0: none).
    #[arg(long, default_value_t = 8.0)]
    pub services_per_500k: f64,
    /// Horizon in days.
    #[arg(long, default_value_t = 30)]
    pub days: u64,
    /// GPUs of the fleet it is scaled to.
    #[arg(long, default_value_t = 499_968)]
    pub gpus: u64,
    /// Offered training load (share of the fleet's GPU-seconds).
    #[arg(long, default_value_t = 0.7)]
    pub load: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output file (default: standard output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// A loaded input: the trace and the fleet to run it on, priced.
pub struct Loaded {
    pub trace: Trace,
    pub fleet: Fleet,
    pub label: String,
    /// Commitments the spend is measured against.
    pub commitments: Vec<model::commitment::Commitment>,
    /// Unix seconds of the run's time 0.
    pub epoch: u64,
}

impl Loaded {
    /// Workloads the progress bar counts: jobs, sandbox batches, services with an end.
    fn units(&self) -> u64 {
        let t = &self.trace;
        (t.jobs.len() + t.sandboxes.len() + t.services.iter().filter(|v| v.end.is_some()).count())
            as u64
    }
}

/// Reads the trace and builds (or loads) the fleet.
pub fn load(input: &Input) -> Result<Loaded> {
    let default_gpus = 72 * 1024;
    let gpus = input.gpus.unwrap_or(default_gpus);
    let cpu_hosts = input.cpu_hosts.unwrap_or(gpus / 5);
    let (trace, philly, label) = match (&input.trace, input.synthetic) {
        (Some(path), _) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
            let format = input.format.unwrap_or(if name.ends_with(".csv") {
                TraceFormat::Philly
            } else {
                TraceFormat::Jsonl
            });
            let trace = match format {
                TraceFormat::Philly => sim::trace::read_philly(&name, &text, input.skip_bad)?,
                TraceFormat::Jsonl => sim::trace::read_jsonl(&name, &text, input.skip_bad)?,
            };
            (trace, matches!(format, TraceFormat::Philly), name)
        }
        (None, Some(n)) => {
            let spec = SynthSpec {
                jobs: n,
                fleet_gpus: gpus,
                horizon: input.days * 86_400,
                cpu_hosts,
                load: input.load,
                services_per_500k: input.services_per_500k,
                sandbox_bursts_per_day: input.sandbox_bursts_per_day,
                seed: input.seed,
                ..SynthSpec::default()
            };
            (
                synth::generate(&spec),
                false,
                format!("synthetic {n} jobs over {} days", input.days),
            )
        }
        (None, None) => bail!("give --trace FILE or --synthetic N"),
    };
    let mut fleet = match (&input.fleet, philly) {
        (Some(f), _) => load_fleet(f, catalog(None)?)?,
        (None, true) => {
            sim::fleets::hosts_fleet(input.gpus.unwrap_or(2504), input.cpu_hosts.unwrap_or(0))
                .context("building the host fleet")?
        }
        (None, false) => {
            let spec = GenSpec {
                gpus,
                cpu_hosts,
                on_demand_share: input.on_demand_share,
                spot_share: input.spot_share,
                ..GenSpec::default()
            };
            generate(&spec, &InstanceCatalog::builtin()).context("generating the GB200 fleet")?
        }
    };
    let catalogue = crate::cost_view::load_catalogue(input.catalogue.as_deref())?;
    if input.catalogue.is_some() || input.fleet.is_none() {
        let unpriced = catalogue.apply(&mut fleet);
        if !unpriced.is_empty() && input.catalogue.is_some() {
            eprintln!(
                "note: the catalogue has no rate for {} of the fleet's {} pools (e.g. {}); they keep the fleet's prices",
                unpriced.len(),
                fleet.pools().len(),
                fleet.pool(unpriced[0]).name
            );
        }
    }
    let epoch = match &input.start_date {
        Some(d) => {
            let at: toml::value::Datetime = d
                .parse()
                .map_err(|_| anyhow::anyhow!("--start-date: '{d}' is not a date (YYYY-MM-DD)"))?;
            fleet::catalogue::unix_seconds(&at).map_err(|e| anyhow::anyhow!("--start-date: {e}"))?
        }
        None => catalogue
            .commitments
            .iter()
            .map(|c| c.start)
            .min()
            .unwrap_or(DEFAULT_EPOCH),
    };
    // Work that could never fit the fleet, even empty, is refused (or skipped) now, by line.
    let mut trace = trace;
    sim::fit::check(&mut trace, &fleet, input.skip_bad)?;
    Ok(Loaded {
        trace,
        fleet,
        label,
        commitments: catalogue.commitments,
        epoch,
    })
}

/// 2027-01-01, the start of a run when no commitment dates it.
const DEFAULT_EPOCH: u64 = 1_798_761_600;

fn config(input: &Input, loaded: &Loaded, policy: &str) -> Result<SimConfig> {
    let mut sched = SchedConfig::policy(policy).with_context(|| {
        format!(
            "--policy: unknown policy '{policy}' (known: {})",
            SchedConfig::POLICIES.join(", ")
        )
    })?;
    sched.node_scoring = crate::server_cmd::node_scoring(&input.node_score)?;
    let mut faults = match &input.faults {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
            FaultPlan::parse(&name, &text)?
        }
        None => FaultPlan::default(),
    };
    match input.node_mtbf_hours {
        Some(h) if !(h.is_finite() && h > 0.0) => {
            bail!("--node-mtbf-hours: must be a positive number")
        }
        Some(_) if faults.random.is_some() => {
            bail!("--node-mtbf-hours: the fault file already sets [random]")
        }
        Some(h) => {
            faults.random = Some(FaultSpec {
                node_mtbf: h * 3600.0,
                repair: (input.repair_hours.max(0.0) * 3600.0) as u64,
            })
        }
        None => {}
    }
    let mut speed = sim::speed::SpeedModel::default();
    for entry in &input.model_speed {
        let bad =
            || anyhow::anyhow!("--model-speed '{entry}': expected MODEL=FACTOR, FACTOR in (0, 1]");
        let (name, factor) = entry.split_once('=').ok_or_else(bad)?;
        let m: model::GpuModel = name
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("--model-speed '{entry}': {e}"))?;
        let f: f64 = factor.trim().parse().map_err(|_| bad())?;
        if !(f.is_finite() && f > 0.0 && f <= 1.0) {
            return Err(bad());
        }
        speed.models.retain(|(k, _)| *k != m);
        speed.models.push((m, f));
    }
    Ok(SimConfig {
        policy: policy.to_string(),
        sched,
        faults,
        seed: input.seed,
        commitments: loaded.commitments.clone(),
        epoch: loaded.epoch,
        speed,
        ..SimConfig::default()
    })
}

/// Runs one policy over a loaded input, with a progress bar on a terminal.
pub fn run_one(loaded: &Loaded, input: &Input, policy: &str, quiet: bool) -> Result<Report> {
    let cfg = config(input, loaded, policy)?;
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(loaded.units())
    };
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} workloads ({per_sec})")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(policy.to_string());
    let report = sim::simulate(loaded.fleet.clone(), &loaded.trace, &cfg, &mut |done, _| {
        pb.set_position(done)
    })
    .map_err(|e| anyhow::anyhow!("simulating {policy}: {e}"))?;
    pb.finish_and_clear();
    if report.unfinished + report.sandboxes_unfinished > 0 {
        eprintln!(
            "{policy}: {} of {} jobs and {} sandboxes never finished: the run ended when only \
             work that could never start was left (capacity that never came back, or a \
             placement rule no node meets)",
            report.unfinished, report.jobs, report.sandboxes_unfinished
        );
    }
    Ok(report)
}

/// Runs the what-if: the baseline's config once more per provider, that provider dark.
fn what_if(
    loaded: &Loaded,
    a: &SimArgs,
    baseline: &Report,
) -> Result<Vec<sim::cost::OutageImpact>> {
    if !(a.outage_hours.is_finite() && a.outage_hours > 0.0) {
        bail!("--outage-hours: must be a positive number");
    }
    let at = match a.outage_at_days {
        Some(d) if !(d.is_finite() && d >= 0.0) => bail!("--outage-at-days: must be 0 or more"),
        Some(d) => (d * 86_400.0) as u64,
        None => {
            let last = loaded
                .trace
                .jobs
                .iter()
                .map(|j| j.submit)
                .max()
                .unwrap_or(0);
            (last / 3).div_ceil(86_400) * 86_400
        }
    };
    let cfg = config(&a.input, loaded, &a.policy)?;
    let providers = {
        let mut v: Vec<&str> = loaded
            .fleet
            .pools()
            .iter()
            .map(|p| p.cloud.as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    if !a.input.json {
        eprintln!("what-if: {providers} more runs, each with one provider dark");
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    sim::cost::provider_outages(
        &loaded.fleet,
        &loaded.trace,
        &cfg,
        baseline,
        at,
        (a.outage_hours * 3600.0) as u64,
        threads,
    )
    .map_err(|e| anyhow::anyhow!(e))
}

fn write_outputs(out: &Path, reports: &[Report], plots: bool) -> Result<Vec<String>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    let mut summary = String::from(Report::summary_header());
    for r in reports {
        let json = out.join(format!("report-{}.json", r.policy));
        std::fs::write(&json, r.to_json())
            .with_context(|| format!("writing {}", json.display()))?;
        let csv = out.join(format!("samples-{}.csv", r.policy));
        std::fs::write(&csv, r.samples_csv())
            .with_context(|| format!("writing {}", csv.display()))?;
        summary.push_str(&r.summary_row());
        written.push(json.display().to_string());
        written.push(csv.display().to_string());
    }
    let path = out.join("summary.csv");
    std::fs::write(&path, summary).with_context(|| format!("writing {}", path.display()))?;
    written.push(path.display().to_string());
    if plots {
        written.extend(sim::report::write_plots(out, reports).map_err(|e| anyhow::anyhow!(e))?);
        if let [one] = reports {
            written.extend(
                sim::report::write_cost_plots(out, &one.cost).map_err(|e| anyhow::anyhow!(e))?,
            );
        }
    }
    Ok(written)
}

fn hours(s: f64) -> String {
    format!("{:.2}", s / 3600.0)
}

/// The side-by-side table.
pub fn table(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>9} {:>7} {:>9} {:>6}\n",
        "policy",
        "JCT mean",
        "p50",
        "p95",
        "p99",
        "wait mean",
        "makespan",
        "GPU use",
        "1-dom",
        "levels",
        "lost GPUh",
        "fair dev",
        "CPU use",
        "sbx p99",
        "svc short",
        "spend",
        "idle"
    );
    out.push_str(&format!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>9} {:>7} {:>9} {:>6}\n",
        "", "(hours)", "", "", "", "(hours)", "(days)", "", "", "", "", "", "", "(s)", "", "(USD)", ""
    ));
    for r in reports {
        let sandbox_p99 = r
            .sandbox_start_latency
            .as_ref()
            .map_or("-".to_string(), |s| format!("{:.0}", s.p99));
        out.push_str(&format!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.1} {:>6.1}% {:>6.1}% {:>7.2} {:>9.1} {:>7.3} {:>6.2}% {:>9} {:>6.1}% {:>9} {:>5.1}%\n",
            r.policy,
            hours(r.jct.mean),
            hours(r.jct.p50),
            hours(r.jct.p95),
            hours(r.jct.p99),
            hours(r.queueing.mean),
            r.makespan as f64 / 86_400.0,
            r.gpu_utilization * 100.0,
            r.small_gangs_in_one_domain * 100.0,
            r.mean_levels_spanned,
            r.gpu_hours_lost,
            r.fair_share_deviation,
            r.cpu_utilization * 100.0,
            sandbox_p99,
            r.service_shortfall * 100.0,
            crate::cost_view::usd(r.cost.total_usd),
            if r.cost.total_usd > 0.0 {
                r.cost.idle_committed_usd / r.cost.total_usd * 100.0
            } else {
                0.0
            }
        ));
    }
    out
}

/// Each model's use and waits, when the run had more than one.
fn by_model(r: &Report) -> String {
    if r.by_model.len() < 2 {
        return String::new();
    }
    let mut out = String::from("by model:\n");
    for m in &r.by_model {
        out.push_str(&format!(
            "  {:<10} {:>8} GPUs  {:>5.1}% busy  {:>7} jobs ({} finished)  wait mean {:.2} h\n",
            m.model,
            m.gpus,
            m.gpu_utilization * 100.0,
            m.jobs,
            m.finished,
            m.wait_mean_s / 3600.0
        ));
    }
    out
}

fn announce(loaded: &Loaded) {
    // A model no work asks for sits idle: say so before the run.
    if let Some(shapes) = sim::fit::Shapes::of(&loaded.fleet) {
        let t = &loaded.trace;
        for m in model::GpuModel::ALL {
            let sizes = &shapes.by_model[m.index()];
            let asked = m == shapes.model
                || t.jobs.iter().any(|j| j.gpu == Some(m))
                || t.services.iter().any(|v| v.gpu == Some(m));
            if !sizes.is_empty() && !asked {
                eprintln!(
                    "note: no work asks for the fleet's {m} GPUs; work that names no model runs \
                     on {} (the model with the most GPUs), so they stay idle",
                    shapes.model
                );
            }
        }
    }
    let t = &loaded.trace;
    let summary = loaded.fleet.summary();
    eprintln!(
        "{}: {} jobs, {} services, {} sandbox batches ({} bad rows skipped); fleet of {} GPUs and {} nodes",
        loaded.label,
        t.jobs.len(),
        t.services.len(),
        t.sandboxes.len(),
        t.skipped,
        summary.gpus,
        loaded.fleet.nodes().len()
    );
}

pub fn run(cmd: &SimCommand) -> Result<()> {
    match cmd {
        SimCommand::Run(a) => {
            let loaded = load(&a.input)?;
            announce(&loaded);
            let mut report = run_one(&loaded, &a.input, &a.policy, a.input.json)?;
            if !a.no_what_if {
                report.outages = what_if(&loaded, a, &report)?;
            }
            let written = write_outputs(
                &a.input.out,
                std::slice::from_ref(&report),
                !a.input.no_plots,
            )?;
            if a.input.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", table(std::slice::from_ref(&report)));
                print!("{}", by_model(&report));
                let days = report.samples.last().map_or(0.0, |s| s.t as f64 / 86_400.0);
                print!(
                    "{}",
                    crate::cost_view::summary(&report.cost, &format!("over {days:.1} days"))
                );
                print!("{}", crate::cost_view::outages(&report.outages));
                println!("wrote {}", written.join(", "));
            }
            Ok(())
        }
        SimCommand::Compare(a) => {
            let loaded = load(&a.input)?;
            announce(&loaded);
            let mut reports = Vec::new();
            for p in &a.policies {
                reports.push(run_one(&loaded, &a.input, p, false)?);
            }
            let written = write_outputs(&a.input.out, &reports, !a.input.no_plots)?;
            print!("{}", table(&reports));
            println!("wrote {}", written.join(", "));
            Ok(())
        }
        SimCommand::Frag(a) => crate::sim_frag::run(a),
        SimCommand::Trace(a) => {
            let spec = SynthSpec {
                jobs: a.jobs,
                fleet_gpus: a.gpus,
                horizon: a.days * 86_400,
                load: a.load,
                cpu_hosts: a.cpu_hosts.unwrap_or(a.gpus / 5),
                services_per_500k: a.services_per_500k,
                seed: a.seed,
                ..SynthSpec::default()
            };
            let text = sim::trace::write_jsonl(&synth::generate(&spec));
            match &a.output {
                Some(p) => {
                    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
                }
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
    }
}
