//! The store never blocks the async runtime: a call waiting for another connection's write lock
//! (up to the busy timeout) must not delay the other tasks of the runtime, in particular a
//! lease holder's own timers; and a call whose future is dropped mid-wait leaves the store
//! usable, with no transaction left open.
//!
//! These tests use real time on purpose: they measure how late the runtime runs a timer while
//! SQLite waits, not lease expiry (which they leave to the fake clock). The margins are wide
//! for a loaded machine: the lock is held for 1.5 s, a timer may be up to 500 ms late.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use lease_core::{Clock, ErrorKind, Key, Op, Request, Sleep, Store, Timestamp};
use lease_store_sqlite::SqliteStore;
use lease_testkit::FakeClock;
use rusqlite::{Connection, TransactionBehavior};
use tempfile::TempDir;

/// How long the other connection holds the write lock.
const HOLD: Duration = Duration::from_millis(1500);

/// How late a 50 ms timer may fire while the store waits (generous for a loaded machine; the
/// unfixed store made it ~`HOLD` late).
const MAX_LATENESS: Duration = Duration::from_millis(500);

fn key(lease: &str) -> Key {
    Key::new("ns", "model", lease)
}

fn req(holder: &str) -> Request {
    Request::new(holder, Duration::from_secs(30))
}

/// A store on a new file that waits up to 10 s for another connection's write lock: far
/// longer than any test here holds it, so a loaded host cannot turn a wait into `Busy`.
fn open(dir: &TempDir, clock: &FakeClock) -> (SqliteStore, PathBuf) {
    let path = dir.path().join("leases.db");
    let store = SqliteStore::builder(&path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .busy_timeout(Duration::from_secs(10))
        .open()
        .expect("opening the store");
    (store, path)
}

/// Holds the database's write lock (`BEGIN IMMEDIATE`) on a plain connection of another thread
/// for `hold`, then commits. Returns once the lock is held.
fn hold_write_lock(path: &Path, hold: Duration) -> thread::JoinHandle<()> {
    let path = path.to_owned();
    let (locked, is_locked) = mpsc::channel();
    let holder = thread::spawn(move || {
        let mut conn = Connection::open(&path).expect("opening a second connection");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("taking the write lock");
        locked.send(()).unwrap();
        thread::sleep(hold);
        tx.commit().expect("releasing the write lock");
    });
    is_locked.recv().expect("the lock holder died");
    holder
}

/// Holds the database's write lock on a plain connection of another thread until told to
/// release it (send on, or drop, the returned sender), then commits. Returns once the lock is
/// held.
fn hold_write_lock_until_released(path: &Path) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
    let path = path.to_owned();
    let (locked, is_locked) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let mut conn = Connection::open(&path).expect("opening a second connection");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("taking the write lock");
        locked.send(()).unwrap();
        let _ = released.recv();
        tx.commit().expect("releasing the write lock");
    });
    is_locked.recv().expect("the lock holder died");
    (release, holder)
}

/// Another connection can take the write lock at once: the store left no transaction open.
fn assert_no_open_transaction(path: &Path) {
    let mut conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::ZERO).unwrap();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("the store left a transaction open: another connection cannot write");
    tx.execute(
        "INSERT INTO pin (namespace, model, name, entity) VALUES ('x', 'y', 'z', 'w')",
        [],
    )
    .expect("writing on another connection");
    tx.rollback().unwrap();
}

