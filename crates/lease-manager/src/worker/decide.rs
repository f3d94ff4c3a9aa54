//! The machine's decisions: which claims and revokes go to the store and as which ops, what
//! each op's result means for its caller, and what a store read answers a check or a wait.
//! Nothing here awaits: the shell makes the store calls these plan and feeds back the results.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::FixedState;
use lease_core::{Error, Generation, Info, Key, Op, Outcome, Result, Timestamp};
use tracing::Span;

use super::command::{Command, Verdict, dup_error, is_lease_outcome};
use super::pending::{Pending, PendingKind, Work};
use super::queue::{Awaiting, InFlight};
use super::state::{AmbiguousClaim, State};
use crate::view::info_valid;
use crate::window::Window;

/// What one batch needs from the store.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Claims, extends and revokes: one `apply`, then [`State::applied`].
    pub(crate) apply: InFlight,
    /// Checks and waits the view cannot answer: one `leases` read of [`read_keys`], then
    /// [`State::reads_answered`].
    pub(crate) reads: Vec<(Command, Span)>,
    /// Pins, unpins and group reads: one store call each, in order.
    pub(crate) singles: Vec<(Command, Span)>,
}

/// The keys a batch's checks and waits read, each once, in order.
pub(crate) fn read_keys(reads: &[(Command, Span)]) -> Vec<Key> {
    let mut keys: Vec<Key> = Vec::new();
    let mut seen = HashSet::new();
    for (command, _) in reads {
        if let Command::Check { key, .. } | Command::Wait { key, .. } = command
            && seen.insert(key.clone())
        {
            keys.push(key.clone());
        }
    }
    keys
}

/// The keys of the claims and revokes a batch sends to the store so far, by hash: a second op
/// on one key waits for the next batch. Indexes into the batch's pendings rather than copies
/// of the keys (three strings each, for every op of every batch).
#[derive(Debug, Default)]
struct BatchKeys {
    hasher: FixedState,
    /// The pending of the first op with each hash.
    first: HashMap<u64, usize, FixedState>,
}

impl BatchKeys {
    fn hash(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Whether `key` (whose hash is `hash`) is among `pendings` already. Exact: on a hash
    /// collision the keys are compared.
    fn contains(&self, hash: u64, key: &Key, pendings: &[Pending]) -> bool {
        match self.first.get(&hash) {
            None => false,
            Some(&i) => {
                pendings.get(i).is_some_and(|p| p.key == *key)
                    || pendings.iter().any(|p| p.key == *key)
            }
        }
    }

    /// The pending at `index` has a key with `hash`.
    fn insert(&mut self, hash: u64, index: usize) {
        self.first.entry(hash).or_insert(index);
    }
}

impl State {
    /// A batch of work is served at `now`: what the view answers is answered; the rest is
    /// planned as store calls. A second claim or revoke of a key already in the batch is
    /// queued again, to be decided from what the batch leaves behind.
    pub(crate) fn plan(&mut self, batch: Vec<Work>, now: Timestamp) -> Plan {
        let mut plan = Plan::default();
        // Most of a batch is claims and extends: one allocation each, not doubling as they come.
        plan.apply.ops.reserve(batch.len());
        plan.apply.pendings.reserve(batch.len());
        let mut in_batch = BatchKeys::default();
        for work in batch {
            match work {
                Work::Op(mut pending) => {
                    if pending.caller_gone() {
                        self.drop_abandoned(&pending);
                        continue;
                    }
                    let hash = in_batch.hash(&pending.key);
                    if in_batch.contains(hash, &pending.key, &plan.apply.pendings) {
                        self.queue.queue(Work::Op(pending));
                        continue;
                    }
                    if let Some(op) = self.decide(&pending, now) {
                        pending.extend |= matches!(op, Op::Extend { .. });
                        in_batch.insert(hash, plan.apply.pendings.len());
                        plan.apply.ops.push(op);
                        plan.apply.pendings.push(pending);
                    } else {
                        self.answer_undecided(pending);
                    }
                }
                Work::Other(command, span) => match command {
                    Command::Check {
                        key,
                        holder,
                        force_read,
                        reply,
                    } => {
                        if reply.is_closed() {
                            continue;
                        }
                        self.recorder.check_via_worker();
                        match self.view.get(&key) {
                            Some(e) if !force_read && *e.holder == *holder && now < e.own_until => {
                                let window = Window {
                                    holder: Arc::clone(&e.holder),
                                    generation: e.generation,
                                    until: e.own_until,
                                };
                                let generation = e.generation;
                                self.slots.publish(&key, Some(window));
                                let _ = reply.send(Ok(generation));
                            }
                            _ => plan.reads.push((
                                Command::Check {
                                    key,
                                    holder,
                                    force_read,
                                    reply,
                                },
                                span,
                            )),
                        }
                    }
                    Command::Wait { key, reply } => {
                        if reply.is_closed() {
                            continue;
                        }
                        match self.view.get(&key) {
                            Some(e) if e.valid(now) => self.add_waiter(key, reply),
                            _ => plan.reads.push((Command::Wait { key, reply }, span)),
                        }
                    }
                    other => plan.singles.push((other, span)),
                },
            }
        }
        plan
    }

