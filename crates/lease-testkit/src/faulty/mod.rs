//! [`FaultyStore`]: a [`Store`] wrapper that injects timeouts (before the operation, or after it
//! took effect), `Invalid`, hard store errors and latency at configurable, seeded rates, so
//! property tests can run the manager and the APIs above it against an unreliable backing.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{Clock, Error, Info, Key, Op, Outcome, Request, Result, Store};
use tokio::sync::{Semaphore, watch};

/// What kind of store call a fault is rolled for; each kind can have its own [`FaultRates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// A claim: [`Store::claim_lease`] or an [`Op::Claim`] in a batch.
    Claim,
    /// An extend: [`Store::extend_lease`] or an [`Op::Extend`] in a batch.
    Extend,
    /// A revoke: [`Store::revoke_lease`] or an [`Op::Revoke`] in a batch.
    Revoke,
    /// A whole [`Store::apply`] batch, rolled once before its ops are rolled one by one: a
    /// failure here is the batch's transaction failing (every op gets the error).
    Batch,
    /// A snapshot: [`Store::leases`] or [`Store::lease_group`].
    Read,
    /// [`Store::pin_lease`] or [`Store::unpin_lease`].
    Pin,
    /// [`Store::pinned`].
    Pinned,
    /// [`Store::poll_changes`].
    Poll,
}

impl OpKind {
    /// Whether calls of this kind change the store (and so can fail *after* taking effect).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            OpKind::Claim | OpKind::Extend | OpKind::Revoke | OpKind::Batch | OpKind::Pin
        )
    }

    fn of(op: &Op) -> OpKind {
        match op {
            Op::Claim { .. } => OpKind::Claim,
            Op::Extend { .. } => OpKind::Extend,
            Op::Revoke { .. } => OpKind::Revoke,
        }
    }
}

/// How often each fault happens to one call, as probabilities in `[0, 1]`. The four failure
/// rates are exclusive outcomes of one roll, so their sum should not exceed 1 (any excess
/// makes the last ones rarer than asked); latency is rolled separately.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultRates {
    /// [`Error::Timeout`] before the inner store is called: nothing happened.
    pub timeout_before: f64,
    /// [`Error::Timeout`] *after* the inner store applied the call: the write happened but the
    /// caller cannot know (a commit acknowledged by the server, lost on the way back). The
    /// realistic, ambiguous case. For reads (which change nothing) it is the same as
    /// `timeout_before`.
    pub timeout_after: f64,
    /// [`Error::Invalid`] before the inner store is called, as a store that lost a race would
    /// say.
    pub invalid: f64,
    /// A hard [`Error::Store`] (not retryable) before the inner store is called.
    pub store_error: f64,
    /// The chance of a delay before the call, drawn uniformly up to
    /// [`FaultyStore::with_max_latency`] and slept on the injected clock.
    pub latency: f64,
}

impl FaultRates {
    /// No faults.
    pub const NONE: FaultRates = FaultRates {
        timeout_before: 0.0,
        timeout_after: 0.0,
        invalid: 0.0,
        store_error: 0.0,
        latency: 0.0,
    };

    /// Timeouts only: `rate` of calls time out, half before and half after taking effect.
    pub fn timeouts(rate: f64) -> FaultRates {
        FaultRates {
            timeout_before: rate / 2.0,
            timeout_after: rate / 2.0,
            ..FaultRates::NONE
        }
    }

    /// Every failure kind at `rate / 4` each (so `rate` of calls fail), and no latency.
    pub fn uniform(rate: f64) -> FaultRates {
        let each = rate / 4.0;
        FaultRates {
            timeout_before: each,
            timeout_after: each,
            invalid: each,
            store_error: each,
            latency: 0.0,
        }
    }

    /// The same rates with a `latency` chance of a delay.
    #[must_use]
    pub fn with_latency(mut self, latency: f64) -> FaultRates {
        self.latency = latency;
        self
    }
}

/// How many faults a [`FaultyStore`] has injected, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FaultCounts {
    /// Calls rolled for (each op of a batch counts, and so does the batch itself).
    pub calls: u64,
    /// Timeouts injected before the inner call.
    pub timeouts_before: u64,
    /// Timeouts injected after the inner call took effect.
    pub timeouts_after: u64,
    /// `Invalid` errors injected.
    pub invalid: u64,
    /// Hard store errors injected.
    pub store_errors: u64,
    /// Delays injected.
    pub delays: u64,
}

