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

/// Seconds since 1970 of a `YYYY-MM-DD HH:MM:SS` timestamp (UTC, proleptic Gregorian).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hh)
        || !(0..60).contains(&mm)
        || !(0..61).contains(&ss)
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Reads the Philly trace (`timestamp,duration,num_gpus,gpu_time,cluster`). Rows are sorted by
/// submission; times start at the first submission; each cluster is a tenant.
pub fn read_philly(file: &str, text: &str, skip_bad: bool) -> Result<Trace, TraceError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let err = |line: usize, column: &str, reason: String| TraceError {
        file: file.to_string(),
        line,
        column: column.to_string(),
        reason,
    };
    let headers = rdr
        .headers()
        .map_err(|e| err(1, "header", e.to_string()))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| err(1, name, "missing from the header".into()))
    };
    let (c_ts, c_dur, c_gpus, c_cluster) = (
        col("timestamp")?,
        col("duration")?,
        col("num_gpus")?,
        col("cluster")?,
    );
    // An optional column names each job's accelerator model.
    let c_model = col("gpu_model").ok();
    let mut rows: Vec<(i64, usize, TraceJob)> = Vec::new();
    let mut row_lines: Vec<usize> = Vec::new();
    let mut skipped = 0;
    for (i, rec) in rdr.records().enumerate() {
        // The reader knows the line a record starts on (blank lines and quoted line breaks
        // included).
        let line = rec
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(i + 2, |p| p.line() as usize);
        let parsed = (|| -> Result<(i64, TraceJob), TraceError> {
            let rec = rec.map_err(|e| err(line, "row", e.to_string()))?;
            let get =
                |c: usize, name: &str| rec.get(c).ok_or_else(|| err(line, name, "missing".into()));
            let ts_text = get(c_ts, "timestamp")?;
            let ts = parse_timestamp(ts_text).ok_or_else(|| {
                err(
                    line,
                    "timestamp",
                    format!("'{ts_text}' is not YYYY-MM-DD HH:MM:SS"),
                )
            })?;
            let dur_text = get(c_dur, "duration")?;
            let dur: f64 = dur_text
                .trim()
                .parse()
                .map_err(|_| err(line, "duration", format!("'{dur_text}' is not a number")))?;
            if !(dur.is_finite() && (0.0..1e10).contains(&dur)) {
                return Err(err(
                    line,
                    "duration",
                    format!("{dur} is not a duration in seconds"),
                ));
            }
            let gpus_text = get(c_gpus, "num_gpus")?;
            let gpus: u32 = gpus_text.trim().parse().map_err(|_| {
                err(
                    line,
                    "num_gpus",
                    format!("'{gpus_text}' is not a whole number"),
                )
            })?;
            if gpus == 0 || gpus > 100_000 {
                return Err(err(
                    line,
                    "num_gpus",
                    format!("{gpus} is outside 1..=100000"),
                ));
            }
            let tenant = get(c_cluster, "cluster")?.trim().to_string();
            if tenant.is_empty() {
                return Err(err(line, "cluster", "is empty".into()));
            }
            let duration = (dur.ceil() as Time).max(1);
            let gpu = match c_model.map(|c| get(c, "gpu_model")).transpose()? {
                Some(m) if !m.trim().is_empty() => Some(
                    m.trim()
                        .parse::<model::GpuModel>()
                        .map_err(|e| err(line, "gpu_model", e.to_string()))?,
                ),
                _ => None,
            };
            Ok((
                ts,
                TraceJob {
                    gpu,
                    id: (i + 1) as u64,
                    submit: 0,
                    duration,
                    gpus,
                    gpus_per_node: None,
                    nodes: None,
                    tenant,
                    priority: PriorityClass::Research,
                    time_limit: limit_from(duration),
                    checkpoint_interval: None,
                    placement: None,
                    gpu_milli: 0,
                    models: Box::default(),
                    cpu_millis: 0,
                    memory_mib: 0,
                },
            ))
        })();
        match parsed {
            Ok((ts, job)) => {
                rows.push((ts, row_lines.len(), job));
                row_lines.push(line);
            }
            Err(e) if skip_bad => {
                let _ = e;
                skipped += 1;
            }
            Err(e) => return Err(e),
        }
    }
    rows.sort_by_key(|(ts, i, _)| (*ts, *i));
    let start = rows.first().map_or(0, |r| r.0);
    let lines = RowLines {
        file: file.to_string(),
        jobs: rows.iter().map(|(_, k, _)| row_lines[*k]).collect(),
        ..RowLines::default()
    };
    let jobs = rows
        .into_iter()
        .map(|(ts, _, mut j)| {
            j.submit = (ts - start) as Time;
            j
        })
        .collect();
    Ok(Trace {
        jobs,
        skipped,
        lines,
        ..Trace::default()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonJob {
    id: u64,
    submit: Time,
    duration: Time,
    gpus: u32,
    gpus_per_node: Option<u8>,
    nodes: Option<u32>,
    gpu: Option<model::GpuModel>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    gpu_milli: u16,
    #[serde(default)]
    cpu_millis: u32,
    #[serde(default)]
    memory_mib: u32,
    tenant: String,
    #[serde(default)]
    priority: PriorityClass,
    time_limit: Option<Time>,
    checkpoint_interval: Option<Time>,
    #[serde(default)]
    placement: PlacementRule,
}

fn inference() -> PriorityClass {
    PriorityClass::ProductionInference
}

fn one() -> u32 {
    1
}

/// One parsed line.
enum Row {
    Job(TraceJob),
    Service(TraceService),
    Sandboxes(TraceSandboxes),
}

/// Parses one line; errors name the field (or the character for malformed JSON).
fn parse_row(raw: &str) -> Result<Row, (String, String)> {
    let syntax = |e: serde_json::Error| (format!("char {}", e.column()), e.to_string());
    let mut value: serde_json::Value = serde_json::from_str(raw).map_err(syntax)?;
    // The kind picks the type; the other fields are that type's own.
    let kind = match value.as_object_mut().and_then(|o| o.remove("kind")) {
        None => "job".to_string(),
        Some(serde_json::Value::String(k)) => k,
        Some(_) => return Err(("kind".into(), "must be a string".into())),
    };
    // Name the field serde stopped at (a missing field is named in the reason).
    let shape = |e: serde_path_to_error::Error<serde_json::Error>| {
        let path = e.path().to_string();
        let field = if path == "." {
            "line".to_string()
        } else {
            path
        };
        (field, e.into_inner().to_string())
    };
    let bad = |field: &str, reason: &str| (field.to_string(), reason.to_string());
    let tenant_ok = |t: &str| {
        if t.trim().is_empty() {
            Err(bad("tenant", "is empty"))
        } else {
            Ok(())
        }
    };
    match kind.as_str() {
        "job" => {
            let j: JsonJob = serde_path_to_error::deserialize(value).map_err(shape)?;
            if j.duration == 0 {
                return Err(bad("duration", "must be at least 1 second"));
            }
            if j.gpus > 1_000_000 || (j.gpus == 0 && j.cpu_millis == 0) {
                return Err(bad(
                    "gpus",
                    "must be 1..=1000000 (0 only for CPU work on a GPU host, with cpu_millis)",
                ));
            }
            if j.gpu_milli > 999 || (j.gpu_milli > 0 && j.gpus != 1) {
                return Err(bad(
                    "gpu_milli",
                    "must be 1..=999 thousandths of one GPU, with gpus 1",
                ));
            }
            if (j.gpu_milli > 0 || j.gpus == 0)
                && (j.gpus_per_node.is_some_and(|g| g > 1) || j.nodes.is_some_and(|n| n > 1))
            {
                return Err(bad("nodes", "a share or CPU work runs on one node"));
            }
            let models = models::parse(&j.models).map_err(|(f, r)| bad(&f, &r))?;
            if j.checkpoint_interval == Some(0) {
                return Err(bad("checkpoint_interval", "must be at least 1 second"));
            }
            if let Some(g) = j.gpus_per_node {
                if g == 0 || g > model::Resources::MAX_GPUS || !j.gpus.is_multiple_of(u32::from(g))
                {
                    return Err(bad("gpus_per_node", "must be 1..=32 and divide gpus"));
                }
            }
            if let Some(n) = j.nodes {
                if n == 0 || !j.gpus.is_multiple_of(n) {
                    return Err(bad("nodes", "must be at least 1 and divide gpus"));
                }
                if j.gpus_per_node.is_some_and(|g| u32::from(g) * n != j.gpus) {
                    return Err(bad("nodes", "times gpus_per_node must be gpus"));
                }
                if j.gpus / n > u32::from(model::Resources::MAX_GPUS) {
                    return Err(bad("nodes", "leaves more than 32 GPUs per node"));
                }
            }
            tenant_ok(&j.tenant)?;
            Ok(Row::Job(TraceJob {
                id: j.id,
                submit: j.submit,
                duration: j.duration,
                gpus: j.gpus,
                gpus_per_node: j.gpus_per_node,
                nodes: j.nodes,
                gpu: j.gpu,
                models,
                gpu_milli: j.gpu_milli,
                cpu_millis: j.cpu_millis,
                memory_mib: j.memory_mib,
                tenant: j.tenant,
                priority: j.priority,
                time_limit: j
                    .time_limit
                    .unwrap_or_else(|| limit_from(j.duration))
                    .max(1),
                checkpoint_interval: j.checkpoint_interval,
                placement: (!is_open(&j.placement)).then(|| Box::new(j.placement)),
            }))
        }
        "service" => {
            let mut v: TraceService = serde_path_to_error::deserialize(value).map_err(shape)?;
            if !v.roles.is_empty() && !v.models.is_empty() {
                return Err(bad("models", "a unit service runs on one model"));
            }
            if !v.roles.is_empty() {
                let total = roles_total(&v.roles)?;
                if v.gpus_per_replica != 0 && v.gpus_per_replica != total {
                    return Err(bad(
                        "gpus_per_replica",
                        &format!("must be the roles' total ({total}) or left out"),
                    ));
                }
                v.gpus_per_replica = total;
            }
            if v.gpus_per_replica == 0 || v.gpus_per_replica > 100_000 {
                return Err(bad("gpus_per_replica", "must be 1..=100000"));
            }
            if v.max_replicas == 0 || v.max_replicas > model::ServiceSpec::MAX_REPLICAS {
                return Err(bad("max_replicas", "must be 1..=100000"));
            }
            if v.min_replicas > v.max_replicas {
                return Err(bad("min_replicas", "is above max_replicas"));
            }
            if !(v.inflight_per_replica.is_finite() && v.inflight_per_replica > 0.0) {
                return Err(bad("inflight_per_replica", "must be a positive number"));
            }
            if v.end.is_some_and(|e| e <= v.submit) {
                return Err(bad("end", "must be after submit"));
            }
            if v.spread.is_some_and(|r| r.max_per == 0) {
                return Err(bad("spread", "max_per must be at least 1"));
            }
            v.load.check().map_err(|(f, r)| (f.to_string(), r))?;
            tenant_ok(&v.tenant)?;
            Ok(Row::Service(v))
        }
        "sandboxes" => {
            let b: TraceSandboxes = serde_path_to_error::deserialize(value).map_err(shape)?;
            if b.count == 0 || b.count > model::SandboxRequest::MAX_BATCH {
                return Err(bad("count", "must be 1..=1000000"));
            }
            if b.cpu_millis == 0 {
                return Err(bad("cpu_millis", "must be at least 1"));
            }
            b.lifetime.check().map_err(|(f, r)| (f.to_string(), r))?;
            tenant_ok(&b.tenant)?;
            Ok(Row::Sandboxes(b))
        }
        other => Err((
            "kind".into(),
            format!("'{other}' is not one of job, service, sandboxes"),
        )),
    }
}

/// Reads Stargrid's JSONL trace (see the module documentation).
pub fn read_jsonl(file: &str, text: &str, skip_bad: bool) -> Result<Trace, TraceError> {
    let mut trace = Trace::default();
    let mut ids = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let parsed = parse_row(raw).and_then(|row| {
            let id = match &row {
                Row::Job(j) => j.id,
                Row::Service(v) => v.id,
                Row::Sandboxes(b) => b.id,
            };
            if ids.insert(id) {
                Ok(row)
            } else {
                Err(("id".into(), format!("{id} is used twice")))
            }
        });
        match parsed {
            Ok(Row::Job(j)) => {
                trace.jobs.push(j);
                trace.lines.jobs.push(line);
            }
            Ok(Row::Service(v)) => {
                trace.services.push(v);
                trace.lines.services.push(line);
            }
            Ok(Row::Sandboxes(b)) => {
                trace.sandboxes.push(b);
                trace.lines.sandboxes.push(line);
            }
            Err(_) if skip_bad => trace.skipped += 1,
            Err((column, reason)) => {
                return Err(TraceError {
                    file: file.to_string(),
                    line,
                    column,
                    reason,
                })
            }
        }
    }
    let lines = &mut trace.lines;
    lines.file = file.to_string();
    sort_with_lines(&mut trace.jobs, &mut lines.jobs, |j| (j.submit, j.id));
    sort_with_lines(&mut trace.services, &mut lines.services, |v| {
        (v.submit, v.id)
    });
    sort_with_lines(&mut trace.sandboxes, &mut lines.sandboxes, |b| {
        (b.submit, b.id)
    });
    Ok(trace)
}

/// Writes a trace in Stargrid's JSONL format (jobs, then services, then sandbox batches).
pub fn write_jsonl(trace: &Trace) -> String {
    let mut out = String::new();
    for j in &trace.jobs {
        let v = serde_json::json!({
            "id": j.id, "submit": j.submit, "duration": j.duration, "gpus": j.gpus,
            "gpus_per_node": j.gpus_per_node, "nodes": j.nodes, "gpu": j.gpu,
            "tenant": j.tenant, "priority": j.priority, "time_limit": j.time_limit,
            "checkpoint_interval": j.checkpoint_interval,
        });
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            if !j.models.is_empty() {
                o.insert("models".into(), models::to_json(&j.models));
            }
            for (key, value) in [
                ("gpu_milli", u32::from(j.gpu_milli)),
                ("cpu_millis", j.cpu_millis),
                ("memory_mib", j.memory_mib),
            ] {
                if value > 0 {
                    o.insert(key.into(), value.into());
                }
            }
        }
        if let Some(rule) = &j.placement {
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "placement".into(),
                    serde_json::to_value(rule).unwrap_or_default(),
                );
            }
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    let mut line = |kind: &str, mut v: serde_json::Value| {
        if let Some(o) = v.as_object_mut() {
            o.insert("kind".into(), kind.into());
        }
        out.push_str(&v.to_string());
        out.push('\n');
    };
    for s in &trace.services {
        line("service", serde_json::to_value(s).unwrap_or_default());
    }
    for b in &trace.sandboxes {
        line("sandboxes", serde_json::to_value(b).unwrap_or_default());
    }
    out
}

mod models;
#[cfg(test)]
mod tests;
