//! A lease [`Store`](lease_core::Store) on an embedded SQLite file: the default store, for many
//! processes on one host.
//!
//! Not written yet: this crate is an empty shell until its issue lands. It will hold a store that
//! decides and writes each operation in one transaction, measures expiry on `CLOCK_BOOTTIME`
//! together with the host's boot id, and passes the `lease-testkit` conformance suite.
