//! A ConfigMap lock: a named lock on Kubernetes that any pod can take, with an expiry, owned by
//! the pod that holds it (so deleting the pod frees it). `acquire` waits, up to the lock's
//! timeout, for the holder to release it; `release` refuses a lock that is not ours.
//!
//! Needs a Kubernetes API server: `KUBECONFIG` names it (`cargo xtask k8s up`, then
//! `eval "$(cargo xtask k8s env)"`). The ConfigMap is created in the kubeconfig's default
//! namespace.
//!
//! Run: `cargo run -p lease-examples --bin configmap_lock`

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lease_store_k8s::{ConfigMapLock, ConfigMapLockError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await?;
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let name = format!("example-backup-lock-{run:x}");
    let labels = BTreeMap::from([("app".to_owned(), "backup".to_owned())]);
    // In a pod, the owner comes from POD_NAME and POD_UID; here there is none.
    let lock = |identity: &str, timeout: Duration| {
        ConfigMapLock::new(client.clone(), &*name, Some(timeout))
            .with_identity(identity)
            .with_labels(labels.clone())
            .with_owner(None)
    };
    let worker_a = lock("worker-a", Duration::from_secs(30));
    // worker-b gives up after a second.
    let worker_b = lock("worker-b", Duration::from_secs(1));

    let generation = worker_a.acquire().await?;
    println!(
        "worker-a holds ConfigMap {}/{} (generation {generation}): {:?}",
        worker_a.namespace(),
        worker_a.name(),
        worker_a.data()
    );

    // worker-b cannot get it within its timeout.
    match worker_b.acquire().await {
        Err(ConfigMapLockError::Timeout { holder, .. }) => {
            println!("worker-b timed out; holder {holder:?}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Nor release it: the lock is not worker-b's.
    match worker_b.release().await {
        Err(ConfigMapLockError::NotOurs { holder, .. }) => {
            assert_eq!(holder.as_deref(), Some(worker_a.identity()));
        }
        other => panic!("expected NotOurs, got {other:?}"),
    }

    // worker-a releases while worker-b waits: the watch wakes worker-b at once.
    let worker_b = lock("worker-b", Duration::from_secs(10));
    let waiting = tokio::spawn(async move {
        let generation = worker_b.acquire().await;
        (worker_b, generation, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let released = Instant::now();
    worker_a.release().await?;
    let (worker_b, next, acquired) = waiting.await?;
    let next = next?;
    assert!(next > generation, "a new generation for every acquisition");
    println!(
        "worker-b acquired it {:?} after the release (generation {next})",
        acquired.saturating_duration_since(released)
    );
    worker_b.release().await?;
    Ok(())
}
