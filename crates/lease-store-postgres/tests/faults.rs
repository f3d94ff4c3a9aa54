//! Faults against the real test server (`cargo xtask pg up`): a connection killed from the
//! server side mid-renewal, a statement timeout, `LISTEN` wake-ups and the listener's recovery,
//! bad configuration. The server's clock decides expiry here (the default), so these tests use
//! real time, with leases long enough never to expire during a test.

mod common;

use std::time::Duration;

use lease_core::{ErrorKind, Key, Op, Request, Store};
use lease_store_postgres::{PostgresStore, PostgresStoreError};

use common::{SchemaGuard, admin, fresh_schema, lock_lease_row, url, wait_for_lock_waiters};

const LONG: Duration = Duration::from_secs(300);

fn key(lease: &str) -> Key {
    Key::new("faults", "model", lease)
}

/// A store whose connections carry `app` as their application name, so a test can find (and
/// kill) exactly its own backends while other tests run beside it.
async fn store_as(schema: &str, app: &str) -> PostgresStore {
    store_with_statement_timeout(schema, app, Duration::from_secs(20)).await
}

/// As [`store_as`], with the given server-side statement timeout.
async fn store_with_statement_timeout(schema: &str, app: &str, timeout: Duration) -> PostgresStore {
    PostgresStore::builder(url())
        .schema(schema)
        .application_name(app)
        .statement_timeout(timeout)
        .operation_timeout(timeout + Duration::from_secs(10))
        .listener_heartbeat(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect")
}

async fn terminate(client: &tokio_postgres::Client, app: &str) -> i64 {
    let row = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    row.get(0)
}

/// What the store's backends are doing: how many are inside a transaction.
async fn in_transaction(client: &tokio_postgres::Client, app: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND state LIKE 'idle in transaction%'",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

/// An extend blocked on a row lock when its connection is killed from the server side is a
/// `Timeout`, never a success; the next call reconnects, and the lease is still held with the
/// same generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn connection_killed_mid_renewal_is_timeout_then_recovers() {
    let schema = fresh_schema("kill");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let app = format!("{schema}_app");
    let mut store = store_as(&schema, &app).await;
    let k = key("renewed");
    let first = store
        .claim_lease(&k, &Request::new("a", LONG))
        .await
        .unwrap();

    // Hold the lease row so the renewal blocks inside its transaction.
    let mut locker = admin(&url()).await;
    let tx = lock_lease_row(&mut locker, &schema, "renewed").await;
    let killer = admin(&url()).await;
    let renewal = tokio::spawn(async move {
        let result = store.extend_lease(&k, &Request::new("a", LONG)).await;
        (store, k, result)
    });
    // Wait until the renewal is blocked on the lock, then kill its backend.
    let waiting = wait_for_lock_waiters(&killer, &app, |n| n > 0).await;
    assert!(waiting > 0, "the renewal never blocked on the row lock");
    assert!(terminate(&killer, &app).await >= 1);
    let (mut store, k, result) = renewal.await.unwrap();
    let err = result.expect_err("a renewal on a killed connection must not succeed");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    tx.rollback().await.unwrap();

    // The next call reconnects; the lease is intact.
    let renewed = store
        .extend_lease(&k, &Request::new("a", LONG))
        .await
        .unwrap();
    assert_eq!(renewed.generation, first.generation);
    assert!(renewed.expiry >= first.expiry);
    let held = store.leases(std::slice::from_ref(&k)).await.unwrap();
    assert_eq!(held[&k].holder, "a");
    assert_eq!(in_transaction(&killer, &app).await, 0);
}

/// A batch that hits the statement timeout fails as a whole with `Timeout`: none of its ops
/// took effect, and the store holds no transaction (and so no row lock) afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn statement_timeout_fails_the_batch_and_holds_nothing() {
    let schema = fresh_schema("stmt");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let app = format!("{schema}_app");
    let mut store = store_with_statement_timeout(&schema, &app, Duration::from_millis(1500)).await;
    let blocked = key("blocked");
    store
        .claim_lease(&blocked, &Request::new("a", LONG))
        .await
        .unwrap();

    let mut locker = admin(&url()).await;
    let tx = lock_lease_row(&mut locker, &schema, "blocked").await;
    let free = key("free");
    let results = store
        .apply(vec![
            Op::Claim {
                key: free.clone(),
                request: Request::new("a", LONG),
            },
            Op::Extend {
                key: blocked.clone(),
                request: Request::new("a", LONG),
            },
        ])
        .await;
    for result in &results {
        let err = result
            .as_ref()
            .expect_err("a timed-out batch must not succeed");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    }
    tx.rollback().await.unwrap();
    let inspector = admin(&url()).await;
    assert_eq!(in_transaction(&inspector, &app).await, 0);
    // The claim in the failed batch did not take effect.
    assert!(
        store
            .leases(std::slice::from_ref(&free))
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = store
        .claim_lease(&free, &Request::new("b", LONG))
        .await
        .unwrap();
    assert_eq!(claimed.holder, "b");
}

/// A call that gives up at the store's operation timeout while its statement waits on the
/// server is a `Timeout`, and its statement is cancelled on the server: it does not linger
/// behind the lock and take effect later, after the caller was told it timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn operation_timeout_cancels_the_statement_on_the_server() {
    let schema = fresh_schema("optimeout");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let app = format!("{schema}_app");
    let mut store = PostgresStore::builder(url())
        .schema(&schema)
        .application_name(&app)
        .operation_timeout(Duration::from_millis(500))
        .statement_timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let k = key("slow");
    let first = store
        .claim_lease(&k, &Request::new("a", Duration::from_secs(100)))
        .await
        .unwrap();

    let mut locker = admin(&url()).await;
    let tx = lock_lease_row(&mut locker, &schema, "slow").await;
    let err = store
        .extend_lease(&k, &Request::new("a", Duration::from_secs(1000)))
        .await
        .expect_err("an extend stuck behind a lock must time out");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    // The abandoned statement must not stay queued behind the lock.
    let inspector = admin(&url()).await;
    let waiting = wait_for_lock_waiters(&inspector, &app, |n| n == 0).await;
    assert_eq!(waiting, 0, "the timed-out extend still waits on the server");
    tx.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // It did not take effect: the expiry is still the claim's. (Read through a store with the
    // default timeouts: the 500 ms one may time out reconnecting on a loaded machine.)
    drop(store);
    let mut reader = store_as(&schema, &format!("{app}_reader")).await;
    let now = reader.leases(std::slice::from_ref(&k)).await.unwrap();
    assert!(
        now[&k].expiry <= first.expiry.saturating_add(Duration::from_secs(5)),
        "the abandoned extend took effect: {:?} vs {:?}",
        now[&k],
        first
    );
}

