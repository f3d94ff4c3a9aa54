//! A fixed-size log-linear histogram of store call latencies, lock-free to record into.

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
