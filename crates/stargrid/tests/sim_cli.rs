//! End-to-end tests of `stargrid sim` run as a user would: a trace generated, run, compared and
//! plotted; spend and what-if reports; bad rows named or skipped; fault files; work that can
//! never fit refused at once.

#![allow(clippy::unwrap_used)]

mod common;

use common::offline::{json, ok, stargrid};

#[test]
fn sim_trace_run_and_compare_write_reports_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    ok(&stargrid(
        &[
            "sim", "trace", "--jobs", "150", "--days", "1", "--gpus", "2304", "-o", "t.jsonl",
        ],
        dir.path(),
    ));
    let r = json(&stargrid(
        &[
            "sim",
            "run",
            "--trace",
            "t.jsonl",
            "--gpus",
            "2304",
            "--json",
            "--out",
            "run",
            "--node-mtbf-hours",
            "500",
        ],
        dir.path(),
    ));
    assert_eq!(r["jobs"], 150);
    assert!(r["jct"]["p99"].as_f64().unwrap() >= r["jct"]["p50"].as_f64().unwrap());
    assert!(r["gpu_utilization"].as_f64().unwrap() > 0.0);
    let text = ok(&stargrid(
        &[
            "sim",
            "compare",
            "--trace",
            "t.jsonl",
            "--gpus",
            "2304",
            "--policies",
            "stargrid,fifo",
            "--out",
            "cmp",
        ],
        dir.path(),
    ));
    assert!(text.contains("stargrid") && text.contains("fifo"), "{text}");
    for f in [
        "report-stargrid.json",
        "report-fifo.json",
        "samples-fifo.csv",
        "summary.csv",
        "utilisation.png",
        "queue_length.png",
        "jct_cdf.png",
    ] {
        let meta = std::fs::metadata(dir.path().join("cmp").join(f)).unwrap();
        assert!(meta.len() > 100, "{f} is empty");
    }
    let png = std::fs::read(dir.path().join("cmp/jct_cdf.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn sim_prints_spend_burn_down_and_the_provider_what_if() {
    let dir = tempfile::tempdir().unwrap();
    let text = ok(&stargrid(
        &[
            "sim",
            "run",
            "--synthetic",
            "200",
            "--days",
            "3",
            "--gpus",
            "5760",
            "--out",
            "o",
        ],
        dir.path(),
    ));
    for want in [
        "spend over",
        "by provider:",
        "by capacity:",
        "committed capacity paid for and idle",
        "commitments at 2027-",
        "year 1 minimum",
        "what if a provider goes dark for 24 h",
    ] {
        assert!(text.contains(want), "missing '{want}' in:\n{text}");
    }
    // One what-if row per provider of the generated fleet.
    for p in ["aws", "gcp", "azure", "oci"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(p) && l.contains('$')),
            "{p}: {text}"
        );
    }
    for f in [
        "spend_by_provider.png",
        "idle_committed.png",
        "commitment_pace.png",
    ] {
        let png = std::fs::read(dir.path().join("o").join(f)).unwrap();
        assert_eq!(&png[1..4], b"PNG", "{f}");
    }
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("o/report-stargrid.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(r["outages"].as_array().unwrap().len(), 4);
    assert_eq!(r["cost"]["commitments"].as_array().unwrap().len(), 4);
    let total = r["cost"]["total_usd"].as_f64().unwrap();
    let by_provider: f64 = r["cost"]["by_provider"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["usd"].as_f64().unwrap())
        .sum();
    assert!(total > 0.0 && (total - by_provider).abs() < 1e-6 * total);
}

#[test]
fn sim_bad_rows_name_line_and_column_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.csv"),
        "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,66.0,1,66.0,a\n2017-10-09 07:02:00,sixty,1,60,b\n",
    )
    .unwrap();
    let out = stargrid(
        &[
            "sim",
            "run",
            "--trace",
            "p.csv",
            "--gpus",
            "16",
            "--no-plots",
            "--out",
            "o",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("p.csv:3: column 'duration': 'sixty' is not a number"),
        "{err}"
    );
    let out = stargrid(
        &[
            "sim",
            "run",
            "--trace",
            "p.csv",
            "--gpus",
            "16",
            "--no-plots",
            "--out",
            "o",
            "--skip-bad",
        ],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 jobs, 0 services, 0 sandbox batches (1 bad rows skipped)"),
        "{err}"
    );
}

