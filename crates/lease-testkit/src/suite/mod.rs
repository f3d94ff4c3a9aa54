//! The Store conformance suite: every clause of the [`Store`] contract as a named case that any
//! store can be run against (openraft's `testing::Suite`, adapted).
//!
//! A store crate implements [`StoreBuilder`] (a fresh store over fresh backing, a guard that
//! cleans the backing up when dropped, and optionally a second instance over the same backing)
//! and calls [`test_all`] from one small test file. The suite creates a [`FakeClock`] for every
//! case and hands it to the builder, so it decides when leases expire: a store must decide
//! expiry with the clock it is given.
//!
//! # Rules the cases hold a store to
//!
//! Those of [`Store`]'s documentation, with two precisions:
//!
//! - **The expiry instant is expired.** A lease claimed at `t` for `d` is held at every instant
//!   before `t + d` and, unless pinned, is not held at or after the expiry its [`Info`](lease_core::Info) reports:
//!   `now >= expiry` means expired. The reported expiry must lie in `[t + d, t + d + 1 s]`
//!   (equal to `t + d` for a store that does not round).
//! - **Contested claims.** A claim on a lease validly held by another gives
//!   [`Error::Held`](lease_core::Error::Held) on one instance; in the concurrent cases, where
//!   instances race, `Invalid` is accepted as well.
//!
//! Cases that need two instances over one backing pass without checking anything when
//! [`StoreBuilder::build_sibling`] returns `None` (and say so on stderr). The concurrent-claim
//! case spawns tokio tasks: run the suite on a `multi_thread` runtime so they really race.
//!
//! # Example
//!
//! A store's `tests/conformance.rs` (here for [`InMemoryStore`], as
//! [`InMemoryBuilder`] does it):
//!
//! ```
//! use std::sync::Arc;
//!
//! use async_trait::async_trait;
//! use lease_core::Clock;
//! use lease_testkit::InMemoryStore;
//! use lease_testkit::suite::{self, StoreBuilder};
//!
//! struct Builder;
//!
//! #[async_trait]
//! impl StoreBuilder for Builder {
//!     type Store = InMemoryStore;
//!     // Keeps the backing alive; a real store would hold a temporary directory or namespace
//!     // here and remove it on drop.
//!     type Guard = InMemoryStore;
//!
//!     async fn build(&self, clock: Arc<dyn Clock>) -> lease_core::Result<(InMemoryStore, InMemoryStore)> {
//!         let store = InMemoryStore::new(clock);
//!         let guard = store.sibling();
//!         Ok((store, guard))
//!     }
//!
//!     async fn build_sibling(
//!         &self,
//!         guard: &InMemoryStore,
//!         clock: Arc<dyn Clock>,
//!     ) -> lease_core::Result<Option<InMemoryStore>> {
//!         Ok(Some(guard.sibling_with_clock(clock)))
//!     }
//! }
//!
//! // In tests/conformance.rs this is
//! // #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! // async fn conformance() { suite::test_all(&Builder).await; }
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! suite::test_all(&Builder).await;
//!
//! // One case by name, e.g. while debugging a failure:
//! suite::run_case(&Builder, "claim_on_held_lease_is_held").await.unwrap();
//! # }
//! ```

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use lease_core::{Clock, Store};

use crate::{FakeClock, InMemoryStore};

mod cases;

pub use cases::*;

/// Builds the stores the suite runs against.
#[async_trait]
pub trait StoreBuilder: Send + Sync {
    /// The store under test.
    type Store: Store + 'static;

    /// Owns the backing of one built store (a temporary directory, a Kubernetes namespace…)
    /// and cleans it up when dropped, after every store built over it has been dropped.
    type Guard: Send + Sync + 'static;

    /// A fresh store over fresh, empty backing, deciding expiry with `clock`.
    ///
    /// # Errors
    ///
    /// Whatever prevents building the store; the case fails with it.
    async fn build(&self, clock: Arc<dyn Clock>) -> lease_core::Result<(Self::Store, Self::Guard)>;

