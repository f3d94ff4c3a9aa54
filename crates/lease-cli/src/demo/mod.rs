//! `lease demo`: a leader election among worker processes on a fresh SQLite database, a
//! SIGKILLed leader and the near-instant takeover (the store sees the death), then (not with
//! `--short`) a leader stopped with SIGSTOP and the takeover at its expiry, and a check of the
//! workers' logs that no two ever led at once; and `__demo-worker`, one of those workers.
//!
//! Each worker claims the lease `demo/demo#demo` through a manager with a short ttl, renews it
//! every third of the ttl while leading, and otherwise waits with `wait_until_expired`. Every
//! successful claim or renewal is logged with its *guaranteed window* on the host's shared
//! boot clock (`CLOCK_BOOTTIME`): from the moment the call returned to the call's start plus
//! the ttl, the span in which the worker may act as leader. The check: windows of different
//! workers never overlap, and generations strictly increase from one acquisition to the next.

mod check;
mod worker_process;
mod workers;

use std::fs;
use std::path::Path;
use std::time::Duration;

use lease_core::Key;
use lease_store_sqlite::SqliteStore;
use rustix::process::Signal;

use crate::backend;
use crate::cli::DemoArgs;
use crate::commands::out;
use crate::error::{CliError, EXIT_HELD, EXIT_OK, EXIT_USAGE};
use crate::human::format_duration;
use check::{Verdict, verify};
pub(crate) use worker_process::worker;
use workers::{Demo, Worker, holder_name};

const NAMESPACE: &str = "demo";
const MODEL: &str = "demo";
const LEASE: &str = "demo";
/// How often the demo looks at the lease for its live view.
const POLL: Duration = Duration::from_millis(25);
/// The shortest `--ttl`: shorter, a worker renewing every third of it cannot keep up.
const MIN_TTL: Duration = Duration::from_millis(100);
/// The longest `--ttl`: the demo waits up to three ttls for each takeover, and a demo that
/// takes hours shows nothing more.
const MAX_TTL: Duration = Duration::from_secs(60);

/// The demo's ttl: `--ttl`, or its default.
///
/// # Errors
///
/// A usage error when `--ttl` is outside [`MIN_TTL`]..=[`MAX_TTL`].
fn demo_ttl(args: &DemoArgs) -> Result<Duration, CliError> {
    let ttl = args.ttl.unwrap_or(if args.short {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(2)
    });
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(CliError::new(
            EXIT_USAGE,
            format!(
                "invalid --ttl {} for the demo: must be between {} and {} (see lease demo --help)",
                format_duration(ttl),
                format_duration(MIN_TTL),
                format_duration(MAX_TTL)
            ),
        ));
    }
    Ok(ttl)
}

/// The instant `d` from now, saturating far in the future instead of overflowing.
fn after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365)))
        .unwrap_or(now)
}

