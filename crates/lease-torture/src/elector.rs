//! The elector scenario: [`LeaderElector`] candidates in one process on a multi-thread tokio
//! runtime, over one SQLite file through several managers (as several processes would), with
//! the races of issue 14 provoked on purpose:
//!
//! - every elector runs two *slots*, two tasks that call `lock()` on it, so `lock()` is called
//!   concurrently on one elector all the time (one of them must get `AlreadyLeading`, never a
//!   second guard);
//! - a slot whose lost token fires calls `lock()` again at once, from the task that saw the
//!   token (on whichever worker thread), racing the revoke of the term that just ended;
//! - a leader gives its term up in one of four ways at random: `release()`, `unlock()`,
//!   `unlock_with_retry()`, or dropping the guard (half the electors release on drop);
//! - the orchestrator stalls a manager's store at random (every call hangs, before or after
//!   it takes effect), so leaders lose their terms at the renew deadline while their lease is
//!   still recorded, and then lead again (a new term that must get a new generation).
//!
//! Each slot logs the terms it believes it leads (`Lead`, then `Lost` or `Stop`) under its own
//! name (`<identity>/<slot>`), so two guards of one elector that overlap are two holders to the
//! checker. [`check::check_terms`] proves that no two terms overlap and that generations
//! increase with terms across holders; [`term_generation_faults`] adds that they increase with
//! *every* term, also two terms of one slot (which the tenure-keyed check cannot see).
//!
//! The stalled store is in `stalling_store`, the report's section in `report`.

mod report;
mod stalling_store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lease_core::{Clock, DefaultSecretary, SystemClock};
use lease_manager::{
    Callbacks, ElectionConfig, ElectionError, LeaderElector, LeadershipGuard, Manager,
    ManagerConfig,
};
use lease_store_sqlite::SqliteStore;

use crate::check::{self, K8sVerdict};
use crate::event::{Event, EventLog};
use crate::{now, secs};
pub use report::section;
use stalling_store::{Stall, StallingStore};

const NAMESPACE: &str = "torture";
const MODEL: &str = "elector";
const LEASE: &str = "leader";
/// How often a leading slot reads its elector's term record (for the last renewal).
const POLL: Duration = Duration::from_millis(20);

/// The elector's timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `lease_duration`.
    pub lease_duration: Duration,
    /// `renew_deadline`.
    pub renew_deadline: Duration,
    /// `retry_period`.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            lease_duration: Duration::from_millis(1500),
            renew_deadline: Duration::from_millis(900),
            retry_period: Duration::from_millis(200),
        }
    }
}

/// How to run the scenario.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// Folder for the database and the log (emptied first).
    pub dir: PathBuf,
    /// Managers over the one SQLite file (each with its own connection, as a process would).
    pub managers: u32,
    /// Electors per manager, each with its own identity.
    pub electors: u32,
    /// Length of the run.
    pub duration: Duration,
    /// Whether to stall stores.
    pub stalls: bool,
    /// The elector timing.
    pub timing: Timing,
    /// Seed of the random choices.
    pub seed: u64,
}

/// What a run did and what the checker found.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The arguments.
    pub args: RunArgs,
    /// The checker's verdict on the terms.
    pub verdict: K8sVerdict,
    /// Terms whose generation is not above the previous term's: must be empty.
    pub term_generation_faults: Vec<String>,
    /// `lock()` calls refused with `AlreadyLeading` (the other slot led).
    pub already_leading: u64,
    /// `lock()` calls made from a lost-token handler.
    pub relocks: u64,
    /// Terms ended by each way of giving up: release, unlock, unlock_with_retry, drop.
    pub endings: [u64; 4],
    /// Store stalls injected.
    pub stalls: u64,
    /// The longest a 10 ms timer on the runtime fired late (ns): how long the process or its
    /// runtime was paused by the host. A leader paused longer than `lease_duration −
    /// renew_deadline` sees its lost token late whatever the elector does (fencing is the
    /// answer to that), so a late lost token is judged beside this.
    pub longest_runtime_pause: u64,
    /// The same for a plain thread outside the runtime: the process as a whole.
    pub longest_thread_pause: u64,
    /// Errors that are not a verdict (a `lock()` that failed otherwise, a torn log line).
    pub problems: Vec<String>,
    /// Wall time, seconds.
    pub elapsed: f64,
}

impl Summary {
    /// Violations found.
    pub fn violations(&self) -> usize {
        self.verdict.violations() + self.term_generation_faults.len()
    }

    /// Whether the run passed: no violations or problems, and terms were checked.
    pub fn passed(&self) -> bool {
        self.violations() == 0 && self.problems.is_empty() && self.verdict.terms > 1
    }
}

