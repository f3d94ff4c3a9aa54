//! Issue 7's benchmark: lease-manager's [`LeaderElector`] on a real Kubernetes API server
//! ([`LeaseObjectStore`]) and on SQLite ([`SqliteStore`]), with client-go's default timings (lease
//! 15 s, renew deadline 10 s, retry period 2 s), printed as markdown.
//!
//! Every candidate is its own **process**: the benchmark re-executes itself
//! (`--candidate --k8s NAMESPACE | --sqlite FILE --lease L --identity I`), and each candidate runs
//! a [`Manager`] over its own store (its own kube client and watch; or its own connection to one
//! shared SQLite file) and a [`LeaderElector`]. A candidate reads commands on stdin (`lock`,
//! `unlock`, `tally`; end of input: release if leading, stop, exit) and prints events on stdout as
//! JSON lines, each stamped with [`SystemClock`] (`CLOCK_BOOTTIME`, one clock for every process
//! of the host): `ready`, `became` (the claim returned; with the fencing generation), `renewed`
//! (the start of a successful renewal, read from the elector's lock record every 5 ms),
//! `following`, `unlocking` (about to call [`LeaderElector::unlock`]), `stopped` (its
//! `on_stopped_leading` callback: the lost token has fired), `released` (the revoke returned),
//! `tally` (the lease requests its client sent, by verb). The orchestrator reads them and
//! measures:
//!
//! 1. **Requests per minute** (Kubernetes only): a leader alone for a window (30 s by default),
//!    then the same leader with a follower for another window; `apiserver_request_total
//!    {resource="leases"}` deltas by verb, scraped from the server's `/metrics` around each
//!    window. The metrics do not say which client sent a request, so the follower's server-side
//!    figure is the second window minus the first (rate-scaled); each candidate also counts the
//!    lease requests its own client sends (a tower layer), which attributes them exactly and shows
//!    how much of the server's count came from other programs (the API server's own lease).
//! 2. **Handover after release**: the leader calls `unlock()`; the follower, waiting in `lock()`
//!    (the manager's `wait_until_expired`), claims. From `unlocking` to the follower's `became`.
//!    Then the old leader calls `lock()` again and becomes the follower; repeated.
//! 3. **Takeover after SIGSTOP, then after SIGKILL**: 300 ms after a logged renewal the leader
//!    is stopped with SIGSTOP; from the start of that renewal (what the holder's guarantee
//!    counts from) to the follower's `became`, which must wait for the expiry on every store (a
//!    stopped holder is alive). The stopped leader is continued, finds its term over and
//!    follows; then the new leader is killed with SIGKILL the same way: on SQLite the store
//!    sees the death and the follower takes over at once, elsewhere the lease must expire.
//! 4. **Candidates started together**: 5 processes started, and once all are ready, `lock` is
//!    written to their stdins back to back (the start barrier), on a fresh lease and on a stale
//!    one (its holder vanished: on Kubernetes, a Lease our store claimed for `dead-holder`, then
//!    rewritten with `renewTime` and `acquireTime` an hour old; on SQLite, a row claimed by
//!    `dead-holder` for 100 ms that has expired), several trials each. Leadership intervals
//!    (`became` to `stopped`, or to the SIGKILL) of all candidates must never overlap.
//!
//! ```text
//! cargo xtask k8s up && eval "$(cargo xtask k8s env)"
//! cargo run --release -p lease-bench --bin bench_election -- \
//!     [--window SECS] [--trials N] [--only k8s|sqlite]
//! ```
//!
//! Defaults: 30 s windows, 5 trials; about 4 minutes in all (the SIGSTOP takeovers, the
//! Kubernetes SIGKILL takeover and the stale Kubernetes lease wait out 15 s leases). Every run
//! works in a new Kubernetes namespace (`bench-election-…`, left behind; `cargo xtask k8s down`
//! removes it) and a new SQLite file in the temporary directory (removed at the end).
//!
//! The code: `candidate` is the candidate process; `session` the orchestrator's handle on the
//! candidates of one store and their events; `terms` the leadership intervals the events imply
//! and their checks; `pair` and `burst` the scenarios; `report` the markdown.
//!
//! [`LeaderElector`]: lease_manager::LeaderElector
//! [`LeaderElector::unlock`]: lease_manager::LeaderElector::unlock
//! [`LeaseObjectStore`]: lease_store_k8s::LeaseObjectStore
//! [`Manager`]: lease_manager::Manager
//! [`SqliteStore`]: lease_store_sqlite::SqliteStore

#![forbid(unsafe_code)]

mod burst;
mod candidate;
mod pair;
mod report;
mod session;
mod terms;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::Client;
use lease_bench::k8s::{admin_client, create_namespace};
use lease_bench::{Res, die, flag_pairs};
use lease_core::{Clock, Key, SystemClock};

/// The manager namespace and model of every lease here.
pub(crate) const NAMESPACE: &str = "election";
pub(crate) const MODEL: &str = "bench";
/// client-go's defaults.
pub(crate) const LEASE_DURATION: Duration = Duration::from_secs(15);
pub(crate) const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub(crate) const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Issue 7's targets.
pub(crate) const HANDOVER_TARGET: Duration = Duration::from_millis(100);
pub(crate) const TAKEOVER_SLACK: Duration = Duration::from_millis(100);
/// Candidates per burst.
pub(crate) const BURST: usize = 5;
/// How long a burst is watched after its first leader.
pub(crate) const BURST_OBSERVE: Duration = Duration::from_secs(2);
/// How far apart the stale-lease trials on Kubernetes start (they overlap in time, each on its
/// own Lease, because each waits out a full lease duration).
pub(crate) const STALE_STAGGER: Duration = Duration::from_secs(3);
/// The pause before each handover, once the new follower follows, and its random spread (more
/// than two SQLite refresh intervals).
pub(crate) const SETTLE: Duration = Duration::from_secs(1);
pub(crate) const SETTLE_JITTER: Duration = Duration::from_millis(250);
/// The takeover target on SQLite, from the SIGKILL: the store frees a dead holder's lease at
/// once and the follower is woken by the death.
pub(crate) const SQLITE_DEATH_TAKEOVER: Duration = Duration::from_millis(50);

