//! [`LeaderElector`]: leader election in the style of client-go's `leaderelection` and the
//! seed's `LeaseLocker` (shared/seeds/003), over any store through the manager.
//!
//! Candidates claim one lease with their identity. The winner renews it every `retry_period`
//! and its lost token fires no later than `renew_deadline` after its last successful renewal,
//! which is before the lease (of `lease_duration`) could expire for anyone else. Followers
//! wake at once when the lease is released or expires (the manager's `wait_until_expired`),
//! with a jittered `retry_period` as the fallback.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lease_core::{
    CancellationToken, Claimer, Clock, Error, Generation, Reader, Request, Revoker, Timestamp,
    validate_string,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How far follower retries are spread: each wait is `retry_period × (1 + JITTER × r)` for a
/// uniform `r` in `[0, 1)`.
const JITTER: f64 = 0.2;

/// What can go wrong with leader election.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElectionError {
    /// An [`ElectionConfig`] field holds an unusable value.
    #[error("invalid election config {field} {value:?}: {reason}")]
    Config {
        /// The field, as named in [`ElectionConfig`].
        field: &'static str,
        /// The offending value, as text.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// [`LeaderElector::lock`] was called while this elector already leads.
    #[error("already leading lease {lease} (generation {generation})")]
    AlreadyLeading {
        /// The lease.
        lease: String,
        /// The generation of the current term.
        generation: Generation,
    },
    /// [`LeaderElector::check`]: this elector thinks it leads, but its last renewal is too old.
    #[error(
        "leader of {lease} last renewed {since:?} ago, more than the lease duration plus the \
         tolerance ({limit:?})"
    )]
    Unhealthy {
        /// The lease.
        lease: String,
        /// Time since the start of the last successful renewal.
        since: Duration,
        /// `lease_duration + max_tolerable_expired`.
        limit: Duration,
    },
    /// A lease operation failed (the manager stopped, validation, the store).
    #[error(transparent)]
    Lease(#[from] Error),
}

impl ElectionError {
    fn config(field: &'static str, value: impl fmt::Debug, reason: impl Into<String>) -> Self {
        ElectionError::Config {
            field,
            value: format!("{value:?}"),
            reason: reason.into(),
        }
    }
}

/// Everything a [`LeaderElector`] needs to know. [`ElectionConfig::new`] fills in client-go's
/// defaults; adjust the public fields or use the `with_*` methods, and
/// [`ElectionConfig::validate`] (which [`LeaderElector::new`] calls) checks them.
///
/// | field | default |
/// | --- | --- |
/// | `lease_duration` | 15 s |
/// | `renew_deadline` | 10 s |
/// | `retry_period` | 2 s |
/// | `unlock_with_retry_period` | 1 s |
/// | `release_on_cancel` | false |
/// | `use_observed_time` | true |
/// | `name` | the lease name |
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ElectionConfig {
    /// The manager namespace of the lease.
    pub namespace: String,
    /// The model (scope) of the lease.
    pub model: String,
    /// The lease the candidates contend for.
    pub lease: String,
    /// This candidate's identity: the lease holder while it leads. Unique per candidate.
    pub identity: String,
    /// A name for logs and errors (client-go's `Name`).
    pub name: String,
    /// How long a claim or renewal is good for: followers take over only once it has passed
    /// without a renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps retrying a failing renewal before it gives leadership up
    /// (and its lost token fires). Shorter than `lease_duration`, so it stops acting before
    /// anyone else can lead.
    pub renew_deadline: Duration,
    /// The leader renews this often; followers retry this often (jittered) when no expiry
    /// wakes them first.
    pub retry_period: Duration,
    /// The pause between attempts of [`LeaderElector::unlock_with_retry`].
    pub unlock_with_retry_period: Duration,
    /// Whether dropping the [`LeadershipGuard`] releases the lease at once (true) or just stops
    /// renewing it, so it expires after `lease_duration` (false). Only set it when all work
    /// under the lease has stopped before the guard is dropped.
    pub release_on_cancel: bool,
    /// Store-specific: whether expiry is judged by when this process observed the record
    /// change (true, the default, as DESIGN.md and client-go have it) rather than the record's
    /// own timestamps (false), which is only safe when the hosts' clocks agree. The elector
    /// cannot reconfigure the store the manager owns, so this is a statement of what the store
    /// was built with: on the Kubernetes store, `StoreOptions::trust_renew_time` must be its
    /// negation. The manager's own decisions always use its clock.
    pub use_observed_time: bool,
}

