//! End-to-end proof that the checker can fail: the same SQLite scenario, with real worker
//! processes and kill -9, passes as it is and reports violations when the workers are made
//! deliberately unsafe (they believe their windows last three times what they claimed).

use std::path::PathBuf;
use std::time::Duration;

use lease_torture::sqlite::{RunArgs, run};

fn args(dir: PathBuf, stretch: f64) -> RunArgs {
    RunArgs {
        dir,
        workers: 3,
        leases: 2,
        duration: Duration::from_secs(3),
        durations: (Duration::from_millis(50), Duration::from_millis(200)),
        kill_every: Some((Duration::from_millis(300), Duration::from_millis(900))),
        stretch,
        seed: 42,
        exe: PathBuf::from(env!("CARGO_BIN_EXE_lease-torture")),
    }
}

#[test]
fn the_checker_passes_the_real_workers_and_catches_unsafe_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let safe = run(args(tmp.path().join("safe"), 1.0)).unwrap();
    assert!(safe.passed(), "{safe:#?}");
    assert!(safe.verdict.operations() > 20, "{safe:#?}");
    assert!(safe.kills > 0, "{safe:#?}");

    let unsafe_run = run(args(tmp.path().join("unsafe"), 3.0)).unwrap();
    assert!(
        !unsafe_run.verdict.overlaps.is_empty(),
        "the mutation went unnoticed: {unsafe_run:#?}"
    );
    assert!(!unsafe_run.passed());
}
