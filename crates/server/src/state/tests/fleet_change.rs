//! Fleet files applied to a running cell: nodes joining while work runs, a zone removed and
//! leaving once empty, refusals, and replay and snapshots across the changes.

use super::*;

/// A new region's pool and one NVL72 domain of 18 trays, as fleet-file tables (shared with
/// the end-to-end tests).
const EU_REGION: &str = include_str!("eu_region.toml");

/// The default fleet's text without the groups of `zone`.
fn without_zone(text: &str, zone: &str) -> String {
    let mut file = fleet::file::read("test", text).unwrap();
    file.groups.retain(|g| g.zone != zone);
    fleet::file::to_text(&file, 0)
}

/// Replaying `journal`, and loading a snapshot cut after each of its records then replaying
/// the rest, give `p`'s state and spend.
fn assert_every_snapshot_gives(p: &ControlPlane, journal: &[Vec<u8>]) {
    assert_replays_to(p, journal.to_vec());
    for cut in 1..=journal.len() {
        let head = ControlPlane::replay(numbered(journal).take(cut))
            .unwrap()
            .unwrap();
        let mut plane = Some(ControlPlane::from_snapshot(&head.snapshot().unwrap()).unwrap());
        for (seq, e) in numbered(journal).skip(cut) {
            ControlPlane::replay_one(&mut plane, seq, e).unwrap();
        }
        let again = plane.unwrap();
        assert_eq!(again.fingerprint(), p.fingerprint(), "snapshot at {cut}");
        assert_eq!(
            again.sched.spend(200),
            p.sched.spend(200),
            "snapshot at {cut}"
        );
    }
}

/// Applies `e` and adds its record to `journal`.
fn commit(p: &mut ControlPlane, journal: &mut Vec<Vec<u8>>, e: Event) -> Record {
    let r = p.apply(&e).unwrap();
    journal.push(p.encode(&r));
    r
}