#[derive(Debug, Default)]
struct Counters {
    runtime_pause: AtomicU64,
    thread_pause: AtomicU64,
    already_leading: AtomicU64,
    relocks: AtomicU64,
    endings: [AtomicU64; 4],
    stalls: AtomicU64,
}

struct Shared {
    /// The manager of the elector that leads now (`u64::MAX`: none known), so stalls hit the
    /// leader more often than not.
    leader_manager: AtomicU64,
    log: Mutex<EventLog>,
    problems: Mutex<Vec<String>>,
    counters: Counters,
    until: u64,
    timing: Timing,
}

impl Shared {
    fn write(&self, event: &Event) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = log.write(event) {
            // A term that cannot be logged must not be acted on.
            eprintln!("elector torture: cannot write the log: {e}");
            std::process::exit(3);
        }
    }

    fn problem(&self, text: String) {
        self.problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(text);
    }

    fn over(&self) -> bool {
        now() >= self.until
    }
}

/// Runs the scenario and checks it.
///
/// # Errors
///
/// When the folder, the database, a manager, an elector or the log cannot be set up.
pub fn run(args: RunArgs) -> Result<Summary, String> {
    let started = std::time::Instant::now();
    crate::fresh_dir(&args.dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    // Each manager runs on a runtime of its own, as it would in a process of its own: the
    // SQLite store makes its calls on the worker's thread, and a call that blocks (busy
    // timeout, a slow fsync) must not hold up the electors' timers.
    let manager_runtimes = (0..args.managers)
        .map(|m| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("manager-{m}"))
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let handles: Vec<_> = manager_runtimes
        .iter()
        .map(|r| r.handle().clone())
        .collect();
    let (shared, stalls) = runtime.block_on(run_async(&args, &handles))?;
    drop(runtime);
    drop(manager_runtimes);
    let log = args.dir.join("elector.jsonl");
    let text =
        std::fs::read_to_string(&log).map_err(|e| format!("cannot read {}: {e}", log.display()))?;
    let (events, torn) = crate::event::parse(&text);
    let terms = check::terms(&events);
    let lease_ns = u64::try_from(args.timing.lease_duration.as_nanos()).unwrap_or(u64::MAX);
    let verdict = check::check_terms(&terms, lease_ns);
    let mut problems = std::mem::take(
        &mut *shared
            .problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    if torn > 0 {
        problems.push(format!("{torn} torn log lines"));
    }
    let c = &shared.counters;
    Ok(Summary {
        term_generation_faults: term_generation_faults(&events),
        verdict,
        already_leading: c.already_leading.load(Ordering::SeqCst),
        relocks: c.relocks.load(Ordering::SeqCst),
        endings: std::array::from_fn(|i| c.endings[i].load(Ordering::SeqCst)),
        stalls,
        longest_runtime_pause: c.runtime_pause.load(Ordering::SeqCst),
        longest_thread_pause: c.thread_pause.load(Ordering::SeqCst),
        problems,
        elapsed: started.elapsed().as_secs_f64(),
        args,
    })
}

async fn run_async(
    args: &RunArgs,
    manager_runtimes: &[tokio::runtime::Handle],
) -> Result<(Arc<Shared>, u64), String> {
    let db = args.dir.join("leases.db");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let log_path = args.dir.join("elector.jsonl");
    let log = EventLog::open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let shared = Arc::new(Shared {
        leader_manager: AtomicU64::new(u64::MAX),
        log: Mutex::new(log),
        problems: Mutex::default(),
        counters: Counters::default(),
        until: now() + u64::try_from(args.duration.as_nanos()).unwrap_or(u64::MAX),
        timing: args.timing,
    });
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let heartbeat = tokio::spawn(heartbeat(Arc::clone(&shared)));
    let thread_heartbeat = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            while !shared.over() {
                let before = now();
                std::thread::sleep(TICK);
                let late = now().saturating_sub(before).saturating_sub(TICK_NS);
                shared
                    .counters
                    .thread_pause
                    .fetch_max(late, Ordering::SeqCst);
            }
        })
    };
    let mut managers = Vec::new();
    let mut stall_gates = Vec::new();
    let mut slots = Vec::new();
    for m in 0..args.managers {
        let store = SqliteStore::builder(&db)
            .clock(Arc::clone(&clock))
            .open()
            .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
        let stall = Stall::default();
        let on_its_runtime = manager_runtimes[m as usize].enter();
        let manager = Manager::start(
            ManagerConfig::new(StallingStore::new(store, stall.clone()), Arc::clone(&clock))
                .with_default_secretary(Arc::new(DefaultSecretary)),
        )
        .map_err(|e| format!("cannot start a manager: {e}"))?;
        drop(on_its_runtime);
        for e in 0..args.electors {
            let identity = format!("m{m}-e{e}");
            let t = args.timing;
            let elector = LeaderElector::new(
                &manager,
                Arc::clone(&clock),
                ElectionConfig::new(NAMESPACE, MODEL, LEASE, &*identity)
                    .with_timing(t.lease_duration, t.renew_deadline, t.retry_period)
                    .with_unlock_with_retry_period(t.retry_period)
                    .with_release_on_cancel(e % 2 == 1),
                Callbacks::new(),
            )
            .map_err(|e| format!("cannot create the elector {identity}: {e}"))?;
            for slot in 0..2 {
                slots.push(tokio::spawn(slot_loop(
                    elector.clone(),
                    u64::from(m),
                    format!("{identity}/{slot}"),
                    Arc::clone(&shared),
                    rng.u64(..),
                )));
            }
        }
        managers.push(manager);
        stall_gates.push(stall);
    }
    let mut stalls = 0;
    while !shared.over() {
        let pause = args.timing.lease_duration.mul_f64(0.8 + 1.2 * rng.f64());
        tokio::time::sleep(pause.min(Duration::from_nanos(shared.until.saturating_sub(now()))))
            .await;
        if !args.stalls || shared.over() {
            continue;
        }
        let leader = usize::try_from(shared.leader_manager.load(Ordering::SeqCst)).ok();
        let victim = match leader {
            Some(m) if m < stall_gates.len() && rng.f64() < 0.8 => m,
            _ => rng.usize(..stall_gates.len()),
        };
        let gate = &stall_gates[victim];
        let length = args.timing.lease_duration.mul_f64(0.4 + 0.6 * rng.f64());
        let after_effect = rng.bool();
        let (from, until) = (
            now(),
            now() + u64::try_from(length.as_nanos()).unwrap_or(u64::MAX),
        );
        gate.stall_until(until, after_effect);
        // For reading the log: the checker ignores it.
        shared.write(&Event::Outage {
            what: format!(
                "store of m{victim} ({} effect)",
                if after_effect { "after" } else { "before" }
            ),
            down_at: from,
            up_at: until,
        });
        stalls += 1;
        shared.counters.stalls.fetch_add(1, Ordering::SeqCst);
    }
    for gate in &stall_gates {
        gate.end();
    }
    for slot in slots {
        if let Err(e) = slot.await {
            shared.problem(format!("a slot task failed: {e}"));
        }
    }
    for manager in managers {
        manager.stop().await;
    }
    let _ = heartbeat.await;
    let _ = thread_heartbeat.join();
    Ok((shared, stalls))
}