impl FaultCounts {
    /// Every failure injected (delays not included).
    pub fn failures(&self) -> u64 {
        self.timeouts_before + self.timeouts_after + self.invalid + self.store_errors
    }
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    timeouts_before: AtomicU64,
    timeouts_after: AtomicU64,
    invalid: AtomicU64,
    store_errors: AtomicU64,
    delays: AtomicU64,
}

/// A fault a test plans for one particular upcoming call, instead of leaving it to a roll
/// ([`FaultHandle::plan_ops`], [`FaultHandle::plan_reads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// [`Error::Timeout`] before the inner store is called: nothing happened.
    TimeoutBefore,
    /// [`Error::Timeout`] after the inner store applied the call (for a read, the same as
    /// `TimeoutBefore`).
    TimeoutAfter,
    /// [`Error::Invalid`] before the inner store is called.
    Invalid,
    /// A hard [`Error::Store`] before the inner store is called.
    StoreError,
}

impl From<Option<Fault>> for Roll {
    fn from(fault: Option<Fault>) -> Roll {
        match fault {
            None => Roll::None,
            Some(Fault::TimeoutBefore) => Roll::TimeoutBefore,
            Some(Fault::TimeoutAfter) => Roll::TimeoutAfter,
            Some(Fault::Invalid) => Roll::Invalid,
            Some(Fault::StoreError) => Roll::StoreError,
        }
    }
}

/// The planned faults not yet used, front first; `None` lets a call through.
#[derive(Debug, Default)]
struct Plans {
    ops: VecDeque<Option<Fault>>,
    reads: VecDeque<Option<Fault>>,
}

