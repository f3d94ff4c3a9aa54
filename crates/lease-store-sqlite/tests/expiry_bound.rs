//! The expiry bound (schema version 5): the indexed `expiry_bound` column that renewals leave
//! alone while they stay under it. Checked here: where the bound stands after claims and
//! renewals (remembered rows, rows read back, rows renewed by another connection), that it never
//! falls below the expiry (the table's `CHECK` refuses a hand edit that would put it there), and
//! that what is judged on it (purges, listings, the boot's `live_until_wall`) stays true when it
//! is late, or when a hand edit with the `CHECK` switched off broke it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lease_core::{Key, Op, Request, Store};
use lease_store_sqlite::SqliteStore;
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

fn nanos(s: u64) -> i64 {
    i64::try_from(secs(s).as_nanos()).unwrap()
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("leases.db")
}

fn open(path: &Path, clock: &FakeClock) -> SqliteStore {
    SqliteStore::builder(path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .purge_batch(0)
        .busy_timeout(Duration::from_millis(50))
        .open()
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// `(expiry, expiry_bound)` of `lease`'s row, as stored (both shifted by the same 2^63, so
/// their differences are durations in nanoseconds).
fn stored(path: &Path, lease: &str) -> (i64, i64) {
    Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT expiry, expiry_bound FROM lease WHERE name = ?1",
            [lease],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

/// Rows whose integer expiry is past their bound: none, ever, outside a hand edit.
fn past_their_bound(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM lease WHERE typeof(expiry) = 'integer' AND expiry > expiry_bound",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test]
async fn renewals_under_the_bound_leave_it_and_one_past_it_moves_it_a_duration_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);

    // A claim's bound is its expiry: a lease nobody renews is purged at its expiry.
    store.claim_lease(&key("a"), &req("h", 10)).await.unwrap();
    let (claimed, bound) = stored(&path, "a");
    assert_eq!(bound, claimed);

    // The first renewal passes it: the bound moves one duration past the new expiry.
    clock.advance(secs(1));
    let info = store.extend_lease(&key("a"), &req("h", 10)).await.unwrap();
    let (expiry, bound) = stored(&path, "a");
    assert_eq!(expiry - claimed, nanos(1));
    assert_eq!(bound - expiry, nanos(10));
    assert_eq!(info.expiry, clock.now().saturating_add(secs(10)));

    // Renewals under it leave it (each through the remembered row, and through a batch).
    let first_bound = bound;
    for step in 1..=9 {
        clock.advance(secs(1));
        if step % 2 == 0 {
            store.extend_lease(&key("a"), &req("h", 10)).await.unwrap();
        } else {
            let results = store
                .apply(vec![Op::Extend {
                    key: key("a"),
                    request: req("h", 10),
                }])
                .await;
            assert!(results[0].is_ok(), "{results:?}");
        }
        let (now_expiry, now_bound) = stored(&path, "a");
        assert_eq!(now_expiry - expiry, nanos(step), "step {step}");
        assert_eq!(now_bound, first_bound, "step {step}: the bound moved");
    }

    // The renewal that passes it again moves it again.
    clock.advance(secs(2));
    store.extend_lease(&key("a"), &req("h", 10)).await.unwrap();
    let (last_expiry, last_bound) = stored(&path, "a");
    assert!(last_expiry > first_bound);
    assert_eq!(last_bound - last_expiry, nanos(10));
    assert_eq!(past_their_bound(&path), 0);
}

#[tokio::test]
async fn a_renewal_after_another_connections_commit_reads_the_bound_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    let mut other = open(&path, &clock);
    store.claim_lease(&key("a"), &req("h", 10)).await.unwrap();
    clock.advance(secs(1));
    store.extend_lease(&key("a"), &req("h", 10)).await.unwrap();
    let (_, bound) = stored(&path, "a");
    for step in 0..4 {
        // Another connection's commit: this store forgets the rows it remembered, so its next
        // renewal reads the row (and its bound) back.
        other
            .claim_lease(&key(&format!("other{step}")), &req("o", 10))
            .await
            .unwrap();
        clock.advance(secs(1));
        store.extend_lease(&key("a"), &req("h", 10)).await.unwrap();
        assert_eq!(stored(&path, "a").1, bound, "step {step}: the bound moved");
    }
    clock.advance(secs(7));
    other
        .claim_lease(&key("other"), &req("o", 10))
        .await
        .unwrap();
    store.extend_lease(&key("a"), &req("h", 10)).await.unwrap();
    let (expiry, moved) = stored(&path, "a");
    assert_eq!(moved - expiry, nanos(10));
    assert_eq!(past_their_bound(&path), 0);
}

#[tokio::test]
async fn a_hand_edit_that_would_put_the_expiry_past_the_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    store.claim_lease(&key("a"), &req("h", 10)).await.unwrap();
    let before = stored(&path, "a");
    let e = Connection::open(&path)
        .unwrap()
        .execute("UPDATE lease SET expiry = expiry + 1 WHERE name = 'a'", [])
        .unwrap_err();
    assert!(e.to_string().contains("CHECK constraint failed"), "{e}");
    assert_eq!(stored(&path, "a"), before);
}

