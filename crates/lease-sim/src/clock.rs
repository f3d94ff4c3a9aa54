//! Time in a simulation: one [`FakeClock`] is *true time*, and each simulated process reads its
//! own [`DriftClock`], which runs at `1 + ppm / 1e6` of true time and stops serving its sleepers
//! while the process is paused or after it crashed ([`Gate`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lease_core::{Clock, Sleep, Timestamp};
use lease_testkit::FakeClock;

/// A process's run state, shared by its clock, its store layer and the simulator: whether it is
/// paused (until which instant of true time) and whether it crashed.
#[derive(Debug, Default)]
pub struct Gate {
    /// Nanoseconds of true time until which the process is paused (0: not paused).
    paused_until: AtomicU64,
    /// Nanoseconds of true time until which the process cannot reach the store.
    partitioned_until: AtomicU64,
    crashed: AtomicBool,
}

impl Gate {
    /// Pauses the process until `until` (true time), or longer if it already was: a shorter
    /// pause inside a longer one must not end it early (a task already waiting for the longer
    /// one to end would sleep on while the others ran).
    pub fn pause_until(&self, until: Timestamp) {
        self.paused_until
            .fetch_max(until.as_nanos(), Ordering::SeqCst);
    }

    /// Cuts the process off the store until `until` (true time), or longer if it already was.
    pub fn partition_until(&self, until: Timestamp) {
        self.partitioned_until
            .fetch_max(until.as_nanos(), Ordering::SeqCst);
    }

    /// Whether the process is cut off the store at true instant `now`.
    pub fn partitioned(&self, now: Timestamp) -> bool {
        now.as_nanos() < self.partitioned_until.load(Ordering::SeqCst)
    }

    /// Marks the process crashed: nothing it started ever completes again.
    pub fn crash(&self) {
        self.crashed.store(true, Ordering::SeqCst);
    }

    /// Whether the process crashed.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Waits (on true time) while the process is paused; never returns once it crashed.
    pub async fn pass(&self, truth: &FakeClock) {
        loop {
            if self.crashed() {
                std::future::pending::<()>().await;
            }
            let until = Timestamp::from_nanos(self.paused_until.load(Ordering::SeqCst));
            if truth.now() >= until {
                return;
            }
            truth.sleep_until_true(until).await;
        }
    }
}

/// Sleeping on true time without importing the trait at every call site.
trait SleepTrue {
    fn sleep_until_true(&self, deadline: Timestamp) -> Sleep;
}

impl SleepTrue for FakeClock {
    fn sleep_until_true(&self, deadline: Timestamp) -> Sleep {
        Clock::sleep_until(self, deadline)
    }
}

/// A process's clock: `origin + (true - true_origin) × (1 + ppm / 1e6)`, monotonic because the
/// rate is positive. Its sleepers complete only while the process runs (see [`Gate`]).
#[derive(Clone)]
pub struct DriftClock {
    truth: FakeClock,
    true_origin: u64,
    origin: u64,
    /// Rate error in parts per million (`-999_999 ..`).
    ppm: i64,
    gate: Arc<Gate>,
}

impl fmt::Debug for DriftClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriftClock")
            .field("ppm", &self.ppm)
            .finish_non_exhaustive()
    }
}

const MILLION: i128 = 1_000_000;

impl DriftClock {
    /// A clock over `truth` that reads `origin` now and runs `ppm` parts per million fast
    /// (negative: slow), gated by `gate`.
    pub fn new(truth: FakeClock, origin: Timestamp, ppm: i64, gate: Arc<Gate>) -> DriftClock {
        let true_origin = truth.now().as_nanos();
        DriftClock {
            truth,
            true_origin,
            origin: origin.as_nanos(),
            ppm: ppm.max(-999_999),
            gate,
        }
    }

    /// This clock's reading at true instant `t` (not before its creation).
    pub fn at(&self, t: Timestamp) -> Timestamp {
        let elapsed = i128::from(t.as_nanos().saturating_sub(self.true_origin));
        let own = elapsed * (MILLION + i128::from(self.ppm)) / MILLION;
        Timestamp::from_nanos(u64::try_from(i128::from(self.origin) + own).unwrap_or(u64::MAX))
    }

    /// The first true instant at which this clock reads at least `own`.
    pub fn true_at(&self, own: Timestamp) -> Timestamp {
        let wanted = i128::from(own.as_nanos().saturating_sub(self.origin));
        let rate = MILLION + i128::from(self.ppm);
        let elapsed = (wanted * MILLION + rate - 1) / rate;
        let mut t = u64::try_from(i128::from(self.true_origin) + elapsed).unwrap_or(u64::MAX);
        // Integer rounding: step until the reading has really been reached.
        while t < u64::MAX && self.at(Timestamp::from_nanos(t)) < own {
            t += 1;
        }
        Timestamp::from_nanos(t)
    }

    /// The same clock (same rate, same readings: another process of the same host) behind
    /// another gate.
    pub fn with_gate(&self, gate: Arc<Gate>) -> DriftClock {
        DriftClock {
            gate,
            ..self.clone()
        }
    }

    /// The process's gate.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
}

impl Clock for DriftClock {
    fn now(&self) -> Timestamp {
        self.at(self.truth.now())
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let clock = self.clone();
        Box::pin(async move {
            loop {
                clock.gate.pass(&clock.truth).await;
                if clock.now() >= deadline {
                    return;
                }
                clock.truth.sleep_until_true(clock.true_at(deadline)).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn drift_maps_both_ways() {
        let truth = FakeClock::new();
        for ppm in [-500_000, -10_000, 0, 7, 10_000, 500_000] {
            let c = DriftClock::new(
                truth.clone(),
                Timestamp::from_nanos(1_000),
                ppm,
                Arc::default(),
            );
            let own = Timestamp::from_nanos(1_000 + 3_000_000_007);
            let t = c.true_at(own);
            assert!(c.at(t) >= own);
            assert!(c.at(Timestamp::from_nanos(t.as_nanos() - 1)) < own);
        }
        let fast = DriftClock::new(truth.clone(), truth.now(), 10_000, Arc::default());
        let start = fast.now();
        truth.advance(Duration::from_secs(100));
        assert_eq!(
            fast.now().saturating_duration_since(start),
            Duration::from_secs(101)
        );
    }

    /// Swarm seed 1731 (before this fix): a 1 s pause that began inside a 20 s one ended it
    /// early for the tasks that had not started waiting yet, while one already waiting slept
    /// on to the 20 s end: half a process ran, and its lead window outlived its lease.
    #[test]
    fn a_shorter_pause_inside_a_longer_one_does_not_end_it() {
        let truth = FakeClock::new();
        let gate = Gate::default();
        let start = truth.now();
        gate.pause_until(start.saturating_add(Duration::from_secs(20)));
        gate.pause_until(start.saturating_add(Duration::from_secs(1)));
        truth.advance(Duration::from_secs(2));
        assert_eq!(
            gate.paused_until.load(Ordering::SeqCst),
            start.saturating_add(Duration::from_secs(20)).as_nanos()
        );
        gate.partition_until(start.saturating_add(Duration::from_secs(30)));
        gate.partition_until(start.saturating_add(Duration::from_secs(3)));
        assert!(gate.partitioned(start.saturating_add(Duration::from_secs(10))));
    }
}