/// How long the leader lives after a logged renewal before it is killed.
pub(crate) const KILL_AFTER_RENEWAL: Duration = Duration::from_millis(300);
/// Generous bounds for things that should take a second or two.
pub(crate) const STARTUP_PATIENCE: Duration = Duration::from_secs(60);
pub(crate) const EVENT_PATIENCE: Duration = Duration::from_secs(30);
/// How long candidates may take to exit once their stdin is closed.
pub(crate) const EXIT_PATIENCE: Duration = Duration::from_secs(10);

/// Which store a candidate runs on.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    K8s { namespace: String },
    Sqlite { path: PathBuf },
}

impl Backend {
    pub(crate) fn args(&self) -> Vec<String> {
        match self {
            Backend::K8s { namespace } => vec!["--k8s".to_owned(), namespace.clone()],
            Backend::Sqlite { path } => vec!["--sqlite".to_owned(), path.display().to_string()],
        }
    }

    pub(crate) fn label(&self) -> &'static str {
        match self {
            Backend::K8s { .. } => "Kubernetes",
            Backend::Sqlite { .. } => "SQLite",
        }
    }

    pub(crate) fn is_k8s(&self) -> bool {
        matches!(self, Backend::K8s { .. })
    }
}

pub(crate) fn key(lease: &str) -> Key {
    Key::new(NAMESPACE, MODEL, lease)
}

pub(crate) fn now_ns() -> u64 {
    SystemClock::new().now().as_nanos()
}

/// A pseudo-random duration in `[0, below)`, from the clock's low bits and a mixer (no
/// dependency for it; good enough to randomise a phase).
pub(crate) fn random_below(below: Duration) -> Duration {
    let mut x = now_ns() ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let nanos = u64::try_from(below.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(x % nanos)
}

pub(crate) fn span(from: u64, to: u64) -> Duration {
    Duration::from_nanos(to.saturating_sub(from))
}

struct Args {
    window: Duration,
    trials: usize,
    k8s: bool,
    sqlite: bool,
}

fn parse_args(args: &[String]) -> Res<Args> {
    let mut out = Args {
        window: Duration::from_secs(30),
        trials: 5,
        k8s: true,
        sqlite: true,
    };
    for (flag, value) in flag_pairs(args.iter().cloned())? {
        let number = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{flag} {value:?} is not a positive number"))
        };
        match flag.as_str() {
            "--window" => out.window = Duration::from_secs(number()?),
            "--trials" => out.trials = usize::try_from(number()?).map_err(|e| e.to_string())?,
            "--only" => match value.as_str() {
                "k8s" => out.sqlite = false,
                "sqlite" => out.k8s = false,
                other => return Err(format!("--only {other:?}: expected k8s or sqlite")),
            },
            other => {
                return Err(format!(
                    "unknown argument {other:?} (known: --window, --trials, --only)"
                ));
            }
        }
    }
    Ok(out)
}

async fn run_backend(
    backend: &Backend,
    exe: &Path,
    kube: Option<&Client>,
    args: &Args,
) -> Res<report::Run> {
    let pair = pair::pair(backend, exe, kube, args.window, args.trials).await?;
    let fresh = burst::bursts(backend, exe, kube, args.trials, false).await?;
    let stale = burst::bursts(backend, exe, kube, args.trials, true).await?;
    Ok(report::Run {
        backend: backend.clone(),
        pair,
        fresh,
        stale,
    })
}

async fn orchestrate(args: Args) -> Res<String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    let mut version = None;
    if args.k8s {
        let (_, admin) = admin_client(", or pass `--only sqlite`").await?;
        let v = admin
            .apiserver_version()
            .await
            .map_or_else(|e| format!("unknown ({e})"), |v| v.git_version);
        let namespace = create_namespace(&admin, "bench-election").await?;
        eprintln!("bench_election: namespace {namespace} on kube-apiserver {v}");
        version = Some(v);
        let backend = Backend::K8s { namespace };
        runs.push(run_backend(&backend, &exe, Some(&admin), &args).await?);
    }
    if args.sqlite {
        // A directory of its own, removed with everything SQLite and the store put beside the
        // file (the WAL, the shared memory, the holder sessions' directory).
        let dir = tempfile::Builder::new()
            .prefix("bench-election-")
            .tempdir()
            .map_err(|e| format!("creating a temp dir for the SQLite file: {e}"))?;
        let backend = Backend::Sqlite {
            path: dir.path().join("leases.db"),
        };
        let result = run_backend(&backend, &exe, None, &args).await;
        drop(dir);
        runs.push(result?);
    }
    eprintln!(
        "bench_election: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(report::report(
        &runs,
        version.as_deref(),
        args.window,
        args.trials,
    ))
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "--candidate") {
        let result = match candidate::parse_candidate(&argv[1..]) {
            Ok(args) => candidate::candidate(args).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            die(format!("candidate: {e}"));
        }
        return;
    }
    let result = match parse_args(&argv) {
        Ok(args) => orchestrate(args).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(markdown) => print!("{markdown}"),
        Err(e) => die(e),
    }
}
