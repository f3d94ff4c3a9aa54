//! The simulated `lease run` reaches every path of its supervisor, its shim included, and no
//! command outlives its lease: `lease run` paused often (the shim must then kill the tree on
//! its own), renewals refused, commands that ignore SIGTERM.

use lease_sim::config::Kind;
use lease_sim::{SimConfig, run_seed};

#[test]
fn paused_lease_runs_are_stopped_by_their_shim_and_no_command_outlives_its_lease() {
    let config = SimConfig {
        kinds: vec![Kind::LeaseRun],
        pauses_per_minute: 6.0,
        keep_log: true,
        ..SimConfig::default()
    };
    let mut seen = [0usize; 4];
    let marks = [
        "the shim's deadline came",
        ": SIGTERM",
        ": SIGKILL,",
        "lease run ends: None",
    ];
    for seed in 0..12 {
        let run = run_seed(seed, &config);
        assert!(
            run.verdict.violations.is_empty(),
            "seed {seed}: {:?}",
            run.verdict.violations
        );
        assert!(run.verdict.windows > 0, "seed {seed}: no command ran");
        for line in &run.log {
            for (count, mark) in seen.iter_mut().zip(marks) {
                *count += usize::from(line.contains(mark));
            }
        }
    }
    for (count, mark) in seen.iter().zip(marks) {
        assert!(*count > 0, "no {mark:?} in 12 seeds");
    }
}
