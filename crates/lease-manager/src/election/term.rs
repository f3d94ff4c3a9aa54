//! One term of leadership: its record in the elector, its renewal task, its guard, and the
//! revokes that end it.
//!
//! Two rules keep a term from being taken away by the revoke of an earlier one (a revoke names
//! the holder, not the term):
//!
//! - every revoke by this identity is counted in [`Inner::releasing`] *before* the term it
//!   follows ends (so before its lost token fires and `on_stopped_leading` runs), and stays
//!   counted until the manager has answered it, even if the caller gives up waiting (it runs in
//!   a task of its own); [`LeaderElector::lock`](super::LeaderElector::lock) waits for the count
//!   to reach zero before it claims;
//! - terms are told apart by a term id, never by generation.

use std::fmt;
use std::sync::Arc;

use lease_core::{CancellationToken, Error, Generation, Request, Timestamp};

use super::{Inner, LeaderElector};

/// One term of leadership, as the elector records it.
pub(super) struct Term {
    /// This elector's sequence number of the term: what identifies it (two terms may come
    /// from one lease record, and stores only promise that a *claim* raises the generation).
    pub(super) id: u64,
    pub(super) generation: Generation,
    pub(super) acquire_time: Timestamp,
    pub(super) renew_time: Timestamp,
    pub(super) lost: CancellationToken,
    pub(super) stop: CancellationToken,
}

/// Counts one revoke by this identity in [`Inner::releasing`] while it lives, so
/// [`LeaderElector::lock`](super::LeaderElector::lock) waits for it, and never for a revoke
/// that will not come (the count drops when the value does, also if its task is cancelled).
pub(super) struct Releasing(Arc<Inner>);

impl Releasing {
    /// Starts counting. Call it *before* ending the term whose lease will be revoked.
    pub(super) fn start(inner: &Arc<Inner>) -> Releasing {
        inner.releasing.send_modify(|n| *n += 1);
        Releasing(Arc::clone(inner))
    }
}

impl Drop for Releasing {
    fn drop(&mut self) {
        self.0.releasing.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Revokes this identity's lease in a task of its own that keeps `count` until the manager
/// answered, so a caller that stops waiting (a dropped `unlock()` future) cannot leave a revoke
/// in flight uncounted. Returns the manager's answer, or [`Error::Aborted`] when the task could
/// not finish (the runtime shut down).
pub(super) async fn revoke(inner: &Arc<Inner>, count: Releasing) -> Result<(), Error> {
    let inner = Arc::clone(inner);
    let task = tokio::spawn(async move {
        let config = &inner.config;
        let result = inner.revoker.revoke(&config.lease, &config.identity).await;
        drop(count);
        result
    });
    task.await.unwrap_or(Err(Error::Aborted))
}

/// The leader's renewal task for the term `term_id` (of `generation`).
pub(super) async fn renew(
    inner: Arc<Inner>,
    term_id: u64,
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
            inner.end_term(term_id, "renewals failed until renew_deadline");
            return;
        }
        last_attempt = attempt;
        let record = {
            let term = inner.term();
            match &*term {
                Some(t) if t.id == term_id => {
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
                inner.end_term(term_id, "a renewal was still pending at renew_deadline");
                return;
            }
            r = inner.claimer.claim(&config.lease, request) => r,
        };
        match result {
            Ok(info)
                if info.generation == generation
                    || crate::mutation::on(crate::mutation::Mutation::GenerationAcrossTerms) =>
            {
                last_ok = attempt;
                if let Some(t) = &mut *inner.term()
                    && t.id == term_id
                {
                    t.renew_time = attempt;
                }
            }
            Ok(_) => {
                // The term's claim had lapsed (the lease was revoked or expired behind our back)
                // and this renewal claimed the lease anew: that is not the term the guard vouches
                // for. End it and give the new claim back, counted before the term ends, as
                // every revoke is. If the term had already ended, someone else ended it and a
                // new `lock()` may be under way: leave the claim alone (it expires, and the next
                // `lock()` revokes it before claiming).
                let count = Releasing::start(&inner);
                if inner.end_term(term_id, "the lease lapsed and was claimed anew") {
                    let _ = revoke(&inner, count).await;
                }
                return;
            }
            Err(e) if e.is_claim_denied() || e.is_aborted() => {
                inner.end_term(term_id, &format!("renewal failed: {e}"));
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
/// [`LeadershipGuard::generation`] to protected resources (see [`Fence`](crate::Fence)): every
/// term's generation is greater than every earlier term's, of this elector and of any other
/// candidate of the lease. Dropping the guard ends the term (and only this term): with
/// `release_on_cancel` it also revokes the lease (in a background task); without, the lease
/// expires after `lease_duration`.
#[must_use = "dropping the guard ends the term"]
pub struct LeadershipGuard {
    pub(super) elector: LeaderElector,
    pub(super) term_id: u64,
    pub(super) generation: Generation,
    pub(super) lost: CancellationToken,
}

impl fmt::Debug for LeadershipGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeadershipGuard")
            .field("lease", &self.elector.inner.config.lease)
            .field("term", &self.term_id)
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
    ///
    /// Calling [`LeaderElector::lock`] again from the token's handler is safe: it waits until
    /// the revoke that follows this term (if any) has been answered, so that revoke cannot end
    /// the new term, and the new term gets a newer generation.
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
        let inner = &self.elector.inner;
        let count = Releasing::start(inner);
        if !inner.end_term(self.term_id, "released") {
            return false;
        }
        revoke(inner, count).await.is_ok()
    }
}

impl Drop for LeadershipGuard {
    fn drop(&mut self) {
        let inner = &self.elector.inner;
        let runtime = tokio::runtime::Handle::try_current().ok();
        // Counted before the term ends, so a `lock()` from the lost-token handler already sees
        // the revoke pending.
        let count =
            (inner.config.release_on_cancel && runtime.is_some()).then(|| Releasing::start(inner));
        if !inner.end_term(self.term_id, "guard dropped") {
            return;
        }
        if let (Some(runtime), Some(count)) = (runtime, count) {
            let inner = Arc::clone(inner);
            runtime.spawn(async move {
                if let Err(e) = revoke(&inner, count).await {
                    tracing::warn!(error = %e, "releasing the leader lease on drop failed");
                }
            });
        }
    }
}
