//! `lease-torture`: the torture scenarios of the lease library, their participants and their
//! checker. `cargo xtask torture` runs it; see the crate's library docs.
//!
//! Exit status: 0 when the scenario passed (with `--expect-violations`: when the checker found
//! violations), 1 when it failed, 2 when it could not run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lease_torture::{check, elector, event, k8s, lease_run, report, sqlite};

/// Torture tests of the lease library.
#[derive(Debug, Parser)]
#[command(name = "lease-torture")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the SQLite scenario: worker processes × leases on one file, with kill -9.
    Sqlite {
        /// Folder for the database and the logs (emptied first).
        #[arg(long, default_value = "target/torture/sqlite")]
        dir: PathBuf,
        /// Worker processes at a time.
        #[arg(long, default_value_t = 8)]
        workers: u32,
        /// Leases, shared by every worker.
        #[arg(long, default_value_t = 3)]
        leases: u32,
        /// Length of the run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Shortest claim duration.
        #[arg(long, default_value_t = 100)]
        min_ms: u64,
        /// Longest claim duration.
        #[arg(long, default_value_t = 400)]
        max_ms: u64,
        /// Shortest time between two kills.
        #[arg(long, default_value_t = 300)]
        kill_min_ms: u64,
        /// Longest time between two kills.
        #[arg(long, default_value_t = 1500)]
        kill_max_ms: u64,
        /// Kill nothing.
        #[arg(long)]
        no_kills: bool,
        /// MUTATION: workers believe their windows last this many times their duration.
        #[arg(long, default_value_t = 1.0)]
        stretch: f64,
        /// Seed of the random choices (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Write the report's Markdown section here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// The section's title.
        #[arg(
            long,
            default_value = "SQLite: worker processes × leases on one file, kill -9 and SIGSTOP"
        )]
        title: String,
        /// Succeed only if the checker finds violations (for a mutation run).
        #[arg(long)]
        expect_violations: bool,
    },
    /// Run the leader-candidates scenario: on the cluster of `KUBECONFIG`, or with `--backend
    /// postgres` on the Postgres server of `LEASE_TORTURE_POSTGRES_URL`.
    K8s {
        /// Folder for the logs (emptied first).
        #[arg(long, default_value = "target/torture/k8s")]
        dir: PathBuf,
        /// The store: `k8s` or `postgres`.
        #[arg(long, default_value = "k8s", value_parser = parse_backend)]
        backend: k8s::Backend,
        /// Candidates of the main phase SIGKILLed at random after the leader kill.
        #[arg(long, default_value_t = 0)]
        random_kills: u32,
        /// `cargo xtask`'s binary, to stop and start the server's processes; without it, no
        /// outages.
        #[arg(long)]
        server_ctl: Option<PathBuf>,
        /// The Kubernetes namespace of the Lease objects.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Candidates of the main phase.
        #[arg(long, default_value_t = 3)]
        candidates: u32,
        /// Server processes to stop and restart, in order (`kube-apiserver`, `etcd`, or
        /// `postgres`; `NAME:kill` to SIGKILL it).
        #[arg(long = "outage")]
        outages: Vec<String>,
        /// How long each stays down.
        #[arg(long, default_value_t = 6)]
        outage_seconds: u64,
        /// Do not SIGKILL the leader in the main phase.
        #[arg(long)]
        no_kill_leader: bool,
        /// Quiet time before, between and after the main phase's events.
        #[arg(long, default_value_t = 3)]
        quiet_seconds: u64,
        /// Burst rounds (each: a fresh lease and a stale one).
        #[arg(long, default_value_t = 2)]
        burst_rounds: u32,
        /// Candidates started together in a burst.
        #[arg(long, default_value_t = 5)]
        burst_size: u32,
        /// Write the report's Markdown section here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// The section's title.
        #[arg(
            long,
            default_value = "Kubernetes: leader candidates on a real API server, restarts and bursts"
        )]
        title: String,
    },
    /// Run the elector scenario: candidates in one process on a multi-thread runtime,
    /// concurrent `lock()` calls and `lock()` from lost-token handlers, store stalls.
    Elector(ElectorArgs),
    /// Run the `lease run` scenario: `lease run --wait` loops on one SQLite lease, commands
    /// that ignore SIGTERM and fork, store stalls, SIGKILLed supervisors.
    LeaseRun {
        /// The `lease` binary.
        #[arg(long)]
        lease_exe: PathBuf,
        /// Folder for the database and the logs (emptied first).
        #[arg(long, default_value = "target/torture/lease-run")]
        dir: PathBuf,
        /// `lease run --wait` loops at once.
        #[arg(long, default_value_t = 3)]
        holders: u32,
        /// Length of the run.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// The lease's ttl, ms.
        #[arg(long, default_value_t = 1500)]
        ttl_ms: u64,
        /// Seed of the random choices (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Write the report's Markdown section here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// The section's title.
        #[arg(
            long,
            default_value = "`lease run`: commands that ignore SIGTERM and fork, store stalls, kill -9 of supervisors"
        )]
        title: String,
        /// MUTATION: every sign of life also claims this many ms more of life.
        #[arg(long, default_value_t = 0)]
        skew_ms: u64,
        /// Succeed only if the checker finds violations (for a mutation run).
        #[arg(long)]
        expect_violations: bool,
    },
    /// One command of the `lease run` scenario (started by `lease run`).
    RunCommand {
        /// Where to write the marks.
        #[arg(long)]
        dir: PathBuf,
        /// main, child, forker or daemon.
        #[arg(long, default_value = "main")]
        role: String,
        /// How long the main process works before exiting, ms.
        #[arg(long, default_value_t = 500)]
        hold_ms: u64,
        /// See `lease-run --skew-ms`.
        #[arg(long, default_value_t = 0)]
        skew_ms: u64,
    },
    /// Hold an SQLite database's write lock for a while (a stall of the `lease run` scenario).
    StallSqlite {
        /// The database.
        #[arg(long)]
        db: PathBuf,
        /// How long, ms.
        #[arg(long)]
        ms: u64,
    },
    /// Check the logs in a folder again.
    Check {
        /// The folder of `*.jsonl` logs.
        dir: PathBuf,
        /// Check leader terms (Kubernetes) instead of SQLite windows.
        #[arg(long)]
        k8s: bool,
        /// The lease duration of the leader terms, ms.
        #[arg(long, default_value_t = 4000)]
        lease_ms: u64,
    },
    /// One SQLite worker (started by `sqlite`).
    SqliteWorker {
        /// The database file.
        #[arg(long)]
        db: PathBuf,
        /// The event log.
        #[arg(long)]
        log: PathBuf,
        /// The holder name.
        #[arg(long)]
        holder: String,
        /// Leases.
        #[arg(long)]
        leases: u32,
        /// Stop at this instant (ns on CLOCK_BOOTTIME).
        #[arg(long)]
        until: u64,
        /// Shortest claim duration.
        #[arg(long)]
        min_ms: u64,
        /// Longest claim duration.
        #[arg(long)]
        max_ms: u64,
        /// See `sqlite --stretch`.
        #[arg(long, default_value_t = 1.0)]
        stretch: f64,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// One leader-election candidate (started by `k8s`).
    K8sCandidate {
        /// The store: `k8s` or `postgres`.
        #[arg(long, default_value = "k8s", value_parser = parse_backend)]
        backend: k8s::Backend,
        /// The identity.
        #[arg(long)]
        identity: String,
        /// The lease.
        #[arg(long)]
        lease: String,
        /// The Kubernetes namespace.
        #[arg(long)]
        namespace: String,
        /// The event log.
        #[arg(long)]
        log: PathBuf,
        /// Start contending at this instant (ns on CLOCK_BOOTTIME).
        #[arg(long)]
        start_at: Option<u64>,
        /// Stop at this instant.
        #[arg(long)]
        until: u64,
        /// Stop when this file exists.
        #[arg(long)]
        stop_file: PathBuf,
        /// lease_duration, ms.
        #[arg(long, default_value_t = 4000)]
        lease_ms: u64,
        /// renew_deadline, ms.
        #[arg(long, default_value_t = 3000)]
        renew_ms: u64,
        /// retry_period, ms.
        #[arg(long, default_value_t = 500)]
        retry_ms: u64,
        /// The store's request timeout, ms.
        #[arg(long, default_value_t = 1000)]
        request_ms: u64,
    },
}

