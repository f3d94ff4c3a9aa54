//! Test doubles for the lease workspace: a fake clock, an in-memory store, the store
//! conformance suite, mocks and fakes for downstream users' tests.
//!
//! - [`FakeClock`]: a [`Clock`](lease_core::Clock) that moves only when told to, and knows how
//!   many sleepers wait on it ([`FakeClock::wait_advance`], Juju's `WaitAdvance`).
//! - [`InMemoryStore`]: the reference [`Store`](lease_core::Store), driven by an injected clock,
//!   with siblings sharing one backing.
//! - [`suite`]: the Store conformance suite every store runs from its `tests/conformance.rs`.
//! - [`MockStore`]: a `mockall` mock of `Store`, for expectations on individual calls.
//! - [`ScriptedStore`]: a `Store` that expects an exact sequence of [`Call`]s.
//! - [`FakeManager`] and the fake facades ([`FakeChecker`]/[`FakeToken`], [`FakeClaimer`],
//!   [`FakeRevoker`], [`FakePinner`], [`FakeReader`]) for unit tests of code that uses leases.
//! - [`FakeLeaser`]: a [`Leaser`](lease_core::leaser::Leaser) that renews perfectly until the
//!   test makes it lose a lease.
//! - [`FaultyStore`]: wraps any `Store` and injects timeouts (before or after the write took
//!   effect), `Invalid`, hard errors and latency at seeded, configurable rates.
//!
//! # When to pick it
//!
//! As a dev-dependency: to unit-test a program's leader-only behaviour with no real time
//! passing and no server, or to run the conformance suite on a store you wrote. The workspace's
//! [`downstream-app`](https://github.com/lease-rs/lease/tree/main/downstream-app) is a whole
//! application tested this way, with a README on how.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use lease_core::{Checker as _, Claimer as _, Manager as _, Request, Token as _};
//! use lease_testkit::{FakeClock, FakeManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lease_core::Result<()> {
//! let clock = FakeClock::new();
//! let manager = FakeManager::new(clock.clone());
//! let claimer = manager.claimer("app", "prod")?;
//! claimer.claim("backup", Request::new("a", Duration::from_secs(30))).await?;
//! let token = manager.checker("app", "prod")?.token("backup", "a");
//! assert!(token.check().await.is_ok());
//! clock.advance(Duration::from_secs(30)); // the test decides when leases expire
//! assert!(token.check().await.unwrap_err().is_not_held());
//! # Ok(())
//! # }
//! ```

pub mod clock;
pub mod fake;
pub mod faulty;
pub mod leaser;
pub mod mock;
pub mod script;
pub mod store;
pub mod suite;

pub use clock::{FAKE_CLOCK_START, FakeClock, WAIT_FOR_SLEEPERS_TIMEOUT};
pub use fake::{
    FakeChecker, FakeClaimer, FakeManager, FakePinner, FakeReader, FakeRevoker, FakeToken,
};
pub use faulty::{FaultCounts, FaultHandle, FaultRates, FaultyStore, OpKind};
pub use leaser::{FAKE_LEASER_MODEL, FAKE_LEASER_NAMESPACE, FakeLeaser};
pub use mock::MockStore;
pub use script::{Call, Canned, CannedReply, Expect, ScriptHandle, ScriptedStore, StoreCall};
pub use store::InMemoryStore;

// The README's Rust example is compiled and run as a doctest, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
