//! `Election::kubernetes` against a real API server: the Lease object is named after the lease
//! in the client's namespace and reads as a client-go lock record, leadership Events are
//! recorded, a follower takes over at once after a release with a greater generation, and the
//! health check says healthy while leading.
//!
//! Needs the `kubernetes` feature (the workspace's examples enable it, so `cargo xtask ci`
//! runs this) and a server: `cargo xtask k8s up`, `eval "$(cargo xtask k8s env)"`, then
//! `cargo test -p lease --features kubernetes -- --ignored`.

#![cfg(feature = "kubernetes")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// A client whose default namespace is a fresh one, so the builder's defaults land there.
async fn client_in_fresh_namespace() -> (Client, String) {
    let Some(path) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) else {
        panic!(
            "KUBECONFIG is not set: run `cargo xtask k8s up` and `eval \"$(cargo xtask k8s env)\"`"
        );
    };
    let kubeconfig = Kubeconfig::read_from(&path).expect("a readable kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a valid kubeconfig");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("facade-{}-{nanos:x}", std::process::id());
    let admin = Client::try_from(config.clone()).expect("a client");
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(name.clone());
    Api::<Namespace>::all(admin)
        .create(&PostParams::default(), &namespace)
        .await
        .expect("creating a namespace");
    config.default_namespace = name.clone();
    (Client::try_from(config).expect("a client"), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server (cargo xtask k8s up)"]
async fn kubernetes_election_in_a_few_lines() {
    let (client, namespace) = client_in_fresh_namespace().await;
    let fast = (
        Duration::from_secs(6),
        Duration::from_secs(4),
        Duration::from_secs(1),
    );
    let a = lease::Election::kubernetes(client.clone(), "my-controller")
        .identity("pod-a")
        .timing(fast.0, fast.1, fast.2)
        .start()
        .unwrap();
    let b = lease::Election::kubernetes(client.clone(), "my-controller")
        .identity("pod-b")
        .timing(fast.0, fast.1, fast.2)
        .start()
        .unwrap();

    let term_a = a.lead().await.unwrap();
    term_a.health_check().check().unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let object = leases.get("my-controller").await.unwrap();
    let spec = object.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
    assert_eq!(spec.lease_duration_seconds, Some(6));

    let b_leads = tokio::spawn(async move {
        let term = b.lead().await;
        (b, term)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !b_leads.is_finished(),
        "pod-b must follow while pod-a leads"
    );
    let generation_a = term_a.generation();
    let released = std::time::Instant::now();
    assert!(term_a.release().await);
    let (b, term_b) = b_leads.await.unwrap();
    let term_b = term_b.unwrap();
    // Woken by the watch, not by the lease running out.
    assert!(
        released.elapsed() < Duration::from_secs(3),
        "{:?}",
        released.elapsed()
    );
    assert!(term_b.generation() > generation_a);
    let spec = leases.get("my-controller").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));

    // Events on by default, as client-go records them.
    let events: Api<Event> = Api::namespaced(client, &namespace);
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.message)
            .collect();
        if seen.iter().any(|m| m.contains("pod-b became leader")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter().any(|m| m.contains("pod-a became leader")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|m| m.contains("pod-b became leader")),
        "{seen:?}"
    );
    drop(term_b);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs a Kubernetes API server (cargo xtask k8s up)"]
async fn a_lease_name_that_cannot_name_an_object_is_refused_before_any_request() {
    let (client, _) = client_in_fresh_namespace().await;
    let err = lease::Election::kubernetes(client, "My_Controller")
        .identity("pod-a")
        .start()
        .unwrap_err();
    match err {
        lease::Error::Setting { setting, reason } => {
            assert_eq!(setting, "lease");
            assert!(reason.contains("My_Controller"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
