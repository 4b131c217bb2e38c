//! The state's tests: replay, snapshots, requests and their refusals, services, sandboxes,
//! drains, and the upgrade fixtures' scenario.

#![allow(clippy::unwrap_used)]
use super::*;

fn init() -> Event {
    Event::Init {
        fleet_toml: default_fleet_toml().unwrap(),
        tenants: default_tenants(),
        at: 100,
        commitments: Default::default(),
    }
}

fn req(name: &str, nodes: u32) -> SubmitJob {
    SubmitJob {
        name: name.into(),
        tenant: "default".into(),
        priority: "research".into(),
        gpu: "GB200".into(),
        nodes,
        gpus_per_node: 4,
        cpu_millis_per_node: 0,
        memory_mib_per_node: 0,
        segment: None,
        spares: 0,
        time_limit_s: 3600,
        command: vec!["true".into()],
        env: BTreeMap::new(),
        secret_env: Default::default(),
        workdir: None,
        placement: Default::default(),
        gpu_milli: 0,
        models: Vec::new(),
    }
}

/// A journal's records, numbered from 1, as replay reads them back.
fn numbered(journal: &[Vec<u8>]) -> impl Iterator<Item = (u64, Stored)> + '_ {
    journal
        .iter()
        .enumerate()
        .map(|(i, body)| (i as u64 + 1, crate::journal::decode(body).unwrap()))
}

/// Replaying `journal` from record 1 gives a state equal to `p`.
fn assert_replays_to(p: &ControlPlane, journal: Vec<Vec<u8>>) {
    let again = ControlPlane::replay(numbered(&journal)).unwrap().unwrap();
    assert_eq!(p.fingerprint(), again.fingerprint());
    assert_eq!(p.placements(), again.placements());
    again.sched.check_invariants().unwrap();
}

/// The journal record of `Init`.
fn init_record(p: &ControlPlane) -> Vec<u8> {
    p.encode(&Record {
        event: init(),
        decisions: Vec::new(),
        outcome: Default::default(),
    })
}

/// The state after Init with every node's agent up; the events that made it.
fn up() -> (ControlPlane, Vec<Vec<u8>>) {
    let mut p = ControlPlane::new(&init()).unwrap();
    let mut journal = vec![init_record(&p)];
    for name in p
        .sched
        .engine()
        .fleet()
        .nodes()
        .iter()
        .map(|n| n.name.to_string())
        .collect::<Vec<_>>()
    {
        let e = Event::NodeUp {
            address: None,
            node: name,
            at: 100,
        };
        let r = p.apply(&e).unwrap();
        journal.push(p.encode(&r));
    }
    (p, journal)
}

#[test]
fn replay_rebuilds_the_same_state() {
    let (mut p, mut journal) = up();
    for (i, nodes) in [18, 18, 4, 30].into_iter().enumerate() {
        let e = p
            .submit_event(&req(&format!("j{i}"), nodes), 100 + i as u64)
            .unwrap();
        let r = p.apply(&e).unwrap();
        journal.push(p.encode(&r));
    }
    for e in [
        Event::Pass { at: 110 },
        Event::Cancel { id: 2, at: 120 },
        Event::Pass { at: 121 },
    ] {
        let r = p.apply(&e).unwrap();
        journal.push(p.encode(&r));
    }
    let again = ControlPlane::replay(numbered(&journal)).unwrap().unwrap();
    assert_eq!(p.fingerprint(), again.fingerprint());
    let v = again.job_view(JobId(3)).unwrap();
    assert_eq!(v.state, "running");
    assert_eq!(v.nodes.len(), 4);
    assert_eq!(again.job_view(JobId(2)).unwrap().state, "cancelled");
    assert_eq!(again.job_view(JobId(4)).unwrap().state, "pending");
}

#[test]
fn nothing_runs_on_a_node_without_an_agent() {
    let mut p = ControlPlane::new(&init()).unwrap();
    let e = p.submit_event(&req("j", 1), 100).unwrap();
    p.apply(&e).unwrap();
    p.apply(&Event::Pass { at: 101 }).unwrap();
    assert_eq!(p.job_view(JobId(1)).unwrap().state, "pending");
    assert!(p.up_nodes().is_empty());
}

