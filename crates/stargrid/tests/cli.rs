//! End-to-end tests of the `stargrid` binary, run as a user would: files in a temporary
//! directory, real processes, output parsed back.

#![allow(clippy::unwrap_used)]

mod common;

use common::offline::{json, ok, stargrid};
use std::process::Command;

#[test]
fn gen_then_show_reports_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    ok(&stargrid(
        &[
            "fleet",
            "gen",
            "--gpus",
            "720",
            "--cpu-hosts",
            "64",
            "-o",
            "f.toml",
        ],
        dir.path(),
    ));
    let s = json(&stargrid(
        &["fleet", "show", "f.toml", "--json"],
        dir.path(),
    ));
    assert_eq!(s["gpus"], 720);
    assert_eq!(s["nvlink_domains"], 10);
    assert_eq!(s["network_levels"], 3);
    assert_eq!(s["nodes"], 180 + 64);
    assert!(s["cpu_millis"].as_u64().unwrap() > 64 * 192_000);
    // The written file is a valid fleet file that writes back identically.
    ok(&stargrid(
        &[
            "fleet", "export", "f.toml", "--format", "toml", "-o", "g.toml",
        ],
        dir.path(),
    ));
    let f = std::fs::read_to_string(dir.path().join("f.toml")).unwrap();
    let g = std::fs::read_to_string(dir.path().join("g.toml")).unwrap();
    assert_eq!(f, g);
}

const AWS_PAGE: &str = r#"{"Instances": [
 {"InstanceId": "i-01", "InstanceType": "p6e-gb200.36xlarge", "NetworkNodes": ["a", "b", "c"],
  "AvailabilityZone": "us-east-1a", "ZoneId": "use1-az1", "CapacityBlockId": "cb-1"},
 {"InstanceId": "i-02", "InstanceType": "p6e-gb200.36xlarge", "NetworkNodes": ["a", "b", "c"],
  "AvailabilityZone": "us-east-1a", "ZoneId": "use1-az1", "CapacityBlockId": "cb-1"}]}"#;

#[test]
fn aws_import_then_slurm_block_export() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p1.json"), AWS_PAGE).unwrap();
    std::fs::write(
        dir.path().join("p2.json"),
        AWS_PAGE
            .replace("i-01", "i-03")
            .replace("i-02", "i-04")
            .replace("cb-1", "cb-2"),
    )
    .unwrap();
    ok(&stargrid(
        &[
            "fleet",
            "import",
            "--format",
            "aws-topology",
            "p1.json",
            "p2.json",
            "-o",
            "f.toml",
        ],
        dir.path(),
    ));
    let s = json(&stargrid(
        &["fleet", "show", "f.toml", "--json"],
        dir.path(),
    ));
    assert_eq!(
        (
            s["nodes"].as_u64(),
            s["gpus"].as_u64(),
            s["nvlink_domains"].as_u64()
        ),
        (Some(4), Some(16), Some(2))
    );
    let conf = ok(&stargrid(
        &["fleet", "export", "f.toml", "--format", "slurm-block"],
        dir.path(),
    ));
    assert!(conf.contains("BlockName=cb-1 Nodes=i-[01-02]"), "{conf}");
    assert!(conf.contains("BlockName=cb-2 Nodes=i-[03-04]"), "{conf}");
}

#[test]
fn slurm_tree_import_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let conf = "SwitchName=s0 Nodes=gpu[00-03]\nSwitchName=s1 Nodes=gpu[04-07]\nSwitchName=top Switches=s[0-1]\n";
    std::fs::write(dir.path().join("topology.conf"), conf).unwrap();
    ok(&stargrid(
        &[
            "fleet",
            "import",
            "--format",
            "slurm-topology",
            "topology.conf",
            "--instance-type",
            "p5.48xlarge",
            "-o",
            "f.toml",
        ],
        dir.path(),
    ));
    let s = json(&stargrid(
        &["fleet", "show", "f.toml", "--json"],
        dir.path(),
    ));
    assert_eq!(s["gpus"], 64);
    assert_eq!(s["network_levels"], 2);
    let back = ok(&stargrid(
        &["fleet", "export", "f.toml", "--format", "slurm-tree"],
        dir.path(),
    ));
    let body: Vec<&str> = back.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(body.join("\n") + "\n", conf);
}