impl Counters {
    fn count_fault(&self, fault: Roll) {
        let counter = match fault {
            Roll::None => return,
            Roll::TimeoutBefore => &self.timeouts_before,
            Roll::TimeoutAfter => &self.timeouts_after,
            Roll::Invalid => &self.invalid,
            Roll::StoreError => &self.store_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Control {
    enabled: AtomicBool,
    counters: Counters,
    plans: Mutex<Plans>,
    /// Permits for batches when the store holds them ([`FaultyStore::with_held_batches`]).
    batch_permits: Semaphore,
}

impl Control {
    /// The planned fault of the next call of `kind`, if one was planned.
    fn planned(&self, kind: OpKind) -> Option<Option<Fault>> {
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        match kind {
            OpKind::Claim | OpKind::Extend | OpKind::Revoke => plans.ops.pop_front(),
            OpKind::Read => plans.reads.pop_front(),
            OpKind::Batch | OpKind::Pin | OpKind::Pinned | OpKind::Poll => None,
        }
    }

    fn plans(&self) -> MutexGuard<'_, Plans> {
        self.plans.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cloneable handle on a [`FaultyStore`] that stays with the test after the store itself has
/// been moved into a manager: read the counts, switch faults off and on.
#[derive(Debug, Clone)]
pub struct FaultHandle {
    control: Arc<Control>,
}

impl FaultHandle {
    /// The faults injected so far.
    pub fn counts(&self) -> FaultCounts {
        let c = &self.control.counters;
        FaultCounts {
            calls: c.calls.load(Ordering::Relaxed),
            timeouts_before: c.timeouts_before.load(Ordering::Relaxed),
            timeouts_after: c.timeouts_after.load(Ordering::Relaxed),
            invalid: c.invalid.load(Ordering::Relaxed),
            store_errors: c.store_errors.load(Ordering::Relaxed),
            delays: c.delays.load(Ordering::Relaxed),
        }
    }

    /// Switches fault injection on (the default) or off; while off, every call passes through
    /// unchanged and nothing is rolled.
    pub fn set_enabled(&self, enabled: bool) {
        self.control.enabled.store(enabled, Ordering::SeqCst);
    }

    /// Whether faults are being injected.
    pub fn is_enabled(&self) -> bool {
        self.control.enabled.load(Ordering::SeqCst)
    }

    /// Plans the faults of the next claims, extends and revokes, in the order they reach the
    /// store and whatever their kind (single calls or ops of a batch), one each, after those
    /// planned before: `None` lets that call through. A planned call is not rolled for, even
    /// while rolls are switched off ([`FaultHandle::set_enabled`]), and is counted as a roll.
    pub fn plan_ops(&self, faults: impl IntoIterator<Item = Option<Fault>>) {
        self.control.plans().ops.extend(faults);
    }

    /// Plans the faults of the next snapshot reads ([`Store::leases`] or
    /// [`Store::lease_group`]), as [`FaultHandle::plan_ops`] does for writes.
    pub fn plan_reads(&self, faults: impl IntoIterator<Item = Option<Fault>>) {
        self.control.plans().reads.extend(faults);
    }

    /// Lets `n` more batches through a store built
    /// [`with_held_batches`](FaultyStore::with_held_batches).
    pub fn release_batches(&self, n: usize) {
        self.control.batch_permits.add_permits(n);
    }
}

/// The fault one roll (or plan) decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roll {
    None,
    TimeoutBefore,
    TimeoutAfter,
    Invalid,
    StoreError,
}

/// A [`Store`] that wraps another and injects faults at configurable, per-kind rates.
///
/// Each call rolls, with a seeded random number generator (so a failing case reproduces from
/// its seed), for one of: a timeout before the inner call, a timeout after the inner call took
/// effect (the write happened, the caller got [`Error::Timeout`]), [`Error::Invalid`], a hard
/// [`Error::Store`], or no fault; and separately for a delay, slept on the injected clock (with
/// a [`FakeClock`](crate::FakeClock) the test must advance it). A batch ([`Store::apply`]) is
/// rolled once as a whole ([`OpKind::Batch`]: the transaction fails) and then op by op, each op
/// reaching the inner store as a batch of one, in order.
///
/// A test can also plan the faults of particular calls ([`FaultHandle::plan_ops`],
/// [`FaultHandle::plan_reads`]): a planned call takes its planned fault (or none) instead of a
/// roll. And it can hold every batch until it lets it through
/// ([`FaultyStore::with_held_batches`]).
///
/// Faults other than the "after" timeout leave the inner store untouched. Timeouts after the
/// fact are injected only into writes ([`OpKind::is_write`]); change polling is never made to
/// lose a change it consumed.
///
/// ```
/// use std::time::Duration;
/// use lease_core::{Key, Request, Store};
/// use lease_testkit::{FakeClock, FaultRates, FaultyStore, InMemoryStore, OpKind};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let clock = FakeClock::new();
/// let model = InMemoryStore::new(clock.as_clock());
/// // Every claim takes effect, then reports a timeout.
/// let mut store = FaultyStore::new(model.sibling(), clock.as_clock(), 7).with_rates_for(
///     OpKind::Claim,
///     FaultRates { timeout_after: 1.0, ..FaultRates::NONE },
/// );
/// let faults = store.handle();
///
/// let key = Key::new("ns", "model", "lease");
/// let err = store.claim_lease(&key, &Request::new("h", Duration::from_secs(5))).await;
/// assert!(err.unwrap_err().is_timeout());
/// assert_eq!(faults.counts().timeouts_after, 1);
///
/// // ... yet the claim happened, as the model shows.
/// let mut model = model;
/// assert_eq!(model.leases(&[key.clone()]).await.unwrap()[&key].holder, "h");
/// # }
/// ```
pub struct FaultyStore<S> {
    inner: S,
    clock: Arc<dyn Clock>,
    rng: fastrand::Rng,
    default_rates: FaultRates,
    rates: BTreeMap<OpKind, FaultRates>,
    max_latency: Duration,
    /// The text of injected hard errors; `None`: one naming the kind of call.
    store_error_message: Option<String>,
    control: Arc<Control>,
    /// Whether each batch waits for [`FaultHandle::release_batches`].
    hold_batches: bool,
    /// Whether [`Store::change_notifier`] answers `None` whatever the inner store offers.
    hide_notifier: bool,
}

impl<S: fmt::Debug> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .field("default_rates", &self.default_rates)
            .field("rates", &self.rates)
            .field("max_latency", &self.max_latency)
            .field("counts", &self.handle().counts())
            .finish_non_exhaustive()
    }
}

impl<S> FaultyStore<S> {
    /// Wraps `inner` with no faults configured yet; `clock` is what delays sleep on and `seed`
    /// seeds the rolls.
    pub fn new(inner: S, clock: Arc<dyn Clock>, seed: u64) -> FaultyStore<S> {
        FaultyStore {
            inner,
            clock,
            rng: fastrand::Rng::with_seed(seed),
            default_rates: FaultRates::NONE,
            rates: BTreeMap::new(),
            max_latency: Duration::from_millis(100),
            store_error_message: None,
            control: Arc::new(Control {
                enabled: AtomicBool::new(true),
                counters: Counters::default(),
                plans: Mutex::default(),
                batch_permits: Semaphore::new(0),
            }),
            hold_batches: false,
            hide_notifier: false,
        }
    }