/// The elector scenario's options.
#[derive(Debug, clap::Args)]
struct ElectorArgs {
    /// Folder for the database and the log (emptied first).
    #[arg(long, default_value = "target/torture/elector")]
    dir: PathBuf,
    /// Managers over the one SQLite file.
    #[arg(long, default_value_t = 2)]
    managers: u32,
    /// Electors per manager.
    #[arg(long, default_value_t = 2)]
    electors: u32,
    /// Length of the run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// lease_duration, ms.
    #[arg(long, default_value_t = 1500)]
    lease_ms: u64,
    /// renew_deadline, ms.
    #[arg(long, default_value_t = 900)]
    renew_ms: u64,
    /// retry_period, ms.
    #[arg(long, default_value_t = 200)]
    retry_ms: u64,
    /// Stall no store.
    #[arg(long)]
    no_stalls: bool,
    /// Seed of the random choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Write the report's Markdown section here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The section's title.
    #[arg(
        long,
        default_value = "Elector: concurrent lock() and lock() from the lost-token handler, multi-thread runtime"
    )]
    title: String,
}

fn run_elector(a: ElectorArgs) -> Result<bool, String> {
    let args = elector::RunArgs {
        dir: a.dir,
        managers: a.managers,
        electors: a.electors,
        duration: Duration::from_secs(a.seconds),
        stalls: !a.no_stalls,
        timing: elector::Timing {
            lease_duration: Duration::from_millis(a.lease_ms),
            renew_deadline: Duration::from_millis(a.renew_ms),
            retry_period: Duration::from_millis(a.retry_ms),
        },
        seed: a.seed.unwrap_or_else(lease_torture::now),
    };
    println!(
        "lease-torture elector: {} managers × {} electors × 2 slots for {} s (seed {})",
        args.managers, args.electors, a.seconds, args.seed
    );
    let summary = elector::run(args)?;
    let text = elector::section(&a.title, &summary);
    print!("{text}");
    write_report(a.report.as_ref(), &text)?;
    Ok(summary.passed())
}