/// Another store's claim and revoke wake this store's change notifier at once; this store's
/// own writes do not count as changes; a killed listener connection bumps the counter, is
/// re-established, and wakes on later changes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn listen_wakes_waiters_and_recovers() {
    let schema = fresh_schema("listen");
    let _guard = SchemaGuard {
        url: url(),
        schema: schema.clone(),
    };
    let app_a = format!("{schema}_a");
    let mut a = store_as(&schema, &app_a).await;
    let mut b = store_as(&schema, &format!("{schema}_b")).await;
    let mut changes = a.change_notifier().expect("a notifier");
    let wait = |rx: &mut tokio::sync::watch::Receiver<u64>| {
        let mut rx = rx.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), rx.changed())
                .await
                .expect("no wake-up within 10 s")
                .expect("notifier closed");
        }
    };
    // The listener's first LISTEN bumps the counter; then polls settle.
    wait(&mut changes).await;
    changes.borrow_and_update();
    assert!(a.poll_changes().await.unwrap(), "the first poll says yes");
    let k = key("watched");
    a.claim_lease(&k, &Request::new("a", LONG)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !a.poll_changes().await.unwrap(),
        "own writes are not changes"
    );

    b.claim_lease(&key("other"), &Request::new("b", LONG))
        .await
        .unwrap();
    wait(&mut changes).await;
    changes.borrow_and_update();
    assert!(a.poll_changes().await.unwrap(), "b's claim is a change");
    a.revoke_lease(&k, "a").await.unwrap();
    b.claim_lease(&k, &Request::new("b", LONG)).await.unwrap();
    wait(&mut changes).await;
    changes.borrow_and_update();

    // Kill every connection of store a: the listener notices, bumps, and reconnects.
    let killer = admin(&url()).await;
    assert!(terminate(&killer, &app_a).await >= 1);
    wait(&mut changes).await;
    changes.borrow_and_update();
    // Until it listens again poll_changes says yes; once it does, b's revoke still wakes a.
    let mut listening = false;
    for _ in 0..100 {
        let n: i64 = killer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND query LIKE 'LISTEN%'",
                &[&app_a],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listening, "the listener did not reconnect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    changes.borrow_and_update();
    b.revoke_lease(&k, "b").await.unwrap();
    wait(&mut changes).await;
    // Store a's own connection was killed too: its next call reconnects.
    assert!(a.leases(std::slice::from_ref(&k)).await.unwrap().is_empty());
}

