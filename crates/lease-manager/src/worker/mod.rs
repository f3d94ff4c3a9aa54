//! The worker: the one task that owns the [`Store`](lease_core::Store). It takes requests
//! from a bounded channel in batches (group commit), decides claims from its view, retries on
//! timers, wakes waiters at the expiry instant from a timer map with a single clock sleep,
//! notices other processes' changes, and on shutdown drains the store call in flight before
//! answering everyone `Aborted`.
//!
//! Its modules, from the top down (each uses only those below it):
//!
//! - [`shell`]: the async loop and the guarded store calls;
//! - [`machine`]: the state machine, with no store, clock or await: events in, the store calls
//!   to make out; it is a [`state::State`] and the [`task::Tasks`] under way;
//! - [`task`]: the machine's tasks as effects (the store calls to make) out and results in;
//! - [`decide`]: the decisions on the state (a batch, an op's result, a read);
//! - [`state`]: what the machine knows (the view, waiters, timers, the queue) and how it keeps
//!   it up to date;
//! - [`queue`]: the one queue of claims and revokes, by state;
//! - [`pending`]: a claim or revoke until it is answered, and the one way it is answered
//!   ([`pending::Pending::settle`]); the answers a batch's results decide, held until the
//!   shell has started the next store call ([`pending::Answers`]);
//! - [`recorder`]: the one place outcomes are counted (the report and the `metrics` export);
//! - [`command`]: the requests and the verdicts that end claims and revokes (the vocabulary).

mod command;
mod decide;
mod machine;
mod pending;
mod queue;
mod recorder;
mod shell;
mod state;
mod task;
#[cfg(test)]
mod tests;

pub(crate) use command::{Command, Envelope, Reply};
pub(crate) use shell::{Parts, Worker};
pub(crate) use state::Settings;
