//! Juju-style application leadership with pins during an upgrade.
//!
//! Units of an application (`mysql/0`, `mysql/1`) contend for the application's leadership
//! lease in the `application-leadership` namespace, checked by the [`LeadershipSecretary`].
//! While a machine is upgraded, its agent stops renewing; the controller *pins* the lease so
//! leadership does not move in the meantime, and unpins it after the upgrade. A pinned lease
//! does not expire; expiry returns when the last pin goes.
//!
//! Run: `cargo run -p lease-examples --bin app_leadership_pins`

use std::sync::Arc;
use std::time::Duration;

use lease_core::{
    APPLICATION_LEADERSHIP_NAMESPACE, CancellationToken, Clock, Facades as _, LeadershipSecretary,
    Request, SystemClock,
};
use lease_manager::{Manager, ManagerConfig};
use lease_store_sqlite::SqliteStore;

const MODEL: &str = "model-1";
const APP: &str = "mysql";
/// Short, so the example runs in a few seconds; Juju uses a minute.
const DURATION: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let store = SqliteStore::builder(dir.path().join("leases.db"))
        .clock(Arc::clone(&clock))
        .open()?;
    let manager = Manager::start(ManagerConfig::new(store, clock).with_secretary(
        APPLICATION_LEADERSHIP_NAMESPACE,
        Arc::new(LeadershipSecretary),
    ))?;
    let claimer = manager.claimer(APPLICATION_LEADERSHIP_NAMESPACE, MODEL)?;
    let pinner = manager.pinner(APPLICATION_LEADERSHIP_NAMESPACE, MODEL)?;
    let reader = manager.reader(APPLICATION_LEADERSHIP_NAMESPACE, MODEL)?;

    // The secretary refuses names that are not Juju's before any store call.
    let bad = claimer
        .claim(APP, Request::new("machine-0", DURATION))
        .await
        .expect_err("a machine is not a unit");
    println!("refused: {bad}");
    assert!(bad.is_validation());

    let leader = claimer
        .claim(APP, Request::new("mysql/0", DURATION))
        .await?;
    println!("mysql/0 leads {APP} (generation {})", leader.generation);

    // The upgrade starts: pin the leadership for the machine being upgraded.
    pinner.pin(APP, "machine-0").await?;
    println!("pinned: {:?}", pinner.pinned().await?);

    // mysql/0 stops renewing during the upgrade, for longer than the lease lasts...
    tokio::time::sleep(DURATION * 2).await;
    // ...and still leads: a pinned lease does not expire.
    let denied = claimer
        .claim(APP, Request::new("mysql/1", DURATION))
        .await
        .expect_err("pinned leadership does not move");
    assert!(denied.is_claim_denied(), "{denied}");
    assert_eq!(
        reader.leases().await?.get(APP).map(String::as_str),
        Some("mysql/0")
    );
    println!(
        "after {:?} without renewal, mysql/0 still leads",
        DURATION * 2
    );

    // The upgrade is done: unpin. Expiry returns, and mysql/1 (still waiting) takes over
    // once the lease expires, since mysql/0 does not come back.
    pinner.unpin(APP, "machine-0").await?;
    assert!(pinner.pinned().await?.is_empty());
    let cancel = CancellationToken::new();
    claimer.wait_until_expired(APP, &cancel).await?;
    let next = claimer
        .claim(APP, Request::new("mysql/1", DURATION))
        .await?;
    assert!(next.generation > leader.generation);
    println!(
        "unpinned; mysql/1 leads {APP} (generation {})",
        next.generation
    );

    manager.stop().await;
    Ok(())
}
