//! Workloads in: the Philly trace (CSV), Stargrid's own JSONL trace, and the rows they become.
//!
//! Stargrid's trace format is one JSON object per line:
//!
//! ```text
//! {"id": 1, "submit": 0, "duration": 3600, "gpus": 64, "tenant": "pretrain", "priority": "training",
//!  "time_limit": 7200, "checkpoint_interval": 600}
//! ```
//!
//! `submit`, `duration`, `time_limit` and `checkpoint_interval` are seconds; `duration` is the run
//! time at full speed (a gang placed across network levels runs slower, see `speed`);
//! `priority` is one of `preemptible`, `research`, `training`, `production-inference`
//! (default `research`); `time_limit` defaults to `duration` rounded up to the hour;
//! `checkpoint_interval` is optional (without it a requeued job restarts from scratch).

use model::PriorityClass;
use sched::Time;
use serde::Deserialize;

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
    /// Owner.
    pub tenant: String,
    /// Priority class.
    pub priority: PriorityClass,
    /// Declared time limit (for backfill and reservations).
    pub time_limit: Time,
    /// Seconds of work between checkpoints, if the job checkpoints.
    pub checkpoint_interval: Option<Time>,
}

/// A trace read from a file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// Jobs sorted by submission time.
    pub jobs: Vec<TraceJob>,
    /// Rows skipped as bad (only with `skip_bad`).
    pub skipped: usize,
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
    let mut rows: Vec<(i64, usize, TraceJob)> = Vec::new();
    let mut skipped = 0;
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
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
            Ok((
                ts,
                TraceJob {
                    id: (i + 1) as u64,
                    submit: 0,
                    duration,
                    gpus,
                    tenant,
                    priority: PriorityClass::Research,
                    time_limit: limit_from(duration),
                    checkpoint_interval: None,
                },
            ))
        })();
        match parsed {
            Ok((ts, job)) => rows.push((ts, i, job)),
            Err(e) if skip_bad => {
                let _ = e;
                skipped += 1;
            }
            Err(e) => return Err(e),
        }
    }
    rows.sort_by_key(|(ts, i, _)| (*ts, *i));
    let start = rows.first().map_or(0, |r| r.0);
    let jobs = rows
        .into_iter()
        .map(|(ts, _, mut j)| {
            j.submit = (ts - start) as Time;
            j
        })
        .collect();
    Ok(Trace { jobs, skipped })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonJob {
    id: u64,
    submit: Time,
    duration: Time,
    gpus: u32,
    tenant: String,
    #[serde(default)]
    priority: PriorityClass,
    time_limit: Option<Time>,
    checkpoint_interval: Option<Time>,
}

/// Reads Stargrid's JSONL trace (see the module documentation).
pub fn read_jsonl(file: &str, text: &str, skip_bad: bool) -> Result<Trace, TraceError> {
    let mut jobs = Vec::new();
    let mut skipped = 0;
    let mut ids = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<JsonJob>(raw)
            .map_err(|e| TraceError {
                file: file.to_string(),
                line,
                column: format!("char {}", e.column()),
                reason: e.to_string(),
            })
            .and_then(|j| {
                let bad = |column: &str, reason: &str| TraceError {
                    file: file.to_string(),
                    line,
                    column: column.to_string(),
                    reason: reason.to_string(),
                };
                if j.duration == 0 {
                    return Err(bad("duration", "must be at least 1 second"));
                }
                if j.gpus == 0 || j.gpus > 1_000_000 {
                    return Err(bad("gpus", "must be 1..=1000000"));
                }
                if j.checkpoint_interval == Some(0) {
                    return Err(bad("checkpoint_interval", "must be at least 1 second"));
                }
                if !ids.insert(j.id) {
                    return Err(bad("id", "is used twice"));
                }
                Ok(TraceJob {
                    id: j.id,
                    submit: j.submit,
                    duration: j.duration,
                    gpus: j.gpus,
                    tenant: j.tenant,
                    priority: j.priority,
                    time_limit: j
                        .time_limit
                        .unwrap_or_else(|| limit_from(j.duration))
                        .max(1),
                    checkpoint_interval: j.checkpoint_interval,
                })
            });
        match parsed {
            Ok(j) => jobs.push(j),
            Err(_) if skip_bad => skipped += 1,
            Err(e) => return Err(e),
        }
    }
    jobs.sort_by_key(|j: &TraceJob| (j.submit, j.id));
    Ok(Trace { jobs, skipped })
}

