//! The driver: one seed, one thread, true time moved from event to event.
//!
//! Determinism: the run happens on a tokio `current_thread` runtime with tokio's own time
//! paused, inside one `block_on` on the calling thread, so tasks run in the order they were
//! woken and nothing runs in parallel. True time is a [`FakeClock`] that only the driver moves,
//! and only when every task is idle (tokio's paused clock auto-advances the driver's 1 ms sleep
//! exactly then). Every random choice is drawn from the seed: the simulator's own source, each
//! manager's retry jitter (`with_rng_seed`) and the thread-local `fastrand` source the elector's
//! jitter and the leaser's holder names draw from (seeded on this thread before the run).
//! tokio's `select!` picks among ready branches with tokio's own unseeded random source (its
//! `rng_seed` needs `tokio_unstable`), so every `select!` in lease-manager is `biased;` (the
//! elector's wait-or-fallback one was made so for this: without it, seed 266 of the elector
//! drift run took either branch). Each process also has its own change channel (see
//! [`World::changed`](crate::world::World::changed)). The determinism test runs seeds twice
//! and compares their logs; `lease-sim --digests` prints one digest per seed to compare runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{CancellationToken, DefaultSecretary, Facades as _, Store, Timestamp};
use lease_manager::{LeaserConfig, Manager, ManagerConfig, ManagerLeaser, ResourceLocks};
use lease_testkit::{FakeClock, InMemoryStore};
use tokio::task::JoinHandle;

use crate::check::{Verdict, check};
use crate::client::{self, Ctx};
use crate::clock::{DriftClock, Gate};
use crate::config::{Kind, SimConfig};
use crate::store::{SimStore, settle};
use crate::world::{OutsideRevoke, World};

/// What the simulator does at an instant of true time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Start process slot `slot` (a new incarnation of it).
    Start { slot: usize },
    /// Pause process slot `slot` for `ns` of true time.
    Pause { slot: usize, ns: u64 },
    /// Cut process slot `slot` off the store for `ns` of true time.
    Partition { slot: usize, ns: u64 },
    /// Crash process slot `slot`; it restarts `restart_after` ns later.
    Crash { slot: usize, restart_after: u64 },
    /// An operator revokes one of the held leases (number `pick`, modulo how many are held).
    Revoke { pick: u64 },
}

/// The store every process shares, on true time.
enum Backing {
    /// The in-memory store (the reference semantics).
    Memory(InMemoryStore),
    /// lease-store-sqlite on a file in a temporary directory (deleted with it).
    Sqlite {
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    },
}

impl Backing {
    fn new(config: &SimConfig, truth: &FakeClock) -> Backing {
        if !config.sqlite {
            return Backing::Memory(InMemoryStore::new(truth.as_clock()));
        }
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("the SQLite mode needs a temporary directory: {e}"),
        };
        Backing::Sqlite {
            path: dir.path().join("sim.db"),
            _dir: dir,
        }
    }

    /// A new handle on the store, and whether its calls run on other threads (see
    /// [`crate::store::settle`]).
    fn handle(&self, truth: &FakeClock) -> (Box<dyn Store + Sync>, bool) {
        match self {
            Backing::Memory(m) => (Box::new(m.sibling()), false),
            Backing::Sqlite { path, .. } => {
                // A holder session per handle, as per process: a process whose store is dropped
                // frees its leases at once, as after a kill -9.
                let opened = lease_store_sqlite::SqliteStoreBuilder::new(path)
                    .clock(truth.as_clock())
                    .session_scope(lease_store_sqlite::SessionScope::Store)
                    .open();
                match opened {
                    Ok(store) => (Box::new(store), true),
                    Err(e) => panic!("cannot open the simulation's SQLite store: {e}"),
                }
            }
        }
    }
}

/// One incarnation of a simulated process.
struct Process {
    id: usize,
    gate: Arc<Gate>,
    manager: Manager,
    tasks: Vec<JoinHandle<()>>,
}

/// The result of one seed.
#[derive(Debug)]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// The checker's verdict.
    pub verdict: Verdict,
    /// The event log (empty unless [`SimConfig::keep_log`]).
    pub log: Vec<String>,
    /// Scheduled events the seed drew (pauses, partitions, crashes, operator revokes).
    pub events: u64,
    /// Store faults the run rolled.
    pub faults: u64,
}

