//! A singular worker on SQLite: exactly one of several copies of a controller does the work.
//! Each copy claims the lease, renews it while it works, and steps down by revoking it; the
//! others wait for it to be free and take over at once, with a higher fencing generation.
//!
//! Juju's `singular-controller` namespace: the lease is the model's UUID, holders are machine
//! agents, and the [`SingularSecretary`] checks both before any store call.
//!
//! Run: `cargo run -p lease-examples --bin singular_worker`

use std::sync::Arc;
use std::time::{Duration, Instant};

use lease_core::{
    CancellationToken, Clock, Facades as _, Request, SINGULAR_CONTROLLER_NAMESPACE,
    SingularSecretary, SystemClock, Token as _,
};
use lease_manager::{Manager, ManagerConfig};
use lease_store_sqlite::SqliteStore;

const MODEL: &str = "a7f3c0de-0000-4000-8000-000000000001";
const CONTROLLER: &str = "c0ffee00-0000-4000-8000-000000000000";
const DURATION: Duration = Duration::from_secs(10);

/// One copy of the program: its own manager over the shared SQLite file (as separate
/// processes on one host would have).
fn start_copy(path: &std::path::Path) -> Result<Manager, Box<dyn std::error::Error>> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let store = SqliteStore::builder(path)
        .clock(Arc::clone(&clock))
        .open()?;
    let config = ManagerConfig::new(store, clock).with_secretary(
        SINGULAR_CONTROLLER_NAMESPACE,
        Arc::new(SingularSecretary::new(CONTROLLER)),
    );
    Ok(Manager::start(config)?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("leases.db");
    let machine0 = start_copy(&path)?;
    let machine1 = start_copy(&path)?;
    let claimer0 = machine0.claimer(SINGULAR_CONTROLLER_NAMESPACE, MODEL)?;
    let claimer1 = machine1.claimer(SINGULAR_CONTROLLER_NAMESPACE, MODEL)?;

    // machine-0 claims the lease first.
    let info = claimer0
        .claim(MODEL, Request::new("machine-0", DURATION))
        .await?;
    println!(
        "machine-0 is the singular worker (generation {})",
        info.generation
    );

    // machine-1 is denied while the lease is held, and waits for it in the background.
    let denied = claimer1
        .claim(MODEL, Request::new("machine-1", DURATION))
        .await
        .expect_err("the lease is held by machine-0");
    assert!(denied.is_claim_denied(), "{denied}");
    let waiter = {
        let claimer1 = Arc::clone(&claimer1);
        tokio::spawn(async move {
            let cancel = CancellationToken::new();
            claimer1.wait_until_expired(MODEL, &cancel).await?;
            let freed = Instant::now();
            let info = claimer1
                .claim(MODEL, Request::new("machine-1", DURATION))
                .await?;
            Ok::<_, lease_core::Error>((info, freed))
        })
    };

    // machine-0 works, renewing well before the lease runs out. A renewal keeps the
    // generation; the token answers "still mine?" from memory.
    let token = machine0.token(SINGULAR_CONTROLLER_NAMESPACE, MODEL, MODEL, "machine-0")?;
    for step in 1..=3 {
        let renewed = claimer0
            .claim(MODEL, Request::new("machine-0", DURATION))
            .await?;
        assert_eq!(renewed.generation, info.generation);
        assert_eq!(token.check().await?, info.generation);
        println!(
            "machine-0 did step {step} under generation {}",
            info.generation
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // machine-0 steps down: it stops working first, then revokes.
    let revoked_at = Instant::now();
    machine0
        .revoker(SINGULAR_CONTROLLER_NAMESPACE, MODEL)?
        .revoke(MODEL, "machine-0")
        .await?;
    println!("machine-0 stepped down");

    let (next, _freed) = waiter.await??;
    let handover = revoked_at.elapsed();
    assert_eq!(next.holder, "machine-1");
    assert!(next.generation > info.generation);
    println!(
        "machine-1 took over after {handover:?} with generation {}",
        next.generation
    );
    // machine-1 found out within the manager's refresh interval (100 ms by default), not
    // after the lease's 10 s.
    assert!(handover < Duration::from_secs(2), "{handover:?}");

    machine0.stop().await;
    machine1.stop().await;
    Ok(())
}
