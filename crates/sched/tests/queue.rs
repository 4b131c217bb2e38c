//! Scenario tests of the queue's rules (quota, fair share, backfill with reservations,
//! preemption, failures), snapshotted with `expect-test`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{fleet, gang, tenant, Shape, SMALL};
use expect_test::expect;
use model::{JobSpec, PriorityClass, TenantId, WorkloadId};
use sched::{Decision, Engine, SchedConfig, Scheduler};

use common::queue_script::check;

#[test]
fn quota_refuses_and_cohort_lends_idle_quota() {
    check(
        vec![
            tenant("a", 1.0, 32, Some("lab")),
            tenant("b", 1.0, 32, Some("lab")),
            tenant("c", 1.0, 16, None),
        ],
        "submit 1 0 research 8 3600
         submit 2 0 research 8 3600
         submit 3 2 research 8 3600
         pass 0
         why 3
         finish 1 100
         submit 4 1 research 8 3600
         pass 100",
        expect![[r#"
            submit 1 0 research 8 3600
              Ok(())
            submit 2 0 research 8 3600
              Ok(())
            submit 3 2 research 8 3600
              Ok(())
            pass 0
              start w1 on 8 nodes: z0s0b0d0t[0-3],z0s0b0d1t[0-3]
              start w2 on 8 nodes: z0s0b1d0t[0-3],z0s0b1d1t[0-3]
            why 3
              tenant 'c' quota: would use 32 GB200 GPUs, quota is 16 (no cohort to borrow from)
            finish 1 100
              Ok(())
            submit 4 1 research 8 3600
              Ok(())
            pass 100
              start w4 on 8 nodes: z0s0b0d0t[0-3],z0s0b0d1t[0-3]
        "#]],
    );
}

#[test]
fn weighted_dominant_share_orders_tenants_within_a_class() {
    check(
        vec![
            tenant("heavy", 1.0, 128, None),
            tenant("light", 1.0, 128, None),
            tenant("vip", 4.0, 128, None),
        ],
        "submit 1 0 research 16 3600
         pass 0
         submit 2 0 research 8 3600
         submit 3 1 research 8 3600
         submit 4 2 research 8 3600
         pass 1",
        expect![[r#"
            submit 1 0 research 16 3600
              Ok(())
            pass 0
              start w1 on 16 nodes: z0s0b0d0t[0-3],z0s0b0d1t[0-3],z0s0b1d0t[0-3],z0s0b1d1t[0-3]
            submit 2 0 research 8 3600
              Ok(())
            submit 3 1 research 8 3600
              Ok(())
            submit 4 2 research 8 3600
              Ok(())
            pass 1
              start w3 on 8 nodes: z0s1b0d0t[0-3],z0s1b0d1t[0-3]
              start w4 on 8 nodes: z0s1b1d0t[0-3],z0s1b1d1t[0-3]
              reserve 8 nodes for w2 from t=3600
        "#]],
    );
}

#[test]
fn backfill_uses_reserved_nodes_only_when_it_ends_first() {
    check(
        vec![tenant("a", 1.0, 1000, None)],
        "submit 1 0 research 28 1000
         pass 0
         submit 2 0 research 8 5000
         submit 3 0 research 4 500
         submit 4 0 research 4 5000
         pass 10
         why 2
         why 4
         finish 1 600
         pass 600
         finish 3 600
         pass 601",
        expect![[r#"
            submit 1 0 research 28 1000
              Ok(())
            pass 0
              start w1 on 28 nodes: z0s0b0d0t[0-3],z0s0b0d1t[0-3],z0s0b1d0t[0-3],z0s0b1d1t[0-3],z0s1b0d0t[0-3],z0s1b0d1t[0-3],z0s1b1d0t[0-3]
            submit 2 0 research 8 5000
              Ok(())
            submit 3 0 research 4 500
              Ok(())
            submit 4 0 research 4 5000
              Ok(())
            pass 10
              reserve 8 nodes for w2 from t=1000
              start w3 on 4 nodes: z0s1b1d1t[0-3]
            why 2
              reserved 8 nodes from t=1000 (when running jobs reach their time limits)
            why 4
              needs 4 GB200 nodes with 4 free GPUs each in one NVL16 domain; best domain aws/r/z0/s0/b0/d0 has 0; 8 nodes are held for w2's reservation until t=1000
            finish 1 600
              Ok(())
            pass 600
              start w2 on 8 nodes: z0s0b0d0t[0-3],z0s0b0d1t[0-3]
              start w4 on 4 nodes: z0s0b1d0t[0-3]
            finish 3 600
              Ok(())
            pass 601
              -
        "#]],
    );
}

#[test]
fn preemption_evicts_cheapest_whole_gangs_after_grace() {
    check(
        vec![tenant("a", 1.0, 1000, None)],
        "submit 1 0 research 16 100000
         submit 2 0 research 16 100000
         pass 0
         checkpoint 1 900
         submit 3 0 train 8 3600
         pass 1000
         why 3
         pass 1100
         pass 1120
         pass 1121",
        expect![[r#"
            submit 1 0 research 16 100000
              Ok(())
            submit 2 0 research 16 100000
              Ok(())
            pass 0
              start w1 on 16 nodes: z0s0b0d0t[0-3],z0s0b0d1t[0-3],z0s0b1d0t[0-3],z0s0b1d1t[0-3]
              start w2 on 16 nodes: z0s1b0d0t[0-3],z0s1b0d1t[0-3],z0s1b1d0t[0-3],z0s1b1d1t[0-3]
            checkpoint 1 900
              Ok(())
            submit 3 0 train 8 3600
              Ok(())
            pass 1000
              preempt w1 for w3; it stops at t=1120
            why 3
              waiting for preemption grace of w1 until t=1120
            pass 1100
              -
            pass 1120
              requeue w1 (lost 3.91 GPU-h)
              start w3 on 8 nodes: z0s0b0d0t[0-3],z0s0b0d1t[0-3]
              reserve 16 nodes for w1 from t=4720
            pass 1121
              -
        "#]],
    );
}

#[test]
fn preemption_keeps_running_a_cheap_victim_whose_room_is_not_needed() {
    // One 4-GPU tray: a 1-GPU job (the cheapest victim) and a 3-GPU job. A 3-GPU job of a
    // higher class needs only the 3-GPU job gone, though the cheapest-first prefix takes both.
    let one_tray = Shape {
        zones: 1,
        spines: 1,
        blocks: 1,
        domains: 1,
        trays: 1,
        gpus: 4,
        cpu_hosts: 0,
    };
    let mut s = Scheduler::new(
        Engine::new(fleet(one_tray)),
        vec![tenant("a", 1.0, 1000, None)],
        SchedConfig::default(),
    )
    .unwrap();
    let job = |gpus: u8, priority| JobSpec {
        tenant: TenantId(0),
        priority,
        gang: gang(1, gpus, None),
        time_limit: 100_000,
        placement: Default::default(),
    };
    s.submit(WorkloadId(1), job(1, PriorityClass::Research), 0)
        .unwrap();
    s.submit(WorkloadId(2), job(3, PriorityClass::Research), 0)
        .unwrap();
    assert_eq!(s.schedule(0).len(), 2);
    s.submit(WorkloadId(3), job(3, PriorityClass::Training), 1000)
        .unwrap();
    let preempted: Vec<WorkloadId> = s
        .schedule(1000)
        .iter()
        .filter_map(|d| match d {
            Decision::Preempt { job, .. } => Some(*job),
            _ => None,
        })
        .collect();
    assert_eq!(preempted, vec![WorkloadId(2)]);
    s.check_invariants().unwrap();
    // When the victim has stopped, the job starts beside the job that kept running.
    let later = s.schedule(1000 + SchedConfig::default().grace_period);
    assert!(
        later
            .iter()
            .any(|d| matches!(d, Decision::Start { job, .. } if *job == WorkloadId(3))),
        "{later:?}"
    );
    assert!(s.running_jobs().contains(&WorkloadId(1)));
    s.check_invariants().unwrap();
}

#[test]
fn preemption_never_happens_for_a_gang_that_would_still_not_fit() {
    check(
        vec![tenant("a", 1.0, 1000, None)],
        "submit 1 0 research 16 100000
         pass 0
         submit 2 0 train 40 3600
         pass 1000
         why 2",
        expect![[r#"
            submit 1 0 research 16 100000
              Ok(())
            pass 0
              start w1 on 16 nodes: z0s0b0d0t[0-3],z0s0b0d1t[0-3],z0s0b1d0t[0-3],z0s0b1d1t[0-3]
            submit 2 0 train 40 3600
              Ok(())
            pass 1000
              -
            why 2
              needs 10 whole NVL16 domains of GB200 nodes, all under one network node, with 4 free GPUs per node; best level-0 network node aws/r/z0/s1 has room for 4
        "#]],
    );
}

#[test]
fn failure_requeues_from_last_checkpoint_and_counts_lost_hours() {
    check(
        vec![tenant("a", 1.0, 1000, None)],
        "submit 1 0 train 8 100000
         pass 0
         checkpoint 1 3600
         fail z0s0b0d0t0 5400
         pass 5400
         why 1",
        expect![[r#"
            submit 1 0 train 8 100000
              Ok(())
            pass 0
              start w1 on 8 nodes: z0s0b0d0t[0-3],z0s0b0d1t[0-3]
            checkpoint 1 3600
              Ok(())
            fail z0s0b0d0t0 5400
              requeue w1 (lost 16.00 GPU-h)
            pass 5400
              start w1 on 8 nodes: z0s0b1d0t[0-3],z0s0b1d1t[0-3]
            why 1
              (running or ended)
        "#]],
    );
}

#[test]
fn a_job_is_not_preempted_again_and_again() {
    let mut s = Scheduler::new(
        Engine::new(fleet(SMALL)),
        vec![tenant("a", 1.0, 1000, None)],
        SchedConfig {
            max_preemptions: 2,
            ..SchedConfig::default()
        },
    )
    .unwrap();
    s.submit(
        WorkloadId(1),
        JobSpec {
            tenant: TenantId(0),
            priority: PriorityClass::Preemptible,
            gang: gang(32, 4, None),
            time_limit: 1_000_000,
            placement: Default::default(),
        },
        0,
    )
    .unwrap();
    let mut t = 0;
    s.schedule(t);
    // Training jobs keep arriving, each wanting the whole fleet briefly.
    for next in 100..106 {
        t += 1000;
        s.submit(
            WorkloadId(next),
            JobSpec {
                tenant: TenantId(0),
                priority: PriorityClass::Training,
                gang: gang(32, 4, None),
                time_limit: 100,
                placement: Default::default(),
            },
            t,
        )
        .unwrap();
        s.schedule(t);
        s.schedule(t + 200);
        let _ = s.finish(WorkloadId(next), t + 300);
        s.schedule(t + 300);
    }
    let victim = s.job(WorkloadId(1)).unwrap();
    assert_eq!(victim.preemptions, 2, "{victim:?}");
    assert_eq!(victim.restarts, 2);
    s.engine().check_invariants().unwrap();
}

/// The first preemption, (time, preemptor), by training jobs of 28 trays submitted at the given
/// times, which wait for their victim to be old enough (`min_runtime` 600 s), while short jobs
/// start and stop at every pass (every 10 s). No reservations: the first training job's would
/// hold the victim's nodes against the second.
fn first_preemption(preemption_retry_max: u64, training_submitted: &[u64]) -> (u64, WorkloadId) {
    let mut s = Scheduler::new(
        Engine::new(fleet(SMALL)),
        vec![tenant("a", 1.0, 1000, None)],
        SchedConfig {
            preemption_retry_max,
            backfill: false,
            ..SchedConfig::default()
        },
    )
    .unwrap();
    let job = |priority, nodes, time_limit| JobSpec {
        tenant: TenantId(0),
        priority,
        gang: gang(nodes, 4, None),
        time_limit,
        placement: Default::default(),
    };
    s.submit(
        WorkloadId(1),
        job(PriorityClass::Research, 28, 1_000_000),
        0,
    )
    .unwrap();
    s.schedule(0);
    for (i, t) in (10..2000).step_by(10).enumerate() {
        for (k, at) in training_submitted.iter().enumerate() {
            if *at == t {
                s.submit(
                    WorkloadId(2 + k as u64),
                    job(PriorityClass::Training, 28, 3600),
                    t,
                )
                .unwrap();
            }
        }
        let churn = WorkloadId(100 + i as u64);
        s.submit(churn, job(PriorityClass::Preemptible, 4, 5), t)
            .unwrap();
        let decisions = s.schedule(t);
        if let Some(by) = decisions.iter().find_map(|d| match d {
            Decision::Preempt { by, .. } => Some(*by),
            _ => None,
        }) {
            return (t, by);
        }
        assert!(
            decisions
                .iter()
                .any(|d| matches!(d, Decision::Start { job, .. } if *job == churn)),
            "t={t}: {decisions:?}"
        );
        s.finish(churn, t + 5).unwrap();
    }
    panic!("no preemption");
}

#[test]
fn fruitless_preemption_searches_back_off() {
    // Searches at 10, 70, 130, ... 610: the victim is 600 s old at 610.
    assert_eq!(first_preemption(60, &[10]), (610, WorkloadId(2)));
    // Waits of 60, 120, 240, 480 s: searches at 10, 70, 190, 430, 910.
    assert_eq!(first_preemption(960, &[10]), (910, WorkloadId(2)));
    // The same, capped at 300 s: 10, 70, 190, 430, 730.
    assert_eq!(first_preemption(300, &[10]), (730, WorkloadId(2)));
}

#[test]
fn a_fruitless_search_holds_for_jobs_of_the_same_shape() {
    // w2 searches at 10, 70, 190, 430 (in vain until 490) and 910. w3, of the same shape,
    // arrives at 440 and first searches at 490, then at 550 and 670.
    assert_eq!(first_preemption(960, &[10, 440]), (670, WorkloadId(3)));
}

#[test]
fn spares_replace_failed_trays_in_place_and_requeue_when_exhausted() {
    check(
        vec![tenant("a", 1.0, 1000, None)],
        "submit 1 0 train 6 100000 segment=3 spares=2
         pass 0
         checkpoint 1 1800
         fail z0s0b0d0t0 3600
         fail z0s0b0d1t0 3700
         fail z0s0b0d0t1 3800
         pass 3800
         submit 2 0 train 3 100000 spares=2
         pass 3900
         why 2",
        expect![[r#"
            submit 1 0 train 6 100000 segment=3 spares=2
              Ok(())
            pass 0
              start w1 on 6 nodes: z0s0b0d0t[0-2],z0s0b0d1t[0-2]
            checkpoint 1 1800
              Ok(())
            fail z0s0b0d0t0 3600
              replace z0s0b0d0t0 by spare z0s0b0d0t3 in w1 (lost 12.00 GPU-h)
            fail z0s0b0d1t0 3700
              replace z0s0b0d1t0 by spare z0s0b0d1t3 in w1 (lost 0.67 GPU-h)
            fail z0s0b0d0t1 3800
              requeue w1 (lost 0.67 GPU-h)
            pass 3800
              start w1 on 6 nodes: z0s0b1d0t[0-2],z0s0b1d1t[0-2]
            submit 2 0 train 3 100000 spares=2
              Ok(())
            pass 3900
              -
            why 2
              needs 2 spare nodes inside its NVLink domains; its best placement leaves room for 0; a segment smaller than the domain (e.g. segment = 3) leaves room in each domain
        "#]],
    );
}

/// A stream of small jobs, each placeable on its own, never delays a large gang past the
/// reservation it got: small jobs only backfill when they end before it.
#[test]
fn a_large_gang_is_not_starved_by_a_stream_of_small_jobs() {
    let mut s = Scheduler::new(
        Engine::new(fleet(SMALL)),
        vec![
            tenant("a", 1.0, 10_000, None),
            tenant("b", 1.0, 10_000, None),
        ],
        SchedConfig::default(),
    )
    .unwrap();
    let spec = |tenant: u32, nodes: u32, limit: u64| JobSpec {
        tenant: TenantId(tenant),
        priority: PriorityClass::Research,
        gang: gang(nodes, 4, None),
        time_limit: limit,
        placement: Default::default(),
    };
    // Half the fleet busy for an hour; the big gang wants all of it.
    s.submit(WorkloadId(1), spec(1, 16, 3600), 0).unwrap();
    s.schedule(0);
    s.submit(WorkloadId(2), spec(0, 32, 3600), 0).unwrap();
    let mut reserved_for = None;
    let mut started = None;
    let mut next = 100;
    let mut now = 0;
    while now <= 4 * 3600 && started.is_none() {
        // Tenant b keeps sending small jobs, short and long.
        for limit in [300, 7200] {
            next += 1;
            s.submit(WorkloadId(next), spec(1, 2, limit), now).unwrap();
        }
        // Jobs end at their time limit.
        for id in s.running_jobs() {
            let j = s.job(id).unwrap();
            if let sched::JobState::Running { since } = j.state {
                if since + j.spec.time_limit <= now {
                    s.finish(id, now).unwrap();
                }
            }
        }
        for d in s.schedule(now) {
            match d {
                Decision::Reserve {
                    job: WorkloadId(2),
                    start,
                    ..
                } => reserved_for = reserved_for.or(Some(start)),
                Decision::Start {
                    job: WorkloadId(2), ..
                } => started = Some(now),
                _ => {}
            }
        }
        s.check_invariants().unwrap();
        now += 60;
    }
    let reserved_for = reserved_for.expect("the big gang got a reservation");
    assert_eq!(reserved_for, 3600);
    assert_eq!(started, Some(3600), "started at its reservation, not later");
}

#[test]
fn lender_reclaims_borrowed_quota_by_preemption() {
    check(
        vec![
            tenant("a", 1.0, 64, Some("lab")),
            tenant("b", 1.0, 64, Some("lab")),
        ],
        "submit 1 0 research 16 100000
         submit 2 0 research 16 100000
         pass 0
         submit 3 1 research 16 3600
         pass 1000
         why 3
         pass 1120",
        expect![[r#"
            submit 1 0 research 16 100000
              Ok(())
            submit 2 0 research 16 100000
              Ok(())
            pass 0
              start w1 on 16 nodes: z0s0b0d0t[0-3],z0s0b0d1t[0-3],z0s0b1d0t[0-3],z0s0b1d1t[0-3]
              start w2 on 16 nodes: z0s1b0d0t[0-3],z0s1b0d1t[0-3],z0s1b1d0t[0-3],z0s1b1d1t[0-3]
            submit 3 1 research 16 3600
              Ok(())
            pass 1000
              preempt w2 for w3; it stops at t=1120
            why 3
              waiting for preemption grace of w2 until t=1120
            pass 1120
              requeue w2 (lost 19.91 GPU-h)
              start w3 on 16 nodes: z0s1b0d0t[0-3],z0s1b0d1t[0-3],z0s1b1d0t[0-3],z0s1b1d1t[0-3]
        "#]],
    );
}

/// The comparison policies differ exactly where they should: strict FIFO stops at a head that
/// cannot start, first-fit lets anything that fits pass it, shortest-first reorders.
#[test]
fn policies_order_and_block_as_named() {
    let started = |policy: &str| -> Vec<u64> {
        let mut s = Scheduler::new(
            Engine::new(fleet(SMALL)),
            vec![tenant("a", 1.0, 10_000, None)],
            SchedConfig::policy(policy).unwrap(),
        )
        .unwrap();
        let spec = |nodes: u32, limit: u64| JobSpec {
            tenant: TenantId(0),
            priority: PriorityClass::Research,
            gang: gang(nodes, 4, None),
            time_limit: limit,
            placement: Default::default(),
        };
        s.submit(WorkloadId(1), spec(24, 1000), 0).unwrap();
        s.schedule(0);
        s.submit(WorkloadId(2), spec(16, 500), 1).unwrap(); // cannot start: 8 nodes free
        s.submit(WorkloadId(3), spec(4, 900), 2).unwrap();
        s.submit(WorkloadId(4), spec(4, 100), 3).unwrap();
        let mut ids: Vec<u64> = s
            .schedule(10)
            .iter()
            .filter_map(|d| match d {
                Decision::Start { job, .. } => Some(job.0),
                _ => None,
            })
            .collect();
        ids.sort_unstable();
        assert!(s.check_invariants().is_ok());
        if policy == "fifo" {
            assert!(s
                .pending_reason(WorkloadId(4))
                .unwrap()
                .contains("waiting behind w2"));
        }
        ids
    };
    assert_eq!(started("fifo"), Vec::<u64>::new());
    assert_eq!(started("first-fit"), vec![3, 4]);
    // Backfill: both small jobs end (t=910, t=110) before w2's reservation at t=1000.
    assert_eq!(started("stargrid"), vec![3, 4]);
    assert_eq!(started("slurm"), vec![3, 4]);
    assert_eq!(started("sjf"), vec![3, 4]);
}
