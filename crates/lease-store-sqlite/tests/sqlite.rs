//! The SQLite store's own behaviour beyond the conformance suite: persistence across reopening,
//! reboots, purging, batches, change polling, and every fault it must report clearly (each with
//! the exact error, and the file left byte for byte as it was).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lease_core::{Error, ErrorKind, Generation, Key, Op, Outcome, Request, Store};
use lease_store_sqlite::{SCHEMA_VERSION, SqliteStore, SqliteStoreError};
use lease_testkit::FakeClock;
use rusqlite::{Connection, TransactionBehavior};
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

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("leases.db")
}

fn open_with(path: &Path, clock: &FakeClock, boot: &str) -> SqliteStore {
    SqliteStore::builder(path)
        .clock(clock.as_clock())
        .boot_id(boot)
        .busy_timeout(Duration::from_millis(50))
        .open()
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

fn open(path: &Path, clock: &FakeClock) -> SqliteStore {
    open_with(path, clock, "boot-a")
}

fn open_err(path: &Path) -> SqliteStoreError {
    SqliteStore::builder(path)
        .clock(FakeClock::new().as_clock())
        .boot_id("boot-a")
        .open()
        .expect_err("the open should fail")
}

/// Every file in `dir` with its bytes: what a failed open must leave exactly as it was.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = if path.is_file() {
                fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            (name, bytes)
        })
        .collect()
}

/// A closed database with a few leases in it, spread over several pages.
async fn populated(path: &Path) {
    let clock = FakeClock::new();
    let mut store = open(path, &clock);
    for i in 0..200 {
        let request = req("holder", 100).with_metadata(serde_json::json!({"pad": "x".repeat(100)}));
        store
            .claim_lease(&key(&format!("lease-{i}")), &request)
            .await
            .unwrap();
    }
}

/// Whether this process runs as root, who bypasses file permissions.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Behaviour.

#[tokio::test]
async fn claim_extend_revoke_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let mut store = open(&db_path(&dir), &clock);
    let start = clock.now();

    let info = store.claim_lease(&key("a"), &req("h", 10)).await.unwrap();
    assert_eq!(info.holder, "h");
    assert_eq!(info.expiry, start.saturating_add(secs(10)));
    assert_eq!(info.generation, Generation(1));
    assert!(!info.pinned);
    assert!(matches!(
        store.claim_lease(&key("a"), &req("h", 10)).await,
        Err(Error::Invalid)
    ));
    assert!(matches!(
        store.claim_lease(&key("a"), &req("o", 10)).await,
        Err(Error::Held)
    ));

    // Extending only ever lengthens.
    clock.advance(secs(5));
    let info = store.extend_lease(&key("a"), &req("h", 1)).await.unwrap();
    assert_eq!(info.expiry, start.saturating_add(secs(10)));
    let info = store.extend_lease(&key("a"), &req("h", 20)).await.unwrap();
    assert_eq!(info.expiry, start.saturating_add(secs(25)));
    assert_eq!(
        info.generation,
        Generation(1),
        "extends keep the generation"
    );
    assert!(matches!(
        store.extend_lease(&key("a"), &req("o", 20)).await,
        Err(Error::Invalid)
    ));
    assert!(matches!(
        store.extend_lease(&key("absent"), &req("h", 20)).await,
        Err(Error::Invalid)
    ));

    // At the expiry instant the lease has expired.
    clock.set(start.saturating_add(secs(25)));
    assert!(store.leases(&[]).await.unwrap().is_empty());
    assert!(matches!(
        store.extend_lease(&key("a"), &req("h", 20)).await,
        Err(Error::Invalid)
    ));
    assert!(matches!(
        store.revoke_lease(&key("a"), "h").await,
        Err(Error::Invalid)
    ));
    let info = store.claim_lease(&key("a"), &req("o", 10)).await.unwrap();
    assert_eq!(info.generation, Generation(2));

    assert!(matches!(
        store.revoke_lease(&key("a"), "h").await,
        Err(Error::NotHeld)
    ));
    store.revoke_lease(&key("a"), "o").await.unwrap();
    assert!(matches!(
        store.revoke_lease(&key("a"), "o").await,
        Err(Error::Invalid)
    ));
    assert!(matches!(
        store.revoke_lease(&key("never"), "o").await,
        Err(Error::Invalid)
    ));
}

