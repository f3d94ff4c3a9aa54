//! [`FakeLeaser`]: a [`Leaser`] for unit tests of code that acquires auto-renewing leases,
//! backed by an [`InMemoryStore`] and a [`FakeClock`] (the seed's `FakeLeaser`).
//!
//! It renews perfectly: instead of a background task on a timer (which would add sleepers to
//! the fake clock and make `wait_for_sleepers` counts depend on it), a held lease is pinned in
//! the store, so it never expires however far the test moves the clock. A test makes a lease
//! fail with [`FakeLeaser::lose`], which fires the guard's lost token as a failed renewal would.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use lease_core::{CancellationToken, Key, Request, Store};
use lease_core::{LeaseGuard, LeaseHandle, LeaseInfo, Leaser, LeaserError, PathKey, validate_ttl};
use tokio::sync::Mutex;

use crate::{FakeClock, InMemoryStore};

/// The namespace of the in-memory store's keys for leaser leases.
pub const FAKE_LEASER_NAMESPACE: &str = "leaser";
/// The model of the in-memory store's keys for leaser leases.
pub const FAKE_LEASER_MODEL: &str = "fake";

struct Held {
    holder: String,
    lost: CancellationToken,
}

/// Holder ids are unique in the process, not per fake: two fakes on one backing must never
/// share a holder name, or one's late release would revoke the other's lease.
static NEXT_HOLDER: AtomicU64 = AtomicU64::new(1);

struct Shared {
    store: Mutex<InMemoryStore>,
    clock: FakeClock,
    held: StdMutex<BTreeMap<PathKey, Held>>,
}

impl Shared {
    fn held(&self) -> MutexGuard<'_, BTreeMap<PathKey, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Unpins and revokes `key` for `holder` and forgets it; fires its lost token.
    async fn give_up(&self, key: &PathKey, holder: &str) -> Result<(), LeaserError> {
        let store_key = store_key(key);
        {
            let mut held = self.held();
            if held.get(key).is_some_and(|h| h.holder == holder)
                && let Some(h) = held.remove(key)
            {
                h.lost.cancel();
            }
        }
        let mut store = self.store.lock().await;
        store.unpin_lease(&store_key, holder).await?;
        match store.revoke_lease(&store_key, holder).await {
            // Already gone (lost, or revoked behind our back): nothing left to give up.
            Err(e) if e.is_invalid() || e.is_not_held() => Ok(()),
            other => other.map_err(LeaserError::from),
        }
    }
}

/// The in-memory store's key for a leaser key: its text form, which always passes validation.
fn store_key(key: &PathKey) -> Key {
    Key::new(FAKE_LEASER_NAMESPACE, FAKE_LEASER_MODEL, key.to_string())
}

/// A fake [`Leaser`] for users' unit tests: acquisitions, conflicts, metadata, release (also on
/// drop) and loss, with no real time passing and no background task.
///
/// Cloning gives another handle on the same fake.
///
/// ```
/// use std::time::Duration;
/// use lease_core::{Leaser, LeaserError, LeaserExt, PathKey};
/// use lease_testkit::{FakeClock, FakeLeaser};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let leaser = FakeLeaser::new(FakeClock::new());
/// let key = PathKey::system(["runner", "nightly-backup"]).unwrap();
///
/// // The code under test acquires the lease...
/// let (guard, lost) = leaser
///     .acquire_lease_with(&key, Duration::from_secs(30), &serde_json::json!({"pid": 7}))
///     .await
///     .unwrap();
/// // ...a second acquisition conflicts...
/// let again = leaser.acquire_lease(&key, Duration::from_secs(30), None).await;
/// assert!(matches!(again, Err(LeaserError::Conflict { .. })));
/// // ...and the test decides that renewal fails.
/// assert!(leaser.lose(&key).await);
/// assert!(lost.is_cancelled());
/// assert!(guard.is_lost());
/// # }
/// ```
#[derive(Clone)]
pub struct FakeLeaser {
    shared: Arc<Shared>,
}

impl fmt::Debug for FakeLeaser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeLeaser")
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

impl FakeLeaser {
    /// A fake leaser on a fresh in-memory store driven by `clock`.
    pub fn new(clock: FakeClock) -> FakeLeaser {
        let store = InMemoryStore::new(clock.as_clock());
        FakeLeaser::with_store(store, clock)
    }

