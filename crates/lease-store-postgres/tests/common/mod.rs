//! What the tests share: the server's URL, fresh schemas, a guard that drops them.
#![allow(dead_code, unreachable_pub)]

pub mod server;

use std::sync::atomic::{AtomicU32, Ordering};

use lease_store_postgres::PostgresStore;

/// The test server's URL (`cargo xtask pg up`, then `eval "$(cargo xtask pg env)"`).
pub fn url() -> String {
    std::env::var("LEASE_TEST_POSTGRES_URL").expect(
        "LEASE_TEST_POSTGRES_URL is not set: run `cargo xtask pg up` and \
         `eval \"$(cargo xtask pg env)\"`",
    )
}

/// A schema name no other test (of any process) uses.
pub fn fresh_schema(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t_{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs SQL on its own connection (for setup, inspection and sabotage).
pub async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    client
}

/// Drops its schema when dropped (on a thread of its own, since drop cannot await).
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.schema.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A store on `schema` with the server deciding expiry.
pub async fn store(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::builder(url)
        .schema(schema)
        .connect()
        .await
        .expect("connecting to the test server")
}

/// Begins a transaction on `locker` that holds the row lock of lease `name` in `schema`, so
/// that a store's operation on that lease blocks inside its own transaction until it ends.
pub async fn lock_lease_row<'a>(
    locker: &'a mut tokio_postgres::Client,
    schema: &str,
    name: &str,
) -> tokio_postgres::Transaction<'a> {
    let tx = locker
        .transaction()
        .await
        .expect("begin the locking transaction");
    tx.execute(
        &format!("SELECT 1 FROM {schema}.lease WHERE name = $1 FOR UPDATE"),
        &[&name],
    )
    .await
    .expect("lock the lease row");
    tx
}

/// How many backends with application name `app` wait on a lock right now.
pub async fn lock_waiters(client: &tokio_postgres::Client, app: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND wait_event_type = 'Lock'",
            &[&app],
        )
        .await
        .expect("read pg_stat_activity")
        .get(0)
}

/// Polls [`lock_waiters`] (every 20 ms, for up to 10 s on a loaded machine) until `done`
/// accepts the count; returns the last count.
pub async fn wait_for_lock_waiters(
    client: &tokio_postgres::Client,
    app: &str,
    done: impl Fn(i64) -> bool,
) -> i64 {
    let mut count = lock_waiters(client, app).await;
    for _ in 0..500 {
        if done(count) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        count = lock_waiters(client, app).await;
    }
    count
}
