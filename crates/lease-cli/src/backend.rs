//! Store selection (`--store sqlite:PATH`, `--store k8s[:NAMESPACE]`, `--store postgres://…`,
//! else the default database: `$LEASE_DB`, else the per-user state path), opening the store,
//! and starting a manager on it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Clock, DefaultSecretary, Key, Store, SystemClock};
use lease_manager::{Manager, ManagerConfig};
use lease_store_k8s::{LeaseObjectStore, StoreOptions};
use lease_store_sqlite::DefaultDatabase;

use crate::error::{CliError, EXIT_USAGE, chain};

/// Where leases are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreSpec {
    /// An SQLite file on this host.
    Sqlite(PathBuf),
    /// The default SQLite file (no `--store`), or why there is none; the error is reported
    /// only by commands that need a store.
    DefaultSqlite(Result<DefaultDatabase, String>),
    /// Lease objects in a Kubernetes namespace (`None`: the kubeconfig's default namespace).
    K8s(Option<String>),
    /// Lease objects in a Kubernetes namespace, with one lease bound to an exact object name
    /// (`--object`).
    K8sObject {
        /// As for [`StoreSpec::K8s`].
        namespace: Option<String>,
        /// The lease the object stands for.
        key: Key,
        /// The Lease object's name.
        object: String,
    },
    /// A PostgreSQL database (`postgres://…`), the store's default schema.
    Postgres(PostgresUrl),
}

/// A `postgres://` URL; its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PostgresUrl(pub(crate) String);

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&lease_store_postgres::redact_url(&self.0))
    }
}

/// Binds lease `key` to the Kubernetes object `object` (`--object`), if given, into `spec`.
///
/// # Errors
///
/// A usage error when `--object` is given for a store other than Kubernetes.
pub(crate) fn bind_object(
    spec: StoreSpec,
    key: Key,
    object: Option<&str>,
) -> Result<StoreSpec, CliError> {
    let Some(object) = object else {
        return Ok(spec);
    };
    match spec {
        StoreSpec::K8s(namespace) => Ok(StoreSpec::K8sObject {
            namespace,
            key,
            object: object.to_owned(),
        }),
        StoreSpec::K8sObject { .. }
        | StoreSpec::Sqlite(_)
        | StoreSpec::DefaultSqlite(_)
        | StoreSpec::Postgres(_) => Err(CliError::new(
            EXIT_USAGE,
            format!("--object {object} needs the Kubernetes store (--store k8s[:NAMESPACE])"),
        )),
    }
}

/// How long to wait for the Kubernetes API to answer at all before calling it unreachable.
const K8S_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `--store`: `sqlite:PATH` or `k8s[:NAMESPACE]`.
pub(crate) fn parse_store(text: &str) -> Result<StoreSpec, String> {
    if let Some(path) = text.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("store sqlite: needs a path (sqlite:PATH)".to_owned());
        }
        return Ok(StoreSpec::Sqlite(PathBuf::from(path)));
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(StoreSpec::Postgres(PostgresUrl(text.to_owned())));
    }
    if text == "k8s" || text == "kubernetes" {
        return Ok(StoreSpec::K8s(None));
    }
    if let Some(ns) = text
        .strip_prefix("k8s:")
        .or_else(|| text.strip_prefix("kubernetes:"))
    {
        if !lease_store_k8s::naming::is_dns1123_label(ns) {
            return Err(format!(
                "invalid Kubernetes namespace {ns:?} in store {text:?}: must be a DNS-1123 label"
            ));
        }
        return Ok(StoreSpec::K8s(Some(ns.to_owned())));
    }
    Err(format!(
        "unknown store {:?}: expected sqlite:PATH, k8s[:NAMESPACE] or postgres://USER@HOST/DB",
        lease_store_postgres::redact_url(text)
    ))
}

/// The default database of this process's environment.
pub(crate) fn env_default_db() -> Result<DefaultDatabase, String> {
    DefaultDatabase::from_env().map_err(|e| e.to_string())
}

