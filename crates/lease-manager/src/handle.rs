//! The handles: [`Manager`] (cloneable; starts and stops the worker, hands out facades), the
//! five facades bound to a namespace and model, and [`ManagerToken`] with its in-memory fast
//! path.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use lease_core::{
    CancellationToken, Checker, Claimer, Clock, Error, Generation, Info, Key, Pinner, Reader,
    Request, Result, Revoker, Secretary, Timestamp, Token, validate_metadata, validate_string,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::ManagerConfig;
use crate::error::ManagerError;
use crate::metric::report::{Counters, Report};
use crate::window::{Slot, SlotTable};
use crate::worker::{Command, Envelope, Parts, Reply, Settings, Worker};

/// What every handle shares. Dropping the last one stops the worker (the drop guard).
struct Shared {
    tx: mpsc::Sender<Envelope>,
    clock: Arc<dyn Clock>,
    secretaries: BTreeMap<String, Arc<dyn Secretary>>,
    default_secretary: Option<Arc<dyn Secretary>>,
    slots: Arc<SlotTable>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    done: CancellationToken,
    join: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: nobody can be answered any more, so stop the worker.
        self.shutdown.cancel();
    }
}

impl Shared {
    /// Sends `command` (built around a fresh reply channel) and waits for the answer.
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        if self.shutdown.is_cancelled() {
            return Err(Error::Aborted);
        }
        let (reply, answer) = oneshot::channel();
        let _outstanding = Outstanding::new(&self.counters);
        let envelope = Envelope {
            command: make(reply),
            span: tracing::Span::current(),
        };
        self.tx.send(envelope).await.map_err(|_| Error::Aborted)?;
        // A dropped reply means the worker stopped without answering.
        answer.await.unwrap_or(Err(Error::Aborted))
    }

    fn secretary(&self, namespace: &str) -> std::result::Result<Arc<dyn Secretary>, ManagerError> {
        self.secretaries
            .get(namespace)
            .or(self.default_secretary.as_ref())
            .cloned()
            .ok_or_else(|| ManagerError::UnknownNamespace {
                namespace: namespace.to_owned(),
            })
    }
}

/// Counts a request as outstanding while it lives.
struct Outstanding<'a>(&'a Counters);

impl<'a> Outstanding<'a> {
    fn new(counters: &'a Counters) -> Self {
        counters.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(counters)
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running lease manager: a cloneable handle to the one worker task that owns the store.
///
/// It implements [`lease_core::Facades`], handing out the facades for a namespace and model;
/// [`Manager::token`] gives the concrete [`ManagerToken`] with its synchronous fast path.
///
/// A claim by the holder of a lease it holds (as far as the manager knows) is sent to the
/// store as an extend, and stays an extend on every retry: if the holding has gone meanwhile
/// (revoked, expired, taken by another), the claim is answered
/// [`Error::ClaimDenied`](lease_core::Error::ClaimDenied) once a store read confirms the holder
/// does not hold it; it is never turned into a new claim the caller did not ask for. A claim
/// or revoke whose caller has gone (its future was dropped: cancelled, or timed out) is dropped
/// while it waits in the queue or for a retry, never acted on later ([`Report::abandoned`]
/// counts them). One already sent to the store when its caller goes completes there.
///
/// The worker stops when [`Manager::stop`] is called or when the last handle (this type, a
/// facade or a token) is dropped. Either way the store call in flight may finish within the
/// shutdown grace period, then every pending caller is answered
/// [`Error::Aborted`](lease_core::Error::Aborted).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lease_core::{Claimer as _, DefaultSecretary, Facades as _, Request, Token as _};
/// use lease_manager::{Manager, ManagerConfig};
/// use lease_testkit::{FakeClock, InMemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lease_core::Result<()> {
/// let clock = FakeClock::new();
/// let store = InMemoryStore::new(clock.as_clock());
/// let config = ManagerConfig::new(store, clock.as_clock())
///     .with_secretary("my-app", Arc::new(DefaultSecretary));
/// let manager = Manager::start(config)?;
///
/// let claimer = manager.claimer("my-app", "prod")?;
/// let info = claimer.claim("nightly-backup", Request::new("host-1", Duration::from_secs(30))).await?;
/// assert_eq!(info.holder, "host-1");
///
/// // Another holder is denied while the lease is valid, without a store call.
/// let denied = claimer.claim("nightly-backup", Request::new("host-2", Duration::from_secs(30))).await;
/// assert!(denied.unwrap_err().is_claim_denied());
///
/// // The holder's token: its first check asks the worker, which shares the claim's
/// // guaranteed window with it; from then on it is answered from memory.
/// let token = manager.token("my-app", "prod", "nightly-backup", "host-1")?;
/// assert_eq!(token.check().await?, info.generation);
/// assert_eq!(token.check_now(), Some(info.generation));
///
/// manager.stop().await;
/// assert!(manager.worker_finished());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Manager {
    shared: Arc<Shared>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("namespaces", &self.shared.secretaries.keys())
            .field("stopped", &self.shared.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// Validates `config` and spawns the worker on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Config`] naming the bad field (see [`ManagerConfig::validate`]);
    /// [`ManagerError::NoRuntime`] outside a tokio runtime.
    pub fn start(config: ManagerConfig) -> std::result::Result<Manager, ManagerError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ManagerError::NoRuntime)?;
        let ManagerConfig {
            store,
            secretaries,
            default_secretary,
            clock,
            max_sleep,
            retry,
            refresh_interval,
            shutdown_grace,
            channel_capacity,
            max_batch,
            rng_seed,
        } = config;
        let (tx, rx) = mpsc::channel(channel_capacity);
        let shutdown = CancellationToken::new();
        let done = CancellationToken::new();
        let counters = Arc::new(Counters::new());
        let slots = Arc::new(SlotTable::default());
        let worker = Worker::new(Parts {
            store,
            clock: Arc::clone(&clock),
            rx,
            shutdown: shutdown.clone(),
            done: done.clone(),
            settings: Settings {
                max_sleep,
                retry,
                refresh_interval,
                shutdown_grace,
                max_batch,
            },
            counters: Arc::clone(&counters),
            slots: Arc::clone(&slots),
            seed: rng_seed,
        });
        let span = tracing::info_span!("lease_manager");
        let join = runtime.spawn(worker.run().instrument(span));
        Ok(Manager {
            shared: Arc::new(Shared {
                tx,
                clock,
                secretaries,
                default_secretary,
                slots,
                counters,
                shutdown,
                done,
                join: Mutex::new(Some(join)),
            }),
        })
    }

