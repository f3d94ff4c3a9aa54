//! The `lease-testkit` Store conformance suite against [`SqliteStore`], one test per case
//! (`cargo test -p lease-store-sqlite claim_holds_until` runs one), with the suite's fake
//! clock; siblings are further connections to the same file, and mortal siblings (the death
//! clause) stores with a holder session of their own, ended by their drop.

use std::sync::Arc;

use async_trait::async_trait;
use lease_core::Clock;
use lease_store_sqlite::{SessionScope, SqliteStore};
use lease_testkit::suite::StoreBuilder;
use tempfile::TempDir;

/// A fresh database file in its own temporary directory, removed when the guard drops.
struct Builder;

fn open(dir: &TempDir, clock: Arc<dyn Clock>) -> lease_core::Result<SqliteStore> {
    Ok(SqliteStore::builder(dir.path().join("leases.db"))
        .clock(clock)
        .boot_id("conformance-boot")
        .open()?)
}

/// A store with a holder session of its own, which ends (as its process's would, dying) when
/// the store is dropped.
fn open_mortal(dir: &TempDir, clock: Arc<dyn Clock>) -> lease_core::Result<SqliteStore> {
    Ok(SqliteStore::builder(dir.path().join("leases.db"))
        .clock(clock)
        .boot_id("conformance-boot")
        .session_scope(SessionScope::Store)
        .open()?)
}

#[async_trait]
impl StoreBuilder for Builder {
    type Store = SqliteStore;
    type Guard = TempDir;

    async fn build(&self, clock: Arc<dyn Clock>) -> lease_core::Result<(SqliteStore, TempDir)> {
        let dir = tempfile::tempdir().map_err(|e| lease_core::Error::store("temp dir", e))?;
        let store = open(&dir, clock)?;
        Ok((store, dir))
    }

    async fn build_sibling(
        &self,
        guard: &TempDir,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<Option<SqliteStore>> {
        open(guard, clock).map(Some)
    }

    async fn build_mortal_sibling(
        &self,
        guard: &TempDir,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<Option<SqliteStore>> {
        open_mortal(guard, clock).map(Some)
    }
}

lease_testkit::conformance_tests!(Builder);
