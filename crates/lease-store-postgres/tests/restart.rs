//! A crash and restart of the server (a dedicated one, its own data and port) while leases are
//! held: calls during the outage are `Timeout`, never "held"; afterwards every lease is still
//! held with its generation, generations keep increasing, and the change listener reconnects.

mod common;

use std::time::{Duration, Instant};

use lease_core::{ErrorKind, Key, Request, Store};
use lease_store_postgres::PostgresStore;

use common::server::DedicatedServer;

const LONG: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL installed: cargo xtask pg up"]
async fn server_crash_and_restart_loses_nothing() {
    let server = DedicatedServer::start();
    let connect = || {
        PostgresStore::builder(server.url())
            .operation_timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(2))
            .listener_heartbeat(Duration::from_millis(200))
            .connect()
    };
    let mut store = connect().await.unwrap();
    let mut other = connect().await.unwrap();
    let mut changes = store.change_notifier().unwrap();
    let keys: Vec<Key> = ["a", "b", "c"]
        .iter()
        .map(|l| Key::new("restart", "model", *l))
        .collect();
    let mut before = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let holder = format!("holder{i}");
        before.push(
            store
                .claim_lease(key, &Request::new(holder, LONG))
                .await
                .unwrap(),
        );
    }
    // Key c has been claimed twice, so its generation is 2 before the crash.
    store.revoke_lease(&keys[2], "holder2").await.unwrap();
    before[2] = store
        .claim_lease(&keys[2], &Request::new("holder2", LONG))
        .await
        .unwrap();
    assert_eq!(before[2].generation.get(), 2);

    server.crash();
    let err = store
        .extend_lease(&keys[0], &Request::new("holder0", LONG))
        .await
        .expect_err("an extend with the server down must fail");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let err = other
        .claim_lease(&keys[1], &Request::new("thief", LONG))
        .await
        .expect_err("a claim with the server down must fail");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");

    server.resume();
    // The store reconnects by itself (with backoff) once the server is back.
    let deadline = Instant::now() + Duration::from_secs(60);
    let renewed = loop {
        match store
            .extend_lease(&keys[0], &Request::new("holder0", LONG))
            .await
        {
            Ok(info) => break info,
            Err(e) if e.is_timeout() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("extend after the restart: {e}"),
        }
    };
    assert_eq!(renewed.generation, before[0].generation);
    let leases = loop {
        match store.leases(&keys).await {
            Ok(leases) => break leases,
            Err(e) if e.is_timeout() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("reading after the restart: {e}"),
        }
    };
    for (i, key) in keys.iter().enumerate() {
        let info = &leases[key];
        assert_eq!(info.holder, format!("holder{i}"));
        assert_eq!(info.generation, before[i].generation);
    }
    // The lease is still held against another instance too.
    let denied = loop {
        match other
            .claim_lease(&keys[1], &Request::new("thief", LONG))
            .await
        {
            Err(e) if e.is_timeout() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other,
        }
    };
    assert_eq!(denied.unwrap_err().kind(), ErrorKind::Held);

    // Generations keep increasing across the restart, revoke and purge.
    store.revoke_lease(&keys[2], "holder2").await.unwrap();
    store.purge_expired(100).await.unwrap();
    let after = other
        .claim_lease(&keys[2], &Request::new("next", LONG))
        .await
        .unwrap();
    assert!(
        after.generation > before[2].generation,
        "{after:?} vs {:?}",
        before[2]
    );

    // The change listener came back: another store's write still wakes this one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        changes.borrow_and_update();
        other.revoke_lease(&keys[2], "next").await.unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(2), changes.changed()).await;
        if woke.is_ok() && store.poll_changes().await.unwrap() {
            break;
        }
        assert!(Instant::now() < deadline, "the listener never came back");
        other
            .claim_lease(&keys[2], &Request::new("next", LONG))
            .await
            .unwrap();
    }
}