/// With the `CHECK` switched off (as `sqlite3` allows), a bound edited below the expiry makes
/// the row look purgeable by the index: the purge checks the expiry itself and keeps the live
/// row, and the next renewal puts the bound right.
#[tokio::test]
async fn a_bound_edited_below_the_expiry_never_gets_a_live_lease_purged() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    store.claim_lease(&key("a"), &req("h", 100)).await.unwrap();
    let raw = Connection::open(&path).unwrap();
    raw.pragma_update(None, "ignore_check_constraints", true)
        .unwrap();
    raw.execute(
        "UPDATE lease SET expiry_bound = -9223372036854775808 WHERE name = 'a'",
        [],
    )
    .unwrap();
    clock.advance(secs(10));
    assert_eq!(store.purge_expired(100).await.unwrap(), 0);
    let taken = store.claim_lease(&key("a"), &req("other", 100)).await;
    assert!(taken.is_err_and(|e| e.is_held()));
    store.extend_lease(&key("a"), &req("h", 100)).await.unwrap();
    let (expiry, bound) = stored(&path, "a");
    assert_eq!(bound - expiry, nanos(100));
}

/// A renewed lease past its expiry but not yet its bound: expired to every reader and listing,
/// purged once past its bound.
#[tokio::test]
async fn a_lease_past_its_expiry_but_under_its_bound_is_expired_and_purged_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    store.claim_lease(&key("a"), &req("h", 10)).await.unwrap();
    clock.advance(secs(5));
    store.extend_lease(&key("a"), &req("h", 10)).await.unwrap();
    // Expiry at 15 s, bound at 25 s.
    clock.advance(secs(11));
    assert!(store.leases(&[]).await.unwrap().is_empty());
    assert!(store.leases(&[key("a")]).await.unwrap().is_empty());
    assert!(store.extend_lease(&key("a"), &req("h", 10)).await.is_err());
    assert_eq!(store.purge_expired(100).await.unwrap(), 0);
    clock.advance(secs(9));
    assert_eq!(store.purge_expired(100).await.unwrap(), 1);
    // Claimed again, by anyone.
    store.claim_lease(&key("a"), &req("o", 10)).await.unwrap();
}

/// What this boot records for another kernel (`live_until_wall`) is at or after its latest
/// expiry, by at most one lease duration: late, never early.
#[tokio::test]
async fn the_boots_live_until_is_at_or_after_its_latest_expiry_by_at_most_a_duration() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = FakeClock::new();
    let mut store = open(&path, &clock);
    let live_for = |path: &Path| -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT live_until_wall - last_write_wall FROM boot WHERE boot_id = 'boot-a'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    store.claim_lease(&key("a"), &req("h", 10)).await.unwrap();
    assert_eq!(live_for(&path), nanos(10));
    for _ in 0..12 {
        clock.advance(secs(1));
        store.extend_lease(&key("a"), &req("h", 10)).await.unwrap();
        let live = live_for(&path);
        assert!(live >= nanos(10), "{live}");
        assert!(live <= nanos(20), "{live}");
    }
}