#[test]
fn a_region_joins_while_jobs_run_then_a_zone_leaves_once_its_work_ends() {
    let (mut p, mut journal) = up();
    for i in 0..2 {
        let e = p.submit_event(&req(&format!("j{i}"), 18), 100).unwrap();
        commit(&mut p, &mut journal, e);
    }
    commit(&mut p, &mut journal, Event::Pass { at: 101 });
    let first = p.job_view(JobId(1)).unwrap();
    assert_eq!(first.state, "running");
    let before = default_fleet_toml().unwrap();

    // A region joins: its trays are down until their agents report, then take work.
    let grown = format!("{before}\n{EU_REGION}");
    let plan = p.plan_fleet(&grown).unwrap();
    assert_eq!(plan.change().added.count, 18);
    assert_eq!(plan.change().added.names, "eu0-t[00-17]");
    assert_eq!(plan.change().pools_added, vec!["aws-eu-west-1-gb200"]);
    assert_eq!(plan.change().leaving.count + plan.change().removed.count, 0);
    let r = commit(
        &mut p,
        &mut journal,
        Event::FleetApply {
            fleet_toml: grown.clone(),
            at: 110,
        },
    );
    let told = p.told(&r);
    assert!(
        told.iter().any(
            |t| matches!(&t.change, crate::api::Change::Node { node, .. } if node == "eu0-t[00-17]")
        ),
        "{told:?}"
    );
    assert_eq!(p.nodes().len(), 58);
    assert_eq!(p.job_view(JobId(1)).unwrap().nodes, first.nodes);
    let e = p.submit_event(&req("j2", 18), 111).unwrap();
    commit(&mut p, &mut journal, e);
    commit(&mut p, &mut journal, Event::Pass { at: 112 });
    assert_eq!(p.job_view(JobId(3)).unwrap().state, "pending");
    for t in 0..18 {
        let node = format!("eu0-t{t:02}");
        commit(
            &mut p,
            &mut journal,
            Event::NodeUp {
                address: None,
                node,
                at: 113,
            },
        );
    }
    commit(&mut p, &mut journal, Event::Pass { at: 114 });
    let third = p.job_view(JobId(3)).unwrap();
    assert_eq!(third.state, "running");
    assert!(
        third.nodes.iter().all(|n| n.starts_with("eu0-t")),
        "{third:?}"
    );

    // The zone job 1 runs in is removed: its trays are drained and stay while it runs; its
    // idle CPU hosts leave at once.
    let zone = if first.nodes[0].starts_with("nvl00000") {
        "us-east-1-z1"
    } else {
        "us-west-2-z1"
    };
    let shrunk = without_zone(&grown, zone);
    let plan = p.plan_fleet(&shrunk).unwrap();
    assert_eq!(
        (plan.change().leaving.count, plan.change().removed.count),
        (18, 2)
    );
    commit(
        &mut p,
        &mut journal,
        Event::FleetApply {
            fleet_toml: shrunk.clone(),
            at: 120,
        },
    );
    assert_eq!(p.nodes().len(), 56);
    let leaving: Vec<NodeView> = p.nodes().into_iter().filter(|n| n.leaving).collect();
    assert_eq!(leaving.len(), 18);
    assert!(leaving.iter().all(|n| n.state == "draining"));
    assert_eq!(p.job_view(JobId(1)).unwrap().state, "running");
    assert_eq!(p.nodes_ready_to_leave(), None);
    // A leaving node is not resumed by an operator.
    commit(
        &mut p,
        &mut journal,
        Event::NodeDrain {
            node: leaving[0].name.clone(),
            drain: true,
            at: 121,
        },
    );
    commit(
        &mut p,
        &mut journal,
        Event::NodeDrain {
            node: leaving[0].name.clone(),
            drain: false,
            at: 122,
        },
    );
    assert_eq!(
        p.nodes()
            .iter()
            .find(|n| n.name == leaving[0].name)
            .unwrap()
            .state,
        "draining"
    );
    // New work does not land on them.
    let e = p.submit_event(&req("j3", 18), 123).unwrap();
    commit(&mut p, &mut journal, e);
    commit(&mut p, &mut journal, Event::Pass { at: 124 });
    assert_eq!(p.job_view(JobId(4)).unwrap().state, "pending");
    // Leaving before their work ends is refused.
    let early = Event::NodesLeft {
        nodes: leaving[0].name.clone(),
        at: 125,
    };
    assert!(matches!(p.apply(&early), Err(StateError::Conflict(_))));

    // Job 1 ends: its trays leave; its record keeps their names.
    for rank in 0..18 {
        let e = Event::TaskExited {
            job: JobId(1),
            run: 0,
            rank,
            code: 0,
            oom_killed: false,
            at: 130,
        };
        commit(&mut p, &mut journal, e);
    }
    let ready = p.nodes_ready_to_leave().unwrap();
    assert!(ready.all);
    let r = commit(
        &mut p,
        &mut journal,
        Event::NodesLeft {
            nodes: ready.nodes,
            at: 131,
        },
    );
    assert!(p
        .told(&r)
        .iter()
        .any(|t| matches!(&t.change, crate::api::Change::Node { state, .. } if state == "gone")));
    assert_eq!(p.nodes().len(), 38);
    assert!(p.nodes().iter().all(|n| !n.leaving));
    assert_eq!(p.job_view(JobId(1)).unwrap().state, "finished");
    assert_eq!(p.log_nodes(JobId(1)).unwrap().1, first.nodes);
    let summary = p.summaries().into_iter().find(|s| s.id == 1).unwrap();
    assert_eq!(summary.nodes, first.nodes);
    commit(&mut p, &mut journal, Event::Pass { at: 132 });
    assert_eq!(p.job_view(JobId(4)).unwrap().state, "pending");
    // The new region's pool is priced; the gone zone's pool keeps what it cost.
    let spend = p.sched.spend(200);
    assert!(spend
        .lines
        .iter()
        .any(|l| l.pool == "aws-eu-west-1-gb200" && l.usd > 0.0));
    let gone_pool = format!(
        "aws-{}-gb200",
        zone.trim_end_matches("-z1").to_owned() + "-z1"
    );
    assert!(
        spend
            .lines
            .iter()
            .any(|l| l.pool == gone_pool && l.usd > 0.0),
        "{gone_pool}: {:?}",
        spend.lines
    );

    // Replay, and a snapshot after every record, give the same state and spend.
    assert_every_snapshot_gives(&p, &journal);
}