/// A claim waits (on its busy timeout) for another connection's write lock while a 50 ms timer
/// runs on the same runtime; the timer must fire on time and the claim succeed after the lock
/// is released.
async fn timer_fires_on_time_while_a_claim_waits_for_the_lock() {
    let dir = TempDir::new().unwrap();
    let clock = FakeClock::new();
    let (mut store, path) = open(&dir, &clock);
    let holder = hold_write_lock(&path, HOLD);

    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
    let timer = async {
        tokio::time::sleep_until(deadline).await;
        tokio::time::Instant::now().saturating_duration_since(deadline)
    };
    let claim = async {
        let out = store.claim_lease(&key("a"), &req("h")).await;
        (out, started.elapsed())
    };
    let (lateness, (claimed, waited)) = tokio::join!(timer, claim);
    holder.join().unwrap();

    claimed.expect("the claim succeeds once the lock is released");
    // The claim really waited for the lock, so the timer ran while SQLite was waiting.
    assert!(
        waited >= Duration::from_millis(1000),
        "the claim did not wait for the lock ({waited:?}): the test proves nothing"
    );
    assert!(
        lateness < MAX_LATENESS,
        "a 50 ms timer fired {lateness:?} late while the store waited for the write lock: the \
         store blocked the runtime"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_claim_waiting_for_the_lock_does_not_delay_timers_on_a_current_thread_runtime() {
    timer_fires_on_time_while_a_claim_waits_for_the_lock().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_claim_waiting_for_the_lock_does_not_delay_timers_on_a_one_worker_runtime() {
    timer_fires_on_time_while_a_claim_waits_for_the_lock().await;
}

/// The same for a batch: one blocking call for the whole batch, off the runtime.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_waiting_for_the_lock_does_not_delay_timers() {
    let dir = TempDir::new().unwrap();
    let clock = FakeClock::new();
    let (mut store, path) = open(&dir, &clock);
    let holder = hold_write_lock(&path, HOLD);

    let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
    let timer = async {
        tokio::time::sleep_until(deadline).await;
        tokio::time::Instant::now().saturating_duration_since(deadline)
    };
    let ops = vec![
        Op::Claim {
            key: key("a"),
            request: req("h"),
        },
        Op::Claim {
            key: key("b"),
            request: req("h"),
        },
    ];
    let (lateness, results) = tokio::join!(timer, store.apply(ops));
    holder.join().unwrap();
    for result in results {
        result.expect("each claim of the batch succeeds once the lock is released");
    }
    assert!(
        lateness < MAX_LATENESS,
        "a 50 ms timer fired {lateness:?} late while a batch waited for the write lock"
    );
}

/// A claim dropped while it waits for the lock (its caller timed out) still runs to the end
/// on its blocking thread, as a unit; a claim dropped while waiting for the one before it never
/// runs; the next call waits for the first, succeeds, and leaves no transaction open.
async fn dropped_calls_leave_the_store_usable() {
    let dir = TempDir::new().unwrap();
    let clock = FakeClock::new();
    let (mut store, path) = open(&dir, &clock);
    // Held until both calls below have given up, however slow the host.
    let (release, holder) = hold_write_lock_until_released(&path);

    let first = tokio::time::timeout(
        Duration::from_millis(200),
        store.claim_lease(&key("a"), &req("h1")),
    )
    .await;
    assert!(
        first.is_err(),
        "the claim returned {first:?} while another connection held the write lock"
    );
    let second = tokio::time::timeout(
        Duration::from_millis(100),
        store.claim_lease(&key("b"), &req("h2")),
    )
    .await;
    assert!(second.is_err(), "the queued claim returned {second:?}");
    release.send(()).unwrap();

    // The next call waits for the dropped claim to finish, then runs.
    let info = store
        .claim_lease(&key("c"), &req("h3"))
        .await
        .expect("the store is usable after dropped calls");
    assert_eq!(info.holder, "h3");
    holder.join().unwrap();

    let leases = store.leases(&[]).await.unwrap();
    let holders: Vec<(&str, &str)> = leases
        .iter()
        .map(|(k, i)| (k.lease.as_str(), i.holder.as_str()))
        .collect();
    // The claim that had begun completed; the one that never began did nothing.
    assert_eq!(holders, [("a", "h1"), ("c", "h3")]);
    assert_no_open_transaction(&path);
}

#[tokio::test(flavor = "current_thread")]
async fn dropped_calls_leave_the_store_usable_on_a_current_thread_runtime() {
    dropped_calls_leave_the_store_usable().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_calls_leave_the_store_usable_on_a_multi_thread_runtime() {
    dropped_calls_leave_the_store_usable().await;
}

/// Calls and batches dropped at every point of their life, many times, on a multi-thread
/// runtime: each later call still works, every answered claim is in the file, and no
/// transaction is ever left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_dropped_at_any_point_never_corrupt_the_store() {
    let dir = TempDir::new().unwrap();
    let clock = FakeClock::new();
    let (mut store, path) = open(&dir, &clock);
    let mut answered = Vec::new();
    for i in 0..200_u64 {
        let name = format!("k{i}");
        let patience = Duration::from_micros((i * 37) % 900);
        let out = if i % 2 == 0 {
            tokio::time::timeout(patience, store.claim_lease(&key(&name), &req("h")))
                .await
                .map(|r| r.map(|_| ()))
        } else {
            let ops = vec![Op::Claim {
                key: key(&name),
                request: req("h"),
            }];
            tokio::time::timeout(patience, store.apply(ops))
                .await
                .map(|mut r| r.pop().unwrap().map(|_| ()))
        };
        if let Ok(result) = out {
            result.unwrap_or_else(|e| panic!("claim {i}: {e}"));
            answered.push(name);
        }
    }
    // Waits for whatever was still running, then reads.
    let leases = store.leases(&[]).await.expect("the store is usable");
    for name in &answered {
        assert_eq!(
            leases.get(&key(name)).map(|i| i.holder.as_str()),
            Some("h"),
            "answered claim {name} is not in the file"
        );
    }
    for (k, info) in &leases {
        assert_eq!(info.holder, "h", "{k} has a holder nobody claimed it for");
    }
    assert_no_open_transaction(&path);
    // And the store still writes.
    store.claim_lease(&key("last"), &req("h")).await.unwrap();
}

/// A fake clock that panics while `panic` is set: a fault inside a transaction (the clock is
/// read after `BEGIN IMMEDIATE`).
#[derive(Debug)]
struct PanickingClock {
    inner: FakeClock,
    panic: Arc<AtomicBool>,
}

impl Clock for PanickingClock {
    fn now(&self) -> Timestamp {
        assert!(
            !self.panic.load(Ordering::SeqCst),
            "clock failure injected by the test"
        );
        self.inner.now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        self.inner.sleep_until(deadline)
    }
}

/// A panic inside a transaction on the blocking thread is an error for that call, not a crash
/// of the caller; the transaction is rolled back (another connection can write, the claim is
/// not in the file) and the store keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_a_transaction_rolls_it_back_and_the_store_keeps_working() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("leases.db");
    let panic = Arc::new(AtomicBool::new(false));
    let clock = PanickingClock {
        inner: FakeClock::new(),
        panic: Arc::clone(&panic),
    };
    let mut store = SqliteStore::builder(&path)
        .clock(Arc::new(clock))
        .boot_id("boot-a")
        .busy_timeout(Duration::from_secs(2))
        .open()
        .unwrap();
    store.claim_lease(&key("a"), &req("h")).await.unwrap();

    panic.store(true, Ordering::SeqCst);
    let err = store.claim_lease(&key("b"), &req("h")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");
    assert!(
        err.to_string().contains("blocking thread"),
        "the error does not say what failed: {err}"
    );
    let ops = vec![Op::Claim {
        key: key("b"),
        request: req("h"),
    }];
    let results = store.apply(ops).await;
    assert!(
        matches!(&results[..], [Err(e)] if e.kind() == ErrorKind::Store),
        "{results:?}"
    );
    panic.store(false, Ordering::SeqCst);

    assert_no_open_transaction(&path);
    store.claim_lease(&key("c"), &req("h")).await.unwrap();
    let leases = store.leases(&[]).await.unwrap();
    let names: Vec<&str> = leases.keys().map(|k| k.lease.as_str()).collect();
    assert_eq!(names, ["a", "c"], "the panicked claims were rolled back");
}

/// Polled outside any tokio runtime (another executor), a call runs inline rather than panic
/// for want of a runtime: there is no runtime to block.
#[test]
fn a_call_outside_any_tokio_runtime_runs_inline() {
    fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            thread::yield_now();
        }
    }
    let dir = TempDir::new().unwrap();
    let clock = FakeClock::new();
    let (mut store, path) = open(&dir, &clock);
    let info = block_on(store.claim_lease(&key("a"), &req("h"))).unwrap();
    assert_eq!(info.holder, "h");
    let leases = block_on(store.leases(&[])).unwrap();
    assert_eq!(leases[&key("a")].holder, "h");
    assert_no_open_transaction(&path);
}

