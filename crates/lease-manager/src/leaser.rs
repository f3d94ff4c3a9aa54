//! [`ManagerLeaser`]: the auto-renewing [`Leaser`] over any
//! [`lease_core::Facades`], so every store call still goes through the manager's one worker.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{
    CancellationToken, Claimer, Clock, Error, Generation, LeaseGuard, LeaseInfo, Leaser,
    LeaserError, MAX_NAME_BYTES, PathKey, Reader, Request, Revoker, Timestamp, validate_string,
};
use lease_core::{LeaseHandle, validate_ttl};
use tokio::task::JoinHandle;

use crate::error::shortened;

/// Where a [`ManagerLeaser`]'s leases live and who holds them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaserConfig {
    /// The manager namespace of the leases (it needs a secretary in the manager).
    pub namespace: String,
    /// The model (scope) of the leases.
    pub model: String,
    /// Who this leaser is (a host or process name). Each acquisition holds its lease as
    /// `<identity>~<random>`, so two acquisitions never mistake each other for an extend;
    /// hence at most [`ManagerLeaser::MAX_IDENTITY_BYTES`] (1007) bytes.
    pub identity: String,
}

impl LeaserConfig {
    /// A configuration for `identity`'s leases in `namespace`/`model`.
    pub fn new(
        namespace: impl Into<String>,
        model: impl Into<String>,
        identity: impl Into<String>,
    ) -> LeaserConfig {
        LeaserConfig {
            namespace: namespace.into(),
            model: model.into(),
            identity: identity.into(),
        }
    }
}

/// The bytes [`holder_name`] adds to the identity: `~` and 16 hex digits.
const HOLDER_SUFFIX_BYTES: usize = 1 + 16;

/// A fresh holder name for one acquisition: `<identity>~<16 hex>`.
fn holder_name(identity: &str) -> String {
    format!("{identity}~{:016x}", fastrand::u64(..))
}

/// What this leaser knows about a lease it holds.
#[derive(Debug, Clone)]
struct Held {
    holder: String,
    generation: Generation,
    expiry: Timestamp,
    metadata: Option<serde_json::Value>,
    lost: CancellationToken,
}

struct Inner {
    claimer: Arc<dyn Claimer>,
    revoker: Arc<dyn Revoker>,
    reader: Arc<dyn Reader>,
    clock: Arc<dyn Clock>,
    config: LeaserConfig,
    held: Mutex<HashMap<PathKey, Held>>,
}

impl Inner {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<PathKey, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets `key` if `holder` still holds it here, and fires its lost token.
    fn forget(&self, key: &PathKey, holder: &str) {
        let mut held = self.held();
        if let Some(h) = held.get(key)
            && h.holder == holder
        {
            h.lost.cancel();
            held.remove(key);
            crate::metric::export::leaser_held(&self.config.namespace, false);
        }
    }
}

/// The [`Leaser`] over a running manager.
///
/// [`Leaser::acquire_lease`] claims the lease named by the key's text form through the
/// manager's [`Claimer`] and spawns a renewal task that, on the manager's clock:
///
/// - renews every `ttl / 3` (an extend that keeps the fencing generation);
/// - after a failed renewal retries every `ttl / 9`;
/// - fires the lost token when renewals have failed until `ttl × 5/6` after the start of the
///   last successful one (so the holder stops at least `ttl / 6` before anyone else could
///   claim the lease), at once when the manager says the claim is denied or the lease turns out
///   to have been re-claimed under a new generation, and when the manager stops.
///
/// Releasing (or dropping) the guard stops the task and revokes the lease; see [`LeaseGuard`].
///
/// [`Leaser::lease_info_value`] answers for the leases this leaser holds (holder, expiry,
/// generation and metadata). For a lease held by someone else it knows the holder only:
/// `lease_manager::Manager` does not expose other holders' expiry and metadata yet, so that
/// case is an error.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lease_core::{DefaultSecretary, Leaser as _, LeaserError, LeaserExt as _, PathKey};
/// use lease_manager::{Manager, ManagerConfig, ManagerLeaser, LeaserConfig};
/// use lease_testkit::{FakeClock, InMemoryStore};
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Reservation { deployment: String }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = FakeClock::new();
/// let manager = Manager::start(
///     ManagerConfig::new(InMemoryStore::new(clock.as_clock()), clock.as_clock())
///         .with_default_secretary(Arc::new(DefaultSecretary)),
/// )?;
/// let runner_a = ManagerLeaser::new(&manager, clock.as_clock(), LeaserConfig::new("leaser", "prod", "runner-a"))?;
/// let runner_b = ManagerLeaser::new(&manager, clock.as_clock(), LeaserConfig::new("leaser", "prod", "runner-b"))?;
///
/// let key = PathKey::system(["runner", "deployment-reservation", "d1"])?;
/// let meta = Reservation { deployment: "d1".into() };
/// let (guard, lost) = runner_a.acquire_lease_with(&key, Duration::from_secs(30), &meta).await?;
/// assert!(!lost.is_cancelled());
///
/// // Someone else holds it: a conflict.
/// let err = runner_b.acquire_lease(&key, Duration::from_secs(30), None).await.unwrap_err();
/// assert!(matches!(err, LeaserError::Conflict { .. }));
///
/// // Its holder reads the metadata back in its own type.
/// let info = runner_a.lease_info::<Reservation>(&key).await?.expect("held");
/// assert_eq!(info.metadata, Some(meta));
/// assert_eq!(info.generation, guard.generation());
///
/// guard.release().await?;
/// assert!(lost.is_cancelled());
/// let (again, _lost) = runner_b.acquire_lease(&key, Duration::from_secs(30), None).await?;
/// assert!(again.generation() > info.generation);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ManagerLeaser {
    inner: Arc<Inner>,
}

