//! Shared helpers of the real-server tests: a client from `KUBECONFIG` (failing loudly when it
//! is not set), and fresh Kubernetes namespaces as the backing of each built store.

#![allow(dead_code, unreachable_pub)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Why these tests are ignored by default, and how to run them.
pub const HOW_TO_RUN: &str = "needs a Kubernetes API server: run `cargo xtask k8s up`, then \
     `eval \"$(cargo xtask k8s env)\"` and `cargo test -p lease-store-k8s -- --ignored`";

/// The client configuration for the kubeconfig file named by environment variable `var`;
/// panics with instructions when it is not set.
pub async fn config_from(var: &str) -> Config {
    let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) else {
        panic!("{var} is not set: this test {HOW_TO_RUN}");
    };
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("cannot read {var}={}: {e}", path.to_string_lossy()));
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("bad kubeconfig {var}={}: {e}", path.to_string_lossy()))
}

/// The administrator's client configuration (`KUBECONFIG`).
pub async fn admin_config() -> Config {
    config_from("KUBECONFIG").await
}

/// A new client (its own connections) for `config`.
pub fn client(config: &Config) -> Client {
    Client::try_from(config.clone()).expect("a kubernetes client")
}

/// A name no earlier test run used: `prefix`, a time and random part.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{prefix}-{:x}-{:08x}",
        secs % 0x100000,
        hasher.finish() as u32
    )
}

/// A Kubernetes namespace created for one test. It is not deleted: a bare API server (no
/// controller manager) never finishes deleting a namespace, a deleted namespace refuses new
/// objects at once, and the conformance suite may drop a guard before the stores built over it.
/// `cargo xtask k8s down` removes them all with etcd's data.
#[derive(Debug)]
pub struct NamespaceGuard {
    /// The namespace's name.
    pub name: String,
}

impl NamespaceGuard {
    /// Creates a namespace named `prefix-…`.
    pub async fn create(config: &Config, prefix: &str) -> lease_core::Result<Self> {
        let name = unique_name(prefix);
        let api: Api<Namespace> = Api::all(client(config));
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.clone());
        api.create(&PostParams::default(), &namespace)
            .await
            .map_err(|e| lease_core::Error::store(format!("creating namespace {name}"), e))?;
        Ok(NamespaceGuard { name })
    }
}

/// A switch that cuts one client off from the API server (a network partition): while it is
/// on, every request of the client fails at once with a connection-like error.
#[derive(Debug, Clone, Default)]
pub struct Partition(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Partition {
    /// Cuts the client off (`true`) or reconnects it (`false`).
    pub fn set(&self, cut: bool) {
        self.0.store(cut, Ordering::SeqCst);
    }
}

/// A new client for `config` whose requests fail while `partition` is on.
pub fn partitionable_client(config: &Config, partition: &Partition) -> Client {
    let flag = partition.clone();
    let filter =
        tower::filter::FilterLayer::new(move |request: http::Request<kube::client::Body>| {
            if flag.0.load(Ordering::SeqCst) {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "test partition: the API server is unreachable",
                ))
            } else {
                Ok(request)
            }
        });
    kube::client::ClientBuilder::try_from(config.clone())
        .expect("a kubernetes client builder")
        .with_layer(&filter)
        .build()
}