/// Each kind of bad configuration is one clear error naming what was wrong, and the password
/// appears in none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn bad_configuration_is_one_clear_error_without_the_password() {
    let good = url();
    let client = admin(&good).await;
    let schema = fresh_schema("cfg");
    let _guard = SchemaGuard {
        url: good.clone(),
        schema: schema.clone(),
    };
    let secret = "Wr0ng-pa55word-XYZ";
    let (prefix, rest) = good.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    let host_port = host.split('/').next().unwrap();
    let check = |err: &PostgresStoreError| {
        let text = format!("{err} | {err:?}");
        assert!(!text.contains(secret), "password leaked: {text}");
        assert!(!text.contains("lease-xtask-pg"), "password leaked: {text}");
        text
    };

    let wrong = format!("{prefix}://{user}:{secret}@{host}");
    let err = PostgresStore::builder(&wrong)
        .schema(&schema)
        .connect()
        .await
        .unwrap_err();
    let text = check(&err);
    assert!(
        matches!(err, PostgresStoreError::Authentication { .. }),
        "{text}"
    );
    assert!(text.contains(user), "{text}");

    let missing = good.replace(
        &format!("{host_port}/postgres"),
        &format!("{host_port}/no_such_db"),
    );
    let err = PostgresStore::builder(&missing)
        .schema(&schema)
        .connect()
        .await
        .unwrap_err();
    let text = check(&err);
    assert!(
        matches!(err, PostgresStoreError::MissingDatabase { .. }),
        "{text}"
    );
    assert!(text.contains("no_such_db"), "{text}");

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = format!("{prefix}://{user}:{secret}@127.0.0.1:{port}/postgres");
    let err = PostgresStore::builder(&unreachable)
        .schema(&schema)
        .connect()
        .await
        .unwrap_err();
    let text = check(&err);
    assert!(
        matches!(err, PostgresStoreError::Unreachable { .. }),
        "{text}"
    );

    // A user who may connect but not create the schema.
    let role = format!("{schema}_role");
    client
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{secret}'"))
        .await
        .unwrap();
    let weak = format!("{prefix}://{role}:{secret}@{host}");
    let err = PostgresStore::builder(&weak)
        .schema(&schema)
        .connect()
        .await
        .unwrap_err();
    let text = check(&err);
    assert!(
        matches!(err, PostgresStoreError::Permission { .. }),
        "{text}"
    );
    client
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();

    // A schema written by a newer version.
    let mut store = PostgresStore::builder(&good)
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    store
        .claim_lease(&key("x"), &Request::new("a", LONG))
        .await
        .unwrap();
    client
        .batch_execute(&format!("UPDATE {schema}.meta SET version = 99"))
        .await
        .unwrap();
    let err = PostgresStore::builder(&good)
        .schema(&schema)
        .connect()
        .await
        .unwrap_err();
    let text = check(&err);
    assert!(
        matches!(err, PostgresStoreError::SchemaVersion { found: 99, .. }),
        "{text}"
    );

    // A schema of someone else's tables.
    let foreign = fresh_schema("foreign");
    let _foreign_guard = SchemaGuard {
        url: good.clone(),
        schema: foreign.clone(),
    };
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {foreign}; CREATE TABLE {foreign}.t (x int)"
        ))
        .await
        .unwrap();
    let err = PostgresStore::builder(&good)
        .schema(&foreign)
        .connect()
        .await
        .unwrap_err();
    let text = check(&err);
    assert!(
        matches!(err, PostgresStoreError::ForeignSchema { .. }),
        "{text}"
    );
}