/// Runs `seed` under `config` on this thread.
///
/// # Panics
///
/// When a tokio runtime cannot be built (out of resources).
pub fn run_seed(seed: u64, config: &SimConfig) -> SeedRun {
    let config = &config.for_seed(seed);
    // The library's own draws (elector jitter, leaser holder names) come from this thread's
    // fastrand source; the current_thread runtime polls every task on this thread.
    fastrand::seed(seed ^ 0x5eed_1ea5_e51d_u64);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current_thread runtime");
    lease_manager::mutation::set(config.mutation);
    lease_run_policy::mutation::set(config.run_mutation);
    let run = runtime.block_on(simulate(seed, config.clone()));
    lease_manager::mutation::set(None);
    lease_run_policy::mutation::set(None);
    run
}

/// Waits until every other task is idle: tokio's paused clock advances (and wakes this sleep)
/// only when nothing else can run.
async fn quiesce() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

struct Sim {
    world: Arc<World>,
    /// The operator's own handle on the store.
    operator: Box<dyn Store + Sync>,
    /// Whether the store's calls run on other threads.
    blocking: bool,
    /// Last: dropped after every process's handle.
    backing: Backing,
    rng: fastrand::Rng,
    live: BTreeMap<usize, Process>,
    incarnations: usize,
    stop: CancellationToken,
}

impl Sim {
    fn start(&mut self, slot: usize) {
        let id = self.incarnations;
        self.incarnations += 1;
        let world = Arc::clone(&self.world);
        let gate = Arc::new(Gate::default());
        let ppm = if world.config.drift_ppm > 0 {
            self.rng
                .i64(-world.config.drift_ppm..=world.config.drift_ppm)
        } else {
            0
        };
        // Each process's clock has its own epoch: nothing may compare them.
        let origin = Timestamp::from_nanos(self.rng.u64(1_000_000_000..1_000_000_000_000));
        let clock = DriftClock::new(world.truth.clone(), origin, ppm, Arc::clone(&gate));
        let (inner, blocking) = self.backing.handle(&world.truth);
        let store = SimStore::new(inner, blocking, clock.clone(), Arc::clone(&world), id);
        let config = ManagerConfig::new(store, Arc::new(clock.clone()))
            .with_default_secretary(Arc::new(DefaultSecretary))
            .with_rng_seed(self.rng.u64(..));
        let manager = match Manager::start(config) {
            Ok(m) => m,
            Err(e) => panic!("the simulator's manager configuration was refused: {e}"),
        };
        world.log(|| format!("start p{id} (slot {slot}) ppm {ppm}"));
        let clients = self.rng.usize(1..=3);
        let mut tasks = Vec::new();
        for c in 0..clients {
            let kinds = &world.config.kinds;
            let Some(&kind) = kinds.get(self.rng.usize(..kinds.len().max(1))) else {
                continue;
            };
            let ctx = Ctx {
                world: Arc::clone(&world),
                clock: clock.clone(),
                process: id,
                stop: self.stop.clone(),
                name: format!("p{id}-c{c}"),
                lease: self.rng.usize(..world.config.leases.max(1)),
            };
            world.log(|| format!("p{id} client {c}: {kind:?}"));
            match kind {
                Kind::Elector | Kind::ElectorRelock | Kind::ElectorConcurrent => {
                    let elector = match client::new_elector(&ctx, &manager) {
                        Ok(e) => e,
                        Err(e) => panic!("the simulator's election configuration: {e}"),
                    };
                    let relock = kind == Kind::ElectorRelock;
                    if kind == Kind::ElectorConcurrent {
                        let second = Ctx {
                            name: format!("{}/2", ctx.name),
                            ..ctx.clone()
                        };
                        tasks.push(tokio::spawn(client::elector(
                            second,
                            Arc::clone(&elector),
                            false,
                        )));
                    }
                    tasks.push(tokio::spawn(client::elector(ctx, elector, relock)));
                }
                Kind::Claimer => {
                    let (Ok(claimer), Ok(revoker)) =
                        (manager.claimer("claim", "m"), manager.revoker("claim", "m"))
                    else {
                        panic!("the default secretary refused the claimers' namespace");
                    };
                    tasks.push(tokio::spawn(client::claimer(ctx, claimer, revoker)));
                }
                Kind::Leaser => {
                    let config = LeaserConfig::new("leaser", "m", &*ctx.name);
                    let clock = Arc::new(ctx.clock.clone());
                    let Ok(leaser) = ManagerLeaser::new(&manager, clock, config) else {
                        panic!("the leaser configuration was refused");
                    };
                    tasks.push(tokio::spawn(client::leaser(ctx, leaser)));
                }
                Kind::ResourceLock => {
                    let Ok(locks) = ResourceLocks::new(&manager, "locks", "m") else {
                        panic!("the resource locks' namespace was refused");
                    };
                    tasks.push(tokio::spawn(client::resource_lock(ctx, locks)));
                }
                Kind::LeaseRun => {
                    // `lease run` is a program of its own: its own handle on the store.
                    let (inner, _) = self.backing.handle(&world.truth);
                    let store =
                        SimStore::new(inner, blocking, clock.clone(), Arc::clone(&world), id);
                    tasks.push(tokio::spawn(crate::lease_run::lease_run(ctx, store)));
                }
            }
        }
        self.live.insert(
            slot,
            Process {
                id,
                gate,
                manager,
                tasks,
            },
        );
    }