#[tokio::test]
async fn leases_survive_reopening_with_metadata_and_generations() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let metadata = serde_json::json!({"pid": 42, "tags": ["a", "b"], "nested": {"x": null}});
    {
        let mut store = open(&path, &clock);
        store
            .claim_lease(&key("a"), &req("h", 60).with_metadata(metadata.clone()))
            .await
            .unwrap();
        store.claim_lease(&key("b"), &req("h", 60)).await.unwrap();
        store.revoke_lease(&key("b"), "h").await.unwrap();
    }
    let mut store = open(&path, &clock);
    let leases = store.leases(&[]).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[&key("a")].metadata, Some(metadata.clone()));
    assert_eq!(leases[&key("a")].generation, Generation(1));
    // An extend without metadata keeps it; one with metadata replaces it.
    let info = store.extend_lease(&key("a"), &req("h", 60)).await.unwrap();
    assert_eq!(info.metadata, Some(metadata));
    let replaced = serde_json::json!([1, 2, 3]);
    store
        .extend_lease(&key("a"), &req("h", 60).with_metadata(replaced.clone()))
        .await
        .unwrap();
    let leases = store.leases(&[key("a")]).await.unwrap();
    assert_eq!(leases[&key("a")].metadata, Some(replaced));
    // The revoked lease's generation was not forgotten.
    let info = store.claim_lease(&key("b"), &req("h", 60)).await.unwrap();
    assert_eq!(info.generation, Generation(2));
}

#[tokio::test]
async fn snapshots_report_only_valid_leases() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let mut store = open(&db_path(&dir), &clock);
    store
        .claim_lease(&key("short"), &req("h", 5))
        .await
        .unwrap();
    store
        .claim_lease(&key("long"), &req("h", 50))
        .await
        .unwrap();
    store
        .claim_lease(&Key::new("ns", "other", "x"), &req("h", 50))
        .await
        .unwrap();
    assert_eq!(store.leases(&[]).await.unwrap().len(), 3);
    assert_eq!(store.lease_group("ns", "model").await.unwrap().len(), 2);
    clock.advance(secs(5));
    let all = store.leases(&[]).await.unwrap();
    assert_eq!(
        all.keys().cloned().collect::<Vec<_>>(),
        vec![key("long"), Key::new("ns", "other", "x")]
    );
    let group = store.lease_group("ns", "model").await.unwrap();
    assert_eq!(group.keys().cloned().collect::<Vec<_>>(), vec![key("long")]);
    let some = store
        .leases(&[key("short"), key("long"), key("absent")])
        .await
        .unwrap();
    assert_eq!(some.keys().cloned().collect::<Vec<_>>(), vec![key("long")]);
}

#[tokio::test]
async fn pins_bind_the_next_claimant_and_never_block_a_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let mut store = open(&db_path(&dir), &clock);
    store.pin_lease(&key("a"), "upgrade").await.unwrap();
    store.pin_lease(&key("a"), "upgrade").await.unwrap();
    store.pin_lease(&key("a"), "backup").await.unwrap();
    assert_eq!(
        store.pinned().await.unwrap()[&key("a")],
        vec!["backup".to_owned(), "upgrade".to_owned()]
    );
    let info = store.claim_lease(&key("a"), &req("h", 5)).await.unwrap();
    assert!(info.pinned);
    clock.advance(secs(100));
    let leases = store.leases(&[]).await.unwrap();
    assert!(leases[&key("a")].pinned, "a pinned lease does not expire");
    assert!(matches!(
        store.claim_lease(&key("a"), &req("o", 5)).await,
        Err(Error::Held)
    ));
    // Revoking a pinned lease works; the pins stay for the next claimant.
    store.revoke_lease(&key("a"), "h").await.unwrap();
    let info = store.claim_lease(&key("a"), &req("o", 5)).await.unwrap();
    assert!(info.pinned);
    assert_eq!(info.generation, Generation(2));
    store.unpin_lease(&key("a"), "upgrade").await.unwrap();
    store.unpin_lease(&key("a"), "never-pinned").await.unwrap();
    clock.advance(secs(100));
    assert!(store.leases(&[]).await.unwrap().contains_key(&key("a")));
    store.unpin_lease(&key("a"), "backup").await.unwrap();
    assert!(store.leases(&[]).await.unwrap().is_empty());
    assert!(store.pinned().await.unwrap().is_empty());
}