    /// The store op for `pending`, or `None` when the view answers it without the store.
    fn decide(&mut self, pending: &Pending, now: Timestamp) -> Option<Op> {
        let key = pending.key.clone();
        match &pending.kind {
            PendingKind::Claim { request, .. } => match self.view.get(&key) {
                Some(e) if e.valid(now) && *e.holder != *request.holder => None,
                Some(e) if e.valid(now) => Some(Op::Extend {
                    key,
                    request: request.clone(),
                }),
                // The holding this extend was for has gone (revoked, lapsed): only the store
                // may say so, and it answers `Invalid`; never a claim nobody asked for.
                _ if pending.extend
                    && !crate::mutation::on(crate::mutation::Mutation::RetriedExtendClaims) =>
                {
                    Some(Op::Extend {
                        key,
                        request: request.clone(),
                    })
                }
                _ => Some(Op::Claim {
                    key,
                    request: request.clone(),
                }),
            },
            PendingKind::Revoke { holder, .. } => {
                let entry = self.view.get(&key);
                if pending.attempts > 0
                    && !entry.is_some_and(|e| e.valid(now) && *e.holder == **holder)
                {
                    // A retry after a re-read that shows the holder does not hold it.
                    return None;
                }
                // The holder gives the lease up: stop vouching for it from memory at once,
                // before the revoke is sent.
                self.disown(&key, holder);
                Some(Op::Revoke {
                    key,
                    holder: holder.clone(),
                })
            }
        }
    }

    /// Answers a request the view decided without a store call.
    fn answer_undecided(&mut self, pending: Pending) {
        let span = pending.span.clone();
        let _enter = span.enter();
        if pending.is_claim() {
            tracing::debug!(key = %pending.key, "claim denied from the view");
            pending.settle(Verdict::Denied, &self.recorder);
        } else {
            tracing::debug!(key = %pending.key, "revoke: not held");
            pending.settle(Verdict::NotHeld, &self.recorder);
        }
    }

    /// The store applied a batch (returned at `now`; `None`: the call was abandoned at
    /// shutdown, and its callers are answered `Aborted`): answers what its results decide,
    /// puts the rest on retry timers or awaiting the re-read, and returns the keys to re-read
    /// before [`State::reread_done`].
    pub(crate) fn applied(
        &mut self,
        pendings: Vec<Pending>,
        results: Option<Vec<Result<Outcome>>>,
        now: Timestamp,
    ) -> Vec<Key> {
        let Some(mut results) = results else {
            for pending in pendings {
                pending.settle(Verdict::Aborted, &self.recorder);
            }
            return Vec::new();
        };
        let n = pendings.len();
        if results.len() != n {
            tracing::warn!(
                expected = n,
                got = results.len(),
                "lease store returned the wrong number of results"
            );
            results.resize_with(n, || {
                Err(Error::store_msg(
                    "lease store returned no result for this op",
                ))
            });
        }
        let mut reread = Vec::new();
        self.answers.reserve(n);
        for (pending, result) in pendings.into_iter().zip(results) {
            if let Some(key) = self.complete(pending, result, now) {
                reread.push(key);
            }
        }
        reread
    }

