//! A lease [`Store`](lease_core::Store) on an embedded SQLite file: the default store, for many
//! processes on one host.
//!
//! [`SqliteStore`] decides and writes each operation in one `BEGIN IMMEDIATE` transaction, so
//! processes sharing the file never race between reading a lease and writing it. Expiries are
//! measured on `CLOCK_BOOTTIME` ([`lease_core::SystemClock`]), which all processes of a host
//! share and which does not jump when the wall clock is set, and stored with the host's boot
//! id, so leases written before a reboot count as expired. Fencing generations come from a
//! per-key table that is never deleted from, so they keep increasing across revokes, expiry,
//! purges and restarts.
//!
//! The file is created with mode 0600, runs in WAL mode with `synchronous = FULL` and foreign
//! keys on, and carries a schema version (`PRAGMA user_version`) that is migrated on open; a
//! file written by a newer version of this crate, or one that is not a lease database, is
//! refused and left untouched. Opening costs the same whatever the file holds: it checks the
//! header, application id and schema version, and scans the whole file for damage only before
//! creating or migrating it; [`check_file`] scans on demand, read-only, and a damaged page met
//! by an operation fails it with [`SqliteStoreError::Corrupt`]. The tables are described in the
//! source of the crate's `schema` module (`src/schema.rs`); the file's schema version is
//! [`SCHEMA_VERSION`], and its `PRAGMA application_id` is `0x4C454153` (`"LEAS"`).
//!
//! # A dead holder's lease is free at once; a silent one's at its expiry
//!
//! On one host the kernel knows when a process dies. Each process writing leases has a holder
//! session on the file: a row and an exclusive `flock` on
//! `<database>-sessions/<seq>`, held until the process exits (whatever becomes of its store
//! handles) and inherited by its children. A lease live by its expiry whose session's lock is
//! no longer held by anyone (every process that had it has exited) is free: the next claim takes
//! it with a higher generation, within milliseconds. A holder that is alive but silent
//! (stopped with `SIGSTOP`, paused, its renewals hung) keeps its lease until the expiry, and its
//! next write after that is refused as usual. A session file deleted or replaced by hand (its
//! directory removed, an editor's save over it) proves nothing: those leases free at their
//! expiry only. Waiters hear of a death at once: the change
//! notifier waits on the sessions of live holders it has seen. On by default;
//! [`SqliteStoreBuilder::death_aware`] turns it off, and [`SessionScope::Unbound`] writes
//! leases that free at expiry only (for one-shot commands whose holder outlives them).
//!
//! # Never blocks the async runtime
//!
//! Every SQLite call runs on a blocking thread ([`tokio::task::spawn_blocking`]), never on a
//! runtime worker: a wait of up to the busy timeout for another process's write lock, or an
//! fsync, delays no other task of the runtime (a lease holder's own timers included), on
//! `current_thread` and multi-thread runtimes alike. Each [`Store`](lease_core::Store) call, and
//! each [`apply`](lease_core::Store::apply) batch as one transaction, is one blocking call.
//! Dropping a call's future never leaves a transaction open: a call that had not begun never
//! runs, one that had runs to its commit or rollback, and the next call waits for it. Opening
//! ([`SqliteStore::open`], [`SqliteStoreBuilder::open`]) stays synchronous (it is quick: O(1)
//! checks); call it before entering async code, or in `spawn_blocking` if the file may be
//! locked by another process while it is created or migrated.
//!
//! # One kernel per file
//!
//! Expiries are instants on one kernel's clock, so a file must only ever be written by one
//! kernel (any number of processes and containers on it). Opening refuses file systems other
//! kernels can write too (NFS, SMB, 9p, FUSE and virtiofs, cluster file systems:
//! [`SqliteStoreError::SharedFileSystem`]), and every transaction refuses to act when another
//! kernel's leases in the file may be live ([`SqliteStoreError::AnotherKernel`]), rather than
//! judging them expired. The file tells another kernel from an earlier boot of this host by a
//! write counter, the wall clock ([`WallClock`], with a tolerance of 2 s) and the machine id
//! ([`host_machine_id`]). This assumes the wall clocks of the kernels involved agree to better
//! than the time between a boot's last write and the start of the next boot of the same host; a
//! clock wrong by more only makes the check refuse after a reboot, for at most the ttl of the
//! leases the previous boot left: safe, not silent. Across hosts or VMs, use
//! `lease-store-k8s`.
//!
//! # When to pick it
//!
//! When the copies of your program run on one host (processes or tasks), and for development;
//! for many hosts, `lease-store-k8s`. Run it under `lease-manager`, which serialises every call
//! and adds leader election, auto-renewing leases and resource locks. Runnable examples on
//! this store:
//!
//! - [a singular worker: claim, renew, step down](https://github.com/lease-rs/lease/blob/main/examples/src/bin/singular_worker.rs)
//! - [Juju-style application leadership with pins](https://github.com/lease-rs/lease/blob/main/examples/src/bin/app_leadership_pins.rs)
//! - [a Leaser with metadata](https://github.com/lease-rs/lease/blob/main/examples/src/bin/leaser_metadata.rs)
//! - [transaction resource locks](https://github.com/lease-rs/lease/blob/main/examples/src/bin/resource_locks.rs)
//! - [fencing stale writers](https://github.com/lease-rs/lease/blob/main/examples/src/bin/fencing.rs)
//!
//! # Example
//!
//! The store on its own (under a manager, see the examples above):
//!
//! ```no_run
//! use std::time::Duration;
//! use lease_core::{Key, Request, Store};
//! use lease_store_sqlite::SqliteStore;
//!
//! # async fn run() -> lease_core::Result<()> {
//! let mut store = SqliteStore::builder("/var/lib/myapp/leases.db")
//!     .busy_timeout(Duration::from_millis(500))
//!     .open()?;
//! let key = Key::new("singular-controller", "model-1", "backup");
//! let request = Request::new("machine-0", Duration::from_secs(15));
//! let info = store.claim_lease(&key, &request).await?;
//! store.extend_lease(&key, &request).await?;
//! store.revoke_lease(&key, "machine-0").await?;
//! # let _ = info;
//! # Ok(())
//! # }
//! ```

mod batch_results;
mod boot;
mod changes;
mod check;
mod default_path;
mod encoding;
mod error;
mod filesystem;
mod inotify;
mod kernel;
mod open;
mod ops;
mod own_commits;
mod own_rows;
mod paths;
mod pipeline;
mod schema;
mod session;
mod settings;
mod store;
mod wal;

pub use boot::{BOOT_ID_PATH, host_boot_id};
pub use check::{IntegrityReport, check_file};
pub use default_path::{DEFAULT_DATABASE_RULE, DefaultDatabase};
pub use error::SqliteStoreError;
pub use kernel::{SystemWallClock, WallClock, host_machine_id};
pub use open::{
    DEFAULT_BUSY_TIMEOUT, DEFAULT_PURGE_BATCH, KEPT_WAL_CHECKPOINT_PAGES, MAX_BUSY_TIMEOUT,
    NEW_FILE_MODE, SqliteStoreBuilder,
};
pub use schema::SCHEMA_VERSION;
pub use session::{SessionHandle, SessionScope};
pub use store::SqliteStore;
