//! Scenario tests of the queue's other workloads (inference services and their replicas,
//! sandbox batches), snapshotted with `expect-test`.

#![allow(clippy::unwrap_used)]

mod common;

use common::queue_script::{check, run};
use common::{fleet, tenant, Shape, SMALL};
use expect_test::expect;
use sched::{Engine, SchedConfig, Scheduler};

#[test]
fn services_spread_scale_and_replace_replicas() {
    check(
        vec![tenant("a", 1.0, 1000, None)],
        "service 7 0 2 2 20 spread=domain:1
         pass 0
         status 7
         scale 7 10
         pass 10
         status 7
         fail z0s0b0d0t0 20
         pass 20
         status 7
         scale 7 3
         pass 30
         status 7
         scale 7 100",
        expect![[r#"
            service 7 0 2 2 20 spread=domain:1
              Ok(())
            pass 0
              start svc7-r0 on 2 nodes: z0s0b0d0t[0-1]
              start svc7-r1 on 2 nodes: z0s0b0d1t[0-1]
            status 7
              ServiceStatus { desired: 2, running: 2, pending: 0, surge: 0 } []
            scale 7 10
                desired 10, stopped []
            pass 10
              start svc7-r2 on 2 nodes: z0s0b1d0t[0-1]
              start svc7-r3 on 2 nodes: z0s0b1d1t[0-1]
              start svc7-r4 on 2 nodes: z0s1b0d0t[0-1]
              start svc7-r5 on 2 nodes: z0s1b0d1t[0-1]
              start svc7-r6 on 2 nodes: z0s1b1d0t[0-1]
              start svc7-r7 on 2 nodes: z0s1b1d1t[0-1]
            status 7
              ServiceStatus { desired: 10, running: 8, pending: 2, surge: 0 } ["spread rule: at most 1 replicas of service 7 per NVLink domain; 8 NVLink domains with room already hold that many", "a job of the same shape (svc7-r8) could not be placed in this pass"]
            fail z0s0b0d0t0 20
              requeue svc7-r0 (lost 0.04 GPU-h)
            pass 20
              start svc7-r0 on 2 nodes: z0s0b0d0t[1-2]
            status 7
              ServiceStatus { desired: 10, running: 8, pending: 2, surge: 0 } ["spread rule: at most 1 replicas of service 7 per NVLink domain; 8 NVLink domains with room already hold that many", "a job of the same shape (svc7-r8) could not be placed in this pass"]
            scale 7 3
                desired 3, stopped [svc7-r7 svc7-r6 svc7-r5 svc7-r4 svc7-r3]
            pass 30
              -
            status 7
              ServiceStatus { desired: 3, running: 3, pending: 0, surge: 0 } []
            scale 7 100
                desired 20, stopped []
        "#]],
    );
}

#[test]
fn replicas_preempt_lower_classes_but_not_each_other() {
    check(
        vec![tenant("a", 1.0, 1000, None)],
        "submit 1 0 research 32 100000
         pass 0
         service 1 0 4 1 4 spread=domain:1
         pass 1000
         pass 1120
         status 1",
        expect![[r#"
            submit 1 0 research 32 100000
              Ok(())
            pass 0
              start w1 on 32 nodes: z0s0b0d0t[0-3],z0s0b0d1t[0-3],z0s0b1d0t[0-3],z0s0b1d1t[0-3],z0s1b0d0t[0-3],z0s1b0d1t[0-3],z0s1b1d0t[0-3],z0s1b1d1t[0-3]
            service 1 0 4 1 4 spread=domain:1
              Ok(())
            pass 1000
              preempt w1 for svc1-r0; it stops at t=1120
            pass 1120
              requeue w1 (lost 39.82 GPU-h)
              start svc1-r0 on 4 nodes: z0s0b0d0t[0-3]
            status 1
              ServiceStatus { desired: 1, running: 1, pending: 0, surge: 0 } []
        "#]],
    );
}

#[test]
fn sandboxes_move_off_failed_hosts_with_bounded_retries() {
    let shape = Shape {
        cpu_hosts: 3,
        ..SMALL
    };
    let mut s = Scheduler::new(
        Engine::new(fleet(shape)),
        vec![tenant("a", 1.0, 1000, None)],
        SchedConfig::default(),
    )
    .unwrap();
    expect![[r#"
        sandboxes 1 10 1000 1024 1
          Ok("z0cpu0x8 z0cpu1x2")
        fail z0cpu0 10
          moved 8 sandboxes of w1 off z0cpu0
        fail z0cpu1 20
          lost 8 sandboxes of w1 on z0cpu1 (retries spent or no room)
        sandboxes 2 20 1000 1024 5
          Err(NoRoom { field: "count", reason: "needs 20 sandboxes of 1000 CPU millicores and 1024 MiB; ready CPU hosts have room for 6" })
    "#]].assert_eq(&run(
        &mut s,
        "sandboxes 1 10 1000 1024 1
         fail z0cpu0 10
         fail z0cpu1 20
         sandboxes 2 20 1000 1024 5",
    ));
}
