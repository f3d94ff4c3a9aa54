//! One kernel per file: a second kernel writing the same file (a VM or sandbox sharing it
//! through a mount) is refused rather than having its live leases judged expired, while the
//! rows of a genuine earlier boot of this host are still expired. Each kernel is a store with
//! its own boot id, its own `CLOCK_BOOTTIME` (a fake clock) and a shared fake wall clock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lease_core::{ErrorKind, Key, Op, Request, Store, Timestamp};
use lease_store_sqlite::{SqliteStore, SqliteStoreError, WallClock};
use lease_testkit::FakeClock;
use rusqlite::Connection;
use tempfile::TempDir;

fn key(lease: &str) -> Key {
    Key::new("ns", "model", lease)
}

fn req(holder: &str, secs: u64) -> Request {
    Request::new(holder, Duration::from_secs(secs))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[derive(Debug)]
struct Wall(FakeClock);

impl WallClock for Wall {
    fn now(&self) -> Timestamp {
        self.0.now()
    }
}

/// One kernel: its boot id, machine id and boot clock.
struct Kernel {
    boot: &'static str,
    machine: Option<&'static str>,
    clock: FakeClock,
}

impl Kernel {
    /// A kernel that booted `up` ago.
    fn up_for(boot: &'static str, machine: Option<&'static str>, up: Duration) -> Kernel {
        Kernel {
            boot,
            machine,
            clock: FakeClock::starting_at(Timestamp::from_nanos(
                u64::try_from(up.as_nanos()).unwrap(),
            )),
        }
    }

    fn open(&self, path: &Path, wall: &FakeClock) -> SqliteStore {
        SqliteStore::builder(path)
            .clock(self.clock.as_clock())
            .wall_clock(Arc::new(Wall(wall.clone())))
            .boot_id(self.boot)
            .machine_id(self.machine.map(str::to_owned))
            .busy_timeout(Duration::from_millis(50))
            .open()
            .unwrap_or_else(|e| panic!("{} opening {}: {e}", self.boot, path.display()))
    }

    /// Both clocks move on by `d`.
    fn advance(&self, wall: &FakeClock, d: Duration) {
        self.clock.advance(d);
        wall.advance(d);
    }
}

fn setup() -> (TempDir, PathBuf, FakeClock) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let wall = FakeClock::starting_at(Timestamp::from_nanos(1_700_000_000_000_000_000));
    (dir, path, wall)
}

