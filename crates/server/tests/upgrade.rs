//! Upgrades keep history: the committed journal fixtures replay into the placements they
//! recorded, under this build and under changed scheduling rules, and a journal written before
//! decisions were journaled (format 0) migrates to the current format.

#![allow(clippy::unwrap_used)]

use server::journal::{self, Stored};
use server::state::{ControlPlane, Event};

const V0_JOURNAL: &str = include_str!("fixtures/v0/journal.jsonl");
const V0_PLACEMENTS: &str = include_str!("fixtures/v0/placements.txt");
const V1_JOURNAL: &str = include_str!("fixtures/v1/journal.jsonl");
const V1_PLACEMENTS: &str = include_str!("fixtures/v1/placements.txt");
const V1_SNAPSHOT: &[u8] = include_bytes!("fixtures/v1/snapshot.cbor");

fn records(text: &str) -> Vec<(u64, Stored)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i as u64 + 1, journal::decode(line.as_bytes()).unwrap()))
        .collect()
}

/// Rules that decide differently from the defaults: no preemption, no backfill.
fn changed_rules() -> sched::SchedConfig {
    sched::SchedConfig {
        preemption: false,
        backfill: false,
        ..sched::SchedConfig::default()
    }
}

/// Replays `records` with `rules` in force from the first record after `Init` on.
fn replay_under(records: Vec<(u64, Stored)>, rules: sched::SchedConfig) -> ControlPlane {
    let mut plane = None;
    for (seq, r) in records {
        ControlPlane::replay_one(&mut plane, seq, r).unwrap();
        if seq == 1 {
            plane.as_mut().unwrap().set_rules(rules.clone());
        }
    }
    plane.unwrap()
}

#[test]
fn the_v1_fixture_replays_into_its_recorded_placements() {
    let rs = records(V1_JOURNAL);
    assert!(rs.iter().all(|(_, r)| matches!(r, Stored::V1(_))));
    let p = ControlPlane::replay(rs).unwrap().unwrap();
    assert_eq!(p.placements(), V1_PLACEMENTS);
    p.check_invariants().unwrap();
}

#[test]
fn a_changed_scheduling_rule_does_not_change_replayed_history_but_rules_what_comes_next() {
    // Deciding the fixture's inputs again under the changed rules places work elsewhere: the
    // rule matters to this history.
    let redecided = replay_under(records(V0_JOURNAL), changed_rules());
    assert_ne!(redecided.placements(), V0_PLACEMENTS);
    // Replaying the recorded decisions under the same changed rules does not.
    let mut replayed = replay_under(records(V1_JOURNAL), changed_rules());
    assert_eq!(replayed.placements(), V1_PLACEMENTS);
    replayed.check_invariants().unwrap();
    // New work is decided by the rules in force: under the defaults, a training job that
    // cannot start gets a reservation; under the changed rules (no backfill), it does not.
    let mut defaults = ControlPlane::replay(records(V1_JOURNAL)).unwrap().unwrap();
    let decide_next = |p: &mut ControlPlane| {
        let e = p
            .submit_event(&serde_json::from_str(LATE_JOB).unwrap(), 2000)
            .unwrap();
        p.apply(&e).unwrap();
        let pass = p.apply(&Event::Pass { at: 2001 }).unwrap();
        p.check_invariants().unwrap();
        pass.decisions
    };
    let with_defaults = decide_next(&mut defaults);
    assert!(
        with_defaults
            .iter()
            .any(|d| matches!(d, sched::Decision::Reserve { .. })),
        "{with_defaults:?}"
    );
    // The reserved job shows when it is expected to start; the others show none.
    let (job, start) = with_defaults
        .iter()
        .find_map(|d| match d {
            sched::Decision::Reserve { job, start, .. } => Some((*job, *start)),
            _ => None,
        })
        .unwrap();
    let view = defaults.job_view(server::state::JobId(job.0)).unwrap();
    assert_eq!(
        (view.state.as_str(), view.expected_start),
        ("pending", Some(start))
    );
    assert!(defaults
        .list(None, None, 0, usize::MAX, None)
        .iter()
        .all(|v| v.expected_start.is_none() || v.id == job.0));
    let with_changed = decide_next(&mut replayed);
    assert!(
        !with_changed
            .iter()
            .any(|d| matches!(d, sched::Decision::Reserve { .. })),
        "{with_changed:?}"
    );
}