fn key() -> Key {
    Key::new(NAMESPACE, MODEL, LEASE)
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> CliError {
    CliError::store(format!("{what} {}: {e}", path.display()))
}

/// `lease demo`.
pub(crate) async fn demo(args: DemoArgs) -> Result<u8, CliError> {
    let started = tokio::time::Instant::now();
    // Checked before anything is created or started.
    let ttl = demo_ttl(&args)?;
    let kills = if args.short { 1 } else { 2 };
    let (watch_first, watch_after) = if args.short {
        (Duration::from_millis(1200), Duration::from_millis(600))
    } else {
        (Duration::from_secs(3), Duration::from_millis(1500))
    };

    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, &e))?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("lease-demo-")
                .tempdir()
                .map_err(|e| CliError::store(format!("creating a temporary directory: {e}")))?;
            temp.path().to_path_buf()
        }
    };
    let db = dir.join("demo.db");
    // Create the database (and its schema) once, before the workers race to open it.
    let observer = SqliteStore::builder(&db).clock(backend::clock()).open()?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::store(format!("cannot find the lease executable: {e}")))?;

    out(&format!(
        "lease demo: {} workers elect a leader for lease {} (ttl {}) on {}\n",
        args.workers,
        key(),
        format_duration(ttl),
        db.display()
    ));
    let mut demo = Demo::new(observer, dir.join("deaths"));
    for id in 1..=args.workers {
        demo.workers.push(Worker::spawn(&exe, &dir, &db, id, ttl)?);
    }
    let pids: Vec<String> = demo
        .workers
        .iter()
        .map(|w| format!("{} (pid {})", w.holder(), w.child.id()))
        .collect();
    out(&format!("started {}\n", pids.join(", ")));

    let patience = ttl.saturating_mul(3).saturating_add(Duration::from_secs(5));
    let Some(mut leader) = demo.await_leader(None, patience).await else {
        demo.stop_all();
        return Err(CliError::new(
            EXIT_HELD,
            format!(
                "no worker became leader within {} (see the worker-N.err files in {})",
                format_duration(patience),
                dir.display()
            ),
        ));
    };
    demo.view.event(&format!(
        "elected: {} with generation {}",
        leader.0, leader.1
    ));
    demo.watch(watch_first).await;

    let mut rounds = Rounds {
        leaders: vec![leader.0.clone()],
        after_kill: Vec::new(),
        after_stop: Vec::new(),
    };
    for round in 0..kills {
        // Take the leader as it stands now (it renews, it may even have changed).
        if let Some(current) = demo.tick().await {
            leader = current;
        }
        let killed_at = demo.clock.now();
        // The full demo's last round stops the leader instead: alive but silent, it keeps the
        // lease until its expiry.
        let stop = !args.short && round + 1 == kills;
        let found = if stop {
            let Some(pid) = demo.signal(&leader.0, Signal::STOP) else {
                break;
            };
            demo.view.event(&format!(
                "kill -STOP {} (pid {pid}), the leader with generation {}: alive but silent, it \
                 keeps the lease until its expiry",
                leader.0, leader.1
            ));
            // Continued after the takeover, or after two ttls without one (stopped inside a
            // transaction, it would hold the database's write lock).
            let mut found = demo
                .await_leader(Some(&leader), ttl.saturating_mul(2))
                .await;
            demo.signal(&leader.0, Signal::CONT);
            if found.is_none() {
                found = demo.await_leader(Some(&leader), patience).await;
            }
            found
        } else {
            let Some(pid) = demo.kill(&leader.0) else {
                break;
            };
            demo.view.event(&format!(
                "kill -9 {} (pid {pid}), the leader with generation {}",
                leader.0, leader.1
            ));
            demo.await_leader(Some(&leader), patience).await
        };
        let Some(next) = found else {
            demo.stop_all();
            return Err(CliError::new(
                EXIT_HELD,
                format!(
                    "no takeover within {} of killing {}",
                    format_duration(patience),
                    leader.0
                ),
            ));
        };
        let acquired = demo
            .acquisition(&next.0, next.1)
            .map_or_else(|| demo.clock.now(), |w| w.start);
        let failover = acquired.saturating_duration_since(killed_at);
        let after = match demo.last_window(&leader.0) {
            Some(w) if acquired < w.end => format!(
                ", {} before the old leader's guaranteed window would have ended",
                format_duration(w.end.saturating_duration_since(acquired))
            ),
            Some(w) => format!(
                ", {} after the old leader's guaranteed window ended",
                format_duration(acquired.saturating_duration_since(w.end))
            ),
            None => String::new(),
        };
        if stop {
            demo.view.event(&format!(
                "takeover: {} leads with generation {}, {} after the SIGSTOP{after} (at the \
                 expiry; the stopped leader was then continued, and its next renewal is refused)",
                next.0,
                next.1,
                format_duration(failover)
            ));
            rounds.after_stop.push(failover);
        } else {
            demo.view.event(&format!(
                "takeover: {} leads with generation {}, {} after the kill{after} (the store \
                 saw the leader's death)",
                next.0,
                next.1,
                format_duration(failover)
            ));
            rounds.after_kill.push(failover);
        }
        rounds.leaders.push(next.0.clone());
        leader = next;
        let length = if round + 1 == kills {
            watch_after
        } else {
            watch_first / 2
        };
        demo.watch(length).await;
    }
    demo.stop_all();
    if demo.view.tty {
        out("\r\x1b[K");
    }

    let windows = demo.windows()?;
    let verdict = verify(&windows);
    out(&summary(
        &args,
        ttl,
        &rounds,
        &verdict,
        windows.len(),
        started.elapsed(),
    ));
    if args.dir.is_some() {
        out(&format!("logs kept in {}\n", dir.display()));
    }
    if verdict.ok() && verdict.acquisitions.len() > kills {
        Ok(EXIT_OK)
    } else {
        Err(CliError::new(
            EXIT_HELD,
            "the demo's check failed: see the summary above",
        ))
    }
}

