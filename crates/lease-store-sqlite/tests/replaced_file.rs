//! The database file deleted or replaced under an open store (`rm leases.db*`, a backup moved
//! over it). The store's connection still reads and writes the old file, which no other opener
//! sees: a new opener at the path starts a fresh file, with no leases and generations from 1.
//! So the store must give no answer from the old file, a "held" least of all: every call
//! after the change fails with [`SqliteStoreError::Replaced`], including batches that were
//! queued on the store's apply thread before it and ran after it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use lease_core::{Error, ErrorKind, Key, Op, Request, Store};
use lease_store_sqlite::{SqliteStore, SqliteStoreError};
use lease_testkit::FakeClock;
use rusqlite::{Connection, TransactionBehavior};
use tempfile::TempDir;

fn key(lease: &str) -> Key {
    Key::new("ns", "model", lease)
}

fn req(holder: &str) -> Request {
    Request::new(holder, Duration::from_secs(30))
}

fn open(path: &Path, clock: &FakeClock) -> SqliteStore {
    SqliteStore::builder(path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .busy_timeout(Duration::from_secs(5))
        .open()
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// `rm -r leases.db*`: the file, its log, its shared memory and its holder sessions.
fn delete_database(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(file));
    }
    let mut sessions = path.as_os_str().to_owned();
    sessions.push("-sessions");
    let _ = std::fs::remove_dir_all(PathBuf::from(sessions));
}

/// The error is the store's own report that the file is gone or replaced (`what`), naming it.
/// (In a batch, the first failed op carries the `SqliteStoreError` as its source, the others
/// its message.)
fn assert_replaced(e: &Error, path: &Path, what: &str) {
    assert_eq!(e.kind(), ErrorKind::Store, "{e}");
    if let Some(source) = std::error::Error::source(e) {
        let source = source
            .downcast_ref::<SqliteStoreError>()
            .unwrap_or_else(|| panic!("not a SqliteStoreError: {e:?}"));
        assert!(
            matches!(source, SqliteStoreError::Replaced { .. }),
            "{source:?}"
        );
    }
    let text = e.to_string();
    assert!(text.contains(what), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

/// Every kind of call, each of which must fail with the store's report.
async fn every_call_is_refused(store: &mut SqliteStore, path: &Path, what: &str) {
    assert_replaced(
        &store.claim_lease(&key("b"), &req("h")).await.unwrap_err(),
        path,
        what,
    );
    assert_replaced(
        &store.extend_lease(&key("a"), &req("h")).await.unwrap_err(),
        path,
        what,
    );
    assert_replaced(&store.leases(&[key("a")]).await.unwrap_err(), path, what);
    assert_replaced(&store.leases(&[]).await.unwrap_err(), path, what);
    let results = store
        .apply(vec![
            Op::Extend {
                key: key("a"),
                request: req("h"),
            },
            Op::Claim {
                key: key("c"),
                request: req("h"),
            },
        ])
        .await;
    assert_eq!(results.len(), 2);
    for result in &results {
        assert_replaced(result.as_ref().unwrap_err(), path, what);
    }
    assert_replaced(
        &store.revoke_lease(&key("a"), "h").await.unwrap_err(),
        path,
        what,
    );
}

#[tokio::test]
async fn a_store_whose_file_was_deleted_answers_nothing_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    store.claim_lease(&key("a"), &req("h")).await.unwrap();
    store.extend_lease(&key("a"), &req("h")).await.unwrap();
    delete_database(&path);
    every_call_is_refused(&mut store, &path, "was deleted").await;
    // Another opener starts afresh at the path: it could claim `a` at once, which is why the
    // old store must not say it holds it.
    let mut fresh = open(&path, &clock);
    let info = fresh.claim_lease(&key("a"), &req("other")).await.unwrap();
    assert_eq!(info.holder, "other");
    // The old store goes on refusing: the path names a file, not its file.
    every_call_is_refused(&mut store, &path, "was replaced by another file").await;
}

#[tokio::test]
async fn a_store_whose_file_was_replaced_answers_nothing_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let other: TempDir = tempfile::tempdir().unwrap();
    let backup = other.path().join("backup.db");
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    store.claim_lease(&key("a"), &req("h")).await.unwrap();
    {
        let mut restored = open(&backup, &clock);
        restored.claim_lease(&key("x"), &req("o")).await.unwrap();
    }
    // A backup moved over the file (its log was folded in when its store closed).
    std::fs::rename(&backup, &path).unwrap();
    every_call_is_refused(&mut store, &path, "was replaced by another file").await;
}

/// A batch started ahead (queued on the store's apply thread behind another connection's
/// write lock) when the file is deleted: it runs on the old file once the lock is released,
/// and its results are the store's report, not "claimed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_queued_when_the_file_is_deleted_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    store.claim_lease(&key("a"), &req("h")).await.unwrap();
    let (locked, is_locked) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let holder = {
        let path = path.clone();
        thread::spawn(move || {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            locked.send(()).unwrap();
            let _ = released.recv();
            let _ = tx.commit();
        })
    };
    is_locked.recv().unwrap();
    let queued = store
        .start_apply(vec![
            Op::Extend {
                key: key("a"),
                request: req("h"),
            },
            Op::Claim {
                key: key("b"),
                request: req("h"),
            },
        ])
        .expect("starting a batch");
    delete_database(&path);
    release.send(()).unwrap();
    let results = queued.await;
    holder.join().unwrap();
    assert_eq!(results.len(), 2);
    for result in &results {
        assert_replaced(result.as_ref().unwrap_err(), &path, "was deleted");
    }
}
