//! The manager's core behaviours end to end on the SQLite store (`lease-store-sqlite`), with the
//! fake clock injected into both: claims, extends, denials without a store call, group commit,
//! token checks, waiting for the exact expiry instant, revokes, pins, and a second process on
//! the same file.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{MODEL, NS, config, ms, req, secs, settle, until};
use lease_core::{CancellationToken, Facades as _, Token as _};
use lease_manager::Manager;
use lease_store_sqlite::SqliteStore;
use lease_testkit::{CountHandle, CountingStore, FakeClock};

struct Fixture {
    clock: FakeClock,
    manager: Manager,
    /// The calls that reached the SQLite store.
    counts: CountHandle,
    _dir: tempfile::TempDir,
}

fn open(path: &Path, clock: &FakeClock) -> SqliteStore {
    SqliteStore::builder(path)
        .clock(clock.as_clock())
        .boot_id("test-boot")
        .open()
        .expect("open the database")
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let store = CountingStore::new(open(&dir.path().join("leases.db"), &clock));
    let counts = store.handle();
    let manager = Manager::start(config(store, &clock)).unwrap();
    Fixture {
        clock,
        manager,
        counts,
        _dir: dir,
    }
}

#[tokio::test]
async fn claim_extend_deny_and_revoke() {
    let f = fixture();
    let claimer = f.manager.claimer(NS, MODEL).unwrap();
    let info = claimer.claim("a", req("h1", secs(10))).await.unwrap();
    assert_eq!(info.holder, "h1");
    assert_eq!(info.expiry, f.clock.now().saturating_add(secs(10)));
    f.clock.advance(secs(5));
    let extended = claimer.claim("a", req("h1", secs(10))).await.unwrap();
    assert_eq!(extended.generation, info.generation);
    assert_eq!(extended.expiry, f.clock.now().saturating_add(secs(10)));
    assert_eq!(f.counts.counts().applies, 2);

    // Denied from the view: no store call.
    let err = claimer.claim("a", req("h2", secs(10))).await.unwrap_err();
    assert!(err.is_claim_denied());
    assert_eq!(f.counts.counts().applies, 2);

    f.manager
        .revoker(NS, MODEL)
        .unwrap()
        .revoke("a", "h1")
        .await
        .unwrap();
    let next = claimer.claim("a", req("h2", secs(10))).await.unwrap();
    assert!(
        next.generation > info.generation,
        "fencing generations increase"
    );
    let report = f.manager.report();
    assert_eq!(
        (
            report.claims,
            report.extends,
            report.denials,
            report.revokes
        ),
        (2, 1, 1, 1)
    );
}

#[tokio::test]
async fn queued_claims_commit_as_one_transaction() {
    let f = fixture();
    let claimer = f.manager.claimer(NS, MODEL).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let claimer = Arc::clone(&claimer);
            tokio::spawn(async move { claimer.claim(&format!("l{i}"), req("h1", secs(10))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(f.counts.counts().applies, 1);
    assert_eq!(f.counts.counts().ops, 8);
    let leases = f.manager.reader(NS, MODEL).unwrap().leases().await.unwrap();
    assert_eq!(leases.len(), 8);
}

#[tokio::test]
async fn token_checks_from_memory_then_from_the_store() {
    let f = fixture();
    let token = f.manager.token(NS, MODEL, "a", "h1").unwrap();
    let info = f
        .manager
        .claimer(NS, MODEL)
        .unwrap()
        .claim("a", req("h1", secs(10)))
        .await
        .unwrap();
    let reads = f.counts.counts().leases;
    assert_eq!(token.check().await.unwrap(), info.generation);
    assert_eq!(token.check_now(), Some(info.generation));
    assert_eq!(f.counts.counts().leases, reads, "answered from memory");
    assert_eq!(token.check_store().await.unwrap(), info.generation);
    assert_eq!(f.counts.counts().leases, reads + 1);
    f.clock.advance(secs(10));
    assert_eq!(token.check_now(), None);
    assert!(token.check().await.unwrap_err().is_not_held());
}

#[tokio::test]
async fn waiters_wake_at_the_exact_expiry_instant() {
    let f = fixture();
    let claimer = f.manager.claimer(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    let expiry = f.clock.now().saturating_add(secs(10));
    let w = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || {
        f.manager.report().waiters == 1
    })
    .await;
    f.clock.wait_for_sleepers(1).await;
    f.clock.set(expiry.saturating_sub(Duration::from_nanos(1)));
    settle().await;
    assert!(!waiter.is_finished());
    f.clock.wait_for_sleepers(1).await;
    f.clock.set(expiry);
    waiter.await.unwrap().unwrap();
    // Now free for someone else.
    claimer.claim("a", req("h2", secs(10))).await.unwrap();
}

#[tokio::test]
async fn pins_keep_waiters_until_unpinned() {
    let f = fixture();
    let claimer = f.manager.claimer(NS, MODEL).unwrap();
    let pinner = f.manager.pinner(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    pinner.pin("a", "e1").await.unwrap();
    let w = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || {
        f.manager.report().waiters == 1
    })
    .await;
    f.clock.wait_for_sleepers(1).await;
    f.clock.advance(secs(30));
    settle().await;
    assert!(!waiter.is_finished());
    assert_eq!(
        pinner.pinned().await.unwrap().get("a"),
        Some(&vec!["e1".to_owned()])
    );
    pinner.unpin("a", "e1").await.unwrap();
    waiter.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_second_process_on_the_same_file_is_noticed_within_the_refresh_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let clock = FakeClock::new();
    let make = |clock: &FakeClock| {
        let config = config(open(&path, clock), clock)
            .with_refresh_interval(ms(100))
            .with_max_sleep(secs(60));
        Manager::start(config).unwrap()
    };
    let a = make(&clock);
    let b = make(&clock);
    let info = a
        .claimer(NS, MODEL)
        .unwrap()
        .claim("a", req("proc-a", secs(60)))
        .await
        .unwrap();
    // B has never seen the lease: its claim goes to the store and is denied there.
    let b_claimer = b.claimer(NS, MODEL).unwrap();
    assert!(
        b_claimer
            .claim("a", req("proc-b", secs(60)))
            .await
            .unwrap_err()
            .is_claim_denied()
    );
    let w = Arc::clone(&b_claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || b.report().waiters == 1).await;
    a.revoker(NS, MODEL)
        .unwrap()
        .revoke("a", "proc-a")
        .await
        .unwrap();
    // Both managers sleep on the fake clock; one refresh interval later B has noticed.
    clock.wait_for_sleepers(2).await;
    clock.advance(ms(100));
    waiter.await.unwrap().unwrap();
    let taken = b_claimer.claim("a", req("proc-b", secs(60))).await.unwrap();
    assert!(taken.generation > info.generation);
    a.stop().await;
    b.stop().await;
    assert!(a.worker_finished() && b.worker_finished());
}
