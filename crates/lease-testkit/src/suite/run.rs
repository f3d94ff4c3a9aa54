//! Running cases by name, collecting every result: [`run_case`], [`run_cases`], [`run_all`],
//! [`test_all`], and what they report.

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use super::{CASES, StoreBuilder};

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
    match AssertUnwindSafe(super::dispatch(builder, name))
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

/// Runs every case in [`CASES`], each on a fresh store, in one test. A store's test file
/// should rather use [`conformance_tests!`](crate::conformance_tests) (one test per case); this
/// is for running the whole suite where one result is wanted, e.g. against a store wrapper.
///
/// # Panics
///
/// When any case fails, after all have run; the message lists each failed case as
/// `case NAME failed: MESSAGE`.
pub async fn test_all<B: StoreBuilder>(builder: &B) {
    let report = run_all(builder).await;
    assert!(report.passed(), "{report}");
}
