//! Benchmark of the lease manager, printed as a markdown table (run in release mode; `cargo
//! xtask bench` runs it).
//!
//! ```text
//! cargo run --release -p lease-bench --bin bench_manager -- [--secs S] [--leases N]
//!     [--dir DIR] [--throughput-only true] [--claimers 1,16,256]
//! ```
//!
//! `--dir` puts every database file (the manager's and the raw baselines') in a temp dir under
//! DIR instead of the system's temp dir: `--dir /dev/shm` (tmpfs, where `fsync` costs
//! nothing) separates the CPU cost from the disk's with the same settings on both sides.
//! `--throughput-only true` stops after the throughput rows (for profiling); `--claimers` picks
//! which claimer counts' rows run (all three by default; the ratios need 256).
//!
//! - **Throughput**: claims+extends per second through the manager on an SQLite file (WAL,
//!   `synchronous = FULL`, as the store sets it) with 1, 16 and 256 concurrent claimers, each
//!   renewing its own lease in a loop, beside two raw rusqlite loops on identical files in the
//!   same run: one `BEGIN IMMEDIATE` transaction per op (Juju's one transaction per op), and
//!   256 ops to a transaction over 256 leases (the manager's group commit without the manager).
//! - **`Token::check`**: median per call of the synchronous fast path
//!   ([`ManagerToken::check_now`]), of the async [`Token::check`] answered from memory, and of
//!   a check through the worker to the store ([`ManagerToken::check_store`]).
//! - **Expiry → wake**: p50/p99 from a lease's expiry to its `wait_until_expired` caller
//!   running again, with [`SystemClock`] and the SQLite store, in process.
//! - **Memory per lease**: the resident-set growth (`/proc/self/statm`) of a manager over a
//!   store that keeps nothing (so the figure is the manager's own), divided by the number of
//!   live leases it holds (default 100k). `unsafe` is forbidden in the workspace, which rules
//!   out a counting global allocator; RSS includes allocator slack, so it over-states.
//! - **Idle CPU**: user+system time (`/proc/self/stat`, in USER_HZ = 100 ticks/s) over a few
//!   seconds while the SQLite manager holds its leases and nothing asks it for anything (it
//!   still polls the store for other processes' changes every refresh interval).
//!
//! [`ManagerToken::check_now`]: lease_manager::ManagerToken::check_now
//! [`ManagerToken::check_store`]: lease_manager::ManagerToken::check_store
//! [`Token::check`]: lease_core::Token::check

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lease_bench::host::{cpu_time, load_average, rss_bytes};
use lease_bench::report::Table;
use lease_bench::stats::{median, quantile, sort};
use lease_bench::{fail, flag_pairs};
use lease_core::{
    CancellationToken, Claimer, Clock, DefaultSecretary, Facades as _, Generation, Info, Key, Op,
    Outcome, Request, Result, Store, SystemClock, Timestamp, Token as _,
};
use lease_manager::{Manager, ManagerConfig};
use lease_store_sqlite::SqliteStore;
use rusqlite::Connection;

const NS: &str = "bench";
const MODEL: &str = "model";
const LONG: Duration = Duration::from_secs(3600);

struct Args {
    secs: f64,
    leases: usize,
    dir: Option<std::path::PathBuf>,
    throughput_only: bool,
    claimers: Vec<usize>,
}

fn args() -> Args {
    let mut args = Args {
        secs: 2.0,
        leases: 100_000,
        dir: None,
        throughput_only: false,
        claimers: vec![1, 16, 256],
    };
    let pairs = flag_pairs(std::env::args().skip(1)).unwrap_or_else(|e| fail("usage", e));
    for (flag, value) in pairs {
        match flag.as_str() {
            "--secs" => args.secs = value.parse().unwrap_or_else(|e| fail("--secs", e)),
            "--leases" => args.leases = value.parse().unwrap_or_else(|e| fail("--leases", e)),
            "--dir" => args.dir = Some(value.into()),
            "--throughput-only" => {
                args.throughput_only = value
                    .parse()
                    .unwrap_or_else(|e| fail("--throughput-only", e));
            }
            "--claimers" => {
                args.claimers = value
                    .split(',')
                    .map(|n| n.trim().parse().unwrap_or_else(|e| fail("--claimers", e)))
                    .collect();
            }
            other => fail("unknown argument", other),
        }
    }
    args
}

fn manager_on(store: impl Store + 'static, clock: Arc<dyn Clock>) -> Manager {
    let config =
        ManagerConfig::new(store, clock).with_default_secretary(Arc::new(DefaultSecretary));
    Manager::start(config).unwrap_or_else(|e| fail("starting the manager", e))
}

