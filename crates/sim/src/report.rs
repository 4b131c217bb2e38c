//! Metrics out: JCT and queueing statistics, makespan, GPU and CPU utilisation and
//! fragmentation over time, placement quality, lost GPU-hours, sandbox start latency, service
//! shortfall, demand-aware fair-share deviation; as JSON, CSV and PNG plots.

use plotters::prelude::*;
use sched::Time;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Counters the event loop keeps.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Jobs finished.
    pub finished: u64,
    /// Starts (first starts and restarts).
    pub starts: u64,
    /// Requeues and in-place restarts.
    pub restarts: u64,
    /// Node failures.
    pub failures: u64,
    /// Starts of gangs that fit one NVLink domain.
    pub small_gangs: u64,
    /// ... of which placed in one domain.
    pub small_in_one_domain: u64,
    /// Sum of levels spanned over all starts.
    pub levels_sum: u64,
    /// Starts of service replicas.
    pub replica_starts: u64,
    /// Sandboxes ended early by host failures.
    pub sandboxes_lost: u64,
    /// Sandboxes moved off failed hosts.
    pub sandboxes_moved: u64,
    /// Finished workloads last passed to the progress callback.
    pub progress_reported: u64,
}

/// One accelerator model's part of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelUse {
    /// The model.
    pub model: String,
    /// Its GPUs in the fleet.
    pub gpus: u64,
    /// Busy share of its GPU-seconds over the run (jobs and replicas).
    pub gpu_utilization: f64,
    /// Trace jobs that run on it.
    pub jobs: u64,
    /// ... of which finished.
    pub finished: u64,
    /// Mean wait of its jobs that started (first start − submit), seconds.
    pub wait_mean_s: f64,
}

/// The fleet at one instant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Time.
    pub t: Time,
    /// Busy share of the GPUs in service.
    pub gpu_util: f64,
    /// Busy share of the CPU-host millicores in service.
    pub cpu_util: f64,
    /// GPUs in service (not down, delivered).
    pub gpus_up: u64,
    /// Pending jobs and replicas.
    pub queue_len: u64,
    /// Running jobs and replicas.
    pub running: u64,
    /// Sandboxes waiting for room.
    pub sandboxes_waiting: u64,
    /// NVLink domains wholly free.
    pub whole_free_domains: u64,
    /// Distance of the GPUs tenants hold from their max-min fair shares given their demand
    /// (see [`crate::run::fair_deviation`]).
    pub fair_dev: f64,
}

/// Mean and percentiles, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Stats {
    /// Statistics of `(value, weight)` pairs (e.g. a latency shared by a whole placed chunk).
    pub fn weighted(values: &[(f64, u64)]) -> Stats {
        let mut v: Vec<(f64, u64)> = values.iter().filter(|x| x.1 > 0).copied().collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: u64 = v.iter().map(|x| x.1).sum();
        if total == 0 {
            return Stats {
                mean: 0.0,
                p50: 0.0,
                p95: 0.0,
                p99: 0.0,
            };
        }
        let pick = |p: f64| {
            // The value at rank round((total - 1) * p), as `of` picks it.
            let rank = ((total - 1) as f64 * p).round() as u64;
            let mut seen = 0;
            for (x, w) in &v {
                seen += w;
                if seen > rank {
                    return *x;
                }
            }
            v[v.len() - 1].0
        };
        Stats {
            mean: v.iter().map(|(x, w)| x * *w as f64).sum::<f64>() / total as f64,
            p50: pick(0.5),
            p95: pick(0.95),
            p99: pick(0.99),
        }
    }

    fn of(values: &mut [f64]) -> Stats {
        values.sort_by(f64::total_cmp);
        let pick = |p: f64| {
            if values.is_empty() {
                0.0
            } else {
                values[((values.len() - 1) as f64 * p).round() as usize]
            }
        };
        let mean = if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        };
        Stats {
            mean,
            p50: pick(0.5),
            p95: pick(0.95),
            p99: pick(0.99),
        }
    }
}

/// A tenant's share of the training GPU time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantShare {
    /// Tenant.
    pub tenant: String,
    /// GPU-hours of training work it ran.
    pub gpu_hours: f64,
    /// Its share of all training GPU-hours run.
    pub share: f64,
}

