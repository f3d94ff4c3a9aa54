//! Extreme input to the service's public API: never a panic.

use std::sync::Arc;
use std::time::Duration;

use downstream_app::{Outbox, Reporter, Tick};
use lease_testkit::{FakeClock, FakeManager};

/// `Reporter::new` claimed for `3 × interval`, which panicked for an interval over
/// `Duration::MAX / 3`; the lease duration saturates instead, and such a copy still leads.
#[tokio::test]
async fn an_interval_too_long_to_triple_saturates_instead_of_panicking() {
    let clock = FakeClock::new();
    let manager = FakeManager::new(clock.clone());
    let outbox = Arc::new(Outbox::new());
    for interval in [Duration::MAX / 3 + Duration::from_nanos(1), Duration::MAX] {
        let reporter = Reporter::new(
            &manager,
            "reports",
            "prod",
            "copy-a",
            clock.as_clock(),
            Arc::clone(&outbox),
            interval,
        )
        .unwrap();
        assert!(matches!(
            reporter.tick().await.unwrap(),
            Tick::Published { .. }
        ));
    }
    // The copy's claim never ends: another copy stands by even a century later.
    clock.advance(Duration::from_secs(3600 * 24 * 365 * 100));
    let other = Reporter::new(
        &manager,
        "reports",
        "prod",
        "copy-b",
        clock.as_clock(),
        Arc::clone(&outbox),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        other.tick().await.unwrap(),
        Tick::Standby {
            leader: Some("copy-a".into())
        }
    );
}
