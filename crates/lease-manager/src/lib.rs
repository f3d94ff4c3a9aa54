//! The lease manager: one worker task that owns the [`Store`](lease_core::Store) and serialises
//! every call to it, and the facades programs use (Juju's `worker/lease` manager).
//!
//! [`Manager::start`] takes a [`ManagerConfig`] (the store, the secretaries by namespace, the
//! clock, timing and retry settings) and spawns the worker. The [`Manager`] handle is cheap to
//! clone and implements [`lease_core::Manager`], handing out the [`Checker`](lease_core::Checker),
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

mod config;
mod election;
mod error;
mod fence;
mod handle;
mod leaser;
mod report;
mod resource_locks;
mod view;
mod worker;

pub use config::{Jitter, ManagerConfig, RetryPolicy};
pub use election::{
    Callbacks, ElectionConfig, ElectionError, LeaderElector, Leadership, LeadershipGuard,
    LockRecord,
};
pub use error::ManagerError;
pub use fence::{Fence, StaleGeneration};
pub use handle::{Manager, ManagerToken};
pub use leaser::{LeaserConfig, ManagerLeaser};
pub use report::Report;
pub use resource_locks::{
    LEASE_NAME_PREFIX, LeaseOp, LeaseOpError, LockedResource, ResourceKey, ResourceLockError,
    ResourceLocks, lease_name,
};

// The workspace README's Rust example is compiled and run as a doctest here, where the SQLite
// store it uses is a dev-dependency, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
