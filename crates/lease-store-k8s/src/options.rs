//! [`StoreOptions`]: the settings both Kubernetes stores share.

use std::collections::BTreeMap;
use std::time::Duration;

use lease_core::Key;

/// Settings of a [`LeaseObjectStore`](crate::LeaseObjectStore) or
/// [`ConfigMapStore`](crate::ConfigMapStore).
///
/// ```
/// use std::time::Duration;
/// use lease_store_k8s::StoreOptions;
///
/// let options = StoreOptions::default()
///     .request_timeout(Duration::from_secs(5))
///     .trust_renew_time(false);
/// assert_eq!(options.request_timeout, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Judge expiry by the holder's `renewTime` (its wall clock) instead of by when this process
    /// observed the record change. Off by default, as in client-go: with it, a host whose clock
    /// runs ahead can take over a lease that is still valid for its holder.
    pub trust_renew_time: bool,
    /// How long one API request may take before the operation fails with
    /// [`lease_core::Error::Timeout`]. Default 10 s.
    pub request_timeout: Duration,
    /// Answer [`leases`](lease_core::Store::leases), [`lease_group`](lease_core::Store::lease_group)
    /// and [`pinned`](lease_core::Store::pinned) from the watch's cache once the watch (started by
    /// [`change_notifier`](lease_core::Store::change_notifier) or
    /// [`poll_changes`](lease_core::Store::poll_changes)) has listed everything, instead of
    /// listing. Default on: a follower then costs one watch and no reads. The answer is as
    /// fresh as the watch (other processes' writes arrive a few milliseconds late); writes
    /// never rely on it.
    pub snapshots_from_watch: bool,
    /// The field manager named on every write. Default `lease-rs`.
    pub field_manager: String,
    /// Keys bound to an explicit object name instead of the derived
    /// [`naming::object_name`](crate::naming::object_name): see [`StoreOptions::object_for`].
    /// Empty by default.
    pub objects: BTreeMap<Key, String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            trust_renew_time: false,
            request_timeout: Duration::from_secs(10),
            snapshots_from_watch: true,
            field_manager: "lease-rs".to_owned(),
            objects: BTreeMap::new(),
        }
    }
}

impl StoreOptions {
    /// Sets [`StoreOptions::trust_renew_time`].
    #[must_use]
    pub fn trust_renew_time(mut self, trust: bool) -> Self {
        self.trust_renew_time = trust;
        self
    }

    /// Sets [`StoreOptions::request_timeout`].
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`StoreOptions::snapshots_from_watch`].
    #[must_use]
    pub fn snapshots_from_watch(mut self, enabled: bool) -> Self {
        self.snapshots_from_watch = enabled;
        self
    }

    /// Sets [`StoreOptions::field_manager`].
    #[must_use]
    pub fn field_manager(mut self, manager: impl Into<String>) -> Self {
        self.field_manager = manager.into();
        self
    }

    /// Binds `key` to the object named `name` in the store's namespace, instead of the name
    /// derived from the key. Use it to share one lock object with other programs, such as
    /// client-go's leader election on a Lease named `my-controller-lock`.
    ///
    /// Semantics on a bound object, compatible with client-go's `LeaseLock`:
    ///
    /// - an object without this crate's annotations (written by client-go or by hand) is held by
    ///   its `holderIdentity` for `leaseDurationSeconds` from when this process observed its
    ///   record change (as client-go judges it);
    /// - our writes keep client-go's fields meaningful: `holderIdentity`,
    ///   `leaseDurationSeconds` (rounded up), `acquireTime`, `renewTime` (changed on every
    ///   renewal) and `leaseTransitions` (one more on every claim, so also when the holder
    ///   changes); a revoke clears `holderIdentity` as client-go's release does;
    /// - every write is conditional on the `resourceVersion` it was decided on, so a Rust
    ///   candidate and a client-go candidate never both succeed in taking the lock;
    /// - the store also watches the bound object by name (it may lack this crate's labels), so
    ///   a change by client-go wakes waiters as promptly as our own.
    ///
    /// A name that is not a valid object name (a DNS-1123 subdomain of at most 253
    /// characters), or one bound to two keys, makes every operation on those keys fail with
    /// [`lease_core::Error::Validation`] before any request.
    ///
    /// ```
    /// use lease_core::Key;
    /// use lease_store_k8s::StoreOptions;
    ///
    /// let key = Key::new("election", "prod", "controller");
    /// let options = StoreOptions::default().object_for(key.clone(), "my-controller-lock");
    /// assert_eq!(options.objects[&key], "my-controller-lock");
    /// ```
    #[must_use]
    pub fn object_for(mut self, key: Key, name: impl Into<String>) -> Self {
        self.objects.insert(key, name.into());
        self
    }
}
