//! Fakes of the facades a program uses ([`Checker`]/[`Token`], [`Claimer`], [`Revoker`],
//! [`Pinner`], [`Reader`]) and of the [`Facades`] trait that hands them out, backed by an
//! [`InMemoryStore`] and a [`FakeClock`], for unit tests of code that uses leases.
//!
//! They keep the facades' contracts the simple way: every call goes straight to the in-memory
//! store (no worker, no batching, no retries), and `wait_until_expired` sleeps on the fake
//! clock, so a test decides when leases expire with [`FakeClock::advance`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use lease_core::{
    CancellationToken, Checker, Claimer, Clock, Error, Facades, Generation, Info, Key, Pinner,
    Reader, Request, Result, Revoker, Store, Token, validate_string,
};
use tokio::sync::Mutex;

use crate::{FakeClock, InMemoryStore};

/// What the fake manager and all its facades share.
struct Shared {
    store: Mutex<InMemoryStore>,
    clock: FakeClock,
    stopped: AtomicBool,
}

impl Shared {
    fn check_running(&self) -> Result<()> {
        if self.stopped.load(Ordering::SeqCst) {
            Err(Error::Aborted)
        } else {
            Ok(())
        }
    }
}

/// Where a facade points: the shared state and its namespace and model.
#[derive(Clone)]
struct Scope {
    shared: Arc<Shared>,
    namespace: String,
    model: String,
}

impl Scope {
    fn key(&self, lease: &str) -> Result<Key> {
        let key = Key::new(&*self.namespace, &*self.model, lease);
        key.validate()?;
        Ok(key)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.model)
    }
}

/// A fake manager: implements [`Facades`], handing out the fake facades of this module, all
/// over one [`InMemoryStore`] whose leases expire on a [`FakeClock`].
///
/// ```
/// use std::time::Duration;
/// use lease_core::{CancellationToken, Facades, Request};
/// use lease_testkit::{FakeClock, FakeManager};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lease_core::Result<()> {
/// let clock = FakeClock::new();
/// let manager = FakeManager::new(clock.clone());
/// let claimer = manager.claimer("singular-controller", "model-1")?;
/// let checker = manager.checker("singular-controller", "model-1")?;
///
/// // The code under test claims a lease...
/// claimer.claim("backup", Request::new("machine-0", Duration::from_secs(30))).await?;
/// let token = checker.token("backup", "machine-0");
/// assert!(token.check().await.is_ok());
///
/// // ...and the test lets it expire.
/// clock.advance(Duration::from_secs(30));
/// assert!(token.check().await.unwrap_err().is_not_held());
/// claimer.wait_until_expired("backup", &CancellationToken::new()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FakeManager {
    shared: Arc<Shared>,
}

impl FakeManager {
    /// A manager over a fresh [`InMemoryStore`] on `clock`.
    pub fn new(clock: FakeClock) -> FakeManager {
        let store = InMemoryStore::new(clock.as_clock());
        FakeManager::with_store(store, clock)
    }

    /// A manager over `store`, which must decide expiry with `clock` (give it
    /// `clock.as_clock()`), so that [`Claimer::wait_until_expired`] wakes when it should.
    pub fn with_store(store: InMemoryStore, clock: FakeClock) -> FakeManager {
        FakeManager {
            shared: Arc::new(Shared {
                store: Mutex::new(store),
                clock,
                stopped: AtomicBool::new(false),
            }),
        }
    }

    /// Another instance over the manager's leases, for a test to inspect or change them
    /// directly (as another process would).
    pub async fn store(&self) -> InMemoryStore {
        self.shared.store.lock().await.sibling()
    }

    /// The clock the leases expire on.
    pub fn clock(&self) -> &FakeClock {
        &self.shared.clock
    }

