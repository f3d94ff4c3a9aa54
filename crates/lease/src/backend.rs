//! Where leases live: the store a builder opens, with the one clock everything shares.

use std::fmt;
#[cfg(feature = "sqlite")]
use std::path::PathBuf;
use std::sync::Arc;

#[cfg(any(feature = "sqlite", feature = "kubernetes"))]
use lease_core::SystemClock;
use lease_core::{Clock, DefaultSecretary, Key, Store};
use lease_manager::{Manager, ManagerConfig};

use crate::Error;

/// The store behind a builder, and the clock that the store, the manager and the elector or
/// leaser all use (they must share one: expiry is decided on it).
///
/// Most programs never name it: [`Election::sqlite`](crate::Election::sqlite),
/// [`Election::kubernetes`](crate::Election::kubernetes) and [`Leases::sqlite`](crate::Leases::sqlite)
/// pick it. Tests pass [`Backend::custom`] with a fake clock and an in-memory store.
pub struct Backend {
    kind: Kind,
}

enum Kind {
    #[cfg(feature = "sqlite")]
    Sqlite { path: Option<PathBuf> },
    #[cfg(feature = "kubernetes")]
    Kubernetes {
        client: kube::Client,
        namespace: Option<String>,
        events: bool,
    },
    Custom {
        store: Box<dyn Store>,
        clock: Arc<dyn Clock>,
    },
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            #[cfg(feature = "sqlite")]
            Kind::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            #[cfg(feature = "kubernetes")]
            Kind::Kubernetes {
                namespace, events, ..
            } => f
                .debug_struct("Kubernetes")
                .field("namespace", namespace)
                .field("events", events)
                .finish_non_exhaustive(),
            Kind::Custom { .. } => f.debug_struct("Custom").finish_non_exhaustive(),
        }
    }
}

/// What a builder gets from [`Backend::start`]: a running manager and the clock it uses.
pub(crate) struct Started {
    pub(crate) manager: Manager,
    pub(crate) clock: Arc<dyn Clock>,
    /// Records leadership Events on the Lease (Kubernetes only).
    #[cfg(feature = "kubernetes")]
    pub(crate) events: Option<lease_store_k8s::EventRecorder>,
}

impl Backend {
    /// The embedded SQLite store at the per-user default path: `$LEASE_DB`, else
    /// `$XDG_STATE_HOME/lease/leases.db`, else `~/.local/state/lease/leases.db` (the `lease`
    /// command's default too). Every process of this user on this host shares it. Its
    /// directory is created if missing, readable by this user only.
    #[cfg(feature = "sqlite")]
    pub fn sqlite() -> Backend {
        Backend {
            kind: Kind::Sqlite { path: None },
        }
    }

    /// The embedded SQLite store in the file at `path` (created if missing; its directory
    /// must exist).
    #[cfg(feature = "sqlite")]
    pub fn sqlite_at(path: impl Into<PathBuf>) -> Backend {
        Backend {
            kind: Kind::Sqlite {
                path: Some(path.into()),
            },
        }
    }

    /// Kubernetes Lease objects in the client's default namespace, with leadership Events
    /// recorded as client-go does.
    #[cfg(feature = "kubernetes")]
    pub fn kubernetes(client: kube::Client) -> Backend {
        Backend {
            kind: Kind::Kubernetes {
                client,
                namespace: None,
                events: true,
            },
        }
    }

    /// As [`Backend::kubernetes`], in the Kubernetes namespace `namespace`.
    #[cfg(feature = "kubernetes")]
    pub fn kubernetes_in(client: kube::Client, namespace: impl Into<String>) -> Backend {
        Backend {
            kind: Kind::Kubernetes {
                client,
                namespace: Some(namespace.into()),
                events: true,
            },
        }
    }

    /// Any store, with the clock it decides expiry on (e.g. `lease-testkit`'s `InMemoryStore`
    /// and `FakeClock` in tests).
    pub fn custom(store: impl Store + 'static, clock: Arc<dyn Clock>) -> Backend {
        Backend {
            kind: Kind::Custom {
                store: Box::new(store),
                clock,
            },
        }
    }

    /// Turns leadership Events off (they are on by default on Kubernetes; other stores have
    /// none, and saying `false` there is allowed).
    #[must_use]
    pub fn without_events(mut self) -> Backend {
        #[cfg(feature = "kubernetes")]
        if let Kind::Kubernetes { events, .. } = &mut self.kind {
            *events = false;
        }
        #[cfg(not(feature = "kubernetes"))]
        let _ = &mut self;
        self
    }