    /// Sets the rates of every kind without rates of its own.
    #[must_use]
    pub fn with_rates(mut self, rates: FaultRates) -> Self {
        self.default_rates = rates;
        self
    }

    /// Sets the rates of one kind of call.
    #[must_use]
    pub fn with_rates_for(mut self, kind: OpKind, rates: FaultRates) -> Self {
        self.rates.insert(kind, rates);
        self
    }

    /// Sets the longest injected delay (100 ms unless set).
    #[must_use]
    pub fn with_max_latency(mut self, max_latency: Duration) -> Self {
        self.max_latency = max_latency;
        self
    }

    /// Makes every injected hard [`Error::Store`] say `message` (unless set, it is
    /// `injected store failure (KIND)`), for tests that check an error's text reaches the
    /// caller unchanged.
    #[must_use]
    pub fn with_store_error_message(mut self, message: impl Into<String>) -> Self {
        self.store_error_message = Some(message.into());
        self
    }

    /// Holds every [`Store::apply`] call, before anything is rolled, until the test lets it
    /// through with [`FaultHandle::release_batches`] (one permit per batch): a store call
    /// in flight for as long as the test wants.
    #[must_use]
    pub fn with_held_batches(mut self) -> Self {
        self.hold_batches = true;
        self
    }

    /// Offers no change notifier ([`Store::change_notifier`] is `None`), as a store that has
    /// none: its user learns of changes only by polling.
    #[must_use]
    pub fn without_change_notifier(mut self) -> Self {
        self.hide_notifier = true;
        self
    }

