//! The machine's tasks, as effects out and results in: a batch (its `apply`, the re-read
//! that follows, its checks' and waits' read, its pins and group reads), the timers (the
//! waiters' expiry read, the refresh, housekeeping) and a refresh (the change poll, then
//! re-reads). [`Tasks::poll`] returns the next store call to make (an [`Effect`]) or
//! [`Effect::Idle`]; the shell makes the call and hands the result to [`Tasks::returned`],
//! which feeds it to the [`State`]'s decisions. One call is in flight at a time, and a task
//! runs to its end before the next one starts (shutdown is noticed between tasks, as the store
//! calls of a task may finish in the grace period).

use std::collections::{BTreeMap, HashSet, VecDeque};

use foldhash::fast::FixedState;

use lease_core::{Info, Key, Op, Outcome, Result, Timestamp};
use tracing::Span;

use super::command::{Command, Reply, Verdict};
use super::decide::{Plan, read_keys};
use super::pending::{Pending, Work};
use super::queue::InFlight;
use super::state::{Next, State};

/// A store call for the shell to make.
#[derive(Debug)]
pub(crate) enum Effect {
    /// `Store::apply` of these ops.
    Apply(Vec<Op>),
    /// `Store::leases` of these keys.
    Read(Vec<Key>),
    /// `Store::poll_changes`.
    Poll,
    /// `Store::pin_lease`, in the caller's span.
    Pin {
        key: Key,
        entity: String,
        span: Span,
    },
    /// `Store::unpin_lease`, in the caller's span.
    Unpin {
        key: Key,
        entity: String,
        span: Span,
    },
    /// `Store::pinned`, in the caller's span.
    Pinned { span: Span },
    /// `Store::lease_group`, in the caller's span.
    LeaseGroup {
        namespace: String,
        model: String,
        span: Span,
    },
    /// The batch started ahead ([`Tasks::plan_ahead`]) is now the call in flight: await the
    /// results of the store call the shell started for it.
    Ahead,
    /// No store call: the task ended without one more (the shell notices shutdown, then
    /// polls again).
    Ended,
    /// No store call: nothing to do until this instant, a request, a change notice or
    /// shutdown. [`Timestamp::MAX`] is never: only a request, a notice or shutdown wakes it.
    Idle(Timestamp),
}

/// What the store answered to the last [`Effect`].
#[derive(Debug)]
pub(crate) enum Returned {
    Applied(Vec<Result<Outcome>>),
    Read(Result<BTreeMap<Key, Info>>),
    Polled(Result<bool>),
    /// A pin or unpin.
    Done(Result<()>),
    Pins(Result<BTreeMap<Key, Vec<String>>>),
    Group(Result<BTreeMap<Key, Info>>),
}

/// What the rest of the current task does.
#[derive(Debug)]
enum Step {
    Apply(InFlight),
    Reread {
        keys: Vec<Key>,
        then: AfterRead,
    },
    Reads(Vec<(Command, Span)>),
    Single(Command, Span),
    Timers,
    RefreshIfDue,
    Housekeeping(Timestamp),
    Refresh,
    RefreshReads {
        chunks: VecDeque<Vec<Key>>,
        read_all: bool,
    },
}

/// What a re-read is for.
#[derive(Debug)]
enum AfterRead {
    /// The re-read after a batch: decide what awaited it.
    Batch,
    /// Waiters' expiry timers fired: if the read failed, read again later.
    Expiry,
    /// After an unpin: as for expiry, then answer the unpin.
    Unpin {
        reply: Reply<()>,
        result: Result<()>,
    },
}

/// The store call in flight, and what its result is for.
#[derive(Debug)]
enum Waiting {
    Applied(Vec<Pending>),
    Reread {
        keys: Vec<Key>,
        then: AfterRead,
    },
    Reads {
        keys: Vec<Key>,
        reads: Vec<(Command, Span)>,
    },
    Pin {
        key: Key,
        reply: Reply<()>,
    },
    Unpin {
        key: Key,
        reply: Reply<()>,
    },
    Pinned {
        namespace: String,
        model: String,
        reply: Reply<BTreeMap<Key, Vec<String>>>,
    },
    Group {
        namespace: String,
        model: String,
        reply: Reply<BTreeMap<Key, Info>>,
    },
    Polled,
    RefreshRead {
        keys: Vec<Key>,
        rest: VecDeque<Vec<Key>>,
        read_all: bool,
    },
}