    /// Another instance over the same backing as `guard`'s (a second SQLite connection on the
    /// same file, a second client of the same API server), deciding expiry with `clock`; `None`
    /// if the store cannot share its backing. The default is `None`.
    ///
    /// # Errors
    ///
    /// Whatever prevents building the instance; the case fails with it.
    async fn build_sibling(
        &self,
        guard: &Self::Guard,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<Option<Self::Store>> {
        let _ = (guard, clock);
        Ok(None)
    }
}

/// Why a case failed: what was checked and what was found instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    /// The explanation.
    pub message: String,
}

impl CaseFailure {
    /// A failure with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        CaseFailure {
            message: message.into(),
        }
    }
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CaseFailure {}

/// The outcome of running several cases: each case's name with its result, in the order run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteReport {
    /// Every case run, with its result.
    pub results: Vec<(&'static str, Result<(), CaseFailure>)>,
}

impl SuiteReport {
    /// The names of the failed cases.
    pub fn failed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(name, _)| *name)
            .collect()
    }

    /// The failure of case `name`, if it was run and failed.
    pub fn failure(&self, name: &str) -> Option<&CaseFailure> {
        self.results
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, r)| r.as_ref().err())
    }

    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|(_, r)| r.is_ok())
    }
}

impl fmt::Display for SuiteReport {
    /// One line per failed case, `case NAME failed: MESSAGE`, after a summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failed();
        write!(
            f,
            "{} of {} conformance cases failed",
            failed.len(),
            self.results.len()
        )?;
        for (name, result) in &self.results {
            if let Err(failure) = result {
                write!(f, "\ncase {name} failed: {failure}")?;
            }
        }
        Ok(())
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// Runs the case called `name` (one of [`CASES`]) on a fresh store. A panic inside the case or
/// the store is caught and reported as the case's failure.
///
/// # Errors
///
/// The case's failure, or a failure saying that no case has that name.
pub async fn run_case<B: StoreBuilder>(builder: &B, name: &str) -> Result<(), CaseFailure> {
    match AssertUnwindSafe(cases::dispatch(builder, name))
        .catch_unwind()
        .await
    {
        Ok(Some(result)) => result,
        Ok(None) => Err(CaseFailure::new(format!(
            "no conformance case is called {name:?}"
        ))),
        Err(payload) => Err(CaseFailure::new(format!(
            "panicked: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// Runs the cases named in `names`, in that order, each on a fresh store, and reports every
/// result (it does not stop at the first failure). Progress goes to stderr.
pub async fn run_cases<B: StoreBuilder>(builder: &B, names: &[&str]) -> SuiteReport {
    let mut results = Vec::with_capacity(names.len());
    for name in names {
        let result = run_case(builder, name).await;
        let name: &'static str = CASES
            .iter()
            .copied()
            .find(|c| c == name)
            .unwrap_or("<unknown case>");
        match &result {
            Ok(()) => eprintln!("conformance case {name} ... ok"),
            Err(failure) => eprintln!("conformance case {name} ... FAILED: {failure}"),
        }
        results.push((name, result));
    }
    SuiteReport { results }
}

/// Runs every case in [`CASES`] and reports every result.
pub async fn run_all<B: StoreBuilder>(builder: &B) -> SuiteReport {
    run_cases(builder, CASES).await
}

/// Runs every case in [`CASES`], each on a fresh store.
///
/// # Panics
///
/// When any case fails, after all have run; the message lists each failed case as
/// `case NAME failed: MESSAGE`.
pub async fn test_all<B: StoreBuilder>(builder: &B) {
    let report = run_all(builder).await;
    assert!(report.passed(), "{report}");
}

/// The [`StoreBuilder`] of [`InMemoryStore`]: every built store has its own backing, and
/// siblings share it. Also a starting point for wrapping the in-memory store in tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct InMemoryBuilder;

#[async_trait]
impl StoreBuilder for InMemoryBuilder {
    type Store = InMemoryStore;
    type Guard = InMemoryStore;

    async fn build(
        &self,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<(InMemoryStore, InMemoryStore)> {
        let store = InMemoryStore::new(clock);
        let guard = store.sibling();
        Ok((store, guard))
    }

    async fn build_sibling(
        &self,
        guard: &InMemoryStore,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<Option<InMemoryStore>> {
        Ok(Some(guard.sibling_with_clock(clock)))
    }
}

/// A fresh fake clock for one case; kept here so every case starts at the same odd instant.
fn case_clock() -> FakeClock {
    FakeClock::new()
}
