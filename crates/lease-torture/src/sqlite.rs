//! The SQLite scenario: N worker processes × M leases on one database file, each looping claim /
//! hold / extend / revoke through a manager with short durations, while the orchestrator
//! SIGKILLs workers at random and starts new incarnations of them, or stops one with SIGSTOP
//! for a while and continues it with SIGCONT. A killed worker's leases are free at its death
//! (the store's holder sessions); a stopped one's only at their expiry. The orchestrator logs
//! each kill (after reaping the worker), and each worker its exit: the checker ends a holder's
//! windows there, since a dead process acts no more.
//!
//! A worker logs every successful claim or extend with its window `[returned, start + duration)`
//! and generation, and the instant it stops acting before each revoke; each incarnation has its
//! own holder name (`w<i>-<incarnation>`), so a restarted worker never inherits its
//! predecessor's lease by name.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lease_core::{
    CancellationToken, Claimer, Clock, DefaultSecretary, Facades as _, Request, Revoker,
    SystemClock,
};
use lease_manager::{Manager, ManagerConfig};
use lease_store_sqlite::SqliteStore;

use crate::check::{SqliteVerdict, check_sqlite};
use crate::event::{self, Event, EventLog, WindowKind};
use crate::now;
use crate::proc::{die_with_parent, kill9, sleep_until, wait_timeout};

/// The manager namespace and model of the torture leases.
const NAMESPACE: &str = "torture";
const MODEL: &str = "sqlite";
/// Bound on each lease loop's iterations, besides its deadline.
const MAX_ITERATIONS: u64 = 10_000_000;

/// What a worker does.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// The database file.
    pub db: PathBuf,
    /// The event log to append to.
    pub log: PathBuf,
    /// This incarnation's holder name.
    pub holder: String,
    /// Leases `lease-0` … `lease-<leases - 1>`, one task each.
    pub leases: u32,
    /// When to stop (ns on `CLOCK_BOOTTIME`).
    pub until: u64,
    /// Shortest claim duration.
    pub min_duration: Duration,
    /// Longest claim duration.
    pub max_duration: Duration,
    /// The MUTATION knob: the worker believes its window lasts `stretch × duration`. 1 is the
    /// truth; anything above 1 is deliberately unsafe and must make the checker fail.
    pub stretch: f64,
    /// Seed of the worker's random choices.
    pub seed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    denied: AtomicU64,
    revoked: AtomicU64,
    errors: AtomicU64,
}

struct Shared {
    args: WorkerArgs,
    log: Mutex<EventLog>,
    counters: Counters,
}

impl Shared {
    fn write(&self, event: &Event) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = log.write(event) {
            // A window that cannot be logged must not be acted on: stop the worker.
            eprintln!("{}: cannot write the log: {e}", self.args.holder);
            std::process::exit(3);
        }
    }

    fn stats(&self) {
        self.write(&Event::Stats {
            holder: self.args.holder.clone(),
            denied: self.counters.denied.load(Ordering::Relaxed),
            revoked: self.counters.revoked.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
        });
    }
}

/// Runs one worker until `args.until`.
///
/// # Errors
///
/// When the database, the manager or the log cannot be opened.
pub fn worker(args: WorkerArgs) -> Result<(), String> {
    die_with_parent();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(worker_async(args))
}

async fn worker_async(args: WorkerArgs) -> Result<(), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let store = SqliteStore::builder(&args.db)
        .clock(Arc::clone(&clock))
        .open()
        .map_err(|e| format!("cannot open {}: {e}", args.db.display()))?;
    let manager = Manager::start(
        ManagerConfig::new(store, clock).with_default_secretary(Arc::new(DefaultSecretary)),
    )
    .map_err(|e| format!("cannot start the manager: {e}"))?;
    let claimer = manager
        .claimer(NAMESPACE, MODEL)
        .map_err(|e| e.to_string())?;
    let revoker = manager
        .revoker(NAMESPACE, MODEL)
        .map_err(|e| e.to_string())?;
    let log = EventLog::open(&args.log)
        .map_err(|e| format!("cannot open {}: {e}", args.log.display()))?;
    let shared = Arc::new(Shared {
        args: args.clone(),
        log: Mutex::new(log),
        counters: Counters::default(),
    });
    let mut tasks = Vec::new();
    for j in 0..args.leases {
        let rng =
            fastrand::Rng::with_seed(args.seed.wrapping_mul(1_000_003).wrapping_add(u64::from(j)));
        tasks.push(tokio::spawn(lease_loop(
            format!("lease-{j}"),
            Arc::clone(&claimer),
            Arc::clone(&revoker),
            Arc::clone(&shared),
            rng,
        )));
    }
    let stats = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            while now() < shared.args.until {
                tokio::time::sleep(Duration::from_millis(250)).await;
                shared.stats();
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    stats.abort();
    shared.stats();
    // Leases still held are freed when this process exits (its holder session dies): act no
    // more from here on.
    shared.write(&Event::Exit {
        holder: args.holder.clone(),
        at: now(),
    });
    Ok(())
}

