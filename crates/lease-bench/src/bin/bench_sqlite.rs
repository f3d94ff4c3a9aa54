//! A small benchmark of the SQLite store, printed as a markdown table.
//!
//! It measures claims and extends per second with one op per transaction and batched through
//! [`Store::apply`] (batches of 1, 16 and 256), each beside a raw rusqlite loop doing one
//! autocommit `UPDATE` per op on an identical file in the same run (the "one transaction per op"
//! anchor), and claim latency with 1k and 1M leases present.
//!
//! ```text
//! cargo run --release -p lease-bench --bin bench_sqlite -- [--ops N] [--large N]
//! ```
//!
//! `--ops` sets the op count of each throughput row (default 2048); `--large` the size of the
//! big database (default 1,000,000). The files live in a temporary directory on the default
//! temp file system (`TMPDIR`), with the store's own settings (WAL, `synchronous = FULL`), so
//! the figures include an fsync per commit.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lease_bench::report::{Align, Table};
use lease_bench::stats::quantile;
use lease_bench::{fail, flag_pairs};
use lease_core::{Key, Op, Request, Store};
use lease_store_sqlite::SqliteStore;
use rusqlite::Connection;

const NAMESPACE: &str = "bench";
const MODEL: &str = "model";
const HOLDER: &str = "bench-holder";
const LONG: Duration = Duration::from_secs(3600);

fn key(prefix: &str, i: usize) -> Key {
    Key::new(NAMESPACE, MODEL, format!("{prefix}-{i}"))
}

/// Opens (creating) a store at `path` with `present` leases `pre-0..` already held, inserted
/// directly in one transaction so that a million take seconds, not minutes.
fn prepare(path: &Path, present: usize) -> SqliteStore {
    let store = SqliteStore::builder(path)
        .integrity_check(false)
        .open()
        .unwrap_or_else(|e| fail("opening the store", e));
    let mut raw = Connection::open(path).unwrap_or_else(|e| fail("opening raw", e));
    let tx = raw.transaction().unwrap_or_else(|e| fail("begin", e));
    {
        let boot: i64 = tx
            .query_row(
                "SELECT seq FROM boot WHERE boot_id = ?1",
                [store.boot_id()],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| fail("reading the boot", e));
        let mut generation = tx
            .prepare("INSERT INTO generation (namespace, model, name, last) VALUES (?1, ?2, ?3, 1)")
            .unwrap_or_else(|e| fail("prepare", e));
        // An expiry of i64::MAX is the latest instant in the stored encoding: never expires.
        let mut lease = tx
            .prepare(
                "INSERT INTO lease (namespace, model, name, holder, boot, expiry, generation, \
                 expiry_bound) VALUES (?1, ?2, ?3, ?4, ?5, 9223372036854775807, 1, \
                 9223372036854775807)",
            )
            .unwrap_or_else(|e| fail("prepare", e));
        for i in 0..present {
            let name = format!("pre-{i}");
            generation
                .execute([NAMESPACE, MODEL, &name])
                .unwrap_or_else(|e| fail("insert", e));
            lease
                .execute(rusqlite::params![NAMESPACE, MODEL, name, HOLDER, boot])
                .unwrap_or_else(|e| fail("insert", e));
        }
    }
    tx.commit().unwrap_or_else(|e| fail("commit", e));
    // Fold the big insert's WAL into the file now, so no measured commit pays for it.
    raw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap_or_else(|e| fail("checkpoint", e));
    store
}

/// The anchor: one autocommit `UPDATE` per op on a file like the store's, `ops` times.
fn raw_updates(path: &Path, ops: usize) -> f64 {
    let conn = Connection::open(path).unwrap_or_else(|e| fail("opening raw", e));
    conn.pragma_update(None, "synchronous", "FULL")
        .unwrap_or_else(|e| fail("pragma", e));
    let mut stmt = conn
        .prepare_cached(
            "UPDATE lease SET expiry = ?4 WHERE namespace = ?1 AND model = ?2 AND name = ?3",
        )
        .unwrap_or_else(|e| fail("prepare", e));
    let names: Vec<String> = (0..ops).map(|i| format!("pre-{i}")).collect();
    let start = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let expiry = i64::MAX - i64::try_from(i).unwrap_or(0);
        let changed = stmt
            .execute(rusqlite::params![NAMESPACE, MODEL, name, expiry])
            .unwrap_or_else(|e| fail("update", e));
        assert_eq!(changed, 1);
    }
    per_second(ops, start.elapsed())
}

