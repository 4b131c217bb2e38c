//! A whole zone's agents go silent at once, at a size that fits CI, through the same code
//! `stargrid bench scale` runs at the reference fleet's size: the zone's agent is cut off
//! from the server by a relay (its tasks keep running); the cell marks the zone's nodes down,
//! runs their work in the other zones and keeps starting new work at once; when the relay is
//! healed, the zone's nodes come back and its agent stops the old runs, so no job runs twice.
//! Then the agents move behind two frontends without a node going down.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn a_silent_zone_is_marked_down_its_work_moves_and_nothing_runs_twice_when_it_returns() {
    let out = Command::new(env!("CARGO_BIN_EXE_stargrid"))
        .args(["bench", "scale", "--json"])
        .args(["--gpus", "576", "--cpu-hosts", "0", "--agents", "3"])
        .args(["--interval-ms", "300", "--heartbeat-timeout-s", "2"])
        .args(["--steady-s", "1", "--queued", "100", "--jobs", "100"])
        .args([
            "--latency-jobs",
            "20",
            "--outage-jobs",
            "10",
            "--listing-jobs",
            "0",
            "--fleet-trays",
            "0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outage = &report["zone_outage"];
    let figure = |k: &str| {
        outage[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k}: {outage}"))
    };
    // Every job placed in the zone kept running there while the zone was cut off (its agent
    // heard nothing, so it did not fence itself this soon) ...
    assert_eq!(figure("jobs"), 10.0);
    assert_eq!(figure("kept_running_while_partitioned"), 10.0, "{outage}");
    // ... the cell marked the zone down after the heartbeat timeout, not long after ...
    assert!((2.0..10.0).contains(&figure("marked_down_s")), "{outage}");
    assert!(figure("running_elsewhere_s") < 15.0, "{outage}");
    // ... new work kept starting at once ...
    assert!(figure("submit_to_running_p99_ms") < 1000.0, "{outage}");
    // ... and once the zone was back, its agent stopped every old run: each job runs on one
    // agent only, elsewhere.
    assert!(figure("back_s") < 10.0, "{outage}");
    assert!(figure("old_runs_stopped_s") < 15.0, "{outage}");
    assert_eq!(figure("running_after"), 10.0, "{outage}");
    assert_eq!(report["nodes"], 144);
    // Then the same agents behind two frontends: no node went down in the move, and work
    // submitted through a frontend reaches agents behind frontends.
    let moved = &report["with_frontends"];
    assert_eq!(moved["frontends"], 2, "{moved}");
    assert_eq!(moved["nodes_down_after_move"], 0, "{moved}");
    assert!(
        moved["submit_to_running_p99_ms"].as_f64().unwrap() < 1000.0,
        "{moved}"
    );
    assert!(
        moved["writer_cpu_cores_with_frontends"].as_f64().is_some(),
        "{moved}"
    );
}