#[test]
fn fleet_files_that_do_not_fit_the_cell_are_refused_by_field() {
    let (mut p, _) = up();
    let e = p.submit_event(&req("j", 18), 100).unwrap();
    p.apply(&e).unwrap();
    p.apply(&Event::Pass { at: 101 }).unwrap();
    let running_on = p.job_view(JobId(1)).unwrap().nodes;
    let text = default_fleet_toml().unwrap();
    let refused = |p: &ControlPlane, text: &str| match p.plan_fleet(text) {
        Err(e @ (StateError::BadFleet { .. } | StateError::Conflict(_))) => e.to_string(),
        other => panic!("not refused: {:?}", other.map(|p| p.change().clone())),
    };
    let e = refused(&p, "[[pools]\nname = 1");
    assert!(e.starts_with("fleet_toml.toml: line 1"), "{e}");
    let e = refused(
        &p,
        &text.replacen("price_per_hour = 60.0", "price_per_hour = 50.0", 1),
    );
    assert!(e.starts_with("fleet_toml.pools[0].price_per_hour"), "{e}");
    let e = refused(
        &p,
        &text.replacen(
            "nodes = \"nvl00000t[00-17]\"",
            "nodes = \"nvl00000t[00-17],cpu0000000\"",
            1,
        ),
    );
    assert!(
        e.contains("node 'cpu0000000' is declared twice") || e.contains("cannot move to pool"),
        "{e}"
    );
    // A busy node cannot move in the topology; an idle one can.
    let busy_domain = &running_on[0][..8];
    let idle_domain = if busy_domain == "nvl00000" {
        "nvl00001"
    } else {
        "nvl00000"
    };
    let e = refused(
        &p,
        &text.replace(
            &format!("domain = \"{busy_domain}\""),
            "domain = \"nvl-recabled\"",
        ),
    );
    assert!(e.contains("while work runs on it"), "{e}");
    let moved = text.replace(
        &format!("domain = \"{idle_domain}\""),
        "domain = \"nvl-recabled\"",
    );
    let plan = p.plan_fleet(&moved).unwrap();
    assert_eq!(plan.change().moved.count, 18);
    p.apply(&Event::FleetApply {
        fleet_toml: moved,
        at: 102,
    })
    .unwrap();
    assert!(p.fleet_file().contains("nvl-recabled"));
    // Only leaving nodes that are empty may leave.
    let e = p
        .apply(&Event::NodesLeft {
            nodes: running_on[0].clone(),
            at: 103,
        })
        .unwrap_err();
    assert!(e.to_string().contains("is not leaving"), "{e}");
    // Nothing refused changed the state.
    assert_eq!(p.job_view(JobId(1)).unwrap().nodes, running_on);
}

fn registration(
    node: &str,
    pool: &str,
    gpus: u32,
    domain: Option<&str>,
) -> crate::api::RegisterNode {
    crate::api::RegisterNode {
        node: node.into(),
        pool: pool.into(),
        zone: "us-east-1-z1".into(),
        network: vec!["sp0".into(), "agg0".into(), "blk9".into()],
        domain: domain.map(str::to_string),
        inventory: crate::api::Inventory {
            gpus,
            gpu_model: (gpus > 0).then(|| "GB200".to_string()),
            source: "declared".into(),
        },
    }
}

