//! The fake manager and facades: claims, tokens, revokes, pins and reads over the in-memory
//! store, and `wait_until_expired` driven by the fake clock.

use std::time::Duration;

use lease_core::{CancellationToken, Claimer, Facades, Key, Request, Store};
use lease_testkit::{FakeClock, FakeManager};

const NS: &str = "app";
const MODEL: &str = "model-1";

fn req(holder: &str, secs: u64) -> Request {
    Request::new(holder, Duration::from_secs(secs))
}

#[tokio::test]
async fn claim_by_the_holder_extends_and_keeps_the_generation() {
    let clock = FakeClock::new();
    let manager = FakeManager::new(clock.clone());
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let first = claimer.claim("db", req("u0", 10)).await.unwrap();
    clock.advance(Duration::from_secs(5));
    let second = claimer.claim("db", req("u0", 10)).await.unwrap();
    assert_eq!(second.generation, first.generation);
    assert_eq!(
        second.expiry,
        clock.now().saturating_add(Duration::from_secs(10))
    );
    assert!(
        claimer
            .claim("db", req("u1", 10))
            .await
            .unwrap_err()
            .is_claim_denied()
    );
}

#[tokio::test]
async fn tokens_follow_the_lease_and_carry_its_generation() {
    let clock = FakeClock::new();
    let manager = FakeManager::new(clock.clone());
    let checker = manager.checker(NS, MODEL).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let token = checker.token("db", "u0");
    assert!(token.check().await.unwrap_err().is_not_held());
    let info = claimer.claim("db", req("u0", 10)).await.unwrap();
    assert_eq!(token.check().await.unwrap(), info.generation);
    clock.advance(Duration::from_secs(10));
    assert!(token.check().await.unwrap_err().is_not_held());
    let info2 = claimer.claim("db", req("u0", 10)).await.unwrap();
    assert!(info2.generation > info.generation);
    assert_eq!(token.check().await.unwrap(), info2.generation);
    let bad = checker.token("db", "bad holder");
    assert!(bad.check().await.unwrap_err().is_validation());
}

#[tokio::test]
async fn wait_until_expired_wakes_exactly_at_expiry_on_the_fake_clock() {
    let clock = FakeClock::new();
    let manager = FakeManager::new(clock.clone());
    let claimer = manager.fake_claimer(NS, MODEL).unwrap();
    claimer.claim("db", req("u0", 10)).await.unwrap();
    let waiter = {
        let claimer = claimer.clone();
        tokio::spawn(async move {
            claimer
                .wait_until_expired("db", &CancellationToken::new())
                .await
        })
    };
    clock.wait_for_sleepers(1).await;
    clock.advance(Duration::from_secs(10) - Duration::from_nanos(1));
    // Still asleep just before expiry.
    clock.wait_for_sleepers(1).await;
    assert!(!waiter.is_finished());
    clock.advance(Duration::from_nanos(1));
    waiter.await.unwrap().unwrap();
    assert_eq!(clock.sleepers(), 0);
}

#[tokio::test]
async fn wait_until_expired_follows_extends_and_wakes_on_revoke() {
    let clock = FakeClock::new();
    let manager = FakeManager::new(clock.clone());
    let claimer = manager.fake_claimer(NS, MODEL).unwrap();
    let revoker = manager.revoker(NS, MODEL).unwrap();
    claimer.claim("db", req("u0", 10)).await.unwrap();
    let waiter = {
        let claimer = claimer.clone();
        tokio::spawn(async move {
            claimer
                .wait_until_expired("db", &CancellationToken::new())
                .await
        })
    };
    clock.wait_for_sleepers(1).await;
    clock.advance(Duration::from_secs(5));
    claimer.claim("db", req("u0", 60)).await.unwrap(); // extends to +65 s from the start
    // The waiter re-reads and sleeps until the new expiry.
    clock.wait_for_sleepers(1).await;
    clock.advance(Duration::from_secs(10));
    clock.wait_for_sleepers(1).await;
    assert!(!waiter.is_finished());
    revoker.revoke("db", "u0").await.unwrap();
    waiter.await.unwrap().unwrap();
    assert_eq!(clock.sleepers(), 0);
}

