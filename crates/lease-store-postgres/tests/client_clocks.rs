//! Whose clock judges expiry: the server's `clock_timestamp()` (the default). Clients' clocks
//! only turn the server's answer into a window on the client's own clock, measured from the
//! start of its call. So:
//! - clients whose clocks disagree (by any offset, frozen or not) are never both told they
//!   hold a lease, because none of their clocks takes part in the decision; the same clients
//!   deciding on their own clocks (`decide_expiry_locally`, meant for tests sharing one fake
//!   clock) do double-hold, which shows what the check can catch;
//! - a call that stalls on the server (a lock) reports a window measured from its start, not
//!   from its answer: the window ends no later than the server's expiry, by at least the stall.
//!
//! Real server, real time for the stalls (a few seconds, generous bounds).

mod common;

use std::sync::Arc;
use std::time::Duration;

use lease_core::{Clock, ErrorKind, Key, Request, Store, SystemClock, Timestamp};
use lease_store_postgres::PostgresStore;
use lease_testkit::FakeClock;

use common::{SchemaGuard, admin, fresh_schema, url};

const LONG: Duration = Duration::from_secs(300);
const STALL: Duration = Duration::from_secs(3);

fn key(lease: &str) -> Key {
    Key::new("clocks", "model", lease)
}

async fn store(schema: &str, clock: Arc<dyn Clock>, local: bool, app: &str) -> PostgresStore {
    PostgresStore::builder(url())
        .schema(schema)
        .application_name(app)
        .clock(clock)
        .decide_expiry_locally(local)
        .connect()
        .await
        .expect("connect")
}

