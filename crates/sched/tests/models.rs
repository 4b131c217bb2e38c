//! Work that accepts several GPU models: the engine tries them in order of preference (or
//! scores every acceptable node, for single-node work), the queue charges the model it got,
//! and a restore puts it back on that model.

#![allow(clippy::unwrap_used)]

mod common;

use model::fleet::Location;
use model::{
    CapacityPool, Fleet, FleetBuilder, GangRequest, GpuModel, JobSpec, NodeState, PricingKind,
    PriorityClass, ResourceVec, Resources, TenantId, TenantSpec, WorkloadId,
};
use sched::{Allocation, Engine, NodeScore, SchedConfig, Scheduler};

/// Two 8-GPU H100 hosts, then two 8-GPU H200 hosts.
fn two_models() -> Fleet {
    let mut b = FleetBuilder::new();
    for (i, model) in [GpuModel::H100, GpuModel::H200].into_iter().enumerate() {
        let pool = b
            .add_pool(CapacityPool {
                name: format!("p{i}"),
                cloud: "onprem".into(),
                region: "site".into(),
                instance_type: "custom".into(),
                pricing: PricingKind::Committed,
                price_per_hour: 0.0,
            })
            .unwrap();
        let cap = Resources {
            gpu_model: Some(model),
            gpus: 8,
            cpu_millis: 96_000,
            memory_mib: 1 << 20,
            disk_gib: 0,
        };
        for h in 0..2 {
            let loc = Location {
                zone: "z".into(),
                network: vec![format!("rack{i}")],
                domain: None,
            };
            b.add_node(&format!("{model}-{h}"), pool, &loc, cap, NodeState::Ready)
                .unwrap();
        }
    }
    b.build().unwrap()
}

/// No limit but `h100` H100 GPUs and `h200` H200 GPUs.
fn gpus_quota(h100: u64, h200: u64) -> ResourceVec {
    let mut quota = ResourceVec::UNLIMITED;
    quota.gpus[GpuModel::H100.index()] = h100;
    quota.gpus[GpuModel::H200.index()] = h200;
    quota
}

/// A queue over the two-model fleet with a tenant of each quota, in order.
fn queue(quotas: &[ResourceVec]) -> Scheduler {
    let tenants = quotas
        .iter()
        .enumerate()
        .map(|(i, quota)| TenantSpec {
            name: format!("t{i}"),
            weight: 1.0,
            cohort: None,
            quota: *quota,
        })
        .collect();
    Scheduler::new(Engine::new(two_models()), tenants, SchedConfig::default()).unwrap()
}

fn job(model: GpuModel, others: &[GpuModel], nodes: u32) -> GangRequest {
    let mut g = common::gang(nodes, 8, None);
    g.gpu = model;
    g.models = others.to_vec();
    g
}

fn model_of(e: &Engine, id: u64) -> GpuModel {
    let Some(Allocation::Gang { request, slots, .. }) = e.allocation(WorkloadId(id)) else {
        panic!("w{id} is not placed")
    };
    let on = e.fleet().node(slots[0].node).capacity.gpu_model.unwrap();
    assert_eq!(request.gpu, on, "the allocation records the model it got");
    on
}

#[test]
fn the_engine_takes_the_first_acceptable_model_with_room() {
    let mut e = Engine::new(two_models());
    e.place_gang(WorkloadId(1), &job(GpuModel::H100, &[], 2), 0)
        .unwrap();
    // H100 is full: the job that also takes H200 goes there; one that does not waits.
    assert!(e
        .place_gang(WorkloadId(2), &job(GpuModel::H100, &[], 1), 0)
        .is_err());
    e.place_gang(WorkloadId(3), &job(GpuModel::H100, &[GpuModel::H200], 1), 0)
        .unwrap();
    assert_eq!(model_of(&e, 3), GpuModel::H200);
    e.check_invariants().unwrap();
    // Scored single-node work looks at every acceptable model at once.
    e.set_node_score(NodeScore::Packing);
    let mut share = job(GpuModel::H100, &[GpuModel::H200], 1);
    share.gpus_per_node = 1;
    share.gpu_milli = 400;
    e.place_gang(WorkloadId(4), &share, 0).unwrap();
    assert_eq!(model_of(&e, 4), GpuModel::H200);
    e.check_invariants().unwrap();
    let alloc = e.release(WorkloadId(3)).unwrap();
    e.reinstate(WorkloadId(3), alloc).unwrap();
    e.check_invariants().unwrap();
}

