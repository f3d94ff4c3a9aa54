//! Extreme input to the manager's non-election API: every value a caller can pass is either
//! accepted and handled (saturating) or refused with an error naming the field and its limit,
//! before any store call. Never a panic, never an error about a field the caller did not set.

mod support;

use std::sync::Arc;
use std::time::Duration;

use lease_core::{
    DefaultSecretary, Error, Facades as _, Leaser as _, MAX_METADATA_BYTES, MAX_NAME_BYTES,
    PathKey, Request, Token as _,
};
use lease_manager::{
    Jitter, LeaserConfig, Manager, ManagerConfig, ManagerError, ManagerLeaser, ResourceKey,
    ResourceLockError, ResourceLocks, RetryPolicy, lease_name,
};
use lease_testkit::{FakeClock, FaultRates, FaultyStore, InMemoryStore};
use support::*;

/// The bytes `ManagerLeaser` appends to its identity in every holder name: `~` and 16 hex.
const HOLDER_SUFFIX: usize = 17;

fn config(clock: &FakeClock) -> ManagerConfig {
    ManagerConfig::new(InMemoryStore::new(clock.as_clock()), clock.as_clock())
        .with_default_secretary(Arc::new(DefaultSecretary))
}

fn assert_validation(err: &Error, field: &str, mentions: &str) {
    match err {
        Error::Validation { field: f, .. } if *f == field => {}
        other => panic!("expected a validation error for {field}, got {other:?}"),
    }
    assert!(
        err.to_string().contains(mentions),
        "{err} should mention {mentions}"
    );
}

// ---- ManagerConfig ----

