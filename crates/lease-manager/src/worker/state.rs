//! What the worker's state machine knows, and how it keeps it up to date: the view of the
//! leases, the waiters and their expiry timers, the token windows it publishes, the [`Queue`]
//! of claims and revokes with their retry timers, the claims of unknown outcome, and the timers
//! of refreshes and housekeeping. No store, no clock, no awaiting: every method takes the
//! current instant. The decisions made on this state are in [`super::decide`]; the tasks that
//! turn them into store calls, in [`super::task`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Error, Info, Key, Result, Timestamp};

use super::command::Reply;
use super::pending::{Answers, Pending, Work};
use super::queue::Queue;
use super::recorder::Recorder;
use crate::config::{Jitter, RetryPolicy};
use crate::view::{Entry, View, info_valid};
use crate::window::{SlotTable, Window};

/// Callers of `wait_until_expired` on one key, and the instant their timer is set for.
#[derive(Debug, Default)]
pub(super) struct WaitState {
    pub(super) replies: Vec<Reply<()>>,
    pub(super) timer: Option<Timestamp>,
}

/// A claim of this manager's whose outcome is unknown (the store timed out or failed, maybe
/// after the write took effect). If it did take effect, the write happened after the call
/// started, so its holder is guaranteed the lease until `until` (the call's start + duration)
/// and no longer: a store read can report a later expiry (a Kubernetes watch that saw the
/// write late), which is not a window this process can vouch for.
#[derive(Debug)]
pub(super) struct AmbiguousClaim {
    pub(super) holder: Arc<str>,
    pub(super) until: Timestamp,
    /// Kept until then (the window, plus one more duration for a late observation of the
    /// write) unless the view still shows the holder holding the lease.
    pub(super) keep_until: Timestamp,
}

/// What task to start next.
#[derive(Debug)]
pub(super) enum Next {
    /// Serve this batch of queued work.
    Batch(Vec<Work>),
    /// A timer is due: retries, waiters' expiries, refresh, housekeeping.
    Timers,
    /// The store reported a change: refresh.
    Refresh,
    /// Nothing to do until this instant (or a new request, change or shutdown).
    Sleep(Timestamp),
}

/// The settings the worker keeps from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_sleep: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) refresh_interval: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) max_batch: usize,
}

/// What the machine knows (everything but the task under way).
#[derive(Debug)]
pub(crate) struct State {
    pub(super) settings: Settings,
    pub(crate) recorder: Recorder,
    pub(super) slots: Arc<SlotTable>,
    rng: fastrand::Rng,
    pub(super) view: View,
    /// Waiters by key (ordered, so re-reads ask for keys in the same order every run).
    pub(super) waiters: BTreeMap<Key, WaitState>,
    pub(super) waiter_count: usize,
    /// Expiry timers of leases with waiters.
    pub(super) wait_timers: BTreeSet<(Timestamp, Key)>,
    pub(super) queue: Queue,
    /// The answers of the last applied batch, held until the shell takes them
    /// ([`super::machine::Machine::take_answers`]).
    pub(super) answers: Answers,
    /// Claims whose outcome is unknown, by key: they bound what a store read may vouch for.
    pub(super) ambiguous_claims: HashMap<Key, Vec<AmbiguousClaim>>,
    /// The store reported a change not yet re-read.
    changed: bool,
    /// A refresh's re-read failed (or its poll did): re-read at the next refresh even if the
    /// store reports no new change.
    reread_owed: bool,
    next_refresh: Timestamp,
    had_interest: bool,
    next_housekeeping: Timestamp,
}

impl State {
    pub(crate) fn new(
        settings: Settings,
        recorder: Recorder,
        slots: Arc<SlotTable>,
        seed: Option<u64>,
        now: Timestamp,
    ) -> State {
        State {
            recorder,
            slots,
            rng: seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            view: View::default(),
            waiters: BTreeMap::new(),
            waiter_count: 0,
            wait_timers: BTreeSet::new(),
            queue: Queue::default(),
            answers: Answers::default(),
            ambiguous_claims: HashMap::new(),
            changed: false,
            reread_owed: false,
            next_refresh: now.saturating_add(settings.refresh_interval),
            had_interest: false,
            next_housekeeping: now.saturating_add(settings.max_sleep),
            settings,
        }
    }

    /// Whether anything makes other processes' changes matter: waiters or own leases.
    pub(crate) fn has_interest(&self) -> bool {
        !self.waiters.is_empty() || self.view.own_count() > 0
    }

