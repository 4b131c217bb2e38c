//! What a run is charged: a share of a GPU pays and counts its share, in a job's history row
//! and in the spend ledger alike, and the two agree; CPU work on a GPU host, which uses CPU the
//! devices' work left, is charged nothing (a host is never charged more than it costs).

use super::*;

/// Runs `job` from a pass at 110 until it is cancelled an hour later; the history row's
/// GPU-seconds and cost, and the ledger's training spend by then.
fn an_hour_of(job: SubmitJob) -> (u64, f64, f64) {
    let (mut p, _) = up();
    let e = p.submit_event(&job, 100).unwrap();
    p.apply(&e).unwrap();
    p.apply(&Event::Pass { at: 110 }).unwrap();
    assert_eq!(p.job_view(JobId(1)).unwrap().state, "running");
    p.apply(&Event::Cancel { id: 1, at: 3710 }).unwrap();
    p.check_invariants().unwrap();
    let row = p.job_summary(JobId(1)).unwrap();
    let spend = p.spend(3710);
    let training = spend
        .by_class
        .iter()
        .find(|r| r.name == "training")
        .map_or(0.0, |r| r.usd);
    (
        row.gpu_seconds.unwrap(),
        row.cost_micro_usd.unwrap() as f64 / 1e6,
        training,
    )
}

#[test]
fn a_share_is_charged_its_share_in_the_history_and_the_ledger() {
    let whole = an_hour_of(SubmitJob {
        gpus_per_node: 1,
        ..req("whole", 1)
    });
    let quarter = an_hour_of(SubmitJob {
        gpus_per_node: 1,
        gpu_milli: 250,
        ..req("quarter", 1)
    });
    assert_eq!(whole.0, 3600);
    assert_eq!(quarter.0, 900, "a quarter of a GPU for an hour");
    assert!(whole.1 > 0.0);
    assert!(
        (quarter.1 - whole.1 / 4.0).abs() < 1e-6,
        "{quarter:?} {whole:?}"
    );
    // The row and the ledger price the run alike.
    for (gpu_seconds, row_usd, ledger_usd) in [whole, quarter] {
        assert!(
            (row_usd - ledger_usd).abs() < 1e-6,
            "{gpu_seconds}: {row_usd} {ledger_usd}"
        );
    }
}

#[test]
fn cpu_work_on_a_gpu_host_is_charged_nothing() {
    let (p, _) = up();
    let half = p.sched.engine().fleet().nodes()[0].capacity.cpu_millis / 2;
    let cpu = an_hour_of(SubmitJob {
        gpus_per_node: 0,
        cpu_millis_per_node: half,
        ..req("cpu", 1)
    });
    assert_eq!(cpu, (0, 0.0, 0.0));
}

/// `s` as a build that metered GPU pools in whole GPUs wrote it (snapshot version 1): every
/// GPU pool's figures in whole GPUs, and a share charged its whole device. Taken when the
/// share has accrued nothing yet, so that the rest divides exactly.
fn as_version_1(p: &ControlPlane, mut s: crate::journal::snapshot::SnapshotV1) -> Vec<u8> {
    let fleet = p.sched.engine().fleet();
    let gpu_pool = |name: &str| {
        fleet
            .nodes()
            .iter()
            .any(|n| fleet.pool(n.pool).name == name && n.capacity.gpus > 0)
    };
    let l = &mut s.queue.ledger;
    let whole = |m: &mut crate::journal::snapshot::MeterV1| {
        m.units /= 1000;
        m.total /= 1000;
        for p in &mut m.by_period {
            *p /= 1000;
        }
    };
    for c in &mut l.capacity {
        if gpu_pool(&c.pool) {
            whole(&mut c.meter);
        }
    }
    for a in &mut l.accounts {
        if gpu_pool(&a.pool) {
            assert_eq!(a.meter.total, 0, "the share accrued nothing yet");
            // Its one share counted as the device.
            a.meter.units = a.meter.units.div_ceil(1000);
        }
    }
    for h in &mut l.held {
        for u in &mut h.units {
            if gpu_pool(&u.pool) {
                u.units = u.units.div_ceil(1000);
            }
        }
    }
    for u in &mut l.units_per_node {
        if gpu_pool(&u.pool) {
            u.units /= 1000;
        }
    }
    s.v = 1;
    let mut out = Vec::new();
    ciborium::into_writer(&(1u32, &s), &mut out).unwrap();
    out
}

#[test]
fn a_version_1_snapshot_with_a_running_share_loads_and_charges_the_share_from_then_on() {
    let (mut p, _) = up();
    let e = p
        .submit_event(
            &SubmitJob {
                gpus_per_node: 1,
                gpu_milli: 250,
                ..req("quarter", 1)
            },
            100,
        )
        .unwrap();
    p.apply(&e).unwrap();
    p.apply(&Event::Pass { at: 110 }).unwrap();
    assert_eq!(p.job_view(JobId(1)).unwrap().state, "running");
    let old = as_version_1(&p, p.snapshot_value());
    let loaded = ControlPlane::from_snapshot(&old).unwrap();
    loaded.check_invariants().unwrap();
    // An hour on, both say the same: a quarter of a GPU for an hour, and the rest idle.
    let (a, b) = (p.spend(3710), loaded.spend(3710));
    assert!((a.total_usd - b.total_usd).abs() < 1e-6, "{a:?} {b:?}");
    let training = |c: &sched::cost::CostSummary| {
        c.by_class
            .iter()
            .find(|r| r.name == "training")
            .map_or(0.0, |r| r.usd)
    };
    assert!(training(&a) > 0.0);
    assert!((training(&a) - training(&b)).abs() < 1e-6, "{a:?} {b:?}");
    // A snapshot of this build's format that charges the share otherwise is damaged: refused.
    let mut damaged = p.snapshot_value();
    for h in &mut damaged.queue.ledger.held {
        for u in &mut h.units {
            u.units += 1;
        }
    }
    let bytes = crate::journal::snapshot::encode(&damaged).unwrap();
    assert!(ControlPlane::from_snapshot(&bytes).is_err());
    // A body whose version disagrees with the bytes' first value is refused.
    let mut bytes = Vec::new();
    ciborium::into_writer(
        &(2u32, &{
            let mut s = p.snapshot_value();
            s.v = 1;
            s
        }),
        &mut bytes,
    )
    .unwrap();
    assert!(ControlPlane::from_snapshot(&bytes).is_err());
}
