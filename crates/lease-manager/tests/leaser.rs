//! The auto-renewing `ManagerLeaser` on the fake clock: renewal timing, loss detection before
//! the guaranteed window ends, release and release on drop, every error, and a failover
//! between two processes with fencing.

mod support;

use std::time::Duration;

use lease_core::{
    Error, Key, LeaseInfo, Leaser as _, LeaserError, LeaserExt as _, PathKey, Store as _,
};
use lease_manager::{Fence, LeaserConfig, ManagerLeaser, StaleGeneration};
use lease_testkit::{FakeClock, InMemoryStore};
use support::*;

fn leaser(manager: &lease_manager::Manager, clock: &FakeClock, identity: &str) -> ManagerLeaser {
    ManagerLeaser::new(
        manager,
        clock.as_clock(),
        LeaserConfig::new(NS, MODEL, identity),
    )
    .unwrap()
}

fn store_key(key: &PathKey) -> Key {
    Key::new(NS, MODEL, key.to_string())
}

async fn stored(backing: &InMemoryStore, key: &PathKey) -> Option<lease_core::Info> {
    let mut probe = backing.sibling();
    let k = store_key(key);
    probe
        .leases(std::slice::from_ref(&k))
        .await
        .unwrap()
        .remove(&k)
}

#[tokio::test]
async fn renews_every_third_of_the_ttl_and_keeps_the_generation() {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 1);
    let (store, m) = &procs[0];
    let a = leaser(m, &clock, "runner-a");
    let key = PathKey::system(["runner", "job"]).unwrap();
    let start = clock.now();
    let (guard, lost) = a.acquire_lease(&key, secs(30), None).await.unwrap();
    assert_eq!(
        stored(&backing, &key).await.unwrap().expiry,
        start.saturating_add(secs(30))
    );

    for n in 1..=4u32 {
        tick(&clock, secs(10) - Duration::from_nanos(1)).await;
        assert_eq!(store.extends(), n as usize - 1, "renewal {n} came early");
        tick(&clock, Duration::from_nanos(1)).await;
        until("the renewal", || store.extends() == n as usize).await;
        let info = stored(&backing, &key).await.unwrap();
        assert_eq!(info.expiry, start.saturating_add(secs(10) * n + secs(30)));
        assert_eq!(info.generation, guard.generation());
    }
    assert!(!lost.is_cancelled());
    assert_eq!(store.claims(), 1);
}

#[tokio::test]
async fn a_failing_store_fires_the_lost_token_before_the_lease_can_expire() {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 1);
    let (store, m) = &procs[0];
    let a = leaser(m, &clock, "runner-a");
    let key = PathKey::module("idv", ["user", "bob"]).unwrap();
    let start = clock.now();
    let (guard, lost) = a.acquire_lease(&key, secs(30), None).await.unwrap();
    store.set_broken(true);

    // Renewals fail from 10 s on; the guarantee of the claim lasts until 30 s. The token fires
    // at 25 s (ttl × 5/6), not a second earlier.
    for _ in 0..24 {
        tick(&clock, secs(1)).await;
        assert!(!lost.is_cancelled(), "fired early at {}", clock.now());
    }
    tick(&clock, secs(1)).await;
    assert!(lost.is_cancelled());
    assert!(guard.is_lost());
    assert_eq!(clock.now(), start.saturating_add(secs(25)));
    // The lease is still valid for everyone else: nobody else could have taken it yet.
    assert!(stored(&backing, &key).await.unwrap().expiry > clock.now());
    // Releasing a lost lease does not touch the store.
    guard.release().await.unwrap();
    assert_eq!(store.revokes(), 0);
}

#[tokio::test]
async fn a_denied_renewal_fires_the_lost_token_at_once() {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 1);
    let (_, m) = &procs[0];
    let a = leaser(m, &clock, "runner-a");
    let key = PathKey::system(["x"]).unwrap();
    let (guard, lost) = a.acquire_lease(&key, secs(30), None).await.unwrap();
    // A buggy writer takes the lease over behind the manager's back.
    let mut info = stored(&backing, &key).await.unwrap();
    info.holder = "thief".into();
    info.generation = lease_core::Generation(guard.generation().get() + 1);
    backing.overwrite_record(&store_key(&key), &info);

    tick(&clock, secs(10)).await;
    for _ in 0..10 {
        tick(&clock, ms(100)).await;
    }
    assert!(
        lost.is_cancelled(),
        "the loss is noticed at the first renewal"
    );
    let now = a
        .lease_info_value(&key)
        .await
        .unwrap()
        .expect("the thief holds it");
    assert_eq!(now.holder, "thief", "no longer reported as ours");
    assert!(now.generation > guard.generation());
}

#[tokio::test]
async fn release_revokes_and_fires_the_token() {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 2);
    let a = leaser(&procs[0].1, &clock, "a");
    let b = leaser(&procs[1].1, &clock, "b");
    let key = PathKey::system(["r"]).unwrap();
    let (guard, lost) = a.acquire_lease(&key, secs(10), None).await.unwrap();
    let first = guard.generation();
    guard.release().await.unwrap();
    assert!(lost.is_cancelled());
    assert!(stored(&backing, &key).await.is_none());
    assert!(a.lease_info_value(&key).await.unwrap().is_none());
    // Free for anyone at once, under a newer generation.
    let (again, _) = b.acquire_lease(&key, secs(10), None).await.unwrap();
    assert!(again.generation() > first);
}

