//! Two stores on one server applying batches of the same keys in opposite orders, at the same
//! moment, many times: every batch locks its keys' rows in one canonical order, so the two
//! never wait on each other in a cycle, and no batch fails with a deadlock (which the server
//! would report after its `deadlock_timeout`, and the store as a `Timeout`).
//!
//! Without the canonical order the first iterations already deadlock: each batch holds the row
//! lock of its first key and waits for the other's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use lease_core::{ErrorKind, Key, Op, Request, Store};
use lease_store_postgres::PostgresStore;
use tokio::sync::Barrier;

use common::{SchemaGuard, fresh_schema, url};

const LONG: Duration = Duration::from_secs(300);
const KEYS: usize = 8;
const ROUNDS: usize = 60;

fn keys() -> Vec<Key> {
    (0..KEYS)
        .map(|i| Key::new("order", "model", format!("k{i}")))
        .collect()
}

/// Every round: claim all keys in one batch, then revoke them all in one batch, each time at
/// the same moment as the other store (one `Barrier` wait before each batch). Returns the
/// errors that were not the expected answers (held by the other store; not held).
async fn rounds(
    mut store: PostgresStore,
    holder: &'static str,
    reversed: bool,
    barrier: Arc<Barrier>,
) -> Vec<String> {
    let mut order = keys();
    if reversed {
        order.reverse();
    }
    let mut unexpected = Vec::new();
    for round in 0..ROUNDS {
        barrier.wait().await;
        let claims = order
            .iter()
            .map(|key| Op::Claim {
                key: key.clone(),
                request: Request::new(holder, LONG),
            })
            .collect();
        for result in store.apply(claims).await {
            if let Err(e) = result
                && !matches!(e.kind(), ErrorKind::Held | ErrorKind::ClaimDenied)
            {
                unexpected.push(format!("round {round}, claim by {holder}: {e}"));
            }
        }
        barrier.wait().await;
        let revokes = order
            .iter()
            .map(|key| Op::Revoke {
                key: key.clone(),
                holder: holder.to_owned(),
            })
            .collect();
        for result in store.apply(revokes).await {
            if let Err(e) = result
                && !matches!(e.kind(), ErrorKind::NotHeld | ErrorKind::Invalid)
            {
                unexpected.push(format!("round {round}, revoke by {holder}: {e}"));
            }
        }
    }
    unexpected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn opposite_batches_never_deadlock() {
    let url = url();
    let schema = fresh_schema("order");
    let _guard = SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let connect = |app: &'static str| {
        PostgresStore::builder(url.clone())
            .schema(schema.clone())
            .application_name(app)
            .connect()
    };
    // The first store creates the schema before the second looks for it.
    let forward = connect("batch-order-forward").await.expect("connect");
    let backward = connect("batch-order-backward").await.expect("connect");
    let barrier = Arc::new(Barrier::new(2));
    let a = tokio::spawn(rounds(forward, "a", false, barrier.clone()));
    let b = tokio::spawn(rounds(backward, "b", true, barrier));
    let mut unexpected = a.await.expect("task a");
    unexpected.extend(b.await.expect("task b"));
    assert!(
        unexpected.is_empty(),
        "batches failed (a deadlock?): {unexpected:#?}"
    );
}