/// The store to use: the one given, else the default database.
pub(crate) fn resolve(spec: Option<StoreSpec>) -> StoreSpec {
    spec.unwrap_or_else(|| StoreSpec::DefaultSqlite(env_default_db()))
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreSpec::DefaultSqlite(Ok(db)) => {
                write!(
                    f,
                    "sqlite:{} (the default, from {})",
                    db.path.display(),
                    db.from
                )
            }
            StoreSpec::DefaultSqlite(Err(e)) => f.write_str(e),
            StoreSpec::K8s(Some(ns))
            | StoreSpec::K8sObject {
                namespace: Some(ns),
                ..
            } => {
                write!(f, "k8s:{ns}")
            }
            StoreSpec::K8s(None)
            | StoreSpec::K8sObject {
                namespace: None, ..
            } => f.write_str("k8s (the kubeconfig's namespace)"),
            StoreSpec::Postgres(url) => f.write_str(&lease_store_postgres::redact_url(&url.0)),
        }
    }
}

/// The SQLite file `spec` names, creating the default database's private directory if need
/// be (`create`).
///
/// # Errors
///
/// A usage error when there is no usable default database, or when `spec` is not SQLite; a
/// store error when the directory cannot be created.
pub(crate) fn sqlite_path(spec: &StoreSpec, create: bool) -> Result<&Path, CliError> {
    match spec {
        StoreSpec::Sqlite(path) => Ok(path),
        StoreSpec::DefaultSqlite(Ok(db)) => {
            if create {
                db.create_private_dir()
                    .map_err(|e| CliError::store(chain(&e)))?;
            }
            Ok(&db.path)
        }
        StoreSpec::DefaultSqlite(Err(e)) => Err(CliError::new(EXIT_USAGE, e.clone())),
        StoreSpec::K8s(_) | StoreSpec::K8sObject { .. } | StoreSpec::Postgres(_) => Err(
            CliError::new(EXIT_USAGE, format!("{spec} is not an SQLite database")),
        ),
    }
}

/// The clock every store and manager here uses: `CLOCK_BOOTTIME`, shared by the host's
/// processes.
pub(crate) fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock::new())
}

/// Opens the store `spec` names.
///
/// The SQLite store is opened without a holder session
/// ([`SessionScope::Unbound`](lease_store_sqlite::SessionScope::Unbound)): the holder of a
/// lease taken by a one-shot command (`lease claim`, `lease extend`) is whoever ran it (a
/// script), not the short-lived `lease` process, so such leases free at their expiry only.
/// Other holders' deaths are still seen.
pub(crate) async fn open(spec: &StoreSpec) -> Result<Box<dyn Store>, CliError> {
    Ok(
        open_scoped(spec, lease_store_sqlite::SessionScope::Unbound, true)
            .await?
            .0,
    )
}

/// As [`open`], but the SQLite store's leases belong to this process's holder session (they
/// free as soon as every process holding its lock is gone), returned too (`None` for other
/// stores) so `lease run` can hand its lock to its command.
///
/// For `lease run`, which opens the file, claims, releases and closes it on every run, the
/// SQLite store keeps its write-ahead log at close
/// ([`checkpoint_on_close(false)`](lease_store_sqlite::SqliteStoreBuilder::checkpoint_on_close)):
/// each commit is fsynced as before, but closing skips the checkpoint's two fsyncs, and the
/// next run appends to the log instead of creating it again (a header and a directory fsync).
pub(crate) async fn open_with_session(
    spec: &StoreSpec,
) -> Result<(Box<dyn Store>, Option<lease_store_sqlite::SessionHandle>), CliError> {
    open_scoped(spec, lease_store_sqlite::SessionScope::Process, false).await
}

async fn open_scoped(
    spec: &StoreSpec,
    scope: lease_store_sqlite::SessionScope,
    checkpoint_on_close: bool,
) -> Result<(Box<dyn Store>, Option<lease_store_sqlite::SessionHandle>), CliError> {
    let store = match spec {
        StoreSpec::Sqlite(_) | StoreSpec::DefaultSqlite(_) => {
            let path = sqlite_path(spec, true)?;
            let store = lease_store_sqlite::SqliteStore::builder(path)
                .clock(clock())
                .session_scope(scope)
                .checkpoint_on_close(checkpoint_on_close)
                .open()?;
            let session = store.session_handle();
            return Ok((Box::new(store), session));
        }
        StoreSpec::K8s(namespace) => open_k8s(namespace.as_deref(), None).await,
        StoreSpec::K8sObject {
            namespace,
            key,
            object,
        } => open_k8s(namespace.as_deref(), Some((key, object))).await,
        StoreSpec::Postgres(url) => open_postgres(url).await,
    }?;
    Ok((store, None))
}