#[tokio::test]
async fn validation_fails_before_any_io() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    // Hold the write lock elsewhere: any I/O would time out, so a validation error proves
    // there was none.
    let mut other = Connection::open(&path).unwrap();
    let tx = other
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    let bad_key = Key::new("ns", "model model", "a");
    let checks = [
        store.claim_lease(&bad_key, &req("h", 1)).await.unwrap_err(),
        store
            .claim_lease(&key("a"), &req("h", 0))
            .await
            .unwrap_err(),
        store
            .extend_lease(&key("a"), &req("h.x", 1))
            .await
            .unwrap_err(),
        store.revoke_lease(&key("a"), "").await.unwrap_err(),
        store.pin_lease(&key("a"), "a#b").await.unwrap_err(),
        store.unpin_lease(&key("a"), "a b").await.unwrap_err(),
        store
            .leases(std::slice::from_ref(&bad_key))
            .await
            .unwrap_err(),
        store.lease_group("ns", "$").await.unwrap_err(),
    ];
    for (i, err) in checks.iter().enumerate() {
        assert_eq!(err.kind(), ErrorKind::Validation, "check {i}: {err}");
    }
    let results = store
        .apply(vec![Op::Revoke {
            key: bad_key,
            holder: "h".into(),
        }])
        .await;
    assert!(results[0].as_ref().unwrap_err().is_validation());
    tx.rollback().unwrap();
}

#[tokio::test]
async fn a_batch_applies_in_order_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let mut store = open(&db_path(&dir), &clock);
    let ops = vec![
        Op::Claim {
            key: key("a"),
            request: req("h", 10),
        },
        Op::Claim {
            key: key("a"),
            request: req("o", 10),
        },
        Op::Extend {
            key: key("a"),
            request: req("h", 30),
        },
        Op::Claim {
            key: Key::new("ns", "bad model", "a"),
            request: req("h", 10),
        },
        Op::Revoke {
            key: key("b"),
            holder: "h".into(),
        },
        Op::Claim {
            key: key("b"),
            request: req("h", 10),
        },
        Op::Revoke {
            key: key("b"),
            holder: "h".into(),
        },
        Op::Claim {
            key: key("b"),
            request: req("o", 10),
        },
    ];
    let results = store.apply(ops).await;
    assert_eq!(results.len(), 8);
    assert!(matches!(&results[0], Ok(Outcome::Claimed(i)) if i.generation == Generation(1)));
    assert!(matches!(&results[1], Err(Error::Held)));
    assert!(
        matches!(&results[2], Ok(Outcome::Extended(i)) if i.expiry == clock.now().saturating_add(secs(30)))
    );
    assert!(results[3].as_ref().unwrap_err().is_validation());
    assert!(matches!(&results[4], Err(Error::Invalid)));
    assert!(matches!(&results[5], Ok(Outcome::Claimed(_))));
    assert!(matches!(&results[6], Ok(Outcome::Revoked)));
    assert!(
        matches!(&results[7], Ok(Outcome::Claimed(i)) if i.holder == "o" && i.generation == Generation(2))
    );
    let leases = store.leases(&[]).await.unwrap();
    assert_eq!(leases[&key("a")].holder, "h");
    assert_eq!(leases[&key("b")].holder, "o");
    assert!(store.apply(Vec::new()).await.is_empty());
}

