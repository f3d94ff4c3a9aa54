//! The server's clock decides expiry (the default): a holder's reported expiry is measured on
//! its own clock from the start of its call, and a lease expires when the *server's* clock says
//! so, whatever the holders' clocks read. Real time, with wide margins.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lease_core::{Clock, ErrorKind, Key, Request, Store, SystemClock};
use lease_store_postgres::PostgresStore;
use lease_testkit::FakeClock;

use common::{SchemaGuard, fresh_schema, url};

/// The reported expiry is `duration` after the call's start on the holder's clock: never later
/// than the end of the call plus `duration` (it must not promise more than the server grants).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn reported_expiry_is_measured_from_the_call_start_on_the_local_clock() {
    let schema = fresh_schema("srvclk");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let clock = SystemClock::new();
    let mut store = PostgresStore::builder(url())
        .schema(&schema)
        .clock(Arc::new(clock))
        .connect()
        .await
        .unwrap();
    let k = Key::new("srv", "model", "lease");
    let d = Duration::from_secs(30);
    let start = clock.now();
    let info = store.claim_lease(&k, &Request::new("a", d)).await.unwrap();
    let end = clock.now();
    assert!(
        info.expiry >= start.saturating_add(d),
        "{info:?} vs start {start}"
    );
    assert!(
        info.expiry <= end.saturating_add(d),
        "{info:?} vs end {end}"
    );
    // An extend only lengthens.
    let extended = store
        .extend_lease(&k, &Request::new("a", Duration::from_secs(1)))
        .await
        .unwrap();
    // Not shortened to the extend's 1 s: still about 30 s from the claim (wide margin for a
    // loaded machine; the conversion may only err early by a call's latency).
    assert!(
        extended.expiry >= start.saturating_add(Duration::from_secs(20)),
        "{extended:?}"
    );
    let snapshot = store.leases(std::slice::from_ref(&k)).await.unwrap();
    assert!(snapshot[&k].expiry <= clock.now().saturating_add(d));
}

/// Two holders whose clocks are frozen (fake clocks that never advance) still see a lease
/// expire: the server's clock decides, not theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn the_servers_clock_decides_expiry_not_the_holders() {
    let schema = fresh_schema("frozen");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let frozen = FakeClock::new();
    let open = || {
        PostgresStore::builder(url())
            .schema(&schema)
            .clock(frozen.as_clock())
            .connect()
    };
    let mut a = open().await.unwrap();
    let mut b = open().await.unwrap();
    let k = Key::new("srv", "model", "short");
    // Long enough for b's claim to come before it expires, even on a loaded machine.
    a.claim_lease(&k, &Request::new("a", Duration::from_secs(5)))
        .await
        .unwrap();
    let err = b
        .claim_lease(&k, &Request::new("b", Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Held);
    // Neither clock moves; the server's does. Generous: the machine may be loaded.
    let deadline = Instant::now() + Duration::from_secs(60);
    let taken = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match b
            .claim_lease(&k, &Request::new("b", Duration::from_secs(30)))
            .await
        {
            Ok(info) => break info,
            Err(e) if e.is_held() && Instant::now() < deadline => {}
            Err(e) => panic!("the lease never expired on the server: {e}"),
        }
    };
    assert_eq!(taken.holder, "b");
    assert_eq!(taken.generation.get(), 2);
    // a's extend after the server expired its lease is refused, though a's clock has not moved.
    let err = a
        .extend_lease(&k, &Request::new("a", Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
}