const TICK: Duration = Duration::from_millis(10);
const TICK_NS: u64 = 10_000_000;

/// Measures how late a 10 ms timer fires on the runtime, until the run is over.
async fn heartbeat(shared: Arc<Shared>) {
    while !shared.over() {
        let before = now();
        tokio::time::sleep(TICK).await;
        let late = now().saturating_sub(before).saturating_sub(TICK_NS);
        shared
            .counters
            .runtime_pause
            .fetch_max(late, Ordering::SeqCst);
    }
}

/// One slot: calls `lock()` on its elector until the run is over; leads, then gives up or
/// loses its term; calls `lock()` again at once.
async fn slot_loop(
    elector: LeaderElector,
    manager: u64,
    name: String,
    shared: Arc<Shared>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut after_lost = false;
    while !shared.over() {
        if after_lost {
            shared.counters.relocks.fetch_add(1, Ordering::SeqCst);
        }
        let lock = elector.lock();
        let result = tokio::select! {
            r = lock => r,
            () = until(shared.until) => return,
        };
        match result {
            Ok(guard) => {
                shared.leader_manager.store(manager, Ordering::SeqCst);
                after_lost = lead(&elector, guard, &name, &shared, &mut rng).await;
            }
            Err(ElectionError::AlreadyLeading { .. }) => {
                shared
                    .counters
                    .already_leading
                    .fetch_add(1, Ordering::SeqCst);
                // Wait for the other slot's term to end, then race it (and everyone) again.
                let mut leadership = elector.leadership();
                tokio::select! {
                    _ = leadership.wait_for(|l| !l.is_leading()) => {}
                    () = until(shared.until) => return,
                }
                after_lost = false;
            }
            Err(e) => {
                shared.problem(format!("{name}: lock() failed: {e}"));
                tokio::time::sleep(shared.timing.retry_period).await;
                after_lost = false;
            }
        }
    }
}

