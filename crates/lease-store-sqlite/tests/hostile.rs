//! Hostile data the other SQLite tests do not cover: rows edited by hand (garbage expiries,
//! holders and metadata, a boot that does not exist) and a file damaged while a store has it
//! open. Each case gives a clear error or treats the lease as not held, never panics, never
//! reports a false "held", and leaves the data as it was until a legitimate write replaces it.
//!
//! (Corrupt, truncated, read-only and newer-schema files at open are in `tests/sqlite.rs`.)

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lease_core::{ErrorKind, Key, Request, Store};
use lease_store_sqlite::{SqliteStore, SqliteStoreError};
use lease_testkit::FakeClock;
use rusqlite::Connection;
use tempfile::TempDir;

fn key(lease: &str) -> Key {
    Key::new("ns", "model", lease)
}

fn req(holder: &str) -> Request {
    Request::new(holder, Duration::from_secs(30))
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("leases.db")
}

fn open(path: &Path, clock: &FakeClock) -> SqliteStore {
    SqliteStore::builder(path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .busy_timeout(Duration::from_millis(50))
        .open()
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// A raw connection as a person with the `sqlite3` shell would have: no foreign keys, and
/// (for the metadata case) CHECK constraints switched off.
fn raw(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "foreign_keys", false).unwrap();
    conn.pragma_update(None, "ignore_check_constraints", true)
        .unwrap();
    conn
}

/// The lease row of `lease`, every column as text, exactly as stored.
fn row(path: &Path, lease: &str) -> Option<Vec<String>> {
    let conn = Connection::open(path).unwrap();
    conn.query_row(
        "SELECT quote(holder), quote(boot), quote(expiry), quote(generation), quote(metadata) \
         FROM lease WHERE namespace = 'ns' AND model = 'model' AND name = ?1",
        [lease],
        |r| (0..5).map(|i| r.get::<_, String>(i)).collect(),
    )
    .ok()
}

/// A database holding one valid claim of `lease` by `h`, closed.
async fn with_claim(path: &Path, clock: &FakeClock, lease: &str) {
    let mut store = open(path, clock);
    store.claim_lease(&key(lease), &req("h")).await.unwrap();
}

/// The ways a row can be edited by hand, and whether the store must still see it as held (the
/// edit left a well-formed, unexpired claim) or must refuse to read it.
struct Edit {
    name: &'static str,
    sql: &'static str,
    /// The row reads as a valid claim by `h` (the edit only touched what does not matter).
    still_held: bool,
}

const EDITS: [Edit; 7] = [
    Edit {
        name: "expiry as text",
        sql: "UPDATE lease SET expiry = 'tomorrow'",
        still_held: false,
    },
    Edit {
        name: "expiry as a real number",
        sql: "UPDATE lease SET expiry = 1.5",
        still_held: false,
    },
    Edit {
        name: "expiry as a blob",
        sql: "UPDATE lease SET expiry = x'0102'",
        still_held: false,
    },
    Edit {
        name: "holder as a blob",
        sql: "UPDATE lease SET holder = x'ff00fe'",
        still_held: false,
    },
    Edit {
        name: "generation as text",
        sql: "UPDATE lease SET generation = 'seven'",
        still_held: false,
    },
    Edit {
        name: "metadata not JSON",
        sql: "UPDATE lease SET metadata = '{not json'",
        still_held: true,
    },
    Edit {
        name: "boot from nowhere",
        sql: "UPDATE lease SET boot = 999",
        still_held: false,
    },
];

#[tokio::test]
async fn hand_edited_rows_give_clear_errors_or_read_as_not_held() {
    for edit in EDITS {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let clock = FakeClock::new();
        with_claim(&path, &clock, "a").await;
        raw(&path).execute_batch(edit.sql).unwrap();
        let before = row(&path, "a").expect("the edited row");
        let name = edit.name;
        // Opening checks the file's integrity (CHECK constraints included): a refusal there
        // is a clear error too, and must leave the file alone.
        let opened = SqliteStore::builder(&path)
            .clock(clock.as_clock())
            .boot_id("boot-a")
            .open();
        let mut store = match opened {
            Ok(store) => store,
            Err(e) => {
                assert!(
                    matches!(e, SqliteStoreError::Corrupt { .. }),
                    "{name}: {e:?}"
                );
                assert!(
                    e.to_string().contains(&path.display().to_string()),
                    "{name}: {e}"
                );
                assert_eq!(
                    row(&path, "a").as_ref(),
                    Some(&before),
                    "{name}: the row changed"
                );
                eprintln!("{name}: refused at open: {e}");
                continue;
            }
        };

        // A snapshot either fails with a clear store error or is honest.
        match store.leases(&[key("a")]).await {
            Ok(leases) => match leases.get(&key("a")) {
                Some(info) => {
                    assert!(edit.still_held, "{name}: reported held: {info:?}");
                    assert_eq!(info.holder, "h", "{name}");
                }
                None => assert!(!edit.still_held || name == "boot from nowhere", "{name}"),
            },
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Store, "{name}: {e}");
                assert!(
                    e.to_string().contains(&path.display().to_string()),
                    "{name}: the error does not name the file: {e}"
                );
            }
        }
        // Nobody else gets a lease the row may still grant; a row that cannot be read is
        // never taken over silently.
        let other = store.claim_lease(&key("a"), &req("other")).await;
        match &other {
            Ok(info) => {
                assert!(!edit.still_held, "{name}: claimed over a valid lease");
                assert_eq!(
                    name, "boot from nowhere",
                    "{name}: claimed over garbage: {info:?}"
                );
            }
            Err(e) if edit.still_held => assert!(e.is_held(), "{name}: {e}"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Store, "{name}: {e}"),
        }
        if other.is_err() {
            assert_eq!(
                row(&path, "a").as_ref(),
                Some(&before),
                "{name}: the row changed"
            );
        }
        // Neither does a holder's extend or revoke pass over garbage.
        if !edit.still_held && other.is_err() {
            assert!(
                store.extend_lease(&key("a"), &req("h")).await.is_err(),
                "{name}"
            );
            assert!(store.revoke_lease(&key("a"), "h").await.is_err(), "{name}");
            assert_eq!(
                row(&path, "a").as_ref(),
                Some(&before),
                "{name}: the row changed"
            );
        }
        eprintln!(
            "{name}: opened; claim by another: {:?}",
            other.map(|i| i.holder)
        );
        // The rest of the store works.
        store.claim_lease(&key("b"), &req("h")).await.unwrap();
    }
}

