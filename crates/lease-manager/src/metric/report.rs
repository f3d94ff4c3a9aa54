//! What the manager has been doing: the [`Counters`] the worker keeps in atomics (with a
//! histogram of store call latencies), and the [`Report`] snapshot of them.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::Histogram;

/// The worker's counters, shared with [`Manager::report`](crate::Manager::report).
#[derive(Debug)]
pub(crate) struct Counters {
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

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
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