/// A training job that cannot start at once.
const LATE_JOB: &str = r#"{"name": "late", "tenant": "default", "priority": "training",
    "gpu": "GB200", "nodes": 8, "gpus_per_node": 4, "time_limit_s": 3600,
    "command": ["train"]}"#;

#[test]
fn a_journal_written_before_decisions_were_journaled_migrates_to_format_1() {
    let rs = records(V0_JOURNAL);
    assert!(rs.iter().all(|(_, r)| matches!(r, Stored::Inputs(_))));
    // Replayed once with this build's rules: the same placements as the build that wrote it.
    let mut plane = None;
    let mut migrated = Vec::new();
    for (seq, r) in rs {
        let replayed = ControlPlane::replay_one(&mut plane, seq, r).unwrap();
        assert!(replayed.decided);
        let record = replayed.record;
        migrated.push(plane.as_ref().unwrap().encode(&record));
    }
    let p = plane.unwrap();
    assert_eq!(p.placements(), V0_PLACEMENTS);
    // The rewritten journal is format 1 throughout and replays without deciding, into the same
    // state, even under other rules.
    let again: Vec<(u64, Stored)> = migrated
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u64 + 1, journal::decode(b).unwrap()))
        .collect();
    assert!(again.iter().all(|(_, r)| matches!(r, Stored::V1(_))));
    let q = replay_under(again, changed_rules());
    assert_eq!(q.placements(), V0_PLACEMENTS);
    assert_eq!(q.fingerprint(), p.fingerprint());
}

#[test]
fn the_v1_snapshot_loads_into_its_recorded_placements_and_the_journal_goes_on_from_it() {
    let mut p = ControlPlane::from_snapshot(V1_SNAPSHOT).unwrap();
    assert_eq!(p.placements(), V1_PLACEMENTS);
    p.check_invariants().unwrap();
    // The same state as replaying the whole journal it was taken after.
    let replayed = ControlPlane::replay(records(V1_JOURNAL)).unwrap().unwrap();
    assert_eq!(p.seq(), replayed.seq());
    assert_eq!(p.fingerprint(), replayed.fingerprint());
    // Under other rules it is the same state; new work follows those rules.
    p.set_rules(changed_rules());
    assert_eq!(p.placements(), V1_PLACEMENTS);
    let e = p
        .submit_event(&serde_json::from_str(LATE_JOB).unwrap(), 2000)
        .unwrap();
    p.apply(&e).unwrap();
    let pass = p.apply(&Event::Pass { at: 2001 }).unwrap();
    assert!(!pass
        .decisions
        .iter()
        .any(|d| matches!(d, sched::Decision::Reserve { .. })));
    p.check_invariants().unwrap();
}

