//! `#SBATCH` batch scripts, so that a Slurm user's script submits as it is: the directives
//! become the fields of `POST /v1/jobs`, and the script itself is what each node runs.
//!
//! Supported: `--job-name`/`-J`, `--nodes`/`-N`, `--ntasks-per-node`, `--gpus-per-node`,
//! `--gres=gpu[:model]:N`, `--time`/`-t`, `--account`/`-A` (the tenant), `--qos`/`-q` and
//! `--priority` (a priority class), `--segment`, `--array`/`-a`, `--mem` (per node),
//! `--cpus-per-task`. Directives Stargrid has no use for (`--output`, `--partition`, ...) are
//! listed back as warnings, never silently dropped. Directives stop at the first line that is
//! neither a comment nor blank, as in Slurm.

use std::collections::BTreeMap;
use wire::api::SubmitJob;

/// A script's jobs (one, or one per `--array` index) and the directives it ignored.
#[derive(Debug, PartialEq)]
pub struct Script {
    /// The jobs to submit.
    pub jobs: Vec<SubmitJob>,
    /// `line N: --option is not used by Stargrid (ignored)`.
    pub warnings: Vec<String>,
}

/// A directive that cannot be used: its line, the option and why.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("line {line}: {option}: {reason}")]
pub struct SbatchError {
    /// 1-based line of the directive (0: the script as a whole).
    pub line: usize,
    /// The option, e.g. `--time`.
    pub option: String,
    /// What is wrong.
    pub reason: String,
}

fn err(line: usize, option: &str, reason: impl Into<String>) -> SbatchError {
    SbatchError {
        line,
        option: option.to_string(),
        reason: reason.into(),
    }
}

/// Most array indices one script may ask for.
pub const MAX_ARRAY: usize = 10_000;

/// Whether a file's text is a batch script (it has an `#SBATCH` directive).
pub fn looks_like_sbatch(text: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with("#SBATCH"))
}

/// Slurm time limits: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`; in seconds.
pub fn parse_time(s: &str) -> Option<u64> {
    let num = |x: &str| -> Option<u64> {
        (!x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    };
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (Some(num(d)?), r),
        None => (None, s),
    };
    let parts: Vec<u64> = rest.split(':').map(num).collect::<Option<Vec<_>>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m.checked_mul(60)?,
        (None, [m, s]) => m.checked_mul(60)?.checked_add(*s)?,
        (None, [h, m, s]) | (Some(_), [h, m, s]) => h
            .checked_mul(3600)?
            .checked_add(m.checked_mul(60)?)?
            .checked_add(*s)?,
        (Some(_), [h]) => h.checked_mul(3600)?,
        (Some(_), [h, m]) => h.checked_mul(3600)?.checked_add(m.checked_mul(60)?)?,
        _ => return None,
    };
    secs.checked_add(days.unwrap_or(0).checked_mul(86_400)?)
}

/// `--array` specs: `0-15`, `1,3,5`, `0-15:4` (a step); throttles (`%N`) are refused.
pub fn parse_array(s: &str) -> Result<Vec<u32>, String> {
    if s.contains('%') {
        return Err("a throttle ('%N') is not supported: every index is queued at once".into());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let number = |x: &str| {
            x.parse::<u32>()
                .map_err(|_| format!("'{x}' is not an index (0 or more)"))
        };
        let (range, step) = match part.split_once(':') {
            Some((r, st)) => (r, number(st)?),
            None => (part, 1),
        };
        if step == 0 {
            return Err("a step must be at least 1".into());
        }
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(range)?, number(range)?),
        };
        if last < first {
            return Err(format!("range '{range}' runs backwards"));
        }
        let mut i = first;
        loop {
            out.push(i);
            if out.len() > MAX_ARRAY {
                return Err(format!("more than {MAX_ARRAY} indices"));
            }
            match i.checked_add(step) {
                Some(n) if n <= last => i = n,
                _ => break,
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Memory like Slurm's `--mem`: a number with an optional K, M (default), G or T suffix; MiB.
fn parse_mem(s: &str) -> Option<u32> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], s[i..].to_ascii_uppercase()),
        None => (s, String::new()),
    };
    let n: u64 = digits.parse().ok()?;
    let mib = match unit.trim_end_matches('B') {
        "K" => n / 1024,
        "" | "M" => n,
        "G" => n.checked_mul(1024)?,
        "T" => n.checked_mul(1024 * 1024)?,
        _ => return None,
    };
    u32::try_from(mib).ok()
}

