//! Work whose caller has gone, and retried extends: the worker never acts on a request whose
//! caller has gone (a renewal retried after its lease was released would re-claim it for
//! nobody; a revoke retried after its holder claimed again would end a holding someone relies
//! on), and a retried extend never turns into a claim.
//!
//! Store calls time out through the shared `ScriptStore` (the op does not reach the backing
//! store); time is the fake clock. The races between a release and a pending retry run on a
//! multi-thread runtime, many iterations.

mod common;

use std::time::Duration;

use common::{Fail, MODEL, NS, ScriptStore, req, secs, settle, start, until};
use lease_core::{Facades as _, Key, Leaser as _, PathKey, Store as _, Token as _};
use lease_manager::{LeaserConfig, ManagerLeaser, ResourceKey, ResourceLockError, ResourceLocks};
use lease_testkit::FakeClock;

const ITERATIONS: usize = 25;

fn key(lease: &str) -> Key {
    Key::new(NS, MODEL, lease)
}

/// The lease as the backing store has it, read by another process.
async fn stored(store: &ScriptStore, lease: &str) -> Option<lease_core::Info> {
    let k = key(lease);
    store
        .sibling()
        .await
        .leases(std::slice::from_ref(&k))
        .await
        .unwrap()
        .remove(&k)
}

/// The store calls logged since `from` that are claims (in an `apply` batch).
fn claims_in(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|l| l.starts_with("apply") && l.contains("claim "))
        .cloned()
        .collect()
}

async fn leaser_release_case() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let leaser = ManagerLeaser::new(
        &manager,
        clock.as_clock(),
        LeaserConfig::new(NS, MODEL, "runner-a"),
    )
    .unwrap();
    let path = PathKey::system(["job"]).unwrap();
    let lease = path.to_string();
    let (guard, lost) = leaser.acquire_lease(&path, secs(9), None).await.unwrap();
    // The first renewal (at 3 s) times out and waits for its retry.
    store.fail_ops([Some(Fail::Timeout)]);
    clock.advance(secs(3));
    until("the renewal is in retry", || manager.report().retries == 1).await;
    guard.release().await.unwrap();
    assert!(lost.is_cancelled());
    assert!(stored(&store, &lease).await.is_none(), "released");
    let after_release = store.log().len();
    // Past the retry's backoff: the worker either drops it or (the defect) sends it.
    clock.advance(secs(1));
    until("the retry is handled", || {
        manager.report().abandoned == 1 || store.log().len() > after_release
    })
    .await;
    settle().await;
    let log = store.log();
    assert_eq!(
        claims_in(&log[after_release..]),
        Vec::<String>::new(),
        "the store saw a claim after the release"
    );
    assert!(
        stored(&store, &lease).await.is_none(),
        "the lease stays free"
    );
    assert_eq!(manager.report().abandoned, 1);
    // Someone else takes it at once.
    let other = manager.claimer(NS, MODEL).unwrap();
    other.claim(&lease, req("other", secs(9))).await.unwrap();
    manager.stop().await;
}

/// A leaser's renewal in retry when the guard is released: the retry is dropped, so the lease
/// is not re-claimed under a generation nobody uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_leasers_renewal_in_retry_does_not_reclaim_the_lease() {
    for _ in 0..ITERATIONS {
        leaser_release_case().await;
    }
}

async fn resource_lock_case(renewer_stays: bool) {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let locks = ResourceLocks::new(&manager, NS, MODEL).unwrap();
    let resource = ResourceKey::new("apps", "Deployment", "prod", "web");
    let locked = locks.acquire(&resource, "txn-1", secs(30)).await.unwrap();
    let lease = locked.lease_name.clone();
    store.fail_ops([Some(Fail::Timeout)]);
    let renew = tokio::spawn({
        let locks = locks.clone();
        let lease = lease.clone();
        async move { locks.renew(&lease, "txn-1", secs(30)).await }
    });
    until("the renewal is in retry", || manager.report().retries == 1).await;
    let renew = if renewer_stays {
        Some(renew)
    } else {
        // The renewing caller gives up (a timeout around the call, say).
        renew.abort();
        assert!(renew.await.unwrap_err().is_cancelled());
        None
    };
    locks.release(&lease, "txn-1").await.unwrap();
    assert!(stored(&store, &lease).await.is_none(), "released");
    let after_release = store.log().len();
    clock.advance(secs(1));
    until("the retry is handled", || {
        manager.report().abandoned == 1 || store.log().len() > after_release
    })
    .await;
    settle().await;
    let log = store.log();
    assert_eq!(
        claims_in(&log[after_release..]),
        Vec::<String>::new(),
        "the store saw a claim after the release"
    );
    assert!(
        stored(&store, &lease).await.is_none(),
        "the release was undone"
    );
    if let Some(renew) = renew {
        let err = renew.await.unwrap().unwrap_err();
        assert!(
            matches!(err, ResourceLockError::LockExpired { .. }),
            "{err:?}"
        );
    }
    // Another transaction locks the resource at once.
    let other = locks.acquire(&resource, "txn-2", secs(30)).await.unwrap();
    assert!(other.generation > locked.generation);
    manager.stop().await;
}

