//! The facades a program uses: [`Checker`]/[`Token`], [`Claimer`], [`Revoker`], [`Pinner`] and
//! [`Reader`], each bound to one namespace and model, and the [`Facades`] trait that hands them
//! out.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::types::{Generation, Info, Request};

/// Proof, checkable at any time, that a holder holds a lease.
#[async_trait]
pub trait Token: Send + Sync + fmt::Debug {
    /// Checks that the holder still holds the lease, and returns the fencing generation of the
    /// claim that made it the holder. Pass the generation to the protected resource, which
    /// rejects anything older than the newest it has seen.
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`](crate::Error::NotHeld) when the holder does not hold the lease;
    /// validation errors for a bad lease or holder name; store errors when it had to ask the
    /// store and that failed.
    async fn check(&self) -> Result<Generation>;
}

/// Exposes facts about lease ownership.
pub trait Checker: Send + Sync {
    /// A token that tells, whenever it is checked, whether `holder` holds `lease`.
    fn token(&self, lease: &str, holder: &str) -> Box<dyn Token>;
}

/// Acquires and extends leases, and waits for them to expire.
#[async_trait]
pub trait Claimer: Send + Sync {
    /// Acquires `lease` for `request.holder`, or extends it if the holder already holds it.
    ///
    /// On success the holder is guaranteed to keep the lease until at least
    /// `request.duration` after the *start* of the call; the returned [`Info`] carries the
    /// fencing generation.
    ///
    /// # Errors
    ///
    /// [`Error::ClaimDenied`](crate::Error::ClaimDenied): the holder is guaranteed *not* to hold
    /// the lease. Any other error: no inference may be made. Validation errors name the bad
    /// input.
    async fn claim(&self, lease: &str, request: Request) -> Result<Info>;

    /// Returns once `lease` is no longer held (at its expiry, at once when it is revoked or
    /// found absent).
    ///
    /// # Errors
    ///
    /// [`Error::WaitCancelled`](crate::Error::WaitCancelled) when `cancel` fires first. Any
    /// other error: no inference may be made.
    async fn wait_until_expired(&self, lease: &str, cancel: &CancellationToken) -> Result<()>;
}

/// Gives leases up.
#[async_trait]
pub trait Revoker: Send + Sync {
    /// Releases `lease` held by `holder`.
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`](crate::Error::NotHeld) when `holder` does not hold it; validation and
    /// store errors.
    async fn revoke(&self, lease: &str, holder: &str) -> Result<()>;
}

/// Suspends and restores lease expiry.
#[async_trait]
pub trait Pinner: Send + Sync {
    /// Ensures the current holder of `lease` (or its next claimant) does not lose it to expiry,
    /// on behalf of `entity`.
    ///
    /// # Errors
    ///
    /// Validation and store errors.
    async fn pin(&self, lease: &str, entity: &str) -> Result<()>;

    /// Reverses `entity`'s [`Pinner::pin`]; expiry returns when no entity pins the lease.
    ///
    /// # Errors
    ///
    /// Validation and store errors.
    async fn unpin(&self, lease: &str, entity: &str) -> Result<()>;

    /// Every pinned lease of this namespace and model, with the entities pinning it.
    ///
    /// # Errors
    ///
    /// Store errors.
    async fn pinned(&self) -> Result<BTreeMap<String, Vec<String>>>;
}

/// Reads who holds what.
#[async_trait]
pub trait Reader: Send + Sync {
    /// Every valid lease of this namespace and model, with everything the store knows of it:
    /// holder, expiry, fencing generation, metadata, whether it is pinned.
    ///
    /// # Errors
    ///
    /// Store errors.
    async fn lease_infos(&self) -> Result<BTreeMap<String, Info>>;

    /// Every valid lease of this namespace and model, with its holder (Juju's `Leases`).
    ///
    /// # Errors
    ///
    /// Store errors.
    async fn leases(&self) -> Result<BTreeMap<String, String>> {
        Ok(self
            .lease_infos()
            .await?
            .into_iter()
            .map(|(lease, info)| (lease, info.holder))
            .collect())
    }
}

/// Hands out the five facades for a namespace and model.
///
/// `lease_manager::Manager` implements it over a store (and `lease_testkit::FakeManager` over
/// an in-memory one), so code that uses leases can take a `&dyn Facades` and not depend on
/// either. Import it (`use lease_core::Facades as _;`) to call its methods on a manager.
pub trait Facades: Send + Sync {
    /// The [`Checker`] for `namespace` and `model`.
    ///
    /// # Errors
    ///
    /// A validation error when the namespace has no secretary or either name is invalid;
    /// [`Error::Aborted`](crate::Error::Aborted) when the manager has stopped.
    fn checker(&self, namespace: &str, model: &str) -> Result<Arc<dyn Checker>>;

    /// The [`Claimer`] for `namespace` and `model`.
    ///
    /// # Errors
    ///
    /// As for [`Facades::checker`].
    fn claimer(&self, namespace: &str, model: &str) -> Result<Arc<dyn Claimer>>;

    /// The [`Revoker`] for `namespace` and `model`.
    ///
    /// # Errors
    ///
    /// As for [`Facades::checker`].
    fn revoker(&self, namespace: &str, model: &str) -> Result<Arc<dyn Revoker>>;

    /// The [`Pinner`] for `namespace` and `model`.
    ///
    /// # Errors
    ///
    /// As for [`Facades::checker`].
    fn pinner(&self, namespace: &str, model: &str) -> Result<Arc<dyn Pinner>>;

    /// The [`Reader`] for `namespace` and `model`.
    ///
    /// # Errors
    ///
    /// As for [`Facades::checker`].
    fn reader(&self, namespace: &str, model: &str) -> Result<Arc<dyn Reader>>;
}