#[test]
fn tasks_report_exits_and_checkpoints_and_a_dead_node_requeues() {
    let (mut p, _) = up();
    let apply_all = |p: &mut ControlPlane, events: Vec<Event>| {
        for e in events {
            p.apply(&e).unwrap();
        }
    };
    let e = p.submit_event(&req("gang", 2), 100).unwrap();
    p.apply(&e).unwrap();
    p.apply(&Event::Pass { at: 101 }).unwrap();
    let nodes = p.job_view(JobId(1)).unwrap().nodes;
    assert_eq!(nodes.len(), 2);
    let a = p.assignments(&nodes[0]).0;
    assert_eq!((a.len(), a[0].rank, a[0].world, a[0].run), (1, 0, 2, 0));
    assert_eq!(a[0].gpus, vec![0, 1, 2, 3]);
    // A checkpoint, then rank 0 exits 0: the job still runs (rank 1 has not exited).
    let hb = |node: &str, exit: Option<i32>, rank, checkpoint| Heartbeat {
        address: None,
        templates: Vec::new(),
        known: None,
        node: node.into(),
        inventory: None,
        logs: Vec::new(),
        tasks: vec![crate::api::TaskReport {
            job: 1,
            run: 0,
            rank,
            exit_code: exit,
            oom_killed: false,
            checkpoint_at: checkpoint,
            endpoint: None,
        }],
    };
    let ev = p
        .heartbeat_events(&hb(&nodes[0], None, 0, Some(150)), 160)
        .unwrap();
    assert_eq!(
        ev,
        vec![Event::Checkpoint {
            job: JobId(1),
            run: 0,
            at: 150
        }]
    );
    apply_all(&mut p, ev);
    // The same checkpoint again is not news.
    assert!(p
        .heartbeat_events(&hb(&nodes[0], None, 0, Some(150)), 161)
        .unwrap()
        .is_empty());
    // The node dies: the job is requeued (run 1) and its old run's reports are ignored.
    p.apply(&Event::NodeDown {
        node: nodes[1].clone(),
        at: 200,
    })
    .unwrap();
    let v = p.job_view(JobId(1)).unwrap();
    assert_eq!((v.state.as_str(), v.restarts), ("pending", 1));
    assert!(p
        .heartbeat_events(&hb(&nodes[0], Some(0), 0, None), 201)
        .unwrap()
        .is_empty());
    assert!(p.assignments(&nodes[0]).0.is_empty());
    // Run 1 goes elsewhere and ends when both ranks exit 0.
    p.apply(&Event::Pass { at: 202 }).unwrap();
    let v = p.job_view(JobId(1)).unwrap();
    assert_eq!(v.state, "running");
    for (rank, node) in v.nodes.iter().enumerate() {
        let mut h = hb(node, Some(0), rank as u32, None);
        h.tasks[0].run = 1;
        let ev = p.heartbeat_events(&h, 300).unwrap();
        apply_all(&mut p, ev);
    }
    let v = p.job_view(JobId(1)).unwrap();
    assert_eq!(
        (v.state.as_str(), v.exit_code, v.since),
        ("finished", Some(0), Some(300))
    );
    // A heartbeat from a node the fleet does not have names the field.
    assert_eq!(
        p.heartbeat_events(&hb("nope", None, 0, None), 301)
            .unwrap_err()
            .field,
        "node"
    );
}

#[test]
fn bad_requests_name_the_field() {
    let p = ControlPlane::new(&init()).unwrap();
    let cases: Vec<(SubmitJob, &str)> = vec![
        (
            SubmitJob {
                name: "".into(),
                ..req("x", 1)
            },
            "name",
        ),
        (
            SubmitJob {
                name: "a b".into(),
                ..req("x", 1)
            },
            "name",
        ),
        (
            SubmitJob {
                tenant: "nobody".into(),
                ..req("x", 1)
            },
            "tenant",
        ),
        (
            SubmitJob {
                priority: "urgent".into(),
                ..req("x", 1)
            },
            "priority",
        ),
        (
            SubmitJob {
                gpu: "Z9".into(),
                ..req("x", 1)
            },
            "gpu",
        ),
        (req("x", 0), "nodes"),
        (
            SubmitJob {
                time_limit_s: 0,
                ..req("x", 1)
            },
            "time_limit_s",
        ),
    ];
    for (r, field) in cases {
        let e = p.submit_event(&r, 1).unwrap_err();
        assert_eq!(e.field, field, "{e:?}");
        assert!(!e.reason.is_empty());
    }
}