    /// The operator: revokes one held lease behind its holder's back, straight in the store.
    async fn revoke(&mut self, pick: u64) {
        let blocking = self.blocking;
        let store = &mut *self.operator;
        let mut held = Vec::new();
        for namespace in ["elect", "claim", "leaser", "locks", "run"] {
            if let Ok(group) = settle(blocking, store.lease_group(namespace, "m")).await {
                held.extend(group);
            }
        }
        let Some(n) = u64::try_from(held.len()).ok().filter(|&n| n > 0) else {
            return;
        };
        let (key, info) = held.swap_remove(usize::try_from(pick % n).unwrap_or(0));
        if settle(blocking, store.revoke_lease(&key, &info.holder))
            .await
            .is_err()
        {
            return;
        }
        let at = self.world.now();
        let lease = format!("{}/{}", key.namespace, key.lease);
        self.world.fault("operator revoke");
        self.world.log(|| {
            format!(
                "operator revokes {lease} from {} (generation {})",
                info.holder, info.generation
            )
        });
        self.world.record(|r| {
            r.outside_revokes.push(OutsideRevoke {
                at,
                lease,
                holder: info.holder.clone(),
                generation: info.generation.get(),
            });
        });
        crate::store::note(store, blocking, &self.world, [&key]).await;
        self.world.changed();
    }

    async fn act(
        &mut self,
        action: Action,
        events: &mut BTreeMap<(u64, u64), Action>,
        seq: &mut u64,
    ) {
        let now = self.world.now();
        match action {
            Action::Revoke { pick } => self.revoke(pick).await,
            Action::Start { slot } => self.start(slot),
            Action::Pause { slot, ns } => {
                if let Some(p) = self.live.get(&slot) {
                    let until = now.saturating_add(ns);
                    p.gate.pause_until(Timestamp::from_nanos(until));
                    let id = p.id;
                    self.world.fault("process pause");
                    self.world.log(|| format!("pause p{id} for {ns} ns"));
                    self.world
                        .record(|r| r.pauses.entry(id).or_default().push((now, until)));
                }
            }
            Action::Partition { slot, ns } => {
                if let Some(p) = self.live.get(&slot) {
                    let until = now.saturating_add(ns);
                    p.gate.partition_until(Timestamp::from_nanos(until));
                    let id = p.id;
                    self.world.fault("partition");
                    self.world.log(|| format!("partition p{id} for {ns} ns"));
                }
            }
            Action::Crash {
                slot,
                restart_after,
            } => {
                if let Some(p) = self.live.remove(&slot) {
                    p.gate.crash();
                    for t in &p.tasks {
                        t.abort();
                    }
                    let id = p.id;
                    self.world.fault("crash");
                    self.world.log(|| format!("crash p{id}"));
                    self.world.record(|r| r.crashes.insert(id, now));
                    drop(p.manager);
                    *seq += 1;
                    events.insert(
                        (now.saturating_add(restart_after), *seq),
                        Action::Start { slot },
                    );
                }
            }
        }
    }
}