    /// Stops the manager: from now on it hands out no facades and every facade call fails with
    /// [`Error::Aborted`], as a stopped manager's do.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
    }

    fn scope(&self, namespace: &str, model: &str) -> Result<Scope> {
        self.shared.check_running()?;
        validate_string("namespace", namespace)?;
        validate_string("model", model)?;
        Ok(Scope {
            shared: Arc::clone(&self.shared),
            namespace: namespace.to_owned(),
            model: model.to_owned(),
        })
    }

    /// The fake [`Checker`] for `namespace` and `model`.
    ///
    /// # Errors
    ///
    /// A validation error for a bad namespace or model; [`Error::Aborted`] once stopped.
    pub fn fake_checker(&self, namespace: &str, model: &str) -> Result<FakeChecker> {
        Ok(FakeChecker {
            scope: self.scope(namespace, model)?,
        })
    }

    /// The fake [`Claimer`] for `namespace` and `model`.
    ///
    /// # Errors
    ///
    /// As [`FakeManager::fake_checker`].
    pub fn fake_claimer(&self, namespace: &str, model: &str) -> Result<FakeClaimer> {
        Ok(FakeClaimer {
            scope: self.scope(namespace, model)?,
        })
    }

    /// The fake [`Revoker`] for `namespace` and `model`.
    ///
    /// # Errors
    ///
    /// As [`FakeManager::fake_checker`].
    pub fn fake_revoker(&self, namespace: &str, model: &str) -> Result<FakeRevoker> {
        Ok(FakeRevoker {
            scope: self.scope(namespace, model)?,
        })
    }

    /// The fake [`Pinner`] for `namespace` and `model`.
    ///
    /// # Errors
    ///
    /// As [`FakeManager::fake_checker`].
    pub fn fake_pinner(&self, namespace: &str, model: &str) -> Result<FakePinner> {
        Ok(FakePinner {
            scope: self.scope(namespace, model)?,
        })
    }

    /// The fake [`Reader`] for `namespace` and `model`.
    ///
    /// # Errors
    ///
    /// As [`FakeManager::fake_checker`].
    pub fn fake_reader(&self, namespace: &str, model: &str) -> Result<FakeReader> {
        Ok(FakeReader {
            scope: self.scope(namespace, model)?,
        })
    }
}

impl fmt::Debug for FakeManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeManager")
            .field("clock", &self.shared.clock)
            .field("stopped", &self.shared.stopped.load(Ordering::SeqCst))
            .finish()
    }
}

impl Facades for FakeManager {
    fn checker(&self, namespace: &str, model: &str) -> Result<Arc<dyn Checker>> {
        Ok(Arc::new(self.fake_checker(namespace, model)?))
    }
    fn claimer(&self, namespace: &str, model: &str) -> Result<Arc<dyn Claimer>> {
        Ok(Arc::new(self.fake_claimer(namespace, model)?))
    }
    fn revoker(&self, namespace: &str, model: &str) -> Result<Arc<dyn Revoker>> {
        Ok(Arc::new(self.fake_revoker(namespace, model)?))
    }
    fn pinner(&self, namespace: &str, model: &str) -> Result<Arc<dyn Pinner>> {
        Ok(Arc::new(self.fake_pinner(namespace, model)?))
    }
    fn reader(&self, namespace: &str, model: &str) -> Result<Arc<dyn Reader>> {
        Ok(Arc::new(self.fake_reader(namespace, model)?))
    }
}

/// A fake [`Checker`]: its tokens read the in-memory store at every check.
///
/// ```
/// use std::time::Duration;
/// use lease_core::{Checker, Claimer, Request};
/// use lease_testkit::{FakeClock, FakeManager};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lease_core::Result<()> {
/// let manager = FakeManager::new(FakeClock::new());
/// let checker = manager.fake_checker("app", "model-1")?;
/// let info = manager
///     .fake_claimer("app", "model-1")?
///     .claim("db", Request::new("unit-0", Duration::from_secs(10)))
///     .await?;
/// // The token carries the fencing generation of the claim.
/// assert_eq!(checker.token("db", "unit-0").check().await?, info.generation);
/// assert!(checker.token("db", "unit-1").check().await.unwrap_err().is_not_held());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FakeChecker {
    scope: Scope,
}

impl Checker for FakeChecker {
    fn token(&self, lease: &str, holder: &str) -> Box<dyn Token> {
        Box::new(FakeToken {
            scope: self.scope.clone(),
            lease: lease.to_owned(),
            holder: holder.to_owned(),
        })
    }
}

/// The [`Token`] of a [`FakeChecker`].
#[derive(Debug, Clone)]
pub struct FakeToken {
    scope: Scope,
    lease: String,
    holder: String,
}

#[async_trait]
impl Token for FakeToken {
    async fn check(&self) -> Result<Generation> {
        self.scope.shared.check_running()?;
        let key = self.scope.key(&self.lease)?;
        validate_string("holder", &self.holder)?;
        let leases = self
            .scope
            .shared
            .store
            .lock()
            .await
            .leases(std::slice::from_ref(&key))
            .await?;
        match leases.get(&key) {
            Some(info) if info.holder == self.holder => Ok(info.generation),
            _ => Err(Error::NotHeld),
        }
    }
}

