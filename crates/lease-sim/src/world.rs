//! What every part of one simulated run shares: true time, the seeded random source of every
//! store fault, the event log, and the record the checker reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lease_core::Timestamp;
use lease_testkit::FakeClock;
use tokio::sync::watch;

use crate::config::SimConfig;

/// One interval in which a client may act as holder of a lease, on true time (ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// `namespace/lease`.
    pub lease: String,
    /// The holder name the client claimed with.
    pub holder: String,
    /// The fencing generation of the term.
    pub generation: u64,
    /// The simulated process (incarnation) the client ran in.
    pub process: usize,
    /// Whether this is a leader's term (it ends when the client stops or sees its lost token)
    /// rather than a claim's guaranteed window.
    pub term: bool,
    /// Inclusive start.
    pub start: u64,
    /// Exclusive end; `u64::MAX` while open.
    pub end: u64,
    /// For a term: how long (true ns) its client may go on acting after its lease was taken
    /// away behind its back (revoked by an operator) before it must have noticed: the renew
    /// deadline on its own clock, stretched by the largest clock-rate error. 0 for a claim's
    /// window, which is a guarantee nobody is told the end of.
    pub notice: u64,
    /// Whether this is a `lease run` command's running interval: the command is a process
    /// tree of its own, which runs on while `lease run` (its process) is paused, so the
    /// checker does not cut it at the pauses of its process (a crash still ends it: the shim
    /// kills the tree at once when `lease run` dies).
    pub command: bool,
}

/// What the store recorded for a lease right after a write took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreChange {
    /// True ns of the write.
    pub at: u64,
    /// `namespace/lease`.
    pub lease: String,
    /// The holding from then on: holder, generation and expiry (true ns); `None` when free.
    pub held: Option<(String, u64, u64)>,
}

/// A lease an operator revoked behind its holder's back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideRevoke {
    /// True ns.
    pub at: u64,
    /// `namespace/lease`.
    pub lease: String,
    /// The holder it was taken from.
    pub holder: String,
    /// The generation of the holding taken away.
    pub generation: u64,
}

/// A call a client made and when (true ns) it was answered, for "every caller is answered".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// What was called.
    pub what: &'static str,
    /// The process.
    pub process: usize,
    /// Start, true ns.
    pub start: u64,
    /// When it returned; `None` while outstanding.
    pub end: Option<u64>,
    /// For a claim (or renewal) of a holding: the lease (`namespace/lease`) and holder it is
    /// for, and the range of [`Record::ops`] the process sent while it was outstanding.
    pub holding: Option<(String, String)>,
    /// Index of the first of the process's store ops this call may have caused.
    pub first_op: usize,
    /// One past the last (set when answered).
    pub end_op: usize,
}

/// A claim or extend a process's manager sent to the store (whatever became of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOp {
    /// The process.
    pub process: usize,
    /// `namespace/lease`.
    pub lease: String,
    /// The holder it was for.
    pub holder: String,
    /// A claim (true) or an extend of a holding (false).
    pub claim: bool,
}

/// What the checker reads.
#[derive(Debug, Default)]
pub struct Record {
    /// Every window logged.
    pub windows: Vec<Window>,
    /// Pauses by process: (start, end) on true time.
    pub pauses: BTreeMap<usize, Vec<(u64, u64)>>,
    /// Crashes by process, true ns.
    pub crashes: BTreeMap<usize, u64>,
    /// Bounded calls.
    pub calls: Vec<Call>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// The store's record of each lease after every write, in order.
    pub history: Vec<StoreChange>,
    /// Holdings an operator revoked.
    pub outside_revokes: Vec<OutsideRevoke>,
    /// Every claim and extend sent, in order.
    pub ops: Vec<StoreOp>,
}

