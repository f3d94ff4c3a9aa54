//! [`ConfigMapLock`] against a real Kubernetes API server: the named ConfigMap with
//! labels and owner reference, mutual exclusion between two locks of one name, a release
//! waking a waiter through the watch, the acquire timeout, a stale lock taken over within one
//! acquire whose timeout equals its expiry, and a lock without expiry.
//!
//! Ignored by default (they need a server): `cargo xtask k8s up`, then
//! `eval "$(cargo xtask k8s env)"` and `cargo test -p lease-store-k8s -- --ignored`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::client::ClientBuilder;
use lease_store_k8s::{ConfigMapLock, ConfigMapLockError, OwnerPod};
use lease_testkit::FakeClock;
use tokio::time::timeout;
use tower::util::MapResponseLayer;

use common::{NamespaceGuard, admin_config, client};

fn lock(
    config: &kube::Config,
    namespace: &str,
    name: &str,
    identity: &str,
    timeout: Option<Duration>,
) -> ConfigMapLock {
    ConfigMapLock::new(client(config), name, timeout)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_owner(Some(OwnerPod::new(identity, format!("uid-{identity}"))))
        .with_labels(BTreeMap::from([("app".to_owned(), "backup".to_owned())]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn two_locks_of_one_name_take_turns() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "cm-lock").await.unwrap();
    let a = lock(
        &config,
        &ns.name,
        "nightly-backup",
        "pod-a",
        Some(Duration::from_secs(60)),
    );
    let b = lock(
        &config,
        &ns.name,
        "nightly-backup",
        "pod-b",
        Some(Duration::from_secs(60)),
    );
    let first = a.acquire().await.unwrap();
    // Acquiring again is a no-op success.
    assert_eq!(a.acquire().await.unwrap(), first);

    // The ConfigMap is named exactly, labelled, owned by a's pod, and says who holds it.
    let cm = Api::<ConfigMap>::namespaced(client(&config), &ns.name)
        .get("nightly-backup")
        .await
        .unwrap();
    assert_eq!(cm.metadata.labels.as_ref().unwrap()["app"], "backup");
    let owners = cm.metadata.owner_references.unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("Pod", "pod-a")
    );
    let data = cm.data.unwrap();
    for (field, value) in a.data() {
        assert_eq!(data[&field], value, "{field}");
    }

    // b's release fails (not its lock); b waits, and a's release wakes it promptly (the store's
    // watch, not the 60 s expiry).
    match b.release().await.unwrap_err() {
        ConfigMapLockError::NotOurs { holder, .. } => assert_eq!(holder.as_deref(), Some("pod-a")),
        other => panic!("{other:?}"),
    }
    let waiter = tokio::spawn(async move {
        let generation = b.acquire().await;
        (generation, Instant::now(), b)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "b got a lock a holds");
    let released = Instant::now();
    a.release().await.unwrap();
    let (generation, acquired, b) = timeout(Duration::from_secs(10), waiter)
        .await
        .expect("b acquires after a's release")
        .unwrap();
    assert!(generation.unwrap() > first);
    assert!(acquired >= released);
    assert!(
        acquired.duration_since(released) < Duration::from_secs(5),
        "b should wake on the release, not on a timer"
    );
    // Released twice: an error.
    assert!(matches!(
        a.release().await.unwrap_err(),
        ConfigMapLockError::NotOurs { .. }
    ));
    b.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn acquire_gives_up_after_the_timeout_and_an_unreleased_lock_expires() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "cm-lock-timeout")
        .await
        .unwrap();
    // a's lock lasts a minute; b gives up after 2 s, naming the holder.
    let a = lock(
        &config,
        &ns.name,
        "deploy",
        "pod-a",
        Some(Duration::from_secs(60)),
    );
    let b = lock(
        &config,
        &ns.name,
        "deploy",
        "pod-b",
        Some(Duration::from_secs(2)),
    );
    let first = a.acquire().await.unwrap();
    let started = Instant::now();
    match b.acquire().await.unwrap_err() {
        ConfigMapLockError::Timeout {
            holder, timeout, ..
        } => {
            assert_eq!(holder.as_deref(), Some("pod-a"));
            assert_eq!(timeout, Duration::from_secs(2));
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    a.release().await.unwrap();

    // c's 2 s lock is never released: d (waiting up to 10 s) takes it over once it has not
    // changed for 2 s, with a newer generation; c's release then fails.
    let c = lock(
        &config,
        &ns.name,
        "deploy",
        "pod-c",
        Some(Duration::from_secs(2)),
    );
    let d = lock(
        &config,
        &ns.name,
        "deploy",
        "pod-d",
        Some(Duration::from_secs(10)),
    );
    let held = c.acquire().await.unwrap();
    assert!(held > first);
    let started = Instant::now();
    let taken = timeout(Duration::from_secs(20), d.acquire())
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(taken > held);
    assert!(matches!(
        c.release().await.unwrap_err(),
        ConfigMapLockError::NotOurs { .. }
    ));
    d.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn a_lock_without_timeout_never_expires() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "cm-lock-forever")
        .await
        .unwrap();
    let a = lock(&config, &ns.name, "forever", "pod-a", None);
    let b = lock(&config, &ns.name, "forever", "pod-b", None);
    assert_eq!(a.timeout(), None);
    a.acquire().await.unwrap();
    let cm = Api::<ConfigMap>::namespaced(client(&config), &ns.name)
        .get("forever")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["expiry"], "never");
    // Without a timeout b waits as long as it takes: still waiting after 3 s.
    assert!(
        timeout(Duration::from_secs(3), b.acquire()).await.is_err(),
        "b took a lock without expiry"
    );
    a.release().await.unwrap();
    timeout(Duration::from_secs(10), b.acquire())
        .await
        .unwrap()
        .unwrap();
}

