//! Concurrency on one process's holder session: stores of one process on one file share one
//! process-wide session (`SessionScope::Process`), used from several threads (and several
//! tasks of a multi-thread runtime) at once, while some of those stores are dropped and others
//! opened. Nothing may ever make that session look dead to another process while the process
//! lives: its leases are never taken early; and the process never has more than one session
//! on the file, however its first claims race.
//!
//! Another process is played by a store with a session of its own (`SessionScope::Store`):
//! `flock` conflicts between open file descriptions, so it sees this process's lock as
//! another process would. Leases are long and the fake clock never moves, so any successful
//! claim by it of a held lease is an early free.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use lease_core::{Error, Key, Request, Store};
use lease_store_sqlite::{SessionScope, SqliteStore};
use lease_testkit::FakeClock;

const TTL: Duration = Duration::from_secs(3600);

fn key(i: usize) -> Key {
    Key::new("ns", "model", format!("job-{i}"))
}

fn holder(i: usize) -> String {
    format!("thread-{i}")
}

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().canonicalize().unwrap().join("leases.db");
    (dir, db)
}

fn open(db: &Path, clock: &Arc<FakeClock>, scope: SessionScope) -> SqliteStore {
    SqliteStore::builder(db)
        .clock(clock.clone())
        .session_scope(scope)
        .busy_timeout(Duration::from_secs(60))
        .open()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn session_rows(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM session", [], |r| r.get(0))
        .unwrap()
}

/// Claims or extends lease `i` as `thread-i` (it is always this thread's).
async fn hold(store: &mut SqliteStore, i: usize) {
    let request = Request::new(holder(i), TTL);
    match store.extend_lease(&key(i), &request).await {
        Ok(_) => {}
        Err(Error::Invalid) => {
            store.claim_lease(&key(i), &request).await.unwrap();
        }
        Err(e) => panic!("extend by its holder: {e}"),
    }
}

/// Another process tries to take each of `keys`: every one must be held still.
async fn intrude(other: &mut SqliteStore, keys: &[usize]) {
    for &i in keys {
        match other
            .claim_lease(&key(i), &Request::new("intruder", TTL))
            .await
        {
            Err(Error::Held) => {}
            other => panic!("lease {i} of a live process was taken early: {other:?}"),
        }
    }
}

/// Two threads of one process make their first claims on a fresh file at the same instant:
/// one session results, and both leases are bound to it (alive to another process).
#[test]
fn racing_first_claims_of_two_threads_make_one_session() {
    for _ in 0..40 {
        let (_dir, db) = temp_db();
        let clock = Arc::new(FakeClock::new());
        // Opened (created) before the race, so the threads race on the first claims only.
        drop(open(&db, &clock, SessionScope::Unbound));
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (db, clock, barrier) = (db.clone(), clock.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut store = open(&db, &clock, SessionScope::Process);
                    barrier.wait();
                    runtime().block_on(hold(&mut store, i));
                    // One of the two threads drops its store at once; its lease stays bound
                    // to the process.
                    if i == 1 {
                        drop(store);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(session_rows(&db), 1, "one process, one session");
        let mut other = open(&db, &clock, SessionScope::Store);
        runtime().block_on(intrude(&mut other, &[0, 1]));
    }
}

/// Two threads keep their leases through stores they open, use and drop, over and over, while
/// another process keeps trying to take them.
#[test]
fn threads_opening_and_dropping_stores_never_free_the_process_leases() {
    let (_dir, db) = temp_db();
    let clock = Arc::new(FakeClock::new());
    let done = Arc::new(AtomicBool::new(false));
    let holders: Vec<_> = (0..2)
        .map(|i| {
            let (db, clock) = (db.clone(), clock.clone());
            std::thread::spawn(move || {
                let rt = runtime();
                let mut kept = open(&db, &clock, SessionScope::Process);
                for n in 0..150 {
                    // A store used once and dropped, and one kept across iterations, both
                    // holding through the one session.
                    let mut once = open(&db, &clock, SessionScope::Process);
                    rt.block_on(hold(&mut once, i));
                    drop(once);
                    rt.block_on(hold(&mut kept, i));
                    if n % 10 == 0 {
                        drop(std::mem::replace(
                            &mut kept,
                            open(&db, &clock, SessionScope::Process),
                        ));
                    }
                }
            })
        })
        .collect();
    let intruder = {
        let (db, clock, done) = (db.clone(), clock.clone(), done.clone());
        std::thread::spawn(move || {
            let rt = runtime();
            let mut other = open(&db, &clock, SessionScope::Store);
            let mut rounds = 0_u32;
            while !done.load(Ordering::Acquire) {
                // Only the leases already claimed: the first claims may not have happened.
                let held: Vec<usize> = rt
                    .block_on(other.leases(&[key(0), key(1)]))
                    .unwrap()
                    .keys()
                    .map(|k| usize::from(k.lease.ends_with('1')))
                    .collect();
                rt.block_on(intrude(&mut other, &held));
                rounds += 1;
            }
            rounds
        })
    };
    for t in holders {
        t.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let rounds = intruder.join().unwrap();
    assert!(rounds > 0);
    let mut other = open(&db, &clock, SessionScope::Store);
    runtime().block_on(intrude(&mut other, &[0, 1]));
    // This process's one session, and the intruders'.
    assert!(session_rows(&db) <= 3, "{} sessions", session_rows(&db));
}

/// The same on a multi-thread runtime: two tasks, each on a store of its own, claiming and
/// extending, one dropping its stores as it goes, while a third task plays another process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_a_multi_thread_runtime_share_the_session_safely() {
    let (_dir, db) = temp_db();
    let clock = Arc::new(FakeClock::new());
    let tasks: Vec<_> = (0..2)
        .map(|i| {
            let (db, clock) = (db.clone(), clock.clone());
            tokio::spawn(async move {
                let mut store = open(&db, &clock, SessionScope::Process);
                for _ in 0..200 {
                    hold(&mut store, i).await;
                    if i == 1 {
                        store = open(&db, &clock, SessionScope::Process);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut other = open(&db, &clock, SessionScope::Store);
    let mut finished = false;
    while !finished {
        finished = tasks.iter().all(tokio::task::JoinHandle::is_finished);
        let held: Vec<usize> = other
            .leases(&[key(0), key(1)])
            .await
            .unwrap()
            .keys()
            .map(|k| usize::from(k.lease.ends_with('1')))
            .collect();
        intrude(&mut other, &held).await;
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    intrude(&mut other, &[0, 1]).await;
}
