//! A lease [`Store`](lease_core::Store) on PostgreSQL, for fleets of VMs or bare-metal hosts
//! that already run a Postgres database: "one copy of this job across the fleet" with nothing new
//! to operate. Unlike advisory locks (session locks: no ttl, no fencing, lost silently with a
//! connection), leases here expire, carry fencing generations, and survive reconnects.
//!
//! ```no_run
//! use std::time::Duration;
//! use lease_core::{Key, Request, Store};
//! use lease_store_postgres::PostgresStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut store = PostgresStore::builder("postgres://app:secret@db.internal/app")
//!     .schema("lease")
//!     .connect()
//!     .await?;
//! let key = Key::new("singular-controller", "fleet-1", "nightly-report");
//! let info = store.claim_lease(&key, &Request::new("host-7", Duration::from_secs(15))).await?;
//! println!("holding {key} until {} as generation {}", info.expiry, info.generation);
//! # Ok(())
//! # }
//! ```
//!
//! # Time
//!
//! The **server's clock is the single authority for expiry**: every decision reads
//! `clock_timestamp()` inside its transaction, so holders on many hosts never compare their
//! clocks with each other. A holder's guarantee is still computed on its own monotonic clock
//! (the store's [`Clock`](lease_core::Clock), [`SystemClock`](lease_core::SystemClock) by
//! default) from the *start of its call*: a lease granted for `d` is reported as expiring at
//! `start + (server expiry - server now)`, and since the server read its clock after the call
//! started, that instant is never later than the server's expiry.
//!
//! This assumes that **the server's clock and each holder's monotonic clock run at the same
//! rate** (within the few parts per million NTP keeps them to; leave a margin between the lease
//! duration and the renewal interval for any drift), and that the server's wall clock is **not
//! stepped forward** while leases are held (a step forward expires them early on the server;
//! a step back only lengthens them). Run NTP in slewing mode on the database host. Across a
//! failover, the new primary's clock must agree with the old one's to well within a lease
//! duration.
//!
//! For tests, [`PostgresStoreBuilder::decide_expiry_locally`] makes the store decide expiry on
//! its (fake) clock instead; every store on the schema must then share that clock.
//!
//! # Decisions and fencing
//!
//! Every op, or every batch of [`Store::apply`](lease_core::Store::apply) (the manager's group
//! commit), is one transaction, sent in one round trip; each op is a server-side function that
//! decides under row locks (`SELECT … FOR UPDATE` on the key's generation row, which serialises
//! every claim of the key, then on its lease row). Fencing generations come from a `generation`
//! table that is never deleted from, so they keep increasing across revoke, expiry, purge,
//! server restarts and failover (it is replicated like the rest of the database).
//!
//! # Changes
//!
//! Every write `NOTIFY`s the schema's channel (`<schema>_lease_changes`) with the writer's id.
//! [`change_notifier`](lease_core::Store::change_notifier) starts a dedicated connection that
//! `LISTEN`s on it, so a revoke or takeover on another host wakes waiters at once. The listener
//! checks its connection every few seconds, reconnects with backoff when it is lost, and bumps
//! the counter on reconnecting (changes may have been missed); while it is down,
//! [`poll_changes`](lease_core::Store::poll_changes) always says yes, so the manager falls back
//! to re-reading at every refresh.
//!
//! # Faults
//!
//! A lost connection, a server restart, a statement timeout, a deadlock or the store's own
//! operation timeout give [`Error::Timeout`](lease_core::Error::Timeout) (retry; for a write
//! whose commit was not answered the outcome is unknown, and the manager re-reads), never a
//! false "held". After any failure the store drops its connection, so the server rolls back
//! whatever the transaction had done and no lock is held across a failed transaction (and the
//! connection's `idle_in_transaction_session_timeout` bounds how long a paused client can hold
//! one). The next call reconnects, with exponential backoff (50 ms to 2 s) between failed
//! attempts.
//!
//! Bad configuration is one [`PostgresStoreError`] from [`PostgresStoreBuilder::connect`] naming
//! what is wrong: [`Unreachable`](PostgresStoreError::Unreachable),
//! [`Authentication`](PostgresStoreError::Authentication),
//! [`MissingDatabase`](PostgresStoreError::MissingDatabase),
//! [`Permission`](PostgresStoreError::Permission),
//! [`SchemaVersion`](PostgresStoreError::SchemaVersion) and so on. The password never appears in
//! an error, a `Debug` output or a log line.
//!
//! # Schema and privileges
//!
//! The store creates its schema (`lease` by default) and migrates it ([`SCHEMA_VERSION`]); see
//! the tables in the `schema` module's source. The least privileges:
//!
//! - **to create or migrate** (first start, upgrades): `CREATE` on the database (for
//!   `CREATE SCHEMA`), or ownership of an existing empty schema;
//! - **to run** once the schema is at the current version: `USAGE` on the schema; `SELECT`,
//!   `INSERT`, `UPDATE`, `DELETE` on its tables `generation`, `lease`, `pin`; `SELECT` on `meta`;
//!   `EXECUTE` on its functions (granted to `PUBLIC` by default). Deleting from `generation` is
//!   never needed and may be withheld.
//!
//! A schema written by a newer version of this crate, or a schema with other tables and no lease
//! version, is refused.

#![forbid(unsafe_code)]

mod changes;
mod config;
mod connection;
mod error;
mod ops;
mod schema;
mod store;
#[cfg(feature = "tls")]
mod tls;

pub use config::{DEFAULT_SCHEMA, PostgresStoreBuilder, redact_url};
pub use error::PostgresStoreError;
pub use schema::SCHEMA_VERSION;
pub use store::PostgresStore;
