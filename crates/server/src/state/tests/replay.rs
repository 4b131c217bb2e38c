//! Replay across snapshots and upgrades: a busy journal cut at every record, the scenario
//! the upgrade fixtures are written from, and the journal's first record.

use super::*;

/// A journal with a bit of everything: jobs, a service, sandboxes, checkpoints, exits, a
/// failure, a drain, preemption pressure.
fn busy_journal() -> Vec<Vec<u8>> {
    let (mut p, mut journal) = up();
    let mut apply = |p: &mut ControlPlane, e: Event| {
        let r = p.apply(&e).unwrap();
        journal.push(p.encode(&r));
    };
    for (i, nodes) in [18, 4, 2, 30, 9].into_iter().enumerate() {
        let e = p
            .submit_event(&req(&format!("j{i}"), nodes), 100 + i as u64)
            .unwrap();
        apply(&mut p, e);
    }
    let e = p.service_event(&service(2), 106).unwrap();
    apply(&mut p, e);
    let e = p.sandbox_event(&sandboxes(40), 107).unwrap();
    apply(&mut p, e);
    apply(&mut p, Event::Pass { at: 110 });
    let on = p.job_view(JobId(2)).unwrap().nodes;
    apply(
        &mut p,
        Event::Checkpoint {
            job: JobId(2),
            run: 0,
            at: 115,
        },
    );
    apply(
        &mut p,
        Event::NodeDrain {
            node: on[1].clone(),
            drain: true,
            at: 118,
        },
    );
    apply(
        &mut p,
        Event::NodeDown {
            node: on[0].clone(),
            at: 120,
        },
    );
    apply(&mut p, Event::Pass { at: 121 });
    apply(&mut p, Event::Cancel { id: 1, at: 125 });
    apply(
        &mut p,
        Event::SandboxesExited {
            batch: BatchId(6),
            exited: vec![(0, 0), (1, 3)],
            oom_killed: vec![1],
            at: 126,
        },
    );
    apply(&mut p, Event::Pass { at: 130 });
    journal
}

/// A busier journal for the upgrade fixtures: gangs with spares, a reservation, preemption
/// through its grace period, a failed tray replaced by a spare and one requeued, a service
/// whose replica exits and is replaced, scaling, sandboxes moved off a failed host, drains,
/// checkpoints, cancels and exits.
fn upgrade_scenario() -> (ControlPlane, Vec<Vec<u8>>) {
    let (mut p, mut journal) = up();
    let mut apply = |p: &mut ControlPlane, e: Event| {
        let r = p.apply(&e).unwrap_or_else(|err| panic!("{e:?}: {err}"));
        journal.push(p.encode(&r));
    };
    let job = |name: &str, nodes: u32, priority: &str, spares: u32| SubmitJob {
        priority: priority.into(),
        spares,
        ..req(name, nodes)
    };
    for (i, (nodes, priority, spares)) in [
        (8, "research", 1),
        (4, "preemptible", 0),
        (6, "preemptible", 0),
        (2, "research", 0),
        (30, "research", 0),
        (3, "research", 0),
    ]
    .into_iter()
    .enumerate()
    {
        let e = p
            .submit_event(&job(&format!("j{i}"), nodes, priority, spares), 101)
            .unwrap();
        apply(&mut p, e);
    }
    let e = p.service_event(&service(2), 102).unwrap();
    apply(&mut p, e);
    let e = p.sandbox_event(&sandboxes(40), 103).unwrap();
    apply(&mut p, e);
    apply(&mut p, Event::Pass { at: 110 });
    let on = p.job_view(JobId(1)).unwrap().nodes;
    apply(
        &mut p,
        Event::Checkpoint {
            job: JobId(1),
            run: 0,
            at: 300,
        },
    );
    // A tray of the gang with a spare fails: the spare takes its place.
    apply(
        &mut p,
        Event::NodeDown {
            node: on[2].clone(),
            at: 400,
        },
    );
    apply(&mut p, Event::Pass { at: 401 });
    // A tray of a gang without spares fails: it is requeued.
    let on = p.job_view(JobId(4)).unwrap().nodes;
    apply(
        &mut p,
        Event::NodeDown {
            node: on[0].clone(),
            at: 402,
        },
    );
    apply(&mut p, Event::Pass { at: 403 });
    // A host with sandboxes fails: they move.
    let host = p
        .up_nodes()
        .into_iter()
        .find(|n| !p.assignments(n).1.is_empty())
        .unwrap();
    apply(
        &mut p,
        Event::NodeDown {
            node: host,
            at: 404,
        },
    );
    apply(
        &mut p,
        Event::SandboxesExited {
            batch: BatchId(7),
            exited: vec![(0, 0), (1, 3)],
            oom_killed: Vec::new(),
            at: 405,
        },
    );
    // A replica exits and is replaced; the service is scaled up.
    let replica = p
        .up_nodes()
        .into_iter()
        .flat_map(|n| p.assignments(&n).0)
        .find(|t| t.job >= sched::REPLICA_IDS)
        .unwrap();
    apply(
        &mut p,
        Event::TaskExited {
            job: JobId(replica.job),
            run: replica.run,
            rank: 0,
            code: 1,
            oom_killed: false,
            at: 405,
        },
    );
    apply(
        &mut p,
        Event::ServiceScale {
            autoscaled: false,
            id: ServiceId(1),
            replicas: 3,
            at: 406,
        },
    );
    apply(&mut p, Event::Pass { at: 407 });
    // Training work that only preemption makes room for (victims ran past min_runtime).
    for (i, nodes) in [(0, 12), (1, 4)] {
        let e = p
            .submit_event(&job(&format!("t{i}"), nodes, "training", 0), 800)
            .unwrap();
        apply(&mut p, e);
    }
    apply(&mut p, Event::Pass { at: 801 });
    apply(&mut p, Event::Cancel { id: 6, at: 850 });
    let on = p.job_view(JobId(1)).unwrap().nodes;
    apply(
        &mut p,
        Event::NodeDrain {
            node: on[0].clone(),
            drain: true,
            at: 860,
        },
    );
    apply(&mut p, Event::Pass { at: 930 });
    apply(&mut p, Event::Pass { at: 1000 });
    // Every rank of a running job exits 0: it finishes.
    let done = (1..=8)
        .find(|id| p.job_view(JobId(*id)).is_some_and(|v| v.state == "running"))
        .unwrap();
    let run = p.sched.job(WorkloadId(done)).unwrap().restarts;
    for rank in 0..p.job_view(JobId(done)).unwrap().nodes.len() as u32 {
        apply(
            &mut p,
            Event::TaskExited {
                job: JobId(done),
                run,
                rank,
                code: 0,
                oom_killed: false,
                at: 1100,
            },
        );
    }
    apply(&mut p, Event::Pass { at: 1101 });
    (p, journal)
}

