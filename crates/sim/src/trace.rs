//! Workloads in: the Philly trace (CSV), Stargrid's own JSONL trace, and the rows they become.
//!
//! Stargrid's trace format is one JSON object per line, of three kinds (`kind` defaults to
//! `job`); ids are unique over the whole file; all times are seconds from the trace's start.
//!
//! ```text
//! {"id": 1, "submit": 0, "duration": 3600, "gpus": 64, "tenant": "pretrain", "priority": "training",
//!  "time_limit": 7200, "checkpoint_interval": 600}
//! {"kind": "service", "id": 2, "submit": 0, "end": 604800, "tenant": "chat", "gpus_per_replica": 8,
//!  "min_replicas": 2, "max_replicas": 64, "inflight_per_replica": 32,
//!  "load": {"daily": {"base": 200, "peak": 1500, "peak_hour": 14}},
//!  "spread": {"level": "zone", "max_per": 32}}
//! {"kind": "sandboxes", "id": 3, "submit": 7200, "tenant": "agents", "count": 100000,
//!  "cpu_millis": 1000, "memory_mib": 2048, "lifetime": {"exp": {"mean": 900}}, "max_retries": 1}
//! ```
//!
//! - **job** (a training gang): `duration` is the run time at full speed (a gang placed across
//!   network levels runs slower, see `speed`); `priority` is one of `preemptible`, `research`,
//!   `training`, `production-inference` (default `research`); `time_limit` defaults to
//!   `duration` rounded up to the hour; `checkpoint_interval` is optional (without it a
//!   requeued job restarts from scratch); `placement` is optional: `{"providers": [...],
//!   "exclude_providers": [...], "regions": [...], "exclude_regions": [...], "preemptible":
//!   bool}` (only preemptible work runs on spot capacity). Services take `placement` too,
//!   and `min_providers` (their replicas span at least that many providers).
//! - **service** (inference): replicas of `gpus_per_replica` GPUs, scaled between
//!   `min_replicas` and `max_replicas` by the queue's autoscaler so that each replica carries
//!   `inflight_per_replica` requests of the `load` curve: `{"daily": {"base", "peak",
//!   "peak_hour"}}` (a cosine day, highest at `peak_hour` of every day) or `{"points": [[t,
//!   inflight], ...]}` (piecewise linear, flat after the last point). `end` is optional (the
//!   service then lives until the rest of the trace is done); `priority` defaults to
//!   `production-inference`; `spread` is an optional rule (`level`: `domain`, `zone`,
//!   `region` or `cloud`; `max_per` replicas in one). A replica may be a prefill/decode unit:
//!   `"roles": [{"name": "prefill", "workers": 1, "gpus": 8}, {"name": "decode", "workers":
//!   2, "gpus": 4}]` (`gpus` per worker; each worker on whole nodes of the fleet's model, in
//!   one NVLink domain); the unit is placed whole, inside one domain or under one network
//!   node, and `gpus_per_replica` is then the roles' total (it may be left out). `gpu` and
//!   `models` name the replicas' model and the others they accept, as for jobs (not with
//!   `roles`); each replica runs on one model.
//! - **sandboxes** (a batch on CPU hosts): `count` sandboxes of `cpu_millis` and `memory_mib`
//!   each, living for a time drawn from `lifetime`: `{"fixed": s}`, `{"exp": {"mean": s}}` or
//!   `{"lognormal": {"median": s, "sigma": x}}`; placed as soon as there is room (what does
//!   not fit waits and starts as sandboxes end); `max_retries` (default 1) host failures the
//!   batch survives by moving.

use model::{PlacementRule, PriorityClass, SpreadRule};
use sched::Time;
use serde::{Deserialize, Serialize};

/// One training job of a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceJob {
    /// Identity (unique within the trace).
    pub id: u64,
    /// Submission time, seconds from the trace's start.
    pub submit: Time,
    /// Run time at full speed, seconds (at least 1).
    pub duration: Time,
    /// GPUs asked for.
    pub gpus: u32,
    /// GPUs on each node, when the trace says (else the whole-host rule, see `fit`).
    pub gpus_per_node: Option<u8>,
    /// The accelerator model it runs on (`None`: the run's default model, see `fit`).
    pub gpu: Option<model::GpuModel>,
    /// Other models it accepts, in order after its own (`"any"`: every model; those the
    /// fleet lacks, of another kind, or named twice are dropped when it runs).
    pub models: Box<[model::GpuModel]>,
    /// A share of one GPU in thousandths (1–999, with `gpus` 1); 0: whole GPUs.
    pub gpu_milli: u16,
    /// CPU millicores on each node (0: none reserved). With `gpus` 0: CPU work on a GPU host.
    pub cpu_millis: u32,
    /// Memory on each node, MiB (0: none reserved).
    pub memory_mib: u32,
    /// Nodes, when the trace says.
    pub nodes: Option<u32>,
    /// Owner.
    pub tenant: String,
    /// Priority class.
    pub priority: PriorityClass,
    /// Declared time limit (for backfill and reservations).
    pub time_limit: Time,
    /// Seconds of work between checkpoints, if the job checkpoints.
    pub checkpoint_interval: Option<Time>,
    /// Providers and regions it may use, and whether it may run on spot capacity (`None`:
    /// anywhere but spot; boxed, since a trace holds a million jobs and most have no rule).
    pub placement: Option<Box<PlacementRule>>,
}

