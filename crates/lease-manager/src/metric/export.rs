//! Metrics exported through the [`metrics`](https://docs.rs/metrics) facade when the
//! `metrics` feature is on; without it every function here is empty and compiles away.
//!
//! The names and labels are in [`crate::metric`]. Gauges a process may have
//! several of (one per manager or leaser) are kept as deltas (`increment`/`decrement`), so two
//! managers in one process add up instead of overwriting each other.

#[cfg(feature = "metrics")]
mod imp {
    use std::time::Duration;

    use crate::metric::names as metric;

    /// What became of one claim request.
    pub(crate) fn claim(namespace: &str, outcome: &'static str) {
        metrics::counter!(metric::CLAIMS_TOTAL, "namespace" => namespace.to_owned(), "outcome" => outcome)
            .increment(1);
    }

    pub(crate) fn retry(namespace: &str) {
        metrics::counter!(metric::RETRIES_TOTAL, "namespace" => namespace.to_owned()).increment(1);
    }

    pub(crate) fn timeout(namespace: &str) {
        metrics::counter!(metric::TIMEOUTS_TOTAL, "namespace" => namespace.to_owned()).increment(1);
    }

    pub(crate) fn revoke(namespace: &str) {
        metrics::counter!(metric::REVOKES_TOTAL, "namespace" => namespace.to_owned()).increment(1);
    }

    pub(crate) fn store_error() {
        metrics::counter!(metric::STORE_ERRORS_TOTAL).increment(1);
    }

    pub(crate) fn store_latency(call: &'static str, took: Duration) {
        metrics::histogram!(metric::STORE_LATENCY_SECONDS, "call" => call)
            .record(took.as_secs_f64());
    }

    /// A worker's last exported gauge values, so it can export deltas.
    #[derive(Debug, Default)]
    pub(crate) struct Gauges {
        held: u64,
        known: u64,
        waiters: u64,
    }

    fn move_gauge(name: &'static str, last: &mut u64, now: u64) {
        if now > *last {
            metrics::gauge!(name).increment((now - *last) as f64);
        } else if now < *last {
            metrics::gauge!(name).decrement((*last - now) as f64);
        }
        *last = now;
    }

    impl Gauges {
        /// Registers the gauges (at their current values), so they are exported from the
        /// start.
        pub(crate) fn new() -> Gauges {
            for name in [metric::LEASES_HELD, metric::LEASES_KNOWN, metric::WAITERS] {
                metrics::gauge!(name).increment(0.0);
            }
            Gauges::default()
        }

        pub(crate) fn update(&mut self, held: usize, known: usize, waiters: usize) {
            move_gauge(metric::LEASES_HELD, &mut self.held, held as u64);
            move_gauge(metric::LEASES_KNOWN, &mut self.known, known as u64);
            move_gauge(metric::WAITERS, &mut self.waiters, waiters as u64);
        }
    }

    /// Leadership of the elector named `elector`: 1 while it leads, 0 otherwise.
    pub(crate) fn leader(elector: &str, leading: bool) {
        metrics::gauge!(metric::LEADER, "elector" => elector.to_owned()).set(if leading {
            1.0
        } else {
            0.0
        });
    }

    pub(crate) fn leadership_change(elector: &str, started: bool) {
        let transition = if started { "started" } else { "stopped" };
        metrics::counter!(metric::LEADERSHIP_CHANGES_TOTAL, "elector" => elector.to_owned(), "transition" => transition)
            .increment(1);
    }

    pub(crate) fn leaser_held(namespace: &str, acquired: bool) {
        let gauge =
            metrics::gauge!(metric::LEASER_LEASES_HELD, "namespace" => namespace.to_owned());
        if acquired {
            gauge.increment(1.0);
        } else {
            gauge.decrement(1.0);
        }
    }

    pub(crate) fn leaser_lost(namespace: &str) {
        metrics::counter!(metric::LEASER_LOST_TOTAL, "namespace" => namespace.to_owned())
            .increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use std::time::Duration;

    pub(crate) fn claim(_namespace: &str, _outcome: &'static str) {}
    pub(crate) fn retry(_namespace: &str) {}
    pub(crate) fn timeout(_namespace: &str) {}
    pub(crate) fn revoke(_namespace: &str) {}
    pub(crate) fn store_error() {}
    pub(crate) fn store_latency(_call: &'static str, _took: Duration) {}

    #[derive(Debug, Default)]
    pub(crate) struct Gauges;

    impl Gauges {
        pub(crate) fn new() -> Gauges {
            Gauges
        }

        pub(crate) fn update(&mut self, _held: usize, _known: usize, _waiters: usize) {}
    }

    pub(crate) fn leader(_elector: &str, _leading: bool) {}
    pub(crate) fn leadership_change(_elector: &str, _started: bool) {}
    pub(crate) fn leaser_held(_namespace: &str, _acquired: bool) {}
    pub(crate) fn leaser_lost(_namespace: &str) {}
}

pub(crate) use imp::*;

/// The `outcome` label values of [`crate::metric::CLAIMS_TOTAL`].
pub(crate) mod outcome {
    pub(crate) const CLAIMED: &str = "claimed";
    pub(crate) const EXTENDED: &str = "extended";
    pub(crate) const DENIED: &str = "denied";
    pub(crate) const TIMEOUT: &str = "timeout";
    pub(crate) const ERROR: &str = "error";
}