    /// The batch's re-read is done (`fresh`: it succeeded), at `now`: decides what awaited it.
    pub(crate) fn reread_done(&mut self, fresh: bool, now: Timestamp) {
        for pending in self.queue.take_awaiting(Awaiting::Denial) {
            if pending.caller_gone() {
                self.drop_abandoned(&pending);
                continue;
            }
            let holds = match &pending.kind {
                PendingKind::Claim { request, .. } => self
                    .view
                    .get(&pending.key)
                    .is_some_and(|e| e.valid(now) && *e.holder == *request.holder),
                PendingKind::Revoke { .. } => false,
            };
            if (holds || !fresh)
                && pending.extend
                && pending.attempts < self.settings.retry.attempts
            {
                // The holder still holds it (a spurious Invalid), or we cannot tell: retry
                // the extend.
                self.schedule_retry(pending, now);
                continue;
            }
            if !pending.is_claim() {
                pending.settle(Verdict::Aborted, &self.recorder);
            } else if fresh && !holds {
                pending.settle(Verdict::Denied, &self.recorder);
            } else {
                // The holder holds it (an earlier claim took effect unseen), or we cannot
                // tell: not a denial, and no window to vouch for either.
                pending.settle(Verdict::Timeout, &self.recorder);
            }
        }
        for pending in self.queue.take_awaiting(Awaiting::Redecide) {
            if pending.caller_gone() {
                self.drop_abandoned(&pending);
                continue;
            }
            let PendingKind::Revoke { holder, .. } = &pending.kind else {
                self.schedule_retry(pending, now);
                continue;
            };
            let held = self
                .view
                .get(&pending.key)
                .is_some_and(|e| e.valid(now) && *e.holder == **holder);
            if held {
                self.schedule_retry(pending, now);
            } else {
                self.answer_undecided(pending);
            }
        }
    }

