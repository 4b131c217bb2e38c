//! The journal's tests, on every backend this machine has (SQLite always; PostgreSQL when
//! `STARGRID_TEST_POSTGRES` names a server).

use super::*;
use proptest::prelude::*;

/// A fresh journal URL on every backend this machine has: an SQLite file always, and a new
/// PostgreSQL database when `STARGRID_TEST_POSTGRES` names a server (CI sets it).
fn fresh_urls(dir: &tempfile::TempDir, tag: &str) -> Vec<String> {
    let mut urls = vec![format!(
        "sqlite:{}",
        dir.path().join(format!("{tag}.db")).display()
    )];
    if let Ok(admin) = std::env::var("STARGRID_TEST_POSTGRES") {
        urls.push(fresh_database(&admin).unwrap());
    }
    urls
}

#[test]
fn urls_name_the_backend_or_the_reason() {
    assert_eq!(
        parse_url("sqlite:/tmp/a.db").unwrap(),
        Backend::Sqlite("/tmp/a.db".into())
    );
    assert_eq!(
        parse_url("sqlite:///tmp/a.db").unwrap(),
        Backend::Sqlite("/tmp/a.db".into())
    );
    assert_eq!(
        parse_url("data/a.db").unwrap(),
        Backend::Sqlite("data/a.db".into())
    );
    assert_eq!(
        parse_url("postgres://u@h/db").unwrap(),
        Backend::Postgres("postgres://u@h/db".into())
    );
    let e = parse_url("mysql://x").unwrap_err().to_string();
    assert!(e.contains("unknown scheme 'mysql'"), "{e}");
    assert!(parse_url("sqlite:").is_err());
    assert_eq!(
        pg::redact("postgres://me:secret@db:5432/x"),
        "postgres://me:***@db:5432/x"
    );
}

#[test]
fn compaction_keeps_the_sequence_the_snapshot_and_the_history() {
    let dir = tempfile::tempdir().unwrap();
    for url in fresh_urls(&dir, "compact") {
        {
            let j = Journal::open(&url).unwrap();
            let bodies: Vec<Vec<u8>> = (0..5).map(|i| vec![b'a' + i]).collect();
            assert_eq!(j.append(bodies).wait().unwrap(), 1..6);
            j.save_snapshot(5, b"snap".to_vec()).wait().unwrap();
            let summary = |id: u64, body: &[u8]| HistoryRow {
                key: id,
                body: body.to_vec(),
                index: HistoryIndex::default(),
            };
            j.compact(5, vec![summary(7, b"old"), summary(3, b"three")])
                .wait()
                .unwrap();
            // A later summary of the same workload replaces the earlier one.
            j.compact(5, vec![summary(7, b"seven")]).wait().unwrap();
        }
        let j = Journal::open(&url).unwrap();
        // The record at the snapshot stays: numbers go on after it.
        assert_eq!(j.first_seq().unwrap(), 5, "{url}");
        assert_eq!(j.last_seq().unwrap(), 5, "{url}");
        assert_eq!(j.read_after(0, 10).unwrap().len(), 1);
        assert_eq!(j.latest_snapshot().unwrap(), Some((5, b"snap".to_vec())));
        let history = j.read_history(0, 10).unwrap();
        let ids: Vec<(u64, &[u8])> = history.iter().map(|r| (r.seq, r.body.as_slice())).collect();
        assert_eq!(ids, vec![(3, &b"three"[..]), (7, &b"seven"[..])], "{url}");
        assert_eq!(j.read_history(3, 10).unwrap().len(), 1);
        assert_eq!(j.append(vec![b"f".to_vec()]).wait().unwrap(), 6..7);
    }
}