/// What the demo's rounds saw: the leaders in turn, and how long each takeover took after a
/// kill -9 or a SIGSTOP of the leader.
struct Rounds {
    leaders: Vec<String>,
    after_kill: Vec<Duration>,
    after_stop: Vec<Duration>,
}

/// The summary printed at the end: the run, its takeovers and the check of the `windows`
/// guaranteed windows the workers logged.
fn summary(
    args: &DemoArgs,
    ttl: Duration,
    rounds: &Rounds,
    verdict: &Verdict,
    windows: usize,
    took: Duration,
) -> String {
    let generations: Vec<String> = verdict
        .acquisitions
        .iter()
        .map(|w| format!("{} ({})", w.generation, holder_name(w.worker)))
        .collect();
    let mut text = String::from("\nsummary\n");
    text.push_str(&format!(
        "  workers          {} processes, lease ttl {}\n",
        args.workers,
        format_duration(ttl)
    ));
    text.push_str(&format!(
        "  leaders          {}\n",
        rounds.leaders.join(" -> ")
    ));
    text.push_str(&format!(
        "  acquisitions     {}: generations {}\n",
        verdict.acquisitions.len(),
        generations.join(", ")
    ));
    text.push_str(&format!("  renewals         {}\n", verdict.renewals));
    let listed = |durations: &[Duration]| {
        let shown: Vec<String> = durations.iter().map(|d| format_duration(*d)).collect();
        shown.join(", ")
    };
    text.push_str(&format!(
        "  failover         {} after kill -9 (ttl {}: a dead leader's lease is free at once)\n",
        listed(&rounds.after_kill),
        format_duration(ttl)
    ));
    if !rounds.after_stop.is_empty() {
        text.push_str(&format!(
            "  after SIGSTOP    {} (a stopped leader keeps its lease until its expiry)\n",
            listed(&rounds.after_stop)
        ));
    }
    text.push_str(&format!(
        "  generations      {}\n",
        if verdict.generation_faults.is_empty() {
            "strictly increasing: OK".to_owned()
        } else {
            format!("NOT strictly increasing: {:?}", verdict.generation_faults)
        }
    ));
    text.push_str(&format!(
        "  overlap check    {} guaranteed windows from {} logs: {}\n",
        windows,
        args.workers,
        if verdict.overlaps.is_empty() {
            "no two workers ever led at once: OK".to_owned()
        } else {
            format!(
                "{} OVERLAPS: {:?}",
                verdict.overlaps.len(),
                verdict.overlaps
            )
        }
    ));
    text.push_str(&format!("  took             {}\n", format_duration(took)));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ttl: Option<Duration>, short: bool) -> DemoArgs {
        DemoArgs {
            workers: 3,
            ttl,
            short,
            dir: None,
        }
    }

    #[test]
    fn the_ttl_must_fit_a_demo() {
        assert_eq!(
            demo_ttl(&args(None, false)).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(demo_ttl(&args(None, true)).unwrap(), Duration::from_secs(1));
        for ok in [MIN_TTL, Duration::from_secs(5), MAX_TTL] {
            assert_eq!(demo_ttl(&args(Some(ok), false)).unwrap(), ok);
        }
        for bad in [
            Duration::from_nanos(1),
            Duration::from_millis(99),
            MAX_TTL + Duration::from_nanos(1),
            Duration::from_secs(3600 * 24 * 365 * 5),
            Duration::MAX,
        ] {
            let err = demo_ttl(&args(Some(bad), true)).unwrap_err();
            assert_eq!(err.code, EXIT_USAGE);
            assert!(
                err.message.contains("must be between 100ms and 1m"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn deadlines_saturate() {
        let now = tokio::time::Instant::now();
        assert!(after(Duration::MAX) > now);
        assert!(after(Duration::from_secs(1)) > now);
    }
}