    /// Stops the worker: the store call in flight may finish within the shutdown grace period,
    /// then every pending caller is answered `Aborted`. Returns once the worker task has ended.
    /// Later requests on any handle are answered `Aborted`.
    pub async fn stop(&self) {
        self.shared.shutdown.cancel();
        let join = self
            .shared
            .join
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match join {
            Some(mut join) => {
                let _ = (&mut join).await;
                *self
                    .shared
                    .join
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(join);
            }
            None => self.shared.done.cancelled().await,
        }
    }

    /// Whether stopping has been asked for (by [`Manager::stop`] or by dropping every handle).
    pub fn is_stopping(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// Whether the worker task has ended: its join handle is finished (or, when the handle was
    /// taken with [`Manager::take_worker_handle`], the worker has answered everyone).
    pub fn worker_finished(&self) -> bool {
        match &*self
            .shared
            .join
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(join) => join.is_finished(),
            None => self.shared.done.is_cancelled(),
        }
    }

    /// Takes the worker task's join handle (once), e.g. to see the task end after the last
    /// handle is dropped.
    pub fn take_worker_handle(&self) -> Option<JoinHandle<()>> {
        self.shared
            .join
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// What the manager has done so far: counts, outstanding requests and store latencies.
    pub fn report(&self) -> Report {
        self.shared.counters.snapshot()
    }

    /// A token for `holder` on `lease` in `namespace`/`model`, as the concrete type with the
    /// synchronous [`ManagerToken::check_now`].
    ///
    /// # Errors
    ///
    /// As [`lease_core::Facades::checker`], plus the secretary's validation of `lease` and
    /// `holder`.
    pub fn token(
        &self,
        namespace: &str,
        model: &str,
        lease: &str,
        holder: &str,
    ) -> Result<ManagerToken> {
        let scope = self.scope(namespace, model)?;
        let key = scope.key(lease);
        scope.secretary.check_lease(&key)?;
        scope.secretary.check_holder(holder)?;
        Ok(scope.token(key, holder))
    }

    fn scope(&self, namespace: &str, model: &str) -> Result<Scope> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::Aborted);
        }
        let secretary = self.shared.secretary(namespace)?;
        validate_string("namespace", namespace)?;
        validate_string("model", model)?;
        Ok(Scope {
            shared: Arc::clone(&self.shared),
            namespace: namespace.to_owned(),
            model: model.to_owned(),
            secretary,
        })
    }
}