/// The current task: the rest of its steps, and the store call in flight; and the batch
/// started ahead of it, if any.
#[derive(Debug, Default)]
pub(super) struct Tasks {
    steps: VecDeque<Step>,
    waiting: Option<Waiting>,
    /// The requests of a batch planned and started while the current task's `apply` was in
    /// flight ([`Tasks::plan_ahead`]): its results are the next task, once the current one
    /// has ended.
    ahead: Option<Vec<Pending>>,
}

/// Keys read by a refresh at most this many to a store call.
const REFRESH_CHUNK: usize = 1024;

impl Tasks {
    /// Whether no task is under way (the shell notices shutdown and updates gauges here).
    pub(super) fn between(&self) -> bool {
        self.steps.is_empty() && self.waiting.is_none() && self.ahead.is_none()
    }

    /// Whether a batch may be planned and started now, ahead of the results of the `apply` in
    /// flight: that `apply` is the last step of its task, no batch is ahead already, and the
    /// state has nothing else due (no queued work, retries or re-reads awaited, no timer due,
    /// no change reported), so nothing the machine would do before the next batch is skipped.
    pub(super) fn can_plan_ahead(&self, state: &State, now: Timestamp) -> bool {
        self.ahead.is_none()
            && self.steps.is_empty()
            && matches!(self.waiting, Some(Waiting::Applied(_)))
            && state.quiet(now)
    }

    /// Plans `batch` at `now` while the `apply` in flight runs ([`Tasks::can_plan_ahead`]):
    /// its claims, extends and revokes of keys the batch in flight does not touch become the
    /// next batch, whose ops are returned for the shell to start at once. Everything else
    /// (checks, waits, pins, group reads, ops on the keys in flight, whose decision needs
    /// their results) is queued for the batches after. `None` when no op is left to start.
    pub(super) fn plan_ahead(
        &mut self,
        state: &mut State,
        batch: Vec<Work>,
        now: Timestamp,
    ) -> Option<Vec<Op>> {
        let Some(Waiting::Applied(in_flight)) = &self.waiting else {
            state.queue.queue_all(batch);
            return None;
        };
        let busy: HashSet<&Key, FixedState> = in_flight.iter().map(|p| &p.key).collect();
        let mut ready = Vec::with_capacity(batch.len());
        for work in batch {
            match work {
                Work::Op(pending) if !busy.contains(&pending.key) => {
                    ready.push(Work::Op(pending));
                }
                other => state.queue.queue(other),
            }
        }
        drop(busy);
        let Plan {
            apply,
            reads,
            singles,
        } = state.plan(ready, now);
        // Only claims, extends and revokes were planned: nothing else to read or call.
        debug_assert!(reads.is_empty() && singles.is_empty());
        if apply.ops.is_empty() {
            return None;
        }
        state.recorder.batch(apply.ops.len());
        self.ahead = Some(apply.pendings);
        Some(apply.ops)
    }

    /// Starts serving `batch` at `now`: plans it on `state` and queues its store calls.
    pub(super) fn start_batch(&mut self, state: &mut State, batch: Vec<Work>, now: Timestamp) {
        let Plan {
            apply,
            reads,
            singles,
        } = state.plan(batch, now);
        if !apply.ops.is_empty() {
            self.steps.push_back(Step::Apply(apply));
        }
        if !reads.is_empty() {
            self.steps.push_back(Step::Reads(reads));
        }
        for (command, span) in singles {
            self.steps.push_back(Step::Single(command, span));
        }
    }

