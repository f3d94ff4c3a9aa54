//! The worker: the one task that owns the [`Store`]. It takes requests from a bounded channel in
//! batches (group commit), decides claims from its view, retries on timers, wakes waiters at the
//! expiry instant from a timer map with a single clock sleep, notices other processes' changes,
//! and on shutdown drains the store call in flight before answering everyone `Aborted`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{
    CancellationToken, Clock, Error, Generation, Info, Key, Op, Outcome, Request, Result, Sleep,
    Store, Timestamp,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, Span};

use crate::config::{Jitter, RetryPolicy};
use crate::export::{self, outcome};
use crate::report::Metrics;
use crate::view::{Entry, SlotTable, View, Window, info_valid};

/// A caller's one-shot reply.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// A request to the worker.
#[derive(Debug)]
pub(crate) enum Command {
    Claim {
        key: Key,
        request: Request,
        /// The instant the caller's `claim` started, on the manager's clock.
        started: Timestamp,
        reply: Reply<Info>,
    },
    Revoke {
        key: Key,
        holder: String,
        reply: Reply<()>,
    },
    Check {
        key: Key,
        holder: String,
        /// Ask the store even when the view could answer.
        force_read: bool,
        reply: Reply<Generation>,
    },
    Wait {
        key: Key,
        reply: Reply<()>,
    },
    Pin {
        key: Key,
        entity: String,
        reply: Reply<()>,
    },
    Unpin {
        key: Key,
        entity: String,
        reply: Reply<()>,
    },
    Pinned {
        namespace: String,
        model: String,
        reply: Reply<BTreeMap<Key, Vec<String>>>,
    },
    LeaseGroup {
        namespace: String,
        model: String,
        reply: Reply<BTreeMap<Key, Info>>,
    },
}

/// A request with the tracing span of the call that sent it.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) command: Command,
    pub(crate) span: Span,
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

/// A claim or revoke, possibly waiting for a retry.
#[derive(Debug)]
struct Pending {
    key: Key,
    kind: PendingKind,
    /// Store attempts made so far.
    attempts: u32,
    /// A claim that was sent as an extend: its holder held the lease, and the caller asked to
    /// keep that holding. It stays an extend on every retry, so a retry can never re-claim a
    /// lease that was revoked, lapsed or taken by another in the meantime.
    extend: bool,
    span: Span,
}

#[derive(Debug)]
enum PendingKind {
    Claim {
        request: Request,
        started: Timestamp,
        reply: Reply<Info>,
    },
    Revoke {
        holder: String,
        reply: Reply<()>,
    },
}

impl Pending {
    /// Whether the caller has gone (its reply receiver is dropped: the call was cancelled or
    /// timed out). Its request must not be acted on any more: a renewal retried after its
    /// caller released the lease would re-claim it for nobody, and a revoke retried after its
    /// caller claimed again would end a holding someone relies on.
    fn caller_gone(&self) -> bool {
        match &self.kind {
            PendingKind::Claim { reply, .. } => reply.is_closed(),
            PendingKind::Revoke { reply, .. } => reply.is_closed(),
        }
    }

    fn abort(self) {
        match self.kind {
            PendingKind::Claim { reply, .. } => {
                let _ = reply.send(Err(Error::Aborted));
            }
            PendingKind::Revoke { reply, .. } => {
                let _ = reply.send(Err(Error::Aborted));
            }
        }
    }
}

/// Work for the next batch.
#[derive(Debug)]
enum Work {
    Op(Pending),
    Other(Command, Span),
}

impl Work {
    fn from_envelope(env: Envelope) -> Work {
        match env.command {
            Command::Claim {
                key,
                request,
                started,
                reply,
            } => Work::Op(Pending {
                key,
                kind: PendingKind::Claim {
                    request,
                    started,
                    reply,
                },
                attempts: 0,
                extend: false,
                span: env.span,
            }),
            Command::Revoke { key, holder, reply } => Work::Op(Pending {
                key,
                kind: PendingKind::Revoke { holder, reply },
                attempts: 0,
                extend: false,
                span: env.span,
            }),
            other => Work::Other(other, env.span),
        }
    }

    fn abort(self) {
        match self {
            Work::Op(p) => p.abort(),
            Work::Other(command, _) => abort_command(command),
        }
    }
}

fn abort_command(command: Command) {
    match command {
        Command::Claim { reply, .. } => {
            let _ = reply.send(Err(Error::Aborted));
        }
        Command::Revoke { reply, .. }
        | Command::Wait { reply, .. }
        | Command::Pin { reply, .. }
        | Command::Unpin { reply, .. } => {
            let _ = reply.send(Err(Error::Aborted));
        }
        Command::Check { reply, .. } => {
            let _ = reply.send(Err(Error::Aborted));
        }
        Command::Pinned { reply, .. } => {
            let _ = reply.send(Err(Error::Aborted));
        }
        Command::LeaseGroup { reply, .. } => {
            let _ = reply.send(Err(Error::Aborted));
        }
    }
}