    /// The one instant the worker sleeps until.
    fn next_deadline(&self) -> Timestamp {
        let mut deadline = self.next_housekeeping;
        if let Some((t, _)) = self.wait_timers.first() {
            deadline = deadline.min(*t);
        }
        if let Some(t) = self.queue.next_retry() {
            deadline = deadline.min(t);
        }
        if self.has_interest() {
            deadline = deadline.min(self.next_refresh);
        }
        deadline
    }

    /// Whether nothing but new requests is due at `now`: no queued work, retry or re-read
    /// awaited, no timer due, no change reported ([`super::task::Tasks::can_plan_ahead`]).
    pub(super) fn quiet(&self, now: Timestamp) -> bool {
        self.queue.is_empty() && !self.changed && self.next_deadline() > now
    }

    /// What to do next at `now`: queued work first, then due timers, then a reported change.
    pub(super) fn next(&mut self, now: Timestamp) -> Next {
        let interest = self.has_interest();
        if interest && !self.had_interest {
            self.next_refresh = now.saturating_add(self.settings.refresh_interval);
        }
        self.had_interest = interest;
        if self.queue.has_queued() {
            return Next::Batch(self.queue.next_batch(self.settings.max_batch));
        }
        // A deadline at the maximum instant is never: timers re-armed "an interval from now"
        // saturate there, so with a clock reading the maximum (a fake clock set there) they
        // would be due again at every step, and the worker would spin on them.
        let deadline = self.next_deadline();
        if deadline <= now && deadline < Timestamp::MAX {
            return Next::Timers;
        }
        if self.changed {
            self.changed = false;
            return Next::Refresh;
        }
        Next::Sleep(deadline)
    }

    /// The store reported a change by others (or, `false`, can no longer report any).
    pub(crate) fn change_noticed(&mut self, notifier_alive: bool) {
        self.changed = notifier_alive;
    }

    /// Publishes the gauges.
    pub(crate) fn update_gauges(&mut self) {
        self.recorder
            .gauges(self.view.own_count(), self.view.len(), self.waiter_count);
    }

    /// Shutdown, once the task under way was aborted: answers everyone `Aborted` and withdraws
    /// every token window.
    pub(crate) fn finish(&mut self) {
        std::mem::take(&mut self.answers).send(&self.recorder);
        self.queue.abort_all(&self.recorder);
        for (_, state) in std::mem::take(&mut self.waiters) {
            for reply in state.replies {
                let _ = reply.send(Err(Error::Aborted));
            }
        }
        self.wait_timers.clear();
        self.slots.clear_all();
        self.waiter_count = 0;
        self.update_gauges();
        self.recorder.stopped();
    }

    // ----- timers -----

    /// A timer fired at `now`: due retries are queued; returns the leases whose waiters'
    /// timers are due, to confirm with a store read (then [`State::expiry_unconfirmed`] if
    /// that read failed).
    pub(crate) fn timers_due(&mut self, now: Timestamp) -> Vec<Key> {
        self.queue.retries_due(now);
        let mut expiring = Vec::new();
        while let Some((t, _)) = self.wait_timers.first() {
            if *t > now {
                break;
            }
            if let Some((_, key)) = self.wait_timers.pop_first() {
                if let Some(state) = self.waiters.get_mut(&key) {
                    state.timer = None;
                }
                expiring.push(key);
            }
        }
        expiring
    }

    /// Sets a timer a refresh interval from `now` for the waiters of `keys` that have none, so
    /// their lease is read again then (a read about them failed).
    pub(crate) fn expiry_unconfirmed(&mut self, keys: Vec<Key>, now: Timestamp) {
        let retry_at = now.saturating_add(self.settings.refresh_interval);
        for key in keys {
            if let Some(state) = self.waiters.get_mut(&key)
                && state.timer.is_none()
            {
                state.timer = Some(retry_at);
                self.wait_timers.insert((retry_at, key));
            }
        }
    }

    /// Whether the periodic refresh is due at `now` (and matters to anyone).
    pub(crate) fn refresh_due(&mut self, now: Timestamp) -> bool {
        if now < self.next_refresh {
            return false;
        }
        self.next_refresh = now.saturating_add(self.settings.refresh_interval);
        if self.has_interest() {
            self.changed = false;
            return true;
        }
        false
    }

    /// Housekeeping, if it is due at `now`.
    pub(crate) fn housekeeping_due(&mut self, now: Timestamp) {
        if now >= self.next_housekeeping {
            self.next_housekeeping = now.saturating_add(self.settings.max_sleep);
            self.housekeeping(now);
        }
    }