fn service(replicas: u32) -> SubmitService {
    SubmitService {
        name: "chat".into(),
        tenant: "default".into(),
        priority: "production-inference".into(),
        gpu: "GB200".into(),
        nodes_per_replica: 1,
        gpus_per_node: 4,
        cpu_millis_per_node: 0,
        memory_mib_per_node: 0,
        min_replicas: replicas,
        max_replicas: Some(4),
        spread: Some(crate::api::SpreadSpec {
            level: "domain".into(),
            max_per: 1,
        }),
        command: vec!["serve".into()],
        env: BTreeMap::new(),
        secret_env: Default::default(),
        workdir: None,
        placement: Default::default(),
        min_providers: Default::default(),
        ready_path: None,
        live_path: None,
        ready_command: None,
        live_command: None,
        autoscale: None,
        roles: Vec::new(),
        models: Vec::new(),
    }
}

fn sandboxes(count: u32) -> SubmitSandboxes {
    SubmitSandboxes {
        egress: Vec::new(),
        template: None,
        name: "rollouts".into(),
        tenant: "default".into(),
        count,
        cpu_millis: 1000,
        memory_mib: 1024,
        max_retries: 3,
        command: vec!["run".into()],
        env: BTreeMap::new(),
        secret_env: Default::default(),
        workdir: None,
        interactive: false,
        timeout_s: None,
        idle_timeout_s: None,
    }
}

fn exit_report(job: u64, run: u32, rank: u32, code: i32) -> crate::api::TaskReport {
    crate::api::TaskReport {
        job,
        run,
        rank,
        exit_code: Some(code),
        oom_killed: false,
        checkpoint_at: None,
        endpoint: None,
    }
}

/// The domain part of a tray's name (`nvl00001t04` → `nvl00001`).
fn domain(node: &str) -> &str {
    node.split('t').next().unwrap()
}

#[test]
fn services_keep_their_replicas_spread_and_replace_exited_ones() {
    let (mut p, mut journal) = up();
    let mut apply = |p: &mut ControlPlane, e: Event| {
        let r = p.apply(&e).unwrap();
        journal.push(p.encode(&r));
    };
    let e = p.service_event(&service(2), 100).unwrap();
    apply(&mut p, e);
    apply(&mut p, Event::Pass { at: 101 });
    let v = p.service_view(ServiceId(1)).unwrap();
    assert_eq!((v.desired, v.running, v.pending), (2, 2, 0));
    assert_ne!(domain(&v.replicas[0][0]), domain(&v.replicas[1][0]));
    // The replica's node is told to run the service's command.
    let node = v.replicas[0][0].clone();
    let (tasks, _) = p.assignments(&node);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].command, vec!["serve".to_string()]);
    // Its process exits: the replica is replaced, and the new one is placed by a pass.
    let hb = Heartbeat {
        address: None,
        templates: Vec::new(),
        known: None,
        node: node.clone(),
        inventory: None,
        logs: Vec::new(),
        tasks: vec![exit_report(tasks[0].job, tasks[0].run, 0, 1)],
    };
    for e in p.heartbeat_events(&hb, 110).unwrap() {
        apply(&mut p, e);
    }
    // It ran 9 s: a crash as it started, so its replacement waits 10 s, and says so.
    let v = p.service_view(ServiceId(1)).unwrap();
    assert_eq!((v.running, v.pending, v.replaced), (1, 0, 1));
    assert!(
        v.reason
            .as_deref()
            .unwrap_or("")
            .contains("waits until t=120"),
        "{v:?}"
    );
    assert!(p.assignments(&node).0.iter().all(|a| a.job != tasks[0].job));
    assert!(!p.due(119) && p.due(120));
    apply(&mut p, Event::Pass { at: 111 });
    assert_eq!(p.service_view(ServiceId(1)).unwrap().running, 1);
    apply(&mut p, Event::Pass { at: 120 });
    let v = p.service_view(ServiceId(1)).unwrap();
    assert_eq!((v.running, v.reason), (2, None));
    // The new replica crashes as well: the next wait is twice as long.
    let again = v
        .replicas
        .iter()
        .map(|r| r[0].clone())
        .find_map(|n| {
            p.assignments(&n)
                .0
                .into_iter()
                .find(|a| a.job != tasks[0].job && a.job > tasks[0].job)
                .map(|a| (n, a))
        })
        .unwrap();
    let hb = Heartbeat {
        address: None,
        templates: Vec::new(),
        known: None,
        node: again.0.clone(),
        inventory: None,
        logs: Vec::new(),
        tasks: vec![exit_report(again.1.job, again.1.run, 0, 1)],
    };
    for e in p.heartbeat_events(&hb, 125).unwrap() {
        apply(&mut p, e);
    }
    let v = p.service_view(ServiceId(1)).unwrap();
    assert!(
        v.reason
            .as_deref()
            .unwrap_or("")
            .contains("waits until t=145"),
        "{v:?}"
    );
    apply(&mut p, Event::Pass { at: 145 });
    assert_eq!(p.service_view(ServiceId(1)).unwrap().running, 2);
    // A third replica has no domain left under the spread rule: it waits, and says why.
    apply(
        &mut p,
        Event::ServiceScale {
            autoscaled: false,
            id: ServiceId(1),
            replicas: 3,
            at: 150,
        },
    );
    apply(&mut p, Event::Pass { at: 151 });
    let v = p.service_view(ServiceId(1)).unwrap();
    assert_eq!((v.desired, v.running, v.pending), (3, 2, 1));
    assert!(
        v.reason.as_deref().unwrap_or("").contains("spread"),
        "{v:?}"
    );
    // Scaling is clamped to the bounds; deleting stops every replica.
    apply(
        &mut p,
        Event::ServiceScale {
            autoscaled: false,
            id: ServiceId(1),
            replicas: 99,
            at: 160,
        },
    );
    assert_eq!(p.service_view(ServiceId(1)).unwrap().desired, 4);
    apply(
        &mut p,
        Event::ServiceDelete {
            id: ServiceId(1),
            at: 170,
        },
    );
    let v = p.service_view(ServiceId(1)).unwrap();
    assert_eq!((v.state.as_str(), v.running, v.pending), ("deleted", 0, 0));
    assert!(p
        .apply(&Event::ServiceScale {
            autoscaled: false,
            id: ServiceId(1),
            replicas: 2,
            at: 171
        })
        .is_err());
    assert_replays_to(&p, journal);
}