/// A copy of `e` (lease errors are not `Clone`): the same kind and message; a store error's
/// source is kept as text.
pub(crate) fn dup_error(e: &Error) -> Error {
    match e {
        Error::ClaimDenied => Error::ClaimDenied,
        Error::NotHeld => Error::NotHeld,
        Error::WaitCancelled => Error::WaitCancelled,
        Error::Invalid => Error::Invalid,
        Error::Held => Error::Held,
        Error::Timeout => Error::Timeout,
        Error::Aborted => Error::Aborted,
        Error::Validation {
            field,
            value,
            reason,
        } => Error::validation(field, value.clone(), reason.clone()),
        Error::Context { context, source } => dup_error(source).context(context.clone()),
        other => match std::error::Error::source(other) {
            Some(source) => Error::store(other.to_string(), source.to_string()),
            None => Error::store_msg(other.to_string()),
        },
    }
}

/// Whether `e` is one of the lease outcomes a store reports in normal operation (as opposed to
/// a failure of the store itself).
fn is_lease_outcome(e: &Error) -> bool {
    e.is_held() || e.is_invalid() || e.is_not_held() || e.is_timeout()
}

/// Callers of `wait_until_expired` on one key, and the instant their timer is set for.
#[derive(Debug, Default)]
struct WaitState {
    replies: Vec<Reply<()>>,
    timer: Option<Timestamp>,
}

/// A claim of this manager's whose outcome is unknown (the store timed out or failed, maybe
/// after the write took effect). If it did take effect, the write happened after the call
/// started, so its holder is guaranteed the lease until `until` (the call's start + duration)
/// and no longer: a store read can report a later expiry (a Kubernetes watch that saw the
/// write late), which is not a window this process can vouch for.
#[derive(Debug)]
struct AmbiguousClaim {
    holder: Arc<str>,
    until: Timestamp,
    /// Kept until then (the window, plus one more duration for a late observation of the
    /// write) unless the view still shows the holder holding the lease.
    keep_until: Timestamp,
}

/// What woke the worker.
enum Event {
    Shutdown,
    Closed,
    Batch(Vec<Envelope>),
    Timer,
    Changed,
}

/// Runs a store call; once shutdown has been asked for, gives it until the grace deadline and
/// then abandons it (`None`). Records the call's latency (`call` names it for metrics).
async fn guarded<T>(
    call: &'static str,
    shutdown: &CancellationToken,
    deadline: &mut Option<Timestamp>,
    clock: &Arc<dyn Clock>,
    grace: Duration,
    metrics: &Metrics,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let start = clock.now();
    let mut fut = std::pin::pin!(fut);
    if deadline.is_none() {
        tokio::select! {
            biased;
            out = &mut fut => {
                let took = clock.now().saturating_duration_since(start);
                metrics.latency.record(took);
                export::store_latency(call, took);
                return Some(out);
            }
            () = shutdown.cancelled() => {}
        }
    }
    let until = *deadline.get_or_insert_with(|| clock.now().saturating_add(grace));
    let sleep = clock.sleep_until(until);
    tokio::select! {
        biased;
        out = fut => {
            let took = clock.now().saturating_duration_since(start);
            metrics.latency.record(took);
            export::store_latency(call, took);
            Some(out)
        }
        () = sleep => None,
    }
}

/// Runs `self.store.$method(args)` through [`guarded`].
macro_rules! store_call {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        guarded(
            stringify!($method),
            &$self.shutdown,
            &mut $self.shutdown_deadline,
            &$self.clock,
            $self.settings.shutdown_grace,
            &$self.metrics,
            $self.store.$method($($arg),*),
        )
        .await
    };
}

