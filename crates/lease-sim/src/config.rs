//! What a run simulates: timings, fault rates and the clock-rate error bound.

use std::collections::BTreeSet;
use std::time::Duration;

use lease_manager::mutation::Mutation;
use lease_run_policy::mutation::Mutation as RunMutation;

/// The knobs of a simulated run. Everything random within them is decided by the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// True time simulated.
    pub duration: Duration,
    /// Simulated processes at the start (each restart adds one incarnation).
    pub processes: usize,
    /// Leases the clients contend for (per client kind).
    pub leases: usize,
    /// The largest clock-rate error of a process, in parts per million of true time: each
    /// process's clock runs at `1 + e` with `e` drawn uniformly from `[-ppm, ppm]`.
    pub drift_ppm: i64,
    /// The safety margin, in parts per million, by which a claimer's client stops acting before
    /// the end of its guarantee as its own clock reads it (a client that knows its clock may be
    /// off by up to this much).
    pub client_margin_ppm: i64,
    /// Leader election timing: lease duration, renew deadline, retry period.
    pub election: (Duration, Duration, Duration),
    /// Duration of a raw claim, a leaser's ttl and a resource lock's timeout.
    pub claim_duration: Duration,
    /// Chance that a store call times out before taking effect.
    pub timeout_before: f64,
    /// Chance that a write times out after taking effect.
    pub timeout_after: f64,
    /// Chance of an `Invalid` answer.
    pub invalid: f64,
    /// Chance of latency before and (separately) after a call takes effect.
    pub latency: f64,
    /// The longest latency of one call.
    pub max_latency: Duration,
    /// Chance that a process hears of a store change late (a watch that lags), after a latency.
    pub late_notices: f64,
    /// Chance that a process never hears of a store change (a watch event lost).
    pub lost_notices: f64,
    /// Chance that a batch of two or more operations is applied in two parts.
    pub split: f64,
    /// Expected pauses per process per simulated minute.
    pub pauses_per_minute: f64,
    /// The longest pause.
    pub max_pause: Duration,
    /// Expected partitions (the process cannot reach the store) per process per simulated
    /// minute.
    pub partitions_per_minute: f64,
    /// The longest partition.
    pub max_partition: Duration,
    /// Expected operator revokes per simulated minute: an operator (`lease revoke`) takes a
    /// lease away from whoever holds it, chosen at random among the held ones.
    pub revokes_per_minute: f64,
    /// Chance that a process crashes (and restarts under a new identity) during the run.
    pub crash: f64,
    /// How long, in true time, any bounded call (a claim, a revoke, an acquire) may stay
    /// unanswered while its process runs.
    pub answer_bound: Duration,
    /// The client kinds processes draw from.
    pub kinds: Vec<Kind>,
    /// A defect switched on in lease-manager for the run (mutation mode), if any.
    pub mutation: Option<Mutation>,
    /// A defect switched on in `lease run`'s supervisor (lease-run-policy) for the run, if any.
    pub run_mutation: Option<RunMutation>,
    /// Whether to keep the full event log (for determinism tests and replays).
    pub keep_log: bool,
    /// Trace-level shrinking: the scheduled events (pauses, partitions, crashes, operator
    /// revokes; by their index in the order the seed drew them) left out of the run.
    pub dropped_events: BTreeSet<u64>,
    /// Trace-level shrinking: the store faults (by their index in the order the run rolled
    /// them: timeouts, `Invalid`s, latencies, split batches, late or lost notices) not injected.
    pub dropped_faults: BTreeSet<u64>,
    /// Run over lease-store-sqlite on a temporary file instead of the in-memory store.
    pub sqlite: bool,
    /// Swarm mode: each seed first draws its own configuration from this one (see
    /// [`SimConfig::for_seed`]).
    pub swarm: bool,
}

impl Default for SimConfig {
    /// The CI configuration: client-go's election timing, 5 s claims, 1% clock-rate error, and
    /// faults frequent enough that every run sees several of each kind.
    fn default() -> Self {
        SimConfig {
            duration: Duration::from_secs(90),
            processes: 3,
            leases: 1,
            drift_ppm: 10_000,
            client_margin_ppm: 20_000,
            election: (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2),
            ),
            claim_duration: Duration::from_secs(5),
            timeout_before: 0.03,
            timeout_after: 0.03,
            invalid: 0.02,
            latency: 0.2,
            max_latency: Duration::from_secs(8),
            split: 0.3,
            late_notices: 0.2,
            lost_notices: 0.05,
            pauses_per_minute: 0.7,
            max_pause: Duration::from_secs(25),
            partitions_per_minute: 0.5,
            max_partition: Duration::from_secs(30),
            revokes_per_minute: 1.0,
            crash: 0.3,
            answer_bound: Duration::from_secs(120),
            kinds: Kind::ALL.to_vec(),
            mutation: None,
            run_mutation: None,
            keep_log: false,
            dropped_events: BTreeSet::new(),
            dropped_faults: BTreeSet::new(),
            sqlite: false,
            swarm: false,
        }
    }
}