async fn until(deadline: u64) {
    tokio::time::sleep(Duration::from_nanos(deadline.saturating_sub(now()))).await;
}

/// Leads in `guard`'s term until its lost token fires (returns true: call `lock()` again at
/// once), or until the run is over or (for half the terms) a short random time has passed, then
/// gives the term up in a random way (returns false).
async fn lead(
    elector: &LeaderElector,
    guard: LeadershipGuard,
    name: &str,
    shared: &Shared,
    rng: &mut fastrand::Rng,
) -> bool {
    let at = now();
    let generation = guard.generation().get();
    let record = elector.term_record();
    let claim_start = record.as_ref().map_or(at, |r| r.acquire_time.as_nanos());
    let mut last_renew = record
        .as_ref()
        .map_or(claim_start, |r| r.renew_time.as_nanos());
    let mut renewals = 0;
    shared.write(&Event::Lead {
        lease: LEASE.to_owned(),
        holder: name.to_owned(),
        generation,
        claim_start,
        at,
    });
    // Half the terms run until they are lost (the stalls see to that), the others are given up
    // after a short while.
    let stop_at = if rng.bool() {
        shared.until
    } else {
        let hold = shared.timing.lease_duration.mul_f64(0.5 * rng.f64());
        now()
            .saturating_add(u64::try_from(hold.as_nanos()).unwrap_or(u64::MAX))
            .min(shared.until)
    };
    loop {
        tokio::select! {
            biased;
            () = guard.lost().cancelled() => {
                shared.write(&Event::Lost {
                    lease: LEASE.to_owned(),
                    holder: name.to_owned(),
                    generation,
                    at: now(),
                    last_renew,
                    renewals,
                });
                return true;
            }
            () = tokio::time::sleep(POLL) => {
                if let Some(r) = elector.term_record()
                    && r.lease_transitions + 1 == generation
                    && r.renew_time.as_nanos() > last_renew
                {
                    last_renew = r.renew_time.as_nanos();
                    renewals += 1;
                }
                if now() >= stop_at {
                    break;
                }
            }
        }
    }
    // Stop acting first, then give the term up.
    shared.write(&Event::Stop {
        lease: LEASE.to_owned(),
        holder: name.to_owned(),
        generation,
        at: now(),
        last_renew,
        renewals,
    });
    let way = rng.usize(..4);
    shared.counters.endings[way].fetch_add(1, Ordering::SeqCst);
    match way {
        0 => {
            guard.release().await;
        }
        1 => {
            elector.unlock().await;
            drop(guard);
        }
        2 => {
            elector.unlock_with_retry().await;
            drop(guard);
        }
        _ => drop(guard),
    }
    false
}

/// Terms whose generation is not strictly above that of the term before them (in order of
/// start, across all holders of the lease, two terms of one holder included).
pub fn term_generation_faults(events: &[Event]) -> Vec<String> {
    let mut leads: Vec<(u64, u64, &str)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Lead {
                holder,
                generation,
                at,
                ..
            } => Some((*at, *generation, holder.as_str())),
            _ => None,
        })
        .collect();
    leads.sort_unstable();
    leads
        .windows(2)
        .filter(|w| w[1].1 <= w[0].1)
        .map(|w| {
            format!(
                "{} began a term at {:.6} with generation {}, not above the term {} began at {:.6} with generation {}",
                w[1].2,
                secs(w[1].0),
                w[1].1,
                w[0].2,
                secs(w[0].0),
                w[0].1
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(holder: &str, generation: u64, at: u64) -> Event {
        Event::Lead {
            lease: LEASE.to_owned(),
            holder: holder.to_owned(),
            generation,
            claim_start: at,
            at,
        }
    }

    #[test]
    fn a_term_must_have_a_generation_above_the_one_before_even_for_one_holder() {
        let good = [lead("a/0", 1, 10), lead("b/0", 2, 20), lead("a/0", 3, 30)];
        assert!(term_generation_faults(&good).is_empty());
        // The same holder leading twice with one generation: invisible to a check keyed by
        // (holder, generation), caught here.
        let reused = [lead("a/0", 1, 10), lead("a/0", 1, 30)];
        assert_eq!(term_generation_faults(&reused).len(), 1);
        let backwards = [lead("a/0", 5, 10), lead("b/1", 4, 30)];
        let faults = term_generation_faults(&backwards);
        assert_eq!(faults.len(), 1);
        assert!(faults[0].contains("b/1"), "{faults:?}");
    }
}
