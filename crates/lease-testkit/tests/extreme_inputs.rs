//! Extreme inputs for the reference store and the fake clock: durations and instants at the
//! ends of their ranges, and names around and far past the length limit. Every operation
//! answers (expiries saturate at `Timestamp::MAX`, over-long names are refused naming the
//! field), and nothing panics.

use std::time::Duration;

use lease_core::{Error, Key, MAX_NAME_BYTES, Request, Result, Store, Timestamp};
use lease_testkit::{FAKE_CLOCK_START, FakeClock, InMemoryStore};
use proptest::prelude::*;

fn key(lease: &str) -> Key {
    Key::new("ns", "model", lease)
}

/// Durations at and near the ends of their range, and clock readings at the ends of the
/// timeline: every operation answers, expiries saturate at `Timestamp::MAX`.
#[tokio::test]
async fn extreme_durations_and_instants_saturate() {
    let durations = [
        Duration::from_nanos(1),
        Duration::from_secs(1),
        Duration::from_nanos(u64::MAX),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ];
    let starts = [
        Timestamp::from_nanos(1),
        FAKE_CLOCK_START,
        Timestamp::from_nanos(u64::MAX - 1),
        Timestamp::MAX,
    ];
    for start in starts {
        for (i, d) in durations.into_iter().enumerate() {
            let clock = FakeClock::starting_at(start);
            let mut store = InMemoryStore::new(clock.as_clock());
            let k = key("a");
            let info = store
                .claim_lease(&k, &Request::new("h", d))
                .await
                .unwrap_or_else(|e| panic!("{start} {d:?}: {e}"));
            assert_eq!(info.expiry, start.saturating_add(d), "{start} {d:?}");
            for e in durations {
                let extended = store.extend_lease(&k, &Request::new("h", e)).await;
                if start == Timestamp::MAX {
                    // Nothing is held at the end of time.
                    assert!(extended.unwrap_err().is_invalid());
                    continue;
                }
                let extended = extended.unwrap();
                assert!(extended.expiry >= info.expiry);
                assert_eq!(
                    extended.expiry,
                    start.saturating_add(durations[i].max(e)).max(info.expiry)
                );
            }
            clock.advance(Duration::MAX);
            assert_eq!(clock.now(), Timestamp::MAX);
            assert!(store.leases(&[]).await.unwrap().is_empty());
            let again = store.claim_lease(&k, &Request::new("o", d)).await.unwrap();
            assert_eq!(again.expiry, Timestamp::MAX);
        }
    }
}

/// Names over the limit are refused naming the field, before anything is written.
#[tokio::test]
async fn over_long_names_are_refused_without_a_write() {
    let clock = FakeClock::new();
    let mut store = InMemoryStore::new(clock.as_clock());
    let mut rx = store.change_notifier().unwrap();
    let limit = MAX_NAME_BYTES;
    let at = "x".repeat(limit);
    let over = "x".repeat(limit + 1);
    let huge = "y".repeat(70_000);
    let d = Duration::from_secs(10);
    // At the limit, everything works.
    store
        .claim_lease(&Key::new(&*at, &*at, &*at), &Request::new(&*at, d))
        .await
        .unwrap();
    store
        .pin_lease(&Key::new(&*at, &*at, &*at), &at)
        .await
        .unwrap();
    let writes = *rx.borrow_and_update();
    for long in [&over, &huge] {
        let long = long.as_str();
        let cases: Vec<(&str, Result<()>)> = vec![
            (
                "namespace",
                store
                    .claim_lease(&Key::new(long, "m", "l"), &Request::new("h", d))
                    .await
                    .map(drop),
            ),
            (
                "model",
                store
                    .extend_lease(&Key::new("n", long, "l"), &Request::new("h", d))
                    .await
                    .map(drop),
            ),
            (
                "lease",
                store.revoke_lease(&Key::new("n", "m", long), "h").await,
            ),
            (
                "holder",
                store
                    .claim_lease(&key("a"), &Request::new(long, d))
                    .await
                    .map(drop),
            ),
            ("entity", store.pin_lease(&key("a"), long).await),
            ("entity", store.unpin_lease(&key("a"), long).await),
            (
                "lease",
                store.leases(&[Key::new("n", "m", long)]).await.map(drop),
            ),
            ("model", store.lease_group("n", long).await.map(drop)),
        ];
        for (field, result) in cases {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, Error::Validation { field: f, reason, .. }
                    if *f == field && reason.contains(&format!("is {} bytes long", long.len()))),
                "{field}: {err}"
            );
        }
    }
    assert_eq!(*rx.borrow_and_update(), writes, "a refused call wrote");
    assert!(store.leases(&[key("a")]).await.unwrap().is_empty());
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..).prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
    ]
    .prop_filter("positive", |d| !d.is_zero())
}

fn any_instant() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        any::<u64>().prop_map(Timestamp::from_nanos),
        (0u64..1000).prop_map(|n| Timestamp::from_nanos(u64::MAX - n)),
        Just(FAKE_CLOCK_START),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any start, any durations, any time step: expiries are `now + d` saturated, an
    /// extend never shortens, and a lease is listed exactly while `now < expiry`.
    #[test]
    fn expiries_saturate_for_any_duration_and_instant(
        start in any_instant(),
        claim in any_duration(),
        extend in any_duration(),
        step in any_duration(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let clock = FakeClock::starting_at(start);
            let mut store = InMemoryStore::new(clock.as_clock());
            let k = key("p");
            let info = store.claim_lease(&k, &Request::new("h", claim)).await.unwrap();
            prop_assert_eq!(info.expiry, start.saturating_add(claim));
            clock.advance(step);
            let now = clock.now();
            prop_assert_eq!(now, start.saturating_add(step));
            let held = now < info.expiry;
            prop_assert_eq!(store.leases(&[]).await.unwrap().contains_key(&k), held);
            match store.extend_lease(&k, &Request::new("h", extend)).await {
                Ok(extended) => {
                    prop_assert!(held);
                    prop_assert_eq!(
                        extended.expiry,
                        info.expiry.max(now.saturating_add(extend))
                    );
                }
                Err(e) => {
                    prop_assert!(!held && e.is_invalid(), "{}", e);
                }
            }
            Ok(())
        })?;
    }

    /// Names of any length: accepted exactly up to the limit, whichever part is long.
    #[test]
    fn names_are_accepted_exactly_up_to_the_limit(
        len in 1usize..2100,
        part in 0usize..4,
        ch in prop::sample::select(vec!["a", "é", "😀"]),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let name = ch.repeat(len.div_ceil(ch.len()));
            let mut parts = ["n".to_owned(), "m".to_owned(), "l".to_owned(), "h".to_owned()];
            parts[part] = name.clone();
            let [n, m, l, h] = parts;
            let mut store = InMemoryStore::new(FakeClock::new().as_clock());
            let result = store
                .claim_lease(&Key::new(n, m, l), &Request::new(h, Duration::from_secs(1)))
                .await;
            prop_assert_eq!(
                result.is_ok(),
                name.len() <= MAX_NAME_BYTES,
                "{} bytes: {:?}", name.len(), result.err()
            );
            Ok(())
        })?;
    }
}
