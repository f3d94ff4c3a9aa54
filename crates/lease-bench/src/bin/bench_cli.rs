//! The cost of one `lease run -- true` on SQLite, on an empty database and on one holding a
//! million leases, beside `flock(1)` running `true` on the same machine in the same run; printed
//! as a markdown section for `BENCHMARKS.md`.
//!
//! ```text
//! cargo build --release -p lease-cli --bin lease
//! cargo run --release -p lease-bench --bin bench_cli -- [--runs N] [--large N] [--lease PATH]
//! ```
//!
//! `cargo xtask bench bench_cli` does both. `--runs` is how many timed runs of each case
//! (default 41, interleaved so that load on the machine falls on every case alike, after 3
//! warm-up runs each); `--large` the size of the big database (default 1,000,000, built with
//! the store's batch API); `--lease` the binary (default: `lease` beside this program, where cargo
//! puts both). Each figure is the wall time from spawning the process to
//! reaping it; the table gives the median and the spread.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lease_bench::host::load_average;
use lease_bench::report::{Align, Table, met, ms};
use lease_bench::{fail, flag_pairs};
use lease_core::{Key, Op, Request, Store};
use lease_store_sqlite::SqliteStore;

struct Args {
    runs: usize,
    large: usize,
    lease: PathBuf,
}

fn args() -> Args {
    let mut out = Args {
        runs: 41,
        large: 1_000_000,
        lease: std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("lease")))
            .unwrap_or_else(|| PathBuf::from("lease")),
    };
    let pairs = flag_pairs(std::env::args().skip(1)).unwrap_or_else(|e| fail("usage", e));
    for (flag, value) in pairs {
        match flag.as_str() {
            "--runs" => out.runs = value.parse().unwrap_or_else(|e| fail("--runs", e)),
            "--large" => out.large = value.parse().unwrap_or_else(|e| fail("--large", e)),
            "--lease" => out.lease = PathBuf::from(value),
            other => fail("usage", format!("unknown option {other}")),
        }
    }
    if out.runs == 0 {
        fail("usage", "--runs must be at least 1");
    }
    if !out.lease.is_file() {
        fail(
            "the lease binary",
            format!(
                "{} not found: build it first (cargo build --release -p lease-cli --bin lease) \
                 or pass --lease PATH",
                out.lease.display()
            ),
        );
    }
    out
}

/// Creates the database at `path` with `n` live leases (a day's ttl), through the store's
/// batch API in transactions of 10,000 claims.
fn prepare(path: &Path, n: usize) -> Duration {
    let start = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| fail("runtime", e));
    runtime.block_on(async {
        let mut store = SqliteStore::open(path).unwrap_or_else(|e| fail("opening", e));
        let mut i = 0;
        while i < n {
            let end = (i + 10_000).min(n);
            let ops = (i..end)
                .map(|j| Op::Claim {
                    key: Key::new("bench", "present", format!("lease-{j}")),
                    request: Request::new("bench-holder", Duration::from_secs(86_400)),
                })
                .collect();
            for result in store.apply(ops).await {
                result.unwrap_or_else(|e| fail("claiming", e));
            }
            i = end;
        }
    });
    start.elapsed()
}

/// The wall time of one run of `command`, which must succeed.
fn time(command: &mut Command) -> Duration {
    let start = Instant::now();
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .unwrap_or_else(|e| fail("spawning", e));
    let elapsed = start.elapsed();
    if !status.success() {
        fail(
            "a timed command",
            format!("{command:?} exited with {status}"),
        );
    }
    elapsed
}

fn lease_run(lease: &Path, db: &Path) -> Command {
    let mut command = Command::new(lease);
    for var in [
        "LEASE_DB",
        "LEASE_STORE",
        "LEASE_HOLDER",
        "LEASE_NAMESPACE",
        "LEASE_MODEL",
    ] {
        command.env_remove(var);
    }
    command
        .arg("--store")
        .arg(format!("sqlite:{}", db.display()))
        .args(["run", "--lease", "bench-run", "--", "true"]);
    command
}

/// `lease check` on `db`: the full scan every open used to run.
fn lease_check(lease: &Path, db: &Path) -> Command {
    let mut command = Command::new(lease);
    command
        .env_remove("LEASE_STORE")
        .arg("--store")
        .arg(format!("sqlite:{}", db.display()))
        .arg("check");
    command
}