#[test]
fn history_rows_are_written_with_their_records_filtered_and_summed() {
    let dir = tempfile::tempdir().unwrap();
    for url in fresh_urls(&dir, "history") {
        let j = Journal::open(&url).unwrap();
        let day = 86_400;
        let row = |key: u64, tenant: &str, state: &str, ended: Option<u64>| HistoryRow {
            key,
            body: format!("row{key}").into_bytes(),
            index: HistoryIndex {
                kind: "job".into(),
                tenant: tenant.into(),
                state: state.into(),
                name: format!("n{}", key % 2),
                submitted_at: 10,
                ended_at: ended,
                gpu_seconds: key * 100,
                cost_micro_usd: key * 1_000_000,
            },
        };
        // Rows travel with the records that ended their workloads.
        let seqs = j
            .append_with_history(
                vec![b"r1".to_vec(), b"r2".to_vec()],
                vec![
                    row(1, "a", "finished", Some(day + 5)),
                    row(2, "b", "failed", Some(day + 7)),
                ],
            )
            .wait()
            .unwrap();
        assert_eq!(seqs, 1..3);
        j.put_history(vec![
            row(3, "a", "finished", Some(2 * day + 1)),
            row(4, "a", "running", None),
            // A later row of the same workload replaces the earlier one.
            row(2, "b", "finished", Some(day + 9)),
        ])
        .wait()
        .unwrap();
        let keys = |f: HistoryFilter| -> Vec<u64> {
            j.query_history(&HistoryFilter { limit: 100, ..f })
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect()
        };
        assert_eq!(keys(HistoryFilter::default()), [1, 2, 3, 4], "{url}");
        let a = Some("a".to_string());
        assert_eq!(
            keys(HistoryFilter {
                tenant: a.clone(),
                ..Default::default()
            }),
            [1, 3, 4]
        );
        assert_eq!(
            keys(HistoryFilter {
                state: Some("finished".into()),
                ended_since: Some(day + 8),
                ..Default::default()
            }),
            [2, 3]
        );
        assert_eq!(
            keys(HistoryFilter {
                ended_until: Some(day + 6),
                ..Default::default()
            }),
            [1]
        );
        assert_eq!(
            keys(HistoryFilter {
                name: Some("n1".into()),
                after: 1,
                ..Default::default()
            }),
            [3]
        );
        assert_eq!(
            j.query_history(&HistoryFilter {
                limit: 2,
                ..Default::default()
            })
            .unwrap()
            .len(),
            2
        );
        let usage = j
            .usage(&UsageQuery {
                period_s: day,
                origin: 0,
                since: 0,
                until: 10 * day,
                tenant: None,
                kind: Some("job".into()),
            })
            .unwrap();
        let got: Vec<(String, u64, u64, u64, u64)> = usage
            .iter()
            .map(|u| {
                (
                    u.tenant.clone(),
                    u.period_start,
                    u.count,
                    u.gpu_seconds,
                    u.cost_micro_usd,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), day, 1, 100, 1_000_000),
                ("b".into(), day, 1, 200, 2_000_000),
                ("a".into(), 2 * day, 1, 300, 3_000_000),
            ],
            "{url}"
        );
        assert!(j.schema_found() == 0, "a fresh store");
    }
}

#[test]
fn the_journal_files_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let url = format!("sqlite:{}", db.display());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    {
        let j = Journal::open(&url).unwrap();
        j.append(vec![b"secret".to_vec()]).wait().unwrap();
        assert!(j.fixed_permissions().is_empty());
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&dir.path().join("j.db-wal")), 0o600);
        assert_eq!(mode(&dir.path().join("j.db.lock")), 0o600);
    }
    // A journal left readable by others is made private, and the caller is told.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let j = Journal::open(&url).unwrap();
    assert_eq!(
        j.fixed_permissions().len(),
        1,
        "{:?}",
        j.fixed_permissions()
    );
    assert!(j.fixed_permissions()[0].contains("was 644"));
    assert_eq!(mode(&db), 0o600);
}

#[test]
fn an_unreachable_database_is_an_open_error_without_the_password() {
    let e = Journal::open("postgres://me:secret@127.0.0.1:1/x")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("me:***@127.0.0.1:1/x") && !e.contains("secret"),
        "{e}"
    );
}

#[test]
fn appends_survive_a_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    for url in fresh_urls(&dir, "reopen") {
        {
            let j = Journal::open(&url).unwrap();
            assert_eq!(
                j.append(vec![b"a".to_vec(), b"b".to_vec()]).wait().unwrap(),
                1..3
            );
            assert_eq!(j.append(vec![b"c".to_vec()]).wait().unwrap(), 3..4);
            j.save_snapshot(2, b"snap".to_vec()).wait().unwrap();
        }
        let j = Journal::open(&url).unwrap();
        assert_eq!(j.last_seq().unwrap(), 3, "{url}");
        let all = j.read_after(0, 10).unwrap();
        let bodies: Vec<&[u8]> = all.iter().map(|r| r.body.as_slice()).collect();
        assert_eq!(bodies, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(j.read_after(2, 10).unwrap()[0].seq, 3);
        assert_eq!(j.latest_snapshot().unwrap(), Some((2, b"snap".to_vec())));
        assert_eq!(j.append(vec![b"d".to_vec()]).wait().unwrap(), 4..5);
    }
}