async fn changed(rx: &mut Option<watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The worker's state; [`Worker::run`] is its task.
pub(crate) struct Worker {
    store: Box<dyn Store>,
    clock: Arc<dyn Clock>,
    rx: mpsc::Receiver<Envelope>,
    shutdown: CancellationToken,
    done: CancellationToken,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// The gauges last exported (the `metrics` feature).
    gauges: export::Gauges,
    slots: Arc<SlotTable>,
    rng: fastrand::Rng,
    view: View,
    waiters: HashMap<Key, WaitState>,
    waiter_count: usize,
    /// Expiry timers of leases with waiters.
    wait_timers: BTreeSet<(Timestamp, Key)>,
    /// Claims and revokes waiting for their retry, by (deadline, sequence).
    retries: BTreeMap<(Timestamp, u64), Pending>,
    retry_seq: u64,
    /// Work for the next batches, ahead of the channel.
    deferred: VecDeque<Work>,
    /// Revokes to decide again once the batch's re-read is done.
    redecide: Vec<Pending>,
    /// Claims that were `Invalid` to their last attempt, to answer once the batch's re-read
    /// shows whether their own holder holds the lease after all.
    unconfirmed_denials: Vec<Pending>,
    /// Claims whose outcome is unknown, by key: they bound what a store read may vouch for.
    ambiguous_claims: HashMap<Key, Vec<AmbiguousClaim>>,
    change_rx: Option<watch::Receiver<u64>>,
    changed: bool,
    /// A refresh's re-read failed (or its poll did): re-read at the next refresh even if the
    /// store reports no new change.
    reread_owed: bool,
    next_refresh: Timestamp,
    had_interest: bool,
    next_housekeeping: Timestamp,
    /// Set once shutdown was noticed during a store call: the end of the grace period.
    shutdown_deadline: Option<Timestamp>,
    /// A store call was abandoned at the end of the grace period.
    abandoned: bool,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        mut store: Box<dyn Store>,
        clock: Arc<dyn Clock>,
        rx: mpsc::Receiver<Envelope>,
        shutdown: CancellationToken,
        done: CancellationToken,
        settings: Settings,
        metrics: Arc<Metrics>,
        slots: Arc<SlotTable>,
        seed: Option<u64>,
    ) -> Worker {
        let change_rx = store.change_notifier();
        let now = clock.now();
        Worker {
            store,
            rx,
            shutdown,
            done,
            metrics,
            gauges: export::Gauges::new(),
            slots,
            rng: seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            view: View::default(),
            waiters: HashMap::new(),
            waiter_count: 0,
            wait_timers: BTreeSet::new(),
            retries: BTreeMap::new(),
            retry_seq: 0,
            deferred: VecDeque::new(),
            redecide: Vec::new(),
            unconfirmed_denials: Vec::new(),
            ambiguous_claims: HashMap::new(),
            change_rx,
            changed: false,
            reread_owed: false,
            next_refresh: now.saturating_add(settings.refresh_interval),
            had_interest: false,
            next_housekeeping: now.saturating_add(settings.max_sleep),
            shutdown_deadline: None,
            abandoned: false,
            settings,
            clock,
        }
    }

    /// Whether anything makes other processes' changes matter: waiters or own leases.
    fn has_interest(&self) -> bool {
        !self.waiters.is_empty() || self.view.own_count() > 0
    }

    /// The one instant the worker sleeps until.
    fn next_deadline(&self) -> Timestamp {
        let mut deadline = self.next_housekeeping;
        if let Some((t, _)) = self.wait_timers.first() {
            deadline = deadline.min(*t);
        }
        if let Some(((t, _), _)) = self.retries.first_key_value() {
            deadline = deadline.min(*t);
        }
        if self.has_interest() {
            deadline = deadline.min(self.next_refresh);
        }
        deadline
    }

    fn update_gauges(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.gauges
            .update(self.view.own_count(), self.view.len(), self.waiter_count);
        self.metrics
            .waiters
            .store(self.waiter_count as u64, Relaxed);
        self.metrics
            .known_leases
            .store(self.view.len() as u64, Relaxed);
    }

    /// The task: serve until shutdown or until every handle is gone, then finish.
    pub(crate) async fn run(mut self) {
        let mut sleep: Option<(Timestamp, Sleep)> = None;
        loop {
            self.update_gauges();
            if self.shutdown.is_cancelled() || self.abandoned {
                break;
            }
            let now = self.clock.now();
            let interest = self.has_interest();
            if interest && !self.had_interest {
                self.next_refresh = now.saturating_add(self.settings.refresh_interval);
            }
            self.had_interest = interest;
            if !self.deferred.is_empty() {
                let n = self.deferred.len().min(self.settings.max_batch);
                let batch: Vec<Work> = self.deferred.drain(..n).collect();
                self.process(batch).await;
                continue;
            }
            if self.next_deadline() <= now {
                self.on_timers(now).await;
                continue;
            }
            if self.changed {
                self.changed = false;
                self.refresh().await;
                continue;
            }
            let deadline = self.next_deadline();
            let sleep_fut = match &mut sleep {
                Some((d, s)) if *d == deadline => s,
                _ => {
                    let s = self.clock.sleep_until(deadline);
                    &mut sleep.insert((deadline, s)).1
                }
            };
            let event = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => Event::Shutdown,
                msg = self.rx.recv() => match msg {
                    Some(first) => {
                        let mut batch = vec![first];
                        while batch.len() < self.settings.max_batch {
                            match self.rx.try_recv() {
                                Ok(m) => batch.push(m),
                                Err(_) => break,
                            }
                        }
                        Event::Batch(batch)
                    }
                    None => Event::Closed,
                },
                () = sleep_fut => Event::Timer,
                ok = changed(&mut self.change_rx) => {
                    if !ok {
                        self.change_rx = None;
                    }
                    Event::Changed
                }
            };
            match event {
                Event::Shutdown | Event::Closed => break,
                Event::Batch(batch) => {
                    // No timer while busy: one sleeper at most, and only when idle.
                    sleep = None;
                    let batch = batch.into_iter().map(Work::from_envelope).collect();
                    self.process(batch).await;
                }
                Event::Timer => sleep = None,
                Event::Changed => self.changed = self.change_rx.is_some(),
            }
        }
        drop(sleep);
        self.finish();
    }

    /// Answers everyone `Aborted` and closes the channel.
    fn finish(mut self) {
        tracing::debug!("lease manager stopping");
        self.rx.close();
        for work in self.deferred.drain(..) {
            work.abort();
        }
        for (_, pending) in std::mem::take(&mut self.retries) {
            pending.abort();
        }
        for (_, state) in self.waiters.drain() {
            for reply in state.replies {
                let _ = reply.send(Err(Error::Aborted));
            }
        }
        while let Ok(env) = self.rx.try_recv() {
            abort_command(env.command);
        }
        self.slots.clear_all();
        self.waiter_count = 0;
        self.update_gauges();
        // This manager holds nothing any more as far as the process's gauges go.
        self.gauges.update(0, 0, 0);
        self.done.cancel();
    }

    // ----- timers -----

    async fn on_timers(&mut self, now: Timestamp) {
        // Retries that are due go to the front of the next batch.
        let later = self
            .retries
            .split_off(&(now.saturating_add(Duration::from_nanos(1)), 0));
        let due = std::mem::replace(&mut self.retries, later);
        for (_, pending) in due {
            self.deferred.push_back(Work::Op(pending));
        }
        // Leases whose waiters' timers are due: confirm with the store, then wake.
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
        if !expiring.is_empty() && !self.reread(&expiring).await {
            // Could not confirm: try again after a refresh interval.
            self.reread_waited_later(expiring);
        }
        let now = self.clock.now();
        if now >= self.next_refresh {
            self.next_refresh = now.saturating_add(self.settings.refresh_interval);
            if self.has_interest() {
                self.changed = false;
                self.refresh().await;
            }
        }
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
        let empty: Vec<Key> = self
            .waiters
            .iter()
            .filter(|(_, s)| s.replies.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in empty {
            if let Some(state) = self.waiters.remove(&key)
                && let Some(t) = state.timer
            {
                self.wait_timers.remove(&(t, key));
            }
        }
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

    /// Asks the store whether others changed it and, if so, re-reads the leases that have
    /// waiters or that this manager holds (those whose guaranteed window has ended: inside it,
    /// nobody else can have taken them).
    async fn refresh(&mut self) {
        if !self.has_interest() {
            return;
        }
        let polled = store_call!(self, poll_changes());
        match polled {
            None => self.abandoned = true,
            Some(Err(e)) => {
                // The change it would have reported may not be reported again.
                self.reread_owed = true;
                self.store_failure("polling for changes", &e);
            }
            Some(Ok(false)) if !self.reread_owed => {}
            Some(Ok(_)) => {
                let mut keys: Vec<Key> = self.waiters.keys().cloned().collect();
                let waited: HashSet<&Key> = self.waiters.keys().collect();
                let now = self.clock.now();
                let own: Vec<Key> = self
                    .view
                    .own_keys_past_window(now)
                    .into_iter()
                    .filter(|k| !waited.contains(k))
                    .collect();
                keys.extend(own);
                let mut read_all = true;
                for chunk in keys.chunks(1024) {
                    read_all &= self.reread(chunk).await;
                }
                // A change the store reported once is not reported again: a read that failed
                // is owed until one succeeds (or waiters of a lease unpinned elsewhere would
                // wait forever).
                self.reread_owed = !read_all;
            }
        }
    }

    /// Reads `keys` from the store and brings the view, waiters and token windows up to date.
    /// Returns whether the read succeeded.
    async fn reread(&mut self, keys: &[Key]) -> bool {
        let read = store_call!(self, leases(keys));
        match read {
            None => {
                self.abandoned = true;
                false
            }
            Some(Err(e)) => {
                self.store_failure("re-reading leases", &e);
                false
            }
            Some(Ok(snapshot)) => {
                let now = self.clock.now();
                for key in keys {
                    match snapshot.get(key) {
                        Some(info) if info_valid(info, now) => self.learn(key, info),
                        _ => self.forget(key),
                    }
                }
                true
            }
        }
    }

    /// Sets a timer a refresh interval from now for the waiters of `keys` that have none, so
    /// their lease is read again then (a read about them failed).
    fn reread_waited_later(&mut self, keys: Vec<Key>) {
        let retry_at = self
            .clock
            .now()
            .saturating_add(self.settings.refresh_interval);
        for key in keys {
            if let Some(state) = self.waiters.get_mut(&key)
                && state.timer.is_none()
            {
                state.timer = Some(retry_at);
                self.wait_timers.insert((retry_at, key));
            }
        }
    }

    fn store_failure(&self, what: &str, e: &Error) {
        Metrics::bump(&self.metrics.store_errors);
        export::store_error();
        tracing::warn!(error = %e, "lease store failed {what}");
        self.metrics.set_last_error(format!("{what}: {e}"));
    }

    // ----- the view -----

    /// Records a store snapshot of a held lease.
    fn learn(&mut self, key: &Key, info: &Info) {
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
    fn forget(&mut self, key: &Key) {
        if let Some(old) = self.view.remove(key)
            && old.own()
        {
            self.slots.publish(key, None);
        }
        self.wake(key);
    }

    /// Records this manager's successful claim or extend.
    fn record_own(&mut self, key: &Key, info: &Info, started: Timestamp, duration: Duration) {
        let mut own_until = started.saturating_add(duration);
        if let Some(old) = self.view.get(key)
            && old.own()
            && *old.holder == *info.holder
            && old.generation == info.generation
        {
            own_until = own_until.max(old.own_until);
        }
        // Never promise past what the store reports, unless the lease is pinned.
        if !info.pinned {
            own_until = own_until.min(info.expiry);
        }
        let own_until = own_until.max(Timestamp::from_nanos(1));
        if let Some(claims) = self.ambiguous_claims.get_mut(key) {
            claims.retain(|c| *c.holder != *info.holder);
            if claims.is_empty() {
                self.ambiguous_claims.remove(key);
            }
        }
        let holder = self.view.intern(&info.holder);
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
        self.slots.publish(
            key,
            Some(Window {
                holder,
                generation: info.generation,
                until: own_until,
            }),
        );
        self.reschedule(key);
    }

    /// Sets the expiry timer of `key`'s waiters from the view.
    fn reschedule(&mut self, key: &Key) {
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

    fn add_waiter(&mut self, key: Key, reply: Reply<()>) {
        self.waiter_count += 1;
        self.waiters
            .entry(key.clone())
            .or_default()
            .replies
            .push(reply);
        self.reschedule(&key);
    }

    // ----- batches -----

    /// Handles one batch: claims, extends and revokes go to the store as one `apply`; checks
    /// and waits that need the store share one `leases` read; the rest follow one by one.
    async fn process(&mut self, batch: Vec<Work>) {
        let now = self.clock.now();
        let mut ops = Vec::new();
        let mut pendings = Vec::new();
        let mut in_batch: HashSet<Key> = HashSet::new();
        let mut reads: Vec<(Command, Span)> = Vec::new();
        let mut singles: Vec<(Command, Span)> = Vec::new();
        for work in batch {
            match work {
                Work::Op(mut pending) => {
                    if pending.caller_gone() {
                        self.drop_abandoned(&pending);
                        continue;
                    }
                    if in_batch.contains(&pending.key) {
                        // Decide it after this batch, from what the batch leaves behind.
                        self.deferred.push_back(Work::Op(pending));
                        continue;
                    }
                    if let Some(op) = self.decide(pending.key.clone(), &pending, now) {
                        pending.extend |= matches!(op, Op::Extend { .. });
                        in_batch.insert(pending.key.clone());
                        ops.push(op);
                        pendings.push(pending);
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
                        Metrics::bump(&self.metrics.checks_via_worker);
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
                            _ => reads.push((
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
                            _ => reads.push((Command::Wait { key, reply }, span)),
                        }
                    }
                    other => singles.push((other, span)),
                },
            }
        }
        if !ops.is_empty() {
            self.apply(ops, pendings).await;
        }
        if !reads.is_empty() {
            self.serve_reads(reads).await;
        }
        for (command, span) in singles {
            self.serve_single(command).instrument(span).await;
        }
    }

    /// The store op for `pending`, or `None` when the view answers it without the store.
    fn decide(&mut self, key: Key, pending: &Pending, now: Timestamp) -> Option<Op> {
        match &pending.kind {
            PendingKind::Claim { request, .. } => match self.view.get(&key) {
                Some(e) if e.valid(now) && *e.holder != *request.holder => None,
                Some(e) if e.valid(now) => Some(Op::Extend {
                    key,
                    request: request.clone(),
                }),
                // The holding this extend was for has gone (revoked, lapsed): only the store
                // may say so, and it answers `Invalid`; never a claim nobody asked for.
                _ if pending.extend => Some(Op::Extend {
                    key,
                    request: request.clone(),
                }),
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
                // The holder gives the lease up: stop vouching for it from memory at once.
                if entry.is_some_and(|e| e.own() && *e.holder == **holder) {
                    self.slots.publish(&key, None);
                    if let Some(mut e) = self.view.get(&key).cloned() {
                        e.own_until = Timestamp::ZERO;
                        self.view.insert(&key, e);
                    }
                }
                Some(Op::Revoke {
                    key,
                    holder: holder.clone(),
                })
            }
        }
    }

    /// Answers a request the view decided without a store call.
    fn answer_undecided(&mut self, pending: Pending) {
        let _enter = pending.span.enter();
        match pending.kind {
            PendingKind::Claim { reply, .. } => {
                tracing::debug!(key = %pending.key, "claim denied from the view");
                Metrics::bump(&self.metrics.denials);
                export::claim(&pending.key.namespace, outcome::DENIED);
                let _ = reply.send(Err(Error::ClaimDenied));
            }
            PendingKind::Revoke { reply, .. } => {
                tracing::debug!(key = %pending.key, "revoke: not held");
                let _ = reply.send(Err(Error::NotHeld));
            }
        }
    }

    async fn apply(&mut self, ops: Vec<Op>, pendings: Vec<Pending>) {
        Metrics::bump(&self.metrics.batches);
        self.metrics
            .batched_ops
            .fetch_add(ops.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let n = ops.len();
        let results = store_call!(self, apply(ops));
        let Some(mut results) = results else {
            self.abandoned = true;
            for p in pendings {
                p.abort();
            }
            return;
        };
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
        for (pending, result) in pendings.into_iter().zip(results) {
            if let Some(key) = self.complete(pending, result) {
                reread.push(key);
            }
        }
        let fresh = reread.is_empty() || self.reread(&reread).await;
        let now = self.clock.now();
        for pending in std::mem::take(&mut self.unconfirmed_denials) {
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
                self.schedule_retry(pending);
                continue;
            }
            let PendingKind::Claim { reply, .. } = pending.kind else {
                pending.abort();
                continue;
            };
            if fresh && !holds {
                Metrics::bump(&self.metrics.denials);
                export::claim(&pending.key.namespace, outcome::DENIED);
                let _ = reply.send(Err(Error::ClaimDenied));
            } else {
                // The holder holds it (an earlier claim took effect unseen), or we cannot
                // tell: not a denial, and no window to vouch for either.
                Metrics::bump(&self.metrics.timeouts);
                export::timeout(&pending.key.namespace);
                export::claim(&pending.key.namespace, outcome::TIMEOUT);
                let _ = reply.send(Err(Error::Timeout));
            }
        }
        for pending in std::mem::take(&mut self.redecide) {
            if pending.caller_gone() {
                self.drop_abandoned(&pending);
                continue;
            }
            let PendingKind::Revoke { holder, .. } = &pending.kind else {
                self.schedule_retry(pending);
                continue;
            };
            let held = self
                .view
                .get(&pending.key)
                .is_some_and(|e| e.valid(now) && *e.holder == **holder);
            if held {
                self.schedule_retry(pending);
            } else {
                self.answer_undecided(pending);
            }
        }
    }

    /// Forgets a request whose caller has gone, without acting on it.
    fn drop_abandoned(&self, pending: &Pending) {
        Metrics::bump(&self.metrics.abandoned);
        tracing::debug!(parent: &pending.span, key = %pending.key, attempts = pending.attempts, "caller gone: request dropped");
    }

    /// Puts `pending` on a retry timer, after the jittered backoff for its attempts so far.
    /// A request whose caller has gone is dropped instead.
    fn schedule_retry(&mut self, pending: Pending) {
        if pending.caller_gone() {
            self.drop_abandoned(&pending);
            return;
        }
        let delay = self.backoff(pending.attempts);
        let deadline = self.clock.now().saturating_add(delay);
        Metrics::bump(&self.metrics.retries);
        export::retry(&pending.key.namespace);
        tracing::debug!(parent: &pending.span, key = %pending.key, attempts = pending.attempts, ?delay, "retrying");
        self.retry_seq += 1;
        self.retries.insert((deadline, self.retry_seq), pending);
    }

    /// Handles one op's result; returns the key to re-read when the op will be retried.
    fn complete(&mut self, pending: Pending, result: Result<Outcome>) -> Option<Key> {
        let span = pending.span.clone();
        let _enter = span.enter();
        let attempts = pending.attempts + 1;
        if let Err(e) = &result {
            self.note_ambiguous_claim(&pending, e);
        }
        match result {
            Ok(Outcome::Claimed(info) | Outcome::Extended(info)) => {
                let claimed = matches!(&pending.kind, PendingKind::Claim { .. });
                match pending.kind {
                    PendingKind::Claim {
                        request,
                        started,
                        reply,
                    } => {
                        let renewed = self.view.get(&pending.key).is_some_and(|e| {
                            *e.holder == *info.holder && e.generation == info.generation
                        });
                        if renewed {
                            Metrics::bump(&self.metrics.extends);
                            export::claim(&pending.key.namespace, outcome::EXTENDED);
                        } else {
                            Metrics::bump(&self.metrics.claims);
                            export::claim(&pending.key.namespace, outcome::CLAIMED);
                        }
                        tracing::debug!(key = %pending.key, generation = %info.generation, extend = renewed, "claimed");
                        self.record_own(&pending.key, &info, started, request.duration);
                        let _ = reply.send(Ok(info));
                    }
                    PendingKind::Revoke { reply, .. } => {
                        debug_assert!(!claimed);
                        let _ = reply.send(Err(Error::store_msg(
                            "lease store answered a revoke with a claim",
                        )));
                    }
                }
                None
            }
            Ok(Outcome::Revoked) => {
                match pending.kind {
                    PendingKind::Revoke { reply, .. } => {
                        Metrics::bump(&self.metrics.revokes);
                        export::revoke(&pending.key.namespace);
                        tracing::debug!(key = %pending.key, "revoked");
                        self.forget(&pending.key);
                        let _ = reply.send(Ok(()));
                    }
                    PendingKind::Claim { reply, .. } => {
                        let _ = reply.send(Err(Error::store_msg(
                            "lease store answered a claim with a revoke",
                        )));
                    }
                }
                None
            }
            Err(e) if e.is_held() => {
                match pending.kind {
                    PendingKind::Claim { reply, .. } => {
                        Metrics::bump(&self.metrics.denials);
                        export::claim(&pending.key.namespace, outcome::DENIED);
                        tracing::debug!(key = %pending.key, "claim denied: held");
                        let _ = reply.send(Err(Error::ClaimDenied));
                    }
                    PendingKind::Revoke { reply, .. } => {
                        let _ = reply.send(Err(Error::NotHeld));
                    }
                }
                None
            }
            Err(e) if e.is_not_held() => {
                // Someone else holds it: a view that says otherwise is stale.
                if let PendingKind::Revoke { holder, .. } = &pending.kind
                    && let Some(mut en) = self.view.get(&pending.key).cloned()
                    && *en.holder == **holder
                {
                    en.own_until = Timestamp::ZERO;
                    self.view.insert(&pending.key, en);
                    self.slots.publish(&pending.key, None);
                }
                self.fail(pending, e);
                None
            }
            Err(e) if e.is_invalid() && pending.extend => {
                // The holding this extend was for is gone (absent, expired, another's), or the
                // store saw a conflicting write: the re-read tells which. Either way the retry,
                // if any, stays an extend.
                tracing::debug!(key = %pending.key, attempts, "extend invalid");
                let key = pending.key.clone();
                self.unconfirmed_denials.push(Pending {
                    attempts,
                    ..pending
                });
                Some(key)
            }
            Err(e) if e.is_timeout() || e.is_invalid() => {
                if attempts >= self.settings.retry.attempts {
                    let timeout = e.is_timeout();
                    tracing::debug!(key = %pending.key, attempts, error = %e, "giving up");
                    if !timeout && matches!(pending.kind, PendingKind::Claim { .. }) {
                        // A claim is also Invalid when its own holder already holds the lease
                        // (an earlier claim took effect but was answered Timeout): deny it
                        // only once a fresh read shows the holder does not hold it.
                        let key = pending.key.clone();
                        self.unconfirmed_denials.push(Pending {
                            attempts,
                            ..pending
                        });
                        return Some(key);
                    }
                    match pending.kind {
                        PendingKind::Claim { reply, .. } => {
                            if timeout {
                                Metrics::bump(&self.metrics.timeouts);
                                export::timeout(&pending.key.namespace);
                                export::claim(&pending.key.namespace, outcome::TIMEOUT);
                                let _ = reply.send(Err(Error::Timeout));
                            } else {
                                Metrics::bump(&self.metrics.denials);
                                export::claim(&pending.key.namespace, outcome::DENIED);
                                let _ = reply.send(Err(Error::ClaimDenied));
                            }
                        }
                        PendingKind::Revoke { reply, .. } => {
                            if timeout {
                                Metrics::bump(&self.metrics.timeouts);
                                export::timeout(&pending.key.namespace);
                                let _ = reply.send(Err(Error::Timeout));
                            } else {
                                let _ = reply.send(Err(Error::NotHeld));
                            }
                        }
                    }
                    return None;
                }
                tracing::debug!(key = %pending.key, attempts, error = %e, "store said no");
                let key = pending.key.clone();
                let pending = Pending {
                    attempts,
                    ..pending
                };
                if e.is_invalid() && matches!(pending.kind, PendingKind::Revoke { .. }) {
                    // Absent or expired, probably: the re-read decides between NotHeld now
                    // and a retry.
                    self.redecide.push(pending);
                } else {
                    self.schedule_retry(pending);
                }
                Some(key)
            }
            Err(e) => {
                self.store_failure("applying a lease operation", &e);
                self.fail(pending, e);
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

    fn fail(&self, pending: Pending, e: Error) {
        match pending.kind {
            PendingKind::Claim { reply, .. } => {
                export::claim(&pending.key.namespace, outcome::ERROR);
                let _ = reply.send(Err(e));
            }
            PendingKind::Revoke { reply, .. } => {
                let _ = reply.send(Err(e));
            }
        }
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

    /// Checks and waits that need the store: one read for all of them.
    async fn serve_reads(&mut self, reads: Vec<(Command, Span)>) {
        let mut keys: Vec<Key> = Vec::new();
        let mut seen = HashSet::new();
        for (command, _) in &reads {
            if let Command::Check { key, .. } | Command::Wait { key, .. } = command
                && seen.insert(key.clone())
            {
                keys.push(key.clone());
            }
        }
        let read = store_call!(self, leases(&keys));
        let snapshot = match read {
            None => {
                self.abandoned = true;
                for (command, _) in reads {
                    abort_command(command);
                }
                return;
            }
            Some(Err(e)) => {
                if !is_lease_outcome(&e) {
                    self.store_failure("reading leases", &e);
                }
                for (command, _) in reads {
                    match command {
                        Command::Check { reply, .. } => {
                            let _ = reply.send(Err(dup_error(&e)));
                        }
                        Command::Wait { reply, .. } => {
                            let _ = reply.send(Err(dup_error(&e)));
                        }
                        other => abort_command(other),
                    }
                }
                return;
            }
            Some(Ok(snapshot)) => snapshot,
        };
        let now = self.clock.now();
        for key in &keys {
            match snapshot.get(key) {
                Some(info) if info_valid(info, now) => self.learn(key, info),
                _ => self.forget(key),
            }
        }
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
                other => abort_command(other),
            }
        }
    }

    /// Pins, unpins and group reads, one store call each.
    async fn serve_single(&mut self, command: Command) {
        match command {
            Command::Pin { key, entity, reply } => {
                let out = store_call!(self, pin_lease(&key, &entity));
                let result = self.settle(out, "pinning");
                if result.is_ok()
                    && let Some(mut e) = self.view.get(&key).cloned()
                {
                    e.pinned = true;
                    self.view.insert(&key, e);
                    self.reschedule(&key);
                }
                let _ = reply.send(result);
            }
            Command::Unpin { key, entity, reply } => {
                let out = store_call!(self, unpin_lease(&key, &entity));
                let result = self.settle(out, "unpinning");
                if result.is_ok()
                    && (self.view.get(&key).is_some() || self.waiters.contains_key(&key))
                {
                    // Other entities may still pin it: ask the store, then reschedule expiry.
                    // If that read fails, the waiters (whose pinned lease had no expiry
                    // timer) would wait forever: read again a refresh interval later.
                    if !self.reread(std::slice::from_ref(&key)).await {
                        self.reread_waited_later(vec![key]);
                    }
                }
                let _ = reply.send(result);
            }
            Command::Pinned {
                namespace,
                model,
                reply,
            } => {
                let out = store_call!(self, pinned());
                let result = self.settle(out, "reading pins").map(|all| {
                    all.into_iter()
                        .filter(|(k, _)| k.namespace == namespace && k.model == model)
                        .collect()
                });
                let _ = reply.send(result);
            }
            Command::LeaseGroup {
                namespace,
                model,
                reply,
            } => {
                let out = store_call!(self, lease_group(&namespace, &model));
                let result = self.settle(out, "reading a lease group");
                if let Ok(group) = &result {
                    let now = self.clock.now();
                    for key in self.view.keys_in(&namespace, &model) {
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
                let _ = reply.send(result);
            }
            other => abort_command(other),
        }
    }

    /// The result of one guarded store call: a store failure is reported, an abandoned call
    /// is `Aborted`.
    fn settle<T>(&mut self, out: Option<Result<T>>, what: &str) -> Result<T> {
        match out {
            None => {
                self.abandoned = true;
                Err(Error::Aborted)
            }
            Some(Err(e)) => {
                if !is_lease_outcome(&e) && !e.is_validation() {
                    self.store_failure(what, &e);
                }
                Err(e)
            }
            Some(Ok(v)) => Ok(v),
        }
    }
}
