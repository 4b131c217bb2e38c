//! The Philly trace (CSV: `timestamp,duration,num_gpus,gpu_time,cluster`, and an optional
//! `gpu_model` column): each row a research job of its cluster's tenant, times from the first
//! submission.

use super::*;

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
