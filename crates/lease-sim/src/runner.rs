//! Many seeds: spread over threads (each seed still runs alone on its thread, so each is
//! deterministic), added up into [`Totals`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::SimConfig;
use crate::sim::run_seed;

/// What a batch of seeds showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Seeds run.
    pub seeds: u64,
    /// True time simulated, summed over seeds.
    pub simulated: Duration,
    /// Windows checked.
    pub windows: u64,
    /// Tenures checked.
    pub tenures: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Violations found.
    pub violations: u64,
    /// Seeds with at least one violation.
    pub failing_seeds: u64,
    /// The failing seeds (the first few) with their first violation.
    pub failures: Vec<(u64, String)>,
}

impl Totals {
    /// All faults injected.
    pub fn fault_count(&self) -> u64 {
        self.faults.values().sum()
    }

    /// One line a script can parse: `key=value` pairs.
    pub fn summary_line(&self) -> String {
        format!(
            "lease-sim totals: seeds={} simulated_hours={:.1} windows={} tenures={} faults={} violations={} failing_seeds={}",
            self.seeds,
            self.simulated.as_secs_f64() / 3600.0,
            self.windows,
            self.tenures,
            self.fault_count(),
            self.violations,
            self.failing_seeds
        )
    }
}

/// Runs seeds `first .. first + count` on `threads` threads; with `until_found`, hands out no
/// new seed once one failed (seeds are handed out in order and every seed handed out is run to
/// its end, so the first failing seed reported is still the smallest).
pub fn run_seeds(
    first: u64,
    count: u64,
    threads: usize,
    config: &SimConfig,
    until_found: bool,
) -> Totals {
    let next = AtomicU64::new(first);
    let end = first.saturating_add(count);
    let found = std::sync::atomic::AtomicBool::new(false);
    let totals = Mutex::new(Totals::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    if until_found && found.load(Ordering::SeqCst) {
                        return;
                    }
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= end {
                        return;
                    }
                    let run = run_seed(seed, config);
                    let v = run.verdict;
                    if !v.violations.is_empty() {
                        found.store(true, Ordering::SeqCst);
                    }
                    let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                    t.seeds += 1;
                    t.simulated += v.simulated;
                    t.windows += v.windows as u64;
                    t.tenures += v.tenures as u64;
                    for (k, n) in v.faults {
                        *t.faults.entry(k).or_default() += n;
                    }
                    t.violations += v.violations.len() as u64;
                    t.failing_seeds += u64::from(!v.violations.is_empty());
                    if let Some(first) = v.violations.first()
                        && t.failures.len() < 20
                    {
                        t.failures.push((seed, first.clone()));
                    }
                }
            });
        }
    });
    let mut t = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    t.failures.sort();
    t
}

/// A failing seed made smaller: the fewest processes, faults and simulated time with which
/// `seed` still fails. Each step keeps a change only if the run still has a violation.
/// Returns the smallest failing configuration found (the given one when `seed` passes).
pub fn shrink(seed: u64, config: &SimConfig) -> SimConfig {
    let fails = |c: &SimConfig| !run_seed(seed, c).verdict.violations.is_empty();
    // In swarm mode, shrink the configuration the seed drew.
    let mut best = config.for_seed(seed);
    if !fails(&best) {
        return best;
    }
    type Step = fn(&mut SimConfig) -> bool;
    let steps: [Step; 14] = [
        |c| {
            c.crash = 0.0;
            true
        },
        |c| {
            c.revokes_per_minute = 0.0;
            true
        },
        |c| {
            c.partitions_per_minute = 0.0;
            true
        },
        |c| {
            c.pauses_per_minute = 0.0;
            true
        },
        |c| {
            c.split = 0.0;
            true
        },
        |c| {
            c.late_notices = 0.0;
            true
        },
        |c| {
            c.lost_notices = 0.0;
            true
        },
        |c| {
            c.invalid = 0.0;
            true
        },
        |c| {
            c.timeout_after = 0.0;
            true
        },
        |c| {
            c.timeout_before = 0.0;
            true
        },
        |c| {
            c.latency = 0.0;
            true
        },
        |c| {
            c.drift_ppm = 0;
            true
        },
        |c| {
            if c.processes > 1 {
                c.processes -= 1;
                true
            } else {
                false
            }
        },
        |c| {
            if c.duration > Duration::from_secs(10) {
                c.duration = c.duration * 3 / 4;
                true
            } else {
                false
            }
        },
    ];
    // Repeat until no step helps (processes and duration shrink step by step).
    loop {
        let mut changed = false;
        for step in steps {
            let mut candidate = best.clone();
            if step(&mut candidate) && candidate != best && fails(&candidate) {
                best = candidate;
                changed = true;
            }
        }
        if !changed {
            return best;
        }
    }
}

/// A failing run made shorter at the level of its trace: leaves out as many of the seed's
/// scheduled events (pauses, partitions, crashes, operator revokes) and of its store faults as
/// it can while the run still fails, trying halves of what is left first, then quarters, down
/// to one at a time (after [`shrink`], which works on the configuration). Leaving a fault out
/// changes what follows, so the indices of later faults name other calls in the new run; each
/// step is kept only if that new run fails, and the result replays exactly.
pub fn shrink_trace(seed: u64, config: &SimConfig) -> SimConfig {
    let fails = |c: &SimConfig| !run_seed(seed, c).verdict.violations.is_empty();
    let mut best = config.for_seed(seed);
    if !fails(&best) {
        return best;
    }
    let run = run_seed(seed, &best);
    best = drop_while_failing(&best, run.events, &fails, |c| &mut c.dropped_events);
    let run = run_seed(seed, &best);
    drop_while_failing(&best, run.faults, &fails, |c| &mut c.dropped_faults)
}

/// Leaves out chunks of the indices `0..count` in the set `set` selects, halving the chunk
/// size down to one, keeping each that leaves `fails` true. Bounded to about `4 × count` runs.
fn drop_while_failing(
    config: &SimConfig,
    count: u64,
    fails: &dyn Fn(&SimConfig) -> bool,
    set: fn(&mut SimConfig) -> &mut std::collections::BTreeSet<u64>,
) -> SimConfig {
    let mut best = config.clone();
    let mut chunk = count.div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < count {
            let mut candidate = best.clone();
            let dropped = set(&mut candidate);
            let before = dropped.len();
            dropped.extend(start..start.saturating_add(chunk).min(count));
            if dropped.len() > before && fails(&candidate) {
                best = candidate;
            }
            start = start.saturating_add(chunk);
        }
        if chunk == 1 {
            return best;
        }
        chunk = chunk.div_ceil(2);
    }
}