    /// A handle to read the counts and switch faults off, kept after the store is moved away.
    pub fn handle(&self) -> FaultHandle {
        FaultHandle {
            control: Arc::clone(&self.control),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped store, mutably (calls through it inject nothing).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The rates of `kind`.
    pub fn rates_for(&self, kind: OpKind) -> FaultRates {
        self.rates.get(&kind).copied().unwrap_or(self.default_rates)
    }

    /// The error a fault injects before the call (`None` for no fault or a fault after it).
    fn before(&self, fault: Roll, kind: OpKind) -> Option<Error> {
        match fault {
            Roll::None | Roll::TimeoutAfter => None,
            Roll::TimeoutBefore => Some(Error::Timeout),
            Roll::Invalid => Some(Error::Invalid),
            Roll::StoreError => Some(self.store_error(kind)),
        }
    }

    /// An injected hard error for a call of `kind`.
    fn store_error(&self, kind: OpKind) -> Error {
        match &self.store_error_message {
            Some(message) => Error::store_msg(message.clone()),
            None => Error::store_msg(format!("injected store failure ({kind:?})")),
        }
    }

    /// Rolls for a delay and a fault for one call of `kind`, and sleeps the delay.
    async fn roll(&mut self, kind: OpKind) -> Roll {
        if let Some(planned) = self.control.planned(kind) {
            let roll = match Roll::from(planned) {
                Roll::TimeoutAfter if !kind.is_write() => Roll::TimeoutBefore,
                roll => roll,
            };
            let c = &self.control.counters;
            c.calls.fetch_add(1, Ordering::Relaxed);
            c.count_fault(roll);
            return roll;
        }
        if !self.control.enabled.load(Ordering::SeqCst) {
            return Roll::None;
        }
        let rates = self.rates_for(kind);
        let (delay, draw) = {
            let rng = &mut self.rng;
            let delay = (rates.latency > 0.0 && rng.f64() < rates.latency).then(|| {
                let max = u64::try_from(self.max_latency.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.u64(0..=max))
            });
            (delay, rng.f64())
        };
        let c = &self.control.counters;
        c.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(delay) = delay {
            c.delays.fetch_add(1, Ordering::Relaxed);
            let until = self.clock.now().saturating_add(delay);
            self.clock.sleep_until(until).await;
        }
        let mut edge = 0.0;
        let mut pick = |rate: f64| {
            edge += rate.max(0.0);
            draw < edge
        };
        let fault = if pick(rates.timeout_before) {
            Roll::TimeoutBefore
        } else if pick(rates.timeout_after) {
            if kind.is_write() {
                Roll::TimeoutAfter
            } else {
                Roll::TimeoutBefore
            }
        } else if pick(rates.invalid) {
            Roll::Invalid
        } else if pick(rates.store_error) {
            Roll::StoreError
        } else {
            Roll::None
        };
        c.count_fault(fault);
        fault
    }
}

/// Runs one call of `kind` through the fault roll: `$call` is the inner call's future.
macro_rules! faulty {
    ($self:ident, $kind:expr, $call:expr) => {{
        let kind = $kind;
        let fault = $self.roll(kind).await;
        if let Some(err) = $self.before(fault, kind) {
            return Err(err);
        }
        let out = $call.await;
        if fault == Roll::TimeoutAfter {
            return Err(Error::Timeout);
        }
        out
    }};
}

#[async_trait]
impl<S: Store> Store for FaultyStore<S> {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        faulty!(self, OpKind::Claim, self.inner.claim_lease(key, request))
    }

    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        faulty!(self, OpKind::Extend, self.inner.extend_lease(key, request))
    }

    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()> {
        faulty!(self, OpKind::Revoke, self.inner.revoke_lease(key, holder))
    }

    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        faulty!(self, OpKind::Read, self.inner.leases(keys))
    }

    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>> {
        faulty!(self, OpKind::Read, self.inner.lease_group(namespace, model))
    }

    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        faulty!(self, OpKind::Pin, self.inner.pin_lease(key, entity))
    }

    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        faulty!(self, OpKind::Pin, self.inner.unpin_lease(key, entity))
    }

    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        faulty!(self, OpKind::Pinned, self.inner.pinned())
    }

    /// Rolls once for the batch, then for each op; each op reaches the inner store on its own,
    /// in order.
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        if self.hold_batches {
            // The semaphore is never closed, so this only fails if it were; then go on.
            if let Ok(permit) = self.control.batch_permits.acquire().await {
                permit.forget();
            }
        }
        let batch = self.roll(OpKind::Batch).await;
        if let Some(err) = self.before(batch, OpKind::Batch) {
            let kind = err.kind();
            return ops
                .iter()
                .map(|_| {
                    Err(match kind {
                        lease_core::ErrorKind::Timeout => Error::Timeout,
                        lease_core::ErrorKind::Invalid => Error::Invalid,
                        _ => self.store_error(OpKind::Batch),
                    })
                })
                .collect();
        }
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let kind = OpKind::of(&op);
            let fault = self.roll(kind).await;
            if let Some(err) = self.before(fault, kind) {
                results.push(Err(err));
                continue;
            }
            let result = self
                .inner
                .apply(vec![op])
                .await
                .pop()
                .unwrap_or_else(|| Err(Error::store_msg("inner store returned no result")));
            results.push(
                if fault == Roll::TimeoutAfter || batch == Roll::TimeoutAfter {
                    Err(Error::Timeout)
                } else {
                    result
                },
            );
        }
        results
    }

    async fn poll_changes(&mut self) -> Result<bool> {
        faulty!(self, OpKind::Poll, self.inner.poll_changes())
    }

    fn change_notifier(&mut self) -> Option<watch::Receiver<u64>> {
        if self.hide_notifier {
            return None;
        }
        self.inner.change_notifier()
    }
}

#[cfg(test)]
mod tests;