#[tokio::test]
async fn wait_until_expired_returns_at_once_for_an_absent_lease_and_honours_cancel() {
    let clock = FakeClock::new();
    let manager = FakeManager::new(clock.clone());
    let claimer = manager.fake_claimer(NS, MODEL).unwrap();
    claimer
        .wait_until_expired("free", &CancellationToken::new())
        .await
        .unwrap();

    claimer.claim("db", req("u0", 10)).await.unwrap();
    let cancel = CancellationToken::new();
    let waiter = {
        let claimer = claimer.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { claimer.wait_until_expired("db", &cancel).await })
    };
    clock.wait_for_sleepers(1).await;
    cancel.cancel();
    assert!(waiter.await.unwrap().unwrap_err().is_wait_cancelled());
    // The cancelled waiter's timer is gone.
    assert_eq!(clock.sleepers(), 0);
}

#[tokio::test]
async fn a_pinned_lease_keeps_waiters_waiting_until_unpinned() {
    let clock = FakeClock::new();
    let manager = FakeManager::new(clock.clone());
    let claimer = manager.fake_claimer(NS, MODEL).unwrap();
    let pinner = manager.pinner(NS, MODEL).unwrap();
    let reader = manager.reader(NS, MODEL).unwrap();
    claimer.claim("db", req("u0", 10)).await.unwrap();
    pinner.pin("db", "machine-1").await.unwrap();
    let waiter = {
        let claimer = claimer.clone();
        tokio::spawn(async move {
            claimer
                .wait_until_expired("db", &CancellationToken::new())
                .await
        })
    };
    // Waiting on a pinned lease sets no timer.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(clock.sleepers(), 0);
    clock.advance(Duration::from_secs(100));
    assert_eq!(reader.leases().await.unwrap()["db"], "u0");
    assert!(!waiter.is_finished());
    assert_eq!(
        pinner.pinned().await.unwrap()["db"],
        vec!["machine-1".to_owned()]
    );
    pinner.unpin("db", "machine-1").await.unwrap();
    waiter.await.unwrap().unwrap();
    assert!(reader.leases().await.unwrap().is_empty());
}

#[tokio::test]
async fn facades_are_scoped_to_their_namespace_and_model() {
    let manager = FakeManager::new(FakeClock::new());
    manager
        .claimer(NS, MODEL)
        .unwrap()
        .claim("db", req("u0", 10))
        .await
        .unwrap();
    manager
        .claimer(NS, "model-2")
        .unwrap()
        .claim("db", req("u9", 10))
        .await
        .unwrap();
    manager
        .pinner(NS, "model-2")
        .unwrap()
        .pin("db", "m")
        .await
        .unwrap();
    assert_eq!(
        manager
            .reader(NS, MODEL)
            .unwrap()
            .leases()
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        manager
            .pinner(NS, MODEL)
            .unwrap()
            .pinned()
            .await
            .unwrap()
            .is_empty()
    );
    // The revoker of another model does not see the lease.
    let err = manager
        .revoker(NS, "model-2")
        .unwrap()
        .revoke("db", "u0")
        .await
        .unwrap_err();
    assert!(err.is_not_held());
    // The test can look at the leases directly.
    let mut store = manager.store().await;
    let all = store.leases(&[]).await.unwrap();
    assert_eq!(all[&Key::new(NS, MODEL, "db")].holder, "u0");
    assert_eq!(all[&Key::new(NS, "model-2", "db")].holder, "u9");
}

#[tokio::test]
async fn bad_names_are_validation_errors() {
    let manager = FakeManager::new(FakeClock::new());
    assert!(
        manager
            .claimer("bad ns", MODEL)
            .err()
            .unwrap()
            .is_validation()
    );
    assert!(manager.reader(NS, "").err().unwrap().is_validation());
    let claimer = manager.claimer(NS, MODEL).unwrap();
    assert!(
        claimer
            .claim("a.b", req("u0", 10))
            .await
            .unwrap_err()
            .is_validation()
    );
    assert!(
        claimer
            .claim("db", req("u0", 0))
            .await
            .unwrap_err()
            .is_validation()
    );
    let pinner = manager.pinner(NS, MODEL).unwrap();
    assert!(
        pinner
            .pin("db", "bad$entity")
            .await
            .unwrap_err()
            .is_validation()
    );
}

#[tokio::test]
async fn a_stopped_manager_aborts() {
    let manager = FakeManager::new(FakeClock::new());
    let claimer = manager.claimer(NS, MODEL).unwrap();
    manager.stop();
    assert!(
        claimer
            .claim("db", req("u0", 10))
            .await
            .unwrap_err()
            .is_aborted()
    );
    assert!(manager.checker(NS, MODEL).err().unwrap().is_aborted());
}