fn is_open(rule: &PlacementRule) -> bool {
    *rule == PlacementRule::default()
}

/// Requests in flight to a service over time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum LoadCurve {
    /// A cosine day: `base` at the quietest hour, `peak` at `peak_hour` (0 ≤ h < 24) of every day.
    Daily {
        /// Lowest in-flight requests.
        base: f64,
        /// Highest in-flight requests.
        peak: f64,
        /// Hour of the day of the peak.
        peak_hour: f64,
    },
    /// Piecewise linear through `(time, in-flight)` points, flat before the first and after the
    /// last.
    Points(Vec<(Time, f64)>),
}

impl LoadCurve {
    /// In-flight requests at `t`.
    pub fn at(&self, t: Time) -> f64 {
        match self {
            LoadCurve::Daily {
                base,
                peak,
                peak_hour,
            } => {
                let hour = (t % 86_400) as f64 / 3600.0;
                let phase = std::f64::consts::TAU * (hour - peak_hour) / 24.0;
                base + (peak - base) * (1.0 + phase.cos()) / 2.0
            }
            LoadCurve::Points(points) => {
                let i = points.partition_point(|p| p.0 <= t);
                match (i.checked_sub(1).map(|k| points[k]), points.get(i)) {
                    (None, Some(first)) => first.1,
                    (Some(last), None) => last.1,
                    (Some(a), Some(b)) => {
                        let f = (t - a.0) as f64 / (b.0 - a.0).max(1) as f64;
                        a.1 + (b.1 - a.1) * f
                    }
                    (None, None) => 0.0,
                }
            }
        }
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        match self {
            LoadCurve::Daily {
                base,
                peak,
                peak_hour,
            } => {
                if !ok(*base) || !ok(*peak) || peak < base {
                    return Err(("load", "needs 0 <= base <= peak".into()));
                }
                if !(0.0..24.0).contains(peak_hour) {
                    return Err(("load", "peak_hour must be in 0..24".into()));
                }
            }
            LoadCurve::Points(points) => {
                if points.is_empty() {
                    return Err(("load", "needs at least one point".into()));
                }
                if points.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(("load", "point times must increase".into()));
                }
                if points.iter().any(|p| !ok(p.1)) {
                    return Err(("load", "in-flight values must be finite and >= 0".into()));
                }
            }
        }
        Ok(())
    }
}

/// One inference service of a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceService {
    /// Identity (unique within the trace).
    pub id: u64,
    /// Creation time.
    pub submit: Time,
    /// Deletion time, if any.
    pub end: Option<Time>,
    /// Owner.
    pub tenant: String,
    /// Priority of its replicas.
    #[serde(default = "inference")]
    pub priority: PriorityClass,
    /// GPUs of one replica (the roles' total when it has roles).
    #[serde(default)]
    pub gpus_per_replica: u32,
    /// The accelerator model its replicas run on (absent: the run's default model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<model::GpuModel>,
    /// Other models its replicas accept, in order after its own (`["any"]`: every model;
    /// those the fleet lacks are dropped when it runs). Not with `roles`.
    #[serde(
        default,
        with = "models::names",
        skip_serializing_if = "<[model::GpuModel]>::is_empty"
    )]
    pub models: Box<[model::GpuModel]>,
    /// The roles of a prefill/decode unit (empty: one gang of `gpus_per_replica`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<TraceRole>,
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// In-flight requests one replica should carry.
    pub inflight_per_replica: f64,
    /// Load over time.
    pub load: LoadCurve,
    /// Spread rule.
    pub spread: Option<SpreadRule>,
    /// Providers and regions its replicas may use.
    #[serde(default, skip_serializing_if = "is_open")]
    pub placement: PlacementRule,
    /// Its replicas span at least this many providers (0 or 1: no rule).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_providers: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One role of a unit replica in a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRole {
    /// Its name.
    pub name: String,
    /// Workers of this role in each replica.
    #[serde(default = "one")]
    pub workers: u32,
    /// GPUs of one worker.
    pub gpus: u32,
}

