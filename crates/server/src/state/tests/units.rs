//! Unit services in the state: a replica of a prefill and a decode role placed as one unit,
//! each node told its role, its port and its peers' addresses; bad roles named by field;
//! replay and a snapshot give the same tasks; scaling moves whole units.

use super::*;
use crate::api::ServiceRole;

fn role(name: &str, workers: u32, nodes_per_worker: u32, command: &str) -> ServiceRole {
    ServiceRole {
        name: name.into(),
        workers,
        nodes_per_worker,
        gpus_per_node: 4,
        cpu_millis_per_node: 1000,
        memory_mib_per_node: 512,
        command: vec![command.into()],
        env: BTreeMap::from([("ROLE_ONLY".into(), name.into())]),
    }
}

/// One prefill worker of two trays, two decode workers of one tray each.
fn unit_service(replicas: u32) -> SubmitService {
    SubmitService {
        gpus_per_node: 0,
        command: Vec::new(),
        env: BTreeMap::from([("MODEL".into(), "m1".into())]),
        spread: None,
        ready_path: Some("/ready".into()),
        roles: vec![
            role("prefill", 1, 2, "prefill-server"),
            role("decode", 2, 1, "decode-server"),
        ],
        ..service(replicas)
    }
}

/// Every node up with an address of its own (`10.0.<i/256>.<i%256>`).
fn up_with_addresses() -> (ControlPlane, Vec<Vec<u8>>) {
    let mut p = ControlPlane::new(&init()).unwrap();
    let mut journal = vec![init_record(&p)];
    let names: Vec<String> = p
        .sched
        .engine()
        .fleet()
        .nodes()
        .iter()
        .map(|n| n.name.to_string())
        .collect();
    for (i, name) in names.into_iter().enumerate() {
        let e = Event::NodeUp {
            address: Some(format!("10.0.{}.{}", i / 256, i % 256)),
            node: name,
            at: 100,
        };
        let r = p.apply(&e).unwrap();
        journal.push(p.encode(&r));
    }
    (p, journal)
}

fn scale(replicas: u32, at: u64) -> Event {
    Event::ServiceScale {
        id: ServiceId(1),
        replicas,
        autoscaled: false,
        at,
    }
}

/// Every task of service 1's replicas, by (replica, rank).
fn unit_tasks(p: &ControlPlane) -> BTreeMap<(u64, u32), crate::api::Assignment> {
    let v = p.service_view(ServiceId(1)).unwrap();
    let mut out = BTreeMap::new();
    for nodes in &v.replicas {
        for node in nodes {
            for a in p.assignments(node).0 {
                out.insert((a.job, a.rank), a);
            }
        }
    }
    out
}

#[test]
fn each_node_of_a_unit_runs_its_role_with_its_peers_addresses() {
    let (mut p, mut journal) = up_with_addresses();
    let e = p.service_event(&unit_service(2), 100).unwrap();
    for e in [e, Event::Pass { at: 101 }] {
        let r = p.apply(&e).unwrap();
        journal.push(p.encode(&r));
    }
    let v = p.service_view(ServiceId(1)).unwrap();
    assert_eq!((v.running, v.gpus_per_replica), (2, 16));
    assert_eq!(v.roles.len(), 2);
    assert_eq!(
        (v.roles[1].name.as_str(), v.roles[1].workers),
        ("decode", 2)
    );
    let tasks = unit_tasks(&p);
    assert_eq!(tasks.len(), 8, "two units of four nodes");
    let replica = *tasks.keys().next().map(|(j, _)| j).unwrap();
    let rank = |r: u32| &tasks[&(replica, r)];
    let addr = |a: &crate::api::Assignment| {
        let node = &v.replicas.iter().flatten().find(|n| {
            p.assignments(n)
                .0
                .iter()
                .any(|x| x.job == a.job && x.rank == a.rank)
        });
        let i = p
            .sched
            .engine()
            .fleet()
            .node_by_name(node.unwrap())
            .unwrap()
            .0;
        format!("10.0.{}.{}:{}", i / 256, i % 256, a.port.unwrap())
    };
    // Rank 0 is the first prefill node: it alone serves and is probed.
    assert!(rank(0).serves && !rank(1).serves && !rank(2).serves && !rank(3).serves);
    assert_eq!(rank(0).ready_path.as_deref(), Some("/ready"));
    assert_eq!(rank(0).command, ["prefill-server"]);
    assert_eq!(rank(2).command, ["decode-server"]);
    assert_eq!((rank(0).cpu_millis, rank(0).memory_mib), (1000, 512));
    let env = |r: u32, k: &str| rank(r).env.get(k).cloned().unwrap_or_default();
    assert_eq!(env(1, "STARGRID_ROLE"), "prefill");
    assert_eq!(env(1, "STARGRID_WORKER_RANK"), "1");
    assert_eq!(env(1, "STARGRID_WORKER_SIZE"), "2");
    assert_eq!(env(3, "STARGRID_ROLE"), "decode");
    assert_eq!(env(3, "STARGRID_ROLE_INDEX"), "1");
    assert_eq!(env(3, "MODEL"), "m1", "the service's env");
    assert_eq!(env(3, "ROLE_ONLY"), "decode", "the role's env over it");
    assert_eq!(env(0, "STARGRID_ROLES"), "prefill,decode");
    // Every node knows each worker's first node, and its own worker's nodes.
    for r in 0..4 {
        assert_eq!(env(r, "STARGRID_PREFILL_ADDRS"), addr(rank(0)));
        assert_eq!(
            env(r, "STARGRID_DECODE_ADDRS"),
            format!("{},{}", addr(rank(2)), addr(rank(3)))
        );
    }
    assert_eq!(
        env(1, "STARGRID_WORKER_ADDRS"),
        format!("{},{}", addr(rank(0)), addr(rank(1)))
    );
    // Replay and a snapshot give the very same tasks.
    let again = ControlPlane::replay(numbered(&journal)).unwrap().unwrap();
    assert_eq!(unit_tasks(&again), tasks);
    let loaded = ControlPlane::from_snapshot(&p.snapshot().unwrap()).unwrap();
    assert_eq!(unit_tasks(&loaded), tasks);
    // Scaling moves whole units.
    p.apply(&scale(3, 102)).unwrap();
    p.apply(&Event::Pass { at: 103 }).unwrap();
    assert_eq!(unit_tasks(&p).len(), 12);
    p.apply(&scale(2, 104)).unwrap();
    let kept = unit_tasks(&p);
    let v = p.service_view(ServiceId(1)).unwrap();
    assert_eq!((v.desired, v.running), (2, 2), "{v:?}");
    let stopping = kept.values().filter(|a| a.stop_by.is_some()).count();
    assert_eq!(
        (kept.len() - stopping, stopping % 4),
        (8, 0),
        "whole units stop"
    );
    // A rollout may change env or the version, not a command (those are the roles').
    let bad = crate::api::StartRollout {
        version: "v2".into(),
        command: Some(vec!["other".into()]),
        env: None,
        max_surge: 1,
        max_unavailable: 0,
        progress_deadline_s: 120,
        canary_percent: None,
    };
    assert_eq!(
        p.rollout_event(ServiceId(1), &bad, 105).unwrap_err().field,
        "command"
    );
}

