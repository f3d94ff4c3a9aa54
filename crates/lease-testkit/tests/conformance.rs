//! The in-memory store against the whole Store conformance suite.

use lease_testkit::suite::{self, InMemoryBuilder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_store_passes_the_conformance_suite() {
    suite::test_all(&InMemoryBuilder).await;
}

#[tokio::test]
async fn every_case_runs_by_name_on_a_current_thread_runtime_too() {
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