#[test]
fn place_prints_decisions_and_explanations() {
    let dir = tempfile::tempdir().unwrap();
    ok(&stargrid(
        &[
            "fleet",
            "gen",
            "--gpus",
            "1440",
            "--cpu-hosts",
            "16",
            "--clouds",
            "aws",
            "-o",
            "f.toml",
        ],
        dir.path(),
    ));
    std::fs::write(
        dir.path().join("w.toml"),
        r#"
[[workloads]]
name = "train"
kind = "training"
gpu = "GB200"
nodes = 36
gpus_per_node = 4

[[workloads]]
name = "sandboxes"
kind = "sandboxes"
count = 500
cpu_millis = 1000
memory_mib = 2048

[[workloads]]
name = "too-big"
kind = "training"
gpu = "GB200"
nodes = 400
gpus_per_node = 4
"#,
    )
    .unwrap();
    let d = json(&stargrid(
        &[
            "place",
            "--fleet",
            "f.toml",
            "--workload",
            "w.toml",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(d[0]["placed"], true);
    assert_eq!(d[0]["node_count"], 36);
    assert_eq!(d[0]["quality"]["domains_spanned"], 2);
    assert_eq!(d[1]["placed"], true);
    assert_eq!(d[2]["placed"], false);
    let reason = d[2]["reason"].as_str().unwrap();
    assert!(reason.contains("needs 22 whole NVL72 domains"), "{reason}");
    assert!(reason.contains("has room for"), "{reason}");
    // Human output says the same.
    let text = ok(&stargrid(
        &["place", "--fleet", "f.toml", "--workload", "w.toml"],
        dir.path(),
    ));
    assert!(text.contains("too-big: NOT PLACED: needs"), "{text}");
}

#[test]
fn bad_input_names_file_line_field_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("f.toml"),
        "[[pools]]\nname = \"p\"\ncloud = \"aws\"\nregion = \"r\"\ninstance_type = \"p5.48xlarge\"\n\n[[groups]]\npool = \"p\"\nzone = \"z\"\nnodes = \"h[3-1]\"\n",
    )
    .unwrap();
    let out = stargrid(&["fleet", "show", "f.toml"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("f.toml:10: groups[0].nodes: hostlist 'h[3-1]': range '3-1' runs backwards"),
        "{err}"
    );
    let out = stargrid(&["fleet", "show", "missing.toml"], dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading missing.toml"));
}

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let text = ok(&stargrid(&["demo"], dir.path()));
    assert!(
        text.contains("pretrain-1152gpu: placed on 288 nodes"),
        "{text}"
    );
    assert!(text.contains("too-big-4608gpu: NOT PLACED"), "{text}");
    assert!(text.contains("pretrain-retry: placed"), "{text}");
}

#[test]
fn bench_engine_prints_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let b = json(&stargrid(
        &[
            "bench",
            "engine",
            "--json",
            "--gpus",
            "14400",
            "--cpu-hosts",
            "200",
            "--iterations",
            "0.01",
        ],
        dir.path(),
    ));
    for size in ["8", "72", "1152", "32768"] {
        assert!(b["gang_p50_ms"][size].as_f64().is_some(), "{b}");
        assert!(b["gang_p99_ms"][size].as_f64().is_some(), "{b}");
    }
    assert!(
        b["gang_placed"]["8"].as_str().unwrap().starts_with("20/"),
        "{b}"
    );
    assert!(b["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(b["sandbox_placements_per_s"].as_f64().is_some());
    // The same queue on two models: the first provider's trays are GB300.
    let m = &b["queue_models"];
    assert!(m["gpus_by_model"]["GB300"].as_u64().unwrap() > 0, "{m}");
    assert!(m["gpus_by_model"]["GB200"].as_u64().unwrap() > 0, "{m}");
    for run in ["each_on_one", "half_accept_both"] {
        assert!(m[run]["pass_ms"].as_f64().is_some(), "{m}");
        assert!(m[run]["full_pass_ms"].as_f64().is_some(), "{m}");
        assert!(m[run]["running"].as_u64().unwrap() > 0, "{m}");
        assert!(m[run]["gpu_in_use"].as_f64().unwrap() > 0.0, "{m}");
    }
}

#[test]
fn scenario_plays_queue_rules_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenario.toml");
    let text = ok(&stargrid(
        &["place", "--scenario", example.to_str().unwrap()],
        dir.path(),
    ));
    for expected in [
        "preempt w10 for svc1-r1; it stops at t=520",
        "requeue w10 (lost 130.84 GPU-h)",
        "replace nvl00008t00 by spare nvl00008t16 in w5 (lost 32.00 GPU-h)",
        "requeue w1 (lost 864.00 GPU-h)",
        "w10: needs 16 segments of 16 GB200 nodes",
    ] {
        assert!(text.contains(expected), "missing '{expected}' in:\n{text}");
    }
}

#[test]
fn scenario_errors_name_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let write = |body: &str| {
        std::fs::write(
            dir.path().join("s.toml"),
            format!("[generate]\ngpus = 720\n\n[[tenants]]\nname = \"t\"\n\n{body}"),
        )
        .unwrap()
    };
    write("[[events]]\nat = 0\nsubmit = { id = 1, tenant = \"nobody\", gpu = \"GB200\", nodes = 1, gpus_per_node = 4, time_limit = 10 }\n");
    let out = stargrid(&["place", "--scenario", "s.toml"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s.toml:9: events[0].submit.tenant: no tenant named 'nobody'"),
        "{err}"
    );
    write("[[events]]\nat = 5\npass = true\n[[events]]\nat = 1\npass = true\n");
    let err =
        String::from_utf8_lossy(&stargrid(&["place", "--scenario", "s.toml"], dir.path()).stderr)
            .to_string();
    assert!(
        err.contains("s.toml:11: events[1].at: 1 is before the previous event (5)"),
        "{err}"
    );
    write("[[events]]\nat = 0\npass = true\nfinish = 3\n");
    let err =
        String::from_utf8_lossy(&stargrid(&["place", "--scenario", "s.toml"], dir.path()).stderr)
            .to_string();
    assert!(
        err.contains("events[0].at: each event needs exactly one action"),
        "{err}"
    );
    write("[[events]]\nat = 0\nsubmit = { id = 1, tenant = \"t\", gpu = \"GB200\", nodes = 0, gpus_per_node = 4, time_limit = 10 }\n");
    let err =
        String::from_utf8_lossy(&stargrid(&["place", "--scenario", "s.toml"], dir.path()).stderr)
            .to_string();
    assert!(
        err.contains("events[0].submit: nodes: must be 1..=1000000"),
        "{err}"
    );
}

#[test]
fn catalogue_prints_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let text = ok(&stargrid(&["catalogue"], dir.path()));
    assert!(text.contains("EXAMPLE PRICES, NOT QUOTES"));
    std::fs::write(dir.path().join("c.toml"), &text).unwrap();
    let checked = ok(&stargrid(&["catalogue", "--check", "c.toml"], dir.path()));
    assert!(
        checked.contains("4 providers, 9 prices, 4 commitments"),
        "{checked}"
    );
    std::fs::write(
        dir.path().join("bad.toml"),
        text.replacen("committed = 38.0", "committed = -1.0", 1),
    )
    .unwrap();
    let out = stargrid(&["catalogue", "--check", "bad.toml"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:") && err.contains("prices[0].committed"),
        "{err}"
    );
}

#[test]
fn output_piped_into_a_reader_that_stops_early_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    ok(&stargrid(&["fleet", "gen", "-o", "fleet.toml"], dir.path()));
    // Half a megabyte printed line by line, and to a file that is the pipe: the reader takes
    // one line and goes (as `| head -1` does).
    for args in [
        &["fleet", "export", "fleet.toml", "--format", "slurm-tree"][..],
        &["fleet", "gen", "-o", "/dev/stdout"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args(args)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        assert!(first.starts_with('#'), "{args:?}: {first}");
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_client_flags_are_on_the_commands_that_talk_to_a_server_only() {
    let dir = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| ok(&stargrid(args, dir.path()));
    for talks in [
        &["queue", "--help"][..],
        &["agent", "--help"],
        &["sandbox", "exec", "--help"],
        &["history", "--help"],
    ] {
        let text = help(talks);
        assert!(
            text.contains("--server") && text.contains("--token") && text.contains("--ca"),
            "{talks:?}: {text}"
        );
    }
    for local in [
        &["fleet", "gen", "--help"][..],
        &["sim", "run", "--help"],
        &["up", "--help"],
        &["server", "--help"],
        &["bench", "engine", "--help"],
    ] {
        let text = help(local);
        assert!(
            !text.contains("--server <") && !text.contains("--token <"),
            "{local:?}: {text}"
        );
    }
    // Before a command that does not talk to a server, the flag is refused by name.
    let out = stargrid(&["fleet", "gen", "--server", "http://x"], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--server'"));
}

#[test]
fn printing_commands_end_quietly_when_their_reader_stops_early() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    ok(&stargrid(
        &["fleet", "gen", "--gpus", "4608", "-o", "f.toml"],
        dir.path(),
    ));
    // As `… | head -1`: one line read, then the pipe closed under a long output.
    for args in [
        vec!["fleet", "gen", "--gpus", "46080"],
        vec!["fleet", "show", "f.toml"],
        vec!["catalogue"],
        vec!["sim", "trace", "--jobs", "20000"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stargrid"))
            .args(&args)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "{args:?} printed nothing");
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
