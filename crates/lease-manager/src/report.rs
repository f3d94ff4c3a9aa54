//! What the manager has been doing: counters the worker keeps in atomics, a small log-linear
//! histogram of store call latencies, and the [`Report`] snapshot of both.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: latencies are recorded within about 1/8 (12.5 %).
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Buckets cover 0 ns to 2^40 ns (about 18 minutes); longer latencies land in the last one.
const BUCKETS: usize = (41 - SUB_BITS as usize) * SUB + SUB;

/// A fixed-size histogram of nanosecond values with about 12.5 % resolution.
#[derive(Debug)]
pub(crate) struct Histogram {
    counts: Vec<AtomicU64>,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(nanos: u64) -> usize {
        if nanos < SUB as u64 {
            return nanos as usize;
        }
        let log = 63 - nanos.leading_zeros(); // >= SUB_BITS
        let shift = log - SUB_BITS;
        let mantissa = ((nanos >> shift) as usize) & (SUB - 1);
        let i = (log - SUB_BITS + 1) as usize * SUB + mantissa;
        i.min(BUCKETS - 1)
    }

    /// The largest value that lands in bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let group = (i / SUB) as u32; // >= 1
        let mantissa = (i % SUB) as u64;
        let shift = group - 1;
        let low = ((SUB as u64) | mantissa) << shift;
        low + ((1u64 << shift) - 1)
    }

    pub(crate) fn record(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// `(count, p50, p90, p99)`.
    pub(crate) fn percentiles(&self) -> (u64, Duration, Duration, Duration) {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let at = |q: f64| -> Duration {
            if total == 0 {
                return Duration::ZERO;
            }
            // The smallest bucket whose cumulative count reaches q of the total.
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_nanos(Self::upper(i));
                }
            }
            Duration::from_nanos(Self::upper(BUCKETS - 1))
        };
        (total, at(0.50), at(0.90), at(0.99))
    }
}

/// The worker's counters, shared with [`Manager::report`](crate::Manager::report).
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) claims: AtomicU64,
    pub(crate) extends: AtomicU64,
    pub(crate) denials: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) revokes: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batched_ops: AtomicU64,
    pub(crate) checks_via_worker: AtomicU64,
    pub(crate) outstanding: AtomicU64,
    pub(crate) waiters: AtomicU64,
    pub(crate) known_leases: AtomicU64,
    pub(crate) latency: Histogram,
    pub(crate) last_error: Mutex<Option<String>>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Metrics {
            claims: AtomicU64::new(0),
            extends: AtomicU64::new(0),
            denials: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            revokes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batched_ops: AtomicU64::new(0),
            checks_via_worker: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            waiters: AtomicU64::new(0),
            known_leases: AtomicU64::new(0),
            latency: Histogram::new(),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_last_error(&self, message: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message);
    }

    pub(crate) fn snapshot(&self) -> Report {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (store_calls, p50, p90, p99) = self.latency.percentiles();
        Report {
            claims: load(&self.claims),
            extends: load(&self.extends),
            denials: load(&self.denials),
            retries: load(&self.retries),
            abandoned: load(&self.abandoned),
            timeouts: load(&self.timeouts),
            store_errors: load(&self.store_errors),
            revokes: load(&self.revokes),
            batches: load(&self.batches),
            batched_ops: load(&self.batched_ops),
            checks_via_worker: load(&self.checks_via_worker),
            outstanding: load(&self.outstanding),
            waiters: load(&self.waiters),
            known_leases: load(&self.known_leases),
            store_calls,
            store_latency_p50: p50,
            store_latency_p90: p90,
            store_latency_p99: p99,
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

/// A snapshot of what a manager has done since it started, from
/// [`Manager::report`](crate::Manager::report).
///
/// Latency percentiles are upper bounds of histogram buckets about 12.5 % wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Successful claims (a new holding, with a new fencing generation).
    pub claims: u64,
    /// Successful extends of a holding.
    pub extends: u64,
    /// Claims answered `ClaimDenied`, with or without a store call.
    pub denials: u64,
    /// Store operations retried after `Timeout` or `Invalid`.
    pub retries: u64,
    /// Claims and revokes dropped without acting on them because their caller had gone (the
    /// call was cancelled or timed out while the request was queued or waiting for a retry).
    pub abandoned: u64,
    /// Requests answered `Timeout` after their last attempt.
    pub timeouts: u64,
    /// Store errors other than the lease outcomes (`Held`, `Invalid`, `NotHeld`, `Timeout`).
    pub store_errors: u64,
    /// Successful revokes.
    pub revokes: u64,
    /// Batches sent to [`Store::apply`](lease_core::Store::apply).
    pub batches: u64,
    /// Operations in those batches.
    pub batched_ops: u64,
    /// `Token::check`s that went to the worker (those answered from memory are not counted,
    /// to keep that path free of shared writes).
    pub checks_via_worker: u64,
    /// Requests sent to the worker and not yet answered (waits included).
    pub outstanding: u64,
    /// Callers of `wait_until_expired` the worker is holding.
    pub waiters: u64,
    /// Leases in the worker's view.
    pub known_leases: u64,
    /// Store calls timed.
    pub store_calls: u64,
    /// Median store call latency.
    pub store_latency_p50: Duration,
    /// 90th percentile store call latency.
    pub store_latency_p90: Duration,
    /// 99th percentile store call latency.
    pub store_latency_p99: Duration,
    /// The most recent store error that failed a request, if any.
    pub last_error: Option<String>,
}

impl fmt::Display for Report {
    /// One line of `name=value` pairs, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "claims={} extends={} denials={} retries={} abandoned={} timeouts={} store_errors={} revokes={} \
             batches={} batched_ops={} outstanding={} waiters={} known_leases={} \
             store_p50={:?} store_p90={:?} store_p99={:?}",
            self.claims,
            self.extends,
            self.denials,
            self.retries,
            self.abandoned,
            self.timeouts,
            self.store_errors,
            self.revokes,
            self.batches,
            self.batched_ops,
            self.outstanding,
            self.waiters,
            self.known_leases,
            self.store_latency_p50,
            self.store_latency_p90,
            self.store_latency_p99,
        )?;
        if let Some(e) = &self.last_error {
            write!(f, " last_error={e:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_contain_their_values() {
        let mut prev_upper = None;
        for i in 0..BUCKETS {
            let upper = Histogram::upper(i);
            if let Some(p) = prev_upper {
                assert_eq!(Histogram::index(p + 1), i, "bucket {i}");
            }
            assert_eq!(Histogram::index(upper), i);
            prev_upper = Some(upper);
        }
        for v in [0u64, 1, 7, 8, 9, 15, 16, 17, 1000, 123_456, 5_000_000] {
            let i = Histogram::index(v);
            assert!(Histogram::upper(i) >= v);
            assert!(Histogram::upper(i) as f64 <= v as f64 * 1.125 + 1.0, "{v}");
        }
    }

    #[test]
    fn percentiles() {
        let h = Histogram::new();
        assert_eq!(h.percentiles().0, 0);
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let (n, p50, p90, p99) = h.percentiles();
        assert_eq!(n, 100);
        let within = |d: Duration, us: u64| {
            let lo = Duration::from_micros(us);
            d >= lo && d.as_nanos() as f64 <= lo.as_nanos() as f64 * 1.13
        };
        assert!(within(p50, 50), "{p50:?}");
        assert!(within(p90, 90), "{p90:?}");
        assert!(within(p99, 99), "{p99:?}");
    }
}
