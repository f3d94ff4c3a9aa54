//! Death-aware leases with real processes on a real file: a lease whose holder's processes
//! are all dead is free at once, with a higher generation; one whose holder is alive but
//! stopped (`SIGSTOP`) frees only at its expiry, and the holder's next write after `SIGCONT`
//! is refused; a process that drops its store keeps its session (and so its leases) until it
//! exits; dead sessions' files are removed; a session of another boot is dead.
//!
//! The holders are this test binary re-executed with `LEASE_DEATH_CHILD` naming what to do
//! ([`child_entry_point`]). Real time is unavoidable here; bounds are generous (the machine
//! may be loaded): "at once" is checked as "long before the expiry".

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lease_core::{Error, Key, Request, Store};
use lease_store_sqlite::{SessionScope, SqliteStore};
use lease_testkit::FakeClock;
use rustix::process::{Pid, Signal, kill_process};

const CHILD: &str = "LEASE_DEATH_CHILD";
const DB: &str = "LEASE_DEATH_DB";
const TTL_MS: &str = "LEASE_DEATH_TTL_MS";

fn key() -> Key {
    Key::new("ns", "model", "job")
}

/// The entry point of the holder processes; does nothing when run as a test.
#[test]
fn child_entry_point() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let db = PathBuf::from(std::env::var(DB).unwrap());
    let ttl = Duration::from_millis(std::env::var(TTL_MS).unwrap().parse().unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut store = SqliteStore::open(&db).unwrap();
        let request = Request::new("child", ttl);
        let info = store.claim_lease(&key(), &request).await.unwrap();
        if mode == "drop" {
            drop(store);
            println!("held {}", info.generation.0);
            std::thread::sleep(Duration::from_secs(600));
            return;
        }
        println!("held {}", info.generation.0);
        match mode.as_str() {
            "hold" => std::thread::sleep(Duration::from_secs(600)),
            // Extends when told to (a line on stdin), and says so once the write is
            // committed: between two, the holder is idle, outside any transaction.
            "renew" => {
                for line in std::io::stdin().lines() {
                    line.unwrap();
                    match store.extend_lease(&key(), &request).await {
                        Ok(info) => println!("extended {}", info.expiry.as_nanos()),
                        Err(Error::Invalid) => {
                            println!("fenced");
                            return;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            "release" => {
                store.revoke_lease(&key(), "child").await.unwrap();
            }
            other => panic!("unknown mode {other}"),
        }
    });
}

struct Holder {
    child: Child,
    out: BufReader<ChildStdout>,
    generation: u64,
}

impl Holder {
    fn start(db: &Path, mode: &str, ttl: Duration) -> Holder {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_entry_point",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, mode)
            .env(DB, db)
            .env(TTL_MS, ttl.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let generation = loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the holder ended early"
            );
            // The harness prints "test child_entry_point ... " on the same line.
            if let Some((_, g)) = line.trim().split_once("held ") {
                break g.parse().unwrap();
            }
        };
        Holder {
            child,
            out,
            generation,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap()
    }

    fn signal(&self, signal: Signal) {
        kill_process(self.pid(), signal).unwrap();
    }

    /// Tells a `renew` holder to extend its lease once.
    fn extend(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("the holder's stdin");
        stdin.write_all(b"extend\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line it prints that is not test-harness chatter: `fenced`, or `extended NANOS`
    /// (the new expiry); empty once it has exited.
    fn next_line(&mut self) -> String {
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line).unwrap() == 0 {
                return String::new();
            }
            if line.contains("fenced") {
                return "fenced".to_owned();
            }
            // The harness may print "test child_entry_point ... " on the same line.
            if let Some((_, rest)) = line.trim().split_once("extended ") {
                return format!("extended {rest}");
            }
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sessions(db: &Path) -> Vec<String> {
    let mut dir = db.as_os_str().to_owned();
    dir.push("-sessions");
    match std::fs::read_dir(PathBuf::from(dir)) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().canonicalize().unwrap().join("leases.db");
    (dir, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holders_lease_is_free_at_once_and_its_waiter_wakes() {
    let (_dir, db) = temp_db();
    let ttl = Duration::from_secs(120);
    let holder = Holder::start(&db, "hold", ttl);
    let mut store = SqliteStore::open(&db).unwrap();
    let mut changes = store.change_notifier().expect("a change notifier");
    let request = Request::new("waiter", ttl);
    // Alive: held. This refusal also hands the holder's session to the death watch.
    assert!(matches!(
        store.claim_lease(&key(), &request).await,
        Err(Error::Held)
    ));
    assert_eq!(sessions(&db).len(), 1, "{:?}", sessions(&db));
    changes.borrow_and_update();
    let killed = Instant::now();
    holder.signal(Signal::KILL);
    // The waiter is woken by the death, not by a poll: no write happened.
    tokio::time::timeout(Duration::from_secs(30), changes.changed())
        .await
        .expect("woken by the holder's death")
        .unwrap();
    assert!(store.poll_changes().await.unwrap(), "the death is a change");
    assert!(store.leases(&[key()]).await.unwrap().is_empty());
    let info = store.claim_lease(&key(), &request).await.unwrap();
    let took = killed.elapsed();
    assert!(info.generation.0 > holder.generation, "{info:?}");
    assert!(
        took < Duration::from_secs(30),
        "took {took:?} of a {ttl:?} lease"
    );
    eprintln!("takeover {took:?} after SIGKILL (ttl {ttl:?})");
    // The dead session's file went with it; ours is there.
    assert_eq!(sessions(&db).len(), 1, "{:?}", sessions(&db));
}

/// A live holder process's session file replaced by hand (an empty file in its place) is no
/// proof of death: another process cannot take the lease early; and once the holder is killed
/// as well, its death cannot be seen through that file, so the lease frees at its expiry (a
/// short one, real time), never earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_session_file_frees_nothing_before_the_expiry() {
    let (_dir, db) = temp_db();
    let ttl = Duration::from_secs(4);
    // The holder's claim comes after this instant, so its lease runs at least until `+ ttl`.
    let started = Instant::now();
    let holder = Holder::start(&db, "hold", ttl);
    let names = sessions(&db);
    assert_eq!(names.len(), 1, "{names:?}");
    let mut dir = db.as_os_str().to_owned();
    dir.push("-sessions");
    let file = PathBuf::from(dir).join(&names[0]);
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, b"").unwrap();
    let mut store = SqliteStore::open(&db).unwrap();
    let request = Request::new("waiter", Duration::from_secs(60));
    let early = |what: &str| {
        assert!(
            started.elapsed() >= ttl,
            "{what}: taken {:?} into a {ttl:?} lease",
            started.elapsed()
        );
    };
    if store.claim_lease(&key(), &request).await.is_ok() {
        early("alive");
    }
    drop(holder); // SIGKILL and reaped
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match store.claim_lease(&key(), &request).await {
            Ok(info) => {
                early("killed");
                assert_eq!(info.generation.0, 2);
                break;
            }
            Err(Error::Held) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("never free: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_holders_lease_frees_only_at_its_expiry_and_its_next_write_is_refused() {
    let (_dir, db) = temp_db();
    let ttl = Duration::from_secs(3);
    let mut holder = Holder::start(&db, "renew", ttl);
    // Stopped right after a renewal it reported committed: idle, holding no write lock, with a
    // known expiry (on CLOCK_BOOTTIME, the clock of every store here).
    holder.extend();
    let line = holder.next_line();
    let expiry: u64 = line
        .strip_prefix("extended ")
        .unwrap_or_else(|| panic!("the holder could not renew: {line:?}"))
        .parse()
        .unwrap();
    holder.signal(Signal::STOP);
    let mut store = SqliteStore::open(&db).unwrap();
    let request = Request::new("waiter", Duration::from_secs(60));
    let waiting = async {
        loop {
            match store.claim_lease(&key(), &request).await {
                Ok(info) => break info,
                Err(Error::Held) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("{e}"),
            }
        }
    };
    // A hang guard only: the lease frees 3 s after the renewal.
    let info = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the stopped holder's lease never freed");
    // Alive though silent: free at its expiry, not before. The waiter's claim decided at
    // `info.expiry - 60 s` on the store's clock.
    let claimed_at = info.expiry.as_nanos().saturating_sub(60_000_000_000);
    assert!(
        claimed_at >= expiry,
        "a stopped holder's lease freed {} ms before its expiry",
        (expiry - claimed_at) / 1_000_000
    );
    assert!(info.generation.0 > holder.generation);
    holder.signal(Signal::CONT);
    holder.extend();
    assert_eq!(
        holder.next_line(),
        "fenced",
        "the old holder's extend is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_dropped_its_store_keeps_its_leases_until_it_exits() {
    let (_dir, db) = temp_db();
    let holder = Holder::start(&db, "drop", Duration::from_secs(120));
    let mut store = SqliteStore::open(&db).unwrap();
    let request = Request::new("waiter", Duration::from_secs(60));
    assert!(matches!(
        store.claim_lease(&key(), &request).await,
        Err(Error::Held)
    ));
    drop(holder); // SIGKILL and reaped
    let info = store.claim_lease(&key(), &request).await.unwrap();
    assert_eq!(info.generation.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_exited_processes_are_removed_by_the_next_session() {
    let (_dir, db) = temp_db();
    for _ in 0..3 {
        let mut holder = Holder::start(&db, "release", Duration::from_secs(60));
        holder.child.wait().unwrap();
    }
    let left = sessions(&db).len();
    assert!((1..=3).contains(&left), "{left}");
    // A new session probes a few others and removes the dead ones.
    let mut store = SqliteStore::open(&db).unwrap();
    store
        .claim_lease(&key(), &Request::new("me", Duration::from_secs(60)))
        .await
        .unwrap();
    let after = sessions(&db);
    assert!(after.len() < left + 1, "{after:?} (was {left})");
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM session", [], |r| r.get(0))
        .unwrap();
    assert_eq!(usize::try_from(rows).unwrap(), after.len());
}

/// A fake wall clock (time since the Unix epoch) for reboot simulations.
#[derive(Debug)]
struct Wall(FakeClock);

impl lease_store_sqlite::WallClock for Wall {
    fn now(&self) -> lease_core::Timestamp {
        self.0.now()
    }
}

#[tokio::test]
async fn a_session_of_another_boot_is_dead_even_while_locked() {
    let (_dir, db) = temp_db();
    let wall = FakeClock::starting_at(lease_core::Timestamp::from_nanos(1_700_000_000_000_000_000));
    let open = |boot: &str, clock: &FakeClock| {
        SqliteStore::builder(&db)
            .clock(clock.as_clock())
            .wall_clock(Arc::new(Wall(wall.clone())))
            .boot_id(boot)
            .session_scope(SessionScope::Store)
            .open()
            .unwrap()
    };
    let mut before = open("boot-1", &FakeClock::new());
    before
        .claim_lease(&key(), &Request::new("a", Duration::from_secs(60)))
        .await
        .unwrap();
    let old = sessions(&db);
    assert_eq!(old.len(), 1);
    // A reboot, simulated: 30 s later by the wall clock, a new boot whose clock started 10 s
    // ago. The old session's lock is still held (by `before`, in this process).
    wall.advance(Duration::from_secs(30));
    let clock = FakeClock::starting_at(lease_core::Timestamp::from_nanos(10_000_000_000));
    let mut after = open("boot-2", &clock);
    let info = after
        .claim_lease(&key(), &Request::new("b", Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(info.generation.0, 2);
    let now = sessions(&db);
    assert!(
        !now.contains(&old[0]),
        "the old boot's session was removed: {now:?}"
    );
    drop(before);
}

#[tokio::test]
async fn a_store_scoped_session_ends_with_its_store_and_off_means_expiry_only() {
    let (_dir, db) = temp_db();
    let clock = Arc::new(FakeClock::new());
    let open = |aware: bool| {
        SqliteStore::builder(&db)
            .clock(clock.clone())
            .session_scope(SessionScope::Store)
            .death_aware(aware)
            .open()
            .unwrap()
    };
    let request = |h: &str| Request::new(h, Duration::from_secs(60));
    let mut holder = open(true);
    holder.claim_lease(&key(), &request("a")).await.unwrap();
    let mut other = open(true);
    assert!(matches!(
        other.claim_lease(&key(), &request("b")).await,
        Err(Error::Held)
    ));
    drop(holder);
    other.claim_lease(&key(), &request("b")).await.unwrap();
    // Written without a session: the holder's death frees nothing before the expiry.
    let unaware = Key::new("ns", "model", "unaware");
    let mut holder = open(false);
    holder.claim_lease(&unaware, &request("a")).await.unwrap();
    drop(holder);
    assert!(matches!(
        other.claim_lease(&unaware, &request("b")).await,
        Err(Error::Held)
    ));
    clock.advance(Duration::from_secs(60));
    other.claim_lease(&unaware, &request("b")).await.unwrap();
}
