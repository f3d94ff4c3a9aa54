//! The auto-renewing [`Leaser`]: path-shaped keys ([`PathKey`]), the held
//! lease's guard ([`LeaseGuard`]) and what [`Leaser::lease_info_value`] reports ([`LeaseInfo`]).
//!
//! The trait lives here, not in `lease-manager`, so that a fake leaser (in `lease-testkit`, or
//! in a program's own tests) can implement it without depending on the manager. The real
//! implementation, over a running manager, is `lease_manager::ManagerLeaser`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::types::{Generation, Timestamp};

pub use crate::pathkey::{PathKey, PathKeyError};

/// The shortest lease a [`Leaser`] grants: shorter leases cannot be renewed reliably.
pub const MIN_TTL: Duration = Duration::from_secs(5);

/// What can go wrong with a [`Leaser`] operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaserError {
    /// The lease is held by another holder (Go leasers' `ErrConflict`).
    #[error("lease {key} already held")]
    Conflict {
        /// The lease.
        key: PathKey,
    },
    /// The lease's metadata could not be encoded, or decoded into the caller's type.
    #[error("metadata of lease {key}: {source}")]
    Metadata {
        /// The lease.
        key: PathKey,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A lease error: validation (a `ttl` under [`MIN_TTL`]), store failures, `Aborted`, …
    #[error(transparent)]
    Lease(#[from] Error),
}

/// What [`Leaser::lease_info_value`] (or [`LeaserExt::lease_info`]) reports about a held lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo<T = serde_json::Value> {
    /// Who holds it.
    pub holder: String,
    /// When it expires unless renewed, on the store's clock.
    pub expiry: Timestamp,
    /// The fencing generation of the holder's claim.
    pub generation: Generation,
    /// The metadata given when it was acquired, if any.
    pub metadata: Option<T>,
}

/// The implementation side of a [`LeaseGuard`]: how a particular leaser gives a lease up.
///
/// Only implementors of [`Leaser`] need this; users hold a [`LeaseGuard`].
#[async_trait]
pub trait LeaseHandle: Send + Sync + fmt::Debug {
    /// Stops renewing and gives the lease up, waiting for the answer.
    ///
    /// # Errors
    ///
    /// When the lease could not be revoked (it then expires by itself within its ttl).
    async fn release(self: Box<Self>) -> Result<(), LeaserError>;

    /// Stops renewing and gives the lease up in the background (called from `Drop`, which
    /// cannot wait).
    fn release_in_background(self: Box<Self>);
}

