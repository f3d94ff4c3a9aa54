//! One seed replays bit for bit; different seeds make different runs.

use std::time::Duration;

use lease_sim::{SimConfig, run_seed};

fn logged() -> SimConfig {
    SimConfig {
        keep_log: true,
        ..SimConfig::default()
    }
}

#[test]
fn a_seed_replays_the_same_event_log() {
    let config = logged();
    for seed in 0..12 {
        let first = run_seed(seed, &config);
        // Another thread: its tokio and std random state differ, the run must not.
        let second = std::thread::spawn({
            let config = config.clone();
            move || run_seed(seed, &config)
        })
        .join()
        .expect("the second run");
        assert!(
            first.log.len() > 50,
            "seed {seed}: a run this short checks nothing"
        );
        assert_eq!(first.log, second.log, "seed {seed} diverged");
        assert_eq!(first.verdict, second.verdict);
    }
}

/// Swarm mode draws each seed's configuration from the seed: it replays too, and seeds differ
/// in more than their faults' timing.
#[test]
fn a_swarm_seed_replays_the_same_event_log() {
    let config = SimConfig {
        swarm: true,
        ..logged()
    };
    assert_ne!(config.for_seed(3), config.for_seed(4));
    for seed in 0..6 {
        let first = run_seed(seed, &config);
        let second = std::thread::spawn({
            let config = config.clone();
            move || run_seed(seed, &config)
        })
        .join()
        .expect("the second run");
        assert_eq!(first.log, second.log, "swarm seed {seed} diverged");
        assert_eq!(first.verdict, second.verdict);
    }
}

/// Over lease-store-sqlite on a temporary file (its calls run on tokio's blocking pool), a seed
/// replays too, and the run is checked like any other.
#[test]
fn a_sqlite_seed_replays_the_same_event_log() {
    let config = SimConfig {
        sqlite: true,
        duration: Duration::from_secs(30),
        ..logged()
    };
    for seed in 0..3 {
        let first = run_seed(seed, &config);
        let second = run_seed(seed, &config);
        assert!(first.log.len() > 50, "seed {seed}: too short to check");
        assert_eq!(first.log, second.log, "sqlite seed {seed} diverged");
        assert!(
            first.verdict.violations.is_empty(),
            "{:?}",
            first.verdict.violations
        );
    }
}

/// Seed 266 of the elector drift run took either branch of the elector's wait-or-fallback
/// `select!` (tokio's unseeded choice) until that `select!` was made `biased;`.
#[test]
fn an_elector_seed_that_raced_two_ready_branches_replays() {
    let config = SimConfig {
        kinds: vec![
            lease_sim::config::Kind::Elector,
            lease_sim::config::Kind::ElectorRelock,
            lease_sim::config::Kind::ElectorConcurrent,
        ],
        client_margin_ppm: 0,
        drift_ppm: 400_000,
        ..logged()
    };
    let first = run_seed(266, &config);
    for _ in 0..6 {
        assert_eq!(run_seed(266, &config).log, first.log);
    }
}

#[test]
fn different_seeds_make_different_runs() {
    let config = logged();
    let a = run_seed(1, &config);
    let b = run_seed(2, &config);
    assert_ne!(a.log, b.log);
}

#[test]
fn runs_check_windows_and_inject_every_fault() {
    let config = SimConfig {
        duration: Duration::from_secs(300),
        ..SimConfig::default()
    };
    let mut faults = std::collections::BTreeMap::new();
    let mut windows = 0;
    for seed in 0..8 {
        let run = run_seed(seed, &config);
        assert!(
            run.verdict.violations.is_empty(),
            "seed {seed}: {:?}",
            run.verdict.violations
        );
        windows += run.verdict.windows;
        for (k, n) in run.verdict.faults {
            *faults.entry(k).or_insert(0) += n;
        }
    }
    assert!(windows > 100, "{windows} windows");
    for kind in [
        "timeout before effect",
        "timeout after effect",
        "invalid",
        "latency",
        "batch split",
        "process pause",
        "crash",
        "partition",
        "operator revoke",
        "change notice late",
        "change notice lost",
    ] {
        assert!(
            faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {faults:?}"
        );
    }
}