#[test]
fn records_of_a_newer_format_or_garbage_are_refused_by_name() {
    let e = journal::decode(br#"{"v": 9, "event": {}}"#).unwrap_err();
    assert!(e.to_string().contains("format 9"), "{e}");
    assert!(journal::decode(b"not json").is_err());
    assert!(journal::decode(br#"{"v": 1, "event": {"event": "pass"}}"#).is_err());
}

mod hostile {
    //! Journal records are read back from disk that anything may have written: decoding and
    //! replaying garbage or mutated records never panics, it fails by name.
    use super::*;
    use proptest::prelude::*;

    /// The fixture's records as bytes.
    fn bodies() -> Vec<Vec<u8>> {
        V1_JOURNAL.lines().map(|l| l.as_bytes().to_vec()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = journal::decode(&bytes);
        }

        #[test]
        fn a_damaged_snapshot_is_refused_or_loads_a_state_that_holds(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = V1_SNAPSHOT.to_vec();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(p) = ControlPlane::from_snapshot(&bytes) {
                prop_assert!(p.check_invariants().is_ok());
            }
            let short = &V1_SNAPSHOT[..cut.index(V1_SNAPSHOT.len())];
            prop_assert!(ControlPlane::from_snapshot(short).is_err());
        }

        #[test]
        fn a_mutated_record_is_refused_or_replays(
            record in 2usize..70,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut all = bodies();
            let record = record.min(all.len() - 1);
            let body = &mut all[record];
            let i = at.index(body.len());
            body[i] = byte;
            // A refused record stops the replay (the server does not start); a journal that
            // replays to its end is a state the queue's invariants hold for.
            let mut plane = None;
            let mut whole = true;
            for (seq, b) in all.iter().enumerate() {
                let replayed = journal::decode(b)
                    .map_err(|e| e.to_string())
                    .and_then(|stored| {
                        ControlPlane::replay_one(&mut plane, seq as u64 + 1, stored)
                            .map_err(|e| e.to_string())
                    });
                if replayed.is_err() {
                    whole = false;
                    break;
                }
            }
            if let (true, Some(p)) = (whole, plane) {
                prop_assert!(p.check_invariants().is_ok(), "{:?}", p.check_invariants());
            }
        }
    }
}

#[test]
fn a_server_upgrades_a_format_0_journal_at_start_and_skips_an_older_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("journal.db").display());
    {
        // What the build before this change left: bare events, and a snapshot of its memory.
        let j = store::Journal::open(&url).unwrap();
        let bodies = V0_JOURNAL.lines().map(|l| l.as_bytes().to_vec()).collect();
        j.append(bodies).wait().unwrap();
        let mut old = Vec::new();
        ciborium::into_writer(&(2u32, "an older build's memory"), &mut old).unwrap();
        j.save_snapshot(10, old).wait().unwrap();
    }
    let config = server::Config {
        snapshot_every: 0,
        ..server::Config::new(url.clone(), dir.path())
    };
    let srv = server::Server::start(&config).unwrap();
    assert!(
        srv.replay_summary().starts_with("replayed"),
        "{}",
        srv.replay_summary()
    );
    let expected = ControlPlane::replay(records(V0_JOURNAL)).unwrap().unwrap();
    assert_eq!(srv.fingerprint(), expected.fingerprint());
    srv.close();
    drop(srv);
    // On disk: every record in the current format, the old snapshot gone.
    let j = store::Journal::open(&url).unwrap();
    let stored = j.read_after(0, 1000).unwrap();
    assert!(stored.len() > V0_JOURNAL.lines().count());
    for r in &stored {
        assert!(
            matches!(journal::decode(&r.body), Ok(Stored::V1(_))),
            "record {}",
            r.seq
        );
    }
    assert_eq!(j.latest_snapshot().unwrap(), None);
    // And a restart replays it without deciding, into the same state.
    j.close();
    drop(j);
    let again = server::Server::start(&config).unwrap();
    assert_eq!(again.fingerprint(), expected.fingerprint());
    again.close();
}

#[test]
fn a_store_of_an_older_build_gets_the_history_of_its_finished_work_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    {
        // The schema the build before history was indexed left (version 2), with the v1
        // journal and one summary a compaction of that build wrote.
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE journal (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
             CREATE TABLE snapshots (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
             CREATE TABLE history (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
             PRAGMA user_version = 2;",
        )
        .unwrap();
        for (i, line) in V1_JOURNAL.lines().enumerate() {
            c.execute(
                "INSERT INTO journal (seq, body) VALUES (?1, ?2)",
                rusqlite::params![i as i64 + 1, line.as_bytes()],
            )
            .unwrap();
        }
        let old = r#"{"v":1,"kind":"job","id":6,"name":"j5","tenant":"default","state":"pending","submitted_at":101,"ended_at":null,"exit_code":null,"restarts":0,"size":12,"nodes":[]}"#;
        c.execute(
            "INSERT INTO history (id, body) VALUES (6, ?1)",
            rusqlite::params![old.as_bytes()],
        )
        .unwrap();
    }
    let url = format!("sqlite:{}", db.display());
    let config = server::Config {
        snapshot_every: 0,
        ..server::Config::new(url.clone(), dir.path())
    };
    let srv = server::Server::start(&config).unwrap();
    srv.close();
    drop(srv);
    let j = store::Journal::open(&url).unwrap();
    let rows = j
        .query_history(&store::HistoryFilter {
            limit: 1000,
            kind: Some("job".into()),
            ..Default::default()
        })
        .unwrap();
    let summaries: Vec<journal::history::SummaryV2> = rows
        .iter()
        .map(|r| journal::history::SummaryV2::decode(&r.body).unwrap())
        .collect();
    // Every job of the journal has its row, in the current format, with its accounting; the
    // old summary of job 6 (pending when it was written) now says how it ended.
    let expected = ControlPlane::replay(records(V1_JOURNAL)).unwrap().unwrap();
    assert_eq!(
        summaries.len(),
        expected
            .summaries()
            .iter()
            .filter(|s| s.kind == "job")
            .count()
    );
    assert!(summaries
        .iter()
        .all(|s| s.v == 2 && s.gpu_seconds.is_some()));
    let six = summaries.iter().find(|s| s.id == 6).unwrap();
    assert_eq!(six.state, "cancelled");
    let finished = j
        .query_history(&store::HistoryFilter {
            limit: 1000,
            state: Some("finished".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(!finished.is_empty());
    // Jobs that ran hold GPU-seconds and cost.
    assert!(summaries
        .iter()
        .any(|s| s.gpu_seconds.unwrap_or(0) > 0 && s.cost_micro_usd.unwrap_or(0) > 0));
    assert_eq!(
        j.schema_found(),
        store::HISTORY_INDEXED_SINCE,
        "migrated once"
    );
}

/// What the fixture's work cost, as the build that wrote it reported (GPU pools metered in
/// whole GPUs then): the snapshot and the replayed journal both still say so.
const V1_SPEND: &str = include_str!("fixtures/v1/spend.json");

#[test]
fn the_spend_of_the_v1_fixture_is_what_it_was_when_written() {
    let want: serde_json::Value = serde_json::from_str(V1_SPEND).unwrap();
    let from_snapshot = ControlPlane::from_snapshot(V1_SNAPSHOT).unwrap();
    let replayed = ControlPlane::replay(records(V1_JOURNAL)).unwrap().unwrap();
    for (what, p) in [("snapshot", &from_snapshot), ("journal", &replayed)] {
        // A day past the last record, so that idle and held capacity both accrue after it.
        let at = p.now() + 86_400;
        let got = serde_json::to_value(p.spend(at)).unwrap();
        assert_close(&got, &want, what, "$");
    }
}

/// `got` equals `want`, numbers to a millionth of their size.
fn assert_close(got: &serde_json::Value, want: &serde_json::Value, what: &str, path: &str) {
    use serde_json::Value;
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{what}: {path} is {g}, was {w}"
            );
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{what}: {path} has {} items", g.len());
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_close(g, w, what, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(g), Value::Object(w)) => {
            assert_eq!(
                g.keys().collect::<Vec<_>>(),
                w.keys().collect::<Vec<_>>(),
                "{what}: {path}"
            );
            for (k, w) in w {
                assert_close(&g[k], w, what, &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{what}: {path}"),
    }
}