    /// This SQLite backend with its file at `path`.
    #[cfg(feature = "sqlite")]
    pub(crate) fn with_sqlite_path(self, path: PathBuf) -> Result<Backend, Error> {
        match self.kind {
            Kind::Sqlite { .. } => Ok(Backend::sqlite_at(path)),
            _ => Err(Error::setting(
                "path",
                format!(
                    "{} names an SQLite file, but this builder uses another store",
                    path.display()
                ),
            )),
        }
    }

    /// Whether this backend's store is shared by the processes of one host only, so an identity
    /// must tell processes apart.
    pub(crate) fn is_one_host(&self) -> bool {
        match &self.kind {
            #[cfg(feature = "sqlite")]
            Kind::Sqlite { .. } => true,
            #[cfg(feature = "kubernetes")]
            Kind::Kubernetes { .. } => false,
            Kind::Custom { .. } => true,
        }
    }

    /// Opens the store for `key` and starts a manager over it. `key.lease` names the Kubernetes
    /// object the key lives in and `identity` the Events' source.
    pub(crate) fn start(self, key: &Key, identity: &str) -> Result<Started, Error> {
        #[cfg(not(feature = "kubernetes"))]
        let _ = (key, identity);
        match self.kind {
            #[cfg(feature = "sqlite")]
            Kind::Sqlite { path } => start_sqlite(path),
            #[cfg(feature = "kubernetes")]
            Kind::Kubernetes {
                client,
                namespace,
                events,
            } => start_kubernetes(client, namespace, events, key, identity),
            Kind::Custom { store, clock } => start_manager(store, clock),
        }
    }
}

/// The SQLite store in the file at `path`, or at the per-user default path (its directory
/// created, private), on the system clock.
#[cfg(feature = "sqlite")]
fn start_sqlite(path: Option<PathBuf>) -> Result<Started, Error> {
    let path = match path {
        Some(p) => p,
        None => {
            let db = lease_store_sqlite::DefaultDatabase::from_env()
                .map_err(|e| Error::NoDefaultPath(e.to_string()))?;
            db.create_private_dir()
                .map_err(|e| Error::NoDefaultPath(e.to_string()))?;
            db.path
        }
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let store = lease_store_sqlite::SqliteStore::builder(path)
        .clock(Arc::clone(&clock))
        .open()
        .map_err(|e| Error::Store(e.into()))?;
    start_manager(Box::new(store), clock)
}

/// The Lease object named `key.lease` in `namespace` (else the client's default), on the system
/// clock, with an Event recorder for `identity` when `events` is on. The object's name is
/// checked here so that a bad one is a setting error, not a failed request later.
#[cfg(feature = "kubernetes")]
fn start_kubernetes(
    client: kube::Client,
    namespace: Option<String>,
    events: bool,
    key: &Key,
    identity: &str,
) -> Result<Started, Error> {
    let object = key.lease.clone();
    if !lease_store_k8s::naming::is_dns1123_subdomain(&object) {
        return Err(Error::setting(
            "lease",
            format!(
                "{object:?} cannot name a Kubernetes Lease object: use lower-case letters, \
                 digits, '-' (at most 253 characters, starting and ending with a letter or digit)"
            ),
        ));
    }
    let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let options = lease_store_k8s::StoreOptions::default().object_for(key.clone(), &*object);
    let store = lease_store_k8s::LeaseObjectStore::with_options(
        client.clone(),
        &*namespace,
        Arc::clone(&clock),
        options,
    );
    let recorder =
        events.then(|| lease_store_k8s::EventRecorder::new(client, namespace, object, identity));
    let mut started = start_manager(Box::new(store), clock)?;
    started.events = recorder;
    Ok(started)
}

/// A manager over `store`, deciding expiry on `clock`, with the default secretary.
fn start_manager(store: Box<dyn Store>, clock: Arc<dyn Clock>) -> Result<Started, Error> {
    let manager = Manager::start(
        ManagerConfig::new(store, Arc::clone(&clock))
            .with_default_secretary(Arc::new(DefaultSecretary)),
    )
    .map_err(Error::Manager)?;
    Ok(Started {
        manager,
        clock,
        #[cfg(feature = "kubernetes")]
        events: None,
    })
}
