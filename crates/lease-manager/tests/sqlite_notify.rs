//! The manager on SQLite's change notifier: another process's commit wakes a waiter at once,
//! with no refresh poll to do it (the fake clock never moves and the refresh interval is an
//! hour), and an idle manager whose notifier is live does not spin: its own commits do not wake
//! it, and nothing happens. Real time is only a
//! bound against hanging, or the length of a quiet spell.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{MODEL, NS, config, req, secs};
use lease_core::{CancellationToken, Facades as _, Key, Store};
use lease_manager::Manager;
use lease_store_sqlite::SqliteStore;
use lease_testkit::{CountHandle, CountingStore, FakeClock};
use tokio::time::timeout;

/// Far longer than a notification takes (milliseconds); only a broken notifier reaches it.
const HANG: Duration = Duration::from_secs(10);

fn open(path: &Path, clock: &FakeClock) -> SqliteStore {
    SqliteStore::builder(path)
        .clock(clock.as_clock())
        .boot_id("test-boot")
        .open()
        .expect("open the database")
}

/// What the counting store saw.
struct Seen(CountHandle);

impl Seen {
    fn polls(&self) -> u64 {
        self.0.counts().polls
    }
    fn changed_polls(&self) -> u64 {
        self.0.counts().changed_polls
    }
    fn reads(&self) -> u64 {
        self.0.counts().leases
    }
    fn bumps(&self) -> u64 {
        *self
            .0
            .notifier()
            .expect("the manager asked for the notifier")
            .borrow()
    }
}

/// Polls `cond` every millisecond of real time until it holds, failing after [`HANG`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let waited = timeout(HANG, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_managers_revoke_wakes_a_waiter_without_any_poll() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    // Frozen time and hourly refreshes: neither expiry nor polling can wake the waiter.
    let clock = FakeClock::new();
    let a = Manager::start(config(open(&path, &clock), &clock)).unwrap();
    let b = Manager::start(config(open(&path, &clock), &clock)).unwrap();
    let b_claimer = b.claimer(NS, MODEL).unwrap();
    let info = b_claimer.claim("a", req("proc-b", secs(60))).await.unwrap();

    let a_claimer = a.claimer(NS, MODEL).unwrap();
    let w = Arc::clone(&a_claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    eventually("the waiter is registered", || a.report().waiters == 1).await;
    // It read the store and found the lease held: it waits.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "the lease is still held");

    b.revoker(NS, MODEL)
        .unwrap()
        .revoke("a", "proc-b")
        .await
        .unwrap();
    timeout(HANG, waiter)
        .await
        .expect("the revoke in the other manager woke the waiter")
        .unwrap()
        .unwrap();
    let taken = a_claimer.claim("a", req("proc-a", secs(60))).await.unwrap();
    assert!(taken.generation > info.generation);
    a.stop().await;
    b.stop().await;
    assert!(a.worker_finished() && b.worker_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_manager_with_a_live_notifier_does_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let clock = FakeClock::new();
    // Another process holds "theirs" (for longer than the test moves the clock).
    let mut other = open(&path, &clock);
    let theirs = Key::new(NS, MODEL, "theirs");
    other
        .claim_lease(&theirs, &req("other", secs(100_000)))
        .await
        .unwrap();

    let store = CountingStore::new(open(&path, &clock));
    let seen = Seen(store.handle());
    let manager = Manager::start(config(store, &clock)).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    // Interest, so the manager acts on notifications: a waiter on "theirs" and a lease of its
    // own.
    let w = Arc::clone(&claimer);
    let waiter = tokio::spawn(async move {
        w.wait_until_expired("theirs", &CancellationToken::new())
            .await
    });
    eventually("the waiter is registered", || manager.report().waiters == 1).await;
    assert_eq!(
        seen.bumps(),
        0,
        "nothing was committed since the store opened"
    );

    let (polls, reads) = (seen.polls(), seen.reads());
    claimer
        .claim("mine", req("me", secs(100_000)))
        .await
        .unwrap();
    // Our own commit is not reported (the store recognises it): no poll, no read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.bumps(), 0, "our own commit was reported");
    assert_eq!(seen.polls(), polls, "a poll for our own commit");
    assert_eq!(seen.changed_polls(), 0);
    assert_eq!(
        seen.reads(),
        reads,
        "no one else changed anything: no re-read"
    );

    // Quiet: no writes, time stands still. Nothing at all may happen.
    let (polls, reads, bumps) = (seen.polls(), seen.reads(), seen.bumps());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        seen.polls(),
        polls,
        "polls without a cause: the worker spins"
    );
    assert_eq!(seen.reads(), reads);
    assert_eq!(
        seen.bumps(),
        bumps,
        "a poll or a read was reported as a change"
    );

    // One refresh interval passes: exactly one poll, which writes nothing and so wakes no one.
    clock.wait_for_sleepers(1).await;
    clock.advance(secs(3600));
    eventually("the refresh polls", || seen.polls() == polls + 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.polls(), polls + 1, "one poll per refresh interval");
    assert_eq!(seen.bumps(), bumps);
    assert!(!waiter.is_finished());

    manager.stop().await;
    assert!(manager.worker_finished());
}
