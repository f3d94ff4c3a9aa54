//! The store's change notifier: another connection's commit (or a hand edit) bumps it, and
//! only once that commit is visible to [`Store::poll_changes`]; the store's own commits do not
//! bump it; it ends with the store; and a notifier that cannot start is `None`, not a failure.
//! Real time is only ever a bound against hanging.

use std::path::Path;
use std::time::Duration;

use lease_core::{Key, Request, Store};
use lease_store_sqlite::SqliteStore;
use lease_testkit::FakeClock;
use tokio::sync::watch;
use tokio::time::timeout;

/// Far longer than a notification takes (milliseconds); only a broken notifier reaches it.
const HANG: Duration = Duration::from_secs(5);

fn key(lease: &str) -> Key {
    Key::new("ns", "model", lease)
}

fn req(holder: &str) -> Request {
    Request::new(holder, Duration::from_secs(60))
}

fn open(path: &Path, clock: &FakeClock) -> SqliteStore {
    SqliteStore::builder(path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .open()
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// Waits for the next bump of `rx`, failing the test if none comes in time.
async fn bumped(rx: &mut watch::Receiver<u64>, what: &str) {
    match timeout(HANG, rx.changed()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("the notifier closed while waiting for {what}"),
        Err(_) => panic!("no notification within {HANG:?} of {what}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connections_commits_wake_the_notifier_once_visible() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let clock = FakeClock::new();
    let mut a = open(&path, &clock);
    let b = open(&path, &clock);
    // B's open may have written (its boot): start from a clean poll.
    a.poll_changes().await.unwrap();
    let mut rx = a
        .change_notifier()
        .expect("a notifier on a local file system");
    let mut again = a.change_notifier().expect("the same notifier again");
    assert_eq!(*rx.borrow_and_update(), *again.borrow_and_update());

    // B commits on a thread of its own, as another process would, while A waits for the
    // notification and polls the moment it comes. Many rounds, so a notification that came
    // before its commit was visible (as the first write to the -wal does) would show.
    const ROUNDS: u64 = 30;
    let (go, orders) = std::sync::mpsc::channel::<u64>();
    let writer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut b = b;
        for round in orders {
            rt.block_on(async {
                if round % 2 == 0 {
                    b.claim_lease(&key("a"), &req("b")).await.unwrap();
                } else {
                    b.revoke_lease(&key("a"), "b").await.unwrap();
                }
            });
        }
    });
    for round in 0..ROUNDS {
        rx.borrow_and_update();
        go.send(round).unwrap();
        bumped(&mut rx, "another connection's commit").await;
        assert!(
            a.poll_changes().await.unwrap(),
            "round {round}: the change is visible once notified"
        );
    }
    drop(go);
    writer.join().unwrap();
    // Every clone is the same counter, bumped once per visible commit.
    assert!(again.has_changed().unwrap());
    let seen = *again.borrow_and_update();
    assert!(seen >= ROUNDS, "one bump per commit at least: {seen}");
}

/// Nothing bumps `rx` for a while: generous, a wrong bump comes within milliseconds.
async fn quiet(rx: &mut watch::Receiver<u64>, what: &str) {
    assert!(
        timeout(Duration::from_millis(300), rx.changed())
            .await
            .is_err(),
        "{what} was reported as a change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_commits_wake_no_one_and_others_still_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let clock = FakeClock::new();
    let mut a = open(&path, &clock);
    let mut b = open(&path, &clock);
    a.poll_changes().await.unwrap();
    let mut rx = a.change_notifier().unwrap();
    rx.borrow_and_update();

    // Claims, renewals, batches and revokes of the store itself, many commits in a row.
    for i in 0..20 {
        let k = key(&format!("mine{i}"));
        a.claim_lease(&k, &req("a")).await.unwrap();
        a.extend_lease(&k, &req("a")).await.unwrap();
        let ops = vec![
            lease_core::Op::Extend {
                key: k.clone(),
                request: req("a"),
            };
            3
        ];
        assert!(a.apply(ops).await.iter().all(Result::is_ok));
    }
    for i in 0..20 {
        a.revoke_lease(&key(&format!("mine{i}")), "a")
            .await
            .unwrap();
    }
    quiet(&mut rx, "the store's own commit").await;
    assert!(!a.poll_changes().await.unwrap());

    // Another connection's commit, between commits of ours.
    a.claim_lease(&key("mine"), &req("a")).await.unwrap();
    b.claim_lease(&key("theirs"), &req("b")).await.unwrap();
    a.extend_lease(&key("mine"), &req("a")).await.unwrap();
    bumped(&mut rx, "another connection's commit").await;
    assert!(a.poll_changes().await.unwrap());
    rx.borrow_and_update();

    // A hand edit takes no write-counter number: reported alone, and when followed at once by
    // a commit of ours that the notifier may judge it with.
    let raw = rusqlite::Connection::open(&path).unwrap();
    for round in 0..10 {
        raw.execute(
            // Earlier, not later: a later expiry may pass the row's bound (its `CHECK`).
            "UPDATE lease SET expiry = expiry - 1 WHERE name = 'theirs'",
            [],
        )
        .unwrap();
        if round % 2 == 1 {
            a.extend_lease(&key("mine"), &req("a")).await.unwrap();
        }
        bumped(&mut rx, &format!("a hand edit (round {round})")).await;
        assert!(a.poll_changes().await.unwrap(), "round {round}");
        rx.borrow_and_update();
    }
}

/// A commit another connection made before the store opened is not news to it, even when that
/// connection is of the same boot (whose registration in the file is older than the commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_made_before_the_store_opened_wake_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let clock = FakeClock::new();
    let mut other = open(&path, &clock);
    for i in 0..3 {
        other
            .claim_lease(&key(&format!("theirs{i}")), &req("other"))
            .await
            .unwrap();
    }
    let mut a = open(&path, &clock);
    let mut rx = a.change_notifier().unwrap();
    rx.borrow_and_update();
    a.claim_lease(&key("mine"), &req("a")).await.unwrap();
    quiet(&mut rx, "a commit made before the store opened").await;
    assert!(!a.poll_changes().await.unwrap());

    other
        .claim_lease(&key("theirs-later"), &req("other"))
        .await
        .unwrap();
    bumped(
        &mut rx,
        "another connection's commit after the store opened",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_polls_wake_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let clock = FakeClock::new();
    let mut a = open(&path, &clock);
    let mut b = open(&path, &clock);
    b.claim_lease(&key("a"), &req("b")).await.unwrap();
    a.poll_changes().await.unwrap();
    let mut rx = a.change_notifier().unwrap();
    rx.borrow_and_update();
    for _ in 0..50 {
        assert!(!a.poll_changes().await.unwrap());
        assert_eq!(a.leases(&[key("a")]).await.unwrap().len(), 1);
        assert_eq!(b.leases(&[]).await.unwrap().len(), 1);
        b.pinned().await.unwrap();
    }
    // Reads write nothing, so nothing is reported, however long one waits.
    assert!(
        timeout(Duration::from_millis(300), rx.changed())
            .await
            .is_err(),
        "a read or a poll was reported as a change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifier_ends_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let clock = FakeClock::new();
    let mut a = open(&path, &clock);
    let mut rx = a.change_notifier().unwrap();
    a.claim_lease(&key("a"), &req("a")).await.unwrap();
    drop(a);
    // At most the bump for the claim, then the channel closes: the thread has ended.
    let closed = timeout(HANG, async { while rx.changed().await.is_ok() {} }).await;
    assert!(closed.is_ok(), "the notifier outlived its store");
}

#[tokio::test]
async fn a_notifier_that_cannot_start_is_none_and_the_store_refuses_to_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let clock = FakeClock::new();
    let mut a = open(&path, &clock);
    a.claim_lease(&key("a"), &req("a")).await.unwrap();
    // The directory disappears under the open store: nothing left to watch.
    std::fs::remove_dir_all(dir.path()).unwrap();
    assert!(a.change_notifier().is_none());
    assert!(a.change_notifier().is_none(), "asking again is harmless");
    // Its open connection still reads the unlinked file, which nobody else sees: the store
    // says so rather than answer from it (`tests/replaced_file.rs`).
    let e = a.leases(&[key("a")]).await.unwrap_err();
    assert!(e.to_string().contains("was deleted"), "{e}");
}
