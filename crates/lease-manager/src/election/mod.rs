//! [`LeaderElector`]: leader election in the style of client-go's `leaderelection` and the
//! Go `LeaseLocker` built on it, over any store through the manager.
//!
//! Candidates claim one lease with their identity. The winner renews it every `retry_period`
//! and its lost token fires no later than `renew_deadline` after its last successful renewal,
//! which is before the lease (of `lease_duration`) could expire for anyone else. Followers
//! wake at once when the lease is released or expires (the manager's `wait_until_expired`),
//! with a jittered `retry_period` as the fallback.
//!
//! Terms and generations: every term of leadership starts from a claim of its own, so its
//! fencing generation is strictly greater than every earlier term's (this elector's and every
//! other candidate's). `lock()` guarantees it by waiting for every revoke of an earlier term
//! still in flight, then revoking any lease its identity still holds, and only then claiming
//! (a claim by the current holder would be an extend, keeping the generation). Within the
//! elector a term is identified by a term id, never by its generation, so nothing done to an
//! ended term (dropping its guard, a late renewal) can touch a later one.
//!
//! Layout: `config.rs` (the configuration and errors), `state.rs` (what it reports), `term.rs`
//! (a term's renewal task, guard and revokes), this file (the elector and `lock()`).

mod config;
mod state;
mod term;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lease_core::{
    CancellationToken, Claimer, Clock, Generation, Reader, Request, Revoker, Timestamp,
};

#[cfg(doc)]
use lease_core::Error;
use tokio::sync::watch;

pub use config::{ElectionConfig, ElectionError};
pub use state::{Callbacks, Leadership, TermRecord};
pub use term::LeadershipGuard;
use term::{Releasing, Term, renew, revoke};

/// How far follower retries are spread: each wait is `retry_period × (1 + JITTER × r)` for a
/// uniform `r` in `[0, 1)`.
const JITTER: f64 = 0.2;

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
    /// Revokes by this identity not yet answered by the manager, each counted from before the
    /// term it follows ended (see [`term`]). A revoke names the holder, not the term, so
    /// [`LeaderElector::lock`] waits for them: otherwise it could win a term (an extend of the
    /// old lease) that a late revoke then takes away while another candidate claims the lease.
    releasing: watch::Sender<usize>,
    /// Held by a `lock()` call from its first check to its term's start, so two calls on one
    /// elector cannot both start a term (the second sees the first's and is refused).
    locking: tokio::sync::Mutex<()>,
    /// The id of the next term.
    next_term_id: AtomicU64,
    /// The highest generation any term of this elector had: a claim that returns one not above
    /// it is an extend of an earlier term's lease, not a new term.
    highest_generation: AtomicU64,
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

    fn record(&self, term: &Term) -> TermRecord {
        TermRecord {
            holder_identity: self.config.identity.clone(),
            lease_duration_seconds: self
                .config
                .lease_duration
                .as_secs()
                .saturating_add(u64::from(self.config.lease_duration.subsec_nanos() > 0)),
            acquire_time: term.acquire_time,
            renew_time: term.renew_time,
            lease_transitions: term.generation.get().saturating_sub(1),
        }
    }

    /// Ends the term `term_id`, if it is the current one: fires its lost token, then publishes
    /// `Standby` and calls `on_stopped_leading`. Returns whether it did. A revoke that follows
    /// must be counted ([`Releasing::start`]) before this is called.
    fn end_term(&self, term_id: u64, why: &str) -> bool {
        let term = {
            let mut slot = self.term();
            match &*slot {
                Some(t) if t.id == term_id => slot.take(),
                _ => None,
            }
        };
        let Some(term) = term else {
            return false;
        };
        let generation = term.generation;
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, %generation, term = term_id, why, "stopped leading");
        term.stop.cancel();
        term.lost.cancel();
        crate::metric::export::leader(&self.config.name, false);
        crate::metric::export::leadership_change(&self.config.name, false);
        self.state.send_replace(Leadership::Standby);
        if let Some(f) = &self.callbacks.stopped {
            f();
        }
        true
    }

    /// `period` stretched by up to `JITTER`, saturating at `Duration::MAX`.
    fn jittered(&self, period: Duration) -> Duration {
        let factor = 1.0 + JITTER * fastrand::f64();
        Duration::try_from_secs_f64(period.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }
}

