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

/// An extend that waits for the lease row's lock reads the server's clock only once it holds
/// the lock: a lease that expired while the extend waited stays expired (it is `Invalid`, not
/// revived from an instant read before the wait). Real time: the lease must expire on the
/// server while the extend is blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn an_extend_blocked_past_the_expiry_does_not_revive_the_lease() {
    let schema = fresh_schema("stalled_extend");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let app = format!("{schema}_app");
    let mut store = PostgresStore::builder(url())
        .schema(&schema)
        .application_name(&app)
        .connect()
        .await
        .unwrap();
    let k = Key::new("srv", "model", "stalled");
    let ttl = Duration::from_secs(3);
    let claimed_at = Instant::now();
    store
        .claim_lease(&k, &Request::new("a", ttl))
        .await
        .unwrap();

    // Hold the lease row, so the extend blocks inside its transaction.
    let mut locker = common::admin(&url()).await;
    let tx = common::lock_lease_row(&mut locker, &schema, "stalled").await;
    let watcher = common::admin(&url()).await;
    let extend = tokio::spawn(async move {
        let result = store
            .extend_lease(&k, &Request::new("a", Duration::from_secs(60)))
            .await;
        (store, k, result)
    });
    let waiting = common::wait_for_lock_waiters(&watcher, &app, |n| n > 0).await;
    assert!(waiting > 0, "the extend never blocked on the row lock");
    // The test proves something only if the extend started before the expiry.
    assert!(
        claimed_at.elapsed() < ttl,
        "the machine is too slow for this test: the extend started after the expiry"
    );
    // Let the lease expire on the server (with a margin for clock reading), then let go.
    tokio::time::sleep((ttl + Duration::from_millis(500)).saturating_sub(claimed_at.elapsed()))
        .await;
    tx.rollback().await.unwrap();
    let (mut store, k, result) = extend.await.unwrap();
    let err = result.expect_err("an extend that got the lock after the expiry must be refused");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    // Nobody holds it: a new holder may claim it at once.
    let snapshot = store.leases(std::slice::from_ref(&k)).await.unwrap();
    assert!(snapshot.get(&k).is_none_or(|info| info.holder == "a"));
    let taken = store
        .claim_lease(&k, &Request::new("b", ttl))
        .await
        .unwrap();
    assert_eq!(taken.holder, "b");
}

/// A schema written at version 1 (whose `extend` read the clock before locking the row) is
/// brought to the current version by the next store that connects, and its `extend` replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn a_version_1_schema_gets_the_current_extend() {
    let schema = fresh_schema("v1_extend");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let mut first = PostgresStore::builder(url())
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    let k = Key::new("srv", "model", "migrated");
    first
        .claim_lease(&k, &Request::new("a", Duration::from_secs(300)))
        .await
        .unwrap();
    // Back to version 1, with an `extend` that is recognisably not the current one.
    let admin = common::admin(&url()).await;
    admin
        .batch_execute(&format!(
            "UPDATE {schema}.meta SET version = 1;
             CREATE OR REPLACE FUNCTION {schema}.extend(
                 p_ns text, p_model text, p_name text, p_holder text, p_dur bigint,
                 p_meta text, p_now bigint, p_origin text,
                 OUT o_status text, OUT o_now bigint, OUT o_expiry bigint,
                 OUT o_generation bigint, OUT o_metadata text, OUT o_pinned boolean)
             LANGUAGE plpgsql AS $$ BEGIN o_status := 'invalid'; END $$;"
        ))
        .await
        .unwrap();
    let mut second = PostgresStore::builder(url())
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    let version: i32 = admin
        .query_one(&format!("SELECT version FROM {schema}.meta"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, lease_store_postgres::SCHEMA_VERSION);
    let extended = second
        .extend_lease(&k, &Request::new("a", Duration::from_secs(300)))
        .await
        .expect("the migrated schema's extend");
    assert_eq!(extended.holder, "a");
}