    /// The next store call of the task under way at `now` ([`Effect::Ended`] when it ends
    /// without one). Between tasks, starts the next one (queued work first, then due timers,
    /// then a reported change), or says [`Effect::Idle`] until when there is none.
    pub(super) fn poll(&mut self, state: &mut State, now: Timestamp) -> Effect {
        if self.waiting.is_some() {
            // A call is in flight: nothing more until it returns.
            return Effect::Idle(now);
        }
        if self.steps.is_empty()
            && let Some(pendings) = self.ahead.take()
        {
            self.waiting = Some(Waiting::Applied(pendings));
            return Effect::Ahead;
        }
        if self.steps.is_empty() {
            match state.next(now) {
                Next::Batch(batch) => self.start_batch(state, batch, now),
                Next::Timers => self.steps.push_back(Step::Timers),
                Next::Refresh => self.steps.push_back(Step::Refresh),
                Next::Sleep(deadline) => return Effect::Idle(deadline),
            }
        }
        loop {
            let Some(step) = self.steps.pop_front() else {
                return Effect::Ended;
            };
            let (waiting, effect) = match step {
                Step::Apply(InFlight { ops, pendings }) => {
                    state.recorder.batch(ops.len());
                    (Waiting::Applied(pendings), Effect::Apply(ops))
                }
                Step::Reread { keys, then } => {
                    let effect = Effect::Read(keys.clone());
                    (Waiting::Reread { keys, then }, effect)
                }
                Step::Reads(reads) => {
                    let keys = read_keys(&reads);
                    let effect = Effect::Read(keys.clone());
                    (Waiting::Reads { keys, reads }, effect)
                }
                Step::Single(command, span) => match command {
                    Command::Pin { key, entity, reply } => (
                        Waiting::Pin {
                            key: key.clone(),
                            reply,
                        },
                        Effect::Pin { key, entity, span },
                    ),
                    Command::Unpin { key, entity, reply } => (
                        Waiting::Unpin {
                            key: key.clone(),
                            reply,
                        },
                        Effect::Unpin { key, entity, span },
                    ),
                    Command::Pinned {
                        namespace,
                        model,
                        reply,
                    } => (
                        Waiting::Pinned {
                            namespace,
                            model,
                            reply,
                        },
                        Effect::Pinned { span },
                    ),
                    Command::LeaseGroup {
                        namespace,
                        model,
                        reply,
                    } => (
                        Waiting::Group {
                            namespace: namespace.clone(),
                            model: model.clone(),
                            reply,
                        },
                        Effect::LeaseGroup {
                            namespace,
                            model,
                            span,
                        },
                    ),
                    other => {
                        other.fail(lease_core::Error::Aborted);
                        continue;
                    }
                },
                Step::Timers => {
                    // Due retries are queued; leases whose waiters' timers are due are
                    // confirmed with the store before the waiters are woken.
                    let expiring = state.timers_due(now);
                    self.steps.push_front(Step::RefreshIfDue);
                    if expiring.is_empty() {
                        continue;
                    }
                    let effect = Effect::Read(expiring.clone());
                    (
                        Waiting::Reread {
                            keys: expiring,
                            then: AfterRead::Expiry,
                        },
                        effect,
                    )
                }
                Step::RefreshIfDue => {
                    self.steps.push_front(Step::Housekeeping(now));
                    if state.refresh_due(now) {
                        self.steps.push_front(Step::Refresh);
                    }
                    continue;
                }
                Step::Housekeeping(at) => {
                    state.housekeeping_due(at);
                    continue;
                }
                Step::Refresh => {
                    if !state.has_interest() {
                        continue;
                    }
                    (Waiting::Polled, Effect::Poll)
                }
                Step::RefreshReads {
                    mut chunks,
                    read_all,
                } => {
                    let Some(keys) = chunks.pop_front() else {
                        state.refreshed(read_all);
                        continue;
                    };
                    let effect = Effect::Read(keys.clone());
                    (
                        Waiting::RefreshRead {
                            keys,
                            rest: chunks,
                            read_all,
                        },
                        effect,
                    )
                }
            };
            self.waiting = Some(waiting);
            return effect;
        }
    }

