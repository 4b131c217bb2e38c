//! What a run is charged: a share of a GPU pays and counts its share, in a job's history row
//! and in the spend ledger alike, and the two agree; CPU work on a GPU host pays for what its
//! CPU is worth there.

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
fn cpu_work_on_a_gpu_host_pays_for_its_share_of_the_host() {
    let (p, _) = up();
    let tray = &p.sched.engine().fleet().nodes()[0];
    let half = tray.capacity.cpu_millis / 2;
    let gpus = u64::from(tray.capacity.gpus);
    let cpu = an_hour_of(SubmitJob {
        gpus_per_node: 0,
        cpu_millis_per_node: half,
        ..req("cpu", 1)
    });
    let one_gpu = an_hour_of(SubmitJob {
        gpus_per_node: 1,
        ..req("gpu", 1)
    });
    assert_eq!(cpu.0, 0, "it held no GPU");
    // Half a host's CPU is worth half its GPUs.
    let want = one_gpu.1 * gpus as f64 / 2.0;
    assert!((cpu.1 - want).abs() < 1e-6, "{cpu:?} {one_gpu:?}");
    assert!((cpu.2 - want).abs() < 1e-6, "{cpu:?}");
}
