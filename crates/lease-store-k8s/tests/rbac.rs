//! The minimal Role of the crate docs, checked on a real API server with a user that has no
//! other rights: with the Role bound every operation works (the watch included); without it,
//! or with a Role lacking a verb, the error names the missing permission.
//!
//! Ignored by default: `cargo xtask k8s up`, `eval "$(cargo xtask k8s env)"` (which sets
//! `LEASE_TEST_RESTRICTED_KUBECONFIG` and `LEASE_TEST_RESTRICTED_USER`), then
//! `cargo test -p lease-store-k8s -- --ignored`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::Api;
use kube::api::PostParams;
use lease_core::{Clock, Key, Request, Store, SystemClock};
use lease_store_k8s::{ConfigMapStore, K8sStoreError, LeaseObjectStore};

use common::{NamespaceGuard, admin_config, client, config_from};

fn rule(group: &str, resource: &str, verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// The Role of the crate docs.
fn minimal_rules() -> Vec<PolicyRule> {
    let verbs = ["get", "list", "watch", "create", "update"];
    vec![
        rule("coordination.k8s.io", "leases", &verbs),
        rule("", "configmaps", &verbs),
        rule("", "events", &["create"]),
    ]
}

/// Binds a Role with `rules` to the restricted user in `namespace`.
async fn grant(admin: &kube::Config, namespace: &str, rules: Vec<PolicyRule>) {
    let user = std::env::var("LEASE_TEST_RESTRICTED_USER").unwrap_or_else(|_| "lease-user".into());
    let roles: Api<Role> = Api::namespaced(client(admin), namespace);
    let mut role = Role::default();
    role.metadata.name = Some("lease-rs".into());
    role.rules = Some(rules);
    roles.create(&PostParams::default(), &role).await.unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(client(admin), namespace);
    let binding = RoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some("lease-rs".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "lease-rs".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user,
            api_group: Some("rbac.authorization.k8s.io".into()),
            namespace: None,
        }]),
    };
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

fn permission(err: &lease_core::Error) -> Option<(&'static str, &'static str, String)> {
    let source = std::error::Error::source(err)?;
    match source.downcast_ref::<K8sStoreError>()? {
        K8sStoreError::Permission {
            verb,
            resource,
            namespace,
            ..
        } => Some((verb, resource, namespace.clone())),
        _ => None,
    }
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn minimal_role_is_enough() {
    let admin = admin_config().await;
    let restricted = config_from("LEASE_TEST_RESTRICTED_KUBECONFIG").await;
    let ns = NamespaceGuard::create(&admin, "lease-rbac").await.unwrap();
    grant(&admin, &ns.name, minimal_rules()).await;
    // RBAC caches take a moment to see a new binding.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let key = Key::new("rbac", "model", "lease");
    let request = Request::new("holder", Duration::from_secs(30));
    let mut store = LeaseObjectStore::new(client(&restricted), ns.name.clone(), clock());
    let mut follower = LeaseObjectStore::new(client(&restricted), ns.name.clone(), clock());
    let mut changes = follower.change_notifier().expect("a watch");
    let before = *changes.borrow_and_update();

    let info = store.claim_lease(&key, &request).await.unwrap();
    store.extend_lease(&key, &request).await.unwrap();
    assert_eq!(store.leases(&[]).await.unwrap()[&key].holder, "holder");
    assert_eq!(
        store.lease_group("rbac", "model").await.unwrap()[&key].generation,
        info.generation
    );
    store.pin_lease(&key, "e").await.unwrap();
    store.unpin_lease(&key, "e").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), changes.wait_for(|n| *n != before))
        .await
        .expect("the restricted user's watch sees the claim")
        .unwrap();
    assert!(
        follower
            .claim_lease(&key, &Request::new("other", Duration::from_secs(30)))
            .await
            .unwrap_err()
            .is_held()
    );
    store.revoke_lease(&key, "holder").await.unwrap();

    let mut cm = ConfigMapStore::builder(client(&restricted), ns.name.clone(), clock())
        .owner(None)
        .build();
    cm.claim_lease(&key, &request).await.unwrap();
    cm.extend_lease(&key, &request).await.unwrap();
    cm.revoke_lease(&key, "holder").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn missing_permissions_are_named() {
    let admin = admin_config().await;
    let restricted = config_from("LEASE_TEST_RESTRICTED_KUBECONFIG").await;
    let key = Key::new("rbac", "model", "lease");
    let request = Request::new("holder", Duration::from_secs(30));

    // No Role at all: the first request (a get) is refused.
    let bare = NamespaceGuard::create(&admin, "lease-rbac-none")
        .await
        .unwrap();
    let mut store = LeaseObjectStore::new(client(&restricted), bare.name.clone(), clock());
    let err = store.claim_lease(&key, &request).await.unwrap_err();
    assert_eq!(
        permission(&err),
        Some(("get", "leases", bare.name.clone())),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("cannot get leases in namespace \"{}\"", bare.name)),
        "{err}"
    );
    let err = store.lease_group("rbac", "model").await.unwrap_err();
    assert_eq!(
        permission(&err),
        Some(("list", "leases", bare.name.clone()))
    );

    // Read-only: the create is refused, and named.
    let read_only = NamespaceGuard::create(&admin, "lease-rbac-ro")
        .await
        .unwrap();
    grant(
        &admin,
        &read_only.name,
        vec![
            rule("coordination.k8s.io", "leases", &["get", "list", "watch"]),
            rule("", "configmaps", &["get", "list", "watch"]),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut store = LeaseObjectStore::new(client(&restricted), read_only.name.clone(), clock());
    let err = store.claim_lease(&key, &request).await.unwrap_err();
    assert_eq!(
        permission(&err),
        Some(("create", "leases", read_only.name.clone())),
        "{err}"
    );
    let mut cm = ConfigMapStore::builder(client(&restricted), read_only.name.clone(), clock())
        .owner(None)
        .build();
    let err = cm.claim_lease(&key, &request).await.unwrap_err();
    assert_eq!(
        permission(&err),
        Some(("create", "configmaps", read_only.name.clone())),
        "{err}"
    );

    // A namespace that does not exist is reported as such.
    let mut store =
        LeaseObjectStore::new(client(&admin), common::unique_name("no-such-ns"), clock());
    let err = store.claim_lease(&key, &request).await.unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    assert!(
        matches!(
            std::error::Error::source(&err).and_then(|s| s.downcast_ref::<K8sStoreError>()),
            Some(K8sStoreError::NamespaceNotFound { .. })
        ),
        "{err}"
    );
}