/// The report of one simulation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Policy name.
    pub policy: String,
    /// Jobs in the trace.
    pub jobs: u64,
    /// Jobs that finished (`jobs` = `finished` + `unfinished`).
    pub finished: u64,
    /// Jobs that never finished: the run ended when only work that could never start was
    /// left (capacity that never came back, or a rule no node meets).
    pub unfinished: u64,
    /// Sandboxes that never ran to their end for the same reason.
    pub sandboxes_unfinished: u64,
    /// Use and waits per accelerator model of the fleet (or asked for by the trace).
    pub by_model: Vec<ModelUse>,
    /// Job completion time (finish − submit), seconds.
    pub jct: Stats,
    /// Queueing delay (first start − submit), seconds.
    pub queueing: Stats,
    /// Last finish − first submit, seconds.
    pub makespan: Time,
    /// Busy GPU-seconds over in-service GPU-seconds, over the whole run.
    pub gpu_utilization: f64,
    /// Busy CPU-host millicore-seconds over in-service ones, over the whole run.
    pub cpu_utilization: f64,
    /// Share of gangs that fit one NVLink domain and were placed in one.
    pub small_gangs_in_one_domain: f64,
    /// Mean levels spanned per start (0 = one domain).
    pub mean_levels_spanned: f64,
    /// GPU-hours lost to failures and preemption.
    pub gpu_hours_lost: f64,
    /// Requeues and in-place restarts.
    pub restarts: u64,
    /// Node failures.
    pub failures: u64,
    /// Sandboxes in the trace.
    pub sandboxes: u64,
    /// Sandbox start latency (placement − submission), seconds; none without sandboxes.
    pub sandbox_start_latency: Option<Stats>,
    /// Sandboxes ended early by host failures (retries spent or no room to move).
    pub sandboxes_lost: u64,
    /// Inference services in the trace.
    pub services: u64,
    /// Replica starts (first starts, scale-ups and replacements).
    pub replica_starts: u64,
    /// Share of the wanted replica-seconds that were not running (0 = always at the
    /// autoscaler's count).
    pub service_shortfall: f64,
    /// Mean over the samples of the tenants' distance from their max-min fair shares of the
    /// GPUs given their demand (0 = fair).
    pub fair_share_deviation: f64,
    /// Per tenant.
    pub tenants: Vec<TenantShare>,
    /// Samples over time.
    pub samples: Vec<Sample>,
    /// Every job's completion time, sorted (for CDFs).
    #[serde(skip)]
    pub jct_sorted: Vec<f64>,
    /// Spend, idle committed capacity and commitments.
    pub cost: crate::cost::CostSummary,
    /// What each failure of a scope displaced and what was re-placed at once.
    pub failovers: Vec<crate::cost::Failover>,
    /// The what-if of losing each provider (filled by the caller, which runs them).
    pub outages: Vec<crate::cost::OutageImpact>,
}