#[tokio::test]
async fn dropping_the_guard_releases_in_the_background() {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 1);
    let (store, m) = &procs[0];
    let a = leaser(m, &clock, "a");
    let key = PathKey::system(["dropped"]).unwrap();
    let (guard, lost) = a.acquire_lease(&key, secs(10), None).await.unwrap();
    drop(guard);
    until("the background release", || store.revokes() == 1).await;
    assert!(lost.is_cancelled());
    assert!(stored(&backing, &key).await.is_none());
    // The renewal task has stopped: no more store calls as time passes.
    tick(&clock, secs(30)).await;
    assert_eq!(store.extends(), 0);
}

#[tokio::test]
async fn errors() {
    let clock = FakeClock::new();
    let (_, procs) = processes(&clock, 2);
    let a = leaser(&procs[0].1, &clock, "a");
    let b = leaser(&procs[1].1, &clock, "b");
    let key = PathKey::module("m", ["k"]).unwrap();

    let err = a
        .acquire_lease(&key, Duration::from_millis(4999), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            LeaserError::Lease(Error::Validation { field: "ttl", .. })
        ),
        "{err}"
    );

    let (_guard, _) = a
        .acquire_lease_with(&key, secs(5), &serde_json::json!({"n": 1}))
        .await
        .unwrap();
    let err = b.acquire_lease(&key, secs(5), None).await.unwrap_err();
    assert!(
        matches!(&err, LeaserError::Conflict { key: k } if *k == key),
        "{err}"
    );
    assert_eq!(err.to_string(), "lease /module/m/k already held");
    // The same leaser twice is a conflict too, not a silent extend.
    let err = a.acquire_lease(&key, secs(5), None).await.unwrap_err();
    assert!(matches!(err, LeaserError::Conflict { .. }), "{err}");

    // Metadata in the caller's type, or a clear error when it is not that type.
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct N {
        n: u32,
    }
    let info: LeaseInfo<N> = a.lease_info(&key).await.unwrap().unwrap();
    assert_eq!(info.metadata, Some(N { n: 1 }));
    assert!(info.holder.starts_with("a~"));
    let err = a.lease_info::<Vec<String>>(&key).await.unwrap_err();
    assert!(matches!(err, LeaserError::Metadata { .. }), "{err}");
    let absent = PathKey::module("m", ["nobody"]).unwrap();
    assert!(a.lease_info::<N>(&absent).await.unwrap().is_none());
    // Another process's lease: holder, expiry, generation and metadata, as the store has them.
    let seen: LeaseInfo<N> = b.lease_info(&key).await.unwrap().expect("held by a");
    assert_eq!(seen.holder, info.holder);
    assert_eq!(seen.generation, info.generation);
    assert_eq!(seen.expiry, info.expiry);
    assert_eq!(seen.metadata, Some(N { n: 1 }));

    // A bad identity is refused up front.
    let err = ManagerLeaser::new(
        &procs[0].1,
        clock.as_clock(),
        LeaserConfig::new(NS, MODEL, "a b"),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Validation {
                field: "identity",
                ..
            }
        ),
        "{err}"
    );

    // A stopped manager aborts.
    procs[1].1.stop().await;
    let err = b.acquire_lease(&absent, secs(5), None).await.unwrap_err();
    assert!(
        matches!(err, LeaserError::Lease(ref e) if e.is_aborted()),
        "{err}"
    );
}

/// Process A holds the lease and its store fails; B keeps trying. At every instant at most one
/// of them may act, A never acts after its token fired, and B's generation is newer, so a
/// late write by A is fenced off.
#[tokio::test]
async fn failover_between_two_processes_is_fenced() {
    let clock = FakeClock::new();
    let (_, procs) = processes(&clock, 2);
    let a = leaser(&procs[0].1, &clock, "a");
    let b = leaser(&procs[1].1, &clock, "b");
    let key = PathKey::system(["singleton"]).unwrap();
    let fence = Fence::new();
    let mut acts: Vec<(&str, lease_core::Timestamp)> = Vec::new();

    let start = clock.now();
    let (a_guard, a_lost) = a.acquire_lease(&key, secs(30), None).await.unwrap();
    procs[0].0.set_broken(true);
    let mut b_held = None;
    let mut a_lost_at = None;
    for _ in 0..70 {
        tick(&clock, ms(500)).await;
        if a_lost.is_cancelled() && a_lost_at.is_none() {
            a_lost_at = Some(clock.now());
        }
        if b_held.is_none() {
            match b.acquire_lease(&key, secs(30), None).await {
                Ok(held) => b_held = Some(held),
                Err(LeaserError::Conflict { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        let a_live = !a_lost.is_cancelled();
        let b_live = b_held.as_ref().is_some_and(|(g, _)| !g.is_lost());
        assert!(!(a_live && b_live), "both act at {}", clock.now());
        if a_live {
            fence.admit(a_guard.generation()).unwrap();
            acts.push(("a", clock.now()));
        }
        if let Some((g, _)) = &b_held
            && b_live
        {
            fence.admit(g.generation()).unwrap();
            acts.push(("b", clock.now()));
        }
    }
    let a_lost_at = a_lost_at.expect("A noticed the loss");
    assert_eq!(a_lost_at, start.saturating_add(secs(25)));
    let (b_guard, _) = b_held.expect("B took over");
    assert!(b_guard.generation() > a_guard.generation());
    assert!(
        acts.iter()
            .filter(|(w, _)| *w == "a")
            .all(|(_, t)| *t < a_lost_at)
    );
    let b_first = acts.iter().find(|(w, _)| *w == "b").unwrap().1;
    assert_eq!(
        b_first,
        start.saturating_add(secs(30)),
        "B takes over at A's expiry"
    );
    // A late write from A, with its old generation, is refused.
    assert_eq!(
        fence.admit(a_guard.generation()),
        Err(StaleGeneration {
            presented: a_guard.generation(),
            highest: b_guard.generation()
        })
    );
}
