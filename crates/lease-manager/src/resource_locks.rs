//! [`ResourceLocks`]: advisory locks on resources for transactions, one
//! lease per resource, held by the transaction's name, over any store through the manager.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{
    Checker, Claimer, Error, Generation, MAX_NAME_BYTES, Reader, Request, Revoker,
    validate_duration, validate_string,
};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::error::shortened;

/// The bytes escaped in each part of a lease name: `/` (the separator), `%` (the escape),
/// `.`, `#`, `$` and whitespace (which lease names may not contain), and every non-ASCII byte.
const PART: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'#')
    .add(b'$')
    .add(b'%')
    .add(b'.')
    .add(b'/');

/// The prefix of every resource lock's lease name.
pub const LEASE_NAME_PREFIX: &str = "resource-lock";

/// Identifies a resource to lock: an API group, kind, namespace and name (Kubernetes-style;
/// `group` is empty for the core group, `namespace` for cluster-scoped resources).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ResourceKey {
    /// The API group (`""` for the core group).
    pub group: String,
    /// The kind (`ConfigMap`, `Deployment`, …).
    pub kind: String,
    /// The namespace (`""` when cluster-scoped).
    pub namespace: String,
    /// The resource's name.
    pub name: String,
}

impl ResourceKey {
    /// A key from its four parts.
    pub fn new(
        group: impl Into<String>,
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> ResourceKey {
        ResourceKey {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceKey {
    /// `group/kind namespace/name`, e.g. `apps/Deployment prod/web` (`core` for the empty
    /// group, no namespace when cluster-scoped).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        if self.namespace.is_empty() {
            write!(f, "{group}/{} {}", self.kind, self.name)
        } else {
            write!(f, "{group}/{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The lease name of `key`'s lock: deterministic, distinct for distinct keys (each part is
/// percent-escaped, so the `/` separators are unambiguous), and a valid lease name for
/// [`validate_string`].
///
/// ```
/// use lease_manager::{ResourceKey, lease_name};
/// let key = ResourceKey::new("apps", "Deployment", "prod", "web.v2");
/// assert_eq!(lease_name(&key), "resource-lock/apps/Deployment/prod/web%2Ev2");
/// assert_eq!(lease_name(&ResourceKey::new("", "Node", "", "n 1")), "resource-lock//Node//n%201");
/// ```
pub fn lease_name(key: &ResourceKey) -> String {
    let mut name = String::from(LEASE_NAME_PREFIX);
    for part in [&key.group, &key.kind, &key.namespace, &key.name] {
        name.push('/');
        name.extend(utf8_percent_encode(part, PART));
    }
    name
}

/// Which lease operation failed, for [`LeaseOpError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseOp {
    /// Claiming the lease for [`ResourceLocks::acquire`].
    Creating,
    /// Reading the lease (its holder, or whether the transaction holds it).
    Getting,
    /// Revoking it for [`ResourceLocks::release`].
    Deleting,
    /// Extending it for [`ResourceLocks::renew`].
    Renewing,
    /// Claiming it again after it was found expired during [`ResourceLocks::acquire`].
    TakingOver,
}

impl fmt::Display for LeaseOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseOp::Creating => "creating",
            LeaseOp::Getting => "getting",
            LeaseOp::Deleting => "deleting",
            LeaseOp::Renewing => "renewing",
            LeaseOp::TakingOver => "taking over",
        })
    }
}

/// A lease operation failed: what was being done, to which lease, and the lease error.
#[derive(Debug, thiserror::Error)]
#[error("{op} lease {lease_name}: {source}")]
pub struct LeaseOpError {
    /// The operation.
    pub op: LeaseOp,
    /// The lease.
    pub lease_name: String,
    /// The error of the lease operation.
    #[source]
    pub source: Error,
}

/// What can go wrong with a resource lock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceLockError {
    /// Another transaction holds the lock.
    #[error("resource lease {lease_name} is locked by transaction {holder}")]
    AlreadyLocked {
        /// The lease.
        lease_name: String,
        /// The transaction holding it.
        holder: String,
    },
    /// The transaction's lock is gone: it expired, or was never taken.
    #[error("lock lease {lease_name} has expired")]
    LockExpired {
        /// The lease.
        lease_name: String,
    },
    /// A lease operation failed.
    #[error(transparent)]
    Op(#[from] LeaseOpError),
    /// An input was invalid (a transaction name, a timeout, a resource key), before any call.
    #[error(transparent)]
    Invalid(Error),
}

/// A lock taken by [`ResourceLocks::acquire`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockedResource {
    /// The lock's lease name (see [`lease_name`]); pass it to release and renew.
    pub lease_name: String,
    /// The fencing generation of the claim.
    pub generation: Generation,
}

