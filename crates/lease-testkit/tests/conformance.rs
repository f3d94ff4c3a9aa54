//! The in-memory store against the Store conformance suite: one test per case on a
//! multi-thread runtime, the same on a current-thread runtime (module `current_thread`), and
//! every case once more by name, through the dispatcher [`suite::run_case`] uses.

use lease_testkit::suite::{self, InMemoryBuilder};

lease_testkit::conformance_tests!(InMemoryBuilder, worker_threads = 2);

lease_testkit::conformance_tests!(mod current_thread, InMemoryBuilder, flavor = "current_thread");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_runs_by_name() {
    assert!(
        suite::CASES.len() >= 40,
        "only {} cases",
        suite::CASES.len()
    );
    for name in suite::CASES {
        suite::run_case(&InMemoryBuilder, name)
            .await
            .unwrap_or_else(|f| panic!("case {name} failed: {f}"));
    }
}

#[tokio::test]
async fn an_unknown_case_name_is_reported() {
    let err = suite::run_case(&InMemoryBuilder, "no_such_case")
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        r#"no conformance case is called "no_such_case""#
    );
}
