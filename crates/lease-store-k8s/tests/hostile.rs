//! Lease and ConfigMap objects edited by hand on a real API server: fields missing, negative,
//! empty or garbage, and our annotations mangled. For both stores, each variant is read as not
//! held (or as held by the holder its readable fields still name, never by anyone else), never
//! panics, is claimable exactly when it is not held, and the object is left as it was until a
//! legitimate write replaces it.
//!
//! Ignored by default: they need a Kubernetes API server (`cargo xtask k8s up`).

mod common;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use lease_core::{Key, Request, Store};
use lease_store_k8s::naming::object_name;
use lease_store_k8s::{ConfigMapStore, LeaseObjectStore};
use lease_testkit::FakeClock;
use serde_json::{Value, json};

use common::{NamespaceGuard, admin_config, client};

fn key() -> Key {
    Key::new("hostile", "model-1", "lease")
}

fn req(holder: &str) -> Request {
    Request::new(holder, Duration::from_secs(30))
}

/// One hand edit: a JSON merge patch, and what the stores must make of the result.
struct Edit {
    name: &'static str,
    patch: Value,
    /// The holder the edited object still validly names, if any.
    held_by: Option<&'static str>,
}

/// The object's content that a failed or refused operation must leave alone.
async fn snapshot(raw: &Api<DynamicObject>, name: &str) -> Value {
    let object = raw.get(name).await.expect("the object");
    let v = serde_json::to_value(&object).expect("json");
    json!({
        "resourceVersion": v["metadata"]["resourceVersion"],
        "annotations": v["metadata"]["annotations"],
        "spec": v["spec"],
        "data": v["data"],
    })
}

