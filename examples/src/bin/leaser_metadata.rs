//! An auto-renewing [`Leaser`](lease_core::Leaser) with metadata: a runner reserves a
//! deployment, records who it is and what it does in the lease's metadata, and keeps the lease
//! while it works; another runner sees a conflict. The lease renews itself in the background;
//! `lost` fires if it cannot.
//!
//! The `lease` facade crate wires the store, the clock and the manager in one line per runner.
//!
//! Run: `cargo run -p lease-examples --bin leaser_metadata`

use std::time::Duration;

use lease::{Leaser as _, LeaserExt as _, PathKey};
use lease_core::LeaserError;
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
    let db = dir.path().join("leases.db");
    // Two runners, as two processes would be, sharing one database file.
    let runner_a = lease::Leases::sqlite()
        .path(&db)
        .identity("runner-a")
        .start()?;
    let runner_b = lease::Leases::sqlite()
        .path(&db)
        .identity("runner-b")
        .start()?;

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
    // runner-b's manager sees another process's release within its refresh interval
    // (100 ms at most; usually at once, through the SQLite change notifier).
    let mut attempts = 0;
    let (next, _lost) = loop {
        match runner_b
            .acquire_lease(&key, Duration::from_secs(30), None)
            .await
        {
            Err(LeaserError::Conflict { .. }) if attempts < 50 => attempts += 1,
            other => break other?,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(next.generation() > info.generation);
    println!("runner-b holds {key} (generation {})", next.generation());
    next.release().await?;

    runner_a.shutdown().await;
    runner_b.shutdown().await;
    Ok(())
}