fn open_sqlite(path: &Path) -> SqliteStore {
    SqliteStore::builder(path)
        .integrity_check(false)
        .open()
        .unwrap_or_else(|e| fail("opening the store", e))
}

/// Claims+extends per second with `claimers` tasks, each renewing its own lease.
async fn manager_throughput(claimer: Arc<dyn Claimer>, claimers: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..claimers)
        .map(|i| {
            let (claimer, stop, done) =
                (Arc::clone(&claimer), Arc::clone(&stop), Arc::clone(&done));
            tokio::spawn(async move {
                let lease = format!("c{claimers}-{i}");
                let request = Request::new(format!("holder-{i}"), LONG);
                while !stop.load(Ordering::Relaxed) {
                    claimer
                        .claim(&lease, request.clone())
                        .await
                        .unwrap_or_else(|e| fail("claiming", e));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap_or_else(|e| fail("claimer task", e));
    }
    n as f64 / elapsed
}

/// Claims-or-extends per second on a raw connection, `per_txn` of them to a `BEGIN IMMEDIATE`
/// transaction, over `leases` lease names in turn: 1 per transaction is Juju's one transaction
/// per op; 256 over 256 leases is what the manager's group commit does with 256 claimers, minus
/// the manager.
fn raw_rusqlite(path: &Path, secs: f64, per_txn: usize, leases: u64) -> f64 {
    let conn = Connection::open(path).unwrap_or_else(|e| fail("raw open", e));
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL,
             expiry INTEGER NOT NULL, generation INTEGER NOT NULL);",
    )
    .unwrap_or_else(|e| fail("raw schema", e));
    let clock = SystemClock::new();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        conn.execute_batch("BEGIN IMMEDIATE")
            .unwrap_or_else(|e| fail("raw begin", e));
        for _ in 0..per_txn {
            let now = clock.now().as_nanos() as i64;
            let expiry = now + LONG.as_nanos() as i64;
            let name = format!("raw-{}", n % leases);
            let current: Option<(String, i64, i64)> = conn
                .prepare_cached("SELECT holder, expiry, generation FROM lease WHERE name = ?1")
                .and_then(|mut s| s.query_row([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
                .ok();
            match current {
                Some((holder, e, _)) if holder == "h" && e > now => conn
                    .prepare_cached("UPDATE lease SET expiry = max(expiry, ?2) WHERE name = ?1")
                    .and_then(|mut s| s.execute(rusqlite::params![name, expiry]))
                    .unwrap_or_else(|e| fail("raw extend", e)),
                other => conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO lease (name, holder, expiry, generation)
                         VALUES (?1, 'h', ?2, ?3)",
                    )
                    .and_then(|mut s| {
                        s.execute(rusqlite::params![
                            name,
                            expiry,
                            other.map_or(1, |o| o.2 + 1)
                        ])
                    })
                    .unwrap_or_else(|e| fail("raw claim", e)),
            };
            n += 1;
        }
        conn.execute_batch("COMMIT")
            .unwrap_or_else(|e| fail("raw commit", e));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    quantile(sorted, q).unwrap_or_default()
}

/// Nanoseconds per call of `f`, median over samples of `per_sample` calls.
fn time_sync(samples: usize, per_sample: usize, mut f: impl FnMut()) -> f64 {
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        for _ in 0..per_sample {
            f();
        }
        v.push(start.elapsed().as_nanos() as f64 / per_sample as f64);
    }
    median(v)
}

/// A store that keeps nothing: every claim and extend succeeds. For measuring the manager's
/// own memory.
#[derive(Debug)]
struct NullStore {
    clock: Arc<dyn Clock>,
    generation: u64,
}

impl NullStore {
    fn info(&mut self, request: &Request, claim: bool) -> Info {
        if claim {
            self.generation += 1;
        }
        Info {
            holder: request.holder.clone(),
            expiry: self.clock.now().saturating_add(request.duration),
            generation: Generation(self.generation),
            metadata: None,
            pinned: false,
        }
    }
}

#[async_trait]
impl Store for NullStore {
    async fn claim_lease(&mut self, _key: &Key, request: &Request) -> Result<Info> {
        Ok(self.info(request, true))
    }
    async fn extend_lease(&mut self, _key: &Key, request: &Request) -> Result<Info> {
        Ok(self.info(request, false))
    }
    async fn revoke_lease(&mut self, _key: &Key, _holder: &str) -> Result<()> {
        Ok(())
    }
    async fn leases(&mut self, _keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        Ok(BTreeMap::new())
    }
    async fn lease_group(&mut self, _ns: &str, _model: &str) -> Result<BTreeMap<Key, Info>> {
        Ok(BTreeMap::new())
    }
    async fn pin_lease(&mut self, _key: &Key, _entity: &str) -> Result<()> {
        Ok(())
    }
    async fn unpin_lease(&mut self, _key: &Key, _entity: &str) -> Result<()> {
        Ok(())
    }
    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        Ok(BTreeMap::new())
    }
    async fn poll_changes(&mut self) -> Result<bool> {
        Ok(false)
    }
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        ops.into_iter()
            .map(|op| {
                Ok(match op {
                    Op::Claim { request, .. } => Outcome::Claimed(self.info(&request, true)),
                    Op::Extend { request, .. } => Outcome::Extended(self.info(&request, false)),
                    Op::Revoke { .. } => Outcome::Revoked,
                })
            })
            .collect()
    }
}