impl ElectionConfig {
    /// A configuration for `identity` contending for `lease` in `namespace`/`model`, with the
    /// defaults in the table above.
    pub fn new(
        namespace: impl Into<String>,
        model: impl Into<String>,
        lease: impl Into<String>,
        identity: impl Into<String>,
    ) -> ElectionConfig {
        let lease = lease.into();
        ElectionConfig {
            namespace: namespace.into(),
            model: model.into(),
            name: lease.clone(),
            lease,
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            unlock_with_retry_period: Duration::from_secs(1),
            release_on_cancel: false,
            use_observed_time: true,
        }
    }

    /// Sets the three timings.
    #[must_use]
    pub fn with_timing(
        mut self,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Self {
        self.lease_duration = lease_duration;
        self.renew_deadline = renew_deadline;
        self.retry_period = retry_period;
        self
    }

    /// Sets [`ElectionConfig::release_on_cancel`].
    #[must_use]
    pub fn with_release_on_cancel(mut self, release_on_cancel: bool) -> Self {
        self.release_on_cancel = release_on_cancel;
        self
    }

    /// Sets [`ElectionConfig::unlock_with_retry_period`].
    #[must_use]
    pub fn with_unlock_with_retry_period(mut self, period: Duration) -> Self {
        self.unlock_with_retry_period = period;
        self
    }

    /// Sets [`ElectionConfig::use_observed_time`].
    #[must_use]
    pub fn with_use_observed_time(mut self, use_observed_time: bool) -> Self {
        self.use_observed_time = use_observed_time;
        self
    }

    /// Sets [`ElectionConfig::name`].
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`ElectionError::Config`] naming the first bad field: an empty `name`; an `identity`,
    /// `lease`, `namespace` or `model` that is not a valid lease name; a zero duration;
    /// `renew_deadline` not shorter than `lease_duration`; `renew_deadline` not longer than
    /// 1.2 × `retry_period`.
    pub fn validate(&self) -> Result<(), ElectionError> {
        if self.name.is_empty() {
            return Err(ElectionError::config("name", &self.name, "is empty"));
        }
        for (field, value) in [
            ("identity", &self.identity),
            ("lease", &self.lease),
            ("namespace", &self.namespace),
            ("model", &self.model),
        ] {
            if let Err(Error::Validation { reason, .. }) = validate_string(field, value) {
                return Err(ElectionError::config(field, value, reason));
            }
        }
        for (field, value) in [
            ("lease_duration", self.lease_duration),
            ("renew_deadline", self.renew_deadline),
            ("retry_period", self.retry_period),
            ("unlock_with_retry_period", self.unlock_with_retry_period),
        ] {
            if value.is_zero() {
                return Err(ElectionError::config(
                    field,
                    value,
                    "must be greater than zero",
                ));
            }
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(ElectionError::config(
                "renew_deadline",
                self.renew_deadline,
                format!(
                    "must be shorter than lease_duration ({:?})",
                    self.lease_duration
                ),
            ));
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err(ElectionError::config(
                "renew_deadline",
                self.renew_deadline,
                format!(
                    "must be longer than 1.2 × retry_period ({:?})",
                    self.retry_period
                ),
            ));
        }
        Ok(())
    }
}

/// Who leads, as one elector sees it. Observe it with [`LeaderElector::leadership`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Leadership {
    /// Not leading, and no leader known (before the first attempt, or after losing or
    /// releasing leadership).
    Standby,
    /// Someone else leads.
    Following {
        /// The leader's identity.
        leader: String,
    },
    /// This elector leads, in the term of this fencing generation.
    Leading {
        /// The fencing generation of the term.
        generation: Generation,
    },
}

impl Leadership {
    /// Whether this is [`Leadership::Leading`].
    pub fn is_leading(&self) -> bool {
        matches!(self, Leadership::Leading { .. })
    }
}