impl SimConfig {
    /// The configuration seed `seed` runs: this one, or in swarm mode one drawn from it by the
    /// seed (swarm testing: a run with every fault at its usual rate rarely lines up the few
    /// it takes for a given defect, so each seed scales every fault rate by 0 to 3, takes 2 to
    /// 4 processes and 1 to 3 leases, and leaves out some client kinds). The clock-rate error,
    /// the margins and the timings are never drawn: the guarantee must hold for every draw.
    pub fn for_seed(&self, seed: u64) -> SimConfig {
        let mut c = self.clone();
        if !self.swarm {
            return c;
        }
        c.swarm = false;
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5a4a_2d5e_ed00_0001);
        let mut scale = |x: &mut f64| *x *= [0.0, 0.5, 1.0, 2.0, 3.0][rng.usize(..5)];
        for rate in [
            &mut c.timeout_before,
            &mut c.timeout_after,
            &mut c.invalid,
            &mut c.latency,
            &mut c.split,
            &mut c.late_notices,
            &mut c.lost_notices,
            &mut c.pauses_per_minute,
            &mut c.partitions_per_minute,
            &mut c.revokes_per_minute,
            &mut c.crash,
        ] {
            scale(rate);
        }
        // Chances stay chances: the outcomes of one roll must not add up past 1.
        let sum = c.timeout_before + c.timeout_after + c.invalid;
        if sum > 0.5 {
            for rate in [&mut c.timeout_before, &mut c.timeout_after, &mut c.invalid] {
                *rate *= 0.5 / sum;
            }
        }
        for rate in [&mut c.latency, &mut c.split, &mut c.crash] {
            *rate = rate.min(1.0);
        }
        let notices = c.late_notices + c.lost_notices;
        if notices > 1.0 {
            c.late_notices /= notices;
            c.lost_notices /= notices;
        }
        c.processes = rng.usize(2..=4);
        c.leases = rng.usize(1..=3);
        let kept: Vec<Kind> = self.kinds.iter().copied().filter(|_| rng.bool()).collect();
        if !kept.is_empty() {
            c.kinds = kept;
        }
        c
    }
}

/// What one client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `LeaderElector` candidate that leads for a while, then releases.
    Elector,
    /// A candidate that calls `lock()` again at once when its lost token fires.
    ElectorRelock,
    /// Two tasks calling `lock()` on one elector.
    ElectorConcurrent,
    /// Claims, extends and revokes through the `Claimer` facade.
    Claimer,
    /// Holds leases through `ManagerLeaser`.
    Leaser,
    /// Takes, renews and releases `ResourceLocks`.
    ResourceLock,
    /// `lease run`: claims, starts a command (which may ignore SIGTERM), renews, and stops the
    /// command as lease-run-policy's supervisor decides, beside a shim that enforces the kill
    /// deadline on its own ([`crate::lease_run`]).
    LeaseRun,
}

impl Kind {
    /// The kind named `name` (as `--kinds` spells it: `elector`, `elector-relock`,
    /// `elector-concurrent`, `claimer`, `leaser`, `resource-lock`, `lease-run`).
    pub fn named(name: &str) -> Option<Kind> {
        Some(match name {
            "elector" => Kind::Elector,
            "elector-relock" => Kind::ElectorRelock,
            "elector-concurrent" => Kind::ElectorConcurrent,
            "claimer" => Kind::Claimer,
            "leaser" => Kind::Leaser,
            "resource-lock" => Kind::ResourceLock,
            "lease-run" => Kind::LeaseRun,
            _ => return None,
        })
    }

    /// The name [`Kind::named`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Elector => "elector",
            Kind::ElectorRelock => "elector-relock",
            Kind::ElectorConcurrent => "elector-concurrent",
            Kind::Claimer => "claimer",
            Kind::Leaser => "leaser",
            Kind::ResourceLock => "resource-lock",
            Kind::LeaseRun => "lease-run",
        }
    }

    /// Every kind, for drawing one.
    pub const ALL: [Kind; 7] = [
        Kind::Elector,
        Kind::ElectorRelock,
        Kind::ElectorConcurrent,
        Kind::Claimer,
        Kind::Leaser,
        Kind::ResourceLock,
        Kind::LeaseRun,
    ];
}
