//! An auto-renewing [`Leaser`](lease_core::Leaser) with metadata: a runner reserves a
//! deployment, records who it is and what it does in the lease's metadata, and keeps the lease
//! while it works; another runner sees a conflict. The lease renews itself in the background;
//! `lost` fires if it cannot.
//!
//! Run: `cargo run -p lease-examples --bin leaser_metadata`

use std::sync::Arc;
use std::time::Duration;

use lease_core::{
    Clock, DefaultSecretary, Leaser as _, LeaserError, LeaserExt as _, PathKey, SystemClock,
};
use lease_manager::{LeaserConfig, Manager, ManagerConfig, ManagerLeaser};
use lease_store_sqlite::SqliteStore;
use serde::{Deserialize, Serialize};

/// What the lease says about its holder's work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reservation {
    deployment: String,
    runner: String,
    pid: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let store = SqliteStore::builder(dir.path().join("leases.db"))
        .clock(Arc::clone(&clock))
        .open()?;
    let manager = Manager::start(
        ManagerConfig::new(store, Arc::clone(&clock))
            .with_secretary("runners", Arc::new(DefaultSecretary)),
    )?;
    let runner_a = ManagerLeaser::new(
        &manager,
        Arc::clone(&clock),
        LeaserConfig::new("runners", "prod", "runner-a"),
    )?;
    let runner_b = ManagerLeaser::new(
        &manager,
        Arc::clone(&clock),
        LeaserConfig::new("runners", "prod", "runner-b"),
    )?;

    // Keys are paths: `system/runner/deployment-reservation/d-42`.
    let key = PathKey::system(["runner", "deployment-reservation", "d-42"])?;
    let reservation = Reservation {
        deployment: "d-42".into(),
        runner: "runner-a".into(),
        pid: std::process::id(),
    };
    let (guard, lost) = runner_a
        .acquire_lease_with(&key, Duration::from_secs(30), &reservation)
        .await?;
    println!("runner-a holds {key} (generation {})", guard.generation());

    // Another runner cannot take it while it is held.
    match runner_b
        .acquire_lease(&key, Duration::from_secs(30), None)
        .await
    {
        Err(LeaserError::Conflict { key }) => println!("runner-b: {key} is taken"),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // The holder reads its metadata back in its own type.
    let info = runner_a
        .lease_info::<Reservation>(&key)
        .await?
        .expect("runner-a holds the lease");
    assert_eq!(info.metadata.as_ref(), Some(&reservation));
    println!("metadata: {:?}, holder {}", info.metadata, info.holder);

    // Work until done or until the lease is lost, whichever is first.
    tokio::select! {
        () = lost.cancelled() => return Err("the reservation was lost".into()),
        () = tokio::time::sleep(Duration::from_millis(200)) => println!("runner-a deployed d-42"),
    }

    // Releasing revokes at once: runner-b gets it now, with a higher generation.
    guard.release().await?;
    assert!(lost.is_cancelled(), "release fires the lost token");
    let (next, _lost) = runner_b
        .acquire_lease(&key, Duration::from_secs(30), None)
        .await?;
    assert!(next.generation() > info.generation);
    println!("runner-b holds {key} (generation {})", next.generation());
    next.release().await?;

    manager.stop().await;
    Ok(())
}