/// Batches started ahead (`start_apply`) while another connection holds the write lock: the
/// first waits for it on the store's apply thread, off the runtime (a timer fires on time);
/// the second, whose future is dropped before its turn (its caller gave up), never touches the
/// file; the third runs after the first; and nothing is left open.
#[tokio::test(flavor = "current_thread")]
async fn a_started_batch_dropped_before_its_turn_is_never_applied() {
    let dir = TempDir::new().unwrap();
    let clock = FakeClock::new();
    let (mut store, path) = open(&dir, &clock);
    let (release, holder) = hold_write_lock_until_released(&path);
    let claim = |lease: &str| {
        vec![Op::Claim {
            key: key(lease),
            request: req("h"),
        }]
    };
    let first = store.start_apply(claim("first")).expect("starting a batch");
    let dropped = store
        .start_apply(claim("dropped"))
        .expect("starting a batch");
    let third = store.start_apply(claim("third")).expect("starting a batch");
    drop(dropped);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
    let timer = async {
        tokio::time::sleep_until(deadline).await;
        let lateness = tokio::time::Instant::now().saturating_duration_since(deadline);
        release.send(()).expect("the lock holder died");
        lateness
    };
    let (lateness, first, third) = tokio::join!(timer, first, third);
    holder.join().unwrap();
    assert!(
        lateness < MAX_LATENESS,
        "a 50 ms timer fired {lateness:?} late while a started batch waited for the lock"
    );
    first[0].as_ref().expect("the first batch's claim");
    third[0].as_ref().expect("the third batch's claim");
    let held = store.leases(&[]).await.unwrap();
    assert!(held.contains_key(&key("first")) && held.contains_key(&key("third")));
    assert!(
        !held.contains_key(&key("dropped")),
        "a batch dropped before its turn was applied: {held:?}"
    );
    assert_no_open_transaction(&path);
}

/// Dropping the store with its apply thread idle ends the thread (joined by the drop, so no
/// thread is left behind per store), and a new store on the file sees what it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_store_ends_its_idle_apply_thread() {
    let dir = TempDir::new().unwrap();
    let clock = FakeClock::new();
    let (mut store, _) = open(&dir, &clock);
    let started = store
        .start_apply(vec![Op::Claim {
            key: key("a"),
            request: req("h"),
        }])
        .expect("starting a batch");
    started.await[0].as_ref().expect("the claim");
    drop(store);
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .filter(|name| name.trim() == "lease-sqlite-ap")
                    .count()
            })
            .unwrap_or(0)
    };
    // Other tests of this binary run in parallel threads with stores of their own only when
    // run by `cargo test`; under nextest each test is a process. Either way this store's
    // thread is joined by the drop, so none of ours is left.
    if std::env::var_os("NEXTEST").is_some() {
        assert_eq!(threads(), 0, "the apply thread outlived its store");
    }
    let (mut again, _) = open(&dir, &clock);
    assert!(again.leases(&[]).await.unwrap().contains_key(&key("a")));
}
