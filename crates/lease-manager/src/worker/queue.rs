//! The one queue of claims and revokes the worker holds, by state.
//!
//! A claim or revoke is, from its arrival to its answer, in exactly one of these states:
//! - **queued**: waiting for the next batch ([`Queue::queued`]), ahead of the channel: a
//!   request behind another one for the same key in its batch, or a retry whose time came;
//! - **in flight**: in the batch the store is applying ([`InFlight`], then held by the task
//!   under way, [`super::task`], until the store's results come back);
//! - **awaiting re-read**: its op's answer (`Invalid`) is decided by the re-read that follows
//!   the batch ([`Queue::awaiting`]);
//! - **retry at t**: on a retry timer ([`Queue::retry`]).
//!
//! Other commands (checks, waits, pins, group reads) are only ever queued.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use lease_core::{Op, Timestamp};

use super::command::Verdict;
use super::pending::{Pending, Work};
use super::recorder::Recorder;

/// What a claim or revoke awaiting the re-read is waiting to learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Awaiting {
    /// A claim (or an extend) that was `Invalid`: denied if the re-read shows its holder does
    /// not hold the lease; retried (an extend) or `Timeout` otherwise.
    Denial,
    /// A revoke that was `Invalid`: `NotHeld` if the re-read shows its holder does not hold
    /// the lease, else retried.
    Redecide,
}

/// One batch's claims, extends and revokes while the store applies them: the ops and, in
/// the same order, the requests they answer.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    pub(crate) ops: Vec<Op>,
    pub(crate) pendings: Vec<Pending>,
}

/// The claims and revokes (and other work) the worker holds outside the store call in flight.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Work for the next batches, ahead of the channel.
    queued: VecDeque<Work>,
    /// Claims and revokes waiting for their retry, by (deadline, sequence).
    retry: BTreeMap<(Timestamp, u64), Pending>,
    retry_seq: u64,
    /// Claims and revokes to decide once the batch's re-read is done, in arrival order.
    awaiting: Vec<(Awaiting, Pending)>,
}

impl Queue {
    pub(crate) fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Whether it holds nothing, in any state.
    pub(crate) fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.retry.is_empty() && self.awaiting.is_empty()
    }

    pub(crate) fn queue(&mut self, work: Work) {
        self.queued.push_back(work);
    }

    /// Queues each of `works`, in order, behind the work already queued.
    pub(crate) fn queue_all(&mut self, works: impl IntoIterator<Item = Work>) {
        self.queued.extend(works);
    }

    /// Up to `max` queued works, oldest first.
    pub(crate) fn next_batch(&mut self, max: usize) -> Vec<Work> {
        let n = self.queued.len().min(max);
        self.queued.drain(..n).collect()
    }

    pub(crate) fn retry_at(&mut self, at: Timestamp, pending: Pending) {
        self.retry_seq += 1;
        self.retry.insert((at, self.retry_seq), pending);
    }

    /// The earliest retry time.
    pub(crate) fn next_retry(&self) -> Option<Timestamp> {
        self.retry.first_key_value().map(|((t, _), _)| *t)
    }

    /// Moves the retries due at `now` to the back of the queued work.
    pub(crate) fn retries_due(&mut self, now: Timestamp) {
        let later = self
            .retry
            .split_off(&(now.saturating_add(Duration::from_nanos(1)), 0));
        let due = std::mem::replace(&mut self.retry, later);
        for (_, pending) in due {
            self.queued.push_back(Work::Op(pending));
        }
    }

    pub(crate) fn await_reread(&mut self, awaiting: Awaiting, pending: Pending) {
        self.awaiting.push((awaiting, pending));
    }

    /// Everything awaiting the re-read, of one kind of question, in arrival order.
    pub(crate) fn take_awaiting(&mut self, which: Awaiting) -> Vec<Pending> {
        let (take, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.awaiting)
            .into_iter()
            .partition(|(a, _)| *a == which);
        self.awaiting = keep;
        take.into_iter().map(|(_, p)| p).collect()
    }

    /// How many claims, revokes and commands the queue holds, in every state.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queued.len() + self.retry.len() + self.awaiting.len()
    }

    /// Answers everything `Aborted`.
    pub(crate) fn abort_all(&mut self, recorder: &Recorder) {
        for work in self.queued.drain(..) {
            work.abort(recorder);
        }
        for (_, pending) in std::mem::take(&mut self.retry) {
            pending.settle(Verdict::Aborted, recorder);
        }
        for (_, pending) in self.awaiting.drain(..) {
            pending.settle(Verdict::Aborted, recorder);
        }
    }
}
