//! Leases for programs that run as several copies: exactly one copy leads, owns a shard or
//! runs the nightly job at a time. A lease is a named, time-bounded claim that one holder
//! renews and the others wait for; every claim carries a fencing generation, strictly
//! increasing per lease, that protected resources use to refuse a holder that lost it.
//!
//! This crate is the front door: one dependency, one `use` line, builders with the defaults a
//! user expects. The layered crates underneath stay usable alone and are re-exported here:
//! [`core`] (types, errors, the `Store` trait), [`manager`] (the worker, the facades, the
//! elector, the leaser, resource locks, `Fence`), and the stores behind features:
//! `sqlite` (default; [`sqlite`]) and `kubernetes` ([`kubernetes`]).
//!
//! # Leader election on Kubernetes
//!
//! ```no_run
//! # #[cfg(feature = "kubernetes")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let elector = lease::Election::kubernetes(client, "my-controller").start()?;
//! let term = elector.lead().await?;
//! // Lead until `term.lost()` fires; pass `term.generation()` to what you write to.
//! # Ok(())
//! # }
//! ```
//!
//! client-go's timings (15 s lease, 10 s renew deadline, 2 s retry), a Lease object named
//! after the lease in the client's namespace, leadership Events, and the pod name as identity
//! (`POD_NAME` from the downward API). [`Term::health_check`] plugs into an HTTP probe.
//!
//! # One copy on this host runs the job
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lease::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("leases.db");
//! let elector = lease::Election::sqlite("nightly-backup").path(&path).start()?;
//! let done = elector
//!     .run(|held| async move {
//!         // Runs only while this process holds the lease; `held.token()` is cancelled
//!         // before the lease could be lost.
//!         format!("backed up under generation {}", held.generation())
//!     })
//!     .await?;
//! # assert!(done.starts_with("backed up"));
//! # elector.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Without `.path(...)` the database is the per-user default the `lease` command uses too
//! (`$LEASE_DB`, else `$XDG_STATE_HOME/lease/leases.db`, else
//! `~/.local/state/lease/leases.db`). [`Leases`] gives auto-renewing leases on path keys with
//! metadata.
//!
//! # Tests
//!
//! [`Backend::custom`] takes any store and clock: `lease-testkit`'s `InMemoryStore` and
//! `FakeClock` run an election with no real time passing.

#![forbid(unsafe_code)]

mod backend;
mod election;
mod error;
mod identity;
mod leases;

pub use backend::Backend;
pub use election::{Election, HealthCheck, Holding, RunningElection, Term};
pub use error::Error;
pub use leases::{Leases, RunningLeases};

pub use lease_core as core;
pub use lease_manager as manager;
#[cfg(feature = "kubernetes")]
pub use lease_store_k8s as kubernetes;
#[cfg(feature = "sqlite")]
pub use lease_store_sqlite as sqlite;

pub use lease_core::{
    CancellationToken, Generation, Info, Key, LeaseGuard, Leaser, LeaserExt, PathKey, Request,
};
pub use lease_manager::{ElectionError, Fence, LeaderElector, Leadership, ManagerLeaser};

// The workspace README's Rust examples (this crate's builders first, then the layered API) are
// compiled and run as doctests here, where every crate they use is a dependency, so they cannot
// rot.
#[cfg(all(doctest, feature = "sqlite", feature = "kubernetes"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
