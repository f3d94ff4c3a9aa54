//! The lease manager: one worker task that owns the [`Store`](lease_core::Store) and serialises
//! every call to it, and the facades programs use (Juju's `worker/lease` manager).
//!
//! [`Manager::start`] takes a [`ManagerConfig`] (the store, the secretaries by namespace, the
//! clock, timing and retry settings) and spawns the worker. The [`Manager`] handle is cheap to
//! clone and implements [`lease_core::Facades`], handing out the [`Checker`](lease_core::Checker),
//! [`Claimer`](lease_core::Claimer), [`Revoker`](lease_core::Revoker),
//! [`Pinner`](lease_core::Pinner) and [`Reader`](lease_core::Reader) of a namespace and model.
//!
//! What the worker does:
//!
//! - **One owner.** Requests reach it over a bounded channel, each with a one-shot reply (the
//!   actor pattern). Requests that queue up go to the store together: claims, extends and
//!   revokes as one [`Store::apply`](lease_core::Store::apply) batch (group commit), checks and
//!   waits as one read.
//! - **A view.** It remembers the leases it has seen: a claim on a lease someone else validly
//!   holds is denied without a store call; a claim by the current holder becomes an extend.
//! - **Retries as timers.** `Timeout` and `Invalid` are retried after a re-read, with jittered
//!   exponential backoff ([`RetryPolicy`]), on a timer: the worker keeps serving meanwhile.
//! - **Fast checks.** [`ManagerToken::check_now`] answers from a shared table of the manager's
//!   own guaranteed windows, without a round trip to the worker.
//! - **Exact wake-ups.** `wait_until_expired` callers wake at the expiry instant (one clock
//!   sleep on the earliest deadline), at once on a revoke through this manager, and within the
//!   refresh interval when another process changes the lease.
//! - **Clean stops.** [`Manager::stop`], or dropping every handle, lets the store call in
//!   flight finish within the grace period, then answers every pending caller `Aborted`.
//!
//! All timing uses the injected [`Clock`](lease_core::Clock), so tests drive it with a fake
//! clock. See [`Manager`] for an example.
//!
//! # When to pick it
//!
//! Whenever you run leases: it works over any store (`lease-store-sqlite`, `lease-store-k8s`,
//! or `lease-testkit`'s in-memory store) and offers, on top of the facades:
//! [`LeaderElector`] (client-go-style leader election), [`ManagerLeaser`] (auto-renewing
//! leases with metadata), [`ResourceLocks`] (transaction locks) and [`Fence`] (reject stale
//! writers by fencing generation). Runnable examples:
//!
//! - [a singular worker: claim, renew, step down](https://github.com/lease-rs/lease/blob/main/examples/src/bin/singular_worker.rs)
//! - [Juju-style application leadership with pins during an upgrade](https://github.com/lease-rs/lease/blob/main/examples/src/bin/app_leadership_pins.rs)
//! - [a Leaser with metadata](https://github.com/lease-rs/lease/blob/main/examples/src/bin/leaser_metadata.rs)
//! - [leader election on Kubernetes with graceful handover](https://github.com/lease-rs/lease/blob/main/examples/src/bin/k8s_leader_election.rs)
//! - [transaction resource locks](https://github.com/lease-rs/lease/blob/main/examples/src/bin/resource_locks.rs)
//! - [a protected resource that rejects stale writers](https://github.com/lease-rs/lease/blob/main/examples/src/bin/fencing.rs)
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use lease_core::{Claimer as _, DefaultSecretary, Facades as _, Request};
//! use lease_manager::{Manager, ManagerConfig};
//! use lease_testkit::{FakeClock, InMemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lease_core::Result<()> {
//! let clock = FakeClock::new(); // production: SystemClock and a real store
//! let store = InMemoryStore::new(clock.as_clock());
//! let manager = Manager::start(
//!     ManagerConfig::new(store, clock.as_clock())
//!         .with_secretary("jobs", Arc::new(DefaultSecretary)),
//! )?;
//! let claimer = manager.claimer("jobs", "prod")?;
//! let info = claimer.claim("backup", Request::new("host-1", Duration::from_secs(30))).await?;
//! let denied = claimer.claim("backup", Request::new("host-2", Duration::from_secs(30))).await;
//! assert!(denied.unwrap_err().is_claim_denied());
//! println!("host-1 holds backup with fencing token {}", info.generation);
//! manager.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `metrics` (off by default): export counters, gauges and a store latency histogram through
//!   the [`metrics`](https://docs.rs/metrics) facade; [`metric`] lists the names and labels.
//!   Off, the crate does not depend on `metrics` at all; [`Manager::report`] has the same
//!   counts either way.

mod config;
mod election;
mod error;
mod fence;
mod handle;
mod leaser;
pub mod metric;
#[cfg(feature = "mutations")]
#[doc(hidden)]
pub mod mutation;
#[cfg(not(feature = "mutations"))]
mod mutation {
    //! Mutations are compiled out: every check is `false`.
    #[derive(Clone, Copy)]
    pub(crate) enum Mutation {
        ConcurrentLock,
        GenerationAcrossTerms,
        RetriedExtendClaims,
        RevokeRacingLock,
    }
    pub(crate) const fn on(_: Mutation) -> bool {
        false
    }
}
mod resource_locks;
mod view;
mod window;
mod worker;

pub use config::{Jitter, ManagerConfig, RetryPolicy};
pub use election::{
    Callbacks, ElectionConfig, ElectionError, LeaderElector, Leadership, LeadershipGuard,
    TermRecord,
};
pub use error::ManagerError;
pub use fence::{Fence, StaleGeneration};
pub use handle::{Manager, ManagerToken};
pub use leaser::{LeaserConfig, ManagerLeaser};
pub use metric::report::Report;
pub use resource_locks::{
    LEASE_NAME_PREFIX, LeaseOp, LeaseOpError, LockedResource, ResourceKey, ResourceLockError,
    ResourceLocks, lease_name,
};