#[tokio::test]
async fn a_lease_from_an_unknown_boot_is_expired_and_generations_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let first = {
        let mut store = open(&path, &clock);
        store.claim_lease(&key("a"), &req("h")).await.unwrap()
    };
    raw(&path)
        .execute_batch("UPDATE lease SET boot = 999")
        .unwrap();
    let mut store = open(&path, &clock);
    assert!(store.leases(&[]).await.unwrap().is_empty());
    let next = store.claim_lease(&key("a"), &req("other")).await.unwrap();
    assert!(next.generation > first.generation);
}

#[tokio::test]
async fn an_empty_holder_is_an_invalid_name_not_a_holder() {
    // A hand edit the validation would never let through: the row still blocks other
    // claimants until it expires (it may be someone's real claim with a damaged name), but it
    // is never a holder anyone can check as, extend or revoke.
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    with_claim(&path, &clock, "a").await;
    raw(&path)
        .execute_batch("UPDATE lease SET holder = ''")
        .unwrap();
    let before = row(&path, "a").unwrap();
    let mut store = open(&path, &clock);
    let err = store
        .claim_lease(&key("a"), &req("other"))
        .await
        .unwrap_err();
    assert!(err.is_held(), "{err}");
    let err = store.revoke_lease(&key("a"), "").await.unwrap_err();
    assert!(err.is_validation(), "{err}");
    let err = store.extend_lease(&key("a"), &req("")).await.unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert_eq!(row(&path, "a").unwrap(), before);
    // It expires like any claim.
    clock.advance(Duration::from_secs(30));
    store.claim_lease(&key("a"), &req("other")).await.unwrap();
}

#[tokio::test]
async fn a_file_damaged_while_open_gives_clear_errors_never_a_false_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    for i in 0..200 {
        let request = req("h").with_metadata(serde_json::json!({"pad": "x".repeat(100)}));
        store
            .claim_lease(&key(&format!("l{i}")), &request)
            .await
            .unwrap();
    }
    // Checkpoint so the rows are in the main file, then scribble over every page but the
    // header and schema pages, under the open store.
    Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let len = bytes.len();
    assert!(len > 8 * 4096, "{len} bytes");
    for (i, b) in bytes[2 * 4096..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    fs::write(&path, &bytes).unwrap();
    let damaged = fs::read(&path).unwrap();

    // Every operation either fails clearly or, from pages it still has in memory, answers as
    // before; none panics and none hands a held lease to someone else.
    let mut errors = 0;
    for i in 0..200 {
        let k = key(&format!("l{i}"));
        match store.claim_lease(&k, &req("other")).await {
            Ok(info) => panic!("claimed {k} over h's lease from a damaged file: {info:?}"),
            Err(e) if e.is_held() => {}
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Store, "{e}");
                errors += 1;
            }
        }
    }
    match store.leases(&[]).await {
        Ok(all) => assert!(all.values().all(|i| i.holder == "h"), "{all:?}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Store, "{e}");
            errors += 1;
            let source = std::error::Error::source(&e).expect("a source");
            assert!(
                source.downcast_ref::<SqliteStoreError>().is_some(),
                "not the store's own error: {e}"
            );
        }
    }
    assert!(errors > 0, "the damage went unnoticed");
    assert_eq!(
        fs::read(&path).unwrap(),
        damaged,
        "the damaged file was written to"
    );
}