/// A fake [`Claimer`]: claims (or, for the holder, extends) in the in-memory store, and waits
/// for expiry on the fake clock.
///
/// `claim` gives [`Error::ClaimDenied`] when someone else holds the lease.
/// `wait_until_expired` returns at once when the lease is not held, when the clock reaches its
/// expiry, or when it is revoked; a pinned lease keeps it waiting; `cancel` makes it return
/// [`Error::WaitCancelled`]. While it waits for an unpinned lease it is one sleeper on the
/// [`FakeClock`], so a test can [`FakeClock::wait_for_sleepers`] before advancing.
///
/// ```
/// use std::time::Duration;
/// use lease_core::{CancellationToken, Claimer, Request};
/// use lease_testkit::{FakeClock, FakeManager};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lease_core::Result<()> {
/// let clock = FakeClock::new();
/// let manager = FakeManager::new(clock.clone());
/// let claimer = manager.fake_claimer("app", "model-1")?;
/// claimer.claim("db", Request::new("unit-0", Duration::from_secs(10))).await?;
/// let denied = claimer.claim("db", Request::new("unit-1", Duration::from_secs(10))).await;
/// assert!(denied.unwrap_err().is_claim_denied());
///
/// // unit-1 waits for the lease, the test lets it expire.
/// let waiter = {
///     let claimer = claimer.clone();
///     tokio::spawn(async move {
///         claimer.wait_until_expired("db", &CancellationToken::new()).await
///     })
/// };
/// clock.wait_advance(Duration::from_secs(10), 1).await;
/// waiter.await.unwrap()?;
/// claimer.claim("db", Request::new("unit-1", Duration::from_secs(10))).await?;
///
/// // A cancelled wait says so.
/// let cancel = CancellationToken::new();
/// cancel.cancel();
/// let err = claimer.wait_until_expired("db", &cancel).await.unwrap_err();
/// assert!(err.is_wait_cancelled());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FakeClaimer {
    scope: Scope,
}

#[async_trait]
impl Claimer for FakeClaimer {
    async fn claim(&self, lease: &str, request: Request) -> Result<Info> {
        self.scope.shared.check_running()?;
        let key = self.scope.key(lease)?;
        request.validate()?;
        let mut store = self.scope.shared.store.lock().await;
        match store.claim_lease(&key, &request).await {
            // The holder already holds it: extend instead, as the manager does.
            Err(e) if e.is_invalid() => store.extend_lease(&key, &request).await,
            Err(e) if e.is_held() => Err(Error::ClaimDenied),
            other => other,
        }
    }

    async fn wait_until_expired(&self, lease: &str, cancel: &CancellationToken) -> Result<()> {
        self.scope.shared.check_running()?;
        let key = self.scope.key(lease)?;
        let mut changes = {
            let mut store = self.scope.shared.store.lock().await;
            store
                .change_notifier()
                .ok_or_else(|| Error::store_msg("the in-memory store has no change notifier"))?
        };
        loop {
            if cancel.is_cancelled() {
                return Err(Error::WaitCancelled);
            }
            self.scope.shared.check_running()?;
            changes.borrow_and_update();
            let info = {
                let mut store = self.scope.shared.store.lock().await;
                store.leases(std::slice::from_ref(&key)).await?.remove(&key)
            };
            let Some(info) = info else {
                return Ok(());
            };
            // A pinned lease does not expire: wait for a change only (and set no timer).
            let sleep: lease_core::Sleep = if info.pinned {
                Box::pin(std::future::pending())
            } else {
                self.scope.shared.clock.sleep_until(info.expiry)
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Error::WaitCancelled),
                () = sleep => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(Error::Aborted);
                    }
                }
            }
        }
    }
}

/// A fake [`Revoker`]: revokes in the in-memory store; [`Error::NotHeld`] when the holder does
/// not hold the lease.
///
/// ```
/// use std::time::Duration;
/// use lease_core::{Claimer, Revoker, Request};
/// use lease_testkit::{FakeClock, FakeManager};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lease_core::Result<()> {
/// let manager = FakeManager::new(FakeClock::new());
/// let revoker = manager.fake_revoker("app", "model-1")?;
/// manager
///     .fake_claimer("app", "model-1")?
///     .claim("db", Request::new("unit-0", Duration::from_secs(10)))
///     .await?;
/// assert!(revoker.revoke("db", "unit-1").await.unwrap_err().is_not_held());
/// revoker.revoke("db", "unit-0").await?;
/// assert!(revoker.revoke("db", "unit-0").await.unwrap_err().is_not_held());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FakeRevoker {
    scope: Scope,
}