/// A client for `config` whose first response arrives `latency` late on `clock`: the first
/// read of a lock takes a while (a loaded API server), the others are instant.
fn slow_first_response(
    config: &kube::Config,
    clock: &FakeClock,
    latency: Duration,
) -> kube::Client {
    let clock = clock.clone();
    let first = Arc::new(AtomicBool::new(true));
    let layer = MapResponseLayer::new(move |response: http::Response<_>| {
        if first.swap(false, Ordering::SeqCst) {
            clock.advance(latency);
        }
        response
    });
    ClientBuilder::try_from(config.clone())
        .expect("a client builder")
        .with_layer(&layer)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn one_acquire_takes_over_a_stale_lock_whose_expiry_equals_its_timeout() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "cm-lock-stale")
        .await
        .unwrap();
    const STEP: Duration = Duration::from_millis(100);
    for (round, ttl, wait) in [(0, 2, 2), (1, 2, 3), (2, 5, 5)] {
        let name = format!("stale-{round}");
        // c takes a lock and vanishes without releasing it: nobody renews it.
        let c = lock(
            &config,
            &ns.name,
            &name,
            "pod-c",
            Some(Duration::from_secs(ttl)),
        );
        let held = c.acquire().await.unwrap();
        drop(c);
        // d, which never saw it, waits up to its timeout (equal to or longer than the lock's
        // ttl) in ONE call; its first read of the lock takes 500 ms of its (fake) clock.
        let clock = FakeClock::new();
        let d = ConfigMapLock::new(
            slow_first_response(&config, &clock, Duration::from_millis(500)),
            &*name,
            Some(Duration::from_secs(wait)),
        )
        .with_namespace(&*ns.name)
        .with_identity("pod-d")
        .with_owner(None)
        .with_clock(clock.as_clock());
        let waiter = tokio::spawn(async move { d.acquire().await });
        let mut driven = Duration::ZERO;
        while !waiter.is_finished() {
            assert!(
                driven < Duration::from_secs(60),
                "round {round}: acquire still waiting after 60 s of fake time"
            );
            // Let d set its timer (or finish), then move time on.
            let _ = clock.try_wait_for_sleepers(1, Duration::from_secs(2)).await;
            clock.advance(STEP);
            driven += STEP;
        }
        match waiter.await.unwrap() {
            Ok(generation) => assert!(generation > held, "round {round}"),
            Err(e) => panic!(
                "round {round}: a {wait} s acquire did not take over a stale {ttl} s lock: {e}"
            ),
        }
    }
}