impl lease_core::Facades for Manager {
    fn checker(&self, namespace: &str, model: &str) -> Result<Arc<dyn Checker>> {
        Ok(Arc::new(self.scope(namespace, model)?))
    }
    fn claimer(&self, namespace: &str, model: &str) -> Result<Arc<dyn Claimer>> {
        Ok(Arc::new(self.scope(namespace, model)?))
    }
    fn revoker(&self, namespace: &str, model: &str) -> Result<Arc<dyn Revoker>> {
        Ok(Arc::new(self.scope(namespace, model)?))
    }
    fn pinner(&self, namespace: &str, model: &str) -> Result<Arc<dyn Pinner>> {
        Ok(Arc::new(self.scope(namespace, model)?))
    }
    fn reader(&self, namespace: &str, model: &str) -> Result<Arc<dyn Reader>> {
        Ok(Arc::new(self.scope(namespace, model)?))
    }
}

/// One namespace and model of a manager: every facade is this type.
struct Scope {
    shared: Arc<Shared>,
    namespace: String,
    model: String,
    secretary: Arc<dyn Secretary>,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("namespace", &self.namespace)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Scope {
    fn key(&self, lease: &str) -> Key {
        Key::new(&*self.namespace, &*self.model, lease)
    }

    fn token(&self, key: Key, holder: &str) -> ManagerToken {
        let slot = self.shared.slots.slot_for(&key);
        ManagerToken {
            shared: Arc::clone(&self.shared),
            secretary: Arc::clone(&self.secretary),
            slot,
            key,
            holder: holder.to_owned(),
        }
    }
}

impl Checker for Scope {
    fn token(&self, lease: &str, holder: &str) -> Box<dyn Token> {
        Box::new(Scope::token(self, self.key(lease), holder))
    }
}

#[async_trait]
impl Claimer for Scope {
    async fn claim(&self, lease: &str, request: Request) -> Result<Info> {
        let started: Timestamp = self.shared.clock.now();
        let key = self.key(lease);
        let span = tracing::debug_span!("lease_claim", key = %key, holder = %request.holder, duration = ?request.duration);
        async {
            // The secretary first: bad input never reaches the worker, let alone the store.
            self.secretary.check_lease(&key)?;
            self.secretary.check_holder(&request.holder)?;
            self.secretary.check_duration(request.duration)?;
            // Metadata over lease-core's limit would only be refused by the store, after the
            // request had waited in the queue and taken a place in a batch.
            if let Some(metadata) = &request.metadata {
                validate_metadata(metadata)?;
            }
            self.shared
                .call(|reply| Command::Claim {
                    key,
                    request,
                    started,
                    reply,
                })
                .await
        }
        .instrument(span)
        .await
    }

    async fn wait_until_expired(&self, lease: &str, cancel: &CancellationToken) -> Result<()> {
        let key = self.key(lease);
        let span = tracing::debug_span!("lease_wait", key = %key);
        async {
            self.secretary.check_lease(&key)?;
            if cancel.is_cancelled() {
                return Err(Error::WaitCancelled);
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => Err(Error::WaitCancelled),
                result = self.shared.call(|reply| Command::Wait { key, reply }) => result,
            }
        }
        .instrument(span)
        .await
    }
}

#[async_trait]
impl Revoker for Scope {
    async fn revoke(&self, lease: &str, holder: &str) -> Result<()> {
        let key = self.key(lease);
        let span = tracing::debug_span!("lease_revoke", key = %key, holder);
        async {
            self.secretary.check_lease(&key)?;
            self.secretary.check_holder(holder)?;
            let holder = holder.to_owned();
            self.shared
                .call(|reply| Command::Revoke { key, holder, reply })
                .await
        }
        .instrument(span)
        .await
    }
}

#[async_trait]
impl Pinner for Scope {
    async fn pin(&self, lease: &str, entity: &str) -> Result<()> {
        let key = self.key(lease);
        let span = tracing::debug_span!("lease_pin", key = %key, entity);
        async {
            self.secretary.check_lease(&key)?;
            validate_string("entity", entity)?;
            let entity = entity.to_owned();
            self.shared
                .call(|reply| Command::Pin { key, entity, reply })
                .await
        }
        .instrument(span)
        .await
    }

    async fn unpin(&self, lease: &str, entity: &str) -> Result<()> {
        let key = self.key(lease);
        let span = tracing::debug_span!("lease_unpin", key = %key, entity);
        async {
            self.secretary.check_lease(&key)?;
            validate_string("entity", entity)?;
            let entity = entity.to_owned();
            self.shared
                .call(|reply| Command::Unpin { key, entity, reply })
                .await
        }
        .instrument(span)
        .await
    }

