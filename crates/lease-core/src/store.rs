//! The [`Store`] trait: where leases are recorded, and the contract every store keeps.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::Result;
use crate::types::{Info, Key, Request};

/// One lease operation in a batch (see [`Store::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// [`Store::claim_lease`].
    Claim {
        /// The lease.
        key: Key,
        /// Who claims it, for how long, with what metadata.
        request: Request,
    },
    /// [`Store::extend_lease`].
    Extend {
        /// The lease.
        key: Key,
        /// Who extends it, for how long, with what metadata.
        request: Request,
    },
    /// [`Store::revoke_lease`].
    Revoke {
        /// The lease.
        key: Key,
        /// Who gives it up.
        holder: String,
    },
}

impl Op {
    /// The lease this operation is about.
    pub fn key(&self) -> &Key {
        match self {
            Op::Claim { key, .. } | Op::Extend { key, .. } | Op::Revoke { key, .. } => key,
        }
    }
}

/// A batch started with [`Store::start_apply`]: resolves to one result per op, in order.
pub type StartedApply =
    std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Result<Outcome>>> + Send + 'static>>;

/// The result of one successful [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The claim succeeded; the lease as it now stands.
    Claimed(Info),
    /// The extend succeeded; the lease as it now stands.
    Extended(Info),
    /// The revoke succeeded.
    Revoked,
}

/// Records leases. Only the manager's worker calls a store, from one task, so a store need not
/// be thread-safe (`Send` is enough, and every method takes `&mut self`).
///
/// # To ensure correctness
///
/// Every store passes the `lease-testkit` conformance suite, which checks each clause below.
///
/// - **Validation first.** Every method validates its keys, holders, entities and durations
///   ([`Key::validate`], [`Request::validate`], [`validate_string`](crate::validate_string)) and
///   fails with [`Error::Validation`](crate::Error::Validation) before any I/O.
/// - **Claim** succeeds only when the lease is absent or expired. The holder then holds it until
///   at least `request.duration` after the call *started*, on the store's clock. A valid lease
///   held by someone else gives [`Error::Held`]; one held by the same holder gives
///   [`Error::Invalid`] (extend it instead). A claim never silently succeeds over a valid lease.
/// - **Extend** succeeds only for the holder of an unexpired lease and only ever lengthens it:
///   the new expiry is `max(current expiry, now + duration)`. An absent or expired lease, or one
///   held by someone else, gives [`Error::Invalid`]. Metadata in the request replaces the
///   stored metadata; none leaves it as it was.
/// - **Revoke** succeeds only for the holder of an unexpired (or pinned) lease. An absent or
///   expired lease gives [`Error::Invalid`]; one held by someone else, [`Error::NotHeld`]. A pin
///   never makes a revoke fail.
/// - **Expiry.** A lease is valid while the store's clock reads strictly before its expiry and
///   expired from the expiry instant on (`now >= expiry`).
/// - **Early free only on death.** A store may free an unpinned lease before its expiry only
///   when no process of its holder can act on it any more (the SQLite store knows this on one
///   host, from the kernel's locks); a holder that is alive but silent (stopped, paused, its
///   renewals hung) keeps it until the expiry. A lease so freed behaves as an expired one: the
///   next claim gets a higher generation, the old holder's extend and revoke are refused.
///   Stores that cannot tell (every other store) free leases at their expiry only.
/// - **Snapshots** ([`Store::leases`], [`Store::lease_group`]) never report an expired,
///   unpinned lease.
/// - **Pins.** A pinned lease does not expire. Pinning an absent lease applies to its next
///   claimant. Several entities may pin one lease; expiry returns when the last one unpins.
///   Pinning twice, or unpinning an entity that never pinned, is not an error.
/// - **Fencing generation.** Every successful claim (not extend) gets a
///   [`Generation`](crate::Generation) strictly greater than that of any earlier claim of the
///   same key, surviving revoke, expiry, deletion of expired records and reopening the store.
/// - **Metadata** given with a claim is returned, unchanged, in [`Info::metadata`].
/// - **Errors.** A transient failure of the backing system (a lock held too long, a 5xx, a lost
///   connection) is [`Error::Timeout`]; a conflicting concurrent write that the store detected
///   is reported as the contract above says after re-reading (`Held` or `Invalid`), never as a
///   success.
///
/// [`Error::Held`]: crate::Error::Held
/// [`Error::Invalid`]: crate::Error::Invalid
/// [`Error::NotHeld`]: crate::Error::NotHeld
/// [`Error::Timeout`]: crate::Error::Timeout
#[async_trait]
pub trait Store: Send {
    /// Records `request.holder`'s claim to the lease `key`.
    ///
    /// # Errors
    ///
    /// [`Error::Held`](crate::Error::Held) when someone else validly holds it,
    /// [`Error::Invalid`](crate::Error::Invalid) when the same holder already does,
    /// [`Error::Validation`](crate::Error::Validation) for bad input,
    /// [`Error::Timeout`](crate::Error::Timeout) or [`Error::Store`](crate::Error::Store) when
    /// the backing system fails.
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info>;