fn per_second(ops: usize, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

/// Runs `ops` claims (of new keys) or extends (of the present ones) in batches of `batch`.
async fn store_ops(store: &mut SqliteStore, claim: bool, ops: usize, batch: usize) -> f64 {
    let request = Request::new(HOLDER, LONG);
    let all: Vec<Op> = (0..ops)
        .map(|i| {
            if claim {
                Op::Claim {
                    key: key("new", i),
                    request: request.clone(),
                }
            } else {
                Op::Extend {
                    key: key("pre", i),
                    request: request.clone(),
                }
            }
        })
        .collect();
    let start = Instant::now();
    if batch == 1 {
        for op in &all {
            let ok = match op {
                Op::Claim { key, request } => store.claim_lease(key, request).await.is_ok(),
                Op::Extend { key, request } => store.extend_lease(key, request).await.is_ok(),
                Op::Revoke { .. } => false,
            };
            assert!(ok, "{op:?} failed");
        }
    } else {
        for chunk in all.chunks(batch) {
            let results = store.apply(chunk.to_vec()).await;
            assert!(results.iter().all(Result::is_ok), "a batched op failed");
        }
    }
    per_second(ops, start.elapsed())
}

struct Row {
    what: String,
    ops: usize,
    store: f64,
    raw: f64,
}

async fn throughput(dir: &Path, ops: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for (claim, name) in [(true, "claim"), (false, "extend")] {
        for batch in [1, 16, 256] {
            let store_path = dir.join(format!("{name}-{batch}.db"));
            let raw_path = dir.join(format!("{name}-{batch}-raw.db"));
            let mut store = prepare(&store_path, ops);
            drop(prepare(&raw_path, ops));
            let store_rate = store_ops(&mut store, claim, ops, batch).await;
            let raw_rate = raw_updates(&raw_path, ops);
            let what = if batch == 1 {
                format!("{name}s, 1 op per transaction")
            } else {
                format!("{name}s, `apply` batches of {batch}")
            };
            rows.push(Row {
                what,
                ops,
                store: store_rate,
                raw: raw_rate,
            });
        }
    }
    rows
}

struct Latency {
    present: usize,
    setup: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn latency(dir: &Path, present: usize, samples: usize) -> Latency {
    let path: PathBuf = dir.join(format!("latency-{present}.db"));
    let start = Instant::now();
    let mut store = prepare(&path, present);
    let setup = start.elapsed();
    let request = Request::new(HOLDER, LONG);
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let key = key("new", i);
        let start = Instant::now();
        store
            .claim_lease(&key, &request)
            .await
            .unwrap_or_else(|e| fail("claim", e));
        times.push(start.elapsed());
    }
    times.sort();
    let at = |q: f64| quantile(&times, q).unwrap_or_default();
    Latency {
        present,
        setup,
        p50: at(0.5),
        p99: at(0.99),
        max: at(1.0),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (mut ops, mut large) = (2048, 1_000_000);
    for (flag, value) in flag_pairs(std::env::args().skip(1)).unwrap_or_else(|e| fail("usage", e)) {
        let n = value.parse().unwrap_or_else(|e| fail(&flag, e));
        match flag.as_str() {
            "--ops" => ops = n,
            "--large" => large = n,
            other => fail("unknown argument", other),
        }
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail("temp dir", e));

    println!("## lease-store-sqlite\n");
    let mut table = Table::new(&[
        ("measurement", Align::Left),
        ("ops", Align::Right),
        ("store ops/s", Align::Right),
        ("raw autocommit UPDATE ops/s", Align::Right),
        ("store / raw", Align::Right),
    ]);
    for row in throughput(dir.path(), ops).await {
        table.row([
            row.what,
            row.ops.to_string(),
            format!("{:.0}", row.store),
            format!("{:.0}", row.raw),
            format!("{:.2}×", row.store / row.raw),
        ]);
    }
    println!("{table}");
    let mut table = Table::new(&[
        ("claim latency, 1 op per transaction", Align::Left),
        ("setup", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("max", Align::Right),
    ]);
    for present in [1_000, large] {
        let l = latency(dir.path(), present, 1000).await;
        table.row([
            format!("{} leases present", l.present),
            format!("{:.2?}", l.setup),
            format!("{:.2?}", l.p50),
            format!("{:.2?}", l.p99),
            format!("{:.2?}", l.max),
        ]);
    }
    print!("{table}");
}
