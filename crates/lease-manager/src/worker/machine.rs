//! The worker's state machine: everything the worker knows and decides, with no store, no
//! clock and no awaiting.
//!
//! A [`Machine`] is its [`State`] (the view of the leases, the waiters and their expiry
//! timers, the token windows it publishes, the queue of claims and revokes, the timers of
//! refreshes and housekeeping) and its [`Tasks`] (the task under way). The async shell
//! ([`super::shell`]) feeds it events (a batch arrived, a store call returned, a store change
//! was noticed, shutdown) with the current instant, and makes the store calls it asks for
//! ([`Effect`]s, see [`super::task`]); answers to callers go through
//! [`Pending::settle`](super::pending::Pending::settle) and
//! [`Command::fail`](super::command::Command::fail), which never block. The decisions
//! themselves (a batch, an op's result, a read) are in [`super::decide`].

use std::sync::Arc;

use lease_core::{Op, Timestamp};

use super::pending::{Answers, Work};
use super::recorder::Recorder;
use super::state::{Settings, State};
use super::task::{Effect, Returned, Tasks};
use crate::window::SlotTable;

/// The worker's state and decisions, driven by events.
#[derive(Debug)]
pub(crate) struct Machine {
    pub(super) state: State,
    /// The task under way: its remaining steps and the store call in flight.
    tasks: Tasks,
}

impl Machine {
    pub(crate) fn new(
        settings: Settings,
        recorder: Recorder,
        slots: Arc<SlotTable>,
        seed: Option<u64>,
        now: Timestamp,
    ) -> Machine {
        Machine {
            state: State::new(settings, recorder, slots, seed, now),
            tasks: Tasks::default(),
        }
    }

    /// Where outcomes and store latencies are counted.
    pub(crate) fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// The most requests one batch takes.
    pub(crate) fn max_batch(&self) -> usize {
        self.state.settings.max_batch
    }

    /// Whether no task is under way (the shell notices shutdown and updates gauges here).
    pub(crate) fn between_tasks(&self) -> bool {
        self.tasks.between()
    }

    /// A batch of requests arrived from the channel at `now`: serve it now.
    pub(crate) fn arrived(&mut self, batch: Vec<Work>, now: Timestamp) {
        self.tasks.start_batch(&mut self.state, batch, now);
    }

    /// The next store call to make at `now`, or [`Effect::Idle`] until when there is none
    /// ([`Tasks::poll`]).
    pub(crate) fn poll(&mut self, now: Timestamp) -> Effect {
        self.tasks.poll(&mut self.state, now)
    }

    /// The store call in flight returned at `now` (`None`: it was abandoned at the end of the
    /// shutdown grace period). The answers an applied batch's results decide are held
    /// ([`Machine::take_answers`]); everything else (the view, token windows, waiters, retries)
    /// is updated at once.
    pub(crate) fn returned(&mut self, out: Option<Returned>, now: Timestamp) {
        self.tasks.returned(&mut self.state, out, now);
    }

    /// Whether a batch may be planned now, ahead of the results of the `apply` in flight
    /// ([`Tasks::can_plan_ahead`]).
    pub(crate) fn can_plan_ahead(&self, now: Timestamp) -> bool {
        self.tasks.can_plan_ahead(&self.state, now)
    }

    /// Plans `batch` ahead of the results of the `apply` in flight: the ops for the shell to
    /// start at once, whose results it hands back after [`Effect::Ahead`]
    /// ([`Tasks::plan_ahead`]).
    pub(crate) fn plan_ahead(&mut self, batch: Vec<Work>, now: Timestamp) -> Option<Vec<Op>> {
        self.tasks.plan_ahead(&mut self.state, batch, now)
    }

    /// Requests taken from the channel that no batch took: queued for the next batches,
    /// ahead of the channel.
    pub(crate) fn queue_work(&mut self, batch: Vec<Work>) {
        self.state.queue.queue_all(batch);
    }

    /// The answers held since the last store call returned, for the shell to send once it has
    /// started the next call, or before it waits for anything.
    pub(crate) fn take_answers(&mut self) -> Answers {
        std::mem::take(&mut self.state.answers)
    }

    /// Whether answers are held ([`Machine::take_answers`]).
    pub(crate) fn holds_answers(&self) -> bool {
        !self.state.answers.is_empty()
    }

    /// The store reported a change by others (or, `false`, can no longer report any).
    pub(crate) fn change_noticed(&mut self, notifier_alive: bool) {
        self.state.change_noticed(notifier_alive);
    }

    /// Publishes the gauges.
    pub(crate) fn update_gauges(&mut self) {
        self.state.update_gauges();
    }

    /// Shutdown at `now`: sends the held answers, answers everyone else `Aborted` and withdraws
    /// every token window.
    pub(crate) fn finish(&mut self, now: Timestamp) {
        self.take_answers().send(&self.state.recorder);
        self.tasks.abort(&mut self.state, now);
        self.state.finish();
    }

    /// Queues a request for a later batch, as the shell's channel would hold it.
    #[cfg(test)]
    pub(crate) fn enqueue(&mut self, envelope: super::command::Envelope) {
        self.state.queue.queue(Work::from_envelope(envelope));
    }
}