/// Transaction locks on resources: one lease per resource, held by the transaction's name.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lease_core::DefaultSecretary;
/// use lease_manager::{Manager, ManagerConfig, ResourceKey, ResourceLockError, ResourceLocks};
/// use lease_testkit::{FakeClock, InMemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = FakeClock::new();
/// let manager = Manager::start(
///     ManagerConfig::new(InMemoryStore::new(clock.as_clock()), clock.as_clock())
///         .with_default_secretary(Arc::new(DefaultSecretary)),
/// )?;
/// let locks = ResourceLocks::new(&manager, "txn-locks", "cluster-1")?;
/// let web = ResourceKey::new("apps", "Deployment", "prod", "web");
///
/// let lock = locks.acquire(&web, "txn-1", Duration::from_secs(30)).await?;
/// match locks.acquire(&web, "txn-2", Duration::from_secs(30)).await {
///     Err(ResourceLockError::AlreadyLocked { holder, .. }) => assert_eq!(holder, "txn-1"),
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(locks.renew(&lock.lease_name, "txn-1", Duration::from_secs(30)).await?, lock.generation);
/// locks.release(&lock.lease_name, "txn-2").await?; // not txn-2's: a no-op
/// locks.release_all([lock.lease_name.as_str()], "txn-1").await?;
/// locks.acquire(&web, "txn-2", Duration::from_secs(30)).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ResourceLocks {
    claimer: Arc<dyn Claimer>,
    revoker: Arc<dyn Revoker>,
    checker: Arc<dyn Checker>,
    reader: Arc<dyn Reader>,
}

impl fmt::Debug for ResourceLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceLocks").finish_non_exhaustive()
    }
}

impl ResourceLocks {
    /// Locks whose leases live in `namespace`/`model` of `manager`.
    ///
    /// # Errors
    ///
    /// As [`lease_core::Facades::claimer`]: validation errors, or
    /// [`Error::Aborted`] when the manager has stopped.
    pub fn new(
        manager: &dyn lease_core::Facades,
        namespace: &str,
        model: &str,
    ) -> Result<ResourceLocks, Error> {
        Ok(ResourceLocks {
            claimer: manager.claimer(namespace, model)?,
            revoker: manager.revoker(namespace, model)?,
            checker: manager.checker(namespace, model)?,
            reader: manager.reader(namespace, model)?,
        })
    }

    /// Locks `key` for transaction `txn` for `timeout`: creates the lease, or takes it over
    /// when it has expired; when `txn` already holds it, extends it. Returns the lease name and
    /// the claim's fencing generation.
    ///
    /// # Errors
    ///
    /// [`ResourceLockError::AlreadyLocked`] naming the holder when another transaction holds
    /// it; [`ResourceLockError::Invalid`] for an empty kind or name, a key whose lease name
    /// would be over lease-core's [`MAX_NAME_BYTES`] (the error names the longest part), a bad
    /// `txn` or a zero `timeout`; [`ResourceLockError::Op`] (`creating`, `getting`, `taking over`) when a
    /// lease operation fails.
    pub async fn acquire(
        &self,
        key: &ResourceKey,
        txn: &str,
        timeout: Duration,
    ) -> Result<LockedResource, ResourceLockError> {
        if key.kind.is_empty() {
            return Err(ResourceLockError::Invalid(Error::validation(
                "kind", "", "is empty",
            )));
        }
        if key.name.is_empty() {
            return Err(ResourceLockError::Invalid(Error::validation(
                "name", "", "is empty",
            )));
        }
        validate_key_length(key)?;
        validate_inputs(txn, timeout)?;
        let name = lease_name(key);
        let mut op = LeaseOp::Creating;
        // Once to create, and once more to take over a lease that expired between the denied
        // claim and the read of its holder.
        for _ in 0..2 {
            match self.claimer.claim(&name, Request::new(txn, timeout)).await {
                Ok(info) => {
                    return Ok(LockedResource {
                        lease_name: name,
                        generation: info.generation,
                    });
                }
                Err(e) if e.is_claim_denied() => match self.holder(&name).await? {
                    Some(holder) => {
                        return Err(ResourceLockError::AlreadyLocked {
                            lease_name: name,
                            holder,
                        });
                    }
                    None => op = LeaseOp::TakingOver,
                },
                Err(source) => return Err(op_error(op, &name, source)),
            }
        }
        Err(op_error(op, &name, Error::ClaimDenied))
    }

