//! The Store conformance suite: every clause of the [`Store`] contract as named cases that any
//! store can be run against (openraft's `testing::Suite`, adapted), one test per case.
//!
//! A store crate implements [`StoreBuilder`] (a fresh store over fresh backing, a guard that
//! cleans the backing up when dropped, and optionally a second instance over the same backing)
//! and invokes [`conformance_tests!`](crate::conformance_tests) in one small test file, which
//! generates one test per case: `cargo test -p my-store claim_holds_until` runs one case, and a
//! failure names its case. The suite creates a [`FakeClock`](crate::FakeClock) for every case
//! and hands it to the builder, so it decides when leases expire: a store must decide expiry
//! with the clock it is given.
//!
//! Each case is `cases::<clause>::<case>` ([`cases`]), a function from a builder to
//! `Result<(), CaseFailure>`. [`run_case`], [`run_all`] and [`test_all`] run cases by name
//! ([`CASES`]) and collect every result, e.g. to check that a broken store fails the cases it
//! should.
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
//! # The list of cases cannot drift from the cases
//!
//! The cases live in private modules (`src/suite/clauses/<clause>.rs`, one per clause) under
//! `#![deny(dead_code)]`. One macro holds the list of cases, once, grouped by clause
//! (`__conformance_case_list!` in `src/suite/list.rs`), and everything that names cases is
//! generated from it: the public re-exports in [`cases`], [`CASES`], [`CLAUSES`], the
//! dispatcher behind [`run_case`], and each store's tests. So:
//!
//! - a case function that is not in the list is used nowhere: a `dead_code` compile error;
//! - a listed case with no function, or under the wrong clause, does not resolve: a compile
//!   error;
//! - a new case reaches every store's tests with no edit to their files.
//!
//! To add a case: write it as a `pub async fn` in its clause's file, and add its name under
//! that clause in the list.
//!
//! To add a clause: a file `src/suite/clauses/<clause>.rs` whose module documentation states
//! the clause, with its cases as above; `pub(super) mod <clause>;` in `clauses/mod.rs`; and
//! `<clause> { <case>, ... }` in the list, after a `///` line that states the clause. Each
//! store's tests then get a module `<clause>` with one test per case, with no edit to them.
//!
//! `tests/suite_list.rs` checks the rest by reading the sources: every `clauses/*.rs` file
//! (but `support.rs`) is a clause of the list, each case function is listed under its file's
//! clause, and no name is listed twice.
//!
//! # Example
//!
//! A store's `tests/conformance.rs` (here for [`InMemoryStore`], as [`InMemoryBuilder`] does
//! it):
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
//! // One test per case, on a multi-thread runtime (options: `ignore = "reason"`,
//! // `flavor = "current_thread"`, `worker_threads = N`, and `mod name,` first).
//! lease_testkit::conformance_tests!(Builder);
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! // One case called directly, or by name, e.g. while debugging a failure:
//! suite::cases::claim::claim_on_held_lease_is_held(&Builder).await.unwrap();
//! suite::run_case(&Builder, "claim_on_held_lease_is_held").await.unwrap();
//! # }
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use lease_core::{Clock, Store};

use crate::InMemoryStore;

mod clauses;
mod list;
mod run;

pub use run::{CaseFailure, SuiteReport, run_all, run_case, run_cases, test_all};

/// The callback of the case list that generates this crate's items naming the cases.
macro_rules! define_cases {
    (
        {}
        $( $(#[$clause_doc:meta])* $clause:ident { $($case:ident),* $(,)? } )*
    ) => {
        /// Every conformance case, at `cases::<clause>::<case>`: a function from a
        /// [`StoreBuilder`] to `Result<(), CaseFailure>` that runs the case on a fresh store
        /// and says what it found when the store breaks the clause.
        pub mod cases {
            $(
                $(#[$clause_doc])*
                pub mod $clause {
                    pub use crate::suite::clauses::$clause::{$($case),*};
                }
            )*
        }

        /// The name of every conformance case, in the order [`run_all`] runs them.
        pub const CASES: &[&str] = &[$($(stringify!($case)),*),*];

        /// Every clause with the names of its cases, in the order of [`CASES`].
        pub const CLAUSES: &[(&str, &[&str])] = &[$((stringify!($clause), &[$(stringify!($case)),*])),*];

        /// Runs the case called `name`; `None` when there is no such case.
        async fn dispatch<B: StoreBuilder>(
            builder: &B,
            name: &str,
        ) -> Option<Result<(), CaseFailure>> {
            match name {
                $($(stringify!($case) => Some(cases::$clause::$case(builder).await),)*)*
                _ => None,
            }
        }
    };
}

crate::__conformance_case_list!([define_cases] {});

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

    /// For a store that frees a dead holder's leases early (the `death` clause): another
    /// instance over the same backing that stands for a separate holder process, whose death
    /// is the instance being dropped. `None` (the default) for a store that frees leases at
    /// their expiry only; the `death` cases then pass without checking anything.
    ///
    /// # Errors
    ///
    /// Whatever prevents building the instance; the case fails with it.
    async fn build_mortal_sibling(
        &self,
        guard: &Self::Guard,
        clock: Arc<dyn Clock>,
    ) -> lease_core::Result<Option<Self::Store>> {
        let _ = (guard, clock);
        Ok(None)
    }
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

/// What [`conformance_tests!`](crate::conformance_tests) expands to calls; not a stable API.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;

    use super::CaseFailure;

    /// The tokio runtime a generated test runs its case on.
    #[derive(Debug, Clone, Copy)]
    pub enum Flavor {
        /// `new_current_thread`.
        CurrentThread,
        /// `new_multi_thread` with this many worker threads.
        MultiThread(usize),
    }

    /// Runs `case` to completion on a new runtime of `flavor`.
    ///
    /// # Panics
    ///
    /// With `conformance case NAME failed: MESSAGE` when the case fails, or when the runtime
    /// cannot be built.
    pub fn run_test(
        flavor: Flavor,
        name: &str,
        case: impl Future<Output = Result<(), CaseFailure>>,
    ) {
        let runtime = match flavor {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            Flavor::MultiThread(threads) => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build(),
        }
        .unwrap_or_else(|e| panic!("conformance case {name}: cannot build a tokio runtime: {e}"));
        if let Err(failure) = runtime.block_on(case) {
            panic!("conformance case {name} failed: {failure}");
        }
    }
}