#[async_trait]
impl Revoker for FakeRevoker {
    async fn revoke(&self, lease: &str, holder: &str) -> Result<()> {
        self.scope.shared.check_running()?;
        let key = self.scope.key(lease)?;
        validate_string("holder", holder)?;
        let mut store = self.scope.shared.store.lock().await;
        match store.revoke_lease(&key, holder).await {
            Err(e) if e.is_invalid() => Err(Error::NotHeld),
            other => other,
        }
    }
}

/// A fake [`Pinner`]: pins in the in-memory store, so pinned leases outlive the fake clock.
///
/// ```
/// use std::time::Duration;
/// use lease_core::{Claimer, Pinner, Reader, Request};
/// use lease_testkit::{FakeClock, FakeManager};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lease_core::Result<()> {
/// let clock = FakeClock::new();
/// let manager = FakeManager::new(clock.clone());
/// let pinner = manager.fake_pinner("app", "model-1")?;
/// manager
///     .fake_claimer("app", "model-1")?
///     .claim("db", Request::new("unit-0", Duration::from_secs(10)))
///     .await?;
/// pinner.pin("db", "machine-3").await?;
/// assert_eq!(pinner.pinned().await?["db"], vec!["machine-3".to_owned()]);
///
/// clock.advance(Duration::from_secs(60));
/// let reader = manager.fake_reader("app", "model-1")?;
/// assert_eq!(reader.leases().await?["db"], "unit-0");
///
/// pinner.unpin("db", "machine-3").await?;
/// assert!(reader.leases().await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FakePinner {
    scope: Scope,
}

#[async_trait]
impl Pinner for FakePinner {
    async fn pin(&self, lease: &str, entity: &str) -> Result<()> {
        self.scope.shared.check_running()?;
        let key = self.scope.key(lease)?;
        self.scope
            .shared
            .store
            .lock()
            .await
            .pin_lease(&key, entity)
            .await
    }

    async fn unpin(&self, lease: &str, entity: &str) -> Result<()> {
        self.scope.shared.check_running()?;
        let key = self.scope.key(lease)?;
        self.scope
            .shared
            .store
            .lock()
            .await
            .unpin_lease(&key, entity)
            .await
    }

    async fn pinned(&self) -> Result<BTreeMap<String, Vec<String>>> {
        self.scope.shared.check_running()?;
        let pinned = self.scope.shared.store.lock().await.pinned().await?;
        Ok(pinned
            .into_iter()
            .filter(|(key, _)| {
                key.namespace == self.scope.namespace && key.model == self.scope.model
            })
            .map(|(key, entities)| (key.lease, entities))
            .collect())
    }
}

/// A fake [`Reader`]: the valid leases of its namespace and model, by name, with their
/// holders.
///
/// ```
/// use std::time::Duration;
/// use lease_core::{Claimer, Reader, Request};
/// use lease_testkit::{FakeClock, FakeManager};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lease_core::Result<()> {
/// let manager = FakeManager::new(FakeClock::new());
/// let claimer = manager.fake_claimer("app", "model-1")?;
/// claimer.claim("db", Request::new("unit-0", Duration::from_secs(10))).await?;
/// manager
///     .fake_claimer("app", "model-2")?
///     .claim("db", Request::new("unit-9", Duration::from_secs(10)))
///     .await?;
/// let leases = manager.fake_reader("app", "model-1")?.leases().await?;
/// assert_eq!(leases.into_iter().collect::<Vec<_>>(), vec![("db".to_owned(), "unit-0".to_owned())]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FakeReader {
    scope: Scope,
}

#[async_trait]
impl Reader for FakeReader {
    async fn lease_infos(&self) -> Result<BTreeMap<String, Info>> {
        self.scope.shared.check_running()?;
        let group = self
            .scope
            .shared
            .store
            .lock()
            .await
            .lease_group(&self.scope.namespace, &self.scope.model)
            .await?;
        Ok(group
            .into_iter()
            .map(|(key, info)| (key.lease, info))
            .collect())
    }
}