fn random_duration(rng: &mut fastrand::Rng, min: Duration, max: Duration) -> Duration {
    let (min, max) = (
        min.as_micros() as u64,
        max.as_micros().max(min.as_micros()) as u64,
    );
    Duration::from_micros(rng.u64(min..=max))
}

async fn lease_loop(
    lease: String,
    claimer: Arc<dyn Claimer>,
    revoker: Arc<dyn Revoker>,
    shared: Arc<Shared>,
    mut rng: fastrand::Rng,
) {
    let args = &shared.args;
    let counters = &shared.counters;
    // The generation of the term this worker believes it holds.
    let mut held: Option<u64> = None;
    let mut iterations = 0;
    while now() < args.until && iterations < MAX_ITERATIONS {
        iterations += 1;
        let duration = random_duration(&mut rng, args.min_duration, args.max_duration);
        let start = now();
        match claimer
            .claim(&lease, Request::new(&*args.holder, duration))
            .await
        {
            Ok(info) => {
                let returned = now();
                let generation = info.generation.get();
                let kind = if held == Some(generation) {
                    WindowKind::Extend
                } else {
                    WindowKind::Claim
                };
                held = Some(generation);
                let believed = duration.mul_f64(args.stretch);
                let end =
                    start.saturating_add(u64::try_from(believed.as_nanos()).unwrap_or(u64::MAX));
                shared.write(&Event::Window {
                    lease: lease.clone(),
                    holder: args.holder.clone(),
                    generation,
                    kind,
                    start,
                    returned,
                    end,
                });
                // Hold (act) for part of the window, then extend, revoke or let it lapse.
                let hold = duration.mul_f64(rng.f64() * 0.6);
                tokio::time::sleep(hold).await;
                match rng.u8(0..100) {
                    0..55 => {}
                    55..85 => {
                        let at = now();
                        shared.write(&Event::Release {
                            lease: lease.clone(),
                            holder: args.holder.clone(),
                            generation,
                            at,
                        });
                        held = None;
                        match revoker.revoke(&lease, &args.holder).await {
                            Ok(()) => counters.revoked.fetch_add(1, Ordering::Relaxed),
                            Err(_) => counters.errors.fetch_add(1, Ordering::Relaxed),
                        };
                        tokio::time::sleep(Duration::from_millis(rng.u64(0..30))).await;
                    }
                    _ => {
                        // Let it lapse: act no longer, claim again once it has expired.
                        sleep_until_async(end.saturating_add(1_000_000)).await;
                    }
                }
            }
            Err(e) if e.is_claim_denied() => {
                counters.denied.fetch_add(1, Ordering::Relaxed);
                held = None;
                // Wait for the lease to be free, or give up after a while and try again.
                let cancel = CancellationToken::new();
                let patience = Duration::from_millis(rng.u64(20..600));
                tokio::select! {
                    _ = claimer.wait_until_expired(&lease, &cancel) => {}
                    () = tokio::time::sleep(patience) => cancel.cancel(),
                }
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                held = None;
                tokio::time::sleep(Duration::from_millis(rng.u64(10..50))).await;
            }
        }
    }
}

async fn sleep_until_async(deadline: u64) {
    let now = now();
    if deadline > now {
        tokio::time::sleep(Duration::from_nanos(deadline - now)).await;
    }
}

/// How to run the SQLite scenario.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// Folder for the database and the logs (emptied first).
    pub dir: PathBuf,
    /// Worker processes.
    pub workers: u32,
    /// Leases per worker (all workers contend for the same ones).
    pub leases: u32,
    /// Length of the run.
    pub duration: Duration,
    /// Shortest and longest claim duration.
    pub durations: (Duration, Duration),
    /// Shortest and longest time between two SIGKILLs; `None` kills nothing. One round in
    /// three stops a worker with SIGSTOP instead, for up to twice the longest claim duration,
    /// then lets it go on with SIGCONT: a live holder whose lease must not be freed early.
    pub kill_every: Option<(Duration, Duration)>,
    /// See [`WorkerArgs::stretch`].
    pub stretch: f64,
    /// Seed of the orchestrator's and workers' random choices.
    pub seed: u64,
    /// The `lease-torture` binary to start workers from.
    pub exe: PathBuf,
}

