//! The fake `Leaser`: acquisition, conflicts, metadata, release (explicit and on drop), loss,
//! and that no amount of fake time makes a held lease lapse.

use std::time::Duration;

use lease_core::{Key, Store};
use lease_core::{LeaseInfo, Leaser, LeaserError, LeaserExt, PathKey};
use lease_testkit::{FAKE_LEASER_MODEL, FAKE_LEASER_NAMESPACE, FakeClock, FakeLeaser};
use serde::{Deserialize, Serialize};

const TTL: Duration = Duration::from_secs(30);

fn key(name: &str) -> PathKey {
    PathKey::module("idv", ["user", name]).unwrap()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Owner {
    host: String,
    pid: u32,
}

#[tokio::test]
async fn acquire_then_conflict_then_release_frees_it() {
    let leaser = FakeLeaser::new(FakeClock::new());
    let k = key("bob");
    let (guard, lost) = leaser.acquire_lease(&k, TTL, None).await.unwrap();
    assert!(leaser.is_held(&k));
    assert_eq!(leaser.held(), vec![k.clone()]);
    let err = leaser.acquire_lease(&k, TTL, None).await.unwrap_err();
    assert!(
        matches!(&err, LeaserError::Conflict { key } if *key == k),
        "{err}"
    );
    assert_eq!(err.to_string(), "lease /module/idv/user/bob already held");

    let first_generation = guard.generation();
    guard.release().await.unwrap();
    assert!(lost.is_cancelled(), "release fires the lost token");
    assert!(!leaser.is_held(&k));
    assert_eq!(leaser.lease_info_value(&k).await.unwrap(), None);

    let (again, _) = leaser.acquire_lease(&k, TTL, None).await.unwrap();
    assert!(again.generation() > first_generation);
}

#[tokio::test]
async fn ttl_below_five_seconds_is_a_validation_error() {
    let leaser = FakeLeaser::new(FakeClock::new());
    let err = leaser
        .acquire_lease(&key("a"), Duration::from_secs(4), None)
        .await
        .unwrap_err();
    match err {
        LeaserError::Lease(e) => assert!(e.is_validation(), "{e}"),
        other => panic!("expected a validation error, got {other}"),
    }
    assert!(leaser.held().is_empty());
}

#[tokio::test]
async fn held_leases_never_lapse_with_fake_time_and_set_no_timers() {
    let clock = FakeClock::new();
    let leaser = FakeLeaser::new(clock.clone());
    let k = key("carol");
    let (guard, lost) = leaser.acquire_lease(&k, TTL, None).await.unwrap();
    assert_eq!(clock.sleepers(), 0, "the fake renews without timers");
    clock.advance(TTL * 100);
    assert!(!lost.is_cancelled());
    let info = leaser
        .lease_info_value(&k)
        .await
        .unwrap()
        .expect("still held");
    assert_eq!(info.generation, guard.generation());
    assert!(matches!(
        leaser.acquire_lease(&k, TTL, None).await,
        Err(LeaserError::Conflict { .. })
    ));
    drop(guard);
}

#[tokio::test]
async fn metadata_round_trips_into_the_callers_type() {
    let leaser = FakeLeaser::new(FakeClock::new());
    let k = key("dave");
    let owner = Owner {
        host: "web-1".into(),
        pid: 4242,
    };
    let (guard, _) = leaser.acquire_lease_with(&k, TTL, &owner).await.unwrap();
    let info: LeaseInfo<Owner> = leaser.lease_info(&k).await.unwrap().expect("held");
    assert_eq!(info.metadata, Some(owner));
    assert_eq!(info.generation, guard.generation());
    assert!(info.holder.starts_with("fake-leaser-"));

    // Metadata of another shape is a clear Metadata error, not a panic.
    let err = leaser.lease_info::<Vec<u8>>(&k).await.unwrap_err();
    assert!(matches!(err, LeaserError::Metadata { .. }), "{err}");
    drop(guard);
}

#[tokio::test]
async fn dropping_the_guard_releases() {
    let leaser = FakeLeaser::new(FakeClock::new());
    let k = key("erin");
    let (guard, lost) = leaser.acquire_lease(&k, TTL, None).await.unwrap();
    drop(guard);
    assert!(lost.is_cancelled());
    assert!(!leaser.is_held(&k));
    assert!(leaser.acquire_lease(&k, TTL, None).await.is_ok());
}

#[tokio::test]
async fn lose_fires_the_token_and_frees_the_lease_for_others() {
    let clock = FakeClock::new();
    let leaser = FakeLeaser::new(clock.clone());
    let k = key("frank");
    let (guard, lost) = leaser.acquire_lease(&k, TTL, None).await.unwrap();
    assert!(leaser.lose(&k).await);
    assert!(lost.is_cancelled() && guard.is_lost());
    assert!(!leaser.lose(&k).await, "nothing left to lose");

    // Someone else (another fake on the same backing) can take it now.
    let other = FakeLeaser::with_store(leaser.store().await, clock);
    let (taken, _) = other.acquire_lease(&k, TTL, None).await.unwrap();
    assert!(taken.generation() > guard.generation());
    // The loser's late release must not disturb the new holder.
    guard.release().await.unwrap();
    assert!(other.is_held(&k));
    let info = other.lease_info_value(&k).await.unwrap().expect("held");
    assert_eq!(info.generation, taken.generation());
}

#[tokio::test]
async fn leases_are_visible_in_the_store_under_their_text_key() {
    let leaser = FakeLeaser::new(FakeClock::new());
    let k = PathKey::system(["runner", "a.b#c$d e"]).unwrap();
    let (_guard, _) = leaser.acquire_lease(&k, TTL, None).await.unwrap();
    let mut store = leaser.store().await;
    let store_key = Key::new(FAKE_LEASER_NAMESPACE, FAKE_LEASER_MODEL, k.to_string());
    let leases = store.leases(&[]).await.unwrap();
    assert_eq!(leases.keys().collect::<Vec<_>>(), vec![&store_key]);
    assert!(leases[&store_key].pinned);
}

#[tokio::test]
async fn usable_as_dyn_leaser() {
    let leaser: Box<dyn Leaser> = Box::new(FakeLeaser::new(FakeClock::new()));
    let (guard, _) = leaser.acquire_lease(&key("gina"), TTL, None).await.unwrap();
    assert!(!guard.is_lost());
}
