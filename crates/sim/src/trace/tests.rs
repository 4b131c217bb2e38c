//! The readers' and writer's tests: rows, refusals by line and field, round trips.
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
    let text = write_jsonl(&t);
    let back = read_jsonl("t.jsonl", &text, false).unwrap();
    assert_eq!(back.jobs, t.jobs);
    let e = read_jsonl("t.jsonl", &format!("{text}{{\"id\": 9}}\n"), false).unwrap_err();
    assert_eq!(e.line, 4);
    let e = read_jsonl("t.jsonl", &text.replace("\"gpus\":8", "\"gpus\":0"), false).unwrap_err();
    assert_eq!((e.line, e.column.as_str()), (1, "gpus"));
}

const MIXED: &str = r#"{"id": 1, "submit": 5, "duration": 60, "gpus": 8, "tenant": "a"}
{"kind": "service", "id": 2, "submit": 0, "tenant": "chat", "gpus_per_replica": 8, "min_replicas": 1, "max_replicas": 4, "inflight_per_replica": 10, "load": {"points": [[0, 5], [100, 25]]}, "spread": {"level": "zone", "max_per": 2}}
{"kind": "sandboxes", "id": 3, "submit": 10, "tenant": "agents", "count": 1000, "cpu_millis": 500, "memory_mib": 1024, "lifetime": {"lognormal": {"median": 60, "sigma": 0.5}}}
"#;

#[test]
fn three_kinds_parse_and_round_trip() {
    let t = read_jsonl("m.jsonl", MIXED, false).unwrap();
    assert_eq!(
        (t.jobs.len(), t.services.len(), t.sandboxes.len()),
        (1, 1, 1)
    );
    let v = &t.services[0];
    assert_eq!(v.priority, PriorityClass::ProductionInference);
    assert_eq!(
        (v.load.at(0), v.load.at(50), v.load.at(1000)),
        (5.0, 15.0, 25.0)
    );
    assert_eq!(t.sandboxes[0].max_retries, 1);
    let back = read_jsonl("m.jsonl", &write_jsonl(&t), false).unwrap();
    assert_eq!(back, t);
}

#[test]
fn a_service_of_roles_parses_round_trips_and_is_checked() {
    let row = r#"{"kind": "service", "id": 2, "submit": 0, "tenant": "chat", "min_replicas": 1, "max_replicas": 4, "inflight_per_replica": 10, "load": {"points": [[0, 5]]}, "roles": [{"name": "prefill", "gpus": 8}, {"name": "decode", "workers": 2, "gpus": 4}]}"#;
    let t = read_jsonl("r.jsonl", row, false).unwrap();
    let v = &t.services[0];
    assert_eq!((v.gpus_per_replica, v.roles[1].workers), (16, 2));
    assert_eq!(read_jsonl("r.jsonl", &write_jsonl(&t), false).unwrap(), t);
    for (text, field) in [
        (
            row.replace(r#""submit": 0,"#, r#""submit": 0, "gpus_per_replica": 8,"#),
            "gpus_per_replica",
        ),
        (
            row.replace(r#""name": "decode""#, r#""name": "prefill""#),
            "roles",
        ),
        (row.replace(r#""workers": 2"#, r#""workers": 0"#), "roles"),
    ] {
        let e = read_jsonl("r.jsonl", &text, false).unwrap_err();
        assert_eq!((e.line, e.column.as_str()), (1, field), "{text}");
    }
}

#[test]
fn daily_curve_peaks_at_its_hour() {
    let c = LoadCurve::Daily {
        base: 100.0,
        peak: 300.0,
        peak_hour: 14.0,
    };
    assert!((c.at(14 * 3600) - 300.0).abs() < 1e-9);
    assert!((c.at(86_400 + 2 * 3600) - 100.0).abs() < 1e-9);
    assert!((c.at(8 * 3600) - 200.0).abs() < 1e-6);
}

#[test]
fn bad_service_and_sandbox_rows_name_the_field() {
    let cases = [
        (
            r#""max_replicas": 4"#,
            r#""max_replicas": 0"#,
            "max_replicas",
        ),
        (
            r#""min_replicas": 1"#,
            r#""min_replicas": 9"#,
            "min_replicas",
        ),
        (r#"[[0, 5], [100, 25]]"#, r#"[[100, 5], [0, 25]]"#, "load"),
        (r#""count": 1000"#, r#""count": 0"#, "count"),
        (r#""median": 60"#, r#""median": 0"#, "lifetime"),
        (r#""kind": "sandboxes""#, r#""kind": "pods""#, "kind"),
        (r#""id": 3"#, r#""id": 2"#, "id"),
        (
            r#""cpu_millis": 500"#,
            r#""cpu_millis": "lots""#,
            "cpu_millis",
        ),
        (
            r#""max_per": 2"#,
            r#""max_per": 2, "colour": 1"#,
            "spread.colour",
        ),
    ];
    for (from, to, field) in cases {
        let text = MIXED.replace(from, to);
        let e = read_jsonl("m.jsonl", &text, false).unwrap_err();
        assert_eq!(e.column, field, "{from} -> {to}: {e}");
        let skipped = read_jsonl("m.jsonl", &text, true).unwrap();
        assert_eq!(skipped.skipped, 1);
    }
    let e = read_jsonl(
        "m.jsonl",
        &MIXED.replace("\"tenant\": \"chat\", ", ""),
        false,
    )
    .unwrap_err();
    assert!(e.reason.contains("tenant"), "{e}");
}

proptest! {
    #[test]
    fn garbage_never_panics(s in "\\PC{0,300}") {
        let _ = read_philly("g.csv", &s, false);
        let _ = read_philly("g.csv", &s, true);
        let _ = read_jsonl("g.jsonl", &s, false);
    }

    #[test]
    fn mutated_rows_never_panic(at in 0usize..600, byte in any::<u8>()) {
        let mut bytes = MIXED.as_bytes().to_vec();
        let i = at % bytes.len();
        bytes[i] = byte;
        let text = String::from_utf8_lossy(&bytes);
        let _ = read_jsonl("m.jsonl", &text, false);
    }
}