/// The 256-claimer row against the raw baselines: ops/s ÷ raw, ops/s ÷ raw batched, and
/// ops per CPU second ÷ raw batched's.
#[derive(Debug, Default)]
struct Ratios {
    raw: f64,
    batched: f64,
    batched_cpu: f64,
}

/// Microseconds of this process's CPU time per op since `before`, over `ops` ops.
fn cpu_per_op(before: Duration, ops: f64) -> f64 {
    cpu_time().saturating_sub(before).as_secs_f64() * 1e6 / ops.max(1.0)
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail("runtime", e));
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let load_before = load_average();
    let tempdir = || {
        match &args.dir {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .unwrap_or_else(|e| fail("tempdir", e))
    };
    let dir = tempdir();
    // The raw baselines' files in a directory of their own: in the manager's, each of their
    // writes would wake the manager's change notifier (a file event in the watched
    // directory), which would slow the baselines down.
    let raw_dir = tempdir();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let manager = manager_on(
        open_sqlite(&dir.path().join("manager.db")),
        Arc::clone(&clock),
    );
    let claimer = manager
        .claimer(NS, MODEL)
        .unwrap_or_else(|e| fail("claimer", e));
    let mut rows: Vec<[String; 3]> = Vec::new();

    // Throughput, with the process's CPU time per op beside each rate: the host is shared, so
    // wall-clock rates move with its load, while CPU time per op mostly does not.
    let before = cpu_time();
    let raw = raw_rusqlite(&raw_dir.path().join("raw.db"), args.secs, 1, 16);
    let raw_cpu = cpu_per_op(before, raw * args.secs);
    rows.push([
        "raw rusqlite, one transaction per op (baseline)".into(),
        format!("{raw:.0} ops/s, {raw_cpu:.1} µs CPU/op"),
        "—".into(),
    ]);
    let before = cpu_time();
    let raw_batched = raw_rusqlite(&raw_dir.path().join("raw-batched.db"), args.secs, 256, 256);
    let raw_batched_cpu = cpu_per_op(before, raw_batched * args.secs);
    rows.push([
        "raw rusqlite, 256 ops per transaction over 256 leases (batched baseline)".into(),
        format!("{raw_batched:.0} ops/s, {raw_batched_cpu:.1} µs CPU/op"),
        "—".into(),
    ]);
    let mut ratios = Ratios::default();
    for &claimers in &args.claimers {
        let before = cpu_time();
        let rate = manager_throughput(Arc::clone(&claimer), claimers, args.secs).await;
        let cpu = cpu_per_op(before, rate * args.secs);
        let ratio = rate / raw;
        let (measured, target) = if claimers == 256 {
            ratios = Ratios {
                raw: ratio,
                batched: rate / raw_batched,
                batched_cpu: raw_batched_cpu / cpu,
            };
            (
                format!(
                    "{rate:.0} ops/s ({ratio:.1}× raw, {:.2}× raw batched), {cpu:.1} µs CPU/op \
                     ({:.2}× raw batched's ops per CPU second)",
                    ratios.batched, ratios.batched_cpu
                ),
                "≥ 5× raw, ≥ 0.5× raw batched",
            )
        } else {
            (
                format!("{rate:.0} ops/s ({ratio:.1}× raw), {cpu:.1} µs CPU/op"),
                "—",
            )
        };
        rows.push([
            format!("manager claims+extends, {claimers} concurrent claimers (SQLite)"),
            measured,
            target.into(),
        ]);
    }
    let report = manager.report();
    if args.throughput_only {
        manager.stop().await;
        print_rows(&args, &report, &load_before, rows, &ratios);
        return;
    }

    // Token::check.
    let info = claimer
        .claim("checked", Request::new("checker", LONG))
        .await
        .unwrap_or_else(|e| fail("claim", e));
    let token = manager
        .token(NS, MODEL, "checked", "checker")
        .unwrap_or_else(|e| fail("token", e));
    assert_eq!(token.check().await.ok(), Some(info.generation));
    assert_eq!(token.check_now(), Some(info.generation));
    let sync_ns = time_sync(1000, 1000, || {
        std::hint::black_box(token.check_now());
    });
    let mut async_samples = Vec::new();
    for _ in 0..1000 {
        let start = Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(token.check().await.ok());
        }
        async_samples.push(start.elapsed().as_nanos() as f64 / 1000.0);
    }
    let async_ns = median(async_samples);
    let mut worker_samples = Vec::new();
    for _ in 0..2000 {
        let start = Instant::now();
        std::hint::black_box(token.check_store().await.ok());
        worker_samples.push(start.elapsed().as_nanos() as f64);
    }
    let worker_ns = median(worker_samples);
    rows.push([
        "`ManagerToken::check_now` median (memory, sync)".into(),
        format!(
            "{sync_ns:.0} ns ({:.0}× faster than via the worker)",
            worker_ns / sync_ns
        ),
        "≤ 100 ns, ≥ 50×".into(),
    ]);
    rows.push([
        "`Token::check` median (memory, async trait)".into(),
        format!(
            "{async_ns:.0} ns ({:.0}× faster than via the worker)",
            worker_ns / async_ns
        ),
        "≤ 100 ns, ≥ 50×".into(),
    ]);
    rows.push([
        "check through the worker to the store (baseline)".into(),
        format!("{:.1} µs", worker_ns / 1000.0),
        "—".into(),
    ]);

    // Expiry → wake: leases claimed together, expiring 4 ms apart, each with a waiter; the
    // worker has nothing else to do, so this is the wake path alone (timer, one store read to
    // confirm, the reply).
    let waits = 300usize;
    let tasks: Vec<_> = (0..waits)
        .map(|i| {
            let (claimer, clock) = (Arc::clone(&claimer), Arc::clone(&clock));
            tokio::spawn(async move {
                let lease = format!("wake-{i}");
                let d = Duration::from_millis(300 + 4 * i as u64);
                let info = claimer
                    .claim(&lease, Request::new("waker", d))
                    .await
                    .unwrap_or_else(|e| fail("claim", e));
                claimer
                    .wait_until_expired(&lease, &CancellationToken::new())
                    .await
                    .unwrap_or_else(|e| fail("wait", e));
                let woke: Timestamp = clock.now();
                woke.saturating_duration_since(info.expiry).as_secs_f64() * 1e3
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.push(t.await.unwrap_or_else(|e| fail("waker", e)));
    }
    sort(&mut lat);
    rows.push([
        format!(
            "expiry → waiter woken, SystemClock + SQLite, {} waits",
            lat.len()
        ),
        format!(
            "p50 {:.3} ms, p99 {:.3} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        ),
        "p99 ≤ 5 ms".into(),
    ]);

    // Change by another process → waiter woken: a second manager on its own connection to the
    // same file (the path another process's write takes: a file event on the database,
    // confirmed with `PRAGMA data_version`) revokes a lease this manager has a waiter on. The
    // lease would last an hour, so only noticing the change can wake the waiter. Counted from
    // the start of the other side's revoke, so its commit is included.
    let other = manager_on(
        open_sqlite(&dir.path().join("manager.db")),
        Arc::clone(&clock),
    );
    let other_claimer = other
        .claimer(NS, MODEL)
        .unwrap_or_else(|e| fail("claimer", e));
    let other_revoker = other
        .revoker(NS, MODEL)
        .unwrap_or_else(|e| fail("revoker", e));
    let changes = 100usize;
    let mut seen = Vec::with_capacity(changes);
    for i in 0..changes {
        let lease = format!("changed-{i}");
        other_claimer
            .claim(&lease, Request::new("other", LONG))
            .await
            .unwrap_or_else(|e| fail("claim by the other manager", e));
        let waiter = {
            let (claimer, clock, lease) = (Arc::clone(&claimer), Arc::clone(&clock), lease.clone());
            tokio::spawn(async move {
                claimer
                    .wait_until_expired(&lease, &CancellationToken::new())
                    .await
                    .unwrap_or_else(|e| fail("wait", e));
                clock.now()
            })
        };
        // Let the waiter register, at a varying phase against the 100 ms refresh poll.
        tokio::time::sleep(Duration::from_millis(20 + (i as u64 * 37) % 100)).await;
        let start = clock.now();
        other_revoker
            .revoke(&lease, "other")
            .await
            .unwrap_or_else(|e| fail("revoke by the other manager", e));
        let woke = waiter.await.unwrap_or_else(|e| fail("waiter", e));
        seen.push(woke.saturating_duration_since(start).as_secs_f64() * 1e3);
    }
    other.stop().await;
    sort(&mut seen);
    rows.push([
        format!(
            "change by another process → waiter woken, SQLite, {} changes",
            seen.len()
        ),
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            percentile(&seen, 0.5),
            percentile(&seen, 0.99),
            seen.last().copied().unwrap_or(0.0)
        ),
        "≤ refresh interval (100 ms)".into(),
    ]);

    // Idle CPU, with the leases above held and the refresh polling running.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle_secs = 5.0;
    let before = cpu_time();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let used = cpu_time().saturating_sub(before);
    let per_sec = used.as_secs_f64() / start.elapsed().as_secs_f64();
    rows.push([
        format!(
            "idle CPU, SQLite manager holding {} leases",
            manager.report().known_leases
        ),
        format!(
            "{:.1} ms/s ({:.2} % of a core)",
            per_sec * 1e3,
            per_sec * 100.0
        ),
        "—".into(),
    ]);
    manager.stop().await;

    // Memory per live lease, in the manager itself.
    let null = manager_on(
        NullStore {
            clock: Arc::clone(&clock),
            generation: 0,
        },
        Arc::clone(&clock),
    );
    let null_claimer = null
        .claimer(NS, MODEL)
        .unwrap_or_else(|e| fail("claimer", e));
    // Warm up the allocator and the channel with a first round, then measure.
    for i in 0..1000 {
        null_claimer
            .claim(&format!("warm-{i}"), Request::new("h", LONG))
            .await
            .unwrap_or_else(|e| fail("claim", e));
    }
    let rss_before = rss_bytes();
    let workers = 64;
    let per = args.leases.div_ceil(workers);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let claimer = Arc::clone(&null_claimer);
            tokio::spawn(async move {
                for i in 0..per {
                    claimer
                        .claim(
                            &format!("lease-{w}-{i}"),
                            Request::new(format!("holder-{}", w % 8), LONG),
                        )
                        .await
                        .unwrap_or_else(|e| fail("claim", e));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap_or_else(|e| fail("claimer", e));
    }
    let live = null.report().known_leases - 1000;
    let rss_after = rss_bytes();
    let per_lease = rss_after.saturating_sub(rss_before) as f64 / live as f64;
    rows.push([
        format!("memory per live lease in the manager, {live} leases (RSS growth)"),
        format!("{per_lease:.0} B"),
        "≤ 300 B".into(),
    ]);
    null.stop().await;

    print_rows(&args, &report, &load_before, rows, &ratios);
}

/// Prints the section: the settings, the store's latency during the throughput rows, the load
/// and the table; `ratios` are the 256-claimer row's against the two raw baselines.
fn print_rows(
    args: &Args,
    report: &lease_manager::Report,
    load_before: &str,
    rows: Vec<[String; 3]>,
    ratios: &Ratios,
) {
    let dir = args.dir.as_ref().map_or_else(
        || "the system's temp dir".to_owned(),
        |d| d.display().to_string(),
    );
    println!("## lease-manager\n");
    println!(
        "Manager over `lease-store-sqlite` (a temp dir in {dir}, WAL, `synchronous = FULL`, SystemClock), \
         2 runtime threads, {:.1} s per throughput row. Store latency during the throughput \
         rows: p50 {:?}, p90 {:?}, p99 {:?} over {} calls; {} batches carried {} ops.\n",
        args.secs,
        report.store_latency_p50,
        report.store_latency_p90,
        report.store_latency_p99,
        report.store_calls,
        report.batches,
        report.batched_ops,
    );
    println!(
        "Host load average (1 min) {load_before} at the start, {} at the end: other work on \
         the host shows up in the latency tails.\n",
        load_average()
    );
    let mut table = Table::text(&["figure", "measured", "target"]);
    for row in rows {
        table.row(row);
    }
    println!("{table}");
    if !args.claimers.contains(&256) {
        return;
    }
    println!(
        "256 claimers vs raw: {:.1}× (target ≥ 5×); vs raw batched: {:.2}× in ops/s, {:.2}× \
         in ops per CPU second (target ≥ 0.5×). Memory is measured over a store \
         that keeps nothing, so it is the manager's view alone; RSS growth includes allocator \
         slack.",
        ratios.raw, ratios.batched, ratios.batched_cpu
    );
}
