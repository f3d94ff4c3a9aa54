//! A benchmark of [`LeaseObjectStore`] against a real Kubernetes API server, printed as markdown.
//!
//! Three scenarios, each beside a baseline of raw conditional `PUT`s of a Lease (kube's
//! `Api<Lease>::replace` carrying the last `resourceVersion`) taken in the same run:
//!
//! 1. **Leader renewals**: one store claims a key, then extends it back to back. Renewals per
//!    second, and API requests per renewal by verb. Baselines: a raw `PUT` loop (one `GET` at
//!    the start, then each `PUT` carries the `resourceVersion` of the previous answer), and a
//!    `GET` + `PUT` per renewal (client-go's pattern, emulated). The three run in alternating
//!    blocks so that drift of the machine hits them alike.
//! 2. **Follower**: a second store with a change notifier (its watch) follows a key that a leader
//!    renews every 2 s, and on every notification reads the lease (from the watch's cache).
//!    Follower requests per minute by verb, and the watches it holds open.
//! 3. **Contention**: K stores, each with its own client and watch, race to claim one key in
//!    rounds; the winner revokes, and each racer waits until its watch shows the lease free
//!    before the next round. Successful claims per second and requests per round. Baseline: K
//!    raw clients that each `GET` the Lease, then all `PUT` it conditionally; the winner's
//!    release is one more `PUT`.
//!
//! Requests are counted twice. On the server: `apiserver_request_total{resource="leases"}`
//! from its own `/metrics` (summed over codes, by verb), scraped with the administrator's
//! credentials before and after each measured window; the scrape itself is not a `leases`
//! request. On the client: a tower layer on every client of this benchmark counts the lease
//! requests it sends. The metrics do not say which client made a request, so the follower's cost
//! is the server's count minus the leader's (counted on its client); when the server saw more
//! than this benchmark sent (another program using the same server), the output says so. A
//! watch is counted in `apiserver_request_total` only when it ends, so open watches are read
//! from `apiserver_longrunning_gauge{resource="leases",verb="WATCH"}`.
//!
//! ```text
//! cargo xtask k8s up && eval "$(cargo xtask k8s env)"
//! cargo run --release -p lease-bench --bin bench_k8s -- \
//!     [--renewals N] [--follow-secs S] [--racers K] [--rounds R]
//! ```
//!
//! Defaults: 1000 renewals per kind, a 24 s follower period, 8 racers, 100 rounds; about 40 s
//! in all. Every run works in a new Kubernetes namespace (`bench-k8s-…`), which is left behind
//! (a bare API server never finishes deleting one); `cargo xtask k8s down` removes it with
//! etcd's data. The stores judge expiry on `SystemClock`.
//!
//! One module per scenario (`renewals`, `follower`, `contention`) over `setup`: the run's
//! namespace, counted clients, and a measured window's cost from both ends.
//!
//! [`LeaseObjectStore`]: lease_store_k8s::LeaseObjectStore

#![forbid(unsafe_code)]

mod contention;
mod follower;
mod renewals;
mod setup;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use lease_bench::{Res, die, flag_pairs};

use setup::Bench;

/// The lease duration every claim and renewal asks for.
pub(crate) const DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews while the follower watches (client-go's retry period).
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How many blocks each kind of renewal loop is split into (they alternate).
pub(crate) const BLOCKS: u64 = 4;
/// How long a racer waits for its watch to show the lease free before giving up.
pub(crate) const WATCH_PATIENCE: Duration = Duration::from_secs(10);

/// The command line.
pub(crate) struct Args {
    pub(crate) renewals: u64,
    pub(crate) follow_secs: u64,
    pub(crate) racers: usize,
    pub(crate) rounds: u64,
}

fn parse_args() -> Res<Args> {
    let mut args = Args {
        renewals: 1000,
        follow_secs: 24,
        racers: 8,
        rounds: 100,
    };
    for (flag, value) in flag_pairs(std::env::args().skip(1))? {
        let number = |what: &str| -> Res<u64> {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{what} {value:?} is not a positive number"))
        };
        match flag.as_str() {
            "--renewals" => args.renewals = number("--renewals")?,
            "--follow-secs" => args.follow_secs = number("--follow-secs")?,
            "--racers" => {
                args.racers = usize::try_from(number("--racers")?).map_err(|e| e.to_string())?;
            }
            "--rounds" => args.rounds = number("--rounds")?,
            other => {
                return Err(format!(
                    "unknown argument {other:?} (known: --renewals, --follow-secs, --racers, \
                     --rounds)"
                ));
            }
        }
    }
    if args.racers < 2 {
        return Err("--racers must be at least 2".to_owned());
    }
    Ok(args)
}

async fn run() -> Res<String> {
    let args = parse_args()?;
    let mut bench = Bench::new(args).await?;
    let version = bench
        .admin
        .apiserver_version()
        .await
        .map_or_else(|e| format!("unknown ({e})"), |v| v.git_version);
    let started = Instant::now();
    eprintln!(
        "bench_k8s: namespace {} on kube-apiserver {version}",
        bench.namespace
    );
    eprintln!("bench_k8s: leader renewals...");
    let renewal = renewals::renewals(&mut bench).await?;
    eprintln!("bench_k8s: follower ({} s)...", bench.args.follow_secs);
    let follow = follower::follower(&mut bench).await?;
    eprintln!("bench_k8s: contention...");
    let contend = contention::contention(&mut bench).await?;
    eprintln!(
        "bench_k8s: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut out = String::new();
    writeln!(out, "## lease-store-k8s\n").ok();
    writeln!(
        out,
        "`LeaseObjectStore` against a local kube-apiserver {version} (etcd on the same machine), with \
         raw conditional `PUT`s of a Lease (kube's `Api::replace`) as the baseline in the same \
         run. Every client has its own connections. Stores judge expiry on `SystemClock`; \
         leases last {} s.\n",
        DURATION.as_secs()
    )
    .ok();
    out.push_str(&renewal);
    out.push('\n');
    out.push_str(&follow);
    out.push('\n');
    out.push_str(&contend);
    writeln!(
        out,
        "\nFor context, client-go's leader election as measured earlier (DESIGN.md's figures, not \
         re-measured here): 1 `GET` + 1 `PUT` per renewal every 2 s; a follower `GET`s every \
         2–4.4 s.\n"
    )
    .ok();
    writeln!(
        out,
        "Method: lease requests are counted on the server, from its own \
         `apiserver_request_total{{resource=\"leases\"}}` (summed over codes, by verb) scraped \
         from `/metrics` with the administrator's credentials before and after each measured \
         window, and on the client, by a tower layer on every client of the benchmark. The \
         metrics do not say which client made a request, so the follower's cost is the \
         server's count minus the leader's client count; open watches come from \
         `apiserver_longrunning_gauge{{verb=\"WATCH\"}}` (a watch enters the request total \
         only when it ends). Throughputs are operations over wall time of the measured loops \
         (scrapes excluded); the renewal loops alternate in {BLOCKS} blocks each. Namespace \
         `{}`.",
        bench.namespace
    )
    .ok();
    for note in &bench.notes {
        writeln!(out, "\nNote: {note}").ok();
    }
    Ok(out)
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(markdown) => print!("{markdown}"),
        Err(e) => die(e),
    }
}
