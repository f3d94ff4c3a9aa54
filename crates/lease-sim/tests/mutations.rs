//! Mutation mode: each defect switched on in lease-manager (or in `lease run`'s supervisor,
//! lease-run-policy) is found at the seed `cargo xtask
//! sim` first finds it at (swarm mode, the kinds its run draws from), and the same seed passes
//! without it. RELIABILITY.md lists how many seeds each takes and how often seeds fail.

use lease_manager::mutation::Mutation;
use lease_run_policy::mutation::Mutation as RunMutation;
use lease_sim::config::Kind;
use lease_sim::runner::{shrink, shrink_trace};
use lease_sim::{SimConfig, run_seed};

const ELECTORS: [Kind; 3] = [Kind::Elector, Kind::ElectorRelock, Kind::ElectorConcurrent];
const EXTENDERS: [Kind; 3] = [Kind::Claimer, Kind::Leaser, Kind::ResourceLock];

fn swarm(kinds: &[Kind], mutation: Option<Mutation>) -> SimConfig {
    SimConfig {
        kinds: kinds.to_vec(),
        mutation,
        swarm: true,
        ..SimConfig::default()
    }
}

/// (mutation, kinds, the first failing seed of `cargo xtask sim`'s run).
const FOUND_AT: [(Mutation, &[Kind], u64); 4] = [
    (Mutation::ConcurrentLock, &ELECTORS, 1),
    (Mutation::GenerationAcrossTerms, &ELECTORS, 92),
    (Mutation::RetriedExtendClaims, &EXTENDERS, 2),
    (Mutation::RevokeRacingLock, &ELECTORS, 23),
];

#[test]
fn each_mutation_is_found_at_its_seed_which_passes_without_it() {
    for (mutation, kinds, seed) in FOUND_AT {
        let found = run_seed(seed, &swarm(kinds, Some(mutation)));
        assert!(
            !found.verdict.violations.is_empty(),
            "{mutation:?} not found at seed {seed}"
        );
        let clean = run_seed(seed, &swarm(kinds, None));
        assert!(
            clean.verdict.violations.is_empty(),
            "seed {seed} without {mutation:?}: {:?}",
            clean.verdict.violations
        );
    }
}

/// `lease run`'s supervisor stopping the command only after expiry: the first failing seed of
/// `cargo xtask sim`'s run (swarm mode, `lease run` invocations only), which passes with the
/// supervisor as it is.
#[test]
fn stop_after_expiry_is_found_at_its_seed_which_passes_without_it() {
    let seed = 1;
    let mut config = swarm(&[Kind::LeaseRun], None);
    config.run_mutation = Some(RunMutation::StopAfterExpiry);
    let found = run_seed(seed, &config);
    assert!(
        found
            .verdict
            .violations
            .iter()
            .any(|v| v.contains("overlaps") || v.contains("expired at")),
        "StopAfterExpiry not found at seed {seed}: {:?}",
        found.verdict.violations
    );
    config.run_mutation = None;
    let clean = run_seed(seed, &config);
    assert!(
        clean.verdict.windows > 0 && clean.verdict.violations.is_empty(),
        "seed {seed} without StopAfterExpiry: {:?}",
        clean.verdict.violations
    );
}

/// A failing seed shrinks to fewer processes, events and faults, and the shrunk configuration
/// (what the replay command spells out) still fails, the same way on every replay.
#[test]
fn a_failing_seed_shrinks_to_a_shorter_trace_that_still_fails() {
    let (mutation, kinds, seed) = FOUND_AT[3];
    let config = swarm(kinds, Some(mutation));
    let full = run_seed(seed, &config);
    let small = shrink_trace(seed, &shrink(seed, &config));
    assert!(
        !small.swarm,
        "the shrunk configuration is the one the seed drew"
    );
    assert!(!small.dropped_faults.is_empty() || !small.dropped_events.is_empty());
    let shrunk = run_seed(seed, &small);
    assert!(!shrunk.verdict.violations.is_empty());
    assert!(
        shrunk.verdict.fault_count() < full.verdict.fault_count(),
        "{} faults, was {}",
        shrunk.verdict.fault_count(),
        full.verdict.fault_count()
    );
    assert_eq!(run_seed(seed, &small).verdict, shrunk.verdict);
}