/// `ResourceLocks::release` while a renewal of the same lock waits for its retry: the release
/// is not undone, whether the renewing caller is still waiting or has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_lock_release_is_not_undone_by_a_renewal_in_retry() {
    for i in 0..ITERATIONS {
        resource_lock_case(i % 2 == 0).await;
    }
}

/// How the holding an extend is retried for goes away.
#[derive(Debug, Clone, Copy)]
enum Gone {
    /// Revoked through this manager.
    RevokedHere,
    /// Revoked by another process.
    RevokedElsewhere,
    /// Revoked and claimed by another holder, by another process.
    TakenByAnother,
}

async fn retried_extend_case(gone: Gone) {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let first = claimer.claim("a", req("h1", secs(10))).await.unwrap();
    // The extend times out and waits for its retry.
    store.fail_ops([Some(Fail::Timeout)]);
    let extend = tokio::spawn({
        let claimer = manager.claimer(NS, MODEL).unwrap();
        async move { claimer.claim("a", req("h1", secs(10))).await }
    });
    until("the extend is in retry", || manager.report().retries == 1).await;
    match gone {
        Gone::RevokedHere => manager
            .revoker(NS, MODEL)
            .unwrap()
            .revoke("a", "h1")
            .await
            .unwrap(),
        Gone::RevokedElsewhere => store
            .sibling()
            .await
            .revoke_lease(&key("a"), "h1")
            .await
            .unwrap(),
        Gone::TakenByAnother => {
            let mut other = store.sibling().await;
            other.revoke_lease(&key("a"), "h1").await.unwrap();
            other
                .claim_lease(&key("a"), &req("h2", secs(600)))
                .await
                .unwrap();
        }
    }
    let before = store.log().len();
    // Every retry the policy allows, and more.
    for _ in 0..20 {
        clock.advance(secs(5));
        settle().await;
        if extend.is_finished() {
            break;
        }
    }
    let err = extend.await.unwrap().unwrap_err();
    assert!(err.is_claim_denied(), "{gone:?}: {err}");
    let log = store.log();
    assert_eq!(
        claims_in(&log[before..]),
        Vec::<String>::new(),
        "{gone:?}: the retried extend became a claim"
    );
    match gone {
        Gone::TakenByAnother => {
            assert_eq!(stored(&store, "a").await.unwrap().holder, "h2");
        }
        _ => assert!(stored(&store, "a").await.is_none(), "{gone:?}"),
    }
    // A fresh claim (a caller that asks again) is a claim, with a new generation.
    if !matches!(gone, Gone::TakenByAnother) {
        let again = claimer.claim("a", req("h1", secs(10))).await.unwrap();
        assert!(again.generation > first.generation);
    }
    manager.stop().await;
}

/// An extend retried after its lease was revoked (here or elsewhere) or taken by another
/// holder fails (`ClaimDenied`: the holder does not hold it) instead of claiming it anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_extend_never_becomes_a_claim() {
    for i in 0..ITERATIONS {
        let gone = [
            Gone::RevokedHere,
            Gone::RevokedElsewhere,
            Gone::TakenByAnother,
        ][i % 3];
        retried_extend_case(gone).await;
    }
}

async fn revoke_retry_case() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(30))).await.unwrap();
    store.fail_ops([Some(Fail::Timeout)]);
    let revoke = tokio::spawn({
        let revoker = manager.revoker(NS, MODEL).unwrap();
        async move { revoker.revoke("a", "h1").await }
    });
    until("the revoke is in retry", || manager.report().retries == 1).await;
    // Its caller gives up, and the holder claims again: it relies on this holding.
    revoke.abort();
    assert!(revoke.await.unwrap_err().is_cancelled());
    let info = claimer.claim("a", req("h1", secs(30))).await.unwrap();
    let token = manager.token(NS, MODEL, "a", "h1").unwrap();
    assert_eq!(token.check().await.unwrap(), info.generation);
    let before = store.log().len();
    clock.advance(secs(1));
    until("the retry is handled", || {
        manager.report().abandoned == 1 || store.log().len() > before
    })
    .await;
    settle().await;
    let log = store.log();
    assert!(
        !log[before..].iter().any(|l| l.contains("revoke")),
        "a revoke nobody waits for ended the new holding: {log:?}"
    );
    assert_eq!(stored(&store, "a").await.unwrap().holder, "h1");
    assert_eq!(token.check_now(), Some(info.generation));
    assert_eq!(manager.report().abandoned, 1);
    manager.stop().await;
}

