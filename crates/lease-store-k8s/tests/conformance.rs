//! The `lease-testkit` Store conformance suite against a real Kubernetes API server, for both
//! [`LeaseObjectStore`] and [`ConfigMapStore`]. Each built store gets a fresh Kubernetes namespace;
//! siblings are separate clients of the same server. One test per case and store:
//! `lease_store::claim::claim_holds_until_duration_from_call_start`, `configmap_store::…`.
//!
//! Ignored by default (they need a server): `cargo xtask k8s up`, then
//! `eval "$(cargo xtask k8s env)"` and `cargo test -p lease-store-k8s -- --ignored`. Without
//! `KUBECONFIG` they fail with that instruction rather than pass silently.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{Clock, Key, Request, Store};
use lease_store_k8s::{ConfigMapStore, LeaseObjectStore};
use lease_testkit::FakeClock;
use lease_testkit::suite::StoreBuilder;

use common::{NamespaceGuard, admin_config, client};

struct LeaseBuilder {
    config: kube::Config,
}

impl LeaseBuilder {
    /// A builder on the administrator's `KUBECONFIG`; panics with instructions without it.
    async fn connect() -> Self {
        LeaseBuilder {
            config: admin_config().await,
        }
    }
}

#[async_trait]
impl StoreBuilder for LeaseBuilder {
    type Store = LeaseObjectStore;
    type Guard = NamespaceGuard;

    async fn build(
        &self,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<(LeaseObjectStore, NamespaceGuard)> {
        let guard = NamespaceGuard::create(&self.config, "lease-conf").await?;
        let store = LeaseObjectStore::new(client(&self.config), guard.name.clone(), clock);
        Ok((store, guard))
    }

    async fn build_sibling(
        &self,
        guard: &NamespaceGuard,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<Option<LeaseObjectStore>> {
        Ok(Some(LeaseObjectStore::new(
            client(&self.config),
            guard.name.clone(),
            clock,
        )))
    }
}

struct ConfigMapBuilder {
    config: kube::Config,
}

impl ConfigMapBuilder {
    /// A builder on the administrator's `KUBECONFIG`; panics with instructions without it.
    async fn connect() -> Self {
        ConfigMapBuilder {
            config: admin_config().await,
        }
    }
}

#[async_trait]
impl StoreBuilder for ConfigMapBuilder {
    type Store = ConfigMapStore;
    type Guard = NamespaceGuard;

    async fn build(
        &self,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<(ConfigMapStore, NamespaceGuard)> {
        let guard = NamespaceGuard::create(&self.config, "lease-conf-cm").await?;
        let store = ConfigMapStore::builder(client(&self.config), guard.name.clone(), clock)
            .owner(None)
            .build();
        Ok((store, guard))
    }

    async fn build_sibling(
        &self,
        guard: &NamespaceGuard,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<Option<ConfigMapStore>> {
        Ok(Some(
            ConfigMapStore::builder(client(&self.config), guard.name.clone(), clock)
                .owner(None)
                .build(),
        ))
    }
}

lease_testkit::conformance_tests!(
    mod lease_store,
    LeaseBuilder::connect().await,
    ignore = "needs a Kubernetes API server: cargo xtask k8s up",
);

lease_testkit::conformance_tests!(
    mod configmap_store,
    ConfigMapBuilder::connect().await,
    ignore = "needs a Kubernetes API server: cargo xtask k8s up",
);

/// What `sibling_generation_continues` runs into, as it should be: an instance that first sees a
/// claim after the fake clock has passed the claim's expiry counts it from that first sight,
/// takes over one full duration later, and continues the generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn observed_time_sibling_waits_a_full_duration() {
    let builder = LeaseBuilder::connect().await;
    let clock = FakeClock::new();
    let (mut first, guard) = builder.build(clock.as_clock()).await.unwrap();
    let mut second = builder
        .build_sibling(&guard, clock.as_clock())
        .await
        .unwrap()
        .unwrap();
    let key = Key::new("observed", "model", "lease");
    let lease = Duration::from_secs(60);
    let claimed = first
        .claim_lease(&key, &Request::new("a", lease))
        .await
        .unwrap();

    // The second instance first sees the claim at its expiry by the first's reckoning.
    clock.set(claimed.expiry);
    let err = second
        .claim_lease(&key, &Request::new("b", lease))
        .await
        .unwrap_err();
    assert!(err.is_held(), "{err}");
    let seen = second.leases(std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(seen[&key].expiry, claimed.expiry.saturating_add(lease));
    // Meanwhile the first instance, which wrote it, knows it has expired.
    assert!(first.leases(&[]).await.unwrap().is_empty());

    clock.advance(lease - Duration::from_nanos(1));
    let err = second
        .claim_lease(&key, &Request::new("b", lease))
        .await
        .unwrap_err();
    assert!(err.is_held(), "{err}");
    clock.advance(Duration::from_nanos(1));
    let taken = second
        .claim_lease(&key, &Request::new("b", lease))
        .await
        .unwrap();
    assert!(taken.generation > claimed.generation);
    assert_eq!(taken.holder, "b");
}