/// The leader's record, as client-go's `LockRecord`: written as the lease's metadata (JSON) at
/// every renewal, and returned by [`LeaderElector::lock_record`].
///
/// Times are instants on the manager's clock. `lease_transitions` counts the claims of the
/// lease before this term (the fencing generation minus one, as stores number claims from 1).
/// Converting it to and from a Kubernetes `LeaseSpec` is the Kubernetes store's business.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockRecord {
    /// The leader's identity.
    pub holder_identity: String,
    /// The lease duration, in whole seconds (rounded up).
    pub lease_duration_seconds: u64,
    /// When this term's claim started.
    pub acquire_time: Timestamp,
    /// When the last successful renewal (or the claim) started.
    pub renew_time: Timestamp,
    /// Claims of the lease before this term.
    pub lease_transitions: u64,
}

type GenerationCallback = Arc<dyn Fn(Generation) + Send + Sync>;
type PlainCallback = Arc<dyn Fn() + Send + Sync>;
type LeaderCallback = Arc<dyn Fn(&str) + Send + Sync>;

/// Callbacks a [`LeaderElector`] calls as leadership changes (client-go's
/// `LeaderCallbacks`). They run on the elector's tasks, so they must return quickly.
#[derive(Clone, Default)]
pub struct Callbacks {
    started: Option<GenerationCallback>,
    stopped: Option<PlainCallback>,
    new_leader: Option<LeaderCallback>,
}

impl fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_started_leading", &self.started.is_some())
            .field("on_stopped_leading", &self.stopped.is_some())
            .field("on_new_leader", &self.new_leader.is_some())
            .finish()
    }
}

impl Callbacks {
    /// No callbacks.
    pub fn new() -> Callbacks {
        Callbacks::default()
    }

    /// Called with the term's generation when this elector starts leading.
    #[must_use]
    pub fn on_started_leading(mut self, f: impl Fn(Generation) + Send + Sync + 'static) -> Self {
        self.started = Some(Arc::new(f));
        self
    }

    /// Called when this elector stops leading (lost, released or dropped), after its lost
    /// token has fired.
    #[must_use]
    pub fn on_stopped_leading(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.stopped = Some(Arc::new(f));
        self
    }

    /// Called with the leader's identity whenever the observed leader changes (this elector
    /// included).
    #[must_use]
    pub fn on_new_leader(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.new_leader = Some(Arc::new(f));
        self
    }
}

/// One term of leadership.
struct Term {
    generation: Generation,
    acquire_time: Timestamp,
    renew_time: Timestamp,
    lost: CancellationToken,
    stop: CancellationToken,
}

struct Inner {
    config: ElectionConfig,
    claimer: Arc<dyn Claimer>,
    revoker: Arc<dyn Revoker>,
    reader: Arc<dyn Reader>,
    clock: Arc<dyn Clock>,
    callbacks: Callbacks,
    state: watch::Sender<Leadership>,
    term: Mutex<Option<Term>>,
    observed_leader: Mutex<Option<String>>,
    /// Revokes of dropped guards still running in the background (`release_on_cancel`). A
    /// revoke names the holder, not the term, so [`LeaderElector::lock`] waits for them:
    /// otherwise it could win a term that a late revoke then takes away.
    releasing: watch::Sender<usize>,
}

impl Inner {
    fn term(&self) -> std::sync::MutexGuard<'_, Option<Term>> {
        self.term.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn observe_leader(&self, leader: &str) {
        let changed = {
            let mut seen = self
                .observed_leader
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if seen.as_deref() == Some(leader) {
                false
            } else {
                *seen = Some(leader.to_owned());
                true
            }
        };
        if changed && let Some(f) = &self.callbacks.new_leader {
            f(leader);
        }
    }

    fn record(&self, term: &Term) -> LockRecord {
        LockRecord {
            holder_identity: self.config.identity.clone(),
            lease_duration_seconds: self.config.lease_duration.as_secs()
                + u64::from(self.config.lease_duration.subsec_nanos() > 0),
            acquire_time: term.acquire_time,
            renew_time: term.renew_time,
            lease_transitions: term.generation.get().saturating_sub(1),
        }
    }