/// A unit's GPUs over its roles, or the field that is wrong and why.
fn roles_total(roles: &[TraceRole]) -> Result<u32, (String, String)> {
    let bad = |field: &str, reason: String| (field.to_string(), reason);
    if roles.len() > model::GangRequest::MAX_PARTS {
        return Err(bad(
            "roles",
            format!("at most {} roles", model::GangRequest::MAX_PARTS),
        ));
    }
    let mut total = 0u64;
    for (i, r) in roles.iter().enumerate() {
        if r.name.is_empty() || roles[..i].iter().any(|o| o.name == r.name) {
            return Err(bad(
                "roles",
                format!("role {}: names must be given and differ", i + 1),
            ));
        }
        if !(1..=256).contains(&r.workers) || !(1..=100_000).contains(&r.gpus) {
            return Err(bad(
                "roles",
                format!("role '{}': workers 1..=256 and gpus 1..=100000", r.name),
            ));
        }
        total += u64::from(r.workers) * u64::from(r.gpus);
    }
    u32::try_from(total)
        .ok()
        .filter(|t| *t <= 100_000)
        .ok_or_else(|| bad("roles", "more than 100000 GPUs per replica".into()))
}

/// How long a sandbox lives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Lifetime {
    /// Always this many seconds.
    Fixed(Time),
    /// Exponential.
    Exp {
        /// Mean seconds.
        mean: f64,
    },
    /// Log-normal.
    Lognormal {
        /// Median seconds.
        median: f64,
        /// Standard deviation of the logarithm.
        sigma: f64,
    },
}

impl Lifetime {
    /// One draw, in whole seconds (at least 1).
    pub fn draw(&self, rng: &mut crate::rng::Rng) -> Time {
        let secs = match self {
            Lifetime::Fixed(s) => *s as f64,
            Lifetime::Exp { mean } => rng.exp(*mean),
            Lifetime::Lognormal { median, sigma } => median * (sigma * rng.normal()).exp(),
        };
        (secs.ceil() as Time).clamp(1, 100 * 365 * 86_400)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let bad = match self {
            Lifetime::Fixed(s) => *s == 0,
            Lifetime::Exp { mean } => !(mean.is_finite() && *mean >= 1.0),
            Lifetime::Lognormal { median, sigma } => {
                !(median.is_finite() && *median >= 1.0 && sigma.is_finite() && *sigma >= 0.0)
            }
        };
        if bad {
            return Err((
                "lifetime",
                "needs at least 1 second (and sigma >= 0)".into(),
            ));
        }
        Ok(())
    }
}

/// One batch of sandboxes of a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSandboxes {
    /// Identity (unique within the trace).
    pub id: u64,
    /// Submission time.
    pub submit: Time,
    /// Owner.
    pub tenant: String,
    /// Sandboxes in the batch.
    pub count: u32,
    /// CPU of each, millicores.
    pub cpu_millis: u32,
    /// Memory of each, MiB.
    pub memory_mib: u32,
    /// How long each lives.
    pub lifetime: Lifetime,
    /// Host failures the batch survives by moving.
    #[serde(default = "one")]
    pub max_retries: u32,
}

/// A trace read from a file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// Jobs sorted by submission time.
    pub jobs: Vec<TraceJob>,
    /// Inference services sorted by creation time.
    pub services: Vec<TraceService>,
    /// Sandbox batches sorted by submission time.
    pub sandboxes: Vec<TraceSandboxes>,
    /// Rows skipped as bad (only with `skip_bad`).
    pub skipped: usize,
    /// Where each row came from, for messages (empty for a trace made in memory).
    pub lines: RowLines,
}

/// The file and line of each row of a trace, in the order of its lists. Where rows came from
/// is not part of what a trace holds: any two are equal (a trace written and read back is the
/// same trace).
#[derive(Clone, Debug, Default)]
pub struct RowLines {
    /// The file.
    pub file: String,
    /// Line of each job.
    pub jobs: Vec<usize>,
    /// Line of each service.
    pub services: Vec<usize>,
    /// Line of each sandbox batch.
    pub sandboxes: Vec<usize>,
}

impl PartialEq for RowLines {
    fn eq(&self, _: &RowLines) -> bool {
        true
    }
}

/// Sorts `rows` by `key` and `lines` the same way.
fn sort_with_lines<T, K: Ord>(rows: &mut Vec<T>, lines: &mut Vec<usize>, key: impl Fn(&T) -> K) {
    if lines.len() != rows.len() {
        rows.sort_by_key(key);
        return;
    }
    let mut pairs: Vec<(T, usize)> = rows.drain(..).zip(lines.drain(..)).collect();
    pairs.sort_by_key(|(r, _)| key(r));
    for (r, l) in pairs {
        rows.push(r);
        lines.push(l);
    }
}

/// A bad row, named by line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: column '{column}': {reason}")]
pub struct TraceError {
    /// File name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// Column or field.
    pub column: String,
    /// What is wrong.
    pub reason: String,
}

fn limit_from(duration: Time) -> Time {
    duration.div_ceil(3600).max(1) * 3600
}

fn inference() -> PriorityClass {
    PriorityClass::ProductionInference
}

fn one() -> u32 {
    1
}

mod jsonl;
mod models;
mod philly;

pub use jsonl::{read_jsonl, write_jsonl};
pub use philly::{parse_timestamp, read_philly};
#[cfg(test)]
mod tests;
