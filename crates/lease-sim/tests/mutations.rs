//! Mutation mode: a defect switched on in lease-manager is found within a few seeds; the same
//! seeds pass without it.

use lease_manager::mutation::Mutation;
use lease_sim::config::Kind;
use lease_sim::{SimConfig, run_seed};

fn electors(mutation: Option<Mutation>) -> SimConfig {
    SimConfig {
        kinds: vec![Kind::Elector, Kind::ElectorRelock, Kind::ElectorConcurrent],
        mutation,
        ..SimConfig::default()
    }
}

#[test]
fn unserialised_concurrent_lock_is_found() {
    let mutated = electors(Some(Mutation::ConcurrentLock));
    let found = (0..5).find(|&seed| !run_seed(seed, &mutated).verdict.violations.is_empty());
    assert!(found.is_some(), "not found in 5 seeds");
    let seed = found.unwrap_or_default();
    let clean = run_seed(seed, &electors(None));
    assert!(
        clean.verdict.violations.is_empty(),
        "{:?}",
        clean.verdict.violations
    );
}
