//! Torture tests of the lease library (issue 9): they try hard to make two holders hold one lease
//! at once, and a checker proves from the participants' own logs that it never happened.
//!
//! - [`sqlite`]: N worker processes × M leases on one SQLite file, each looping claim / hold /
//!   extend / revoke through a manager with short durations, while the orchestrator SIGKILLs and
//!   restarts workers at random.
//! - [`k8s`]: [`LeaderElector`](lease_manager::LeaderElector) candidates as separate processes
//!   on a real kube-apiserver, while the orchestrator stops and restarts kube-apiserver and etcd
//!   and kills the leader; plus bursts of candidates started at the same instant on a fresh
//!   lease and on a stale lease left by a vanished holder. The same scenario runs over
//!   `lease-store-postgres` ([`k8s::Backend::Postgres`]) on a dedicated PostgreSQL server that
//!   the orchestrator crashes and restarts, with candidates SIGKILLed at random.
//! - [`elector`]: [`LeaderElector`](lease_manager::LeaderElector) candidates in one process on
//!   a multi-thread runtime over one SQLite file, calling `lock()` concurrently on one elector
//!   and again from their lost-token handlers, while stores stall at random.
//! - [`lease_run`]: several `lease run --wait` loops on one SQLite lease, with commands that
//!   ignore SIGTERM and fork, store stalls and SIGKILLed supervisors; its checker proves that
//!   no two commands' process trees were ever alive at once.
//! - [`check`]: the checkers. Every participant logs ([`event`]) each interval in which it may act
//!   as holder, on the host's shared monotonic clock (`CLOCK_BOOTTIME`,
//!   [`SystemClock`]); the checker proves that no two intervals of one
//!   lease overlap and that fencing generations strictly increase.
//!
//! Intervals, as the store contract defines the guarantee:
//!
//! - a successful claim or extend that *started* at `s` with duration `d` and *returned* at `r`
//!   lets its holder act during `[r, s + d)`: from when it learns it holds the lease until the
//!   guarantee ends; a holder that gives the lease up logs the instant it stops acting *before*
//!   it revokes, which cuts its interval there;
//! - a leader acts from the instant `lock()` returned until it sees its lost token fire (or
//!   logs that it stops, before releasing), or until it is killed.
//!
//! The binary `lease-torture` runs the workers, candidates, orchestrators and the checker; `cargo
//! xtask torture` builds and runs it and writes `RELIABILITY.md`.

pub mod check;
pub mod elector;
pub mod event;
pub mod k8s;
pub mod lease_run;
pub mod proc;
pub mod report;
pub mod sqlite;

use lease_core::{Clock as _, SystemClock};

/// Now on the host's shared monotonic clock (`CLOCK_BOOTTIME`), in nanoseconds.
pub fn now() -> u64 {
    SystemClock::new().now().as_nanos()
}

/// Nanoseconds as seconds, for reports.
pub fn secs(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// Makes `dir` an empty folder for a run's logs: removes what an earlier run left, then
/// creates it.
///
/// # Errors
///
/// When the folder cannot be removed or created; the message names it.
pub fn fresh_dir(dir: &std::path::Path) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot empty {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}