/// Writes jobs in Stargrid's JSONL format.
pub fn write_jsonl(jobs: &[TraceJob]) -> String {
    let mut out = String::new();
    for j in jobs {
        let v = serde_json::json!({
            "id": j.id, "submit": j.submit, "duration": j.duration, "gpus": j.gpus,
            "tenant": j.tenant, "priority": j.priority, "time_limit": j.time_limit,
            "checkpoint_interval": j.checkpoint_interval,
        });
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps_match_known_epochs() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp("2017-10-09 07:01:55"), Some(1_507_532_515));
        assert_eq!(parse_timestamp("2000-02-29 12:00:00"), Some(951_825_600));
        assert_eq!(parse_timestamp("2017-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    const SAMPLE: &str = "timestamp,duration,num_gpus,gpu_time,cluster\n\
2017-10-09 07:01:55,66.0,1,66.0,aa\n\
2017-10-09 06:13:03,2951.0,8,2951.0,bb\n\
2017-10-09 06:13:03,10.5,16,168.0,aa\n";

    #[test]
    fn philly_rows_are_sorted_and_shifted() {
        let t = read_philly("p.csv", SAMPLE, false).unwrap();
        let got: Vec<(u64, Time, Time, u32)> = t
            .jobs
            .iter()
            .map(|j| (j.id, j.submit, j.duration, j.gpus))
            .collect();
        assert_eq!(got, vec![(2, 0, 2951, 8), (3, 0, 11, 16), (1, 2932, 66, 1)]);
        assert_eq!(t.jobs[0].time_limit, 3600);
    }

    #[test]
    fn bad_rows_name_line_and_column_or_are_skipped() {
        let bad = SAMPLE.replace("10.5,16", "ten,16");
        let e = read_philly("p.csv", &bad, false).unwrap_err();
        assert_eq!((e.line, e.column.as_str()), (4, "duration"));
        assert!(
            e.to_string()
                .starts_with("p.csv:4: column 'duration': 'ten' is not a number"),
            "{e}"
        );
        let t = read_philly("p.csv", &bad, true).unwrap();
        assert_eq!((t.jobs.len(), t.skipped), (2, 1));
        let e = read_philly("p.csv", &SAMPLE.replace(",1,66.0", ",0,66.0"), false).unwrap_err();
        assert_eq!(e.column, "num_gpus");
        let e = read_philly("p.csv", "a,b\n1,2\n", false).unwrap_err();
        assert!(e.reason.contains("missing from the header"), "{e}");
    }

    #[test]
    fn jsonl_round_trips_and_reports_lines() {
        let t = read_philly("p.csv", SAMPLE, false).unwrap();
        let text = write_jsonl(&t.jobs);
        let back = read_jsonl("t.jsonl", &text, false).unwrap();
        assert_eq!(back.jobs, t.jobs);
        let e = read_jsonl("t.jsonl", &format!("{text}{{\"id\": 9}}\n"), false).unwrap_err();
        assert_eq!(e.line, 4);
        let e =
            read_jsonl("t.jsonl", &text.replace("\"gpus\":8", "\"gpus\":0"), false).unwrap_err();
        assert_eq!((e.line, e.column.as_str()), (1, "gpus"));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,300}") {
            let _ = read_philly("g.csv", &s, false);
            let _ = read_philly("g.csv", &s, true);
            let _ = read_jsonl("g.jsonl", &s, false);
        }
    }
}