    /// Extends the holder's claim so it lasts at least `request.duration` from the call's start.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) when the lease is absent, expired, or held by
    /// someone else; validation and backing-system errors as for [`Store::claim_lease`].
    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info>;

    /// Vacates the lease held by `holder`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) when the lease is absent or expired,
    /// [`Error::NotHeld`](crate::Error::NotHeld) when someone else holds it; validation and
    /// backing-system errors as for [`Store::claim_lease`].
    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()>;

    /// A snapshot of the valid leases among `keys`, or of every valid lease when `keys` is empty.
    ///
    /// # Errors
    ///
    /// Validation and backing-system errors.
    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>>;

    /// A snapshot of every valid lease in one namespace and model.
    ///
    /// # Errors
    ///
    /// Validation and backing-system errors.
    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>>;

    /// Stops the lease from expiring on behalf of `entity` (or its next claimant, if absent).
    ///
    /// # Errors
    ///
    /// Validation and backing-system errors.
    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()>;

    /// Removes `entity`'s pin; the lease expires normally once no pins remain.
    ///
    /// # Errors
    ///
    /// Validation and backing-system errors.
    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()>;

    /// Every pinned lease with the entities pinning it, each list sorted.
    ///
    /// # Errors
    ///
    /// Backing-system errors.
    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>>;

    /// Applies `ops` in order, each seeing the effect of the ones before, and returns one result
    /// per op in the same order. Stores that can should apply the whole batch in one transaction
    /// (the manager sends queued requests as one batch: group commit); if that transaction fails
    /// as a whole, every op gets the error and none took effect. The default applies the ops one
    /// by one.
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let result = match op {
                Op::Claim { key, request } => {
                    self.claim_lease(&key, &request).await.map(Outcome::Claimed)
                }
                Op::Extend { key, request } => self
                    .extend_lease(&key, &request)
                    .await
                    .map(Outcome::Extended),
                Op::Revoke { key, holder } => self
                    .revoke_lease(&key, &holder)
                    .await
                    .map(|()| Outcome::Revoked),
            };
            results.push(result);
        }
        results
    }

    /// Starts applying `ops` as [`Store::apply`] would, returning a future of their results
    /// that does not borrow the store, so that the caller can start the next batch before this
    /// one has ended and the store goes from one to the next without waiting for the caller
    /// (a pipeline: the manager plans its next batch while the store writes this one).
    ///
    /// A store that can do this applies the batches it started in the order it started them,
    /// one after another, each as [`Store::apply`] does; a batch whose future was dropped
    /// before the store began it is not applied at all. Other calls (reads, pins) are not
    /// ordered with a started batch that has not ended: the manager makes none on the keys of
    /// a started batch until its results are back. The default cannot: it gives the ops back
    /// (`Err(ops)`), and the caller uses [`Store::apply`].
    ///
    /// # Errors
    ///
    /// `Err(ops)`, the ops untouched, when the store cannot start a batch this way (now or
    /// ever); the future's results carry each op's errors as [`Store::apply`]'s do.
    fn start_apply(&mut self, ops: Vec<Op>) -> std::result::Result<StartedApply, Vec<Op>> {
        Err(ops)
    }

    /// A cheap probe: whether the backing may have been changed by anyone other than this
    /// instance since the previous call. The manager polls it every refresh interval and
    /// re-reads the leases it cares about when it says yes. The default always says yes.
    ///
    /// # Errors
    ///
    /// Backing-system errors.
    async fn poll_changes(&mut self) -> Result<bool> {
        Ok(true)
    }

    /// A channel whose value changes whenever the store learns that someone changed the backing
    /// (a Kubernetes watch event, say), so the manager can react at once instead of at its next
    /// poll. `None` (the default) when the store can only be polled.
    fn change_notifier(&mut self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

#[async_trait]
impl<S: Store + ?Sized> Store for Box<S> {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        (**self).claim_lease(key, request).await
    }
    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        (**self).extend_lease(key, request).await
    }
    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()> {
        (**self).revoke_lease(key, holder).await
    }
    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        (**self).leases(keys).await
    }
    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>> {
        (**self).lease_group(namespace, model).await
    }
    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        (**self).pin_lease(key, entity).await
    }
    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        (**self).unpin_lease(key, entity).await
    }
    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        (**self).pinned().await
    }
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        (**self).apply(ops).await
    }
    fn start_apply(&mut self, ops: Vec<Op>) -> std::result::Result<StartedApply, Vec<Op>> {
        (**self).start_apply(ops)
    }
    async fn poll_changes(&mut self) -> Result<bool> {
        (**self).poll_changes().await
    }
    fn change_notifier(&mut self) -> Option<tokio::sync::watch::Receiver<u64>> {
        (**self).change_notifier()
    }
}