fn parse_backend(name: &str) -> Result<k8s::Backend, String> {
    match name {
        "k8s" => Ok(k8s::Backend::Kubernetes),
        "postgres" => Ok(k8s::Backend::Postgres),
        other => Err(format!("unknown backend {other:?} (k8s or postgres)")),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("lease-torture: {e}");
            ExitCode::from(2)
        }
    }
}

fn write_report(path: Option<&PathBuf>, text: &str) -> Result<(), String> {
    if let Some(path) = path {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn run(command: Cmd) -> Result<bool, String> {
    let exe = || std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"));
    match command {
        Cmd::Sqlite {
            dir,
            workers,
            leases,
            seconds,
            min_ms,
            max_ms,
            kill_min_ms,
            kill_max_ms,
            no_kills,
            stretch,
            seed,
            report: report_path,
            title,
            expect_violations,
        } => {
            let args = sqlite::RunArgs {
                dir,
                workers,
                leases,
                duration: Duration::from_secs(seconds),
                durations: (Duration::from_millis(min_ms), Duration::from_millis(max_ms)),
                kill_every: (!no_kills).then(|| {
                    (
                        Duration::from_millis(kill_min_ms),
                        Duration::from_millis(kill_max_ms),
                    )
                }),
                stretch,
                seed: seed.unwrap_or_else(lease_torture::now),
                exe: exe()?,
            };
            println!(
                "lease-torture sqlite: {workers} workers × {leases} leases for {seconds} s (seed {})",
                args.seed
            );
            let summary = sqlite::run(args)?;
            let text = report::sqlite_section(&title, &summary);
            print!("{text}");
            write_report(report_path.as_ref(), &text)?;
            if expect_violations {
                Ok(summary.verdict.violations() > 0)
            } else {
                Ok(summary.passed())
            }
        }
        Cmd::K8s {
            dir,
            backend,
            random_kills,
            server_ctl,
            namespace,
            candidates,
            outages,
            outage_seconds,
            no_kill_leader,
            quiet_seconds,
            burst_rounds,
            burst_size,
            report: report_path,
            title,
        } => {
            let args = k8s::RunArgs {
                dir,
                exe: exe()?,
                backend,
                server_ctl,
                namespace,
                candidates,
                outages,
                outage_length: Duration::from_secs(outage_seconds),
                kill_leader: !no_kill_leader,
                random_kills,
                quiet: Duration::from_secs(quiet_seconds),
                burst_rounds,
                burst_size,
                timing: k8s::Timing::default(),
            };
            let summary = k8s::run(args)?;
            let text = report::k8s_section(&title, &summary);
            print!("{text}");
            write_report(report_path.as_ref(), &text)?;
            Ok(summary.passed())
        }
        Cmd::Elector(a) => run_elector(a),
        Cmd::LeaseRun {
            lease_exe,
            dir,
            holders,
            seconds,
            ttl_ms,
            seed,
            report: report_path,
            title,
            skew_ms,
            expect_violations,
        } => lease_run_scenario(
            lease_run::RunArgs {
                dir,
                lease_exe,
                exe: exe()?,
                holders,
                duration: Duration::from_secs(seconds),
                ttl: Duration::from_millis(ttl_ms),
                stall_every: (
                    Duration::from_millis(ttl_ms),
                    Duration::from_millis(ttl_ms * 3),
                ),
                stall_length: (
                    Duration::from_millis(ttl_ms * 4 / 3),
                    Duration::from_millis(ttl_ms * 2),
                ),
                kill_every: Some((
                    Duration::from_millis(ttl_ms),
                    Duration::from_millis(ttl_ms * 3),
                )),
                hold: (
                    Duration::from_millis(ttl_ms / 5),
                    Duration::from_millis(ttl_ms * 2),
                ),
                seed: seed.unwrap_or_else(lease_torture::now),
                skew: Duration::from_millis(skew_ms),
            },
            &title,
            report_path.as_ref(),
            expect_violations,
        ),
        Cmd::RunCommand {
            dir,
            role,
            hold_ms,
            skew_ms,
        } => {
            lease_run::command(
                &dir,
                &role,
                Duration::from_millis(hold_ms),
                Duration::from_millis(skew_ms),
            )?;
            Ok(true)
        }
        Cmd::StallSqlite { db, ms } => {
            lease_run::stall(&db, Duration::from_millis(ms))?;
            Ok(true)
        }
        Cmd::Check { dir, k8s, lease_ms } => {
            let (events, torn) =
                event::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            if k8s {
                let v = check::check_terms(&check::terms(&events), lease_ms * 1_000_000);
                println!("{v:#?}\ntorn lines: {torn}");
                Ok(v.violations() == 0)
            } else {
                let v = check::check_sqlite(&events);
                println!("{v:#?}\ntorn lines: {torn}");
                Ok(v.violations() == 0)
            }
        }
        Cmd::SqliteWorker {
            db,
            log,
            holder,
            leases,
            until,
            min_ms,
            max_ms,
            stretch,
            seed,
        } => {
            sqlite::worker(sqlite::WorkerArgs {
                db,
                log,
                holder,
                leases,
                until,
                min_duration: Duration::from_millis(min_ms),
                max_duration: Duration::from_millis(max_ms),
                stretch,
                seed,
            })?;
            Ok(true)
        }
        Cmd::K8sCandidate {
            backend,
            identity,
            lease,
            namespace,
            log,
            start_at,
            until,
            stop_file,
            lease_ms,
            renew_ms,
            retry_ms,
            request_ms,
        } => {
            k8s::candidate(k8s::CandidateArgs {
                backend,
                identity,
                lease,
                namespace,
                log,
                start_at,
                until,
                stop_file,
                timing: k8s::Timing {
                    lease_duration: Duration::from_millis(lease_ms),
                    renew_deadline: Duration::from_millis(renew_ms),
                    retry_period: Duration::from_millis(retry_ms),
                    request_timeout: Duration::from_millis(request_ms),
                },
            })?;
            Ok(true)
        }
    }
}

/// The `lease run` scenario: runs it, prints and writes its report section.
fn lease_run_scenario(
    args: lease_run::RunArgs,
    title: &str,
    report_path: Option<&PathBuf>,
    expect_violations: bool,
) -> Result<bool, String> {
    println!(
        "lease-torture lease-run: {} loops for {} s, ttl {} ms (seed {})",
        args.holders,
        args.duration.as_secs(),
        args.ttl.as_millis(),
        args.seed
    );
    let summary = lease_run::run(args)?;
    let text = lease_run::report_section(title, &summary);
    print!("{text}");
    write_report(report_path, &text)?;
    if expect_violations {
        Ok(!summary.violations.is_empty())
    } else {
        Ok(summary.passed())
    }
}