    /// Forgets what has expired (and what could be stale and matters to no one), and drops
    /// abandoned waiters and unused token slots.
    fn housekeeping(&mut self, now: Timestamp) {
        let mut gone = 0;
        for state in self.waiters.values_mut() {
            let before = state.replies.len();
            state.replies.retain(|r| !r.is_closed());
            gone += before - state.replies.len();
        }
        self.waiter_count -= gone;
        let wait_timers = &mut self.wait_timers;
        self.waiters.retain(|key, state| {
            if !state.replies.is_empty() {
                return true;
            }
            if let Some(t) = state.timer {
                wait_timers.remove(&(t, key.clone()));
            }
            false
        });
        let waiters = &self.waiters;
        let removed = self.view.retain(|key, entry| {
            if waiters.contains_key(key) {
                return true;
            }
            if entry.own() {
                entry.valid(now) || now < entry.own_until
            } else {
                // A foreign pinned lease may have been unpinned since: re-read it on demand.
                !entry.pinned && entry.valid(now)
            }
        });
        for (key, entry) in removed {
            if entry.own() {
                self.slots.publish(&key, None);
            }
        }
        let view = &self.view;
        self.ambiguous_claims.retain(|key, claims| {
            claims.retain(|c| {
                now < c.keep_until
                    || view
                        .get(key)
                        .is_some_and(|e| e.valid(now) && *e.holder == *c.holder)
            });
            !claims.is_empty()
        });
        self.view.compact();
        self.slots.sweep();
    }

    // ----- refreshes and re-reads -----

    /// The store's answer to "did others change anything?": the keys to re-read (those with
    /// waiters, then own leases past their guaranteed window: inside it, nobody else can have
    /// taken them), or `None`.
    pub(crate) fn polled(&mut self, polled: Result<bool>, now: Timestamp) -> Option<Vec<Key>> {
        match polled {
            Err(e) => {
                // The change it would have reported may not be reported again.
                self.reread_owed = true;
                self.recorder.store_failure("polling for changes", &e);
                None
            }
            Ok(false) if !self.reread_owed => None,
            Ok(_) => {
                let mut keys: Vec<Key> = self.waiters.keys().cloned().collect();
                let own = self.view.own_keys_past_window(now);
                keys.extend(own.into_iter().filter(|k| !self.waiters.contains_key(k)));
                Some(keys)
            }
        }
    }

    /// Every re-read of a refresh is done; `read_all` says whether all succeeded. A change the
    /// store reported once is not reported again: a read that failed is owed until one
    /// succeeds (or waiters of a lease unpinned elsewhere would wait forever).
    pub(crate) fn refreshed(&mut self, read_all: bool) {
        self.reread_owed = !read_all;
    }

    /// A store read of `keys` returned: brings the view, waiters and token windows up to date.
    /// Returns whether the read succeeded.
    pub(crate) fn reread(
        &mut self,
        keys: &[Key],
        read: Result<BTreeMap<Key, Info>>,
        now: Timestamp,
    ) -> bool {
        match read {
            Err(e) => {
                self.recorder.store_failure("re-reading leases", &e);
                false
            }
            Ok(snapshot) => {
                self.learn_snapshot(keys, &snapshot, now);
                true
            }
        }
    }

    /// Learns what `snapshot` says of `keys` (absent: not held).
    pub(super) fn learn_snapshot(
        &mut self,
        keys: &[Key],
        snapshot: &BTreeMap<Key, Info>,
        now: Timestamp,
    ) {
        for key in keys {
            match snapshot.get(key) {
                Some(info) if info_valid(info, now) => self.learn(key, info),
                _ => self.forget(key),
            }
        }
    }

    // ----- the view -----

    /// Records a store snapshot of a held lease.
    pub(super) fn learn(&mut self, key: &Key, info: &Info) {
        let own_until = match self.view.get(key) {
            Some(old)
                if old.own()
                    && *old.holder == *info.holder
                    && old.generation == info.generation =>
            {
                old.own_until
            }
            _ => Timestamp::ZERO,
        };
        let entry = Entry {
            holder: self.view.intern(&info.holder),
            expiry: info.expiry,
            generation: info.generation,
            own_until,
            pinned: info.pinned,
        };
        if let Some(old) = self.view.insert(key, entry)
            && old.own()
            && own_until == Timestamp::ZERO
        {
            self.slots.publish(key, None);
        }
        self.reschedule(key);
    }

    /// Records that a lease is not held, and wakes its waiters.
    pub(super) fn forget(&mut self, key: &Key) {
        if let Some(old) = self.view.remove(key)
            && old.own()
        {
            self.slots.publish(key, None);
        }
        self.wake(key);
    }

    /// Stops vouching for `holder`'s holding of `key` from memory (it gives the lease up, or
    /// the store says it is not its): clears the token window first.
    pub(super) fn disown(&mut self, key: &Key, holder: &str) {
        if let Some(mut e) = self.view.get(key).cloned()
            && e.own()
            && *e.holder == *holder
        {
            self.slots.publish(key, None);
            e.own_until = Timestamp::ZERO;
            self.view.insert(key, e);
        }
    }