    /// Ends the term of `generation`, if it is the current one: fires its lost token, then
    /// publishes `Standby` and calls `on_stopped_leading`. Returns whether it did.
    fn end_term(&self, generation: Generation, why: &str) -> bool {
        let term = {
            let mut slot = self.term();
            match &*slot {
                Some(t) if t.generation == generation => slot.take(),
                _ => None,
            }
        };
        let Some(term) = term else {
            return false;
        };
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, %generation, why, "stopped leading");
        term.stop.cancel();
        term.lost.cancel();
        crate::export::leader(&self.config.name, false);
        crate::export::leadership_change(&self.config.name, false);
        self.state.send_replace(Leadership::Standby);
        if let Some(f) = &self.callbacks.stopped {
            f();
        }
        true
    }

    fn jittered(&self, period: Duration) -> Duration {
        period.mul_f64(1.0 + JITTER * fastrand::f64())
    }
}

/// A leader-election candidate over any store, through a manager's facades.
///
/// - [`LeaderElector::lock`] waits until this candidate leads and returns a
///   [`LeadershipGuard`] with the term's fencing generation and lost token.
/// - While leading, a task renews the lease every `retry_period`. When renewals fail until
///   `renew_deadline` after the start of the last successful one (or the manager denies the
///   lease, or stops), the term ends: the lost token fires first, then the state becomes
///   `Standby` and `on_stopped_leading` runs. As `renew_deadline < lease_duration`, that is
///   before anyone else can claim the lease.
/// - Followers claim again at once when the manager wakes them (the lease was released or
///   expired) and otherwise every `retry_period`, jittered.
/// - [`LeaderElector::leadership`] is a `watch` of the current [`Leadership`];
///   [`Callbacks`] report the same changes.
/// - [`LeaderElector::check`] is a health probe; [`LeaderElector::unlock`] and
///   [`LeaderElector::unlock_with_retry`] give leadership up.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lease_core::DefaultSecretary;
/// use lease_manager::{Callbacks, ElectionConfig, LeaderElector, Leadership, Manager, ManagerConfig};
/// use lease_testkit::{FakeClock, InMemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = FakeClock::new();
/// let manager = Manager::start(
///     ManagerConfig::new(InMemoryStore::new(clock.as_clock()), clock.as_clock())
///         .with_default_secretary(Arc::new(DefaultSecretary)),
/// )?;
/// let config = ElectionConfig::new("election", "prod", "controller", "pod-a");
/// let elector = LeaderElector::new(&manager, clock.as_clock(), config, Callbacks::new())?;
///
/// let guard = elector.lock().await?;
/// assert_eq!(*elector.leadership().borrow(), Leadership::Leading { generation: guard.generation() });
/// elector.check(Duration::from_secs(20))?;
///
/// // Work until `guard.lost()` fires; then give leadership up.
/// assert!(!guard.lost().is_cancelled());
/// assert!(guard.release().await);
/// assert_eq!(*elector.leadership().borrow(), Leadership::Standby);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LeaderElector {
    inner: Arc<Inner>,
}