/// The error inside a store error, which must be the other-kernel refusal naming `other`.
fn assert_another_kernel(err: &lease_core::Error, path: &Path, other: &str) {
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");
    let source = std::error::Error::source(err).expect("a source");
    match source.downcast_ref::<SqliteStoreError>() {
        Some(SqliteStoreError::AnotherKernel {
            path: p,
            other_boot,
            ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(other_boot, other);
        }
        other => panic!("not the other-kernel refusal: {other:?} ({err})"),
    }
    let text = err.to_string();
    assert!(text.contains("another kernel"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

/// Every row of the lease table and the generations, as text: what a refusal must leave alone.
fn dump(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT name || ' ' || holder || ' ' || boot || ' ' || expiry || ' ' || generation \
         FROM lease ORDER BY name",
        "SELECT name || ' ' || last FROM generation ORDER BY name",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

#[tokio::test]
async fn another_kernel_writing_while_this_one_holds_leases_is_refused() {
    let (_dir, path, wall) = setup();
    // Two kernels up for days, same machine id (a cloned VM image): only the write order
    // tells them apart.
    let a = Kernel::up_for("boot-a", Some("m"), secs(3 * 86_400));
    let b = Kernel::up_for("boot-b", Some("m"), secs(86_400));
    let mut store_a = a.open(&path, &wall);
    store_a
        .claim_lease(&key("x"), &req("ha", 60))
        .await
        .unwrap();
    let mut store_b = b.open(&path, &wall);
    // B writes after A's boot started by the wall clock while A's lease is live: refused.
    let before = dump(&path);
    let err = store_b
        .claim_lease(&key("x"), &req("hb", 60))
        .await
        .unwrap_err();
    assert_another_kernel(&err, &path, "boot-a");
    let err = store_b
        .claim_lease(&key("y"), &req("hb", 60))
        .await
        .unwrap_err();
    assert_another_kernel(&err, &path, "boot-a");
    // Reads refuse too rather than report A's lease as free.
    let err = store_b.leases(&[]).await.unwrap_err();
    assert_another_kernel(&err, &path, "boot-a");
    let err = store_b.purge_expired(100).await.unwrap_err();
    assert!(
        matches!(err, SqliteStoreError::AnotherKernel { .. }),
        "{err}"
    );
    let results = store_b
        .apply(vec![Op::Claim {
            key: key("x"),
            request: req("hb", 60),
        }])
        .await;
    assert_another_kernel(results[0].as_ref().unwrap_err(), &path, "boot-a");
    assert_eq!(dump(&path), before, "a refusal wrote or purged");
    // A is unaffected: B never wrote.
    store_a
        .extend_lease(&key("x"), &req("ha", 60))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_second_kernel_that_wrote_after_this_boot_registered_is_refused_whatever_the_clocks() {
    let (_dir, path, wall) = setup();
    let a = Kernel::up_for("boot-a", Some("m"), secs(60));
    let mut store_a = a.open(&path, &wall);
    store_a
        .claim_lease(&key("mine"), &req("ha", 600))
        .await
        .unwrap();
    // B's wall clock is years ahead: by it, A's lease ended long ago and B booted after A's
    // last write, so B cannot tell A from an earlier boot and writes once.
    let b_wall = FakeClock::starting_at(Timestamp::from_nanos(1_800_000_000_000_000_000));
    let b_clock = FakeClock::starting_at(Timestamp::from_nanos(600_000_000_000));
    let mut store_b = SqliteStore::builder(&path)
        .clock(b_clock.as_clock())
        .wall_clock(Arc::new(Wall(b_wall)))
        .boot_id("boot-b")
        .machine_id(Some("m".into()))
        .open()
        .unwrap();
    store_b
        .claim_lease(&key("theirs"), &req("hb", 600))
        .await
        .unwrap();
    // A registered before that write: the write counter shows B is alive now, whatever the
    // clocks say, and A refuses from then on.
    let err = store_a
        .claim_lease(&key("other"), &req("ha", 10))
        .await
        .unwrap_err();
    assert_another_kernel(&err, &path, "boot-b");
    assert!(
        err.to_string().contains("after this boot first opened"),
        "{err}"
    );
    let err = store_a.leases(&[key("theirs")]).await.unwrap_err();
    assert_another_kernel(&err, &path, "boot-b");
    // Once B's leases have lapsed on A's wall clock (tolerance included), A goes on.
    a.advance(
        &wall,
        Duration::from_nanos(100_000_000_000_000_000) + secs(600 + 3),
    );
    store_a
        .claim_lease(&key("other"), &req("ha", 10))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_kernel_of_another_machine_is_refused_even_at_first_contact() {
    let (_dir, path, wall) = setup();
    // A claims, then B, booted after A's write and opening the file for the first time: the
    // clocks and write order look like a reboot, the machine ids do not.
    let a = Kernel::up_for("boot-a", Some("machine-a"), secs(3600));
    let mut store_a = a.open(&path, &wall);
    store_a
        .claim_lease(&key("x"), &req("ha", 600))
        .await
        .unwrap();
    wall.advance(secs(20));
    let b = Kernel::up_for("boot-b", Some("machine-b"), secs(5));
    let mut store_b = b.open(&path, &wall);
    let err = store_b
        .claim_lease(&key("x"), &req("hb", 60))
        .await
        .unwrap_err();
    assert_another_kernel(&err, &path, "boot-a");
    assert!(err.to_string().contains("machine-a"), "{err}");
}

#[tokio::test]
async fn leases_of_an_earlier_boot_of_this_host_are_expired() {
    let (_dir, path, wall) = setup();
    let old = Kernel::up_for("boot-1", Some("m"), secs(86_400));
    let first = {
        let mut store = old.open(&path, &wall);
        store.claim_lease(&key("x"), &req("h", 3600)).await.unwrap()
    };
    // A crash and a fast reboot: 3 s of wall-clock time until the new kernel started, which
    // has been up for 1 s. The old lease had an hour to go by its own record.
    wall.advance(secs(4));
    let new = Kernel::up_for("boot-2", Some("m"), secs(1));
    let mut store = new.open(&path, &wall);
    assert!(store.leases(&[]).await.unwrap().is_empty());
    let info = store.claim_lease(&key("x"), &req("o", 60)).await.unwrap();
    assert!(info.generation > first.generation);
    // The same without machine ids (a container without /etc/machine-id).
    wall.advance(secs(4));
    let next = Kernel::up_for("boot-3", None, secs(1));
    let mut store = next.open(&path, &wall);
    let info = store.claim_lease(&key("x"), &req("p", 60)).await.unwrap();
    assert_eq!(info.holder, "p");
}

#[tokio::test]
async fn an_earlier_boot_whose_leases_were_released_never_blocks() {
    let (_dir, path, wall) = setup();
    // Another machine id and recent writes, but nothing live: the record says so.
    let a = Kernel::up_for("boot-a", Some("machine-a"), secs(3600));
    {
        let mut store = a.open(&path, &wall);
        store.claim_lease(&key("x"), &req("ha", 600)).await.unwrap();
        store.revoke_lease(&key("x"), "ha").await.unwrap();
    }
    let b = Kernel::up_for("boot-b", Some("machine-b"), secs(3600));
    let mut store_b = b.open(&path, &wall);
    store_b
        .claim_lease(&key("x"), &req("hb", 60))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_refused_claim_on_this_kernel_does_not_write() {
    // The boot record is written only by transactions that changed something, so a claim
    // refused as held stays a read (no fsync) and leaves the file as it was.
    let (_dir, path, wall) = setup();
    let a = Kernel::up_for("boot-a", Some("m"), secs(3600));
    let mut store = a.open(&path, &wall);
    store.claim_lease(&key("x"), &req("h1", 60)).await.unwrap();
    let boots = |path: &Path| -> Vec<(i64, i64, i64)> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT last_tx, last_write_wall, live_until_wall FROM boot")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let recorded = boots(&path);
    assert_eq!(recorded.len(), 1);
    let (_, last_write, live_until) = recorded[0];
    assert_eq!(
        live_until - last_write,
        60_000_000_000,
        "live until the lease's expiry on the wall clock"
    );
    a.advance(&wall, secs(1));
    assert!(
        store
            .claim_lease(&key("x"), &req("h2", 60))
            .await
            .unwrap_err()
            .is_held()
    );
    assert_eq!(boots(&path), recorded);
}