#[tokio::test]
async fn a_batch_that_cannot_commit_fails_every_op_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    let mut other = Connection::open(&path).unwrap();
    let tx = other
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    let results = store
        .apply(vec![
            Op::Claim {
                key: key("a"),
                request: req("h", 10),
            },
            Op::Claim {
                key: key("b"),
                request: req("h", 10),
            },
            Op::Claim {
                key: key("bad key"),
                request: req("h", 10),
            },
        ])
        .await;
    assert!(results[0].as_ref().unwrap_err().is_timeout());
    assert!(results[1].as_ref().unwrap_err().is_timeout());
    assert!(results[2].as_ref().unwrap_err().is_validation());
    tx.rollback().unwrap();
    assert!(store.leases(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn poll_changes_sees_other_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut a = open(&path, &clock);
    let mut b = open(&path, &clock);
    assert!(!a.poll_changes().await.unwrap());
    assert!(!b.poll_changes().await.unwrap());
    a.claim_lease(&key("x"), &req("h", 10)).await.unwrap();
    assert!(!a.poll_changes().await.unwrap(), "own writes do not count");
    assert!(b.poll_changes().await.unwrap());
    assert!(!b.poll_changes().await.unwrap(), "once per change");
    // A failed operation writes nothing.
    assert!(b.claim_lease(&key("x"), &req("o", 10)).await.is_err());
    assert!(!a.poll_changes().await.unwrap());
    b.pin_lease(&key("x"), "e").await.unwrap();
    assert!(a.poll_changes().await.unwrap());
}

#[tokio::test]
async fn purging_is_bounded_keeps_pinned_rows_and_generations() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = SqliteStore::builder(&path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .purge_batch(0)
        .open()
        .unwrap();
    for i in 0..10 {
        store
            .claim_lease(&key(&format!("l{i}")), &req("h", 10))
            .await
            .unwrap();
    }
    store.pin_lease(&key("l0"), "e").await.unwrap();
    store
        .claim_lease(&key("live"), &req("h", 100))
        .await
        .unwrap();
    assert_eq!(
        store.purge_expired(100).await.unwrap(),
        0,
        "nothing expired yet"
    );
    clock.advance(secs(10));
    assert_eq!(store.purge_expired(4).await.unwrap(), 4);
    assert_eq!(store.purge_expired(4).await.unwrap(), 4);
    assert_eq!(
        store.purge_expired(4).await.unwrap(),
        1,
        "the pinned one stays"
    );
    assert_eq!(store.purge_expired(4).await.unwrap(), 0);
    let rows: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM lease", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2, "the pinned and the live lease");
    let info = store.claim_lease(&key("l5"), &req("h", 10)).await.unwrap();
    assert_eq!(
        info.generation,
        Generation(2),
        "purging forgot no generation"
    );
}

#[tokio::test]
async fn writes_purge_expired_rows_opportunistically() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = SqliteStore::builder(&path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .purge_batch(10)
        .open()
        .unwrap();
    for i in 0..30 {
        store
            .claim_lease(&key(&format!("old{i}")), &req("h", 1))
            .await
            .unwrap();
    }
    clock.advance(secs(1));
    // 64 writes after opening, a purge deletes at most 10 rows.
    for _ in 0..34 {
        store.claim_lease(&key("busy"), &req("h", 1)).await.unwrap();
        store.revoke_lease(&key("busy"), "h").await.unwrap();
    }
    let count = |path: &Path| -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM lease", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&path), 20);
}

/// A fake wall clock (time since the Unix epoch) for reboot simulations.
#[derive(Debug)]
struct Wall(FakeClock);

impl lease_store_sqlite::WallClock for Wall {
    fn now(&self) -> lease_core::Timestamp {
        self.0.now()
    }
}

/// A store on boot `boot`, whose `CLOCK_BOOTTIME` is `clock`, with the wall clock `wall`.
fn open_on_boot(path: &Path, clock: &FakeClock, wall: &FakeClock, boot: &str) -> SqliteStore {
    SqliteStore::builder(path)
        .clock(clock.as_clock())
        .wall_clock(std::sync::Arc::new(Wall(wall.clone())))
        .boot_id(boot)
        .busy_timeout(Duration::from_millis(50))
        .open()
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

#[tokio::test]
async fn a_reboot_expires_every_lease_and_generations_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let wall = FakeClock::starting_at(lease_core::Timestamp::from_nanos(1_700_000_000_000_000_000));
    let clock = FakeClock::new();
    {
        let mut before = open_on_boot(&path, &clock, &wall, "boot-1");
        before
            .claim_lease(&key("a"), &req("h", 3600))
            .await
            .unwrap();
        before
            .claim_lease(&key("pinned"), &req("h", 3600))
            .await
            .unwrap();
        before.pin_lease(&key("pinned"), "e").await.unwrap();
    }
    // The host goes down and comes back: 30 s pass on the wall clock, and the new boot's
    // clock, which started 10 s ago, reads less than the old one did.
    wall.advance(secs(30));
    let clock = FakeClock::starting_at(lease_core::Timestamp::from_nanos(10_000_000_000));
    let mut after = open_on_boot(&path, &clock, &wall, "boot-2");
    let leases = after.leases(&[]).await.unwrap();
    assert_eq!(
        leases.keys().cloned().collect::<Vec<_>>(),
        vec![key("pinned")],
        "only the pinned lease is still held"
    );
    assert!(matches!(
        after.extend_lease(&key("a"), &req("h", 10)).await,
        Err(Error::Invalid)
    ));
    assert!(matches!(
        after.revoke_lease(&key("a"), "h").await,
        Err(Error::Invalid)
    ));
    let info = after.claim_lease(&key("a"), &req("o", 10)).await.unwrap();
    assert_eq!(info.generation, Generation(2));
    assert_eq!(info.expiry, clock.now().saturating_add(secs(10)));
    // The pinned lease can be extended on the new boot's timeline.
    let info = after
        .extend_lease(&key("pinned"), &req("h", 10))
        .await
        .unwrap();
    assert_eq!(info.expiry, clock.now().saturating_add(secs(10)));
    // Rows of the old boot are purged: at its expiry the row claimed and never renewed; the
    // renewed one (its expiry bound one duration past its expiry) one duration later.
    after.unpin_lease(&key("pinned"), "e").await.unwrap();
    clock.advance(secs(10));
    wall.advance(secs(10));
    assert_eq!(after.purge_expired(10).await.unwrap(), 1);
    clock.advance(secs(10));
    wall.advance(secs(10));
    assert_eq!(after.purge_expired(10).await.unwrap(), 1);
    drop(after);
    // Another reboot: the rows the second boot wrote are not valid on the third either.
    wall.advance(secs(30));
    let clock = FakeClock::starting_at(lease_core::Timestamp::from_nanos(5_000_000_000));
    let mut again = open_on_boot(&path, &clock, &wall, "boot-3");
    assert!(again.leases(&[]).await.unwrap().is_empty());
    let info = again.claim_lease(&key("a"), &req("h", 10)).await.unwrap();
    assert_eq!(info.generation, Generation(3));
}

// ---------------------------------------------------------------------------------------------
// Creation and migration.

#[test]
fn a_new_file_is_private_and_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let store = open(&path, &clock);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "new database file mode {mode:o}");
    for side in ["leases.db-wal", "leases.db-shm"] {
        let side = dir.path().join(side);
        let mode = fs::metadata(&side).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: mode {mode:o}", side.display());
    }
    let raw = Connection::open(&path).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(store);
}

