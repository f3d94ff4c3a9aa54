//! The lease library's benchmarks, and what they share.
//!
//! Every benchmark is a binary of this crate, run in release mode by `cargo xtask bench`, which
//! writes the markdown section each prints on stdout into `BENCHMARKS.md` (progress goes to
//! stderr):
//!
//! - `bench_sqlite`: the SQLite store's claims and extends, one per transaction and batched,
//!   beside raw rusqlite; claim latency with many leases present.
//! - `bench_manager`: the manager over SQLite (throughput beside raw rusqlite, token checks,
//!   expiry and change wake-ups, idle CPU, memory per lease).
//! - `bench_cli`: one `lease run -- true` beside `flock(1)`.
//! - `bench_k8s`: the Kubernetes Lease store's renewals, a follower and contention, beside raw
//!   conditional `PUT`s.
//! - `bench_election`: `LeaderElector` handovers, takeovers, requests per minute and bursts of
//!   candidates, each candidate a process, on Kubernetes and on SQLite.
//! - `bench_postgres`: the Postgres store through the manager, beside a raw loop.
//!
//! This library holds what more than one of them needs: reading the host ([`host`]), summary
//! statistics ([`stats`]), the markdown they print ([`report`]), the command line
//! ([`flag_pairs`], [`die`], [`fail`]) and counting Kubernetes API requests on the client and on the
//! server ([`k8s`]).

#![forbid(unsafe_code)]

use std::fmt::Display;

pub mod host;
pub mod k8s;
pub mod report;
pub mod stats;

/// A result whose error is a message for the benchmark's user.
pub type Res<T> = Result<T, String>;

/// The name of this program (the file name it was started as), which prefixes its messages.
#[must_use]
pub fn program() -> String {
    std::env::args()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "lease-bench".to_owned())
}

/// Prints `program: message` on stderr and exits with status 1: a benchmark that cannot
/// measure what it set out to measure stops rather than print a misleading figure.
pub fn die(message: impl Display) -> ! {
    eprintln!("{}: {message}", program());
    std::process::exit(1)
}

/// [`die`] with `what: e`: what failed, and why.
pub fn fail(what: &str, e: impl Display) -> ! {
    die(format!("{what}: {e}"))
}

/// The `--flag value` pairs of a command line (without the program name).
///
/// # Errors
///
/// A flag without a value after it.
pub fn flag_pairs(args: impl IntoIterator<Item = String>) -> Res<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        pairs.push((flag, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_come_in_pairs() {
        let args = ["--secs", "2", "--dir", "/tmp"].map(str::to_owned);
        assert_eq!(
            flag_pairs(args).unwrap(),
            vec![
                ("--secs".to_owned(), "2".to_owned()),
                ("--dir".to_owned(), "/tmp".to_owned())
            ]
        );
        assert_eq!(
            flag_pairs(["--secs".to_owned()]).unwrap_err(),
            "--secs needs a value"
        );
    }
}