#[test]
fn bad_model_lists_are_refused_by_field() {
    let twice = job(GpuModel::H100, &[GpuModel::H200, GpuModel::H200], 1);
    assert_eq!(twice.validate().unwrap_err().field, "models");
    let itself = job(GpuModel::H100, &[GpuModel::H100], 1);
    assert_eq!(itself.validate().unwrap_err().field, "models");
    let many = job(GpuModel::H100, &[GpuModel::H200; 9], 1);
    assert_eq!(many.validate().unwrap_err().field, "models");
}

#[test]
fn the_queue_charges_the_model_a_job_got_and_restores_it_there() {
    let quota = ResourceVec::UNLIMITED;
    let tenants = vec![TenantSpec {
        name: "t".into(),
        weight: 1.0,
        cohort: None,
        quota,
    }];
    let mut s = Scheduler::new(
        Engine::new(two_models()),
        tenants.clone(),
        SchedConfig::default(),
    )
    .unwrap();
    let spec = |gang| JobSpec {
        tenant: TenantId(0),
        priority: PriorityClass::Research,
        gang,
        time_limit: 3600,
        placement: Default::default(),
    };
    s.submit(WorkloadId(1), spec(job(GpuModel::H100, &[], 2)), 0)
        .unwrap();
    s.submit(
        WorkloadId(2),
        spec(job(GpuModel::H100, &[GpuModel::H200], 1)),
        0,
    )
    .unwrap();
    s.schedule(0);
    s.check_invariants().unwrap();
    assert_eq!(model_of(s.engine(), 2), GpuModel::H200);
    let usage = &s.tenant_report()[0].usage;
    assert_eq!(usage.gpus[GpuModel::H100.index()], 16);
    assert_eq!(usage.gpus[GpuModel::H200.index()], 8);
    let job2 = &s.job(WorkloadId(2)).unwrap().spec.gang;
    assert_eq!(
        (job2.gpu, job2.models.clone()),
        (GpuModel::H200, vec![GpuModel::H100]),
        "still accepts the other model"
    );
    // A new queue over the same fleet takes the state back: job 2 on H200 again.
    let state = s.state();
    let mut again =
        Scheduler::new(Engine::new(two_models()), tenants, SchedConfig::default()).unwrap();
    again.load_state(&state, 1).unwrap();
    again.check_invariants().unwrap();
    assert_eq!(model_of(again.engine(), 2), GpuModel::H200);
    assert_eq!(again.tenant_report()[0].usage, *usage);
    // When it ends, the H200 usage goes.
    s.finish(WorkloadId(2), 10).unwrap();
    s.check_invariants().unwrap();
    assert_eq!(s.tenant_report()[0].usage.gpus[GpuModel::H200.index()], 0);
}

#[test]
fn another_model_is_taken_only_where_the_quota_admits_it() {
    // Tenant 0 may use 8 H100 GPUs and no H200; tenant 1 has no limits.
    let mut s = queue(&[gpus_quota(8, 0), ResourceVec::UNLIMITED]);
    let spec = |t: u32, gang| JobSpec {
        tenant: TenantId(t),
        priority: PriorityClass::Research,
        gang,
        time_limit: 3600,
        placement: Default::default(),
    };
    // The other tenant fills the H100 hosts; tenant 0's job is admitted on H100 (its quota
    // there is free) and also accepts H200, where its quota is 0: it must wait.
    s.submit(WorkloadId(1), spec(1, job(GpuModel::H100, &[], 2)), 0)
        .unwrap();
    s.schedule(0);
    s.submit(
        WorkloadId(2),
        spec(0, job(GpuModel::H100, &[GpuModel::H200], 1)),
        1,
    )
    .unwrap();
    s.schedule(1);
    s.check_invariants().unwrap();
    assert!(s.engine().allocation(WorkloadId(1)).is_some());
    assert!(
        s.engine().allocation(WorkloadId(2)).is_none(),
        "ran on a model its quota does not cover"
    );
    assert_eq!(s.tenant_report()[0].usage.gpus[GpuModel::H200.index()], 0);
}

fn spec_of(tenant: u32, priority: PriorityClass, gang: GangRequest) -> JobSpec {
    JobSpec {
        tenant: TenantId(tenant),
        priority,
        gang,
        time_limit: 100_000,
        placement: Default::default(),
    }
}

