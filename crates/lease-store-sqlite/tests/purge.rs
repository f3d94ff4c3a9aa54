//! When writes purge expired rows: a backlog is worked off a batch at a time, every 64 writes;
//! once a purge has caught up, the next waits a second on the store's clock, so batches of
//! more than 64 ops (the manager's) do not scan for expired rows in every transaction.

use std::path::Path;
use std::time::Duration;

use lease_core::{Key, Op, Request, Store};
use lease_store_sqlite::SqliteStore;
use lease_testkit::FakeClock;
use rusqlite::Connection;

fn key(lease: &str) -> Key {
    Key::new("ns", "model", lease)
}

fn req(ttl: Duration) -> Request {
    Request::new("h", ttl)
}

const HOUR: Duration = Duration::from_secs(3600);

fn rows(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM lease", [], |r| r.get(0))
        .unwrap()
}

/// One transaction renewing `busy` 100 times: more writes than a purge waits for.
async fn batch(store: &mut SqliteStore) {
    let ops = vec![
        Op::Extend {
            key: key("busy"),
            request: req(HOUR),
        };
        100
    ];
    assert!(store.apply(ops).await.iter().all(Result::is_ok));
}

/// `count` leases of `ttl` named `prefix0`, `prefix1`, …, claimed in one batch.
async fn claim_many(store: &mut SqliteStore, prefix: &str, count: usize, ttl: Duration) {
    let ops = (0..count)
        .map(|i| Op::Claim {
            key: key(&format!("{prefix}{i}")),
            request: req(ttl),
        })
        .collect();
    assert!(store.apply(ops).await.iter().all(Result::is_ok));
}

#[tokio::test]
async fn a_backlog_is_purged_every_batch_and_then_once_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let clock = FakeClock::new();
    let mut store = SqliteStore::builder(&path)
        .clock(clock.as_clock())
        .boot_id("boot-a")
        .purge_batch(10)
        .open()
        .unwrap();
    store.claim_lease(&key("busy"), &req(HOUR)).await.unwrap();
    claim_many(&mut store, "old", 25, Duration::from_secs(1)).await;
    clock.advance(Duration::from_secs(2));
    // The first batch purges 10 of the 25 expired rows; a full purge means more may be left,
    // so each next batch purges again until one finds fewer than 10.
    let mut left = Vec::new();
    for _ in 0..4 {
        batch(&mut store).await;
        left.push(rows(&path));
    }
    assert_eq!(left, [1 + 15, 1 + 5, 1, 1]);

    // Caught up (at the third batch): rows that expire now wait for the pause to end,
    // however many batches pass.
    claim_many(&mut store, "new", 5, Duration::from_millis(100)).await;
    clock.advance(Duration::from_millis(200));
    for _ in 0..3 {
        batch(&mut store).await;
        assert_eq!(
            rows(&path),
            1 + 5,
            "purged within a second of the last purge"
        );
    }
    clock.advance(Duration::from_millis(900));
    batch(&mut store).await;
    assert_eq!(rows(&path), 1, "purged once the second had passed");
}