/// One edit made behind the store's back between two renewals of `a` by `h`, and what the
/// next renewal must answer: `Some((generation, pinned))` when the row still grants `h` the
/// lease, `None` when it must be refused as not held.
struct Behind {
    name: &'static str,
    sql: &'static str,
    renewed: Option<(u64, bool)>,
}

const BEHIND: [Behind; 8] = [
    Behind {
        name: "another holder",
        sql: "UPDATE lease SET holder = 'x' WHERE name = 'a'",
        renewed: None,
    },
    Behind {
        name: "another generation",
        sql: "UPDATE lease SET generation = 7 WHERE name = 'a'",
        renewed: Some((7, false)),
    },
    Behind {
        name: "expired",
        sql: "UPDATE lease SET expiry = -9223372036854775808 WHERE name = 'a'",
        renewed: None,
    },
    Behind {
        name: "another boot",
        sql: "UPDATE lease SET boot = 999 WHERE name = 'a'",
        renewed: None,
    },
    Behind {
        name: "new metadata",
        sql: "UPDATE lease SET metadata = '{\"by\":\"hand\"}' WHERE name = 'a'",
        renewed: Some((1, false)),
    },
    Behind {
        name: "pinned",
        sql: "INSERT INTO pin VALUES ('ns', 'model', 'a', 'e')",
        renewed: Some((1, true)),
    },
    Behind {
        name: "another session",
        sql: "UPDATE lease SET session = NULL WHERE name = 'a'",
        renewed: Some((1, false)),
    },
    Behind {
        name: "our session's row gone",
        sql: "DELETE FROM session",
        renewed: Some((1, false)),
    },
];

/// A renewal never answers from what the store knew before: the row is judged as it is in the
/// file when the renewal runs. The store remembers the rows it wrote (`own_rows.rs`) and
/// renews a remembered one with an `UPDATE` that matches holder, boot, expiry, generation and
/// session as remembered; its metadata and pins are trusted only while no other connection
/// has committed (`PRAGMA data_version`), so an edit of those alone is seen too.
/// Single renewals and batches alike, after the store has renewed the lease before the edit.
#[tokio::test]
async fn an_edit_between_renewals_is_seen_by_the_next_one() {
    for edit in BEHIND {
        for batched in [false, true] {
            let name = format!("{} (batched: {batched})", edit.name);
            let dir = tempfile::tempdir().unwrap();
            let path = db_path(&dir);
            let clock = FakeClock::new();
            let mut store = open(&path, &clock);
            store.claim_lease(&key("a"), &req("h")).await.unwrap();
            store.claim_lease(&key("b"), &req("h")).await.unwrap();
            // Renewed once before the edit: whatever the store could remember, it has.
            assert_eq!(
                store
                    .extend_lease(&key("a"), &req("h"))
                    .await
                    .unwrap()
                    .generation
                    .0,
                1
            );
            clock.advance(Duration::from_secs(1));
            raw(&path).execute_batch(edit.sql).unwrap();
            let before = row(&path, "a").unwrap();
            let renewal = if batched {
                let ops = ["a", "b"].map(|lease| lease_core::Op::Extend {
                    key: key(lease),
                    request: req("h"),
                });
                let mut out = store.apply(ops.to_vec()).await;
                assert!(out[1].is_ok(), "{name}: the other lease");
                out.swap_remove(0).map(|outcome| match outcome {
                    lease_core::Outcome::Extended(info) => info,
                    other => panic!("{name}: {other:?}"),
                })
            } else {
                store.extend_lease(&key("a"), &req("h")).await
            };
            match (edit.renewed, renewal) {
                (Some((generation, pinned)), Ok(info)) => {
                    assert_eq!(info.holder, "h", "{name}");
                    assert_eq!(info.generation.0, generation, "{name}");
                    assert_eq!(info.pinned, pinned, "{name}");
                    assert_eq!(
                        info.expiry,
                        clock.now().saturating_add(Duration::from_secs(30)),
                        "{name}"
                    );
                    let after = row(&path, "a").unwrap();
                    assert_eq!(after[3], generation.to_string(), "{name}: {after:?}");
                    let metadata = info
                        .metadata
                        .map_or_else(|| "NULL".to_owned(), |m| format!("'{m}'"));
                    assert_eq!(after[4], metadata, "{name}: the metadata answered");
                }
                (None, Err(e)) => {
                    assert!(e.is_invalid(), "{name}: {e}");
                    assert_eq!(row(&path, "a").unwrap(), before, "{name}: the row changed");
                }
                (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
            }
        }
    }
}