#[test]
fn sim_runs_a_mixed_trace_with_a_fault_file() {
    let dir = tempfile::tempdir().unwrap();
    let trace = r#"{"id": 1, "submit": 0, "duration": 3600, "gpus": 8, "tenant": "a"}
{"kind": "service", "id": 2, "submit": 0, "end": 7200, "tenant": "chat", "gpus_per_replica": 8, "min_replicas": 1, "max_replicas": 2, "inflight_per_replica": 10, "load": {"points": [[0, 5], [3600, 20]]}}
{"kind": "sandboxes", "id": 3, "submit": 60, "tenant": "agents", "count": 150, "cpu_millis": 1000, "memory_mib": 1024, "lifetime": {"fixed": 600}}
"#;
    std::fs::write(dir.path().join("t.jsonl"), trace).unwrap();
    std::fs::write(
        dir.path().join("f.toml"),
        "[[fail]]\nat = \"30m\"\nscope = \"h00000\"\nfor = \"1h\"\n",
    )
    .unwrap();
    let args = [
        "sim",
        "run",
        "--trace",
        "t.jsonl",
        "--fleet",
        "fleet.toml",
        "--faults",
        "f.toml",
        "--json",
        "--no-plots",
        "--out",
        "o",
    ];
    // A fleet of two 8-GPU hosts and a CPU host, written by the simulator's own builder.
    let fleet = sim::fleets::hosts_fleet(16, 1).unwrap();
    std::fs::write(
        dir.path().join("fleet.toml"),
        fleet::file::write(&fleet, &model::InstanceCatalog::builtin()),
    )
    .unwrap();
    let out = stargrid(&args, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["jobs"], 1);
    assert_eq!(report["services"], 1);
    assert_eq!(report["sandboxes"], 150);
    assert_eq!(report["failures"], 1);
    assert!(report["sandbox_start_latency"]["p99"].as_f64().unwrap() < 1.0);
    // A fault file naming a scope the fleet does not have: the field and the reason.
    std::fs::write(
        dir.path().join("f.toml"),
        "[[drain]]\nat = 0\nscope = \"nowhere\"\n",
    )
    .unwrap();
    let out = stargrid(&args, dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("drain[0].scope: 'nowhere'"), "{err}");
}

#[test]
fn the_example_fault_file_runs_on_the_default_simulator_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let faults = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/faults.toml");
    let out = stargrid(
        &[
            "sim",
            "run",
            "--synthetic",
            "300",
            "--days",
            "12",
            "--faults",
            faults,
            "--json",
            "--no-plots",
            "--out",
            "o",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The spine and the provider failures are counted; the ramp shows in GPUs in service.
    assert!(
        report["failures"].as_u64().unwrap() >= 2,
        "{}",
        report["failures"]
    );
    let up: Vec<u64> = report["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["gpus_up"].as_u64().unwrap())
        .collect();
    assert!(
        up.iter().min() < up.iter().max(),
        "capacity changes over time"
    );
}

#[test]
fn a_simulation_with_a_job_that_can_never_fit_returns_at_once_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.toml"),
        "[[pools]]\nname = \"p\"\ncloud = \"onprem\"\nregion = \"r\"\n\
         instance_type = \"p5.48xlarge\"\npricing = \"committed\"\nprice_per_hour = 1.0\n\n\
         [[groups]]\npool = \"p\"\nzone = \"z\"\nnetwork = [\"s0\"]\nnodes = \"h[0-1]\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tiny.jsonl"),
        "{\"id\": 1, \"submit\": 0, \"duration\": 3600, \"gpus\": 8, \"tenant\": \"a\"}\n\
         {\"id\": 2, \"submit\": 0, \"duration\": 3600, \"gpus\": 24, \"tenant\": \"a\"}\n",
    )
    .unwrap();
    let args = [
        "sim",
        "run",
        "--trace",
        "tiny.jsonl",
        "--fleet",
        "fleet.toml",
        "--policy",
        "fifo",
        "--no-what-if",
        "--no-plots",
        "--out",
        "out",
    ];
    let out = stargrid(&args, dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("tiny.jsonl:2: column 'gpus': job 2 can never run on this fleet"),
        "{err}"
    );
    // Skipped and counted, the rest runs.
    let mut skip = args.to_vec();
    skip.extend(["--skip-bad", "--json"]);
    let out = stargrid(&skip, dir.path());
    let report = json(&out);
    assert_eq!(
        (report["jobs"].as_u64(), report["unfinished"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("(1 bad rows skipped)"));
}