#[test]
fn agents_register_nodes_under_the_rule_and_they_join_once_approved() {
    let (mut p, mut journal) = up();
    let gb = "aws-us-east-1-z1-gb200";
    let tray = |i: u32| registration(&format!("reg-t{i:02}"), gb, 4, Some("nvl-reg0"));
    // No rule: refused.
    assert_eq!(p.register_event(&tray(0), 100).unwrap_err().field, "node");
    // A rule names the cell's pools only.
    let mut spec = crate::api::RegistrationRuleSpec {
        nodes: "reg-t[00-17]".into(),
        pools: vec!["no-such-pool".into()],
        zones: Vec::new(),
        auto_approve: false,
    };
    assert_eq!(
        p.registration_rule_event(Some(&spec), 100)
            .unwrap_err()
            .field,
        "rule.pools[0]"
    );
    spec.pools = vec![gb.into()];
    let e = p.registration_rule_event(Some(&spec), 100).unwrap();
    commit(&mut p, &mut journal, e);
    // Refusals by field: a name outside the rule, a pool outside it, what the agent found.
    let refused = |p: &ControlPlane, r: &crate::api::RegisterNode| {
        p.register_event(r, 101).unwrap_err().field
    };
    assert_eq!(
        refused(&p, &registration("other-t00", gb, 4, Some("nvl-reg0"))),
        "node"
    );
    assert_eq!(
        refused(
            &p,
            &registration("reg-t00", "aws-us-east-1-z1-cpu", 0, None)
        ),
        "pool"
    );
    assert_eq!(
        refused(&p, &registration("reg-t00", gb, 8, Some("nvl-reg0"))),
        "inventory.gpus"
    );
    let mut h100 = tray(0);
    h100.inventory.gpu_model = Some("H100".into());
    assert_eq!(refused(&p, &h100), "inventory.gpu_model");
    let mut bad_zone = tray(0);
    bad_zone.zone = "a/b".into();
    assert_eq!(refused(&p, &bad_zone), "zone");
    // A registered node brings a new domain: an existing one is refused.
    let mut existing = tray(0);
    (existing.network, existing.domain) = (
        vec!["sp0".into(), "agg0".into(), "blk0".into()],
        Some("nvl00000".into()),
    );
    assert_eq!(refused(&p, &existing), "domain");
    // Registered: it waits; registering again is not news.
    for i in 0..18 {
        let e = p.register_event(&tray(i), 102).unwrap().unwrap();
        let r = commit(&mut p, &mut journal, e);
        assert!(!p.told(&r).is_empty());
    }
    assert_eq!(p.register_event(&tray(3), 103).unwrap(), None);
    assert_eq!(p.registration_view().waiting.len(), 18);
    assert_eq!(p.registrations_waiting().unwrap(), "reg-t[00-17]");
    assert_eq!(p.nodes().len(), 40);
    // An admin approves: one domain of 18 trays joins, down until their agents report.
    let r = commit(
        &mut p,
        &mut journal,
        Event::RegistrationsApproved {
            nodes: "reg-t[00-17]".into(),
            at: 104,
        },
    );
    assert!(!p.told(&r).is_empty());
    assert_eq!(p.last_fleet_change().unwrap().added.names, "reg-t[00-17]");
    assert_eq!(p.nodes().len(), 58);
    assert!(p.registration_view().waiting.is_empty());
    assert!(p.fleet_file().contains("nvl-reg0"));
    assert_eq!(refused(&p, &tray(0)), "node");
    for i in 0..18 {
        let node = format!("reg-t{i:02}");
        commit(
            &mut p,
            &mut journal,
            Event::NodeUp {
                address: None,
                node,
                at: 105,
            },
        );
    }
    let e = p.submit_event(&req("on-new", 18), 106).unwrap();
    commit(&mut p, &mut journal, e);
    let e = p.submit_event(&req("more", 18), 106).unwrap();
    commit(&mut p, &mut journal, e);
    let e = p.submit_event(&req("and-more", 18), 106).unwrap();
    commit(&mut p, &mut journal, e);
    commit(&mut p, &mut journal, Event::Pass { at: 107 });
    let on_new = (1..=3).any(|j| {
        p.job_view(JobId(j))
            .unwrap()
            .nodes
            .iter()
            .any(|n| n.starts_with("reg-t"))
    });
    assert!(on_new, "no job runs on the registered trays");
    // A rule of other names drops the registrations it does not allow; an admin rejects
    // others.
    spec.nodes = "late-t[00-03]".into();
    let e = p.registration_rule_event(Some(&spec), 107).unwrap();
    commit(&mut p, &mut journal, e);
    for i in 0..2 {
        let e = p
            .register_event(&registration(&format!("late-t{i:02}"), gb, 4, None), 107)
            .unwrap()
            .unwrap();
        commit(&mut p, &mut journal, e);
    }
    commit(
        &mut p,
        &mut journal,
        Event::RegistrationsRejected {
            nodes: "late-t01".into(),
            at: 107,
        },
    );
    assert_eq!(p.registrations_waiting().unwrap(), "late-t00");
    assert!(p
        .apply(&Event::RegistrationsRejected {
            nodes: "late-t01".into(),
            at: 107
        })
        .is_err());
    spec.zones = vec!["us-west-2-z1".into()];
    let e = p.registration_rule_event(Some(&spec), 107).unwrap();
    commit(&mut p, &mut journal, e);
    assert_eq!(p.registrations_waiting(), None);
    spec.zones.clear();
    // Stopping registrations drops those waiting.
    spec.nodes = "late-t[00-01]".into();
    let e = p.registration_rule_event(Some(&spec), 108).unwrap();
    commit(&mut p, &mut journal, e);
    let e = p
        .register_event(&registration("late-t00", gb, 4, None), 109)
        .unwrap()
        .unwrap();
    commit(&mut p, &mut journal, e);
    let e = p.registration_rule_event(None, 110).unwrap();
    commit(&mut p, &mut journal, e);
    assert!(p.registration_view().waiting.is_empty());
    assert!(p.registration_view().rule.is_none());

    assert_every_snapshot_gives(&p, &journal);
}
