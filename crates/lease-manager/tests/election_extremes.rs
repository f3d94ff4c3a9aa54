//! `LeaderElector` with extreme durations (issue 13): every duration of `ElectionConfig` and
//! every elector method that takes one, at `Duration::MAX`, `u64::MAX` seconds, `u64::MAX`
//! nanoseconds and their neighbours, either refused by validation with an error naming the
//! field or working (saturating), never a panic.

mod support;

use std::time::Duration;

use lease_manager::{Callbacks, ElectionConfig, ElectionError, LeaderElector};
use lease_testkit::FakeClock;
use support::*;

const EXTREMES: [Duration; 5] = [
    Duration::MAX,
    Duration::from_secs(u64::MAX),
    Duration::from_nanos(u64::MAX),
    Duration::from_secs(u64::MAX / 2),
    Duration::new(u64::MAX - 1, 999_999_999),
];

const FIELDS: [&str; 4] = [
    "lease_duration",
    "renew_deadline",
    "retry_period",
    "unlock_with_retry_period",
];

fn with(mut config: ElectionConfig, field: &str, value: Duration) -> ElectionConfig {
    match field {
        "lease_duration" => config.lease_duration = value,
        "renew_deadline" => config.renew_deadline = value,
        "retry_period" => config.retry_period = value,
        "unlock_with_retry_period" => config.unlock_with_retry_period = value,
        _ => unreachable!("{field}"),
    }
    config
}

/// Runs a whole life on `config`: lock, renew, health checks with every extreme tolerance,
/// the term record, a failing `unlock_with_retry` (which sleeps its jittered period), a
/// successful one, and a release.
async fn exercise(config: ElectionConfig) {
    let what = format!("{config:?}");
    let clock = FakeClock::new();
    let (_, procs) = processes(&clock, 1);
    let (store, m) = &procs[0];
    let e = LeaderElector::new(m, clock.as_clock(), config, Callbacks::new()).unwrap();
    let guard = e.lock().await.unwrap();
    for tolerance in EXTREMES.into_iter().chain([Duration::ZERO]) {
        e.check(tolerance)
            .unwrap_or_else(|err| panic!("{what}: {err}"));
    }
    let record = e.term_record().expect("leading");
    assert!(record.lease_duration_seconds >= e.config().lease_duration.as_secs());
    tick(&clock, secs(3)).await;
    assert!(guard.is_leading(), "{what}");
    e.check(Duration::MAX).unwrap();

    store.set_broken(true);
    let unlocking = tokio::spawn({
        let e = e.clone();
        async move { e.unlock_with_retry().await }
    });
    for _ in 0..10 {
        tick(&clock, secs(2)).await;
    }
    store.set_broken(false);
    for _ in 0..10 {
        if unlocking.is_finished() {
            break;
        }
        tick(&clock, secs(2)).await;
    }
    // With a huge retry period it gives up at once (its next try would come after the lease
    // expired by itself); otherwise it revokes once the store is back.
    if unlocking.is_finished() {
        unlocking.await.unwrap();
    } else {
        unlocking.abort();
    }
    assert!(guard.lost().is_cancelled(), "{what}");

    let again = e.lock().await.unwrap();
    assert!(again.generation() > guard.generation(), "{what}");
    e.check(Duration::MAX).unwrap();
    assert!(again.release().await, "{what}");
    e.check(Duration::MAX).unwrap();
}

#[tokio::test]
async fn every_extreme_duration_is_refused_by_name_or_works() {
    for field in FIELDS {
        for value in EXTREMES {
            let config = with(
                ElectionConfig::new(NS, MODEL, "controller", "pod-a"),
                field,
                value,
            );
            match config.validate() {
                Ok(()) => exercise(config).await,
                Err(ElectionError::Config { field: named, .. }) => {
                    // Only the ordering rules can refuse an extreme value (it is not zero).
                    assert!(
                        ["renew_deadline", "lease_duration"].contains(&named),
                        "{field} = {value:?} refused as {named}"
                    );
                }
                Err(e) => panic!("{field} = {value:?}: {e}"),
            }
        }
    }
}

#[tokio::test]
async fn all_durations_extreme_together() {
    for top in EXTREMES {
        let config = ElectionConfig::new(NS, MODEL, "controller", "pod-a")
            .with_timing(top, top / 2, top / 4)
            .with_unlock_with_retry_period(top);
        config.validate().unwrap();
        exercise(config).await;
    }
}

#[tokio::test]
async fn check_takes_any_tolerance_when_not_leading() {
    let clock = FakeClock::new();
    let (_, procs) = processes(&clock, 1);
    let e = LeaderElector::new(
        &procs[0].1,
        clock.as_clock(),
        ElectionConfig::new(NS, MODEL, "controller", "pod-a"),
        Callbacks::new(),
    )
    .unwrap();
    for tolerance in EXTREMES {
        e.check(tolerance).unwrap();
    }
    let guard = e.lock().await.unwrap();
    for tolerance in EXTREMES {
        e.check(tolerance).unwrap();
    }
    drop(guard);
}