#[test]
fn bad_roles_name_the_field() {
    let (p, _) = up();
    let with = |f: &dyn Fn(&mut SubmitService)| {
        let mut s = unit_service(1);
        f(&mut s);
        p.service_event(&s, 100).unwrap_err().field
    };
    assert_eq!(
        with(&|s| s.roles[1].name = "prefill".into()),
        "roles[1].name"
    );
    assert_eq!(
        with(&|s| s.roles[0].name = "Pre-fill".into()),
        "roles[0].name"
    );
    assert_eq!(with(&|s| s.roles[0].workers = 0), "roles[0].workers");
    assert_eq!(
        with(&|s| s.roles[1].gpus_per_node = 0),
        "roles[1].gpus_per_node"
    );
    assert_eq!(with(&|s| s.roles[1].command.clear()), "roles[1].command");
    assert_eq!(with(&|s| s.gpus_per_node = 4), "gpus_per_node");
    assert_eq!(with(&|s| s.command = vec!["x".into()]), "command");
    assert_eq!(with(&|s| s.roles = vec![role("r", 1, 1, "x"); 17]), "roles");
    assert_eq!(with(&|s| s.roles[0].workers = 300), "roles[0].workers");
    assert_eq!(
        with(&|s| s.roles[1].env = BTreeMap::from([("K".into(), "v".repeat(70_000))])),
        "roles[1].env"
    );
    // More GPUs than the fleet has, over the replicas.
    assert_eq!(with(&|s| s.max_replicas = Some(10)), "max_replicas");
    // A heartbeat's address is checked.
    let mut hb = super::endpoints::beat("nope", Vec::new());
    hb.node = p.up_nodes()[0].clone();
    hb.address = Some("bad address".into());
    assert_eq!(p.heartbeat_events(&hb, 100).unwrap_err().field, "address");
}

#[test]
fn a_new_address_while_up_is_journaled_and_kept_through_a_snapshot() {
    let (mut p, mut journal) = up_with_addresses();
    let node = p.up_nodes()[0].clone();
    let mut hb = super::endpoints::beat(&node, Vec::new());
    hb.address = Some("10.0.0.0".into());
    // The address it came up with: nothing new.
    assert!(p.heartbeat_events(&hb, 101).unwrap().is_empty());
    hb.address = Some("node-a.example".into());
    let events = p.heartbeat_events(&hb, 102).unwrap();
    assert!(
        matches!(&events[..], [Event::NodeAddress { address, .. }] if address == "node-a.example"),
        "{events:?}"
    );
    for e in events {
        let r = p.apply(&e).unwrap();
        journal.push(p.encode(&r));
    }
    assert!(p.heartbeat_events(&hb, 103).unwrap().is_empty());
    let again = ControlPlane::replay(numbered(&journal)).unwrap().unwrap();
    assert_eq!(again.heartbeat_events(&hb, 104).unwrap(), Vec::new());
    let loaded = ControlPlane::from_snapshot(&p.snapshot().unwrap()).unwrap();
    assert_eq!(loaded.heartbeat_events(&hb, 104).unwrap(), Vec::new());
}