impl fmt::Debug for ManagerLeaser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerLeaser")
            .field("config", &self.inner.config)
            .field("held", &self.inner.held().len())
            .finish_non_exhaustive()
    }
}

impl ManagerLeaser {
    /// The longest identity, in bytes: lease-core's name limit
    /// ([`MAX_NAME_BYTES`](lease_core::MAX_NAME_BYTES), 1 KiB) less the 17 bytes of the
    /// `~<16 hex>` each holder name adds to it, so 1007.
    pub const MAX_IDENTITY_BYTES: usize = MAX_NAME_BYTES - HOLDER_SUFFIX_BYTES;

    /// A leaser over `manager`'s facades for `config.namespace`/`config.model`. `clock` must be
    /// the manager's clock.
    ///
    /// # Errors
    ///
    /// [`Error::Validation`] for a bad `identity` (field `identity`), one longer than
    /// [`ManagerLeaser::MAX_IDENTITY_BYTES`] included, or as
    /// [`lease_core::Facades::claimer`] says; [`Error::Aborted`] when the manager has stopped.
    pub fn new(
        manager: &dyn lease_core::Facades,
        clock: Arc<dyn Clock>,
        config: LeaserConfig,
    ) -> Result<ManagerLeaser, Error> {
        validate_string("identity", &config.identity)?;
        if config.identity.len() > Self::MAX_IDENTITY_BYTES {
            // Every holder name is `<identity>~<16 hex>`: refused here, naming the identity,
            // rather than by every acquire, naming a holder the caller never chose.
            return Err(Error::validation(
                "identity",
                shortened(&config.identity),
                format!(
                    "is {} bytes long, over the limit of {} bytes for a leaser identity \
                     (a holder name, at most {MAX_NAME_BYTES} bytes, is the identity followed \
                     by {HOLDER_SUFFIX_BYTES} bytes of `~<random>`)",
                    config.identity.len(),
                    Self::MAX_IDENTITY_BYTES,
                ),
            ));
        }
        Ok(ManagerLeaser {
            inner: Arc::new(Inner {
                claimer: manager.claimer(&config.namespace, &config.model)?,
                revoker: manager.revoker(&config.namespace, &config.model)?,
                reader: manager.reader(&config.namespace, &config.model)?,
                clock,
                config,
                held: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LeaserConfig {
        &self.inner.config
    }
}

#[async_trait]
impl Leaser for ManagerLeaser {
    async fn acquire_lease(
        &self,
        key: &PathKey,
        ttl: Duration,
        metadata: Option<serde_json::Value>,
    ) -> Result<(LeaseGuard, CancellationToken), LeaserError> {
        validate_ttl(ttl)?;
        if self.inner.held().contains_key(key) {
            return Err(LeaserError::Conflict { key: key.clone() });
        }
        let holder = holder_name(&self.inner.config.identity);
        let mut request = Request::new(&*holder, ttl);
        if let Some(m) = &metadata {
            request = request.with_metadata(m.clone());
        }
        let started = self.inner.clock.now();
        let info = match self.inner.claimer.claim(&key.to_string(), request).await {
            Ok(info) => info,
            Err(e) if e.is_claim_denied() => {
                return Err(LeaserError::Conflict { key: key.clone() });
            }
            Err(e) => return Err(e.into()),
        };
        let lost = CancellationToken::new();
        let raced = {
            let mut held = self.inner.held();
            let raced = held.contains_key(key);
            if !raced {
                held.insert(
                    key.clone(),
                    Held {
                        holder: holder.clone(),
                        generation: info.generation,
                        expiry: info.expiry,
                        metadata: info.metadata.clone(),
                        lost: lost.clone(),
                    },
                );
                crate::metric::export::leaser_held(&self.inner.config.namespace, true);
            }
            raced
        };
        if raced {
            // A concurrent acquire through this leaser won: give ours back.
            let _ = self.inner.revoker.revoke(&key.to_string(), &holder).await;
            return Err(LeaserError::Conflict { key: key.clone() });
        }
        let stop = CancellationToken::new();
        let renewal = Renewal {
            inner: Arc::clone(&self.inner),
            key: key.clone(),
            holder: holder.clone(),
            generation: info.generation,
            ttl,
            stop: stop.clone(),
        };
        let task = tokio::spawn(renewal.run(started));
        tracing::debug!(%key, %holder, generation = %info.generation, "lease acquired");
        let handle = Handle {
            inner: Arc::clone(&self.inner),
            key: key.clone(),
            holder,
            stop,
            task: Some(task),
        };
        let guard = LeaseGuard::new(key.clone(), info.generation, lost.clone(), Box::new(handle));
        Ok((guard, lost))
    }

    async fn lease_info_value(&self, key: &PathKey) -> Result<Option<LeaseInfo>, LeaserError> {
        let mine = self.inner.held().get(key).cloned();
        if let Some(h) = mine
            && !h.lost.is_cancelled()
        {
            return Ok(Some(LeaseInfo {
                holder: h.holder,
                expiry: h.expiry,
                generation: h.generation,
                metadata: h.metadata,
            }));
        }
        let mut leases = self.inner.reader.lease_infos().await?;
        Ok(leases.remove(&key.to_string()).map(|info| LeaseInfo {
            holder: info.holder,
            expiry: info.expiry,
            generation: info.generation,
            metadata: info.metadata,
        }))
    }
}

/// The renewal task of one acquisition.
struct Renewal {
    inner: Arc<Inner>,
    key: PathKey,
    holder: String,
    generation: Generation,
    ttl: Duration,
    stop: CancellationToken,
}

impl Renewal {
    async fn run(self, started: Timestamp) {
        let clock = Arc::clone(&self.inner.clock);
        let interval = self.ttl / 3;
        let retry = self.ttl / 9;
        let give_up_after = self.ttl - self.ttl / 6;
        let name = self.key.to_string();
        let mut last_ok = started;
        let mut next_try = started.saturating_add(interval);
        loop {
            let deadline = last_ok.saturating_add(give_up_after);
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                () = clock.sleep_until(next_try.min(deadline)) => {}
            }
            let attempt = clock.now();
            if attempt >= deadline {
                return self.lose("renewals failed until the deadline");
            }
            let request = Request::new(&*self.holder, self.ttl);
            let result = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                () = clock.sleep_until(deadline) => {
                    return self.lose("a renewal was still pending at the deadline");
                }
                r = self.inner.claimer.claim(&name, request) => r,
            };
            match result {
                Ok(info) if info.generation == self.generation => {
                    last_ok = attempt;
                    next_try = attempt.saturating_add(interval);
                    if let Some(h) = self.inner.held().get_mut(&self.key)
                        && h.holder == self.holder
                    {
                        h.expiry = info.expiry;
                    }
                }
                Ok(info) => {
                    // The old claim had lapsed and this was a fresh one: not the lease the
                    // guard vouches for. Give the new one back and report the loss.
                    self.lose("the lease lapsed and was claimed anew");
                    let _ = self.inner.revoker.revoke(&name, &info.holder).await;
                    return;
                }
                Err(e) if e.is_claim_denied() || e.is_aborted() => {
                    return self.lose(&format!("renewal failed: {e}"));
                }
                Err(e) => {
                    tracing::warn!(key = %self.key, error = %e, "lease renewal failed; retrying");
                    next_try = attempt.saturating_add(retry);
                }
            }
        }
    }

    fn lose(&self, why: &str) {
        tracing::warn!(key = %self.key, holder = %self.holder, why, "lease lost");
        crate::metric::export::leaser_lost(&self.inner.config.namespace);
        self.inner.forget(&self.key, &self.holder);
    }
}

/// How a [`ManagerLeaser`]'s guard gives its lease up.
struct Handle {
    inner: Arc<Inner>,
    key: PathKey,
    holder: String,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Handle {
    async fn release_now(mut self) -> Result<(), LeaserError> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            // The renewal in flight (if any) was sent before the revoke below, so the worker
            // handles it first.
            let _ = task.await;
        }
        let still_held = self
            .inner
            .held()
            .get(&self.key)
            .is_some_and(|h| h.holder == self.holder && !h.lost.is_cancelled());
        // Stop the holder's work before the lease becomes available to others.
        self.inner.forget(&self.key, &self.holder);
        if !still_held {
            return Ok(());
        }
        match self
            .inner
            .revoker
            .revoke(&self.key.to_string(), &self.holder)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_held() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl LeaseHandle for Handle {
    async fn release(self: Box<Self>) -> Result<(), LeaserError> {
        tracing::debug!(key = %self.key, holder = %self.holder, "releasing lease");
        (*self).release_now().await
    }

    fn release_in_background(self: Box<Self>) {
        self.stop.cancel();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = (*self).release_now().await {
                        tracing::warn!(error = %e, "releasing a dropped lease failed");
                    }
                });
            }
            Err(_) => {
                // No runtime to revoke from: the lease expires by itself.
                self.inner.forget(&self.key, &self.holder);
            }
        }
    }
}