#[test]
fn a_job_its_first_models_quota_refuses_runs_on_another_it_accepts() {
    // No H100 quota, 8 H200 GPUs of it.
    let mut s = queue(&[gpus_quota(0, 8)]);
    let research = PriorityClass::Research;
    s.submit(
        WorkloadId(1),
        spec_of(0, research, job(GpuModel::H100, &[GpuModel::H200], 1)),
        0,
    )
    .unwrap();
    // Only H100, which its quota refuses: it waits, and says so.
    s.submit(
        WorkloadId(2),
        spec_of(0, research, job(GpuModel::H100, &[], 1)),
        0,
    )
    .unwrap();
    s.schedule(0);
    s.check_invariants().unwrap();
    assert_eq!(model_of(s.engine(), 1), GpuModel::H200);
    assert!(s.engine().allocation(WorkloadId(2)).is_none());
    let why = s.pending_reason_for(WorkloadId(2), None).unwrap();
    assert!(why.contains("quota"), "{why}");
    // The H200 quota is now used up: a second such job waits, with its first model's reason.
    s.submit(
        WorkloadId(3),
        spec_of(0, research, job(GpuModel::H100, &[GpuModel::H200], 1)),
        1,
    )
    .unwrap();
    s.schedule(1);
    s.check_invariants().unwrap();
    assert!(s.engine().allocation(WorkloadId(3)).is_none());
}

#[test]
fn preemption_looks_at_every_model_the_job_accepts() {
    let mut s = queue(&[ResourceVec::UNLIMITED]);
    // Serving holds the H100 hosts (no research job may preempt it); preemptible work the
    // H200 hosts.
    let serving = spec_of(
        0,
        PriorityClass::ProductionInference,
        job(GpuModel::H100, &[], 2),
    );
    s.submit(WorkloadId(1), serving, 0).unwrap();
    let spot = spec_of(0, PriorityClass::Preemptible, job(GpuModel::H200, &[], 1));
    s.submit(WorkloadId(2), spot.clone(), 0).unwrap();
    s.submit(WorkloadId(3), spot, 0).unwrap();
    s.schedule(0);
    s.check_invariants().unwrap();
    for id in 1..=3 {
        assert!(
            s.engine().allocation(WorkloadId(id)).is_some(),
            "w{id} runs"
        );
    }
    // A research job that asks for H100 first and takes H200 too preempts on H200.
    let research = spec_of(
        0,
        PriorityClass::Research,
        job(GpuModel::H100, &[GpuModel::H200], 1),
    );
    s.submit(WorkloadId(4), research, 10_000).unwrap();
    let decisions = s.schedule(10_000);
    s.check_invariants().unwrap();
    let preempted: Vec<WorkloadId> = decisions
        .iter()
        .filter_map(|d| match d {
            sched::Decision::Preempt { job, by, .. } if *by == WorkloadId(4) => Some(*job),
            _ => None,
        })
        .collect();
    assert_eq!(preempted.len(), 1, "{decisions:?}");
    assert!([WorkloadId(2), WorkloadId(3)].contains(&preempted[0]));
    // Its victim stops; it starts on the H200 host it freed.
    s.finish(preempted[0], 10_010).unwrap();
    s.schedule(10_011);
    s.check_invariants().unwrap();
    assert_eq!(model_of(s.engine(), 4), GpuModel::H200);
}

#[test]
fn a_reservation_takes_the_model_that_frees_room_first() {
    let mut s = queue(&[ResourceVec::UNLIMITED]);
    let research = PriorityClass::Research;
    // The H100 hosts are held until t=10000, the H200 hosts until t=1000.
    let mut long = spec_of(0, research, job(GpuModel::H100, &[], 2));
    long.time_limit = 10_000;
    let mut short = spec_of(0, research, job(GpuModel::H200, &[], 2));
    short.time_limit = 1_000;
    s.submit(WorkloadId(1), long, 0).unwrap();
    s.submit(WorkloadId(2), short, 0).unwrap();
    s.schedule(0);
    // Two hosts of H100 first, or of H200: the H200 hosts free first.
    s.submit(
        WorkloadId(3),
        spec_of(0, research, job(GpuModel::H100, &[GpuModel::H200], 2)),
        1,
    )
    .unwrap();
    let decisions = s.schedule(1);
    s.check_invariants().unwrap();
    let start = decisions.iter().find_map(|d| match d {
        sched::Decision::Reserve { job, start, .. } if *job == WorkloadId(3) => Some(*start),
        _ => None,
    });
    assert_eq!(start, Some(1_000), "{decisions:?}");
    // When they free, it starts there.
    s.finish(WorkloadId(2), 900).unwrap();
    s.schedule(900);
    s.check_invariants().unwrap();
    assert_eq!(model_of(s.engine(), 3), GpuModel::H200);
}

