//! How deep a pass looks: a backlog its quota refuses does not use up a shallow pass, and a
//! pass stopped at its depth after starting work says more may start at once.

#![allow(clippy::unwrap_used)]

mod common;

use common::{fleet, gang, tenant, SMALL};
use model::{JobSpec, PriorityClass, TenantId, WorkloadId};
use sched::{Decision, Engine, SchedConfig, Scheduler};

#[test]
fn a_backlog_over_its_quota_does_not_hide_other_tenants_jobs_from_a_pass() {
    // Tenant 0 holds no GPU quota and queues more jobs than one pass looks at; tenant 1's job,
    // submitted after them, starts in the next pass (not the next full one).
    let mut s = Scheduler::new(
        Engine::new(fleet(SMALL)),
        vec![
            tenant("backlog", 1.0, 0, None),
            tenant("b", 1.0, 10_000, None),
        ],
        SchedConfig::default(),
    )
    .unwrap();
    let spec = |tenant: u32| JobSpec {
        tenant: TenantId(tenant),
        priority: PriorityClass::Research,
        gang: gang(1, 4, None),
        time_limit: 600,
        placement: Default::default(),
    };
    // Tenant b runs something, so the backlog's tenant ranks first by fair share.
    s.submit(WorkloadId(1), spec(1), 0).unwrap();
    s.schedule(0);
    let depth = SchedConfig::default().pass_depth as u64;
    for i in 0..depth * 3 {
        s.submit(WorkloadId(100 + i), spec(0), 1).unwrap();
    }
    // The first pass after start-up is a full one; this one goes only as deep as configured.
    s.schedule(1);
    s.submit(WorkloadId(2), spec(1), 2).unwrap();
    let started: Vec<WorkloadId> = s
        .schedule(2)
        .into_iter()
        .filter_map(|d| match d {
            Decision::Start { job, .. } => Some(job),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![WorkloadId(2)]);
    // The backlog's jobs wait for their quota, and say so.
    let why = s.pending_reason(WorkloadId(100 + depth * 2)).unwrap();
    assert!(why.contains("quota"), "{why}");
}

#[test]
fn a_pass_cut_short_by_its_depth_says_more_may_start_at_once() {
    let config = SchedConfig {
        pass_depth: 4,
        ..SchedConfig::default()
    };
    let mut s = Scheduler::new(
        Engine::new(fleet(SMALL)),
        vec![tenant("a", 1.0, 10_000, None)],
        config,
    )
    .unwrap();
    // The first pass looks at everything; later ones at four jobs until the next full one.
    s.schedule(0);
    assert!(!s.more_to_place());
    for i in 0..10 {
        let spec = JobSpec {
            tenant: TenantId(0),
            priority: PriorityClass::Research,
            gang: gang(1, 4, None),
            time_limit: 600,
            placement: Default::default(),
        };
        s.submit(WorkloadId(1 + i), spec, 1).unwrap();
    }
    let starts = |d: Vec<Decision>| {
        d.iter()
            .filter(|d| matches!(d, Decision::Start { .. }))
            .count()
    };
    assert_eq!(starts(s.schedule(1)), 4);
    assert!(s.more_to_place());
    assert_eq!(starts(s.schedule(1)), 4);
    assert!(s.more_to_place());
    assert_eq!(starts(s.schedule(1)), 2);
    assert!(!s.more_to_place());
}