#[test]
fn an_existing_file_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    fs::write(&path, b"").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let _store = open(&path, &FakeClock::new());
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn an_empty_file_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    fs::write(&path, b"").unwrap();
    let _store = open(&path, &FakeClock::new());
    let raw = Connection::open(&path).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

// ---------------------------------------------------------------------------------------------
// Faults.

#[tokio::test]
async fn a_lock_held_past_the_busy_timeout_is_a_timeout_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    let mut other = Connection::open(&path).unwrap();
    let tx = other
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    let err = store
        .claim_lease(&key("a"), &req("h", 10))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Context { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("database is locked"), "{text}");
    for err in [
        store.revoke_lease(&key("a"), "h").await.unwrap_err(),
        store.pin_lease(&key("a"), "e").await.unwrap_err(),
        store
            .extend_lease(&key("a"), &req("h", 1))
            .await
            .unwrap_err(),
    ] {
        assert!(err.is_timeout(), "{err}");
    }
    assert!(matches!(
        store.purge_expired(10).await,
        Err(SqliteStoreError::Busy { .. })
    ));
    // Readers are not blocked by a writer in WAL mode.
    assert!(store.leases(&[]).await.unwrap().is_empty());
    tx.rollback().unwrap();
    store.claim_lease(&key("a"), &req("h", 10)).await.unwrap();
}

#[test]
fn opening_a_new_file_while_another_holds_the_lock_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    // Another program created the file and holds the write lock while we must migrate it.
    let mut other = Connection::open(&path).unwrap();
    let tx = other
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .unwrap();
    let err = SqliteStore::builder(&path)
        .clock(FakeClock::new().as_clock())
        .boot_id("boot-a")
        .busy_timeout(Duration::from_millis(20))
        .open()
        .unwrap_err();
    assert!(matches!(err, SqliteStoreError::Busy { .. }), "{err:?}");
    assert!(lease_core::Error::from(err).is_timeout());
    tx.rollback().unwrap();
}