/// A lease held through a [`Leaser`], renewed in the background until released or dropped.
///
/// - [`LeaseGuard::generation`] is the fencing token to pass to protected resources.
/// - [`LeaseGuard::lost`] fires when the lease can no longer be vouched for (a renewal failed
///   for too long, or someone else got it), and also once the lease is released.
/// - [`LeaseGuard::release`] gives it up and waits for the answer. **Dropping** the guard
///   gives it up too, but in a background task (so it needs a tokio runtime; without one the
///   lease just expires at the end of its ttl).
#[must_use = "dropping the guard releases the lease"]
pub struct LeaseGuard {
    key: PathKey,
    generation: Generation,
    lost: CancellationToken,
    handle: Option<Box<dyn LeaseHandle>>,
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("key", &self.key)
            .field("generation", &self.generation)
            .field("lost", &self.lost.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl LeaseGuard {
    /// A guard for `key` at `generation`, whose `lost` token the leaser fires, and which gives
    /// the lease up through `handle`. For implementors of [`Leaser`].
    pub fn new(
        key: PathKey,
        generation: Generation,
        lost: CancellationToken,
        handle: Box<dyn LeaseHandle>,
    ) -> LeaseGuard {
        LeaseGuard {
            key,
            generation,
            lost,
            handle: Some(handle),
        }
    }

    /// The lease.
    pub fn key(&self) -> &PathKey {
        &self.key
    }

    /// The fencing generation of the claim that acquired the lease.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The token that fires when the lease is lost (or released).
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Whether [`LeaseGuard::lost`] has fired.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Stops renewing and gives the lease up; the lost token fires.
    ///
    /// # Errors
    ///
    /// [`LeaserError::Lease`] when the revoke failed; the lease then expires by itself.
    pub async fn release(mut self) -> Result<(), LeaserError> {
        match self.handle.take() {
            Some(handle) => handle.release().await,
            None => Ok(()),
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.release_in_background();
        }
    }
}

/// Acquires, renews and releases leases named by [`PathKey`]s.
///
/// Used as `dyn Leaser` or as a generic bound; the typed conveniences are in [`LeaserExt`].
#[async_trait]
pub trait Leaser: Send + Sync {
    /// Acquires `key` for `ttl`, storing `metadata` with it, and renews it in the background
    /// until the guard is released or dropped.
    ///
    /// Returns the guard and a clone of its lost token, which fires when a renewal fails for
    /// too long or the lease is lost (so work under the lease must stop), and on release.
    ///
    /// # Errors
    ///
    /// [`LeaserError::Conflict`] when another holder holds the lease (or this leaser already
    /// does); [`LeaserError::Lease`] with a validation error for field `ttl` when `ttl` is
    /// shorter than [`MIN_TTL`]; other [`LeaserError::Lease`] errors when the store fails.
    async fn acquire_lease(
        &self,
        key: &PathKey,
        ttl: Duration,
        metadata: Option<serde_json::Value>,
    ) -> Result<(LeaseGuard, CancellationToken), LeaserError>;

    /// The holder, expiry, generation and metadata (as JSON) of `key`; `None` when nobody
    /// holds it.
    ///
    /// # Errors
    ///
    /// [`LeaserError::Lease`] when the store fails or the information is not available.
    async fn lease_info_value(&self, key: &PathKey) -> Result<Option<LeaseInfo>, LeaserError>;
}

/// Typed conveniences over any [`Leaser`]: metadata from and into the caller's own types.
#[async_trait]
pub trait LeaserExt: Leaser {
    /// [`Leaser::acquire_lease`] with `metadata` serialised to JSON.
    ///
    /// # Errors
    ///
    /// [`LeaserError::Metadata`] when `metadata` does not serialise; otherwise as
    /// [`Leaser::acquire_lease`].
    async fn acquire_lease_with<M>(
        &self,
        key: &PathKey,
        ttl: Duration,
        metadata: &M,
    ) -> Result<(LeaseGuard, CancellationToken), LeaserError>
    where
        M: Serialize + Sync + ?Sized,
    {
        let value = serde_json::to_value(metadata).map_err(|source| LeaserError::Metadata {
            key: key.clone(),
            source,
        })?;
        self.acquire_lease(key, ttl, Some(value)).await
    }

    /// [`Leaser::lease_info_value`] with the metadata deserialised into `T`.
    ///
    /// # Errors
    ///
    /// [`LeaserError::Metadata`] when the metadata is not a `T`; otherwise as
    /// [`Leaser::lease_info_value`].
    async fn lease_info<T>(&self, key: &PathKey) -> Result<Option<LeaseInfo<T>>, LeaserError>
    where
        T: DeserializeOwned + Send,
    {
        let Some(info) = self.lease_info_value(key).await? else {
            return Ok(None);
        };
        let metadata = info
            .metadata
            .map(serde_json::from_value)
            .transpose()
            .map_err(|source| LeaserError::Metadata {
                key: key.clone(),
                source,
            })?;
        Ok(Some(LeaseInfo {
            holder: info.holder,
            expiry: info.expiry,
            generation: info.generation,
            metadata,
        }))
    }
}

impl<L: Leaser + ?Sized> LeaserExt for L {}

/// Checks a leaser ttl: at least [`MIN_TTL`].
///
/// # Errors
///
/// [`Error::Validation`] for field `ttl`.
pub fn validate_ttl(ttl: Duration) -> Result<(), Error> {
    if ttl < MIN_TTL {
        return Err(Error::validation(
            "ttl",
            format!("{ttl:?}"),
            format!("must be at least {MIN_TTL:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_must_be_at_least_five_seconds() {
        validate_ttl(MIN_TTL).unwrap();
        let err = validate_ttl(Duration::from_millis(4999)).unwrap_err();
        assert!(
            matches!(err, Error::Validation { field: "ttl", .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            r#"invalid ttl "4.999s": must be at least 5s"#
        );
    }
}
