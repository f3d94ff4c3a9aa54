//! [`StoreOptions::trust_renew_time`], both values, on a real API server: how a record whose
//! `renewTime` is far in the past, but which this process just saw change, is judged.
//!
//! (The choice between observed time and the holder's `renewTime` lives in the store's
//! options, not in the elector's configuration.)
//!
//! Ignored by default (they need a server): `cargo xtask k8s up`, then
//! `eval "$(cargo xtask k8s env)"` and `cargo nextest run -p lease-store-k8s --run-ignored all`.

mod common;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use lease_core::{Key, Request, Store};
use lease_store_k8s::naming::object_name;
use lease_store_k8s::{LeaseObjectStore, StoreOptions};
use lease_testkit::FakeClock;
use serde_json::json;

use common::{NamespaceGuard, admin_config, client};

const DURATION: Duration = Duration::from_secs(30);

/// A namespace with a lease on `key` held by `holder` for [`DURATION`].
async fn held(config: &kube::Config, prefix: &str, key: &Key) -> NamespaceGuard {
    let ns = NamespaceGuard::create(config, prefix).await.unwrap();
    let mut holder =
        LeaseObjectStore::new(client(config), ns.name.clone(), FakeClock::new().as_clock());
    holder
        .claim_lease(key, &Request::new("holder", DURATION))
        .await
        .unwrap();
    ns
}

/// Sets the lease's `renewTime` to 2020: a write, so the record changes now.
async fn set_old_renew_time(config: &kube::Config, ns: &NamespaceGuard, key: &Key) {
    Api::<Lease>::namespaced(client(config), &ns.name)
        .patch(
            &object_name(key),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"renewTime": "2020-01-01T00:00:00.000000Z"}})),
        )
        .await
        .unwrap();
}

fn store(
    config: &kube::Config,
    ns: &NamespaceGuard,
    clock: &FakeClock,
    trust: bool,
) -> LeaseObjectStore {
    LeaseObjectStore::with_options(
        client(config),
        ns.name.clone(),
        clock.as_clock(),
        StoreOptions::default().trust_renew_time(trust),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn observed_time_counts_from_the_change_this_process_saw() {
    let config = admin_config().await;
    let key = Key::new("trust", "model-1", "observed");
    let ns = held(&config, "trust-false", &key).await;
    let clock = FakeClock::new();
    let mut reader = store(&config, &ns, &clock, false);
    // The reader sees the claim (observed at t0)...
    let seen = reader.leases(std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(seen[&key].holder, "holder");
    // ...and 20 s later on its clock sees the record change (renewTime set to 2020).
    clock.advance(Duration::from_secs(20));
    set_old_renew_time(&config, &ns, &key).await;
    let seen = reader.leases(std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(seen[&key].holder, "holder", "expired by its renewTime");
    let other = Request::new("other", DURATION);
    // Past the first observation's expiry, but not the change's: still held.
    clock.advance(Duration::from_secs(20));
    let err = reader.claim_lease(&key, &other).await.unwrap_err();
    assert!(err.is_held(), "{err}");
    clock.advance(Duration::from_secs(9));
    assert!(
        reader
            .claim_lease(&key, &other)
            .await
            .unwrap_err()
            .is_held()
    );
    // A full duration after the change, on this process's clock: expired.
    clock.advance(Duration::from_secs(1));
    let info = reader.claim_lease(&key, &other).await.unwrap();
    assert_eq!(info.holder, "other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn trusting_renew_time_expires_it_at_once() {
    let config = admin_config().await;
    let key = Key::new("trust", "model-1", "renew-time");
    let ns = held(&config, "trust-true", &key).await;
    set_old_renew_time(&config, &ns, &key).await;
    // The same record, just changed, judged both ways on clocks that do not move: by observed
    // time it is held for its full duration...
    let mut observer = store(&config, &ns, &FakeClock::new(), false);
    let seen = observer.leases(std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(seen[&key].holder, "holder");
    let other = Request::new("other", DURATION);
    assert!(
        observer
            .claim_lease(&key, &other)
            .await
            .unwrap_err()
            .is_held()
    );
    // ...by its holder's renewTime, years old, it is expired at once.
    let mut truster = store(&config, &ns, &FakeClock::new(), true);
    assert!(
        truster
            .leases(std::slice::from_ref(&key))
            .await
            .unwrap()
            .is_empty()
    );
    let info = truster.claim_lease(&key, &other).await.unwrap();
    assert_eq!(info.holder, "other");
}