async fn simulate(seed: u64, config: SimConfig) -> SeedRun {
    let truth = FakeClock::new();
    let mut rng = fastrand::Rng::with_seed(seed);
    let world = World::new(config.clone(), truth.clone(), rng.u64(..));
    let backing = Backing::new(&config, &truth);
    let (operator, blocking) = backing.handle(&truth);
    let origin = truth.now().as_nanos();
    let duration = u64::try_from(config.duration.as_nanos()).unwrap_or(u64::MAX);
    let end = origin.saturating_add(duration);
    let mut events: BTreeMap<(u64, u64), Action> = BTreeMap::new();
    let mut seq = 0u64;
    // Every event but a start has an index, in the order drawn, for trace-level shrinking.
    let mut drawn = 0u64;
    let mut schedule = |events: &mut BTreeMap<(u64, u64), Action>, at: u64, a: Action| {
        if !matches!(a, Action::Start { .. }) {
            drawn += 1;
            if config.dropped_events.contains(&(drawn - 1)) {
                return;
            }
        }
        seq += 1;
        events.insert((at, seq), a);
    };
    let minutes = config.duration.as_secs_f64() / 60.0;
    let max_pause = u64::try_from(config.max_pause.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    for slot in 0..config.processes {
        // Processes start within the first seconds, in an order the seed decides.
        schedule(
            &mut events,
            origin + rng.u64(0..3_000_000_000),
            Action::Start { slot },
        );
        let expected = config.pauses_per_minute * minutes;
        let pauses = expected.floor() as u64 + u64::from(rng.f64() < expected.fract());
        for _ in 0..pauses {
            // Mostly short pauses, some past a lease's duration.
            let ns = if rng.bool() {
                rng.u64(1_000_000..max_pause.clamp(1_000_001, 2_000_000_000))
            } else {
                rng.u64(1_000_000..max_pause.max(1_000_001))
            };
            schedule(
                &mut events,
                origin + rng.u64(3_000_000_000..duration.max(3_000_000_001)),
                Action::Pause { slot, ns },
            );
        }
        let expected = config.partitions_per_minute * minutes;
        let partitions = expected.floor() as u64 + u64::from(rng.f64() < expected.fract());
        let max_partition = u64::try_from(config.max_partition.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1_000_001);
        for _ in 0..partitions {
            let ns = rng.u64(1_000_000..max_partition);
            schedule(
                &mut events,
                origin + rng.u64(3_000_000_000..duration.max(3_000_000_001)),
                Action::Partition { slot, ns },
            );
        }
        if rng.f64() < config.crash {
            schedule(
                &mut events,
                origin + rng.u64(3_000_000_000..duration.max(3_000_000_001)),
                Action::Crash {
                    slot,
                    restart_after: rng.u64(0..10_000_000_000),
                },
            );
        }
    }
    let expected = config.revokes_per_minute * minutes;
    let revokes = expected.floor() as u64 + u64::from(rng.f64() < expected.fract());
    for _ in 0..revokes {
        schedule(
            &mut events,
            origin + rng.u64(3_000_000_000..duration.max(3_000_000_001)),
            Action::Revoke { pick: rng.u64(..) },
        );
    }
    let events_drawn = drawn;
    let mut sim = Sim {
        world: Arc::clone(&world),
        operator,
        blocking,
        backing,
        rng,
        live: BTreeMap::new(),
        incarnations: 0,
        stop: CancellationToken::new(),
    };
    drive(&mut sim, &mut events, &mut seq, end).await;
    // The end: no new work, managers stopped, every caller must be answered.
    sim.stop.cancel();
    // Stopping waits for the worker, which may wait on true time: the driver keeps moving it.
    for p in sim.live.values() {
        let manager = p.manager.clone();
        tokio::spawn(async move { manager.stop().await });
    }
    let bound = u64::try_from(config.answer_bound.as_nanos()).unwrap_or(u64::MAX);
    drive(
        &mut sim,
        &mut BTreeMap::new(),
        &mut seq,
        end.saturating_add(bound),
    )
    .await;
    let hung: Vec<String> = sim
        .live
        .values()
        .filter(|p| p.tasks.iter().any(|t| !t.is_finished()))
        .map(|p| {
            format!(
                "p{}: a client was still waiting {} s after its manager stopped",
                p.id,
                config.answer_bound.as_secs()
            )
        })
        .collect();
    for p in sim.live.values() {
        for t in &p.tasks {
            t.abort();
        }
    }
    let mut verdict = world.record(|r| check(r, end, bound));
    verdict.violations.extend(hung);
    verdict.simulated = config.duration;
    SeedRun {
        seed,
        verdict,
        log: world.log_lines(),
        events: events_drawn,
        faults: world.rolled(),
    }
}

/// Moves true time from event to event until `end`.
async fn drive(sim: &mut Sim, events: &mut BTreeMap<(u64, u64), Action>, seq: &mut u64, end: u64) {
    let truth = sim.world.truth.clone();
    loop {
        quiesce().await;
        let now = truth.now().as_nanos();
        let timer = truth.next_deadline().map(Timestamp::as_nanos);
        let event = events.first_key_value().map(|(&(t, _), _)| t);
        let next = [timer, event, Some(end)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        if next > end || now >= end {
            break;
        }
        if next > now {
            truth.set(Timestamp::from_nanos(next));
        }
        while let Some(entry) = events.first_entry() {
            if entry.key().0 > next {
                break;
            }
            let action = entry.remove();
            sim.act(action, events, seq).await;
        }
        if next == end {
            quiesce().await;
            break;
        }
    }
}
