//! Opening a store beside busy writers: every step of opening that touches the file waits for
//! other connections' locks up to the busy timeout, like every operation, and never fails with
//! `Busy` at once.
//!
//! Writers (stores of their own, in threads, as other processes would be) claim, extend and
//! revoke as fast as they can while other threads open and drop stores over and over. With a
//! busy timeout far longer than the test, any `Busy` from opening is the defect: SQLite
//! returned `SQLITE_BUSY` without waiting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lease_core::{Key, Request, Store};
use lease_store_sqlite::{SessionScope, SqliteStore};
use lease_testkit::FakeClock;

/// Far longer than the test: a wait that ends in `Busy` cannot have waited.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().canonicalize().unwrap().join("leases.db");
    (dir, db)
}

fn builder(db: &Path, clock: &Arc<FakeClock>) -> lease_store_sqlite::SqliteStoreBuilder {
    SqliteStore::builder(db)
        .clock(clock.clone())
        .session_scope(SessionScope::Store)
        .busy_timeout(BUSY_TIMEOUT)
}

/// Claims, extends and revokes lease `i` until `stop`.
fn write_until(db: &Path, clock: &Arc<FakeClock>, i: usize, stop: &AtomicBool) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut store = builder(db, clock).open().unwrap();
    let key = Key::new("ns", "model", format!("job-{i}"));
    let request = Request::new(format!("writer-{i}"), Duration::from_secs(3600));
    let mut writes = 0;
    while !stop.load(Ordering::Acquire) {
        runtime.block_on(async {
            store.claim_lease(&key, &request).await.unwrap();
            store.extend_lease(&key, &request).await.unwrap();
            store.revoke_lease(&key, &request.holder).await.unwrap();
        });
        writes += 3;
    }
    writes
}

/// Opens and drops stores `n` times; returns the failures.
fn open_repeatedly(db: &Path, clock: &Arc<FakeClock>, n: usize, checkpoint: bool) -> Vec<String> {
    let mut failures = Vec::new();
    for _ in 0..n {
        match builder(db, clock).checkpoint_on_close(checkpoint).open() {
            Ok(store) => drop(store),
            Err(e) => failures.push(format!("{e} ({:?})", std::error::Error::source(&e))),
        }
    }
    failures
}

/// Switching a new file to WAL needs its write lock: opening it while another connection
/// holds that lock waits for it, as every other step does, instead of failing `Busy` at once
/// (SQLite calls no busy handler for that switch).
#[test]
fn a_new_file_whose_write_lock_is_held_is_opened_once_the_lock_is_free() {
    let (_dir, db) = temp_db();
    std::fs::File::create(&db).unwrap();
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let clock = Arc::new(FakeClock::new());
    let opener = {
        let (db, clock) = (db.clone(), clock.clone());
        std::thread::spawn(move || builder(&db, &clock).open().map(drop))
    };
    std::thread::sleep(Duration::from_millis(300));
    other.execute_batch("ROLLBACK").unwrap();
    if let Err(e) = opener.join().unwrap() {
        panic!("opening beside a writer failed instead of waiting: {e}");
    }
}

/// Several processes open a file that does not exist yet at the same instant: one creates it
/// and switches it to WAL while the others wait for it, then find it made.
#[test]
fn racing_first_opens_of_a_new_file_wait_for_each_other() {
    let clock = Arc::new(FakeClock::new());
    let mut failures = Vec::new();
    for _ in 0..30 {
        let (_dir, db) = temp_db();
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let (db, clock, barrier) = (db.clone(), clock.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    builder(&db, &clock)
                        .open()
                        .map(drop)
                        .map_err(|e| format!("{e} ({:?})", std::error::Error::source(&e)))
                })
            })
            .collect();
        failures.extend(openers.into_iter().filter_map(|t| t.join().unwrap().err()));
    }
    assert!(
        failures.is_empty(),
        "{} of 120 racing opens failed, e.g. {}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn opening_beside_busy_writers_waits_instead_of_failing_busy() {
    let (_dir, db) = temp_db();
    let clock = Arc::new(FakeClock::new());
    drop(builder(&db, &clock).open().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let (db, clock, stop) = (db.clone(), clock.clone(), stop.clone());
            std::thread::spawn(move || write_until(&db, &clock, i, &stop))
        })
        .collect();
    // Openers of both kinds: those that checkpoint when closing (the last one closing removes
    // the log, so the next opener creates it again) and those that keep the log.
    let openers: Vec<_> = [true, false]
        .into_iter()
        .map(|checkpoint| {
            let (db, clock) = (db.clone(), clock.clone());
            std::thread::spawn(move || open_repeatedly(&db, &clock, 150, checkpoint))
        })
        .collect();
    let failures: Vec<String> = openers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    stop.store(true, Ordering::Release);
    let writes: u64 = writers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(writes > 0, "the writers wrote nothing");
    assert!(
        failures.is_empty(),
        "{} of 300 opens failed beside {writes} writes, e.g. {}",
        failures.len(),
        failures[0]
    );
}