/// What a run did and what the checker found.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The parameters.
    pub args: RunArgs,
    /// The checker's verdict.
    pub verdict: SqliteVerdict,
    /// Workers SIGKILLed (each was restarted as a new incarnation).
    pub kills: u32,
    /// Workers stopped with SIGSTOP and continued with SIGCONT.
    pub stops: u32,
    /// Worker incarnations started in all.
    pub incarnations: u32,
    /// Workers that exited with a failure on their own (must be 0).
    pub crashes: Vec<String>,
    /// Log lines torn by a SIGKILL and skipped.
    pub torn_lines: usize,
    /// Wall time of the run, seconds.
    pub elapsed: f64,
}

impl Summary {
    /// Whether the run passed: no violations, no crashes, and something was checked.
    pub fn passed(&self) -> bool {
        self.verdict.violations() == 0 && self.crashes.is_empty() && self.verdict.claims > 0
    }
}

struct Slot {
    index: u32,
    incarnation: u32,
    child: Child,
}

fn spawn(args: &RunArgs, db: &Path, index: u32, incarnation: u32, until: u64) -> io::Result<Slot> {
    let holder = format!("w{index}-{incarnation}");
    let child = Command::new(&args.exe)
        .arg("sqlite-worker")
        .arg("--db")
        .arg(db)
        .arg("--log")
        .arg(args.dir.join(format!("{holder}.jsonl")))
        .args(["--holder", &holder])
        .args(["--leases", &args.leases.to_string()])
        .args(["--until", &until.to_string()])
        .args(["--min-ms", &args.durations.0.as_millis().to_string()])
        .args(["--max-ms", &args.durations.1.as_millis().to_string()])
        .args(["--stretch", &args.stretch.to_string()])
        .args([
            "--seed",
            &(args.seed ^ (u64::from(index) << 32) ^ u64::from(incarnation)).to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()?;
    Ok(Slot {
        index,
        incarnation,
        child,
    })
}

/// Runs the scenario and checks it.
///
/// # Errors
///
/// When the folder, the database or a worker process cannot be set up.
pub fn run(args: RunArgs) -> Result<Summary, String> {
    let started = std::time::Instant::now();
    crate::fresh_dir(&args.dir)?;
    let db = args.dir.join("leases.db");
    // Create the schema once, so the workers do not all race to create it.
    drop(SqliteStore::open(&db).map_err(|e| format!("cannot create {}: {e}", db.display()))?);
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let until = now() + u64::try_from(args.duration.as_nanos()).unwrap_or(u64::MAX);
    let spawn_error = |e: io::Error| format!("cannot start {}: {e}", args.exe.display());
    let mut slots = Vec::new();
    for index in 0..args.workers {
        slots.push(spawn(&args, &db, index, 0, until).map_err(spawn_error)?);
    }
    let mut incarnations = args.workers;
    let mut kills = 0u32;
    let mut stops = 0u32;
    let orchestrator_log = args.dir.join("orchestrator.jsonl");
    let mut orchestrator = EventLog::open(&orchestrator_log)
        .map_err(|e| format!("cannot open {}: {e}", orchestrator_log.display()))?;
    let mut crashes = Vec::new();
    // Kills stop half a second before the end, so the last incarnations get to work.
    let last_kill = until.saturating_sub(500_000_000);
    let mut rounds = 0;
    while now() < last_kill && rounds < 100_000 {
        rounds += 1;
        let wait = match args.kill_every {
            Some((min, max)) => random_between(&mut rng, min, max),
            None => Duration::from_millis(100),
        };
        sleep_until(now().saturating_add(wait.as_nanos() as u64).min(last_kill));
        for slot in &mut slots {
            if let Ok(Some(status)) = slot.child.try_wait() {
                if !exited_early(status, now(), until) {
                    // Finished: this orchestrator overslept past the end (a loaded host). The
                    // last loop below sees the same status.
                    continue;
                }
                crashes.push(format!(
                    "w{}-{} exited on its own: {status}",
                    slot.index, slot.incarnation
                ));
                let (index, next) = (slot.index, slot.incarnation + 1);
                *slot = spawn(&args, &db, index, next, until).map_err(spawn_error)?;
                incarnations += 1;
            }
        }
        if args.kill_every.is_none() || now() >= last_kill || slots.is_empty() {
            continue;
        }
        let victim = rng.usize(0..slots.len());
        let slot = &mut slots[victim];
        if rng.u8(0..3) == 0 {
            // Alive but silent: its leases must stay its own until their expiry.
            let pause = random_between(&mut rng, Duration::ZERO, args.durations.1 * 2);
            stop_for(&slot.child, pause);
            stops += 1;
            continue;
        }
        let at = kill_now(&mut slot.child).map_err(|e| format!("cannot kill a worker: {e}"))?;
        orchestrator
            .write(&Event::Killed {
                holder: format!("w{}-{}", slot.index, slot.incarnation),
                at,
            })
            .map_err(|e| format!("cannot write {}: {e}", orchestrator_log.display()))?;
        kills += 1;
        // Sometimes restart at once, sometimes after a pause.
        std::thread::sleep(Duration::from_millis(rng.u64(0..150)));
        let (index, next) = (slot.index, slot.incarnation + 1);
        *slot = spawn(&args, &db, index, next, until).map_err(spawn_error)?;
        incarnations += 1;
    }
    for slot in &mut slots {
        let name = format!("w{}-{}", slot.index, slot.incarnation);
        match wait_timeout(&mut slot.child, Duration::from_secs(15)) {
            Ok(Some(status)) if status.success() => {}
            Ok(Some(status)) => crashes.push(format!("{name} failed: {status}")),
            Ok(None) => {
                let _ = kill9(&mut slot.child);
                crashes.push(format!("{name} did not stop within 15 s of the end"));
            }
            Err(e) => crashes.push(format!("{name}: cannot wait: {e}")),
        }
    }
    let (events, torn_lines) =
        event::read_dir(&args.dir).map_err(|e| format!("cannot read the logs: {e}"))?;
    let verdict = check_sqlite(&events);
    Ok(Summary {
        args,
        verdict,
        kills,
        stops,
        incarnations,
        crashes,
        torn_lines,
        elapsed: started.elapsed().as_secs_f64(),
    })
}

/// Whether a worker that exited with `status`, seen at `seen`, crashed or gave up: a failure
/// at any time, or a success before the end of the run (`until`). A success seen after the end
/// is a worker that finished.
fn exited_early(status: std::process::ExitStatus, seen: u64, until: u64) -> bool {
    !status.success() || seen < until
}

/// SIGKILLs `child` and reaps it; returns the instant from which it ran none of its own code:
/// it is first stopped with SIGSTOP and the kill waits until the kernel reports the whole
/// thread group stopped, so that instant is exact. (A SIGKILL alone only marks the signal
/// pending: a thread running on another CPU may execute a little more of its own code after
/// `kill(2)` returns. The reap comes later still, and on a loaded machine after the next
/// holder's claim: the wrong instant to end the dead worker's windows.) Its lease is freed
/// later, when its exit releases its session lock.
fn kill_now(child: &mut Child) -> io::Result<u64> {
    use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process, waitid};
    let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    let Some(pid) = pid.filter(|pid| kill_process(*pid, Signal::STOP).is_ok()) else {
        // Gone already (it exited on its own): the reap below says when at the latest.
        child.wait()?;
        return Ok(now());
    };
    // Stopped (every thread), or exited meanwhile; NOWAIT leaves the state for `wait` below.
    let stopped_or_exited = WaitIdOptions::STOPPED | WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
    while let Err(rustix::io::Errno::INTR) = waitid(WaitId::Pid(pid), stopped_or_exited) {}
    let stopped = now();
    let _ = kill_process(pid, Signal::KILL);
    child.wait()?;
    Ok(stopped)
}

/// Stops `child` with SIGSTOP for `pause`, then continues it with SIGCONT.
fn stop_for(child: &Child, pause: Duration) {
    use rustix::process::{Pid, Signal, kill_process};
    let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        return;
    };
    if kill_process(pid, Signal::STOP).is_ok() {
        std::thread::sleep(pause);
        let _ = kill_process(pid, Signal::CONT);
    }
}

fn random_between(rng: &mut fastrand::Rng, min: Duration, max: Duration) -> Duration {
    random_duration(rng, min, max)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitStatus;

    use super::exited_early;

    #[test]
    fn a_worker_that_finished_after_the_end_did_not_crash() {
        let (ok, failed, killed) = (
            ExitStatus::from_raw(0),
            ExitStatus::from_raw(2 << 8),
            ExitStatus::from_raw(9),
        );
        let until = 1_000;
        // The orchestrator overslept past the end and found the worker done.
        assert!(!exited_early(ok, until, until));
        assert!(!exited_early(ok, until + 500, until));
        // Gone before the end, or failed at any time: a crash.
        assert!(exited_early(ok, until - 1, until));
        for seen in [until - 1, until, until + 500] {
            assert!(exited_early(failed, seen, until));
            assert!(exited_early(killed, seen, until));
        }
    }
}