/// Writes the upgrade fixtures when `STARGRID_WRITE_FIXTURES` names a directory.
#[test]
fn write_upgrade_fixtures() {
    let Ok(dir) = std::env::var("STARGRID_WRITE_FIXTURES") else {
        return;
    };
    let (p, journal) = upgrade_scenario();
    let lines: Vec<&str> = journal
        .iter()
        .map(|r| std::str::from_utf8(r).unwrap())
        .collect();
    std::fs::write(format!("{dir}/journal.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(format!("{dir}/placements.txt"), p.placements()).unwrap();
    std::fs::write(format!("{dir}/snapshot.cbor"), p.snapshot().unwrap()).unwrap();
}

#[test]
fn a_snapshot_anywhere_then_the_rest_of_the_journal_is_the_same_state() {
    let journal = busy_journal();
    let numbered = || numbered(&journal);
    let whole = ControlPlane::replay(numbered()).unwrap().unwrap();
    // What comes next must be decided the same way too: more work and more passes.
    let more = |p: &mut ControlPlane| {
        let mut decisions = Vec::new();
        for (i, at) in [(0, 200), (1, 201)] {
            let e = p.submit_event(&req(&format!("late{i}"), 3), at).unwrap();
            p.apply(&e).unwrap();
            let e = p.sandbox_event(&sandboxes(5), at).unwrap();
            p.apply(&e).unwrap();
            decisions.extend(p.apply(&Event::Pass { at: at + 1 }).unwrap().decisions);
        }
        format!("{decisions:?}")
    };
    let mut after_whole = ControlPlane::replay(numbered()).unwrap().unwrap();
    let decided = more(&mut after_whole);
    assert!(decided.contains("Start"), "{decided}");
    for cut in 1..=journal.len() as u64 {
        let head = ControlPlane::replay(numbered().take(cut as usize))
            .unwrap()
            .unwrap();
        assert_eq!(head.seq(), cut);
        let mut plane = Some(ControlPlane::from_snapshot(&head.snapshot().unwrap()).unwrap());
        for (seq, e) in numbered().skip(cut as usize) {
            ControlPlane::replay_one(&mut plane, seq, e).unwrap();
        }
        let mut p = plane.unwrap();
        assert_eq!(p.fingerprint(), whole.fingerprint(), "snapshot at {cut}");
        assert!(p.sched.check_invariants().is_ok());
        assert_eq!(more(&mut p), decided, "snapshot at {cut}");
        assert_eq!(
            p.fingerprint(),
            after_whole.fingerprint(),
            "snapshot at {cut}"
        );
    }
    // A record out of sequence after a snapshot is refused by number.
    let mut plane = Some(whole);
    let e = ControlPlane::replay_one(&mut plane, 999, Stored::Inputs(Event::Pass { at: 300 }))
        .unwrap_err();
    assert!(e.to_string().contains("expected record"), "{e}");
    // Garbage is not a snapshot.
    assert!(ControlPlane::from_snapshot(b"garbage").is_err());
}

#[test]
fn crash_backoff_doubles_up_to_five_minutes() {
    let waits: Vec<u64> = (0..8).map(backoff).collect();
    assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(backoff(u32::MAX), 300);
}

#[test]
fn a_journal_must_start_with_init() {
    let e = ControlPlane::replay(vec![(1, Stored::Inputs(Event::Pass { at: 1 }))])
        .err()
        .unwrap();
    assert!(e.to_string().contains("first record must be Init"), "{e}");
    let e = ControlPlane::replay(vec![
        (1, Stored::Inputs(init())),
        (2, Stored::Inputs(init())),
    ])
    .err()
    .unwrap();
    assert!(e.to_string().contains("record 2: a second Init"), "{e}");
}

#[test]
fn replay_tells_the_event_stream_what_applying_live_told() {
    let (_, journal) = upgrade_scenario();
    let mut live: Option<ControlPlane> = None;
    let mut replayed = None;
    let mut kinds = BTreeSet::new();
    for (seq, stored) in numbered(&journal) {
        let Stored::V1(r) = stored else {
            panic!("record {seq} is not of format 1")
        };
        let event = r.event.clone();
        // Live: the queue decides again (the same way: the same inputs, the same rules).
        let told_live = match &mut live {
            None => {
                live = Some(ControlPlane::new(&event).unwrap());
                Vec::new()
            }
            Some(p) => {
                let record = p.apply(&event).unwrap();
                p.told(&record)
            }
        };
        let record = ControlPlane::replay_one(&mut replayed, seq, Stored::V1(r))
            .unwrap()
            .record;
        let told_replayed = replayed.as_ref().unwrap().told(&record);
        assert_eq!(told_live, told_replayed, "record {seq}: {event:?}");
        kinds.extend(told_live.iter().map(|t| t.change.kind()));
    }
    for kind in [
        "node",
        "job",
        "batch",
        "service",
        "preempted",
        "requeued",
        "checkpointed",
    ] {
        assert!(kinds.contains(kind), "no {kind} event in {kinds:?}");
    }
}

#[test]
fn job_listings_walk_their_indexes_and_find_what_a_scan_finds() {
    let (busy, _) = upgrade_scenario();
    let reloaded = ControlPlane::from_snapshot(&busy.snapshot().unwrap()).unwrap();
    for p in [&busy, &reloaded] {
        // Every job, by a plain scan, as the listing must page through it.
        let all: Vec<(u64, String, String)> = p
            .jobs
            .keys()
            .map(|id| {
                let v = p.job_view(*id).unwrap();
                (v.id, v.tenant, v.state)
            })
            .collect();
        assert!(all.len() > 5, "the scenario has jobs to list");
        let states = [
            None,
            Some("pending"),
            Some("running"),
            Some("preempting"),
            Some("finished"),
            Some("cancelled"),
        ];
        for tenant in [None, Some("default"), Some("nobody")] {
            for state in states {
                let expected: Vec<u64> = all
                    .iter()
                    .filter(|(_, t, s)| {
                        tenant.is_none_or(|x| x == t) && state.is_none_or(|x| x == s)
                    })
                    .map(|(id, _, _)| *id)
                    .collect();
                // Pages of 2, each after the last id of the one before.
                let mut listed = Vec::new();
                let mut after = 0;
                loop {
                    let page = p.list(tenant, state, after, 2, None);
                    listed.extend(page.iter().map(|v| v.id));
                    match page.last() {
                        Some(v) if page.len() == 2 => after = v.id,
                        _ => break,
                    }
                }
                assert_eq!(listed, expected, "tenant {tenant:?} state {state:?}");
            }
        }
    }
}
