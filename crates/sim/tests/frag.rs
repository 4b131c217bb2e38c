//! The static fragmentation experiment: every policy accounts for every pod and leaves the
//! engine's books exact, the same seed gives the same runs, and Stargrid's packed gradient
//! keeps more of the reference cluster allocatable than the fragmentation gradient, best fit
//! and random placement.

#![allow(clippy::unwrap_used)]

use sim::frag::{draw, experiment, reference_fleet, reference_mix, run_static, Policy};

#[test]
fn every_policy_accounts_for_every_pod_and_stargrid_allocates_the_most() {
    let fleet = reference_fleet().unwrap();
    let mix = reference_mix();
    let results = experiment(&fleet, &mix, &Policy::ALL, 1.3, 1, 1).unwrap();
    let pods = draw(&mix, &fleet, 1.3, 1).unwrap().len() as u64;
    for r in &results {
        let run = &r.runs[0];
        assert_eq!(run.pods, pods, "{:?}", r.policy);
        // 130% asked of a fleet that holds 100%: something fails, and what is allocated
        // only grows after the first failure.
        assert!(run.failed > 0 && run.failed < pods, "{:?}", r.policy);
        assert!(run.allocated_at_first_failure > 0.3, "{:?}", r.policy);
        assert!(run.allocated_at_first_failure <= run.allocated_at_end);
        assert!(run.allocated_at_end <= 1.0);
        assert!(run.arrived_at_first_failure <= 1.3 + 1e-9);
    }
    let first = |p: Policy| {
        results
            .iter()
            .find(|r| r.policy == p)
            .unwrap()
            .allocated_at_first_failure
    };
    for other in [Policy::Fragmentation, Policy::BestFit, Policy::Random] {
        assert!(
            first(Policy::Stargrid) > first(other),
            "stargrid {} vs {other:?} {}",
            first(Policy::Stargrid),
            first(other)
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_runs() {
    let fleet = reference_fleet().unwrap();
    let mix = reference_mix();
    let pods = draw(&mix, &fleet, 1.3, 9).unwrap();
    for p in [Policy::BestFit, Policy::Packing, Policy::Random] {
        let a = run_static(&fleet, &mix, &pods, p, 9).unwrap();
        let b = run_static(&fleet, &mix, &pods, p, 9).unwrap();
        assert_eq!(a, b, "{p:?}");
    }
}

#[test]
fn a_pod_kind_the_engine_refuses_is_named() {
    let fleet = reference_fleet().unwrap();
    let mut mix = reference_mix();
    mix[0].gpu_milli = 1500;
    let pods = draw(&mix, &fleet, 0.1, 1).unwrap();
    let err = run_static(&fleet, &mix, &pods, Policy::BestFit, 1).unwrap_err();
    assert!(err.to_string().contains("kind 0: gpu_milli"), "{err}");
}