    /// A fake leaser on `store` (say, a sibling of one the test inspects), driven by `clock`.
    pub fn with_store(store: InMemoryStore, clock: FakeClock) -> FakeLeaser {
        FakeLeaser {
            shared: Arc::new(Shared {
                store: Mutex::new(store),
                clock,
                held: StdMutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Another instance on the same backing, for inspecting leases in a test. Keys are in
    /// namespace [`FAKE_LEASER_NAMESPACE`], model [`FAKE_LEASER_MODEL`], named by the
    /// [`PathKey`]'s text.
    pub async fn store(&self) -> InMemoryStore {
        self.shared.store.lock().await.sibling()
    }

    /// The fake clock.
    pub fn clock(&self) -> &FakeClock {
        &self.shared.clock
    }

    /// The keys currently held through this fake, in order.
    pub fn held(&self) -> Vec<PathKey> {
        self.shared.held().keys().cloned().collect()
    }

    /// Whether `key` is currently held through this fake.
    pub fn is_held(&self, key: &PathKey) -> bool {
        self.shared.held().contains_key(key)
    }

    /// Makes the lease on `key` fail as a lost renewal would: its lost token fires and the
    /// lease is gone from the store (another acquisition may take it). Returns whether `key`
    /// was held.
    pub async fn lose(&self, key: &PathKey) -> bool {
        let holder = self.shared.held().get(key).map(|h| h.holder.clone());
        match holder {
            Some(holder) => {
                // The lost token fires before the store is touched, so the lease counts as lost
                // even if the in-memory revoke were to fail; there is nothing to report then.
                let _ = self.shared.give_up(key, &holder).await;
                true
            }
            None => false,
        }
    }
}

/// How a [`FakeLeaser`]'s guard gives its lease up.
struct FakeHandle {
    shared: Arc<Shared>,
    key: PathKey,
    holder: String,
}

impl fmt::Debug for FakeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeHandle")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .finish()
    }
}

#[async_trait]
impl LeaseHandle for FakeHandle {
    async fn release(self: Box<Self>) -> Result<(), LeaserError> {
        self.shared.give_up(&self.key, &self.holder).await
    }

    fn release_in_background(self: Box<Self>) {
        // The in-memory store never waits, so the release completes in one poll unless the
        // store's lock is contended; then it finishes on the runtime, if there is one.
        let FakeHandle {
            shared,
            key,
            holder,
        } = *self;
        let release = async move {
            // A failed background release has nobody to report to; the lost token has fired.
            let _ = shared.give_up(&key, &holder).await;
        };
        let mut release = Box::pin(release);
        if (&mut release).now_or_never().is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(release);
        }
    }
}

#[async_trait]
impl Leaser for FakeLeaser {
    async fn acquire_lease(
        &self,
        key: &PathKey,
        ttl: Duration,
        metadata: Option<serde_json::Value>,
    ) -> Result<(LeaseGuard, CancellationToken), LeaserError> {
        validate_ttl(ttl)?;
        let n = NEXT_HOLDER.fetch_add(1, Ordering::Relaxed);
        let holder = format!("fake-leaser-{n}");
        let store_key = store_key(key);
        let request = Request {
            holder: holder.clone(),
            duration: ttl,
            metadata,
        };
        let info = {
            let mut store = self.shared.store.lock().await;
            let info = match store.claim_lease(&store_key, &request).await {
                Ok(info) => info,
                Err(e) if e.is_held() || e.is_invalid() => {
                    return Err(LeaserError::Conflict { key: key.clone() });
                }
                Err(e) => return Err(e.into()),
            };
            // Perfect renewal: the lease does not expire until released or lost.
            store.pin_lease(&store_key, &holder).await?;
            info
        };
        let lost = CancellationToken::new();
        self.shared.held().insert(
            key.clone(),
            Held {
                holder: holder.clone(),
                lost: lost.clone(),
            },
        );
        let handle = FakeHandle {
            shared: Arc::clone(&self.shared),
            key: key.clone(),
            holder,
        };
        let guard = LeaseGuard::new(key.clone(), info.generation, lost.clone(), Box::new(handle));
        Ok((guard, lost))
    }

    async fn lease_info_value(&self, key: &PathKey) -> Result<Option<LeaseInfo>, LeaserError> {
        let store_key = store_key(key);
        let leases = self
            .shared
            .store
            .lock()
            .await
            .leases(std::slice::from_ref(&store_key))
            .await
            .map_err(LeaserError::from)?;
        Ok(leases.get(&store_key).map(|info| LeaseInfo {
            holder: info.holder.clone(),
            expiry: info.expiry,
            generation: info.generation,
            metadata: info.metadata.clone(),
        }))
    }
}
