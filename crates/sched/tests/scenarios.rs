//! Data-driven placement scenarios: each script's decisions are snapshotted with
//! `expect-test` (update with `UPDATE_EXPECT=1 cargo test`).

#![allow(clippy::unwrap_used)]

mod common;

use common::{fleet, run_script, Shape};
use expect_test::{expect, Expect};
use sched::Engine;

const SMALL: Shape = Shape {
    cpu_hosts: 4,
    ..common::SMALL
};

fn check(shape: Shape, script: &str, expect: Expect) {
    let mut engine = Engine::new(fleet(shape));
    expect.assert_eq(&run_script(&mut engine, script));
}

#[test]
fn small_gang_goes_into_one_domain_best_fit() {
    check(
        SMALL,
        "gang 1 nodes=3
         gang 2 nodes=1
         gang 3 nodes=2
         gang 4 nodes=1 gpn=2
         gang 5 nodes=1 gpn=2",
        expect![[r#"
            gang 1 nodes=3
              => placed z0s0b0d0t[0-2] under aws/r/z0/s0/b0/d0 (domains 1/1 min, levels 0/0 min, score 1.00) masks 1111,1111,1111
            gang 2 nodes=1
              => placed z0s0b0d0t3 under aws/r/z0/s0/b0/d0 (domains 1/1 min, levels 0/0 min, score 1.00) masks 1111
            gang 3 nodes=2
              => placed z0s0b0d1t[0-1] under aws/r/z0/s0/b0/d1 (domains 1/1 min, levels 0/0 min, score 1.00) masks 1111,1111
            gang 4 nodes=1 gpn=2
              => placed z0s0b0d1t2 under aws/r/z0/s0/b0/d1 (domains 1/1 min, levels 0/0 min, score 1.00) masks 11
            gang 5 nodes=1 gpn=2
              => placed z0s0b0d1t2 under aws/r/z0/s0/b0/d1 (domains 1/1 min, levels 0/0 min, score 1.00) masks 1100
        "#]],
    );
}

#[test]
fn large_gang_takes_whole_domains_under_lowest_network_node() {
    check(
        SMALL,
        "gang 1 nodes=1
         gang 2 nodes=8
         gang 3 nodes=16
         gang 4 nodes=12",
        expect![[r#"
            gang 1 nodes=1
              => placed z0s0b0d0t0 under aws/r/z0/s0/b0/d0 (domains 1/1 min, levels 0/0 min, score 1.00) masks 1111
            gang 2 nodes=8
              => placed z0s0b1d0t[0-3],z0s0b1d1t[0-3] under aws/r/z0/s0/b1 (domains 2/2 min, levels 1/1 min, score 1.00) masks 1111,1111,1111,1111,1111,1111,1111,1111
            gang 3 nodes=16
              => placed z0s1b0d0t[0-3],z0s1b0d1t[0-3],z0s1b1d0t[0-3],z0s1b1d1t[0-3] under aws/r/z0/s1 (domains 4/4 min, levels 2/2 min, score 1.00) masks 1111,1111,1111,1111,1111,1111,1111,1111,1111,1111,1111,1111,1111,1111,1111,1111
            gang 4 nodes=12
              => UNPLACEABLE: needs 3 whole NVL16 domains of GB200 nodes, all under one network node, with 4 free GPUs per node; best level-0 network node aws/r/z0/s0 has room for 1
                - gangs never span zones; best zone aws/r/z0 has room for 1
        "#]],
    );
}

#[test]
fn segments_and_remainder() {
    check(
        SMALL,
        "gang 1 nodes=6 segment=2
         gang 2 nodes=9
         gang 3 nodes=30",
        expect![[r#"
            gang 1 nodes=6 segment=2
              => placed z0s0b0d0t[0-3],z0s0b0d1t[0-1] under aws/r/z0/s0/b0 (domains 2/2 min, levels 1/1 min, score 1.00) masks 1111,1111,1111,1111,1111,1111
            gang 2 nodes=9
              => placed z0s0b0d1t2,z0s0b1d0t[0-3],z0s0b1d1t[0-3] under aws/r/z0/s0 (domains 3/3 min, levels 2/2 min, score 1.00) masks 1111,1111,1111,1111,1111,1111,1111,1111,1111
            gang 3 nodes=30
              => UNPLACEABLE: needs 7 whole NVL16 domains of GB200 nodes plus 2 nodes in one more domain, all under one network node, with 4 free GPUs per node; best level-0 network node aws/r/z0/s1 has room for 4
                - gangs never span zones; best zone aws/r/z0 has room for 4
        "#]],
    );
}

#[test]
fn unplaceable_gangs_explain_themselves() {
    check(
        SMALL,
        "gang 1 nodes=1
         gang 2 nodes=1
         gang 3 nodes=4
         gang 4 nodes=28
         gang 5 nodes=5
         gang 6 nodes=1 gpn=5
         gang 7 nodes=0",
        expect![[r#"
            gang 1 nodes=1
              => placed z0s0b0d0t0 under aws/r/z0/s0/b0/d0 (domains 1/1 min, levels 0/0 min, score 1.00) masks 1111
            gang 2 nodes=1
              => placed z0s0b0d0t1 under aws/r/z0/s0/b0/d0 (domains 1/1 min, levels 0/0 min, score 1.00) masks 1111
            gang 3 nodes=4
              => placed z0s0b0d1t[0-3] under aws/r/z0/s0/b0/d1 (domains 1/1 min, levels 0/0 min, score 1.00) masks 1111,1111,1111,1111
            gang 4 nodes=28
              => UNPLACEABLE: needs 7 whole NVL16 domains of GB200 nodes, all under one network node, with 4 free GPUs per node; best level-0 network node aws/r/z0/s1 has room for 4
                - gangs never span zones; best zone aws/r/z0 has room for 6
            gang 5 nodes=5
              => placed z0s0b1d0t[0-3],z0s0b1d1t0 under aws/r/z0/s0/b1 (domains 2/2 min, levels 1/1 min, score 1.00) masks 1111,1111,1111,1111,1111
            gang 6 nodes=1 gpn=5
              => UNPLACEABLE: asks 5 GPUs, 0 CPU millicores and 0 MiB per node; no GB200 node is that large (at most 4 GPUs)
            gang 7 nodes=0
              => UNPLACEABLE: a gang needs at least one node and at least one GPU per node
        "#]],
    );
}

#[test]
fn cordon_and_down_steer_placement_and_report_affected_work() {
    check(
        SMALL,
        "gang 1 nodes=4
         cordon aws/r/z0/s0
         gang 2 nodes=8
         gang 3 nodes=9
         down z0s1b0d0t0
         gang 4 nodes=4
         ready aws/r/z0/s0
         gang 5 nodes=4
         release 1
         release 1",
        expect![[r#"
            gang 1 nodes=4
              => placed z0s0b0d0t[0-3] under aws/r/z0/s0/b0/d0 (domains 1/1 min, levels 0/0 min, score 1.00) masks 1111,1111,1111,1111
            cordon aws/r/z0/s0
              => 16 nodes changed; affected [w1]
            gang 2 nodes=8
              => placed z0s1b0d0t[0-3],z0s1b0d1t[0-3] under aws/r/z0/s1/b0 (domains 2/2 min, levels 1/1 min, score 1.00) masks 1111,1111,1111,1111,1111,1111,1111,1111
            gang 3 nodes=9
              => UNPLACEABLE: needs 2 whole NVL16 domains of GB200 nodes plus 1 node in one more domain, all under one network node, with 4 free GPUs per node; best level-0 network node aws/r/z0/s1 has room for 2
                - gangs never span zones; best zone aws/r/z0 has room for 2
                - 16 GB200 nodes are cordoned, draining, down or held
            down z0s1b0d0t0
              => 1 nodes changed; affected [w2]
            gang 4 nodes=4
              => placed z0s1b1d0t[0-3] under aws/r/z0/s1/b1/d0 (domains 1/1 min, levels 0/0 min, score 1.00) masks 1111,1111,1111,1111
            ready aws/r/z0/s0
              => 16 nodes changed; affected [w1]
            gang 5 nodes=4
              => placed z0s0b0d1t[0-3] under aws/r/z0/s0/b0/d1 (domains 1/1 min, levels 0/0 min, score 1.00) masks 1111,1111,1111,1111
            release 1
              => released
            release 1
              => ERROR: workload w1 is not placed
        "#]],
    );
}

#[test]
fn sandboxes_pack_hosts_and_end_one_by_one() {
    check(
        SMALL,
        "sandboxes 1 count=10 cpu=1000 mem=2048
         sandboxes 2 count=30 cpu=1000 mem=1024
         sandboxes 3 count=1 cpu=500 mem=100
         end 1 0 1 9
         end 1 0
         sandboxes 4 count=3 cpu=1000 mem=2048
         cordon z0cpu3
         sandboxes 5 count=4 cpu=1000 mem=1024
         release 2
         sandboxes 6 count=0 cpu=1 mem=1",
        expect![[r#"
            sandboxes 1 count=10 cpu=1000 mem=2048
              => placed z0cpu0x8 z0cpu1x2
            sandboxes 2 count=30 cpu=1000 mem=1024
              => UNPLACEABLE: needs 30 sandboxes of 1000 CPU millicores and 1024 MiB; ready CPU hosts have room for 22
                - free CPU alone would allow 22, free memory alone 44
            sandboxes 3 count=1 cpu=500 mem=100
              => placed z0cpu1x1
            end 1 0 1 9
              => ended 3
            end 1 0
              => ERROR: workload w1: sandbox 0 is not live
            sandboxes 4 count=3 cpu=1000 mem=2048
              => placed z0cpu1x3
            cordon z0cpu3
              => 1 nodes changed; affected []
            sandboxes 5 count=4 cpu=1000 mem=1024
              => placed z0cpu1x3 z0cpu2x1
            release 2
              => ERROR: workload w2 is not placed
            sandboxes 6 count=0 cpu=1 mem=1
              => UNPLACEABLE: count 0 is outside 1..=1000000
        "#]],
    );
}
