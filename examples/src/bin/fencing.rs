//! A protected resource that rejects stale writers by fencing generation.
//!
//! A lease alone cannot stop a holder that lost it without knowing (a long GC pause, a frozen
//! VM, a partition) from writing after someone else took over. Every claim gets a fencing
//! generation, strictly greater than any earlier claim's; the holder sends it with each write,
//! and the resource, with a [`Fence`], refuses writes older than the newest it has seen
//! (Kleppmann's fencing token; Chubby's sequencer).
//!
//! Run: `cargo run -p lease-examples --bin fencing`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lease_core::{Clock, DefaultSecretary, Facades as _, Generation, Request, SystemClock};
use lease_manager::{Fence, Manager, ManagerConfig, StaleGeneration};
use lease_store_sqlite::SqliteStore;

/// Short, so the example runs in a second.
const DURATION: Duration = Duration::from_millis(500);

/// The protected resource: a log that only admits writes from the newest generation.
#[derive(Debug, Default)]
struct Storage {
    fence: Fence,
    log: Mutex<Vec<String>>,
}

impl Storage {
    fn write(&self, generation: Generation, line: &str) -> Result<(), StaleGeneration> {
        // Admit and write under one lock, so a newer holder cannot slip in between.
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.fence.admit(generation)?;
        log.push(format!("[{generation}] {line}"));
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let store = SqliteStore::builder(dir.path().join("leases.db"))
        .clock(Arc::clone(&clock))
        .open()?;
    let manager = Manager::start(
        ManagerConfig::new(store, clock).with_secretary("jobs", Arc::new(DefaultSecretary)),
    )?;
    let claimer = manager.claimer("jobs", "prod")?;
    let storage = Storage::default();

    // worker-a holds the lease and writes with its generation.
    let a = claimer
        .claim("compactor", Request::new("worker-a", DURATION))
        .await?;
    storage.write(a.generation, "worker-a: compacted segment 1")?;

    // worker-a freezes for longer than its lease (it does not know)...
    tokio::time::sleep(DURATION + Duration::from_millis(100)).await;

    // ...so worker-b takes the lease over, with a higher generation, and writes.
    let b = claimer
        .claim("compactor", Request::new("worker-b", DURATION))
        .await?;
    assert!(b.generation > a.generation);
    storage.write(b.generation, "worker-b: compacted segment 2")?;

    // worker-a wakes up and carries on where it was: its stale write is refused.
    let err = storage
        .write(a.generation, "worker-a: compacted segment 2")
        .expect_err("a stale generation is refused");
    println!("refused: {err}");
    assert_eq!(err.highest, b.generation);

    let log = storage
        .log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    println!("log: {log:#?}");
    assert_eq!(log.len(), 2);

    manager.stop().await;
    Ok(())
}
