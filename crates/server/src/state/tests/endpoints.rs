//! Service replicas' endpoints: given by the agent, reported with their readiness, journaled
//! when they change, listed while ready, gone with the run.

use super::*;

pub(super) fn report(a: &crate::api::Assignment, port: u16, ready: bool) -> crate::api::TaskReport {
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

pub(super) fn beat(node: &str, tasks: Vec<crate::api::TaskReport>) -> Heartbeat {
    Heartbeat {
        address: None,
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

#[test]
fn autoscale_targets_are_checked_by_field_and_kept_through_replay_and_a_snapshot() {
    let (mut p, mut journal) = up();
    let with = |autoscale: serde_json::Value| {
        let mut spec = service(1);
        spec.max_replicas = Some(4);
        spec.autoscale = Some(serde_json::from_value(autoscale).unwrap());
        spec
    };
    for (autoscale, field) in [
        (
            serde_json::json!({}),
            "autoscale.target_inflight_per_replica",
        ),
        (
            serde_json::json!({"target_inflight_per_replica": 0}),
            "autoscale.target_inflight_per_replica",
        ),
        (
            serde_json::json!({"target_p95_ms": 0}),
            "autoscale.target_p95_ms",
        ),
        (
            serde_json::json!({"target_p95_ms": 200, "scale_down_window_s": 3601}),
            "autoscale.scale_down_window_s",
        ),
    ] {
        assert_eq!(
            p.service_event(&with(autoscale.clone()), 100)
                .unwrap_err()
                .field,
            field,
            "{autoscale}"
        );
    }
    let routes_before = p.routes_version();
    let e = p
        .service_event(
            &with(serde_json::json!({"target_inflight_per_replica": 8})),
            100,
        )
        .unwrap();
    let r = p.apply(&e).unwrap();
    journal.push(p.encode(&r));
    assert!(
        p.routes_version() > routes_before,
        "a new service is a new route"
    );
    // A second active service of that name in the tenant is refused: gateways route by it.
    assert_eq!(p.service_event(&service(1), 101).unwrap_err().field, "name");
    let scaled = p.autoscaled();
    assert_eq!(scaled.len(), 1);
    assert_eq!(
        (
            scaled[0].desired,
            scaled[0].policy.min_replicas,
            scaled[0].policy.max_replicas
        ),
        (1, 1, 4)
    );
    assert_eq!(scaled[0].policy.target_inflight_per_replica, Some(8.0));
    assert_eq!(scaled[0].policy.scale_down_window, 60, "the default window");
    let again = ControlPlane::replay(numbered(&journal)).unwrap().unwrap();
    assert_eq!(again.autoscaled(), scaled);
    let loaded = ControlPlane::from_snapshot(&p.snapshot().unwrap()).unwrap();
    assert_eq!(loaded.autoscaled(), scaled);
    // The routes name it, with no endpoint until a replica is ready; a tenant sees only its
    // own services.
    let routes = p.gateway_routes(None);
    assert_eq!(routes.services.len(), 1);
    assert_eq!(
        (
            routes.services[0].name.as_str(),
            routes.services[0].tenant.as_str()
        ),
        ("chat", "default")
    );
    assert!(routes.services[0].endpoints.is_empty());
    assert!(p.gateway_routes(Some("vision")).services.is_empty());
    // Scaled (by hand or by the autoscaler: the same event), the routes change; deleted,
    // the service leaves them and its name is free again.
    let v = p.routes_version();
    p.apply(&Event::ServiceScale {
        autoscaled: false,
        id: ServiceId(1),
        replicas: 3,
        at: 102,
    })
    .unwrap();
    assert!(p.routes_version() > v);
    assert_eq!(p.gateway_routes(None).services[0].desired, 3);
    p.apply(&Event::ServiceDelete {
        id: ServiceId(1),
        at: 103,
    })
    .unwrap();
    assert!(p.gateway_routes(None).services.is_empty());
    assert!(p.autoscaled().is_empty());
    assert!(p.service_event(&service(1), 104).is_ok());
}