    /// Releases `txn`'s lock on `lease_name`. A no-op when another transaction holds it, or
    /// nobody does.
    ///
    /// # Errors
    ///
    /// [`ResourceLockError::Op`] (`getting`, `deleting`) when a lease operation fails;
    /// [`ResourceLockError::Invalid`] for a bad `txn`.
    pub async fn release(&self, lease_name: &str, txn: &str) -> Result<(), ResourceLockError> {
        validate_string("txn", txn).map_err(ResourceLockError::Invalid)?;
        match self.checker.token(lease_name, txn).check().await {
            Ok(_) => {}
            Err(e) if e.is_not_held() => return Ok(()),
            Err(source) => return Err(op_error(LeaseOp::Getting, lease_name, source)),
        }
        match self.revoker.revoke(lease_name, txn).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_held() => Ok(()),
            Err(source) => Err(op_error(LeaseOp::Deleting, lease_name, source)),
        }
    }

    /// Releases each of `lease_names` (every one is tried) and returns the first error.
    ///
    /// # Errors
    ///
    /// The first error of [`ResourceLocks::release`].
    pub async fn release_all<I, S>(
        &self,
        lease_names: I,
        txn: &str,
    ) -> Result<(), ResourceLockError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut first = None;
        for name in lease_names {
            if let Err(e) = self.release(name.as_ref(), txn).await
                && first.is_none()
            {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Extends `txn`'s lock on `lease_name` to last `timeout` from now; returns its (unchanged)
    /// fencing generation.
    ///
    /// # Errors
    ///
    /// [`ResourceLockError::LockExpired`] when the lease is gone or expired (even if nobody
    /// took it); [`ResourceLockError::AlreadyLocked`] naming the holder when another
    /// transaction holds it; [`ResourceLockError::Op`] (`getting`, `renewing`) when a lease
    /// operation fails; [`ResourceLockError::Invalid`] for a bad `txn` or `timeout`.
    pub async fn renew(
        &self,
        lease_name: &str,
        txn: &str,
        timeout: Duration,
    ) -> Result<Generation, ResourceLockError> {
        validate_inputs(txn, timeout)?;
        let generation = match self.checker.token(lease_name, txn).check().await {
            Ok(generation) => generation,
            Err(e) if e.is_not_held() => return Err(self.not_ours(lease_name).await),
            Err(source) => return Err(op_error(LeaseOp::Getting, lease_name, source)),
        };
        match self
            .claimer
            .claim(lease_name, Request::new(txn, timeout))
            .await
        {
            Ok(info) if info.generation == generation => Ok(generation),
            Ok(_) => {
                // It expired between the check and the extend, and the extend claimed it
                // anew: the transaction's lock did lapse. Give the new claim back.
                let _ = self.revoker.revoke(lease_name, txn).await;
                Err(ResourceLockError::LockExpired {
                    lease_name: lease_name.to_owned(),
                })
            }
            Err(e) if e.is_claim_denied() => Err(self.not_ours(lease_name).await),
            Err(source) => Err(op_error(LeaseOp::Renewing, lease_name, source)),
        }
    }

    /// The error for a lease `txn` does not hold: who holds it, if anyone.
    async fn not_ours(&self, lease_name: &str) -> ResourceLockError {
        match self.holder(lease_name).await {
            Ok(Some(holder)) => ResourceLockError::AlreadyLocked {
                lease_name: lease_name.to_owned(),
                holder,
            },
            Ok(None) => ResourceLockError::LockExpired {
                lease_name: lease_name.to_owned(),
            },
            Err(e) => e,
        }
    }

    async fn holder(&self, lease_name: &str) -> Result<Option<String>, ResourceLockError> {
        let leases = self
            .reader
            .leases()
            .await
            .map_err(|source| op_error(LeaseOp::Getting, lease_name, source))?;
        Ok(leases.get(lease_name).cloned())
    }
}

/// Checks that `key`'s lease name is within lease-core's name limit; when it is not, the error
/// names the longest part once escaped (the first of equals), the part the caller can shorten.
fn validate_key_length(key: &ResourceKey) -> Result<(), ResourceLockError> {
    let parts = [
        ("group", &key.group),
        ("kind", &key.kind),
        ("namespace", &key.namespace),
        ("name", &key.name),
    ];
    let escaped = parts.map(|(_, part)| {
        utf8_percent_encode(part, PART)
            .map(str::len)
            .fold(0usize, usize::saturating_add)
    });
    // The prefix and one `/` before each part.
    let fixed = LEASE_NAME_PREFIX.len() + parts.len();
    let total = escaped
        .iter()
        .fold(fixed, |sum, &len| sum.saturating_add(len));
    if total <= MAX_NAME_BYTES {
        return Ok(());
    }
    let mut longest = 0;
    for (i, &len) in escaped.iter().enumerate() {
        if len > escaped[longest] {
            longest = i;
        }
    }
    let (field, part) = parts[longest];
    Err(ResourceLockError::Invalid(Error::validation(
        field,
        shortened(part),
        format!(
            "is {} bytes long ({} once escaped), making a lease name of {total} bytes, over \
             the limit of {MAX_NAME_BYTES} bytes for a name: a resource key's four parts may \
             take at most {} bytes together once escaped",
            part.len(),
            escaped[longest],
            MAX_NAME_BYTES - fixed,
        ),
    )))
}

fn validate_inputs(txn: &str, timeout: Duration) -> Result<(), ResourceLockError> {
    validate_string("txn", txn).map_err(ResourceLockError::Invalid)?;
    validate_duration(timeout).map_err(ResourceLockError::Invalid)
}

fn op_error(op: LeaseOp, lease_name: &str, source: Error) -> ResourceLockError {
    if source.is_validation() {
        return ResourceLockError::Invalid(source);
    }
    ResourceLockError::Op(LeaseOpError {
        op,
        lease_name: lease_name.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_valid_and_injective() {
        let keys = [
            ResourceKey::new("", "Pod", "ns", "a"),
            ResourceKey::new("", "Pod", "ns/a", ""),
            ResourceKey::new("", "Pod/ns", "a", ""),
            ResourceKey::new("a.b", "K", "n s", "x#$%"),
            ResourceKey::new("a%2Eb", "K", "n s", "x#$%"),
            ResourceKey::new("é", "K", "\u{a0}", "x"),
        ];
        let names: std::collections::BTreeSet<String> = keys.iter().map(lease_name).collect();
        assert_eq!(names.len(), keys.len(), "{names:?}");
        for name in &names {
            validate_string("lease", name).unwrap();
        }
        assert_eq!(
            lease_name(&keys[3]),
            "resource-lock/a%2Eb/K/n%20s/x%23%24%25"
        );
    }

    #[test]
    fn display_and_op_names() {
        assert_eq!(
            ResourceKey::new("apps", "Deployment", "prod", "web").to_string(),
            "apps/Deployment prod/web"
        );
        assert_eq!(
            ResourceKey::new("", "Node", "", "n1").to_string(),
            "core/Node n1"
        );
        let e = LeaseOpError {
            op: LeaseOp::TakingOver,
            lease_name: "l".into(),
            source: Error::Timeout,
        };
        assert_eq!(
            e.to_string(),
            "taking over lease l: lease operation timed out"
        );
        assert!(lease_core::is_timeout(&e));
    }
}
