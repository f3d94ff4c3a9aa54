//! The one place the worker counts what happened: each outcome updates both the report
//! counters ([`Counters`], read by [`Manager::report`](crate::Manager::report)) and the
//! `metrics` facade export ([`export`]), so the two cannot drift apart.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use lease_core::Error;

use super::command::Verdict;
use crate::metric::export::{self, outcome};
use crate::metric::report::Counters;

/// Updates the report counters and the exported metrics together.
#[derive(Debug)]
pub(crate) struct Recorder {
    counters: Arc<Counters>,
    /// The gauges last exported (the `metrics` feature).
    gauges: export::Gauges,
}

impl Recorder {
    pub(crate) fn new(counters: Arc<Counters>) -> Recorder {
        Recorder {
            counters,
            gauges: export::Gauges::new(),
        }
    }

    /// A claim was answered with `verdict`.
    pub(crate) fn claim_answered(&self, namespace: &str, verdict: &Verdict) {
        let label = match verdict {
            Verdict::Claimed(_) => {
                Counters::bump(&self.counters.claims);
                outcome::CLAIMED
            }
            Verdict::Extended(_) => {
                Counters::bump(&self.counters.extends);
                outcome::EXTENDED
            }
            Verdict::Denied => {
                Counters::bump(&self.counters.denials);
                outcome::DENIED
            }
            Verdict::Timeout => {
                Counters::bump(&self.counters.timeouts);
                export::timeout(namespace);
                outcome::TIMEOUT
            }
            Verdict::Failed(_) => outcome::ERROR,
            Verdict::NotHeld | Verdict::Revoked | Verdict::Aborted | Verdict::Mismatched => {
                return;
            }
        };
        export::claim(namespace, label);
    }

    /// A revoke was answered with `verdict`.
    pub(crate) fn revoke_answered(&self, namespace: &str, verdict: &Verdict) {
        match verdict {
            Verdict::Revoked => {
                Counters::bump(&self.counters.revokes);
                export::revoke(namespace);
            }
            Verdict::Timeout => {
                Counters::bump(&self.counters.timeouts);
                export::timeout(namespace);
            }
            _ => {}
        }
    }

    /// A claim or revoke was put on a retry timer.
    pub(crate) fn retry(&self, namespace: &str) {
        Counters::bump(&self.counters.retries);
        export::retry(namespace);
    }

    /// A request was dropped because its caller had gone.
    pub(crate) fn abandoned(&self) {
        Counters::bump(&self.counters.abandoned);
    }

    /// A check the token could not answer from its window went to the worker.
    pub(crate) fn check_via_worker(&self) {
        Counters::bump(&self.counters.checks_via_worker);
    }

    /// `ops` claims, extends and revokes went to the store as one batch.
    pub(crate) fn batch(&self, ops: usize) {
        Counters::bump(&self.counters.batches);
        self.counters.batched_ops.fetch_add(ops as u64, Relaxed);
    }

    /// The store itself failed (not a lease outcome) while the worker was doing `what`.
    pub(crate) fn store_failure(&self, what: &str, e: &Error) {
        Counters::bump(&self.counters.store_errors);
        export::store_error();
        tracing::warn!(error = %e, "lease store failed {what}");
        self.counters.set_last_error(format!("{what}: {e}"));
    }

    /// A store call named `call` took `took`.
    pub(crate) fn store_latency(&self, call: &'static str, took: Duration) {
        self.counters.latency.record(took);
        export::store_latency(call, took);
    }

    /// The worker's gauges: leases it holds, leases it knows, callers waiting.
    pub(crate) fn gauges(&mut self, own: usize, known: usize, waiters: usize) {
        self.gauges.update(own, known, waiters);
        self.counters.waiters.store(waiters as u64, Relaxed);
        self.counters.known_leases.store(known as u64, Relaxed);
    }

    /// The worker stopped: this manager holds nothing any more as far as the process's
    /// exported gauges go (the report keeps its last values).
    pub(crate) fn stopped(&mut self) {
        self.gauges.update(0, 0, 0);
    }
}