/// Options that take a value, by their short and long names.
const SHORT: [(&str, &str); 7] = [
    ("-J", "--job-name"),
    ("-N", "--nodes"),
    ("-t", "--time"),
    ("-A", "--account"),
    ("-q", "--qos"),
    ("-a", "--array"),
    ("-c", "--cpus-per-task"),
];

/// Splits one directive's words into (option, value) pairs.
fn options(line: usize, words: &[&str]) -> Result<Vec<(String, String)>, SbatchError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let (name, inline) = match w.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (w.to_string(), None),
        };
        let name = SHORT
            .iter()
            .find(|(s, _)| *s == name)
            .map_or(name, |(_, l)| l.to_string());
        if !name.starts_with('-') {
            return Err(err(line, w, "expected an option such as --nodes=2"));
        }
        let value = match inline {
            Some(v) => v,
            None if name == "--exclusive" || name == "--requeue" || name == "--no-requeue" => {
                String::new()
            }
            None => {
                i += 1;
                words
                    .get(i)
                    .map(|v| v.to_string())
                    .ok_or_else(|| err(line, &name, "has no value"))?
            }
        };
        out.push((name, value));
        i += 1;
    }
    Ok(out)
}

/// Parses a batch script into jobs; `default_tenant` is used without `--account`.
pub fn parse(text: &str, default_tenant: &str) -> Result<Script, SbatchError> {
    let mut name = None;
    let mut nodes: u32 = 1;
    let mut tasks_per_node: u32 = 1;
    let mut gpus: Option<(Option<String>, u8)> = None;
    let mut time = None;
    let mut tenant = default_tenant.to_string();
    let mut priority = "research".to_string();
    let mut segment = None;
    let mut array: Option<Vec<u32>> = None;
    let mut memory_mib = 0;
    let mut cpus_per_task: u32 = 0;
    let mut warnings = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        let Some(rest) = t.strip_prefix("#SBATCH") else {
            if t.starts_with('#') {
                continue;
            }
            // The first command ends the directives.
            break;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        for (opt, value) in options(line, &words)? {
            let count = |v: &str| {
                v.parse::<u32>()
                    .ok()
                    .filter(|c| *c > 0)
                    .ok_or_else(|| err(line, &opt, format!("'{v}' is not a count (1 or more)")))
            };
            match opt.as_str() {
                "--job-name" => name = Some(value),
                "--nodes" => {
                    // A range (`2-4`) asks for at least the first; Stargrid places exact sizes.
                    let first = value.split('-').next().unwrap_or("");
                    nodes = count(first)?;
                }
                "--ntasks-per-node" => tasks_per_node = count(&value)?,
                "--gpus-per-node" | "--gres" => {
                    let spec = if opt == "--gres" {
                        value.strip_prefix("gpu:").ok_or_else(|| {
                            err(line, &opt, format!("'{value}': only gpu:[model:]N is used"))
                        })?
                    } else {
                        value.as_str()
                    };
                    let (model, n) = match spec.rsplit_once(':') {
                        Some((m, n)) => (Some(m.to_string()), n),
                        None => (None, spec),
                    };
                    let n = n.parse::<u8>().ok().filter(|c| *c > 0).ok_or_else(|| {
                        err(
                            line,
                            &opt,
                            format!("'{value}': GPUs per node must be 1..=32"),
                        )
                    })?;
                    gpus = Some((model, n));
                }
                "--time" => {
                    let secs = parse_time(&value).filter(|s| *s > 0).ok_or_else(|| {
                        err(
                            line,
                            &opt,
                            format!("'{value}' is not a time (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S)"),
                        )
                    })?;
                    time = Some(secs);
                }
                "--account" => tenant = value,
                "--qos" | "--priority" => priority = value,
                "--segment" => segment = Some(count(&value)?),
                "--array" => {
                    array = Some(parse_array(&value).map_err(|r| err(line, &opt, r))?);
                }
                "--mem" => {
                    memory_mib = parse_mem(&value).ok_or_else(|| {
                        err(line, &opt, format!("'{value}' is not a size (e.g. 64G)"))
                    })?;
                }
                "--cpus-per-task" => cpus_per_task = count(&value)?,
                other => warnings.push(format!(
                    "line {line}: {other} is not used by Stargrid (ignored)"
                )),
            }
        }
    }
    let time_limit_s = time.ok_or_else(|| {
        err(
            0,
            "--time",
            "is required: backfill and reservations trust the time limit",
        )
    })?;
    let (gpu, gpus_per_node) = gpus.ok_or_else(|| {
        err(
            0,
            "--gpus-per-node",
            "no GPUs asked for (CPU-only work runs as sandbox batches)",
        )
    })?;
    let gpu = gpu.map_or_else(|| "GB200".to_string(), |m| m.to_ascii_uppercase());
    let interpreter = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".to_string()]);
    let name = name.unwrap_or_else(|| "sbatch".to_string());
    let job = |index: Option<u32>| {
        let mut env = BTreeMap::new();
        env.insert("SLURM_JOB_NAME".to_string(), name.clone());
        env.insert("SLURM_NNODES".to_string(), nodes.to_string());
        env.insert(
            "SLURM_NTASKS_PER_NODE".to_string(),
            tasks_per_node.to_string(),
        );
        env.insert("SLURM_GPUS_PER_NODE".to_string(), gpus_per_node.to_string());
        if let Some(i) = index {
            env.insert("SLURM_ARRAY_TASK_ID".to_string(), i.to_string());
            env.insert("STARGRID_ARRAY_INDEX".to_string(), i.to_string());
        }
        let mut command = interpreter.clone();
        command.extend(["-c".to_string(), text.to_string()]);
        SubmitJob {
            name: name.clone(),
            tenant: tenant.clone(),
            priority: priority.clone(),
            gpu: gpu.clone(),
            nodes,
            gpus_per_node,
            cpu_millis_per_node: cpus_per_task
                .saturating_mul(tasks_per_node)
                .saturating_mul(1000),
            memory_mib_per_node: memory_mib,
            segment,
            spares: 0,
            time_limit_s,
            command,
            env,
            secret_env: Default::default(),
            workdir: None,
            placement: Default::default(),
            gpu_milli: 0,
            models: Vec::new(),
        }
    };
    let jobs = match array {
        None => vec![job(None)],
        Some(indices) => indices.into_iter().map(|i| job(Some(i))).collect(),
    };
    Ok(Script { jobs, warnings })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const SCRIPT: &str = "#!/bin/bash
#SBATCH --job-name=pretrain
#SBATCH -N 4 --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --time=1-02:30:00
#SBATCH --account=research --qos=training
#SBATCH --segment=2
#SBATCH --output=train-%j.log
#SBATCH --mem=512G --cpus-per-task=8

srun python train.py
#SBATCH --nodes=99
";

    #[test]
    fn a_script_becomes_a_job_that_runs_the_script() {
        let s = parse(SCRIPT, "default").unwrap();
        assert_eq!(s.jobs.len(), 1);
        let j = &s.jobs[0];
        assert_eq!(
            (j.name.as_str(), j.nodes, j.gpus_per_node, j.time_limit_s),
            ("pretrain", 4, 4, 86_400 + 2 * 3600 + 30 * 60)
        );
        assert_eq!(
            (j.tenant.as_str(), j.priority.as_str(), j.segment),
            ("research", "training", Some(2))
        );
        assert_eq!(
            (j.memory_mib_per_node, j.cpu_millis_per_node),
            (512 * 1024, 8000)
        );
        assert_eq!(j.command[..2], ["/bin/bash".to_string(), "-c".to_string()]);
        assert_eq!(j.command[2], SCRIPT);
        assert_eq!(
            s.warnings,
            vec!["line 8: --output is not used by Stargrid (ignored)".to_string()]
        );
    }

    #[test]
    fn the_example_script_parses_without_warnings() {
        let s = parse(include_str!("../../../examples/train.sbatch"), "x").unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let j = &s.jobs[0];
        assert_eq!(
            (j.nodes, j.time_limit_s, j.tenant.as_str()),
            (2, 600, "default")
        );
    }

    #[test]
    fn an_array_is_one_job_per_index() {
        let text = "#SBATCH -t 10 --gres=gpu:h100:8 -a 1-5:2,8\necho $SLURM_ARRAY_TASK_ID\n";
        let s = parse(text, "default").unwrap();
        let ids: Vec<&str> = s
            .jobs
            .iter()
            .map(|j| j.env["SLURM_ARRAY_TASK_ID"].as_str())
            .collect();
        assert_eq!(ids, ["1", "3", "5", "8"]);
        assert_eq!(
            (s.jobs[0].gpu.as_str(), s.jobs[0].gpus_per_node),
            ("H100", 8)
        );
        assert_eq!(s.jobs[0].command[0], "/bin/sh");
        assert_eq!(s.jobs[0].tenant, "default");
    }

    #[test]
    fn bad_directives_name_the_line_and_option() {
        let cases = [
            (
                "#SBATCH --time=1:2:3:4 --gpus-per-node=4\n",
                "line 1: --time",
            ),
            (
                "#SBATCH --time=5\n#SBATCH --nodes=zero --gpus-per-node=4\n",
                "line 2: --nodes",
            ),
            ("#SBATCH --gpus-per-node=4\n", "line 0: --time: is required"),
            ("#SBATCH --time=5\n", "--gpus-per-node: no GPUs"),
            (
                "#SBATCH --time=5 --gpus-per-node=4 --array=0-9%2\n",
                "throttle",
            ),
            (
                "#SBATCH --time=5 --gpus-per-node=4 --array=5-1\n",
                "runs backwards",
            ),
            ("#SBATCH --time=5 --gpus-per-node=4 --mem=lots\n", "--mem"),
            ("#SBATCH --time=5 --gres=tpu:4\n", "only gpu:[model:]N"),
            ("#SBATCH --time\n", "--time: has no value"),
            ("#SBATCH nodes=2\n", "expected an option"),
        ];
        for (text, want) in cases {
            let e = parse(text, "default").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn times_in_every_slurm_form() {
        for (s, secs) in [
            ("90", 5400),
            ("90:30", 5430),
            ("2:00:00", 7200),
            ("3-0", 3 * 86_400),
            ("1-1:30", 86_400 + 5400),
            ("0-0:0:5", 5),
        ] {
            assert_eq!(parse_time(s), Some(secs), "{s}");
        }
        for s in [
            "",
            "-",
            "1-",
            "a",
            "1:2:3:4",
            "1-2:3:4:5",
            "99999999999999999999",
        ] {
            assert_eq!(parse_time(s), None, "{s}");
        }
    }

    proptest! {
        #[test]
        fn any_time_written_in_days_hours_minutes_seconds_reads_back(
            d in 0u64..400, h in 0u64..24, m in 0u64..60, s in 0u64..60
        ) {
            let want = d * 86_400 + h * 3600 + m * 60 + s;
            prop_assert_eq!(parse_time(&format!("{d}-{h}:{m:02}:{s:02}")), Some(want));
            prop_assert_eq!(parse_time(&format!("{}:{m}:{s}", d * 24 + h)), Some(want));
        }

        #[test]
        fn any_text_parses_or_fails_with_a_line_but_never_panics(text in "(#SBATCH[ -=a-z0-9:%,]{0,30}\n|[a-z #]{0,10}\n){0,6}") {
            match parse(&text, "default") {
                Ok(s) => prop_assert!(!s.jobs.is_empty()),
                Err(e) => prop_assert!(e.line <= text.lines().count()),
            }
        }

        #[test]
        fn array_ranges_hold_exactly_their_steps(first in 0u32..1000, len in 0u32..500, step in 1u32..50) {
            let last = first + len;
            let got = parse_array(&format!("{first}-{last}:{step}")).unwrap();
            let want: Vec<u32> = (first..=last).step_by(step as usize).collect();
            prop_assert_eq!(got, want);
        }
    }
}
