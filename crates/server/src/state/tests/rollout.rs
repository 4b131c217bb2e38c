//! Rolling updates in the state: a new version reaches every replica a step at a time as new
//! ones report ready, never with fewer ready than the desired count; an undo brings the old
//! one back; replay and a snapshot give the same updates and the same tasks.

use super::endpoints::{beat, report};
use super::*;
use crate::api::StartRollout;

/// Every running replica of service 1 reports its endpoint ready; the records applied.
fn all_ready(p: &mut ControlPlane, journal: &mut Vec<Vec<u8>>, at: u64) {
    let v = p.service_view(ServiceId(1)).unwrap();
    for nodes in &v.replicas {
        let node = &nodes[0];
        let (tasks, _) = p.assignments(node);
        let reports = tasks.iter().map(|t| report(t, 31_000, true)).collect();
        for e in p.heartbeat_events(&beat(node, reports), at).unwrap() {
            let r = p.apply(&e).unwrap();
            journal.push(p.encode(&r));
        }
    }
}

/// The commands service 1's running replicas run.
fn commands(p: &ControlPlane) -> Vec<Vec<String>> {
    let v = p.service_view(ServiceId(1)).unwrap();
    v.replicas
        .iter()
        .flat_map(|nodes| p.assignments(&nodes[0]).0)
        .filter(|a| a.job >= model::WorkloadId::REPLICA_BASE)
        .map(|a| a.command)
        .collect()
}

/// Steps and passes until the update settles; the most ready replicas missing on the way.
fn settle(p: &mut ControlPlane, journal: &mut Vec<Vec<u8>>, mut at: u64) -> (u64, u32) {
    let mut worst_missing = 0;
    for _ in 0..30 {
        let desired = p.service_view(ServiceId(1)).unwrap().desired;
        for e in p.rollout_events(at).into_iter().chain([Event::Pass { at }]) {
            let r = p.apply(&e).unwrap();
            journal.push(p.encode(&r));
        }
        let ready = p.service_view(ServiceId(1)).unwrap().ready;
        worst_missing = worst_missing.max(desired.saturating_sub(ready));
        all_ready(p, journal, at);
        at += 1;
        let state = p.rollout_view(ServiceId(1)).unwrap().state;
        if state == "done" || state == "rolled-back" {
            return (at, worst_missing);
        }
    }
    panic!(
        "the update did not settle: {:?}",
        p.rollout_view(ServiceId(1))
    );
}

#[test]
fn a_version_rolls_over_every_replica_and_back() {
    let (mut p, mut journal) = up();
    let mut spec = service(3);
    spec.max_replicas = Some(4);
    spec.spread = None;
    spec.command = vec!["serve".into(), "v1".into()];
    let e = p.service_event(&spec, 100).unwrap();
    let r = p.apply(&e).unwrap();
    journal.push(p.encode(&r));
    let r = p.apply(&Event::Pass { at: 101 }).unwrap();
    journal.push(p.encode(&r));
    // Once ready, and with no update, there is nothing to step.
    for t in 102..105 {
        let r = p.apply(&Event::Pass { at: t }).unwrap();
        journal.push(p.encode(&r));
        all_ready(&mut p, &mut journal, t);
    }
    assert_eq!(p.service_view(ServiceId(1)).unwrap().ready, 3);
    assert!(p.rollout_events(110).is_empty());
    assert_eq!(p.rollout_view(ServiceId(1)).unwrap().state, "none");

    // Refused by field: the same version, nothing allowed to move, a bad deadline.
    let ask = |version: &str, surge: u32, unavailable: u32| StartRollout {
        version: version.into(),
        command: Some(vec!["serve".into(), version.into()]),
        env: None,
        max_surge: surge,
        max_unavailable: unavailable,
        progress_deadline_s: 60,
        canary_percent: None,
    };
    let refused = |a: StartRollout| p.rollout_event(ServiceId(1), &a, 110).unwrap_err().field;
    assert_eq!(refused(ask("1", 1, 0)), "version");
    assert_eq!(refused(ask("v2", 0, 0)), "max_surge");
    assert_eq!(
        refused(StartRollout {
            progress_deadline_s: 5,
            ..ask("v2", 1, 0)
        }),
        "progress_deadline_s"
    );

    let e = p
        .rollout_event(ServiceId(1), &ask("v2", 1, 0), 110)
        .unwrap();
    let r = p.apply(&e).unwrap();
    journal.push(p.encode(&r));
    assert_eq!(p.rollout_view(ServiceId(1)).unwrap().state, "rolling");
    let (at, missing) = settle(&mut p, &mut journal, 111);
    assert_eq!(
        missing, 0,
        "a surge of one and none unavailable: never fewer ready"
    );
    let view = p.rollout_view(ServiceId(1)).unwrap();
    assert_eq!((view.state.as_str(), view.version.as_str()), ("done", "v2"));
    assert_eq!(
        (view.old_replicas, view.new_replicas, view.surge),
        (0, 3, 0)
    );
    let v2 = vec!["serve".to_string(), "v2".to_string()];
    assert_eq!(commands(&p), vec![v2.clone(); 3]);

    // Replay and a snapshot give the same update and the same tasks.
    let again = ControlPlane::replay(numbered(&journal)).unwrap().unwrap();
    assert_eq!(again.rollout_view(ServiceId(1)), Some(view.clone()));
    assert_eq!(commands(&again), commands(&p));
    let loaded = ControlPlane::from_snapshot(&p.snapshot().unwrap()).unwrap();
    assert_eq!(loaded.rollout_view(ServiceId(1)), Some(view));
    assert_eq!(commands(&loaded), commands(&p));

    // Undone: v1 rolls back over every replica the same way.
    let r = p
        .apply(&Event::RolloutUndo {
            id: ServiceId(1),
            reason: "an operator's undo".into(),
            at,
        })
        .unwrap();
    journal.push(p.encode(&r));
    assert_eq!(p.rollout_view(ServiceId(1)).unwrap().state, "rolling-back");
    // Undone again while rolling back: refused, and nothing changes.
    let before = p.snapshot().unwrap();
    assert!(p
        .apply(&Event::RolloutUndo {
            id: ServiceId(1),
            reason: "twice".into(),
            at,
        })
        .is_err());
    assert_eq!(p.snapshot().unwrap(), before);
    settle(&mut p, &mut journal, at + 1);
    let view = p.rollout_view(ServiceId(1)).unwrap();
    assert_eq!(
        (
            view.state.as_str(),
            view.version.as_str(),
            view.reason.as_deref()
        ),
        ("rolled-back", "1", Some("an operator's undo"))
    );
    assert_eq!(
        commands(&p),
        vec![vec!["serve".to_string(), "v1".to_string()]; 3]
    );
    assert_replays_to(&p, journal);
}

