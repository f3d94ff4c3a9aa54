//! Damage and the cost of opening: opening checks only what is O(1) (header, application id,
//! schema version), so damage in the lease pages is met by the operation that reads it, which
//! fails clearly (never a panic, never a lease granted over it); [`check_file`] finds it on
//! demand, read-only.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lease_core::{ErrorKind, Key, Op, Request, Store};
use lease_store_sqlite::{SqliteStore, SqliteStoreError, check_file};
use lease_testkit::FakeClock;
use rusqlite::Connection;

const PAGE: usize = 4096;

fn key(i: usize) -> Key {
    Key::new("ns", "model", format!("lease-{i}"))
}

fn open(path: &Path, clock: &FakeClock) -> Result<SqliteStore, SqliteStoreError> {
    SqliteStore::builder(path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .busy_timeout(Duration::from_millis(50))
        .open()
}

/// A closed, checkpointed database with `n` leases held by `h` (with some metadata, so they
/// span many pages).
async fn many_leases(path: &Path, clock: &FakeClock, n: usize) {
    let mut store = open(path, clock).unwrap();
    let ops: Vec<Op> = (0..n)
        .map(|i| Op::Claim {
            key: key(i),
            request: Request::new("h", Duration::from_secs(3600))
                .with_metadata(serde_json::json!({"pad": "x".repeat(64)})),
        })
        .collect();
    for chunk in ops.chunks(500) {
        for result in store.apply(chunk.to_vec()).await {
            result.unwrap();
        }
    }
    drop(store);
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

/// Scribbles over the second half of the file's pages: lease, index and generation pages
/// only. The header, the schema and the boot table live in the first pages and stay intact,
/// so nothing opening looks at is damaged.
fn damage_lease_pages(path: &Path) -> Vec<u8> {
    let mut bytes = fs::read(path).unwrap();
    let pages = bytes.len() / PAGE;
    assert!(pages > 40, "{pages} pages");
    for (i, b) in bytes[pages / 2 * PAGE..].iter_mut().enumerate() {
        *b = u8::try_from(i % 251).unwrap();
    }
    fs::write(path, &bytes).unwrap();
    bytes
}

fn corrupt_source(err: &lease_core::Error) -> bool {
    matches!(
        std::error::Error::source(err).and_then(|s| s.downcast_ref::<SqliteStoreError>()),
        Some(SqliteStoreError::Corrupt { .. })
    )
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("leases.db")
}

#[tokio::test]
async fn opening_does_not_scan_and_damage_is_met_by_the_operations() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let clock = FakeClock::new();
    many_leases(&path, &clock, 3000).await;
    let damaged = damage_lease_pages(&path);

    // Opening reads only the header and the first pages: it succeeds, O(1).
    let mut store = open(&path, &clock).expect("opening checks only what is O(1)");

    // Every operation meeting the damage fails with the damaged-database error; none grants a
    // lease h holds, none panics.
    let mut corrupt = 0;
    for i in (0..3000).step_by(97) {
        match store
            .claim_lease(&key(i), &Request::new("other", Duration::from_secs(10)))
            .await
        {
            Ok(info) => panic!(
                "claimed {} over h's lease in a damaged file: {info:?}",
                key(i)
            ),
            Err(e) if e.is_held() => {}
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Store, "{e}");
                assert!(corrupt_source(&e), "not the damaged-database error: {e}");
                assert!(e.to_string().contains("damaged database"), "{e}");
                corrupt += 1;
            }
        }
    }
    assert!(corrupt > 0, "no claim met the damage");
    let err = store.leases(&[]).await.unwrap_err();
    assert!(corrupt_source(&err), "{err}");
    assert_eq!(
        fs::read(&path).unwrap(),
        damaged,
        "the damaged file was written"
    );
    drop(store);

    // The full check finds it, and writes nothing either.
    let err = check_file(&path).unwrap_err();
    match &err {
        SqliteStoreError::Corrupt { path: p, detail } => {
            assert_eq!(p, &path);
            assert!(!detail.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fs::read(&path).unwrap(),
        damaged,
        "the check wrote to the file"
    );

    // Asking for the scan at open refuses it up front.
    let err = SqliteStore::builder(&path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .integrity_check(true)
        .open()
        .unwrap_err();
    assert!(matches!(err, SqliteStoreError::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn a_sound_file_passes_the_check_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let clock = FakeClock::new();
    many_leases(&path, &clock, 200).await;
    let before = fs::read(&path).unwrap();
    let report = check_file(&path).unwrap();
    assert_eq!(report.lease_rows, 200);
    assert_eq!(report.schema_version, lease_store_sqlite::SCHEMA_VERSION);
    assert_eq!(report.path, path);
    assert!(report.pages > 1);
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn the_check_never_creates_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let err = check_file(&path).unwrap_err();
    assert!(matches!(err, SqliteStoreError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(!path.exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_check_refuses_what_is_not_a_lease_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    fs::write(&path, vec![7u8; 3 * PAGE]).unwrap();
    let err = check_file(&path).unwrap_err();
    assert!(
        matches!(err, SqliteStoreError::NotADatabase { .. }),
        "{err:?}"
    );
    let other = dir.path().join("other.db");
    let conn = Connection::open(&other).unwrap();
    conn.execute_batch("CREATE TABLE t (x)").unwrap();
    drop(conn);
    let err = check_file(&other).unwrap_err();
    assert!(
        matches!(err, SqliteStoreError::ForeignDatabase { .. }),
        "{err:?}"
    );
}

fn wal(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// `many_leases`, then one claim through a store that keeps its log at close: the file is
/// left with a log holding a few of its pages, as `lease run` leaves it.
async fn with_kept_log(path: &Path, clock: &FakeClock) {
    many_leases(path, clock, 3000).await;
    let mut store = SqliteStore::builder(path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .checkpoint_on_close(false)
        .open()
        .unwrap();
    store
        .claim_lease(&key(5000), &Request::new("k", Duration::from_secs(60)))
        .await
        .unwrap();
    drop(store);
    assert!(
        fs::metadata(wal(path)).is_ok_and(|m| m.len() > 0),
        "the log was not kept"
    );
}

#[tokio::test]
async fn a_kept_log_holds_every_commit_and_the_next_default_close_folds_it_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let clock = FakeClock::new();
    with_kept_log(&path, &clock).await;
    let mut store = open(&path, &clock).unwrap();
    let seen = store.leases(&[key(5000)]).await.unwrap();
    assert_eq!(seen[&key(5000)].holder, "k");
    drop(store);
    assert!(!wal(&path).exists(), "the default close keeps the log");
    let report = check_file(&path).unwrap();
    assert_eq!(report.lease_rows, 3001);
}

#[tokio::test]
async fn a_damaged_file_met_by_an_operation_is_not_checkpointed_into() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let clock = FakeClock::new();
    with_kept_log(&path, &clock).await;
    let damaged = damage_lease_pages(&path);
    let log = fs::read(wal(&path)).unwrap();

    // A store that checkpoints at close meets the damage...
    let mut store = open(&path, &clock).unwrap();
    let err = store.leases(&[]).await.unwrap_err();
    assert!(corrupt_source(&err), "{err}");
    // ... and then neither a later write of its own nor its close copies the log into the
    // damaged file.
    let _ = store
        .claim_lease(&key(5001), &Request::new("k", Duration::from_secs(60)))
        .await;
    drop(store);
    assert_eq!(
        fs::read(&path).unwrap(),
        damaged,
        "the damaged file was written"
    );
    assert!(
        fs::read(wal(&path)).unwrap().starts_with(&log),
        "the log was rewritten"
    );
}

#[tokio::test]
async fn a_file_refused_at_open_is_not_checkpointed_into() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let clock = FakeClock::new();
    with_kept_log(&path, &clock).await;
    let damaged = damage_lease_pages(&path);
    let log = fs::read(wal(&path)).unwrap();
    let err = SqliteStore::builder(&path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .integrity_check(true)
        .open()
        .unwrap_err();
    assert!(matches!(err, SqliteStoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(
        fs::read(&path).unwrap(),
        damaged,
        "the damaged file was written"
    );
    assert_eq!(fs::read(wal(&path)).unwrap(), log, "the log was changed");
}
