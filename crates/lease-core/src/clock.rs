//! Time as the lease system sees it: a [`Clock`] trait, so tests can drive expiry with a fake
//! clock, and [`SystemClock`], the real one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::types::Timestamp;

/// A future that completes when a [`Clock`] reaches a deadline. Owned (`'static`), so an actor
/// can keep it in a field and replace it when its next deadline changes.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of time for deciding expiry.
///
/// # To ensure correctness
///
/// - `now` never goes backwards.
/// - `sleep_until(t)` completes only once `now() >= t`.
/// - Every process that compares expiries written by another (the SQLite store's processes on one
///   host) must read the same clock; [`SystemClock`] is such a clock on Linux.
/// - A store and the manager that uses it are given the same clock, because the store reports
///   expiries as [`Timestamp`]s on it.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;

    /// A future that completes once [`Clock::now`] has reached `deadline` (at once if it already
    /// has). Dropping it cancels the sleep.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep;
}

/// The real clock: Linux's `CLOCK_BOOTTIME`, which every process on the host shares, which keeps
/// counting through suspend and never jumps when the wall clock is set. On other systems, a
/// monotonic clock private to the process.
///
/// Its epoch is the host's boot (on Linux), so timestamps from before a reboot are meaningless
/// after it; the SQLite store records the boot id next to them for that reason.
///
/// Sleeping uses tokio's timer, so [`Clock::sleep_until`] must be awaited inside a tokio runtime
/// with time enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl SystemClock {
    /// The real clock.
    pub fn new() -> Self {
        SystemClock
    }
}

#[cfg(target_os = "linux")]
fn read_system_clock() -> Timestamp {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    // Both fields are non-negative for CLOCK_BOOTTIME; clamp rather than trust that blindly.
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Timestamp::from_nanos(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

#[cfg(not(target_os = "linux"))]
fn read_system_clock() -> Timestamp {
    use std::sync::OnceLock;
    use std::time::Instant;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // Offset by one second so that no real instant is the epoch itself.
    Timestamp::from_duration(epoch.elapsed().saturating_add(Duration::from_secs(1)))
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        read_system_clock()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        Box::pin(async move {
            // tokio's timer runs on CLOCK_MONOTONIC, which stops during suspend while ours does
            // not; re-reading after each sleep makes the deadline exact on our clock.
            loop {
                let now = read_system_clock();
                if now >= deadline {
                    return;
                }
                let remaining = deadline.saturating_duration_since(now);
                tokio::time::sleep(remaining.max(Duration::from_micros(1))).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_monotonic_and_past_its_epoch() {
        let clock = SystemClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(a > Timestamp::ZERO);
    }

    #[tokio::test]
    async fn system_clock_sleep_reaches_its_deadline() {
        let clock = SystemClock::new();
        let deadline = clock.now().saturating_add(Duration::from_millis(2));
        clock.sleep_until(deadline).await;
        assert!(clock.now() >= deadline);
        // A deadline in the past completes at once.
        clock.sleep_until(Timestamp::ZERO).await;
    }
}