/// A revoke in retry whose caller has gone is dropped: it does not end a later holding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_in_retry_whose_caller_has_gone_is_dropped() {
    for _ in 0..ITERATIONS {
        revoke_retry_case().await;
    }
}

/// A claim queued behind a busy store whose caller has gone is never sent.
#[tokio::test]
async fn a_queued_claim_whose_caller_has_gone_is_not_sent() {
    let clock = FakeClock::new();
    let store = ScriptStore::gated(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    // The first claim holds the store; the second waits in the queue behind it.
    let first = tokio::spawn({
        let claimer = manager.claimer(NS, MODEL).unwrap();
        async move { claimer.claim("a", req("h1", secs(10))).await }
    });
    until("the first apply", || store.applies() == 1).await;
    let second = tokio::spawn(async move { claimer.claim("b", req("h2", secs(10))).await });
    until("the second is queued", || manager.report().outstanding == 2).await;
    second.abort();
    assert!(second.await.unwrap_err().is_cancelled());
    store.release(10);
    first.await.unwrap().unwrap();
    settle().await;
    let log = store.log();
    assert!(
        !log.iter().any(|l| l.contains(" b ")),
        "a claim whose caller had gone was sent: {log:?}"
    );
    assert!(stored(&store, "b").await.is_none());
    assert_eq!(manager.report().abandoned, 1);
    manager.stop().await;
}

/// Extreme durations through the facades never panic the worker (timestamps saturate).
#[tokio::test]
async fn duration_max_through_the_facades_does_not_panic() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let info = claimer.claim("a", req("h1", Duration::MAX)).await.unwrap();
    let token = manager.token(NS, MODEL, "a", "h1").unwrap();
    assert_eq!(token.check().await.unwrap(), info.generation);
    assert_eq!(token.check_now(), Some(info.generation));
    // An extend, and a claim that times out and is retried, with the same duration.
    assert_eq!(
        claimer
            .claim("a", req("h1", Duration::MAX))
            .await
            .unwrap()
            .generation,
        info.generation
    );
    store.fail_ops([Some(Fail::Timeout)]);
    let b = tokio::spawn({
        let claimer = manager.claimer(NS, MODEL).unwrap();
        async move { claimer.claim("b", req("h2", Duration::MAX)).await }
    });
    until("the claim is in retry", || manager.report().retries == 1).await;
    clock.advance(secs(1));
    b.await.unwrap().unwrap();
    assert!(
        claimer
            .claim("a", req("h2", Duration::MAX))
            .await
            .unwrap_err()
            .is_claim_denied()
    );
    // A long time later both are still held, and the worker is still up.
    clock.advance(Duration::from_secs(100 * 365 * 24 * 3600));
    settle().await;
    assert_eq!(token.check().await.unwrap(), info.generation);
    assert_eq!(
        manager
            .token(NS, MODEL, "b", "h2")
            .unwrap()
            .check()
            .await
            .unwrap(),
        stored(&store, "b").await.unwrap().generation
    );
    let locks = ResourceLocks::new(&manager, NS, MODEL).unwrap();
    let locked = locks
        .acquire(
            &ResourceKey::new("", "Pod", "ns", "p"),
            "txn",
            Duration::MAX,
        )
        .await
        .unwrap();
    locks
        .renew(&locked.lease_name, "txn", Duration::MAX)
        .await
        .unwrap();
    let leaser = ManagerLeaser::new(
        &manager,
        clock.as_clock(),
        LeaserConfig::new(NS, MODEL, "runner"),
    )
    .unwrap();
    let (guard, lost) = leaser
        .acquire_lease(&PathKey::system(["forever"]).unwrap(), Duration::MAX, None)
        .await
        .unwrap();
    clock.advance(secs(3600));
    settle().await;
    assert!(!lost.is_cancelled());
    guard.release().await.unwrap();
    assert!(!manager.worker_finished());
    manager.stop().await;
}
