//! The worker: the one task that owns the [`Store`](lease_core::Store). It takes requests
//! from a bounded channel in batches (group commit), decides claims from its view, retries on
//! timers, wakes waiters at the expiry instant from a timer map with a single clock sleep,
//! notices other processes' changes, and on shutdown drains the store call in flight before
//! answering everyone `Aborted`.
//!
//! - [`command`]: the requests and the verdicts that end claims and revokes (the vocabulary);
//! - [`pending`]: a claim or revoke until it is answered, and the one way it is answered
//!   ([`pending::Pending::settle`]);
//! - [`machine`] and [`decide`]: the state machine, with no store, clock or await, driven by
//!   events and returning the store calls to make;
//! - [`task`]: the machine's tasks as effects (the store calls to make) out and results in;
//! - [`queue`]: the one queue of claims and revokes, by state;
//! - [`recorder`]: the one place outcomes are counted (the report and the `metrics` export);
//! - [`shell`]: the async loop and the guarded store calls.

use std::time::Duration;

use crate::config::RetryPolicy;

mod command;
mod decide;
mod machine;
mod pending;
mod queue;
mod recorder;
mod shell;
mod task;
#[cfg(test)]
mod tests;

pub(crate) use command::{Command, Envelope, Reply};
pub(crate) use shell::{Parts, Worker};

/// The settings the worker keeps from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_sleep: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) refresh_interval: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) max_batch: usize,
}
