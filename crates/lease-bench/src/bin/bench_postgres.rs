//! Benchmark of the Postgres store, printed as a markdown table (run in release mode; `cargo
//! xtask bench` runs it against the server `cargo xtask pg up` starts).
//!
//! ```text
//! LEASE_TEST_POSTGRES_URL=postgres://… cargo run --release -p lease-bench \
//!     --bin bench_postgres -- [--secs S]
//! ```
//!
//! - **Throughput**: claims+extends per second through the manager over Postgres with 1, 16
//!   and 256 concurrent claimers, each renewing its own lease in a loop (the manager sends what
//!   queues up as one transaction: group commit), beside a raw loop doing one transaction per op
//!   (`BEGIN`, an upsert, `COMMIT`) on the same server in the same run. The raw op is cheaper
//!   than the store's claim (which also locks and bumps the key's generation row), so the ratio
//!   understates rather than flatters the manager.
//! - **Handover through NOTIFY**: from the start of a holder's release to the moment a waiter
//!   in another manager (another connection, refresh poll set to a minute, so only the
//!   `NOTIFY` can wake it) holds the lease; median and max of several rounds.
//! - **Takeover after SIGKILL**: a child process (this program, `--child`) leads with a 2 s
//!   ttl, renewing every 200 ms; it is killed with SIGKILL, and the time from the kill to the
//!   parent's successful claim is measured against ttl + 100 ms.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lease_bench::host::load_average;
use lease_bench::report::{Table, met, ms};
use lease_bench::stats::median;
use lease_bench::{fail, flag_pairs};
use lease_core::{CancellationToken, DefaultSecretary, Facades as _, Request, SystemClock};
use lease_manager::{Manager, ManagerConfig};
use lease_store_postgres::PostgresStore;

const NAMESPACE: &str = "bench";
const TAKEOVER_TTL: Duration = Duration::from_secs(2);

async fn manager(url: &str, schema: &str, refresh: Duration) -> Manager {
    let store = PostgresStore::builder(url)
        .schema(schema)
        .connect()
        .await
        .unwrap_or_else(|e| fail("connecting", e));
    Manager::start(
        ManagerConfig::new(store, Arc::new(SystemClock::new()))
            .with_secretary(NAMESPACE, Arc::new(DefaultSecretary))
            .with_refresh_interval(refresh),
    )
    .unwrap_or_else(|e| fail("starting a manager", e))
}