    async fn pinned(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let span =
            tracing::debug_span!("lease_pinned", namespace = %self.namespace, model = %self.model);
        let pins = self
            .shared
            .call(|reply| Command::Pinned {
                namespace: self.namespace.clone(),
                model: self.model.clone(),
                reply,
            })
            .instrument(span)
            .await?;
        Ok(pins.into_iter().map(|(k, v)| (k.lease, v)).collect())
    }
}

#[async_trait]
impl Reader for Scope {
    async fn lease_infos(&self) -> Result<BTreeMap<String, Info>> {
        let span =
            tracing::debug_span!("lease_group", namespace = %self.namespace, model = %self.model);
        let group = self
            .shared
            .call(|reply| Command::LeaseGroup {
                namespace: self.namespace.clone(),
                model: self.model.clone(),
                reply,
            })
            .instrument(span)
            .await?;
        Ok(group.into_iter().map(|(k, i)| (k.lease, i)).collect())
    }
}

/// A manager's [`Token`]: whether `holder` holds `lease`, with the fencing generation.
///
/// [`Token::check`] is answered from memory while the holder's claim *through this manager* is
/// provably inside its guaranteed window (the claim call's start + its duration, on the
/// manager's clock), and otherwise by a store read through the worker. The window is cleared
/// as soon as the worker revokes the lease, learns it was lost, or stops; it also ends by
/// itself when the clock reaches it. So the memory path never says "held" when the claim's
/// guarantee does not hold.
///
/// [`ManagerToken::check_now`] is that memory path on its own, synchronous and lock-light (one
/// uncontended read lock and one clock read): use it on hot paths and fall back to
/// [`Token::check`] when it says `None`.
///
/// The guarantee is the store's: nobody else can hold the lease inside the window. Only the
/// holder itself can end it early, so revoke through this manager; a revoke under the same
/// holder name through another manager or process is noticed at the next refresh after the
/// window ends, not before.
///
/// A check answered by a store read says "held" only inside a window this process can vouch
/// for, even when the store reports a later expiry (on Kubernetes a write this process saw
/// late expires late here, but not for the processes that saw it early):
///
/// - for a holding claimed or extended through this manager, until that call's start + its
///   duration;
/// - for a claim through this manager whose outcome was unknown (it timed out, perhaps after
///   the write took effect) and which the store shows took effect, until that call's start +
///   its duration;
/// - for a pinned lease, while the store shows it pinned (it expires for no one);
/// - for a holding this manager has no record of (another process's, or this process's own
///   from before a restart), by the store's judgement: on SQLite the expiry every process
///   uses; on Kubernetes this process's observed expiry, which can be later than the holder's
///   own window by the delay with which this process saw the write. A holder that must not
///   act past its window after a restart claims (extends) the lease first: the call starts a
///   window this manager knows.
///
/// The worker shares windows only with keys that have a token, so leases nobody checks cost
/// nothing extra: a token made while a claim is already running learns its window on its first
/// [`Token::check`] (answered by the worker from memory, without a store read); a token made
/// before the claim sees it at once.
#[derive(Clone)]
pub struct ManagerToken {
    shared: Arc<Shared>,
    secretary: Arc<dyn Secretary>,
    slot: Arc<Slot>,
    key: Key,
    holder: String,
}

impl fmt::Debug for ManagerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerToken")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl ManagerToken {
    /// The lease this token is about.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The holder this token vouches for.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The fast path: `Some(generation)` when the holder provably holds the lease right now
    /// (its own claim through this manager is inside its guaranteed window); `None` when memory
    /// cannot prove it, which does *not* mean the lease is not held: ask [`Token::check`].
    pub fn check_now(&self) -> Option<Generation> {
        self.slot.held(&self.holder, || self.shared.clock.now())
    }

    /// Checks through the worker with a store read, never from memory (what a check costs
    /// without the fast path).
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`](lease_core::Error::NotHeld) when the store shows the holder does not
    /// hold the lease; validation errors for a bad lease or holder; store errors;
    /// [`Error::Aborted`](lease_core::Error::Aborted) when the manager has stopped.
    pub async fn check_store(&self) -> Result<Generation> {
        self.check_via_worker(true).await
    }

    async fn check_via_worker(&self, force_read: bool) -> Result<Generation> {
        self.secretary.check_lease(&self.key)?;
        self.secretary.check_holder(&self.holder)?;
        let span = tracing::debug_span!("lease_check", key = %self.key, holder = %self.holder);
        self.shared
            .call(|reply| Command::Check {
                key: self.key.clone(),
                holder: self.holder.clone(),
                force_read,
                reply,
            })
            .instrument(span)
            .await
    }
}

#[async_trait]
impl Token for ManagerToken {
    async fn check(&self) -> Result<Generation> {
        match self.check_now() {
            Some(generation) => Ok(generation),
            None => self.check_via_worker(false).await,
        }
    }
}