/// Connects to Postgres; every configuration error names what is wrong, never the password.
async fn open_postgres(url: &PostgresUrl) -> Result<Box<dyn Store>, CliError> {
    let store = lease_store_postgres::PostgresStore::builder(&url.0)
        .clock(clock())
        .connect()
        .await
        .map_err(|e| CliError::store(e.to_string()))?;
    Ok(Box::new(store))
}

async fn open_k8s(
    namespace: Option<&str>,
    object: Option<(&Key, &String)>,
) -> Result<Box<dyn Store>, CliError> {
    let config = kube::Config::infer().await.map_err(|e| {
        CliError::store(format!(
            "cannot load a Kubernetes configuration (kubeconfig or in-cluster): {}",
            chain(&e)
        ))
    })?;
    let url = config.cluster_url.clone();
    let namespace = namespace
        .map(str::to_owned)
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|e| {
        CliError::store(format!(
            "cannot build a Kubernetes client for {url}: {}",
            chain(&e)
        ))
    })?;
    // Any answer from the API server, even a refusal, shows it is reachable; permissions are
    // judged by the store's own requests, which name the missing one.
    match tokio::time::timeout(K8S_PROBE_TIMEOUT, client.apiserver_version()).await {
        Err(_) => {
            return Err(CliError::store(format!(
                "cannot reach the Kubernetes API at {url}: no answer within {}",
                crate::human::format_duration(K8S_PROBE_TIMEOUT)
            )));
        }
        Ok(Err(e)) if !matches!(e, kube::Error::Api(_)) => {
            return Err(CliError::store(format!(
                "cannot reach the Kubernetes API at {url}: {}",
                chain(&e)
            )));
        }
        Ok(_) => {}
    }
    let mut options = StoreOptions::default().request_timeout(K8S_PROBE_TIMEOUT);
    if let Some((key, name)) = object {
        options = options.object_for(key.clone(), name.clone());
    }
    Ok(Box::new(LeaseObjectStore::with_options(
        client,
        namespace,
        clock(),
        options,
    )))
}

/// Starts a manager on `store` that accepts every namespace (with the general rules).
pub(crate) fn start_manager(
    store: Box<dyn Store>,
    refresh: Option<Duration>,
) -> Result<Manager, CliError> {
    let mut config =
        ManagerConfig::new(store, clock()).with_default_secretary(Arc::new(DefaultSecretary));
    if let Some(refresh) = refresh {
        config = config.with_refresh_interval(refresh);
    }
    Manager::start(config)
        .map_err(|e| CliError::store(format!("cannot start the lease manager: {}", chain(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            parse_store("sqlite:/tmp/x.db"),
            Ok(StoreSpec::Sqlite("/tmp/x.db".into()))
        );
        assert_eq!(
            parse_store("sqlite:rel.db"),
            Ok(StoreSpec::Sqlite("rel.db".into()))
        );
        assert_eq!(parse_store("k8s"), Ok(StoreSpec::K8s(None)));
        assert_eq!(
            parse_store("k8s:team-a"),
            Ok(StoreSpec::K8s(Some("team-a".into())))
        );
        assert!(parse_store("k8s:Bad_NS").unwrap_err().contains("DNS-1123"));
        assert!(parse_store("sqlite:").is_err());
        let pg = parse_store("postgres://u:hunter2@db/app").unwrap();
        assert_eq!(
            pg,
            StoreSpec::Postgres(PostgresUrl("postgres://u:hunter2@db/app".into()))
        );
        assert!(!format!("{pg:?}").contains("hunter2"));
        assert!(
            parse_store("redis://x")
                .unwrap_err()
                .starts_with("unknown store")
        );
    }
}
