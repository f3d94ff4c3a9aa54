//! [`ConfigMapLock`]: the API of Go's ConfigMap locks in the style of operator-sdk's leader lock
//! (`lock.New(client, name, timeout)`, `Acquire`, `Release`, `WithLabels`, `GetName`,
//! `GetTimeout`, `GetCMData`) as a facade over
//! [`ConfigMapStore`]: the lock is the ConfigMap named exactly `name`, owned by the running pod,
//! expiring `timeout` after it was acquired (or never).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Clock, Generation, Key, Request, Store, SystemClock};
use tokio::sync::Mutex;

use crate::configmap::{ConfigMapStore, DATA_DURATION, DATA_EXPIRY, DATA_HOLDER, NEVER, OwnerPod};
use crate::options::StoreOptions;

/// The key namespace of every [`ConfigMapLock`]'s lease (its model is the Kubernetes
/// namespace, its lease the lock's name with `.` escaped as `%2E`).
pub const CONFIGMAP_LOCK_NAMESPACE: &str = "configmap-lock";

/// The first pause between attempts of [`ConfigMapLock::acquire`]; it grows ×1.6 per attempt
/// up to [`MAX_BACKOFF`], jittered by up to +20 %.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between attempts (a change of the lock wakes the waiter earlier).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a [`ConfigMapLock`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigMapLockError {
    /// [`ConfigMapLock::acquire`] did not get the lock within the lock's timeout.
    #[error(
        "timed out after {timeout:?} acquiring ConfigMap lock {namespace}/{name} (held by {holder:?})"
    )]
    Timeout {
        /// The Kubernetes namespace.
        namespace: String,
        /// The lock's name.
        name: String,
        /// The timeout.
        timeout: Duration,
        /// The holder when last seen, if known.
        holder: Option<String>,
    },
    /// [`ConfigMapLock::release`]: the lock is not ours (someone else holds it, or nobody).
    #[error("ConfigMap lock {namespace}/{name} is not held by {identity:?} (holder: {holder:?})")]
    NotOurs {
        /// The Kubernetes namespace.
        namespace: String,
        /// The lock's name.
        name: String,
        /// Our identity.
        identity: String,
        /// The actual holder; `None` when the lock is free.
        holder: Option<String>,
    },
    /// The store failed (validation, API errors other than contention, permissions).
    #[error(transparent)]
    Lease(#[from] lease_core::Error),
}

/// A lock on a ConfigMap named `name`: [`ConfigMapLock::acquire`] retries until it
/// holds the lock or the timeout passes; [`ConfigMapLock::release`] gives it back, failing
/// when the lock is not ours.
///
/// - The ConfigMap is named exactly `name`, in the client's default namespace unless
///   [`ConfigMapLock::with_namespace`] says otherwise, carries the labels of
///   [`ConfigMapLock::with_labels`], and is owned by the running pod (from `POD_NAME` and
///   `POD_UID`, see [`OwnerPod::from_env`], or [`ConfigMapLock::with_owner`]) so Kubernetes'
///   garbage collector frees a lock whose pod is deleted.
/// - A `timeout` of `Some(t)` makes the lock expire `t` after it was acquired (judged, as the
///   stores do, by when other processes observed it change) and bounds
///   [`ConfigMapLock::acquire`] to `t` from its first look at the lock; `None` (the Go lock's
///   negative timeout) makes a lock that never expires, and an `acquire` that waits as long as
///   it takes.
/// - Unlike the Go lock, release clears the holder instead of deleting the ConfigMap, so the
///   fencing generation survives; a released lock is free for the next `acquire`.
/// - Waiting: every attempt is a conditional write through the [`ConfigMapStore`]; between
///   attempts it waits for the store's change notifier (a watch: a release wakes waiters at
///   once), the lock's expiry, or a jittered exponential backoff (50 ms ×1.6, at most 2 s),
///   whichever is first.
///
/// ```no_run
/// use std::collections::BTreeMap;
/// use std::time::Duration;
/// use lease_store_k8s::ConfigMapLock;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = kube::Client::try_default().await?;
/// let lock = ConfigMapLock::new(client, "nightly-backup", Some(Duration::from_secs(300)))
///     .with_labels(BTreeMap::from([("app".to_owned(), "backup".to_owned())]));
/// let generation = lock.acquire().await?;
/// println!("backing up with fencing token {generation}");
/// lock.release().await?;
/// # Ok(())
/// # }
/// ```
pub struct ConfigMapLock {
    client: kube::Client,
    namespace: String,
    name: String,
    timeout: Option<Duration>,
    identity: String,
    labels: BTreeMap<String, String>,
    owner: Option<OwnerPod>,
    clock: Arc<dyn Clock>,
    store: Mutex<Option<ConfigMapStore>>,
}