    /// Handles one op's result; returns the key to re-read when the op awaits the re-read or
    /// will be retried. An answer it decides is held in `answers` for the shell to send.
    fn complete(
        &mut self,
        pending: Pending,
        result: Result<Outcome>,
        now: Timestamp,
    ) -> Option<Key> {
        let span = pending.span.clone();
        let _enter = span.enter();
        let attempts = pending.attempts + 1;
        if let Err(e) = &result {
            self.note_ambiguous_claim(&pending, e);
        }
        match result {
            Ok(Outcome::Claimed(info) | Outcome::Extended(info)) => {
                if let PendingKind::Claim {
                    request, started, ..
                } = &pending.kind
                {
                    let renewed = self.record_own(&pending.key, &info, *started, request.duration);
                    tracing::debug!(key = %pending.key, generation = %info.generation, extend = renewed, "claimed");
                    let verdict = if renewed {
                        Verdict::Extended(info)
                    } else {
                        Verdict::Claimed(info)
                    };
                    self.answers.hold(pending, verdict);
                } else {
                    self.answers.hold(pending, Verdict::Mismatched);
                }
                None
            }
            Ok(Outcome::Revoked) => {
                if pending.is_claim() {
                    self.answers.hold(pending, Verdict::Mismatched);
                } else {
                    tracing::debug!(key = %pending.key, "revoked");
                    self.forget(&pending.key);
                    self.answers.hold(pending, Verdict::Revoked);
                }
                None
            }
            Err(e) if e.is_held() => {
                if pending.is_claim() {
                    tracing::debug!(key = %pending.key, "claim denied: held");
                }
                self.answers.hold(pending, Verdict::Denied);
                None
            }
            Err(e) if e.is_not_held() => {
                // Someone else holds it: a view that says otherwise is stale.
                if let PendingKind::Revoke { holder, .. } = &pending.kind {
                    self.disown(&pending.key, holder);
                }
                self.answers.hold(pending, Verdict::Failed(e));
                None
            }
            Err(e) if e.is_invalid() && pending.extend => {
                // The holding this extend was for is gone (absent, expired, another's), or the
                // store saw a conflicting write: the re-read tells which. Either way the retry,
                // if any, stays an extend.
                tracing::debug!(key = %pending.key, attempts, "extend invalid");
                let key = pending.key.clone();
                self.queue.await_reread(
                    Awaiting::Denial,
                    Pending {
                        attempts,
                        ..pending
                    },
                );
                Some(key)
            }
            Err(e) if e.is_timeout() || e.is_invalid() => {
                let timeout = e.is_timeout();
                if attempts >= self.settings.retry.attempts {
                    tracing::debug!(key = %pending.key, attempts, error = %e, "giving up");
                    if !timeout && pending.is_claim() {
                        // A claim is also Invalid when its own holder already holds the lease
                        // (an earlier claim took effect but was answered Timeout): deny it
                        // only once a fresh read shows the holder does not hold it.
                        let key = pending.key.clone();
                        self.queue.await_reread(
                            Awaiting::Denial,
                            Pending {
                                attempts,
                                ..pending
                            },
                        );
                        return Some(key);
                    }
                    let verdict = if timeout {
                        Verdict::Timeout
                    } else {
                        Verdict::NotHeld
                    };
                    self.answers.hold(pending, verdict);
                    return None;
                }
                tracing::debug!(key = %pending.key, attempts, error = %e, "store said no");
                let key = pending.key.clone();
                let pending = Pending {
                    attempts,
                    ..pending
                };
                if !timeout && !pending.is_claim() {
                    // Absent or expired, probably: the re-read decides between NotHeld now
                    // and a retry.
                    self.queue.await_reread(Awaiting::Redecide, pending);
                } else {
                    self.schedule_retry(pending, now);
                }
                Some(key)
            }
            Err(e) => {
                self.recorder
                    .store_failure("applying a lease operation", &e);
                self.answers.hold(pending, Verdict::Failed(e));
                None
            }
        }
    }

    /// Remembers a claim (not an extend) that may have taken effect unseen: a timeout, or a
    /// failure of the store itself.
    fn note_ambiguous_claim(&mut self, pending: &Pending, e: &Error) {
        let PendingKind::Claim {
            request, started, ..
        } = &pending.kind
        else {
            return;
        };
        let definite = e.is_held() || e.is_invalid() || e.is_not_held() || e.is_validation();
        if pending.extend || definite {
            return;
        }
        let until = started.saturating_add(request.duration);
        let keep_until = until.saturating_add(request.duration);
        let holder = self.view.intern(&request.holder);
        let claims = self
            .ambiguous_claims
            .entry(pending.key.clone())
            .or_default();
        match claims.iter_mut().find(|c| c.holder == holder) {
            Some(c) => {
                c.until = c.until.max(until);
                c.keep_until = c.keep_until.max(keep_until);
            }
            None => claims.push(AmbiguousClaim {
                holder,
                until,
                keep_until,
            }),
        }
    }

    /// A batch's checks and waits were read (`keys`, from [`read_keys`]; `None`: the read
    /// was abandoned at shutdown); answers them.
    pub(crate) fn reads_answered(
        &mut self,
        reads: Vec<(Command, Span)>,
        keys: &[Key],
        read: Option<Result<BTreeMap<Key, Info>>>,
        now: Timestamp,
    ) {
        let snapshot = match read {
            None => {
                for (command, _) in reads {
                    command.fail(Error::Aborted);
                }
                return;
            }
            Some(Err(e)) => {
                if !is_lease_outcome(&e) {
                    self.recorder.store_failure("reading leases", &e);
                }
                for (command, _) in reads {
                    command.fail(dup_error(&e));
                }
                return;
            }
            Some(Ok(snapshot)) => snapshot,
        };
        self.learn_snapshot(keys, &snapshot, now);
        for (command, span) in reads {
            let _enter = span.enter();
            match command {
                Command::Check {
                    key, holder, reply, ..
                } => {
                    let result = match snapshot.get(&key) {
                        Some(info) => self.check_answer(&key, &holder, info, now),
                        None => Err(Error::NotHeld),
                    };
                    let _ = reply.send(result);
                }
                Command::Wait { key, reply } => match snapshot.get(&key) {
                    Some(info) if info_valid(info, now) => self.add_waiter(key, reply),
                    _ => {
                        let _ = reply.send(Ok(()));
                    }
                },
                other => other.fail(Error::Aborted),
            }
        }
    }