/// Three clients: a clock frozen near zero, one frozen 11 days ahead, and the real one.
fn clocks() -> Vec<Arc<dyn Clock>> {
    vec![
        FakeClock::starting_at(Timestamp::from_nanos(1_000)).as_clock(),
        FakeClock::starting_at(Timestamp::from_nanos(1_000_000 * 1_000_000_000)).as_clock(),
        Arc::new(SystemClock::new()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn clients_whose_clocks_disagree_are_never_both_told_they_hold() {
    let schema = fresh_schema("cclk");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let mut stores = Vec::new();
    for (i, clock) in clocks().into_iter().enumerate() {
        stores.push((
            store(&schema, clock.clone(), false, &format!("{schema}_{i}")).await,
            clock,
        ));
    }
    for round in 0..10 {
        let k = key(&format!("round-{round}"));
        let d = Duration::from_secs(30);
        // All three race for the lease at once.
        let mut calls = Vec::new();
        for (i, (mut store, clock)) in std::mem::take(&mut stores).into_iter().enumerate() {
            let k = k.clone();
            calls.push(tokio::spawn(async move {
                let result = store
                    .claim_lease(&k, &Request::new(format!("c{i}"), d))
                    .await;
                let end = clock.now();
                (store, clock, end, result)
            }));
        }
        let mut winners = 0;
        for call in calls {
            let (store, clock, end, result) = call.await.unwrap();
            match result {
                Ok(info) => {
                    winners += 1;
                    // Its window, on its own clock, from its call's start: never past the
                    // end of the call plus the duration (however far its clock is from the
                    // server's or the others').
                    assert!(
                        info.expiry <= end.saturating_add(d),
                        "round {round}: {info:?}, the call ended at {end:?}"
                    );
                }
                Err(e) => assert_eq!(e.kind(), ErrorKind::Held, "round {round}: {e}"),
            }
            stores.push((store, clock));
        }
        assert_eq!(
            winners, 1,
            "round {round}: {winners} clients told they hold"
        );
        // However far ahead a loser's clock reads, the lease stays held for it.
        let holder = stores[0].0.leases(std::slice::from_ref(&k)).await.unwrap()[&k]
            .holder
            .clone();
        for (i, (store, _)) in stores.iter_mut().enumerate() {
            if holder != format!("c{i}") {
                let err = store
                    .claim_lease(&k, &Request::new(format!("c{i}"), d))
                    .await
                    .unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Held, "round {round}, c{i}");
            }
        }
    }
}

/// The same clients deciding on their own clocks: the one whose clock reads far ahead takes a
/// lease the other was just granted. (Local deciding is for tests whose stores share one
/// clock; this is why.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn clients_deciding_on_clocks_that_disagree_would_double_hold() {
    let schema = fresh_schema("lclk");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let clocks = clocks();
    let mut behind = store(&schema, clocks[0].clone(), true, &format!("{schema}_0")).await;
    let mut ahead = store(&schema, clocks[1].clone(), true, &format!("{schema}_1")).await;
    let k = key("local");
    behind
        .claim_lease(&k, &Request::new("behind", LONG))
        .await
        .unwrap();
    let taken = ahead.claim_lease(&k, &Request::new("ahead", LONG)).await;
    assert!(
        taken.is_ok(),
        "deciding locally, the clock ahead judged the lease expired: {taken:?}"
    );
}

/// Waits until a backend of `app` waits on a lock.
async fn until_blocked(client: &tokio_postgres::Client, app: &str) {
    for _ in 0..400 {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND wait_event_type = 'Lock'",
                &[&app],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the call never blocked on the lock");
}

/// How long the server's lease `name` has left, on the server's clock, in nanoseconds.
async fn server_left(client: &tokio_postgres::Client, schema: &str, name: &str) -> u64 {
    let left: i64 = client
        .query_one(
            &format!(
                "SELECT l.expiry - {schema}.now_ns(NULL) FROM {schema}.lease l WHERE l.name = $1"
            ),
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    u64::try_from(left).unwrap_or(0)
}

/// A claim, then an extend, each stalled on a table lock for a few seconds: the window each
/// reports is measured from the call's start on the client's clock (not from the answer), so
/// it ends before the server's expiry by about the stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn a_call_stalled_on_the_server_reports_its_window_from_its_start() {
    let schema = fresh_schema("stall");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let app = format!("{schema}_app");
    let clock = SystemClock::new();
    let mut client = Some(store(&schema, Arc::new(clock), false, &app).await);
    let watcher = admin(&url()).await;
    let d = Duration::from_secs(60);
    for (table, extend) in [("generation", false), ("lease", true)] {
        let mut locker = admin(&url()).await;
        let tx = locker.transaction().await.unwrap();
        tx.batch_execute(&format!("LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE"))
            .await
            .unwrap();
        let mut store = client.take().unwrap();
        let call = tokio::spawn(async move {
            let start = clock.now();
            let k = key("stalled");
            let request = Request::new("a", d);
            let result = if extend {
                store.extend_lease(&k, &request).await
            } else {
                store.claim_lease(&k, &request).await
            };
            (store, start, result)
        });
        until_blocked(&watcher, &app).await;
        tokio::time::sleep(STALL).await;
        tx.commit().await.unwrap();
        let (store, start, result) = call.await.unwrap();
        client = Some(store);
        let info = result.unwrap();
        let before_read = clock.now();
        let left = server_left(&watcher, &schema, "stalled").await;
        let after_read = clock.now();
        // The server read its clock between `before_read` and `after_read`, so its expiry on
        // our clock lies between those plus `left`.
        let (at_least, at_most) = (
            before_read.saturating_add(Duration::from_nanos(left)),
            after_read.saturating_add(Duration::from_nanos(left)),
        );
        if extend {
            // An extend reads the server's clock before it waits for the row, so its window
            // and the server's expiry are about equal: the window must not pass it by more
            // than the uncertainty of the reading.
            assert!(
                info.expiry <= at_most,
                "{table}: the window ends at {:?}, after the server's expiry (at most {at_most:?})",
                info.expiry
            );
        } else {
            // A claim reads it once it holds the key's lock, after the stall: the window ends
            // before the server's expiry by about the stall.
            assert!(
                info.expiry <= at_least,
                "{table}: the window ends at {:?}, after the server's expiry (at least {at_least:?})",
                info.expiry
            );
        }
        // And it is measured from the start: the stall is not added to it (generous bound).
        assert!(
            info.expiry <= start.saturating_add(d).saturating_add(STALL / 2),
            "{table}: the window {:?} counts the stall (start {start:?})",
            info.expiry
        );
    }
}