#[test]
fn a_canary_stays_one_replica_while_the_service_scales_until_promoted() {
    let (mut p, mut journal) = up();
    let mut spec = service(2);
    spec.spread = None;
    spec.command = vec!["serve".into(), "v1".into()];
    let e = p.service_event(&spec, 100).unwrap();
    let r = p.apply(&e).unwrap();
    journal.push(p.encode(&r));
    for t in 101..104 {
        let r = p.apply(&Event::Pass { at: t }).unwrap();
        journal.push(p.encode(&r));
        all_ready(&mut p, &mut journal, t);
    }
    let ask = StartRollout {
        version: "v2".into(),
        command: Some(vec!["serve".into(), "v2".into()]),
        env: None,
        max_surge: 1,
        max_unavailable: 0,
        progress_deadline_s: 60,
        canary_percent: Some(10),
    };
    let e = p.rollout_event(ServiceId(1), &ask, 110).unwrap();
    let r = p.apply(&e).unwrap();
    journal.push(p.encode(&r));
    let step = |p: &mut ControlPlane, journal: &mut Vec<Vec<u8>>, at: u64| {
        for e in p.rollout_events(at).into_iter().chain([Event::Pass { at }]) {
            let r = p.apply(&e).unwrap();
            journal.push(p.encode(&r));
        }
        all_ready(p, journal, at);
    };
    for t in 111..115 {
        step(&mut p, &mut journal, t);
    }
    let count = |p: &ControlPlane, v: &str| {
        commands(p)
            .iter()
            .filter(|c| c.get(1).map(String::as_str) == Some(v))
            .count()
    };
    let view = p.rollout_view(ServiceId(1)).unwrap();
    assert_eq!(
        (view.state.as_str(), view.canary_percent),
        ("canary", Some(10))
    );
    assert_eq!((count(&p, "v1"), count(&p, "v2")), (2, 1));
    // The routes mark the canary's endpoint and carry its share.
    let routes = p.gateway_routes(None);
    assert_eq!(routes.services[0].canary_percent, Some(10));
    assert_eq!(
        routes.services[0]
            .endpoints
            .iter()
            .filter(|e| e.canary)
            .count(),
        1
    );
    // The autoscaler adds a replica: it runs the old version; the canary stays one.
    let r = p
        .apply(&Event::ServiceScale {
            id: ServiceId(1),
            replicas: 3,
            autoscaled: true,
            at: 115,
        })
        .unwrap();
    journal.push(p.encode(&r));
    for t in 116..119 {
        step(&mut p, &mut journal, t);
    }
    assert_eq!((count(&p, "v1"), count(&p, "v2")), (3, 1));
    assert_eq!(p.rollout_view(ServiceId(1)).unwrap().state, "canary");
    // Promoted: the update goes on to every replica.
    let r = p
        .apply(&Event::RolloutPromote {
            id: ServiceId(1),
            at: 119,
        })
        .unwrap();
    journal.push(p.encode(&r));
    settle(&mut p, &mut journal, 120);
    assert_eq!(p.rollout_view(ServiceId(1)).unwrap().state, "done");
    assert_eq!((count(&p, "v1"), count(&p, "v2")), (0, 3));
    assert_replays_to(&p, journal);
}
