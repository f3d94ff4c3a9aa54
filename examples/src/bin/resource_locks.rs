//! Transaction resource locks: a transaction locks every resource it changes (one lease per
//! resource, held by the transaction's name), renews the locks while it runs, and releases them
//! all at the end. A second transaction touching the same resource is refused and told who
//! holds it.
//!
//! Run: `cargo run -p lease-examples --bin resource_locks`

use std::sync::Arc;
use std::time::Duration;

use lease_core::{Clock, DefaultSecretary, SystemClock};
use lease_manager::{Manager, ManagerConfig, ResourceKey, ResourceLockError, ResourceLocks};
use lease_store_sqlite::SqliteStore;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let store = SqliteStore::builder(dir.path().join("leases.db"))
        .clock(Arc::clone(&clock))
        .open()?;
    let manager = Manager::start(
        ManagerConfig::new(store, clock).with_secretary("txn-locks", Arc::new(DefaultSecretary)),
    )?;
    let locks = ResourceLocks::new(&manager, "txn-locks", "cluster-1")?;

    let web = ResourceKey::new("apps", "Deployment", "prod", "web");
    let config = ResourceKey::new("", "ConfigMap", "prod", "web-config");

    // txn-1 locks both resources it changes.
    let mut held = Vec::new();
    for resource in [&web, &config] {
        let lock = locks.acquire(resource, "txn-1", TIMEOUT).await?;
        println!(
            "txn-1 locked {resource} as {} (generation {})",
            lock.lease_name, lock.generation
        );
        held.push(lock);
    }

    // txn-2 wants the Deployment too: refused, with the holder named.
    match locks.acquire(&web, "txn-2", TIMEOUT).await {
        Err(ResourceLockError::AlreadyLocked { holder, lease_name }) => {
            assert_eq!(holder, "txn-1");
            println!("txn-2 refused: {lease_name} is locked by {holder}");
        }
        other => panic!("expected AlreadyLocked, got {other:?}"),
    }

    // A long transaction renews its locks; the generation stays the same.
    for lock in &held {
        let generation = locks.renew(&lock.lease_name, "txn-1", TIMEOUT).await?;
        assert_eq!(generation, lock.generation);
    }

    // Commit: release everything at once. Releasing another transaction's lock is a no-op.
    locks.release(&held[0].lease_name, "txn-2").await?;
    let names: Vec<&str> = held.iter().map(|l| l.lease_name.as_str()).collect();
    locks.release_all(names, "txn-1").await?;
    println!("txn-1 committed and released its locks");

    let lock = locks.acquire(&web, "txn-2", TIMEOUT).await?;
    assert!(lock.generation > held[0].generation);
    println!("txn-2 locked {web} (generation {})", lock.generation);
    locks.release(&lock.lease_name, "txn-2").await?;

    manager.stop().await;
    Ok(())
}