impl Report {
    /// Builds the report from per-job (submit, first start, finish, tenant, GPU-seconds).
    pub fn build(
        policy: &str,
        per_job: &[(Time, Time, Time, String, u64)],
        tally: &Tally,
        samples: Vec<Sample>,
        gpu_utilization: f64,
        gpu_hours_lost: f64,
    ) -> Report {
        let mut jct: Vec<f64> = per_job.iter().map(|j| (j.2 - j.0) as f64).collect();
        let mut queueing: Vec<f64> = per_job.iter().map(|j| (j.1 - j.0) as f64).collect();
        let first = per_job.iter().map(|j| j.0).min().unwrap_or(0);
        let last = per_job.iter().map(|j| j.2).max().unwrap_or(0);
        let makespan = last.saturating_sub(first);
        let mut by_tenant: BTreeMap<&str, f64> = BTreeMap::new();
        for j in per_job {
            *by_tenant.entry(j.3.as_str()).or_default() += j.4 as f64 / 3600.0;
        }
        let all: f64 = by_tenant.values().sum();
        let tenants: Vec<TenantShare> = by_tenant
            .iter()
            .map(|(t, h)| TenantShare {
                tenant: t.to_string(),
                gpu_hours: *h,
                share: if all > 0.0 { h / all } else { 0.0 },
            })
            .collect();
        // Over time: the mean of the samples' deviations.
        let fair_share_deviation =
            samples.iter().map(|s| s.fair_dev).sum::<f64>() / samples.len().max(1) as f64;
        let jct_stats = Stats::of(&mut jct);
        Report {
            policy: policy.to_string(),
            jobs: per_job.len() as u64,
            finished: per_job.len() as u64,
            unfinished: 0,
            sandboxes_unfinished: 0,
            by_model: Vec::new(),
            jct: jct_stats,
            queueing: Stats::of(&mut queueing),
            makespan,
            gpu_utilization,
            cpu_utilization: 0.0,
            small_gangs_in_one_domain: if tally.small_gangs > 0 {
                tally.small_in_one_domain as f64 / tally.small_gangs as f64
            } else {
                1.0
            },
            mean_levels_spanned: if tally.starts > 0 {
                tally.levels_sum as f64 / tally.starts as f64
            } else {
                0.0
            },
            gpu_hours_lost,
            restarts: tally.restarts,
            failures: tally.failures,
            sandboxes: 0,
            sandbox_start_latency: None,
            sandboxes_lost: tally.sandboxes_lost,
            services: 0,
            replica_starts: tally.replica_starts,
            service_shortfall: 0.0,
            fair_share_deviation,
            tenants,
            samples,
            cost: Default::default(),
            failovers: Vec::new(),
            outages: Vec::new(),
            jct_sorted: jct,
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Samples over time as CSV.
    pub fn samples_csv(&self) -> String {
        let mut out = String::from(
            "t,gpu_util,cpu_util,gpus_up,queue_len,running,sandboxes_waiting,whole_free_domains,fair_dev\n",
        );
        for s in &self.samples {
            out.push_str(&format!(
                "{},{:.6},{:.6},{},{},{},{},{},{:.6}\n",
                s.t,
                s.gpu_util,
                s.cpu_util,
                s.gpus_up,
                s.queue_len,
                s.running,
                s.sandboxes_waiting,
                s.whole_free_domains,
                s.fair_dev
            ));
        }
        out
    }

    /// One CSV row of headline figures (with [`Report::summary_header`]).
    pub fn summary_row(&self) -> String {
        format!(
            "{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{},{:.4},{:.4},{:.4},{:.3},{:.2},{},{:.1},{:.1},{:.4},{:.4}\n",
            self.policy,
            self.jobs,
            self.jct.mean,
            self.jct.p50,
            self.jct.p95,
            self.jct.p99,
            self.queueing.mean,
            self.queueing.p99,
            self.makespan,
            self.gpu_utilization,
            self.cpu_utilization,
            self.small_gangs_in_one_domain,
            self.mean_levels_spanned,
            self.gpu_hours_lost,
            self.restarts,
            self.sandbox_start_latency.as_ref().map_or(0.0, |s| s.p50),
            self.sandbox_start_latency.as_ref().map_or(0.0, |s| s.p99),
            self.service_shortfall,
            self.fair_share_deviation
        )
    }

    /// Header of [`Report::summary_row`].
    pub fn summary_header() -> &'static str {
        "policy,jobs,jct_mean_s,jct_p50_s,jct_p95_s,jct_p99_s,queue_mean_s,queue_p99_s,makespan_s,gpu_util,cpu_util,small_gangs_one_domain,mean_levels_spanned,gpu_hours_lost,restarts,sandbox_start_p50_s,sandbox_start_p99_s,service_shortfall,fair_share_deviation\n"
    }
}

/// Loads a TrueType font for plot text (DejaVu Sans from the system); without one, plots are
/// drawn without text.
fn font_ready() -> bool {
    use std::sync::OnceLock;
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        for path in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
        ] {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    y_max: f64,
) -> PlotResult {
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let text = font_ready();
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(20)
        .x_label_area_size(if text { 40 } else { 10 })
        .y_label_area_size(if text { 60 } else { 10 });
    if text {
        builder.caption(title, ("sans-serif", 24));
    }
    let mut chart = builder.build_cartesian_2d(0.0..x_max, 0.0..y_max.max(1e-9))?;
    if text {
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()?;
    } else {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_y_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()?;
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let drawn = chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(1),
        ))?;
        if text {
            drawn
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Writes `utilisation.png`, `queue_length.png`, `gpus_in_service.png` and `jct_cdf.png` for
/// one or more reports.
pub fn write_plots(dir: &Path, reports: &[Report]) -> Result<Vec<String>, String> {
    // One line per policy of a sample field against days.
    let over_time = |value: fn(&Sample) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        reports
            .iter()
            .map(|r| {
                let points = r
                    .samples
                    .iter()
                    .map(|s| (s.t as f64 / 86_400.0, value(s)))
                    .collect();
                (r.policy.clone(), points)
            })
            .collect()
    };
    let highest = |series: &[(String, Vec<(f64, f64)>)]| {
        series
            .iter()
            .flat_map(|(_, v)| v.iter().map(|p| p.1))
            .fold(1.0, f64::max)
    };
    let util = over_time(|s| s.gpu_util);
    let queue = over_time(|s| s.queue_len as f64);
    let up = over_time(|s| s.gpus_up as f64);
    let up_max = highest(&up);
    let q_max = highest(&queue);
    // JCT CDF on a log10 x axis (hours).
    let cdf: Vec<(String, Vec<(f64, f64)>)> = reports
        .iter()
        .map(|r| {
            let n = r.jct_sorted.len().max(1) as f64;
            let step = (r.jct_sorted.len() / 2000).max(1);
            let point =
                |i: usize, v: f64| ((v / 3600.0).max(1e-3).log10() + 3.0, (i + 1) as f64 / n);
            let mut pts: Vec<(f64, f64)> = r
                .jct_sorted
                .iter()
                .enumerate()
                .step_by(step)
                .map(|(i, v)| point(i, *v))
                .collect();
            if let Some(last) = r.jct_sorted.last() {
                pts.push(point(r.jct_sorted.len() - 1, *last));
            }
            (r.policy.clone(), pts)
        })
        .collect();
    let files = [
        (
            "utilisation.png",
            "GPU utilisation",
            "days",
            "busy share",
            &util,
            1.05,
        ),
        (
            "queue_length.png",
            "Queue length",
            "days",
            "pending jobs",
            &queue,
            q_max * 1.05,
        ),
        (
            "gpus_in_service.png",
            "GPUs in service (not down, delivered)",
            "days",
            "GPUs",
            &up,
            up_max * 1.05,
        ),
        (
            "jct_cdf.png",
            "JCT CDF",
            "log10(JCT in hours) + 3   (3 = 1 h, 4 = 10 h, 5 = 100 h)",
            "fraction of jobs",
            &cdf,
            1.0,
        ),
    ];
    let mut written = Vec::new();
    for (name, title, x, y, series, y_max) in files {
        let path = dir.join(name);
        line_chart(&path, title, x, y, series, y_max)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// Writes the cost charts of a spend summary (a run's, or the live plane's): daily spend per
/// provider, idle committed capacity per provider, and each commitment's pace against its
/// straight line.
pub fn write_cost_plots(dir: &Path, c: &sched::cost::CostSummary) -> Result<Vec<String>, String> {
    let per_day = |rows: &[sched::cost::SpendRow]| -> Vec<(String, Vec<(f64, f64)>)> {
        rows.iter()
            .map(|r| {
                let pts = r
                    .usd_by_day
                    .iter()
                    .enumerate()
                    .map(|(d, usd)| (d as f64 + 0.5, usd / 1e6))
                    .collect();
                (r.name.clone(), pts)
            })
            .collect()
    };
    let top = |series: &[(String, Vec<(f64, f64)>)]| {
        series
            .iter()
            .flat_map(|(_, v)| v.iter().map(|p| p.1))
            .fold(1e-6, f64::max)
            * 1.1
    };
    let spend = per_day(&c.by_provider);
    let idle = per_day(&c.idle_by_provider);
    let pace: Vec<(String, Vec<(f64, f64)>)> = c
        .commitments
        .iter()
        .map(|s| {
            let pts = s
                .pace_by_day
                .iter()
                .enumerate()
                .map(|(d, p)| (d as f64 + 1.0, p * 100.0))
                .collect();
            (s.provider.clone(), pts)
        })
        .collect();
    let files = [
        (
            "spend_by_provider.png",
            "Spend per day by provider",
            "days",
            "million USD",
            &spend,
            top(&spend),
        ),
        (
            "idle_committed.png",
            "Committed capacity paid for and idle, per day",
            "days",
            "million USD",
            &idle,
            top(&idle),
        ),
        (
            "commitment_pace.png",
            "Spend so far against each commitment's straight line (100 = on the line)",
            "days",
            "percent of the line",
            &pace,
            top(&pace).max(110.0),
        ),
    ];
    let mut written = Vec::new();
    for (name, title, x, y, series, y_max) in files {
        if series.iter().all(|(_, v)| v.is_empty()) {
            continue;
        }
        let path = dir.join(name);
        line_chart(&path, title, x, y, series, y_max)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}
