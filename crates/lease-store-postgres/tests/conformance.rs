//! The `lease-testkit` Store conformance suite against [`PostgresStore`] on the test server
//! (`cargo xtask pg up`), with the suite's fake clock deciding expiry; each case gets a schema
//! of its own, and siblings are further stores on the same schema.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lease_core::Clock;
use lease_store_postgres::PostgresStore;
use lease_testkit::suite::StoreBuilder;

use common::SchemaGuard;

struct Builder;

async fn open(guard: &SchemaGuard, clock: Arc<dyn Clock>) -> lease_core::Result<PostgresStore> {
    Ok(PostgresStore::builder(&guard.url)
        .schema(&guard.schema)
        .clock(clock)
        .decide_expiry_locally(true)
        // Generous: the suite builds many stores at once on a possibly loaded machine.
        .statement_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(60))
        .connect()
        .await?)
}

#[async_trait]
impl StoreBuilder for Builder {
    type Store = PostgresStore;
    type Guard = SchemaGuard;

    async fn build(
        &self,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<(PostgresStore, SchemaGuard)> {
        let guard = SchemaGuard {
            url: common::url(),
            schema: common::fresh_schema("conf"),
        };
        let store = open(&guard, clock).await?;
        Ok((store, guard))
    }

    async fn build_sibling(
        &self,
        guard: &SchemaGuard,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<Option<PostgresStore>> {
        open(guard, clock).await.map(Some)
    }
}

lease_testkit::conformance_tests!(
    Builder,
    ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""
);