impl fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.inner.config)
            .field("leadership", &*self.inner.state.borrow())
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// A candidate over `manager`'s facades for `config.namespace`/`config.model`. `clock`
    /// must be the manager's clock.
    ///
    /// # Errors
    ///
    /// [`ElectionError::Config`] naming a bad field (see [`ElectionConfig::validate`]);
    /// [`ElectionError::Lease`] when the manager refuses the namespace or has stopped.
    pub fn new(
        manager: &dyn lease_core::Manager,
        clock: Arc<dyn Clock>,
        config: ElectionConfig,
        callbacks: Callbacks,
    ) -> Result<LeaderElector, ElectionError> {
        config.validate()?;
        let (state, _) = watch::channel(Leadership::Standby);
        crate::export::leader(&config.name, false);
        Ok(LeaderElector {
            inner: Arc::new(Inner {
                claimer: manager.claimer(&config.namespace, &config.model)?,
                revoker: manager.revoker(&config.namespace, &config.model)?,
                reader: manager.reader(&config.namespace, &config.model)?,
                config,
                clock,
                callbacks,
                state,
                term: Mutex::new(None),
                releasing: watch::channel(0).0,
                observed_leader: Mutex::new(None),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ElectionConfig {
        &self.inner.config
    }

    /// A receiver of the current [`Leadership`], updated on every change.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.inner.state.subscribe()
    }

    /// Whether this elector leads right now (its term has not ended).
    pub fn is_leader(&self) -> bool {
        self.inner.term().is_some()
    }

    /// The leader's record of the current term; `None` when not leading.
    pub fn lock_record(&self) -> Option<LockRecord> {
        self.inner.term().as_ref().map(|t| self.inner.record(t))
    }

    /// Waits until this elector leads, and returns the term's guard.
    ///
    /// Cancel it by dropping the future. A claim already sent to the manager may still
    /// succeed; nobody renews it then, so it expires after `lease_duration`.
    ///
    /// # Errors
    ///
    /// [`ElectionError::AlreadyLeading`] when this elector already leads;
    /// [`ElectionError::Lease`] with [`Error::Aborted`] when the manager stops, or a
    /// validation error when the manager's secretary refuses the lease or identity. Store
    /// failures are retried every `retry_period`, not returned.
    pub async fn lock(&self) -> Result<LeadershipGuard, ElectionError> {
        let inner = &self.inner;
        let config = &inner.config;
        if let Some(t) = &*inner.term() {
            return Err(ElectionError::AlreadyLeading {
                lease: config.lease.clone(),
                generation: t.generation,
            });
        }
        // A dropped guard's revoke still in flight would end the term this call may win.
        let _ = inner.releasing.subscribe().wait_for(|n| *n == 0).await;
        let mut woken = true;
        loop {
            let started = inner.clock.now();
            let request = Request::new(&*config.identity, config.lease_duration);
            let error = match inner.claimer.claim(&config.lease, request).await {
                // A claim that returned only after its renew deadline (the manager retried it
                // through an outage) guarantees nothing any more: the term would be over before
                // it began. Claim again at once instead; as the holder, that is an extend with
                // a fresh start. (Found by `cargo xtask torture`.)
                Ok(_) if inner.clock.now() >= started.saturating_add(config.renew_deadline) => {
                    tracing::warn!(lease = %config.name, "leader election claim returned after its renew deadline; claiming again");
                    woken = true;
                    continue;
                }
                Ok(info) => return Ok(self.begin_term(info.generation, started)),
                Err(e) if e.is_aborted() || e.is_validation() => return Err(e.into()),
                Err(e) => e,
            };
            let fallback = inner
                .clock
                .now()
                .saturating_add(inner.jittered(config.retry_period));
            if error.is_claim_denied() {
                // Who leads can only have changed if the lease was freed since the last look
                // (which wakes the wait below), so a fallback retry does not read again.
                let known = matches!(&*inner.state.borrow(), Leadership::Following { .. });
                if (!known || woken)
                    && let Ok(leases) = inner.reader.leases().await
                    && let Some(leader) = leases.get(&config.lease)
                    && *leader != config.identity
                {
                    inner.state.send_if_modified(|s| {
                        let next = Leadership::Following {
                            leader: leader.clone(),
                        };
                        let changed = *s != next;
                        *s = next;
                        changed
                    });
                    inner.observe_leader(leader);
                }
                // Wake as soon as the lease is free, or at the fallback, whichever is first.
                let cancel = CancellationToken::new();
                let _cancel_on_exit = cancel.clone().drop_guard();
                let mut sleep = inner.clock.sleep_until(fallback);
                woken = tokio::select! {
                    woke = inner.claimer.wait_until_expired(&config.lease, &cancel) => {
                        match woke {
                            Ok(()) => true,
                            Err(e) if e.is_aborted() => return Err(e.into()),
                            Err(_) => {
                                sleep.await;
                                true
                            }
                        }
                    }
                    () = &mut sleep => false,
                };
            } else {
                tracing::warn!(lease = %config.name, error = %error, "leader election claim failed; retrying");
                inner.clock.sleep_until(fallback).await;
                woken = true;
            }
        }
    }

    fn begin_term(&self, generation: Generation, started: Timestamp) -> LeadershipGuard {
        let inner = &self.inner;
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        *inner.term() = Some(Term {
            generation,
            acquire_time: started,
            renew_time: started,
            lost: lost.clone(),
            stop: stop.clone(),
        });
        tracing::info!(lease = %inner.config.name, identity = %inner.config.identity, %generation, "started leading");
        crate::export::leader(&inner.config.name, true);
        crate::export::leadership_change(&inner.config.name, true);
        inner.state.send_replace(Leadership::Leading { generation });
        inner.observe_leader(&inner.config.identity);
        if let Some(f) = &inner.callbacks.started {
            f(generation);
        }
        tokio::spawn(renew(Arc::clone(inner), generation, started, stop));
        LeadershipGuard {
            elector: self.clone(),
            generation,
            lost,
        }
    }

    /// A health probe (client-go's `Check`): fine when not leading; when leading, fails if the
    /// last successful renewal started more than `lease_duration + max_tolerable_expired` ago.
    ///
    /// # Errors
    ///
    /// [`ElectionError::Unhealthy`] in that case.
    pub fn check(&self, max_tolerable_expired: Duration) -> Result<(), ElectionError> {
        let inner = &self.inner;
        let Some(renew_time) = inner.term().as_ref().map(|t| t.renew_time) else {
            return Ok(());
        };
        let since = inner.clock.now().saturating_duration_since(renew_time);
        let limit = inner.config.lease_duration + max_tolerable_expired;
        if since > limit {
            return Err(ElectionError::Unhealthy {
                lease: inner.config.lease.clone(),
                since,
                limit,
            });
        }
        Ok(())
    }

    /// Gives leadership up: ends the term (the lost token fires, then `Standby` and
    /// `on_stopped_leading`), then revokes the lease once. Returns whether the lease was
    /// revoked; false when not leading or the revoke failed (the lease then expires after at
    /// most `lease_duration`).
    pub async fn unlock(&self) -> bool {
        let Some((generation, _)) = self.current() else {
            return false;
        };
        self.inner.end_term(generation, "unlocked");
        self.revoke().await.is_ok()
    }

    /// As [`LeaderElector::unlock`], retrying a failed revoke every `unlock_with_retry_period`
    /// (jittered) until it succeeds, the lease turns out not to be ours, or it has expired by
    /// itself (`lease_duration` after the last renewal). Returns whether it was revoked.
    pub async fn unlock_with_retry(&self) -> bool {
        let Some((generation, renew_time)) = self.current() else {
            return false;
        };
        self.inner.end_term(generation, "unlocked");
        // Counted for the whole loop, sleeps included: a retry that comes after a new term began
        // would end it.
        let _releasing = Releasing::start(Arc::clone(&self.inner));
        let expires = renew_time.saturating_add(self.inner.config.lease_duration);
        loop {
            match self.revoke().await {
                Ok(()) => return true,
                Err(e) if e.is_not_held() || e.is_aborted() || e.is_validation() => return false,
                Err(e) => {
                    let next = self.inner.clock.now().saturating_add(
                        self.inner
                            .jittered(self.inner.config.unlock_with_retry_period),
                    );
                    if next >= expires {
                        tracing::warn!(error = %e, "giving up revoking; the lease expires by itself");
                        return false;
                    }
                    tracing::warn!(error = %e, "revoking the leader lease failed; retrying");
                    self.inner.clock.sleep_until(next).await;
                }
            }
        }
    }

    fn current(&self) -> Option<(Generation, Timestamp)> {
        self.inner
            .term()
            .as_ref()
            .map(|t| (t.generation, t.renew_time))
    }

    async fn revoke(&self) -> Result<(), Error> {
        // Counted like a dropped guard's background revoke, so a `lock()` racing with it waits:
        // a revoke names the holder, not the term, and would end a term begun meanwhile.
        let _releasing = Releasing::start(Arc::clone(&self.inner));
        let config = &self.inner.config;
        self.inner
            .revoker
            .revoke(&config.lease, &config.identity)
            .await
    }
}

/// The leader's renewal task for the term of `generation`.
async fn renew(
    inner: Arc<Inner>,
    generation: Generation,
    started: Timestamp,
    stop: CancellationToken,
) {
    let config = &inner.config;
    let clock = Arc::clone(&inner.clock);
    let mut last_ok = started;
    let mut last_attempt = started;
    loop {
        let deadline = last_ok.saturating_add(config.renew_deadline);
        let next = last_attempt.saturating_add(config.retry_period);
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = clock.sleep_until(next.min(deadline)) => {}
        }
        let attempt = clock.now();
        if attempt >= deadline {
            inner.end_term(generation, "renewals failed until renew_deadline");
            return;
        }
        last_attempt = attempt;
        let record = {
            let term = inner.term();
            match &*term {
                Some(t) if t.generation == generation => {
                    let mut r = inner.record(t);
                    r.renew_time = attempt;
                    r
                }
                _ => return,
            }
        };
        let mut request = Request::new(&*config.identity, config.lease_duration);
        if let Ok(value) = serde_json::to_value(&record) {
            request = request.with_metadata(value);
        }
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = clock.sleep_until(deadline) => {
                inner.end_term(generation, "a renewal was still pending at renew_deadline");
                return;
            }
            r = inner.claimer.claim(&config.lease, request) => r,
        };
        match result {
            Ok(info) if info.generation == generation => {
                last_ok = attempt;
                if let Some(t) = &mut *inner.term()
                    && t.generation == generation
                {
                    t.renew_time = attempt;
                }
            }
            Ok(_) => {
                // The term's claim had lapsed and this renewal claimed the lease anew: that is
                // not the term the guard vouches for. End it and give the new claim back.
                inner.end_term(generation, "the lease lapsed and was claimed anew");
                let _ = inner.revoker.revoke(&config.lease, &config.identity).await;
                return;
            }
            Err(e) if e.is_claim_denied() || e.is_aborted() => {
                inner.end_term(generation, &format!("renewal failed: {e}"));
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "leader renewal failed; retrying");
            }
        }
    }
}