    /// Records this manager's successful claim or extend; returns whether it renewed the
    /// holding the view knew (same holder and generation: an extend).
    pub(super) fn record_own(
        &mut self,
        key: &Key,
        info: &Info,
        started: Timestamp,
        duration: Duration,
    ) -> bool {
        if let Some(claims) = self.ambiguous_claims.get_mut(key) {
            claims.retain(|c| *c.holder != *info.holder);
            if claims.is_empty() {
                self.ambiguous_claims.remove(key);
            }
        }
        // Never promise past what the store reports, unless the lease is pinned.
        let bound = |own_until: Timestamp| {
            let own_until = if info.pinned {
                own_until
            } else {
                own_until.min(info.expiry)
            };
            own_until.max(Timestamp::from_nanos(1))
        };
        let mut own_until = started.saturating_add(duration);
        let mut renewed = false;
        // The common case, an extend of a holding the view knows: update that entry in place
        // (one lookup, and the holder stays the interned copy it has).
        let window = self.view.modify(key, |old| {
            if *old.holder != *info.holder {
                return None;
            }
            renewed = old.generation == info.generation;
            if renewed && old.own() {
                own_until = own_until.max(old.own_until);
            }
            old.expiry = info.expiry;
            old.generation = info.generation;
            old.own_until = bound(own_until);
            old.pinned = info.pinned;
            Some(Window {
                holder: Arc::clone(&old.holder),
                generation: info.generation,
                until: old.own_until,
            })
        });
        let window = match window {
            Some(window) => window,
            None => {
                let holder = self.view.intern(&info.holder);
                let own_until = bound(own_until);
                self.view.insert(
                    key,
                    Entry {
                        holder: Arc::clone(&holder),
                        expiry: info.expiry,
                        generation: info.generation,
                        own_until,
                        pinned: info.pinned,
                    },
                );
                Window {
                    holder,
                    generation: info.generation,
                    until: own_until,
                }
            }
        };
        self.slots.publish(key, Some(window));
        self.reschedule(key);
        renewed
    }

    /// Sets the expiry timer of `key`'s waiters from the view.
    pub(super) fn reschedule(&mut self, key: &Key) {
        let Some(state) = self.waiters.get_mut(key) else {
            return;
        };
        let want = match self.view.get(key) {
            Some(e) if !e.pinned => Some(e.expiry),
            _ => None,
        };
        if state.timer != want {
            if let Some(t) = state.timer.take() {
                self.wait_timers.remove(&(t, key.clone()));
            }
            if let Some(t) = want {
                self.wait_timers.insert((t, key.clone()));
            }
            state.timer = want;
        }
    }

    /// Answers every waiter of `key`: the lease is no longer held.
    fn wake(&mut self, key: &Key) {
        if let Some(state) = self.waiters.remove(key) {
            if let Some(t) = state.timer {
                self.wait_timers.remove(&(t, key.clone()));
            }
            self.waiter_count -= state.replies.len();
            for reply in state.replies {
                let _ = reply.send(Ok(()));
            }
        }
    }

    pub(super) fn add_waiter(&mut self, key: Key, reply: Reply<()>) {
        self.waiter_count += 1;
        self.waiters
            .entry(key.clone())
            .or_default()
            .replies
            .push(reply);
        self.reschedule(&key);
    }

    // ----- retries -----

    /// Forgets a request whose caller has gone, without acting on it.
    pub(super) fn drop_abandoned(&self, pending: &Pending) {
        self.recorder.abandoned();
        tracing::debug!(parent: &pending.span, key = %pending.key, attempts = pending.attempts, "caller gone: request dropped");
    }

    /// Puts `pending` on a retry timer, after the jittered backoff for its attempts so far.
    /// A request whose caller has gone is dropped instead.
    pub(super) fn schedule_retry(&mut self, pending: Pending, now: Timestamp) {
        if pending.caller_gone() {
            self.drop_abandoned(&pending);
            return;
        }
        let delay = self.backoff(pending.attempts);
        let deadline = now.saturating_add(delay);
        self.recorder.retry(&pending.key.namespace);
        tracing::debug!(parent: &pending.span, key = %pending.key, attempts = pending.attempts, ?delay, "retrying");
        self.queue.retry_at(deadline, pending);
    }

    /// The jittered backoff before retry number `retry`.
    fn backoff(&mut self, retry: u32) -> Duration {
        let base = self.settings.retry.backoff(retry);
        match self.settings.retry.jitter {
            Jitter::None => base,
            Jitter::Full => {
                let nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(self.rng.u64(0..=nanos))
            }
        }
    }
}