/// A channel capacity past tokio's semaphore limit (`usize::MAX >> 3`) panicked in
/// `Manager::start`; any capacity over the documented maximum is now refused by name.
#[tokio::test]
async fn a_huge_channel_capacity_is_refused_naming_the_field_and_limit() {
    let clock = FakeClock::new();
    for capacity in [usize::MAX, (usize::MAX >> 3) + 1, (1 << 20) + 1] {
        let err = Manager::start(config(&clock).with_channel_capacity(capacity))
            .expect_err("over the limit");
        match &err {
            ManagerError::Config { field, reason, .. } => {
                assert_eq!(*field, "channel_capacity");
                assert!(reason.contains("1048576"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    // The limit itself is fine.
    assert_eq!(ManagerConfig::MAX_CHANNEL_CAPACITY, 1 << 20);
    let manager = Manager::start(config(&clock).with_channel_capacity(1 << 20)).unwrap();
    manager.stop().await;
}

/// The longest durations everywhere: the worker saturates every deadline instead of
/// overflowing, serves requests, and still stops (no store call is in flight to wait for).
#[tokio::test]
async fn the_longest_durations_in_every_setting_are_served() {
    let clock = FakeClock::new();
    let manager = Manager::start(
        config(&clock)
            .with_max_sleep(Duration::MAX)
            .with_refresh_interval(Duration::MAX)
            .with_shutdown_grace(Duration::MAX)
            .with_retry(RetryPolicy {
                attempts: u32::MAX,
                initial_delay: Duration::MAX,
                multiplier: f64::MAX,
                max_delay: Duration::MAX,
                jitter: Jitter::Full,
            }),
    )
    .unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let info = claimer
        .claim("forever", Request::new("h", Duration::MAX))
        .await
        .unwrap();
    let token = manager.token(NS, MODEL, "forever", "h").unwrap();
    assert_eq!(token.check().await.unwrap(), info.generation);
    tick(&clock, Duration::from_secs(3600 * 24 * 365 * 100)).await;
    assert_eq!(token.check().await.unwrap(), info.generation);
    claimer
        .claim("forever", Request::new("h", Duration::MAX))
        .await
        .unwrap();
    manager.stop().await;
    assert!(manager.worker_finished());
}

/// A retry after a backoff of `Duration::MAX` (reached after one ×`f64::MAX` step) is
/// scheduled at the end of time rather than overflowing: the first retry happens on time, the
/// second never, and stopping answers the caller `Aborted`.
#[tokio::test]
async fn a_retry_backoff_of_duration_max_is_scheduled_not_overflowed() {
    let clock = FakeClock::new();
    let store = FaultyStore::new(InMemoryStore::new(clock.as_clock()), clock.as_clock(), 7)
        .with_rates(FaultRates {
            timeout_before: 1.0,
            ..FaultRates::NONE
        });
    let manager = Manager::start(
        ManagerConfig::new(store, clock.as_clock())
            .with_default_secretary(Arc::new(DefaultSecretary))
            .with_retry(RetryPolicy {
                attempts: 10,
                initial_delay: Duration::from_secs(1),
                multiplier: f64::MAX,
                max_delay: Duration::MAX,
                jitter: Jitter::None,
            }),
    )
    .unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let call = tokio::spawn(async move {
        claimer
            .claim("stuck", Request::new("h", Duration::from_secs(30)))
            .await
    });
    until("the first attempt failed", || manager.report().retries == 1).await;
    tick(&clock, Duration::from_secs(1)).await;
    until("the first retry ran", || manager.report().retries == 2).await;
    tick(&clock, Duration::from_secs(3600 * 24 * 365 * 100)).await;
    assert_eq!(
        manager.report().retries,
        2,
        "the second retry is at the end of time"
    );
    manager.stop().await;
    assert!(matches!(call.await.unwrap(), Err(Error::Aborted)));
}

/// `RetryPolicy::backoff` at the extremes: never a panic, never decreasing, capped by
/// `max_delay`, exact past `u64::MAX` nanoseconds, and zero when the initial delay is zero.
#[test]
fn backoff_is_monotonic_capped_and_exact_at_the_extremes() {
    let wide = RetryPolicy {
        attempts: u32::MAX,
        initial_delay: Duration::from_nanos(1),
        multiplier: 1.6,
        max_delay: Duration::MAX,
        jitter: Jitter::None,
    };
    let mut previous = Duration::ZERO;
    for retry in (0..=400).chain([u32::MAX - 1, u32::MAX]) {
        let delay = wide.backoff(retry);
        assert!(delay >= previous, "retry {retry}: {delay:?} < {previous:?}");
        previous = delay;
    }
    assert_eq!(wide.backoff(u32::MAX), Duration::MAX);
    // 1.6^99 ns ≈ 1.6e20 ns ≈ 5,100 years: past u64::MAX nanoseconds (≈ 584 years), below
    // the cap, so it must not be clipped to u64::MAX nanoseconds.
    let expected = 1.6_f64.powi(99) / 1e9;
    let got = wide.backoff(100).as_secs_f64();
    assert!(
        (got - expected).abs() / expected < 1e-9,
        "backoff(100) = {got} s, expected {expected} s"
    );

    let zero = RetryPolicy {
        initial_delay: Duration::ZERO,
        max_delay: Duration::from_secs(5),
        multiplier: f64::MAX,
        ..wide
    };
    for retry in [0, 1, 2, 3, 1000, u32::MAX] {
        assert_eq!(zero.backoff(retry), Duration::ZERO, "retry {retry}");
    }

    let huge = RetryPolicy {
        initial_delay: Duration::MAX,
        multiplier: f64::MAX,
        ..wide
    };
    for retry in [0, 1, 2, u32::MAX] {
        assert_eq!(huge.backoff(retry), Duration::MAX);
    }
}

// ---- facades: metadata ----

/// Metadata over lease-core's limit is refused by the claim facade, before the request is
/// queued: the store sees no claim (and no extend, for a holder's renewal).
#[tokio::test]
async fn oversized_metadata_is_refused_before_any_store_call() {
    let clock = FakeClock::new();
    let (store, flaky_store) = flaky(InMemoryStore::new(clock.as_clock()), &clock);
    let manager = support::manager(flaky_store, &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let big = serde_json::Value::String("x".repeat(MAX_METADATA_BYTES));

    let err = claimer
        .claim(
            "l",
            Request::new("h", Duration::from_secs(30)).with_metadata(big.clone()),
        )
        .await
        .unwrap_err();
    assert_validation(&err, "metadata", &MAX_METADATA_BYTES.to_string());
    assert_eq!(store.claims(), 0, "the claim reached the store");
    assert_eq!(manager.report().store_calls, 0);

    // The holder's claim of a lease it holds is an extend: refused the same way.
    claimer
        .claim("l", Request::new("h", Duration::from_secs(30)))
        .await
        .unwrap();
    let calls = manager.report().store_calls;
    let err = claimer
        .claim(
            "l",
            Request::new("h", Duration::from_secs(30)).with_metadata(big),
        )
        .await
        .unwrap_err();
    assert_validation(&err, "metadata", &MAX_METADATA_BYTES.to_string());
    assert_eq!(store.extends(), 0, "the extend reached the store");
    assert_eq!(manager.report().store_calls, calls);
    manager.stop().await;
}

// ---- ManagerLeaser ----

/// An identity that fits a name but not a holder name once `~<16 hex>` is appended was
/// accepted by `new`, and then every acquire failed with a "holder" error. `new` refuses it,
/// naming `identity` and its limit; the longest identity that fits works end to end.
#[tokio::test]
async fn a_leaser_identity_too_long_for_its_holder_suffix_is_refused_by_new() {
    let clock = FakeClock::new();
    let manager = Manager::start(config(&clock)).unwrap();
    let limit = MAX_NAME_BYTES - HOLDER_SUFFIX;
    assert_eq!(ManagerLeaser::MAX_IDENTITY_BYTES, limit);
    for len in [limit + 1, MAX_NAME_BYTES] {
        let err = ManagerLeaser::new(
            &manager,
            clock.as_clock(),
            LeaserConfig::new(NS, MODEL, "i".repeat(len)),
        )
        .expect_err("too long");
        assert_validation(&err, "identity", &limit.to_string());
    }

    let leaser = ManagerLeaser::new(
        &manager,
        clock.as_clock(),
        LeaserConfig::new(NS, MODEL, "i".repeat(limit)),
    )
    .unwrap();
    let key = PathKey::system(["k"]).unwrap();
    let (guard, lost) = leaser
        .acquire_lease(&key, Duration::from_secs(30), None)
        .await
        .unwrap();
    assert!(!lost.is_cancelled());
    guard.release().await.unwrap();
    manager.stop().await;
}

// ---- ResourceLocks ----

/// Long resource-key parts made a lease name over the limit, and the error named `lease`, a
/// field the caller never set. It names the part (the longest once escaped) and the limit.
#[tokio::test]
async fn a_resource_key_part_too_long_once_escaped_is_named() {
    let clock = FakeClock::new();
    let (store, flaky_store) = flaky(InMemoryStore::new(clock.as_clock()), &clock);
    let manager = support::manager(flaky_store, &clock);
    let locks = ResourceLocks::new(&manager, NS, MODEL).unwrap();
    // What the four escaped parts may take together.
    let room = MAX_NAME_BYTES - lease_name(&ResourceKey::new("", "", "", "")).len();

    let cases = [
        (ResourceKey::new("", "Pod", "ns", "n".repeat(2000)), "name"),
        // 400 dots are 1200 bytes once escaped (`%2E`).
        (ResourceKey::new("", "Pod", "ns", ".".repeat(400)), "name"),
        (
            ResourceKey::new("", "Pod", "é".repeat(300), "n"),
            "namespace",
        ),
        (
            ResourceKey::new("g".repeat(600), "Pod", "", "n".repeat(500)),
            "group",
        ),
        (ResourceKey::new("", "K".repeat(room), "", "n"), "kind"),
    ];
    for (key, field) in cases {
        match locks.acquire(&key, "txn", Duration::from_secs(30)).await {
            Err(ResourceLockError::Invalid(err)) => {
                assert_validation(&err, field, &MAX_NAME_BYTES.to_string());
            }
            other => panic!("{key:?}: {other:?}"),
        }
    }
    assert_eq!(store.claims(), 0);

    // Parts that take exactly the room left make a lease name of exactly the limit.
    let fits = ResourceKey::new("", "K", "", "n".repeat(room - 1));
    assert_eq!(lease_name(&fits).len(), MAX_NAME_BYTES);
    let lock = locks
        .acquire(&fits, "txn", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(lock.lease_name, lease_name(&fits));
    manager.stop().await;
}