fn annotation_edits() -> Vec<Edit> {
    vec![
        Edit {
            name: "claim annotation garbage",
            patch: json!({"metadata": {"annotations": {"lease-rs/claim": "{not json"}}}),
            held_by: Some("h"),
        },
        Edit {
            name: "claim annotation of someone else",
            patch: json!({"metadata": {"annotations": {"lease-rs/claim":
                r#"{"holder":"mallory","generation":99,"durationNanos":1}"#}}}),
            held_by: Some("h"),
        },
        Edit {
            name: "pins annotation garbage",
            patch: json!({"metadata": {"annotations": {"lease-rs/pins": "[1, 2"}}}),
            held_by: Some("h"),
        },
        Edit {
            name: "key annotation removed",
            patch: json!({"metadata": {"annotations": {"lease-rs/key": null}}}),
            held_by: Some("h"),
        },
    ]
}

fn lease_edits() -> Vec<Edit> {
    let mut edits = vec![
        Edit {
            name: "holderIdentity missing",
            patch: json!({"spec": {"holderIdentity": null}}),
            held_by: None,
        },
        Edit {
            name: "holderIdentity empty",
            patch: json!({"spec": {"holderIdentity": ""}}),
            held_by: None,
        },
        Edit {
            name: "leaseDurationSeconds missing",
            patch: json!({"spec": {"leaseDurationSeconds": null}}),
            held_by: None,
        },
        Edit {
            name: "leaseTransitions missing",
            patch: json!({"spec": {"leaseTransitions": null}}),
            held_by: Some("h"),
        },
        Edit {
            name: "times missing",
            patch: json!({"spec": {"renewTime": null, "acquireTime": null}}),
            held_by: Some("h"),
        },
        Edit {
            name: "spec removed",
            patch: json!({"spec": null}),
            held_by: None,
        },
    ];
    edits.extend(annotation_edits());
    edits
}

fn configmap_edits() -> Vec<Edit> {
    let data = |field: &str, value: Value| json!({"data": {field: value}});
    let mut edits = vec![
        Edit {
            name: "holderIdentity missing",
            patch: data("holderIdentity", Value::Null),
            held_by: None,
        },
        Edit {
            name: "holderIdentity empty",
            patch: data("holderIdentity", json!("")),
            held_by: None,
        },
        Edit {
            name: "leaseDurationSeconds missing",
            patch: data("leaseDurationSeconds", Value::Null),
            held_by: None,
        },
        Edit {
            name: "leaseDurationSeconds negative",
            patch: data("leaseDurationSeconds", json!("-30")),
            held_by: None,
        },
        Edit {
            name: "leaseDurationSeconds zero",
            patch: data("leaseDurationSeconds", json!("0")),
            held_by: None,
        },
        Edit {
            name: "leaseDurationSeconds garbage",
            patch: data("leaseDurationSeconds", json!("thirty")),
            held_by: None,
        },
        Edit {
            name: "leaseDurationSeconds huge",
            patch: data("leaseDurationSeconds", json!("99999999999999999999999")),
            held_by: None,
        },
        Edit {
            name: "leaseTransitions negative",
            patch: data("leaseTransitions", json!("-3")),
            held_by: Some("h"),
        },
        Edit {
            name: "leaseTransitions garbage",
            patch: data("leaseTransitions", json!("many")),
            held_by: Some("h"),
        },
        Edit {
            name: "renewTime garbage",
            patch: data("renewTime", json!("yesterday-ish")),
            held_by: Some("h"),
        },
        Edit {
            name: "data removed",
            patch: json!({"data": null}),
            held_by: None,
        },
    ];
    edits.extend(annotation_edits());
    edits
}

/// Runs every edit against fresh objects written by stores that `make` builds.
async fn check_edits<S, F>(kind: &str, edits: Vec<Edit>, raw: Api<DynamicObject>, make: F)
where
    S: Store,
    F: Fn(&FakeClock) -> S,
{
    for (i, edit) in edits.into_iter().enumerate() {
        let name = edit.name;
        let k = Key::new("hostile", "model-1", format!("lease-{i}"));
        let object = object_name(&k);
        // A legitimate claim, then the hand edit.
        let clock = FakeClock::new();
        let mut writer = make(&clock);
        let first = writer.claim_lease(&k, &req("h")).await.unwrap();
        raw.patch(&object, &PatchParams::default(), &Patch::Merge(&edit.patch))
            .await
            .unwrap_or_else(|e| panic!("{kind} {name}: the edit was refused: {e}"));
        let before = snapshot(&raw, &object).await;

        // A store that has never seen the object (another process) reads it.
        let clock = FakeClock::new();
        let mut store = make(&clock);
        match store.leases(std::slice::from_ref(&k)).await {
            Ok(leases) => match (leases.get(&k), edit.held_by) {
                (Some(info), Some(h)) => assert_eq!(info.holder, h, "{kind} {name}"),
                (Some(info), None) => panic!("{kind} {name}: a false held: {info:?}"),
                (None, Some(h)) => panic!("{kind} {name}: {h}'s valid claim not seen"),
                (None, None) => {}
            },
            Err(e) => panic!("{kind} {name}: reading failed: {e}"),
        }
        if let Some(h) = edit.held_by {
            // Held: nobody else gets it, and the object is left alone.
            let err = store.claim_lease(&k, &req("other")).await.unwrap_err();
            assert!(err.is_held(), "{kind} {name}: {err}");
            let err = store.revoke_lease(&k, "other").await.unwrap_err();
            assert!(err.is_not_held(), "{kind} {name}: {err}");
            assert_eq!(
                snapshot(&raw, &object).await,
                before,
                "{kind} {name}: changed by refused operations"
            );
            // Its holder can still give it up, and then it is free, at a later generation.
            store.revoke_lease(&k, h).await.unwrap();
            let info = store.claim_lease(&k, &req("other")).await.unwrap();
            assert!(
                info.generation > first.generation,
                "{kind} {name}: {} after {}",
                info.generation,
                first.generation
            );
        } else {
            // Not held: the holder the object used to name cannot extend or revoke it...
            assert!(
                store.extend_lease(&k, &req("h")).await.is_err(),
                "{kind} {name}: extended"
            );
            assert!(
                store.revoke_lease(&k, "h").await.is_err(),
                "{kind} {name}: revoked"
            );
            assert_eq!(
                snapshot(&raw, &object).await,
                before,
                "{kind} {name}: changed by refused operations"
            );
            // ...and anyone may claim it, with a generation after the legitimate one even when
            // the edit removed every trace of it (claims start above the wall clock).
            let info = store.claim_lease(&k, &req("other")).await.unwrap();
            assert_eq!(info.holder, "other");
            assert!(
                info.generation > first.generation,
                "{kind} {name}: {} after {}",
                info.generation,
                first.generation
            );
        }
        // After the legitimate write the object reads cleanly again.
        let leases = store.leases(std::slice::from_ref(&k)).await.unwrap();
        assert_eq!(leases[&k].holder, "other", "{kind} {name}");
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn hand_edited_lease_objects() {
    let config = admin_config().await;
    let guard = NamespaceGuard::create(&config, "hostile-lease")
        .await
        .unwrap();
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client(&config),
        &guard.name,
        &ApiResource::erase::<Lease>(&()),
    );
    let ns = guard.name.clone();
    check_edits("Lease", lease_edits(), raw, |clock| {
        LeaseObjectStore::new(client(&config), ns.clone(), clock.as_clock())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn hand_edited_configmap_objects() {
    let config = admin_config().await;
    let guard = NamespaceGuard::create(&config, "hostile-cm").await.unwrap();
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client(&config),
        &guard.name,
        &ApiResource::erase::<ConfigMap>(&()),
    );
    let ns = guard.name.clone();
    check_edits("ConfigMap", configmap_edits(), raw, |clock| {
        ConfigMapStore::builder(client(&config), ns.clone(), clock.as_clock())
            .owner(None)
            .build()
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn a_lease_spec_the_api_server_refuses_never_reaches_the_store() {
    // Negative durations and transitions cannot be stored in a Lease at all: the API server's
    // validation refuses them, so the object keeps its legitimate claim.
    let config = admin_config().await;
    let guard = NamespaceGuard::create(&config, "hostile-neg")
        .await
        .unwrap();
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client(&config),
        &guard.name,
        &ApiResource::erase::<Lease>(&()),
    );
    let clock = FakeClock::new();
    let mut store = LeaseObjectStore::new(client(&config), guard.name.clone(), clock.as_clock());
    store.claim_lease(&key(), &req("h")).await.unwrap();
    let object = object_name(&key());
    let before = snapshot(&raw, &object).await;
    for patch in [
        json!({"spec": {"leaseDurationSeconds": -30}}),
        json!({"spec": {"leaseDurationSeconds": 0}}),
        json!({"spec": {"leaseTransitions": -1}}),
    ] {
        let refused = raw
            .patch(&object, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        assert!(refused.is_err(), "{patch}: accepted");
    }
    assert_eq!(snapshot(&raw, &object).await, before);
    let leases = store.leases(&[key()]).await.unwrap();
    assert_eq!(leases[&key()].holder, "h");
}