#[test]
fn concurrent_appends_get_distinct_consecutive_numbers() {
    let dir = tempfile::tempdir().unwrap();
    for url in fresh_urls(&dir, "concurrent") {
        let j = std::sync::Arc::new(Journal::open(&url).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let j = j.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|i| {
                            j.append(vec![format!("{t}-{i}").into_bytes()])
                                .wait()
                                .unwrap()
                                .start
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=400).collect::<Vec<u64>>(), "{url}");
        // Each thread's records are in its own order.
        let all = j.read_after(0, 1000).unwrap();
        for t in 0..8 {
            let mine: Vec<String> = all
                .iter()
                .map(|r| String::from_utf8(r.body.clone()).unwrap())
                .filter(|b| b.starts_with(&format!("{t}-")))
                .collect();
            let expect: Vec<String> = (0..50).map(|i| format!("{t}-{i}")).collect();
            assert_eq!(mine, expect);
        }
    }
}

#[test]
fn a_second_writer_waits_until_the_first_one_closes_then_continues_its_numbers() {
    let dir = tempfile::tempdir().unwrap();
    for url in fresh_urls(&dir, "writers") {
        let first = Journal::open(&url).unwrap();
        assert_eq!(first.append(vec![b"a".to_vec()]).wait().unwrap(), 1..2);
        let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
        let second = {
            let url = url.clone();
            std::thread::spawn(move || {
                let j = Journal::open_as_writer(&url, &mut || {
                    let _ = waiting_tx.send(());
                })
                .unwrap();
                j.append(vec![b"b".to_vec()]).wait().unwrap()
            })
        };
        // The second one says it waits, and does not write while the first one is open.
        waiting_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap();
        assert_eq!(first.append(vec![b"c".to_vec()]).wait().unwrap(), 2..3);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            !second.is_finished(),
            "{url}: wrote while another writer held the journal"
        );
        drop(first);
        assert_eq!(second.join().unwrap(), 3..4, "{url}");
    }
}

#[test]
fn a_newer_schema_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for url in fresh_urls(&dir, "schema") {
        // Create the schema, then pretend a newer build migrated it further.
        Journal::open(&url).unwrap().close();
        match parse_url(&url).unwrap() {
            Backend::Sqlite(path) => {
                let c = Connection::open(&path).unwrap();
                c.pragma_update(None, "user_version", 99).unwrap();
            }
            Backend::Postgres(u) => {
                let mut c = pg::connect(&u).unwrap();
                c.execute("UPDATE stargrid_schema SET version = 99", &[])
                    .unwrap();
            }
        }
        let e = Journal::open(&url).err().unwrap().to_string();
        assert!(e.contains("schema version 99 is newer"), "{e}");
    }
}

#[test]
fn a_closed_journal_answers_closed() {
    let dir = tempfile::tempdir().unwrap();
    for url in fresh_urls(&dir, "closed") {
        let j = Journal::open(&url).unwrap();
        j.close();
        assert!(matches!(
            j.append(vec![b"x".to_vec()]).wait(),
            Err(StoreError::Closed)
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Whatever the batches, replay returns exactly the bodies appended, in order, numbered
    /// from 1 without gaps, on every backend.
    #[test]
    fn replay_returns_what_was_appended(
        batches in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..5), 0..12)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let expect: Vec<Vec<u8>> = batches.iter().flatten().cloned().collect();
        for url in fresh_urls(&dir, "prop") {
            {
                let j = Journal::open(&url).unwrap();
                let pending: Vec<_> = batches.iter().map(|b| j.append(b.clone())).collect();
                for p in pending {
                    p.wait().unwrap();
                }
            }
            let j = Journal::open(&url).unwrap();
            let got = j.read_after(0, usize::MAX >> 1).unwrap();
            prop_assert_eq!(got.len(), expect.len());
            for (i, (r, e)) in got.iter().zip(&expect).enumerate() {
                prop_assert_eq!(r.seq, i as u64 + 1);
                prop_assert_eq!(&r.body, e);
            }
        }
    }
}