/// One term of leadership, from [`LeaderElector::lock`].
///
/// Work under the lease while [`LeadershipGuard::lost`] has not fired, and pass
/// [`LeadershipGuard::generation`] to protected resources (see [`Fence`](crate::Fence)).
/// Dropping the guard ends the term: with `release_on_cancel` it also revokes the lease (in a
/// background task); without, the lease expires after `lease_duration`.
#[must_use = "dropping the guard ends the term"]
pub struct LeadershipGuard {
    elector: LeaderElector,
    generation: Generation,
    lost: CancellationToken,
}

impl fmt::Debug for LeadershipGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeadershipGuard")
            .field("lease", &self.elector.inner.config.lease)
            .field("generation", &self.generation)
            .field("lost", &self.lost.is_cancelled())
            .finish()
    }
}

impl LeadershipGuard {
    /// The fencing generation of this term.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Fires when the term ends (lost, unlocked or released). Stop working when it does.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Whether the term is still on (the lost token has not fired).
    pub fn is_leading(&self) -> bool {
        !self.lost.is_cancelled()
    }

    /// Ends the term and revokes the lease, as [`LeaderElector::unlock`]; false when the term
    /// had already ended or the revoke failed.
    pub async fn release(self) -> bool {
        if !self.elector.inner.end_term(self.generation, "released") {
            return false;
        }
        self.elector.revoke().await.is_ok()
    }
}

/// Counts one background revoke in [`Inner::releasing`] while it lives (also if its task is
/// cancelled), so [`LeaderElector::lock`] never waits for a revoke that will not come.
struct Releasing(Arc<Inner>);

impl Releasing {
    fn start(inner: Arc<Inner>) -> Releasing {
        inner.releasing.send_modify(|n| *n += 1);
        Releasing(inner)
    }
}

impl Drop for Releasing {
    fn drop(&mut self) {
        self.0.releasing.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Drop for LeadershipGuard {
    fn drop(&mut self) {
        if !self
            .elector
            .inner
            .end_term(self.generation, "guard dropped")
        {
            return;
        }
        if self.elector.inner.config.release_on_cancel
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let elector = self.elector.clone();
            // Counted here, before the task exists, and not only inside `revoke()`: a `lock()`
            // right after this drop must already see the revoke pending.
            let releasing = Releasing::start(Arc::clone(&elector.inner));
            runtime.spawn(async move {
                if let Err(e) = elector.revoke().await {
                    tracing::warn!(error = %e, "releasing the leader lease on drop failed");
                }
                drop(releasing);
            });
        }
    }
}