fn flock(lock: &Path) -> Command {
    let mut command = Command::new("flock");
    command.arg(lock).arg("true");
    command
}

/// The spread of one case's run times.
struct Summary {
    median: Duration,
    p10: Duration,
    p90: Duration,
}

/// The median, p10 and p90 of `samples` (at least one), each the sample at rank
/// `(len − 1) × q` rounded down. `lease_bench::stats::quantile` rounds to the nearest rank
/// instead, which would make the 3-run `lease check` row's p90 its slowest run rather than its
/// middle one, as BENCHMARKS.md's figures were measured.
fn summary(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let at = |q: usize| samples[(samples.len() - 1) * q / 100];
    Summary {
        median: at(50),
        p10: at(10),
        p90: at(90),
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn main() {
    let args = args();
    let dir = tempfile::Builder::new()
        .prefix("bench-cli-")
        .tempdir()
        .unwrap_or_else(|e| fail("tempdir", e));
    let (empty, large, lock) = (
        dir.path().join("empty.db"),
        dir.path().join("large.db"),
        dir.path().join("flock.lock"),
    );
    prepare(&empty, 0);
    let setup = prepare(&large, args.large);
    std::fs::write(&lock, b"").unwrap_or_else(|e| fail("lock file", e));
    let size_mib = std::fs::metadata(&large).map_or(0, |m| m.len()) / (1024 * 1024);
    eprintln!(
        "bench_cli: {} leases in {:.1} s ({size_mib} MiB); timing {} runs of each case",
        args.large,
        setup.as_secs_f64(),
        args.runs
    );

    let load_before = load_average();
    for _ in 0..3 {
        time(&mut lease_run(&args.lease, &empty));
        time(&mut lease_run(&args.lease, &large));
        time(&mut flock(&lock));
    }
    let (mut e, mut l, mut f) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        e.push(time(&mut lease_run(&args.lease, &empty)));
        l.push(time(&mut lease_run(&args.lease, &large)));
        f.push(time(&mut flock(&lock)));
    }
    let check: Vec<Duration> = (0..3)
        .map(|_| time(&mut lease_check(&args.lease, &large)))
        .collect();
    let load_after = load_average();
    let (e, l, f, check) = (summary(e), summary(l), summary(f), summary(check));

    let large_vs_empty = ratio(l.median, e.median);
    let empty_vs_flock = ratio(e.median, f.median);
    let large_vs_flock = ratio(l.median, f.median);
    println!("## lease-cli: `lease run -- true`\n");
    println!(
        "Wall time from spawning to reaping one process, {} runs of each case interleaved after 3 \
         warm-up runs each; the `lease` release binary, SQLite (WAL, `synchronous = FULL`) in a \
         temporary directory on `TMPDIR`'s file system. The {}-lease database was built with the \
         store's batch API in {:.1} s ({size_mib} MiB). Host load average (1 min) {load_before} \
         at the start, {load_after} at the end.\n",
        args.runs,
        args.large,
        setup.as_secs_f64()
    );
    let mut table = Table::new(&[
        ("case", Align::Left),
        ("median", Align::Right),
        ("p10", Align::Right),
        ("p90", Align::Right),
        ("median ÷ flock", Align::Right),
    ]);
    let large_case = format!("`lease run -- true`, {} leases present", args.large);
    let check_case = format!(
        "`lease check` (full read-only scan, what every open cost before), {} leases, 3 runs",
        args.large
    );
    for (name, s) in [
        ("`flock FILE true` (baseline)", &f),
        ("`lease run -- true`, empty database", &e),
        (large_case.as_str(), &l),
        (check_case.as_str(), &check),
    ] {
        table.row([
            name.to_owned(),
            ms(s.median, 2),
            ms(s.p10, 2),
            ms(s.p90, 2),
            format!("{:.2}×", ratio(s.median, f.median)),
        ]);
    }
    println!("{table}");
    println!(
        "{} leases vs empty: {large_vs_empty:.2}× (target ≤ 2×: {}). Empty vs flock: \
         {empty_vs_flock:.2}× (target ≤ 3×: {}); with {} leases: {large_vs_flock:.2}× ({}).",
        args.large,
        met(large_vs_empty <= 2.0),
        met(empty_vs_flock <= 3.0),
        args.large,
        met(large_vs_flock <= 3.0),
    );
}