impl std::fmt::Debug for ConfigMapLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMapLock")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("identity", &self.identity)
            .field("labels", &self.labels)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// `value` with every `.` escaped as `%2E` (and `%` as `%25`), so a Kubernetes name makes a
/// valid lease name or holder.
fn escape(value: &str) -> String {
    value.replace('%', "%25").replace('.', "%2E")
}

impl ConfigMapLock {
    /// A lock on the ConfigMap `name` in `client`'s default namespace, expiring `timeout`
    /// after it is acquired (`None`: never). Its identity is the pod's name (`POD_NAME`, else
    /// `HOSTNAME`) and this process's id; its owner [`OwnerPod::from_env`]. No request is made
    /// until [`ConfigMapLock::acquire`] or [`ConfigMapLock::release`].
    pub fn new(client: kube::Client, name: impl Into<String>, timeout: Option<Duration>) -> Self {
        let namespace = client.default_namespace().to_owned();
        let host = ["POD_NAME", "HOSTNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "lease-rs".to_owned());
        let identity = format!("{}_{}", escape(&host), std::process::id());
        ConfigMapLock {
            client,
            namespace,
            name: name.into(),
            timeout,
            identity,
            labels: BTreeMap::new(),
            owner: OwnerPod::from_env(),
            clock: Arc::new(SystemClock::new()),
            store: Mutex::new(None),
        }
    }

    /// The lock in Kubernetes namespace `namespace` instead of the client's default.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Labels to add to the lock's ConfigMap (the Go lock's `WithLabels`).
    #[must_use]
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// The holder identity (unique per process; no whitespace and none of `.#$`).
    #[must_use]
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    /// The pod owning the lock's ConfigMap; `None` for no owner reference.
    #[must_use]
    pub fn with_owner(mut self, owner: Option<OwnerPod>) -> Self {
        self.owner = owner;
        self
    }

    /// The clock expiry and waits are judged on (default [`SystemClock`]).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The lock's name: the ConfigMap's (the Go lock's `GetName`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Kubernetes namespace of the ConfigMap.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The timeout (the Go lock's `GetTimeout`); `None` for a lock that never expires.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// This lock's holder identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The ConfigMap `data` this lock writes that does not change with time (the Go lock's
    /// `GetCMData`): the holder, and the duration in seconds (rounded up) or `expiry: never`.
    /// Each acquire also writes `acquireTime`, `renewTime`, `leaseTransitions` and, with a
    /// timeout, `expiry` (see [`ConfigMapStore`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let (service, _) = tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
    /// # let client = kube::Client::new(service, "default");
    /// use lease_store_k8s::ConfigMapLock;
    ///
    /// let lock = ConfigMapLock::new(client, "my-lock", None).with_identity("pod-a");
    /// assert_eq!(lock.data()["holderIdentity"], "pod-a");
    /// assert_eq!(lock.data()["expiry"], "never");
    /// # }
    /// ```
    pub fn data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::new();
        data.insert(DATA_HOLDER.to_owned(), self.identity.clone());
        match self.timeout {
            Some(t) => {
                let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
                data.insert(DATA_DURATION.to_owned(), secs.max(1).to_string());
            }
            None => {
                data.insert(DATA_EXPIRY.to_owned(), NEVER.to_owned());
            }
        }
        data
    }

    /// The lease key of this lock.
    pub fn key(&self) -> Key {
        Key::new(
            CONFIGMAP_LOCK_NAMESPACE,
            escape(&self.namespace),
            escape(&self.name),
        )
    }

    fn build_store(&self) -> ConfigMapStore {
        let options = StoreOptions::default().object_for(self.key(), self.name.clone());
        let mut builder =
            ConfigMapStore::builder(self.client.clone(), &*self.namespace, self.clock.clone())
                .owner(self.owner.clone())
                .labels(self.labels.clone())
                .options(options);
        if self.timeout.is_none() {
            builder = builder.without_expiry();
        }
        builder.build()
    }

    fn request(&self) -> Request {
        // Without a timeout the store ignores the duration (the lock never expires).
        Request::new(
            &*self.identity,
            self.timeout.unwrap_or(Duration::from_secs(1)),
        )
    }