#[test]
fn a_file_of_random_bytes_is_not_a_database_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    // Deterministic noise (xorshift), the size of a few pages.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..16384)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    fs::write(&path, &noise).unwrap();
    let before = snapshot(dir.path());
    let err = open_err(&path);
    assert!(
        matches!(&err, SqliteStoreError::NotADatabase { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains("file is not a database"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_text_file_is_not_a_database_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    fs::write(
        &path,
        "# my notes\nnot a database at all, but long enough to have a header\n".repeat(20),
    )
    .unwrap();
    let before = snapshot(dir.path());
    let err = open_err(&path);
    assert!(
        matches!(err, SqliteStoreError::NotADatabase { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test]
async fn a_corrupt_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    populated(&path).await;
    let mut bytes = fs::read(&path).unwrap();
    assert!(bytes.len() > 8 * 4096, "{} bytes", bytes.len());
    // Scribble over pages 3 and 4, keeping the header and the schema page.
    for (i, b) in bytes[2 * 4096..4 * 4096].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    fs::write(&path, &bytes).unwrap();
    let before = snapshot(dir.path());
    let err = open_err(&path);
    assert!(matches!(err, SqliteStoreError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("{} is corrupt", path.display())),
        "{err}"
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test]
async fn a_truncated_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    populated(&path).await;
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let before = snapshot(dir.path());
    let err = open_err(&path);
    assert!(matches!(err, SqliteStoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test]
async fn a_corrupt_file_opened_without_the_check_fails_operations_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    populated(&path).await;
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let opened = SqliteStore::builder(&path)
        .clock(FakeClock::new().as_clock())
        .boot_id("boot-a")
        .integrity_check(false)
        .open();
    // Without the check, the damage is found by whatever first reads a missing page: opening
    // (which reads the boot table) or the first full read. Either way it is named as such.
    let err = match opened {
        Err(err) => err,
        Ok(mut store) => {
            let err = store.leases(&[]).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Store);
            let source = std::error::Error::source(&err).unwrap();
            match source.downcast_ref::<SqliteStoreError>() {
                Some(SqliteStoreError::Corrupt { path, detail }) => SqliteStoreError::Corrupt {
                    path: path.clone(),
                    detail: detail.clone(),
                },
                _ => panic!("not a corruption error: {err}"),
            }
        }
    };
    assert!(
        matches!(&err, SqliteStoreError::Corrupt { path: p, detail } if *p == path && detail.contains("malformed")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    populated(&path).await;
    {
        let raw = Connection::open(&path).unwrap();
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let before = snapshot(dir.path());
    let err = open_err(&path);
    assert!(
        matches!(
            err,
            SqliteStoreError::NewerSchema { found, supported, .. }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("refusing to open it"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn another_applications_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ann');")
            .unwrap();
    }
    let before = snapshot(dir.path());
    let err = open_err(&path);
    assert!(
        matches!(err, SqliteStoreError::ForeignDatabase { .. }),
        "{err:?}"
    );
    assert_eq!(snapshot(dir.path()), before);

    let other = dir.path().join("other.db");
    {
        let raw = Connection::open(&other).unwrap();
        raw.pragma_update(None, "application_id", 0x1234).unwrap();
    }
    let before = snapshot(dir.path());
    let err = open_err(&other);
    assert!(
        matches!(&err, SqliteStoreError::ForeignDatabase { reason, .. } if reason.contains("0x00001234")),
        "{err:?}"
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test]
async fn a_read_only_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    populated(&path).await;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    let before = snapshot(dir.path());
    // As root the kernel would let us write anyway; the store refuses on the mode bits.
    let err = open_err(&path);
    assert!(
        matches!(&err, SqliteStoreError::ReadOnly { path: p, reason } if *p == path && reason.contains("400")),
        "{err:?}"
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_read_only_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("ro");
    fs::create_dir(&sub).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o500)).unwrap();
    let path = sub.join("leases.db");
    let err = open_err(&path);
    assert!(
        matches!(&err, SqliteStoreError::ReadOnly { path: p, .. } if *p == sub),
        "{err:?}"
    );
    assert!(!path.exists(), "nothing was created");
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_missing_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no").join("such");
    let path = missing.join("leases.db");
    let err = open_err(&path);
    assert!(
        matches!(&err, SqliteStoreError::MissingDirectory { dir: d, .. } if *d == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!dir.path().join("no").exists(), "nothing was created");
    let core = lease_core::Error::from(err);
    assert_eq!(core.kind(), ErrorKind::Store);
}

#[test]
fn a_directory_in_place_of_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    fs::create_dir(&path).unwrap();
    let err = open_err(&path);
    assert!(matches!(err, SqliteStoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("is a directory"), "{err}");
}

#[test]
fn running_as_root_is_reported() {
    // Not a check of the store: records in the test output which read-only cases were real.
    eprintln!(
        "running as root: {}; read-only files are refused by their mode bits here, and by \
         the kernel in tests/processes.rs (as an unprivileged child)",
        is_root()
    );
}