/// Claims+extends per second through one manager with `claimers` concurrent claimers.
async fn manager_throughput(url: &str, schema: &str, claimers: usize, secs: Duration) -> f64 {
    let manager = manager(url, schema, Duration::from_secs(1)).await;
    let claimer = manager
        .claimer(NAMESPACE, &format!("c{claimers}"))
        .unwrap_or_else(|e| fail("claimer", e));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..claimers {
        let claimer = Arc::clone(&claimer);
        let done = Arc::clone(&done);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let lease = format!("lease{i}");
            let holder = format!("holder{i}");
            while !stop.load(Ordering::Relaxed) {
                let request = Request::new(holder.clone(), Duration::from_secs(60));
                if claimer.claim(&lease, request).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Warm up (first claims, connections), then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start_count = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(secs).await;
    let ops = done.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    manager.stop().await;
    ops as f64 / elapsed
}

/// One transaction per op, one after another, on one connection: the baseline.
async fn raw_throughput(url: &str, schema: &str, secs: Duration) -> f64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| fail("raw connection", e));
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {schema}.raw (name text PRIMARY KEY, holder text, \
             expiry bigint)"
        ))
        .await
        .unwrap_or_else(|e| fail("raw table", e));
    let upsert = client
        .prepare(&format!(
            "INSERT INTO {schema}.raw (name, holder, expiry) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET expiry = excluded.expiry \
             WHERE {schema}.raw.holder = excluded.holder"
        ))
        .await
        .unwrap_or_else(|e| fail("raw statement", e));
    let started = Instant::now();
    let mut ops = 0u64;
    while started.elapsed() < secs {
        let expiry = i64::try_from(ops).unwrap_or(0);
        client
            .batch_execute("BEGIN")
            .await
            .unwrap_or_else(|e| fail("BEGIN", e));
        client
            .execute(&upsert, &[&"raw", &"holder", &expiry])
            .await
            .unwrap_or_else(|e| fail("upsert", e));
        client
            .batch_execute("COMMIT")
            .await
            .unwrap_or_else(|e| fail("COMMIT", e));
        ops += 1;
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

/// Time from the start of a release to the waiter in another manager holding the lease.
async fn handover(url: &str, schema: &str, rounds: usize) -> Vec<Duration> {
    let a = manager(url, schema, Duration::from_secs(60)).await;
    let b = manager(url, schema, Duration::from_secs(60)).await;
    let (ca, ra) = (
        a.claimer(NAMESPACE, "h").unwrap(),
        a.revoker(NAMESPACE, "h").unwrap(),
    );
    let cb = b.claimer(NAMESPACE, "h").unwrap();
    let rb = b.revoker(NAMESPACE, "h").unwrap();
    let mut times = Vec::new();
    for round in 0..rounds {
        let lease = format!("handover{round}");
        ca.claim(&lease, Request::new("a", Duration::from_secs(60)))
            .await
            .unwrap_or_else(|e| fail("claim a", e));
        // b learns the lease is held, then waits for it.
        let _ = cb
            .claim(&lease, Request::new("b", Duration::from_secs(60)))
            .await;
        let waiter = {
            let cb = Arc::clone(&cb);
            let lease = lease.clone();
            tokio::spawn(async move {
                cb.wait_until_expired(&lease, &CancellationToken::new())
                    .await?;
                cb.claim(&lease, Request::new("b", Duration::from_secs(60)))
                    .await?;
                Ok::<Instant, lease_core::Error>(Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let released = Instant::now();
        ra.revoke(&lease, "a")
            .await
            .unwrap_or_else(|e| fail("revoke", e));
        let held = waiter
            .await
            .unwrap_or_else(|e| fail("waiter", e))
            .unwrap_or_else(|e| fail("waiter", e));
        times.push(held.duration_since(released));
        let _ = rb.revoke(&lease, "b").await;
    }
    a.stop().await;
    b.stop().await;
    times
}

/// The child of the takeover figure: lead until killed.
async fn child(url: &str, schema: &str) {
    let m = manager(url, schema, Duration::from_millis(100)).await;
    let claimer = m.claimer(NAMESPACE, "t").unwrap();
    let info = claimer
        .claim("leader", Request::new("child", TAKEOVER_TTL))
        .await
        .unwrap_or_else(|e| fail("child claim", e));
    println!("CLAIMED {}", info.generation);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = claimer
            .claim("leader", Request::new("child", TAKEOVER_TTL))
            .await;
    }
}

/// Time from SIGKILL of the leading child to this process holding the lease.
async fn takeover(url: &str, schema: &str, rounds: usize) -> Vec<Duration> {
    let m = manager(url, schema, Duration::from_millis(100)).await;
    let claimer = m.claimer(NAMESPACE, "t").unwrap();
    let revoker = m.revoker(NAMESPACE, "t").unwrap();
    let exe = std::env::current_exe().unwrap_or_else(|e| fail("current exe", e));
    let mut times = Vec::new();
    for _ in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--child", schema])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| fail("spawning the child", e));
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| fail("reading the child", e));
        if !line.starts_with("CLAIMED") {
            fail("the child", format!("said {line:?}"));
        }
        // Let it renew a few times, and let this manager see it as the holder.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = claimer
            .claim("leader", Request::new("parent", TAKEOVER_TTL))
            .await;
        let _ = child.kill();
        let killed = Instant::now();
        let _ = child.wait();
        loop {
            claimer
                .wait_until_expired("leader", &CancellationToken::new())
                .await
                .unwrap_or_else(|e| fail("wait", e));
            if claimer
                .claim("leader", Request::new("parent", TAKEOVER_TTL))
                .await
                .is_ok()
            {
                break;
            }
        }
        times.push(killed.elapsed());
        revoker
            .revoke("leader", "parent")
            .await
            .unwrap_or_else(|e| fail("revoke", e));
    }
    m.stop().await;
    times
}

/// The median and the largest of `samples`.
fn median_max(samples: Vec<Duration>) -> (Duration, Duration) {
    let max = samples.iter().copied().max().unwrap_or_default();
    (median(samples), max)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = std::env::var("LEASE_TEST_POSTGRES_URL").ok();
    if args.first().map(String::as_str) == Some("--child") {
        let schema = args.get(1).cloned().unwrap_or_default();
        child(&url.unwrap_or_default(), &schema).await;
        return;
    }
    let Some(url) = url else {
        println!("## lease-store-postgres\n");
        println!(
            "Not measured in this run: no Postgres server (`LEASE_TEST_POSTGRES_URL` is not set; \
             `cargo xtask pg up` starts one).\n"
        );
        return;
    };
    let mut secs = Duration::from_secs(3);
    for (flag, value) in flag_pairs(args).unwrap_or_else(|e| fail("usage", e)) {
        match flag.as_str() {
            "--secs" => {
                secs = Duration::from_secs(value.parse().unwrap_or_else(|e| fail("--secs", e)));
            }
            other => fail("unknown argument", other),
        }
    }
    let schema = format!("bench_{}", std::process::id());
    // Create the schema once, before managers race to.
    drop(
        PostgresStore::builder(&url)
            .schema(&schema)
            .connect()
            .await
            .unwrap_or_else(|e| fail("connecting", e)),
    );
    let load_before = load_average();
    let raw = raw_throughput(&url, &schema, secs).await;
    let mut rows = vec![(
        "raw loop, one transaction per op (one connection)".to_owned(),
        format!("{raw:.0} ops/s"),
        "baseline".to_owned(),
    )];
    for claimers in [1, 16, 256] {
        let rate = manager_throughput(&url, &schema, claimers, secs).await;
        let target = if claimers == 256 {
            format!("≥ 5× raw: {}", met(rate >= 5.0 * raw))
        } else {
            String::new()
        };
        rows.push((
            format!("manager, {claimers} concurrent claimers (one connection)"),
            format!("{rate:.0} ops/s ({:.1}× raw)", rate / raw),
            target,
        ));
    }
    let handovers = 15;
    let (med, max) = median_max(handover(&url, &schema, handovers).await);
    rows.push((
        format!("handover after a release, through NOTIFY ({handovers} rounds)"),
        format!("median {}, max {}", ms(med, 1), ms(max, 1)),
        format!(
            "median ≤ 100 ms: {}",
            met(med <= Duration::from_millis(100))
        ),
    ));
    let takeovers = 3;
    let (med, max) = median_max(takeover(&url, &schema, takeovers).await);
    let bound = TAKEOVER_TTL + Duration::from_millis(100);
    rows.push((
        format!(
            "takeover after SIGKILL of the leader (ttl {}, {takeovers} rounds)",
            ms(TAKEOVER_TTL, 1)
        ),
        format!("median {}, max {}", ms(med, 1), ms(max, 1)),
        format!("≤ ttl + 100 ms = {}: {}", ms(bound, 1), met(max <= bound)),
    ));
    let load_after = load_average();
    if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await;
    }
    println!("## lease-store-postgres\n");
    println!(
        "Against a local PostgreSQL (`cargo xtask pg up`, fsync on) on the same machine; {} s \
         per throughput figure, after 0.5 s of warm-up; the ratios are against the raw loop \
         measured in the same run. The raw op (an upsert) is cheaper than the store's claim, \
         which also locks and bumps the key's generation row. Host load average (1 min) \
         {load_before} at the start, {load_after} at the end.\n",
        secs.as_secs()
    );
    let mut table = Table::text(&["figure", "measured", "target"]);
    for (a, b, c) in rows {
        table.row([a, b, c]);
    }
    println!("{table}");
}