    /// The store call in flight returned at `now` (`None`: it was abandoned at the end of the
    /// shutdown grace period).
    pub(super) fn returned(&mut self, state: &mut State, out: Option<Returned>, now: Timestamp) {
        let Some(waiting) = self.waiting.take() else {
            return;
        };
        match waiting {
            Waiting::Applied(pendings) => {
                let results = match out {
                    Some(Returned::Applied(results)) => Some(results),
                    _ => None,
                };
                let keys = state.applied(pendings, results, now);
                if keys.is_empty() {
                    state.reread_done(true, now);
                } else {
                    self.steps.push_front(Step::Reread {
                        keys,
                        then: AfterRead::Batch,
                    });
                }
            }
            Waiting::Reread { keys, then } => {
                let ok = match out {
                    Some(Returned::Read(read)) => state.reread(&keys, read, now),
                    _ => false,
                };
                match then {
                    AfterRead::Batch => state.reread_done(ok, now),
                    AfterRead::Expiry => {
                        if !ok {
                            // Could not confirm: try again after a refresh interval.
                            state.expiry_unconfirmed(keys, now);
                        }
                    }
                    AfterRead::Unpin { reply, result } => {
                        if !ok {
                            state.expiry_unconfirmed(keys, now);
                        }
                        let _ = reply.send(result);
                    }
                }
            }
            Waiting::Reads { keys, reads } => {
                let read = match out {
                    Some(Returned::Read(read)) => Some(read),
                    _ => None,
                };
                state.reads_answered(reads, &keys, read, now);
            }
            Waiting::Pin { key, reply } => {
                let result = state.settle(done(out), "pinning");
                if result.is_ok() {
                    state.pinned(&key);
                }
                let _ = reply.send(result);
            }
            Waiting::Unpin { key, reply } => {
                let result = state.settle(done(out), "unpinning");
                if result.is_ok() && state.unpinned(&key) {
                    // Other entities may still pin it: ask the store, then reschedule expiry.
                    // If that read fails, the waiters (whose pinned lease had no expiry timer)
                    // would wait forever: read again a refresh interval later.
                    self.steps.push_front(Step::Reread {
                        keys: vec![key],
                        then: AfterRead::Unpin { reply, result },
                    });
                } else {
                    let _ = reply.send(result);
                }
            }
            Waiting::Pinned {
                namespace,
                model,
                reply,
            } => {
                let out = match out {
                    Some(Returned::Pins(pins)) => Some(pins),
                    _ => None,
                };
                let result = state.settle(out, "reading pins").map(|all| {
                    all.into_iter()
                        .filter(|(k, _)| k.namespace == namespace && k.model == model)
                        .collect()
                });
                let _ = reply.send(result);
            }
            Waiting::Group {
                namespace,
                model,
                reply,
            } => {
                let out = match out {
                    Some(Returned::Group(group)) => Some(group),
                    _ => None,
                };
                let result = state.settle(out, "reading a lease group");
                if let Ok(group) = &result {
                    state.group_read(&namespace, &model, group, now);
                }
                let _ = reply.send(result);
            }
            Waiting::Polled => {
                if let Some(Returned::Polled(polled)) = out
                    && let Some(keys) = state.polled(polled, now)
                {
                    let chunks = keys.chunks(REFRESH_CHUNK).map(<[Key]>::to_vec).collect();
                    self.steps.push_front(Step::RefreshReads {
                        chunks,
                        read_all: true,
                    });
                }
            }
            Waiting::RefreshRead {
                keys,
                rest,
                read_all,
            } => {
                let ok = match out {
                    Some(Returned::Read(read)) => state.reread(&keys, read, now),
                    _ => false,
                };
                // A change the store reported once is not reported again: a read that
                // failed is owed until one succeeds.
                self.steps.push_front(Step::RefreshReads {
                    chunks: rest,
                    read_all: read_all && ok,
                });
            }
        }
    }

    /// Shutdown: answers the rest of the current task `Aborted` (the shell stops between
    /// tasks, so there is none unless a call was abandoned).
    pub(super) fn abort(&mut self, state: &mut State, now: Timestamp) {
        if self.waiting.is_some() {
            self.returned(state, None, now);
        }
        for pending in self.ahead.take().into_iter().flatten() {
            pending.settle(Verdict::Aborted, &state.recorder);
        }
        while let Some(step) = self.steps.pop_front() {
            match step {
                Step::Apply(InFlight { pendings, .. }) => {
                    for pending in pendings {
                        pending.settle(Verdict::Aborted, &state.recorder);
                    }
                }
                Step::Reads(reads) => {
                    for (command, _) in reads {
                        command.fail(lease_core::Error::Aborted);
                    }
                }
                Step::Single(command, _) => command.fail(lease_core::Error::Aborted),
                Step::Reread {
                    then: AfterRead::Unpin { reply, result },
                    ..
                } => {
                    let _ = reply.send(result);
                }
                Step::Reread { .. }
                | Step::Timers
                | Step::RefreshIfDue
                | Step::Housekeeping(_)
                | Step::Refresh
                | Step::RefreshReads { .. } => {}
            }
        }
    }
}

fn done(out: Option<Returned>) -> Option<Result<()>> {
    match out {
        Some(Returned::Done(result)) => Some(result),
        _ => None,
    }
}