    /// The answer to a token check of `holder` from a store snapshot's `info` of `key`: held
    /// only inside a window this process can vouch for.
    ///
    /// - A holding this manager claimed or extended (the view's own entry, same holder and
    ///   generation): until the start of that call + its duration, whatever later expiry the
    ///   store reports (on Kubernetes, a write observed late expires late here but not for
    ///   the processes that saw it early).
    /// - A claim of this manager's whose outcome was unknown (it timed out): until its call's
    ///   start + duration (the write, if it happened, happened after the call started).
    /// - A pinned lease: held while pinned (it does not expire for anyone).
    /// - A holding this manager has no record of (another process's; this process's own
    ///   before a restart): the store's judgement. That is the expiry every process uses on
    ///   SQLite, and this process's observed expiry on Kubernetes, which can be later than
    ///   the holder's own window by the delay with which this process saw the write; a
    ///   holder that must not act past its window claims (extends) before relying on checks.
    fn check_answer(
        &self,
        key: &Key,
        holder: &str,
        info: &Info,
        now: Timestamp,
    ) -> Result<Generation> {
        if !info_valid(info, now) || info.holder != holder {
            return Err(Error::NotHeld);
        }
        if info.pinned {
            return Ok(info.generation);
        }
        let within = |until: Timestamp| {
            if now < until {
                Ok(info.generation)
            } else {
                Err(Error::NotHeld)
            }
        };
        if let Some(e) = self.view.get(key)
            && e.own()
            && *e.holder == *holder
            && e.generation == info.generation
        {
            return within(e.own_until);
        }
        if let Some(c) = self
            .ambiguous_claims
            .get(key)
            .and_then(|claims| claims.iter().find(|c| *c.holder == *holder))
        {
            return within(c.until);
        }
        Ok(info.generation)
    }

    /// `key` was pinned.
    pub(crate) fn pinned(&mut self, key: &Key) {
        if let Some(mut e) = self.view.get(key).cloned() {
            e.pinned = true;
            self.view.insert(key, e);
            self.reschedule(key);
        }
    }

    /// `key` was unpinned: whether to re-read it (other entities may still pin it; its waiters,
    /// whose pinned lease had no expiry timer, need one).
    pub(crate) fn unpinned(&self, key: &Key) -> bool {
        self.view.get(key).is_some() || self.waiters.contains_key(key)
    }

    /// A read of the whole group `namespace`/`model` returned at `now`.
    pub(crate) fn group_read(
        &mut self,
        namespace: &str,
        model: &str,
        group: &BTreeMap<Key, Info>,
        now: Timestamp,
    ) {
        for key in self.view.keys_in(namespace, model) {
            if !group.get(&key).is_some_and(|i| info_valid(i, now)) {
                self.forget(&key);
            }
        }
        for (key, info) in group {
            if info_valid(info, now) {
                self.learn(key, info);
            }
        }
    }

    /// The result of a pin, unpin or group read (`None`: the call was abandoned at shutdown):
    /// a store failure is recorded, an abandoned call is `Aborted`.
    pub(crate) fn settle<T>(&self, out: Option<Result<T>>, what: &str) -> Result<T> {
        match out {
            None => Err(Error::Aborted),
            Some(Err(e)) => {
                if !is_lease_outcome(&e) && !e.is_validation() {
                    self.recorder.store_failure(what, &e);
                }
                Err(e)
            }
            Some(Ok(v)) => Ok(v),
        }
    }
}
