//! Service replicas' endpoints: given by the agent, reported with their readiness, journaled
//! when they change, listed while ready, gone with the run.

use super::*;

fn report(a: &crate::api::Assignment, port: u16, ready: bool) -> crate::api::TaskReport {
    crate::api::TaskReport {
        job: a.job,
        run: a.run,
        rank: a.rank,
        exit_code: None,
        oom_killed: false,
        checkpoint_at: None,
        endpoint: Some(crate::api::TaskEndpoint {
            address: "10.0.0.7".into(),
            port,
            ready,
        }),
    }
}

fn beat(node: &str, tasks: Vec<crate::api::TaskReport>) -> Heartbeat {
    Heartbeat {
        templates: Vec::new(),
        known: None,
        node: node.into(),
        inventory: None,
        logs: Vec::new(),
        tasks,
    }
}

#[test]
fn a_replica_is_an_endpoint_once_its_agent_reports_it_ready_and_until_its_run_ends() {
    let (mut p, mut journal) = up();
    let apply = |p: &mut ControlPlane, journal: &mut Vec<Vec<u8>>, e: Event| {
        let r = p.apply(&e).unwrap();
        journal.push(p.encode(&r));
    };
    // A readiness path is checked.
    let mut bad = service(2);
    bad.ready_path = Some("healthz".into());
    assert_eq!(p.service_event(&bad, 100).unwrap_err().field, "ready_path");
    let mut spec = service(2);
    spec.ready_path = Some("/healthz".into());
    let e = p.service_event(&spec, 100).unwrap();
    apply(&mut p, &mut journal, e);
    apply(&mut p, &mut journal, Event::Pass { at: 101 });
    let v = p.service_view(ServiceId(1)).unwrap();
    let node = v.replicas[0][0].clone();
    let (tasks, _) = p.assignments(&node);
    assert!(tasks[0].serves);
    assert_eq!(tasks[0].ready_path.as_deref(), Some("/healthz"));
    // Listening but not ready: journaled, not listed.
    let events = p
        .heartbeat_events(&beat(&node, vec![report(&tasks[0], 31_000, false)]), 102)
        .unwrap();
    assert!(
        matches!(events[..], [Event::ReplicaEndpoint { .. }]),
        "{events:?}"
    );
    for e in events {
        apply(&mut p, &mut journal, e);
    }
    assert!(p.service_endpoints(ServiceId(1)).is_empty());
    // The same report again is not news; ready is.
    assert!(p
        .heartbeat_events(&beat(&node, vec![report(&tasks[0], 31_000, false)]), 103)
        .unwrap()
        .is_empty());
    for e in p
        .heartbeat_events(&beat(&node, vec![report(&tasks[0], 31_000, true)]), 104)
        .unwrap()
    {
        apply(&mut p, &mut journal, e);
    }
    let listed = p.service_endpoints(ServiceId(1));
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].node.as_str(),
            listed[0].address.as_str(),
            listed[0].port
        ),
        (node.as_str(), "10.0.0.7", 31_000)
    );
    // Another node cannot speak for the replica.
    let other = v.replicas[1][0].clone();
    assert!(p
        .heartbeat_events(&beat(&other, vec![report(&tasks[0], 9, true)]), 105)
        .unwrap()
        .is_empty());
    // Replay and a snapshot keep it.
    let again = ControlPlane::replay(numbered(&journal)).unwrap().unwrap();
    assert_eq!(again.service_endpoints(ServiceId(1)), listed);
    let loaded = ControlPlane::from_snapshot(&p.snapshot().unwrap()).unwrap();
    assert_eq!(loaded.service_endpoints(ServiceId(1)), listed);
    // Its process exits: the endpoint goes with the run.
    let hb = beat(&node, vec![exit_report(tasks[0].job, tasks[0].run, 0, 1)]);
    for e in p.heartbeat_events(&hb, 110).unwrap() {
        apply(&mut p, &mut journal, e);
    }
    assert!(p.service_endpoints(ServiceId(1)).is_empty());
}
