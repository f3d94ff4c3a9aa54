//! The manager's core behaviours end to end on the SQLite store (`lease-store-sqlite`), with the
//! fake clock injected into both: claims, extends, denials without a store call, group commit,
//! token checks, waiting for the exact expiry instant, revokes, pins, and a second process on
//! the same file.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{MODEL, NS, config, ms, req, secs, settle, until};
use lease_core::{
    CancellationToken, Info, Key, Manager as _, Op, Outcome, Request, Result, Store, Token as _,
};
use lease_manager::Manager;
use lease_store_sqlite::SqliteStore;
use lease_testkit::FakeClock;

/// An SQLite store that counts the calls that reach it.
struct Counted {
    inner: SqliteStore,
    applies: Arc<AtomicUsize>,
    ops: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
}

#[async_trait]
impl Store for Counted {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.inner.claim_lease(key, request).await
    }
    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.inner.extend_lease(key, request).await
    }
    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()> {
        self.inner.revoke_lease(key, holder).await
    }
    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.leases(keys).await
    }
    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>> {
        self.inner.lease_group(namespace, model).await
    }
    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.inner.pin_lease(key, entity).await
    }
    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.inner.unpin_lease(key, entity).await
    }
    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        self.inner.pinned().await
    }
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        self.ops.fetch_add(ops.len(), Ordering::SeqCst);
        self.inner.apply(ops).await
    }
    async fn poll_changes(&mut self) -> Result<bool> {
        self.inner.poll_changes().await
    }
    fn change_notifier(&mut self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.change_notifier()
    }
}

struct Fixture {
    clock: FakeClock,
    manager: Manager,
    applies: Arc<AtomicUsize>,
    ops: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
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
    let store = Counted {
        inner: open(&dir.path().join("leases.db"), &clock),
        applies: Arc::default(),
        ops: Arc::default(),
        reads: Arc::default(),
    };
    let (applies, ops, reads) = (
        Arc::clone(&store.applies),
        Arc::clone(&store.ops),
        Arc::clone(&store.reads),
    );
    let manager = Manager::start(config(store, &clock)).unwrap();
    Fixture {
        clock,
        manager,
        applies,
        ops,
        reads,
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
    assert_eq!(f.applies.load(Ordering::SeqCst), 2);

    // Denied from the view: no store call.
    let err = claimer.claim("a", req("h2", secs(10))).await.unwrap_err();
    assert!(err.is_claim_denied());
    assert_eq!(f.applies.load(Ordering::SeqCst), 2);

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
    assert_eq!(f.applies.load(Ordering::SeqCst), 1);
    assert_eq!(f.ops.load(Ordering::SeqCst), 8);
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
    let reads = f.reads.load(Ordering::SeqCst);
    assert_eq!(token.check().await.unwrap(), info.generation);
    assert_eq!(token.check_now(), Some(info.generation));
    assert_eq!(
        f.reads.load(Ordering::SeqCst),
        reads,
        "answered from memory"
    );
    assert_eq!(token.check_store().await.unwrap(), info.generation);
    assert_eq!(f.reads.load(Ordering::SeqCst), reads + 1);
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