/// Shared state of one run.
#[derive(Debug)]
pub struct World {
    /// True time.
    pub truth: FakeClock,
    /// When the run started (true time).
    pub origin: Timestamp,
    /// The configuration.
    pub config: SimConfig,
    rng: Mutex<fastrand::Rng>,
    log: Mutex<Vec<String>>,
    record: Mutex<Record>,
    /// One change channel per process, bumped in process order on every write. (tokio's watch
    /// spreads the receivers of one channel over several `Notify`s chosen by tokio's own
    /// unseeded random source, so one channel with many receivers would wake them in a
    /// different order on every run.)
    changes: Mutex<Vec<Arc<watch::Sender<u64>>>>,
    /// Store faults rolled so far (the index of the next one).
    rolled: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl World {
    /// A world for `config`, its faults drawn from `seed`.
    pub fn new(config: SimConfig, truth: FakeClock, seed: u64) -> Arc<World> {
        Arc::new(World {
            origin: truth.now(),
            truth,
            config,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            log: Mutex::new(Vec::new()),
            record: Mutex::new(Record::default()),
            changes: Mutex::new(Vec::new()),
            rolled: Mutex::new(0),
        })
    }

    /// Nanoseconds of true time since the run started.
    pub fn now(&self) -> u64 {
        self.truth.now().as_nanos()
    }

    /// Runs `f` on the fault source.
    pub fn rng<T>(&self, f: impl FnOnce(&mut fastrand::Rng) -> T) -> T {
        f(&mut lock(&self.rng))
    }

    /// Appends to the event log, stamped with true time since the start.
    pub fn log(&self, line: impl FnOnce() -> String) {
        if self.config.keep_log {
            let at = self.now().saturating_sub(self.origin.as_nanos());
            lock(&self.log).push(format!("{at:>15} {}", line()));
        }
    }

    /// The event log so far.
    pub fn log_lines(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// Runs `f` on the record.
    pub fn record<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        f(&mut lock(&self.record))
    }

    /// A new process's change channel.
    pub fn change_channel(&self) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0);
        lock(&self.changes).push(Arc::new(tx));
        rx
    }

    /// Tells every process's manager that the store changed, in process order: at once, late
    /// (after a latency from [`World::latency`], as a watch that lags) or never (a watch event
    /// lost: the manager learns at its next refresh), as the seed decides.
    ///
    /// Must be called inside the simulation's runtime (a late notice is a task of its own).
    pub fn changed(&self) {
        let senders: Vec<Arc<watch::Sender<u64>>> = lock(&self.changes).clone();
        let cfg = &self.config;
        for tx in senders {
            let roll = self.rng(|r| r.f64());
            let roll = if roll < cfg.lost_notices + cfg.late_notices && !self.strikes() {
                1.0
            } else {
                roll
            };
            if roll < cfg.lost_notices {
                self.fault("change notice lost");
            } else if roll < cfg.lost_notices + cfg.late_notices {
                self.fault("change notice late");
                let at = self
                    .truth
                    .now()
                    .saturating_add(self.latency(cfg.max_latency).max(Duration::from_millis(1)));
                let truth = self.truth.clone();
                tokio::spawn(async move {
                    lease_core::Clock::sleep_until(&truth, at).await;
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                });
            } else {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Whether a store fault the run rolled strikes: each takes the next index, and trace-level
    /// shrinking may have dropped it ([`SimConfig::dropped_faults`]).
    pub fn strikes(&self) -> bool {
        let mut rolled = lock(&self.rolled);
        let index = *rolled;
        *rolled += 1;
        !self.config.dropped_faults.contains(&index)
    }

    /// Store faults rolled so far.
    pub fn rolled(&self) -> u64 {
        *lock(&self.rolled)
    }

    /// Counts one injected fault of `kind`.
    pub fn fault(&self, kind: &'static str) {
        self.record(|r| *r.faults.entry(kind).or_default() += 1);
    }

    /// A latency drawn from a long-tailed distribution: mostly around a millisecond, one call
    /// in ten up to 50 ms, one in a hundred Pareto-tailed up to `max`.
    pub fn latency(&self, max: Duration) -> Duration {
        self.rng(|rng| {
            let roll = rng.f64();
            let ns = if roll < 0.89 {
                rng.u64(100_000..2_000_000)
            } else if roll < 0.99 {
                rng.u64(2_000_000..50_000_000)
            } else {
                // Pareto with alpha 1.1 and scale 50 ms.
                let u = rng.f64().max(1e-9);
                (50e6 / u.powf(1.0 / 1.1)) as u64
            };
            Duration::from_nanos(ns).min(max)
        })
    }
}
