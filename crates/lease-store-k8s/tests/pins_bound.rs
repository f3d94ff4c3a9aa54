//! The pins annotation is bounded (`MAX_PINS_BYTES`): one pin per entity can no longer grow a
//! lease's object until Kubernetes' 256 KiB annotation limit refuses every write to it. Against
//! a real API server, for both stores: entities with the longest names pin a lease until the
//! store refuses one with a validation error naming the limit (before writing); the object is
//! still fully writable: its holder extends with the most metadata allowed, an unpin makes
//! room for another pin, and every pin is still there.
//!
//! Two writers racing to the limit (each on its own client, as two processes would be) never
//! take the annotation past it, and lose no pin either of them was told had been made.
//!
//! Ignored by default: they need a Kubernetes API server (`cargo xtask k8s up`).

mod common;

use std::time::Duration;

use lease_core::{ErrorKind, Key, MAX_METADATA_BYTES, MAX_NAME_BYTES, Request, Store};
use lease_store_k8s::naming::MAX_PINS_BYTES;
use lease_store_k8s::{ConfigMapStore, LeaseObjectStore};
use lease_testkit::FakeClock;

use common::{NamespaceGuard, admin_config, client};

fn key() -> Key {
    Key::new("pins", "model-1", "lease")
}

/// An entity name of the longest length allowed, distinct per `i`.
fn entity(i: usize) -> String {
    let prefix = format!("entity-{i:05}-");
    format!("{prefix}{}", "p".repeat(MAX_NAME_BYTES - prefix.len()))
}

/// The most metadata allowed: a JSON string of `MAX_METADATA_BYTES` bytes in all.
fn biggest_metadata() -> serde_json::Value {
    serde_json::Value::String("m".repeat(MAX_METADATA_BYTES - 2))
}

async fn fill_and_check(label: &str, mut store: impl Store) {
    let duration = Duration::from_secs(300);
    store
        .claim_lease(&key(), &Request::new("holder", duration))
        .await
        .unwrap();
    // Each pin adds a name and its quotes and comma to the annotation's JSON array.
    let most = MAX_PINS_BYTES / (MAX_NAME_BYTES + 3);
    let mut pinned = 0;
    let refusal = loop {
        assert!(pinned <= most + 1, "{label}: {pinned} pins, past the bound");
        match store.pin_lease(&key(), &entity(pinned)).await {
            Ok(()) => pinned += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refusal.kind(), ErrorKind::Validation, "{label}: {refusal}");
    let message = refusal.to_string();
    assert!(
        message.contains("MAX_PINS_BYTES") && message.contains(&MAX_PINS_BYTES.to_string()),
        "{label}: the refusal does not name the limit: {message}"
    );
    assert!(
        pinned >= most - 1,
        "{label}: refused after only {pinned} pins"
    );
    // Pinning an entity already there is no change, and no error.
    store.pin_lease(&key(), &entity(0)).await.unwrap();

    // The object is still writable with everything the API allows.
    let info = store
        .extend_lease(
            &key(),
            &Request::new("holder", duration).with_metadata(biggest_metadata()),
        )
        .await
        .unwrap_or_else(|e| panic!("{label}: the holder cannot extend a full-pinned lease: {e}"));
    assert!(info.pinned);
    let pins = store.pinned().await.unwrap();
    assert_eq!(pins.get(&key()).map(Vec::len), Some(pinned), "{label}");

    // An unpin makes room for one more.
    store.unpin_lease(&key(), &entity(0)).await.unwrap();
    store.pin_lease(&key(), &entity(pinned)).await.unwrap();
    let again = store.pin_lease(&key(), &entity(pinned + 1)).await;
    assert_eq!(
        again.map_err(|e| e.kind()),
        Err(ErrorKind::Validation),
        "{label}"
    );
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn lease_objects_pins_are_bounded_and_the_object_stays_writable() {
    let config = admin_config().await;
    let guard = NamespaceGuard::create(&config, "pins-lease").await.unwrap();
    let clock = FakeClock::new();
    let store = LeaseObjectStore::new(client(&config), guard.name.clone(), clock.as_clock());
    fill_and_check("Lease", store).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn configmap_pins_are_bounded_and_the_object_stays_writable() {
    let config = admin_config().await;
    let guard = NamespaceGuard::create(&config, "pins-cm").await.unwrap();
    let clock = FakeClock::new();
    let store = ConfigMapStore::builder(client(&config), guard.name.clone(), clock.as_clock())
        .owner(None)
        .build();
    fill_and_check("ConfigMap", store).await;
}

/// Two stores (two clients, as two processes) pin one lease at once, each with its own
/// entities, until each is refused. The API server's optimistic concurrency makes each write
/// that lost a race read the object again, so the limit is checked on what is really there:
/// the annotation on the object never exceeds `MAX_PINS_BYTES`, and it holds exactly the pins
/// whose calls returned `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn two_writers_racing_to_the_pins_limit_stay_within_it() {
    use k8s_openapi::api::coordination::v1::Lease;
    use lease_store_k8s::naming::{ANNOTATION_PINS, object_name};

    let config = admin_config().await;
    let guard = NamespaceGuard::create(&config, "pins-race").await.unwrap();
    let clock = FakeClock::new();
    let open = || LeaseObjectStore::new(client(&config), guard.name.clone(), clock.as_clock());
    let mut holder = open();
    holder
        .claim_lease(&key(), &Request::new("holder", Duration::from_secs(300)))
        .await
        .unwrap();
    let pinner = |writer: usize, mut store: LeaseObjectStore| async move {
        let mut made = Vec::new();
        let mut i = 0;
        loop {
            let name = entity(writer * 100_000 + i);
            match store.pin_lease(&key(), &name).await {
                Ok(()) => {
                    made.push(name);
                    i += 1;
                }
                Err(e) if e.kind() == ErrorKind::Validation => return (made, e),
                // Lost the race too often in a row: the store's answer is `Invalid` (nothing
                // written; try again), as for every operation on an object that keeps changing.
                Err(e) if e.kind() == ErrorKind::Invalid => {}
                Err(e) => panic!("writer {writer}: pin {i}: {e}"),
            }
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(pinner(1, open())),
        tokio::spawn(pinner(2, open()))
    );
    let ((made_a, refused_a), (made_b, refused_b)) = (a.unwrap(), b.unwrap());
    for refusal in [&refused_a, &refused_b] {
        assert!(refusal.to_string().contains("MAX_PINS_BYTES"), "{refusal}");
    }
    // Both made progress (the race was real), and together they filled the annotation.
    assert!(
        !made_a.is_empty() && !made_b.is_empty(),
        "{} and {}",
        made_a.len(),
        made_b.len()
    );

    let api: kube::Api<Lease> = kube::Api::namespaced(client(&config), &guard.name);
    let object = api.get(&object_name(&key())).await.unwrap();
    let text = object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_PINS))
        .expect("the pins annotation");
    assert!(
        text.len() <= MAX_PINS_BYTES,
        "the annotation is {} bytes, over {MAX_PINS_BYTES}",
        text.len()
    );
    let on_object: std::collections::BTreeSet<String> = serde_json::from_str(text).unwrap();
    let made: std::collections::BTreeSet<String> = made_a.into_iter().chain(made_b).collect();
    assert_eq!(
        on_object, made,
        "the object's pins are exactly those reported made"
    );
    // Full: one more entity no longer fits.
    let most = MAX_PINS_BYTES / (MAX_NAME_BYTES + 3);
    assert!(
        made.len() >= most - 1,
        "only {} pins of about {most}",
        made.len()
    );
}