    /// Takes the lock, retrying until it is ours or the timeout has passed (the Go lock's
    /// `Acquire`), and returns its fencing generation. The timeout counts from the first
    /// attempt's look at the lock, so a stale lock (one nobody renews) whose duration is at
    /// most this lock's timeout is taken over within one call, once it has expired as this
    /// process judges it. Acquiring a lock this identity already
    /// holds succeeds at once with the current generation (it does not extend it).
    ///
    /// # Errors
    ///
    /// [`ConfigMapLockError::Timeout`] when the timeout passed first;
    /// [`ConfigMapLockError::Lease`] for a validation error (a zero timeout, a bad identity or
    /// name) or a store failure other than a transient one (transient failures are retried).
    pub async fn acquire(&self) -> Result<Generation, ConfigMapLockError> {
        let mut slot = self.store.lock().await;
        let store = slot.get_or_insert_with(|| self.build_store());
        let key = self.key();
        // Set after the first attempt: see below.
        let mut deadline = None;
        let mut backoff = FIRST_BACKOFF;
        let mut changes = None;
        let mut holder = None;
        loop {
            let mut wake = None;
            let attempted_at = self.clock.now();
            match store.claim_lease(&key, &self.request()).await {
                Ok(info) => return Ok(info.generation),
                Err(e) if e.is_held() || e.is_invalid() => {
                    // Who holds it, and until when (Invalid: maybe we already do).
                    if let Ok(leases) = store.leases(std::slice::from_ref(&key)).await
                        && let Some(info) = leases.get(&key)
                    {
                        if info.holder == self.identity {
                            return Ok(info.generation);
                        }
                        holder = Some(info.holder.clone());
                        wake = Some(info.expiry);
                    }
                }
                Err(e) if e.is_timeout() => {
                    tracing::debug!(error = %e, lock = %self.name, "acquiring the ConfigMap lock failed; retrying");
                }
                Err(e) => return Err(e.into()),
            }
            let now = self.clock.now();
            // The timeout runs from the end of the first attempt, not from the call: the store
            // counts a lock it had not seen before as observed at that attempt's read, so a
            // deadline taken earlier would fall before the expiry of a stale lock whose
            // duration equals our timeout, and the waiter would give up just before it could
            // take the lock over (the Go lock's promise is that it takes it over).
            if deadline.is_none() {
                deadline = self.timeout.map(|t| now.saturating_add(t));
            }
            // Past the deadline, one more attempt is owed when the lock expires by then and no
            // attempt has started since it expired (the pauses and the watch's wake-ups may
            // have put the last one just before the expiry).
            let owed = matches!((wake, deadline), (Some(w), Some(d)) if w <= d && attempted_at < w);
            if let (Some(deadline), Some(timeout)) = (deadline, self.timeout)
                && now >= deadline
                && !owed
            {
                return Err(ConfigMapLockError::Timeout {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    timeout,
                    holder,
                });
            }
            let pause = backoff.mul_f64(1.0 + 0.2 * fastrand::f64());
            backoff = backoff.mul_f64(1.6).min(MAX_BACKOFF);
            let mut until = now.saturating_add(pause);
            for limit in [wake, deadline].into_iter().flatten() {
                until = until.min(limit);
            }
            if changes.is_none() {
                changes = store.change_notifier();
            }
            let sleep = self.clock.sleep_until(until);
            match &mut changes {
                Some(rx) => {
                    tokio::select! {
                        () = sleep => {}
                        changed = rx.changed() => {
                            if changed.is_err() {
                                changes = None;
                            }
                        }
                    }
                }
                None => sleep.await,
            }
        }
    }

    /// Gives the lock back (the Go lock's `Release`): clears the holder, keeping the ConfigMap
    /// and its generation.
    ///
    /// # Errors
    ///
    /// [`ConfigMapLockError::NotOurs`] when another identity holds the lock, or nobody does
    /// (never acquired, released, or expired); [`ConfigMapLockError::Lease`] for store
    /// failures.
    pub async fn release(&self) -> Result<(), ConfigMapLockError> {
        let mut slot = self.store.lock().await;
        let store = slot.get_or_insert_with(|| self.build_store());
        let key = self.key();
        match store.revoke_lease(&key, &self.identity).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_held() || e.is_invalid() => {
                let holder = store
                    .leases(std::slice::from_ref(&key))
                    .await
                    .ok()
                    .and_then(|l| l.get(&key).map(|i| i.holder.clone()));
                Err(ConfigMapLockError::NotOurs {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    identity: self.identity.clone(),
                    holder,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}
