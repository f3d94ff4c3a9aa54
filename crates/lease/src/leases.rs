//! Auto-renewing leases in a few lines: [`Leases`] builds a [`ManagerLeaser`] over a store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use lease_core::{CancellationToken, Clock, LeaseGuard, LeaseInfo, Leaser, LeaserError, PathKey};
use lease_manager::{LeaserConfig, Manager, ManagerLeaser};

use crate::election::DEFAULT_SCOPE;
use crate::{Backend, Error};

/// Auto-renewing leases on path keys, with metadata (the `Leaser` API): acquire one, and it is
/// renewed in the background until its guard is released or dropped; its lost token fires if
/// renewal fails before the lease could expire.
///
/// ```
/// use std::time::Duration;
/// use lease::{Leaser as _, PathKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let leases = lease::Leases::sqlite().path(dir.path().join("leases.db")).start()?;
/// let key = PathKey::parse("/system/jobs/nightly-backup")?;
/// let (guard, lost) = leases.acquire_lease(&key, Duration::from_secs(15), None).await?;
/// // ... work while `lost` has not fired ...
/// # assert!(!lost.is_cancelled());
/// guard.release().await?;
/// # leases.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until started"]
pub struct Leases {
    backend: Backend,
    namespace: String,
    model: String,
    identity: Option<String>,
    #[cfg(feature = "sqlite")]
    path: Option<std::path::PathBuf>,
}

impl Leases {
    /// Leases on `backend`.
    pub fn new(backend: Backend) -> Leases {
        Leases {
            backend,
            namespace: DEFAULT_SCOPE.to_owned(),
            model: DEFAULT_SCOPE.to_owned(),
            identity: None,
            #[cfg(feature = "sqlite")]
            path: None,
        }
    }

    /// Leases among the processes of this host, in the per-user SQLite database (see
    /// [`Backend::sqlite`]; [`Leases::path`] picks another file).
    #[cfg(feature = "sqlite")]
    pub fn sqlite() -> Leases {
        Leases::new(Backend::sqlite())
    }

    /// The SQLite file to use instead of the per-user default. Only for SQLite leases: on
    /// another store, [`Leases::start`] fails naming the setting.
    #[cfg(feature = "sqlite")]
    pub fn path(mut self, path: impl Into<std::path::PathBuf>) -> Leases {
        self.path = Some(path.into());
        self
    }

    /// Who holds the leases (each acquisition adds a random suffix, so two never mistake each
    /// other's claims). Default `<host>:<pid>`.
    pub fn identity(mut self, identity: impl Into<String>) -> Leases {
        self.identity = Some(identity.into());
        self
    }

    /// The namespace and model of the leases, both `default` unless set.
    pub fn scope(mut self, namespace: impl Into<String>, model: impl Into<String>) -> Leases {
        self.namespace = namespace.into();
        self.model = model.into();
        self
    }

    /// Opens the store and starts the manager and the leaser. Call it inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] naming a bad setting; [`Error::NoIdentity`], [`Error::NoDefaultPath`],
    /// [`Error::Store`] and [`Error::Manager`] as for [`Election::start`](crate::Election::start).
    #[cfg_attr(not(feature = "sqlite"), allow(unused_mut))]
    pub fn start(mut self) -> Result<RunningLeases, Error> {
        #[cfg(feature = "sqlite")]
        if let Some(path) = self.path.take() {
            self.backend = self.backend.with_sqlite_path(path)?;
        }
        let identity = match self.identity {
            Some(id) => id,
            None => crate::identity::for_one_host()?,
        };
        lease_core::validate_string("identity", &identity)
            .map_err(|e| Error::setting("identity", e.to_string()))?;
        for (what, value) in [("namespace", &self.namespace), ("model", &self.model)] {
            lease_core::validate_string(what, value)
                .map_err(|e| Error::setting("scope", e.to_string()))?;
        }
        // The key only names a Kubernetes object; a leaser's keys are its path keys.
        let key = lease_core::Key::new(&*self.namespace, &*self.model, "leaser");
        let started = self.backend.start(&key, &identity)?;
        let leaser = ManagerLeaser::new(
            &started.manager,
            Arc::clone(&started.clock),
            LeaserConfig::new(self.namespace, self.model, identity),
        )
        .map_err(|e| Error::setting("identity", e.to_string()))?;
        Ok(RunningLeases {
            manager: started.manager,
            clock: started.clock,
            leaser,
        })
    }
}

/// Started [`Leases`]: a [`ManagerLeaser`] (use it through the [`Leaser`](crate::Leaser)
/// trait) and the manager it runs on.
#[derive(Debug)]
pub struct RunningLeases {
    manager: Manager,
    clock: Arc<dyn Clock>,
    leaser: ManagerLeaser,
}

#[async_trait]
impl Leaser for RunningLeases {
    async fn acquire_lease(
        &self,
        key: &PathKey,
        ttl: Duration,
        metadata: Option<serde_json::Value>,
    ) -> Result<(LeaseGuard, CancellationToken), LeaserError> {
        self.leaser.acquire_lease(key, ttl, metadata).await
    }

    async fn lease_info_value(&self, key: &PathKey) -> Result<Option<LeaseInfo>, LeaserError> {
        self.leaser.lease_info_value(key).await
    }
}

impl RunningLeases {
    /// The leaser, to keep or clone into tasks.
    pub fn leaser(&self) -> &ManagerLeaser {
        &self.leaser
    }

    /// The clock the store, the manager and the leaser share.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The manager underneath.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Stops the manager: held leases are no longer renewed (release them first to hand them
    /// over at once).
    pub async fn shutdown(self) {
        self.manager.stop().await;
    }
}