#[test]
fn no_victim_is_taken_on_a_model_the_quota_refuses() {
    // Tenant 0 has no H100 quota and 16 H200 GPUs of it; tenant 1 has no limits.
    let mut s = queue(&[gpus_quota(0, 16), ResourceVec::UNLIMITED]);
    // Preemptible work of the other tenant on the H100 hosts; its research work on H200.
    let spot = spec_of(1, PriorityClass::Preemptible, job(GpuModel::H100, &[], 2));
    s.submit(WorkloadId(1), spot, 0).unwrap();
    let busy = spec_of(1, PriorityClass::Research, job(GpuModel::H200, &[], 2));
    s.submit(WorkloadId(2), busy, 0).unwrap();
    s.schedule(0);
    // Tenant 0's research job asks H100 first, which its quota refuses, and takes H200: the
    // preemptible H100 work must not be stopped for it (it could never start there).
    let research = spec_of(
        0,
        PriorityClass::Research,
        job(GpuModel::H100, &[GpuModel::H200], 1),
    );
    s.submit(WorkloadId(3), research, 10_000).unwrap();
    let decisions = s.schedule(10_000);
    s.check_invariants().unwrap();
    assert!(
        !decisions
            .iter()
            .any(|d| matches!(d, sched::Decision::Preempt { .. })),
        "{decisions:?}"
    );
    // Nor is the one reservation held on H100 nodes for it.
    for d in &decisions {
        if let sched::Decision::Reserve { job, .. } = d {
            assert_eq!(*job, WorkloadId(3));
        }
    }
    let held = s.reservation().map(|r| r.2.to_vec()).unwrap_or_default();
    for n in held {
        assert_eq!(
            s.engine().fleet().node(n).capacity.gpu_model,
            Some(GpuModel::H200)
        );
    }
}

#[test]
fn a_shallow_pass_does_not_leave_out_a_job_its_first_models_quota_refuses() {
    let mut s = queue(&[gpus_quota(0, 16)]);
    // The first pass after start-up goes all the way; the next ones only as deep as set.
    s.schedule(0);
    s.submit(
        WorkloadId(1),
        spec_of(
            0,
            PriorityClass::Research,
            job(GpuModel::H100, &[GpuModel::H200], 1),
        ),
        1,
    )
    .unwrap();
    s.schedule(1);
    s.check_invariants().unwrap();
    assert_eq!(model_of(s.engine(), 1), GpuModel::H200);
}

#[test]
fn one_tenants_failure_does_not_hold_back_anothers_job_of_the_same_shape() {
    // Tenant 0 may use H200 only, which is full; tenant 1 may use both, and H100 has room.
    let mut s = queue(&[gpus_quota(0, 16), ResourceVec::UNLIMITED]);
    let research = PriorityClass::Research;
    s.submit(
        WorkloadId(1),
        spec_of(1, research, job(GpuModel::H200, &[], 2)),
        0,
    )
    .unwrap();
    s.schedule(0);
    let either = || job(GpuModel::H100, &[GpuModel::H200], 1);
    // Tenant 0 holds nothing, so it goes first, and fails; tenant 1's job of the same shape
    // still starts on H100.
    s.submit(WorkloadId(2), spec_of(0, research, either()), 1)
        .unwrap();
    s.submit(WorkloadId(3), spec_of(1, research, either()), 1)
        .unwrap();
    s.schedule(1);
    s.check_invariants().unwrap();
    assert!(s.engine().allocation(WorkloadId(2)).is_none());
    assert_eq!(model_of(s.engine(), 3), GpuModel::H100);
}

#[test]
fn a_backlog_over_quota_on_every_model_it_accepts_does_not_use_up_a_shallow_pass() {
    let mut s = queue(&[gpus_quota(0, 0), ResourceVec::UNLIMITED]);
    let research = PriorityClass::Research;
    // Tenant b runs something, so the backlog's tenant ranks first by fair share.
    s.submit(
        WorkloadId(1),
        spec_of(1, research, job(GpuModel::H100, &[], 1)),
        0,
    )
    .unwrap();
    s.schedule(0);
    let depth = SchedConfig::default().pass_depth as u64;
    for i in 0..depth * 3 {
        let either = job(GpuModel::H100, &[GpuModel::H200], 1);
        s.submit(WorkloadId(100 + i), spec_of(0, research, either), 1)
            .unwrap();
    }
    s.schedule(1);
    s.submit(
        WorkloadId(2),
        spec_of(1, research, job(GpuModel::H200, &[], 1)),
        2,
    )
    .unwrap();
    s.schedule(2);
    s.check_invariants().unwrap();
    assert_eq!(model_of(s.engine(), 2), GpuModel::H200);
}