#[test]
fn sandboxes_run_exit_move_and_replay() {
    let (mut p, mut journal) = up();
    let mut apply = |p: &mut ControlPlane, e: Event| {
        let r = p.apply(&e).unwrap();
        journal.push(p.encode(&r));
    };
    let e = p.sandbox_event(&sandboxes(10), 100).unwrap();
    apply(&mut p, e);
    let v = p.batch_view(BatchId(1)).unwrap();
    assert_eq!((v.state.as_str(), v.count, v.live), ("running", 10, 10));
    // Every sandbox is assigned to exactly one host.
    let mut seen = Vec::new();
    let mut host_of = BTreeMap::new();
    for node in p.up_nodes() {
        for r in p.assignments(&node).1 {
            assert_eq!(r.batch, 1);
            for i in r.first..r.first + r.count {
                seen.push(i);
                host_of.insert(i, node.clone());
            }
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<u32>>());
    // Sandbox 0 exits 0, sandbox 1 exits 2; a report from the wrong host is ignored.
    let host0 = host_of[&0].clone();
    let wrong = p.up_nodes().into_iter().find(|n| *n != host0).unwrap();
    let report = |node: &str, index: u32, code: i32| Heartbeat {
        address: None,
        templates: Vec::new(),
        known: None,
        node: node.into(),
        inventory: None,
        logs: Vec::new(),
        tasks: vec![exit_report(1, 0, index, code)],
    };
    if host_of[&1] != wrong {
        assert!(p
            .heartbeat_events(&report(&wrong, 0, 0), 101)
            .unwrap()
            .is_empty());
    }
    for (index, code) in [(0, 0), (1, 2)] {
        for e in p
            .heartbeat_events(&report(&host_of[&index].clone(), index, code), 102)
            .unwrap()
        {
            apply(&mut p, e);
        }
    }
    let v = p.batch_view(BatchId(1)).unwrap();
    assert_eq!((v.live, v.succeeded, v.failed), (8, 1, 1));
    // The same exit reported again is not news.
    assert!(p
        .heartbeat_events(&report(&host0, 0, 0), 103)
        .unwrap()
        .is_empty());
    // A host with live sandboxes goes down: they move to other hosts.
    let host2 = host_of[&2].clone();
    apply(
        &mut p,
        Event::NodeDown {
            node: host2.clone(),
            at: 110,
        },
    );
    let v = p.batch_view(BatchId(1)).unwrap();
    assert_eq!(v.live, 8);
    assert!(v.moved >= 1, "{v:?}");
    assert!(p.assignments(&host2).1.is_empty());
    // Cancelling stops the rest.
    apply(&mut p, Event::Cancel { id: 1, at: 120 });
    let v = p.batch_view(BatchId(1)).unwrap();
    assert_eq!((v.state.as_str(), v.live), ("cancelled", 0));
    assert!(p.up_nodes().iter().all(|n| p.assignments(n).1.is_empty()));
    assert_replays_to(&p, journal);
}

#[test]
fn bad_services_and_sandboxes_name_the_field() {
    let p = up().0;
    let cases: Vec<(SubmitService, &str)> = vec![
        (
            SubmitService {
                min_replicas: 5,
                ..service(1)
            },
            "min_replicas",
        ),
        (
            SubmitService {
                spread: Some(crate::api::SpreadSpec {
                    level: "rack".into(),
                    max_per: 1,
                }),
                ..service(1)
            },
            "spread.level",
        ),
        (
            SubmitService {
                nodes_per_replica: 0,
                ..service(1)
            },
            "nodes_per_replica",
        ),
        (
            SubmitService {
                priority: "vip".into(),
                ..service(1)
            },
            "priority",
        ),
    ];
    for (r, field) in cases {
        assert_eq!(p.service_event(&r, 1).unwrap_err().field, field);
    }
    let cases: Vec<(SubmitSandboxes, &str)> = vec![
        (sandboxes(0), "count"),
        (
            SubmitSandboxes {
                cpu_millis: 0,
                ..sandboxes(1)
            },
            "cpu_millis",
        ),
        (
            SubmitSandboxes {
                tenant: "x".into(),
                ..sandboxes(1)
            },
            "tenant",
        ),
        (
            SubmitSandboxes {
                name: "a/b".into(),
                ..sandboxes(1)
            },
            "name",
        ),
    ];
    for (r, field) in cases {
        assert_eq!(p.sandbox_event(&r, 1).unwrap_err().field, field);
    }
    // Too many to fit: the event is refused when it applies, and nothing changes.
    let mut p = p;
    let before = p.fingerprint();
    let e = p.sandbox_event(&sandboxes(1_000_000), 1).unwrap();
    assert!(p.apply(&e).is_err());
    assert_eq!(before, p.fingerprint());
}

#[test]
fn changes_name_the_old_and_new_nodes_of_what_moved() {
    let (mut p, _) = up();
    p.take_changed_nodes();
    let e = p.submit_event(&req("j", 2), 100).unwrap();
    p.apply(&e).unwrap();
    assert!(
        p.take_changed_nodes().is_empty(),
        "a pending job is nowhere yet"
    );
    p.apply(&Event::Pass { at: 101 }).unwrap();
    let nodes = p.job_view(JobId(1)).unwrap().nodes;
    assert_eq!(p.take_changed_nodes(), nodes);
    // A node of the job dies: the job leaves both nodes (the survivor must stop its task).
    p.apply(&Event::NodeDown {
        node: nodes[1].clone(),
        at: 102,
    })
    .unwrap();
    assert_eq!(p.take_changed_nodes(), nodes);
    // Placed again elsewhere: the new nodes change.
    p.apply(&Event::Pass { at: 103 }).unwrap();
    let again = p.job_view(JobId(1)).unwrap().nodes;
    assert_eq!(p.take_changed_nodes(), again);
    p.apply(&Event::Cancel { id: 1, at: 104 }).unwrap();
    assert_eq!(p.take_changed_nodes(), again);
    assert!(p.take_changed_nodes().is_empty());
}

#[test]
fn a_drained_node_takes_no_new_work_even_after_its_agent_returns() {
    let (mut p, _) = up();
    let names = p.up_nodes();
    // Drain every node but the first tray (and one CPU host).
    let keep = [names[0].clone(), names[18].clone()];
    for n in names.iter().filter(|n| !keep.contains(n)) {
        p.apply(&Event::NodeDrain {
            node: n.clone(),
            drain: true,
            at: 100,
        })
        .unwrap();
    }
    let state =
        |p: &ControlPlane, n: &str| p.nodes().into_iter().find(|v| v.name == n).unwrap().state;
    assert_eq!(state(&p, &names[1]), "draining");
    // The node's agent goes away and comes back: still draining.
    for e in [
        Event::NodeDown {
            node: names[1].clone(),
            at: 101,
        },
        Event::NodeUp {
            address: None,
            node: names[1].clone(),
            at: 102,
        },
    ] {
        p.apply(&e).unwrap();
    }
    assert_eq!(state(&p, &names[1]), "draining");
    let e = p.submit_event(&req("j", 1), 103).unwrap();
    p.apply(&e).unwrap();
    p.apply(&Event::Pass { at: 104 }).unwrap();
    let on = p.job_view(JobId(1)).unwrap().nodes;
    assert!(keep.contains(&on[0]), "{on:?}");
    // Draining twice is refused; resuming makes it take work again.
    let again = Event::NodeDrain {
        node: names[1].clone(),
        drain: true,
        at: 105,
    };
    assert!(p.apply(&again).is_err());
    p.apply(&Event::NodeDrain {
        node: names[1].clone(),
        drain: false,
        at: 106,
    })
    .unwrap();
    assert_eq!(state(&p, &names[1]), "ready");
}

mod accounting;
mod endpoints;
mod fleet_change;
mod models;
mod replay;
mod rollout;
mod units;

#[test]
fn an_interactive_batch_keeps_its_lifetimes_through_replay_and_a_snapshot() {
    let (mut p, mut journal) = up();
    let req = SubmitSandboxes {
        interactive: true,
        command: Vec::new(),
        timeout_s: Some(900),
        idle_timeout_s: Some(60),
        ..sandboxes(2)
    };
    let e = p.sandbox_event(&req, 100).unwrap();
    let r = p.apply(&e).unwrap();
    journal.push(p.encode(&r));
    let v = p.batch_view(BatchId(1)).unwrap();
    assert_eq!(
        (v.interactive, v.expires_at, v.idle_timeout_s),
        (true, Some(1000), Some(60))
    );
    // Its hosts are told to run it interactive, with no command.
    let told: Vec<_> = p
        .up_nodes()
        .into_iter()
        .flat_map(|n| p.assignments(&n).1)
        .collect();
    assert!(!told.is_empty() && told.iter().all(|s| s.interactive && s.command.is_empty()));
    let again = ControlPlane::replay(numbered(&journal)).unwrap().unwrap();
    assert_eq!(again.batch_view(BatchId(1)), Some(v.clone()));
    let loaded = ControlPlane::from_snapshot(&p.snapshot().unwrap()).unwrap();
    assert_eq!(loaded.batch_view(BatchId(1)), Some(v));
    assert_eq!(loaded.live_sessions(), vec![(BatchId(1), 1000, 60)]);
    // A batch record written before interactive batches existed has no such field: it reads
    // as a batch that runs its command.
    let mut old = journal.clone();
    let last = String::from_utf8(old.pop().unwrap()).unwrap();
    let field = r#","interactive":{"timeout_s":900,"idle_timeout_s":60}"#;
    assert!(last.contains(field), "{last}");
    old.push(last.replace(field, "").into_bytes());
    let plain = ControlPlane::replay(numbered(&old)).unwrap().unwrap();
    assert!(!plain.batch_view(BatchId(1)).unwrap().interactive);
    assert!(plain.live_sessions().is_empty());
}

#[test]
fn node_pages_follow_the_fleet_order_and_refuse_what_they_cannot_name() {
    let (p, _) = up();
    let all = p.nodes();
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = p.node_page(None, after.as_deref(), 3, |_| true).unwrap();
        let full = page.len() == 3;
        after = page.last().map(|v| v.name.clone());
        paged.extend(page);
        if !full {
            break;
        }
    }
    assert_eq!(paged, all);
    for state in ["ready", "down"] {
        let expected: Vec<NodeView> = all.iter().filter(|v| v.state == state).cloned().collect();
        assert_eq!(
            p.node_page(Some(state), None, 1000, |_| true).unwrap(),
            expected
        );
    }
    let first = all[0].name.clone();
    assert_eq!(
        p.node_page(None, None, 1000, |n| n == first).unwrap(),
        vec![all[0].clone()]
    );
    assert_eq!(
        p.node_page(Some("asleep"), None, 9, |_| true)
            .unwrap_err()
            .field,
        "state"
    );
    assert_eq!(
        p.node_page(None, Some("nope"), 9, |_| true)
            .unwrap_err()
            .field,
        "after"
    );
}