/// A leader-election candidate over any store, through a manager's facades.
///
/// - [`LeaderElector::lock`] waits until this candidate leads and returns a
///   [`LeadershipGuard`] with the term's fencing generation (greater than every earlier
///   term's) and lost token. Calls on one elector are serialised; one term at a time.
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
        manager: &dyn lease_core::Facades,
        clock: Arc<dyn Clock>,
        config: ElectionConfig,
        callbacks: Callbacks,
    ) -> Result<LeaderElector, ElectionError> {
        config.validate()?;
        let (state, _) = watch::channel(Leadership::Standby);
        crate::metric::export::leader(&config.name, false);
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
                locking: tokio::sync::Mutex::new(()),
                next_term_id: AtomicU64::new(1),
                highest_generation: AtomicU64::new(0),
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

    /// The record of this elector's current term; `None` when not leading.
    pub fn term_record(&self) -> Option<TermRecord> {
        self.inner.term().as_ref().map(|t| self.inner.record(t))
    }

    /// Waits until this elector leads, and returns the term's guard.
    ///
    /// Each term starts from a claim of its own, so its generation is greater than every
    /// earlier term's: `lock()` first waits for every revoke of an earlier term still in
    /// flight, then revokes any lease this identity still holds (a term that ended at its
    /// renew deadline leaves its lease recorded until it expires; an earlier process with
    /// this identity may have left one too), and only then claims. That revoke may let another
    /// candidate in first; it is a fair race, and the cost is one store call per `lock()`.
    ///
    /// Calls on one elector are serialised: while one waits, another waits behind it, and
    /// gets [`ElectionError::AlreadyLeading`] if the first started a term.
    ///
    /// Cancel it by dropping the future. A claim already sent to the manager may still
    /// succeed; nobody renews it then, so it expires after `lease_duration` (or is revoked by
    /// the next `lock()`).
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
        let _one_at_a_time = if crate::mutation::on(crate::mutation::Mutation::ConcurrentLock) {
            None
        } else {
            Some(inner.locking.lock().await)
        };
        if let Some(t) = &*inner.term() {
            return Err(ElectionError::AlreadyLeading {
                lease: config.lease.clone(),
                generation: t.generation,
            });
        }
        let mut revoke_first = true;
        let mut stale_generations = 0u32;
        let mut woken = true;
        loop {
            // A revoke of an earlier term still in flight would end the term this call may
            // win. No new one can start meanwhile: there is no term to end until this returns.
            if !crate::mutation::on(crate::mutation::Mutation::RevokeRacingLock) {
                let _ = inner.releasing.subscribe().wait_for(|n| *n == 0).await;
            }
            if revoke_first {
                match revoke(inner, Releasing::start(inner)).await {
                    Ok(()) => revoke_first = false,
                    Err(e) if e.is_not_held() => revoke_first = false,
                    Err(e) if e.is_aborted() || e.is_validation() => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(lease = %config.name, error = %e, "revoking this identity's earlier lease failed; retrying");
                        let retry = inner
                            .clock
                            .now()
                            .saturating_add(inner.jittered(config.retry_period));
                        inner.clock.sleep_until(retry).await;
                        continue;
                    }
                }
            }
            let started = inner.clock.now();
            let request = Request::new(&*config.identity, config.lease_duration);
            let error = match inner.claimer.claim(&config.lease, request).await {
                // An extend of a lease an earlier term had (a renewal or claim of an ended term
                // that landed late): not a new term. Revoke it and claim afresh.
                Ok(info)
                    if info.generation.get() <= inner.highest_generation.load(Ordering::SeqCst) =>
                {
                    tracing::warn!(lease = %config.name, generation = %info.generation, "the claim extended an earlier term's lease; revoking it and claiming afresh");
                    revoke_first = true;
                    // Once is a late claim of an ended term; again and again would be a store
                    // whose generations do not rise: do not spin on it.
                    if stale_generations > 0 {
                        let retry = inner
                            .clock
                            .now()
                            .saturating_add(inner.jittered(config.retry_period));
                        inner.clock.sleep_until(retry).await;
                    }
                    stale_generations += 1;
                    continue;
                }
                // A claim that returned only after its renew deadline (the manager retried it
                // through an outage) guarantees nothing any more: the term would be over before
                // it began. Claim again at once instead; as the holder, that is an extend with
                // a fresh start (its generation belongs to no term yet). (Found by `cargo xtask
                // torture`.)
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
                // Biased, so the same wake-ups take the same branch on every run (the
                // deterministic simulator replays runs by seed).
                woken = tokio::select! {
                    biased;
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

    /// Records a new term (called by `lock()`, which holds `locking`, so there is none) and
    /// starts its renewal task.
    fn begin_term(&self, generation: Generation, started: Timestamp) -> LeadershipGuard {
        let inner = &self.inner;
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let term_id = inner.next_term_id.fetch_add(1, Ordering::SeqCst);
        inner
            .highest_generation
            .fetch_max(generation.get(), Ordering::SeqCst);
        let previous = inner.term().replace(Term {
            id: term_id,
            generation,
            acquire_time: started,
            renew_time: started,
            lost: lost.clone(),
            stop: stop.clone(),
        });
        debug_assert!(
            previous.is_none(),
            "lock() is serialised and refuses while leading"
        );
        tracing::info!(lease = %inner.config.name, identity = %inner.config.identity, %generation, term = term_id, "started leading");
        crate::metric::export::leader(&inner.config.name, true);
        crate::metric::export::leadership_change(&inner.config.name, true);
        inner.state.send_replace(Leadership::Leading { generation });
        inner.observe_leader(&inner.config.identity);
        if let Some(f) = &inner.callbacks.started {
            f(generation);
        }
        tokio::spawn(renew(Arc::clone(inner), term_id, generation, started, stop));
        LeadershipGuard {
            elector: self.clone(),
            term_id,
            generation,
            lost,
        }
    }

    /// A health probe (client-go's `Check`): fine when not leading; when leading, fails if the
    /// last successful renewal started more than `lease_duration + max_tolerable_expired` ago
    /// (a sum that saturates, so any tolerance is accepted).
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
        let limit = inner
            .config
            .lease_duration
            .saturating_add(max_tolerable_expired);
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
    /// most `lease_duration`, unless the next `lock()` revokes it first).
    pub async fn unlock(&self) -> bool {
        let Some((term_id, _)) = self.current() else {
            return false;
        };
        let count = Releasing::start(&self.inner);
        if !self.inner.end_term(term_id, "unlocked") {
            return false;
        }
        revoke(&self.inner, count).await.is_ok()
    }

    /// As [`LeaderElector::unlock`], retrying a failed revoke every `unlock_with_retry_period`
    /// (jittered) until it succeeds, the lease turns out not to be ours, or it has expired by
    /// itself (`lease_duration` after the last renewal). Returns whether it was revoked.
    pub async fn unlock_with_retry(&self) -> bool {
        let Some((term_id, renew_time)) = self.current() else {
            return false;
        };
        // Counted for the whole loop, sleeps included, and from before the term ends: a retry
        // that came after a new term began would end it.
        let _releasing = Releasing::start(&self.inner);
        if !self.inner.end_term(term_id, "unlocked") {
            return false;
        }
        let expires = renew_time.saturating_add(self.inner.config.lease_duration);
        loop {
            match revoke(&self.inner, Releasing::start(&self.inner)).await {
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

    /// The current term's id and last renewal.
    fn current(&self) -> Option<(u64, Timestamp)> {
        self.inner.term().as_ref().map(|t| (t.id, t.renew_time))
    }
}
