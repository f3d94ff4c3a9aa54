//! The SQLite builders on a real file: two electors (as two processes would be) share one
//! database, a release hands over at once with a greater generation, `run` releases when its
//! task returns, and auto-renewing leases exclude each other across managers.

#![cfg(feature = "sqlite")]

use std::time::Duration;

use lease::{Election, Leaser as _, Leases, PathKey};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqlite_electors_on_one_file_hand_over_with_fencing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("leases.db");
    let a = Election::sqlite("nightly")
        .path(&db)
        .identity("a")
        .start()
        .unwrap();
    let b = Election::sqlite("nightly")
        .path(&db)
        .identity("b")
        .start()
        .unwrap();
    assert!(db.exists(), "the file is created");

    let term_a = a.lead().await.unwrap();
    let b_leads = tokio::spawn(async move {
        let generation = b.run(|held| async move { held.generation() }).await;
        (b, generation)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b_leads.is_finished(), "b must wait while a leads");
    let first = term_a.generation();
    assert!(term_a.release().await);
    let (b, second) = tokio::time::timeout(Duration::from_secs(10), b_leads)
        .await
        .expect("b leads soon after the release, not after the 15 s lease")
        .unwrap();
    assert!(second.unwrap() > first);
    // b's run released the lease on return: a leads again at once.
    let again = tokio::time::timeout(Duration::from_secs(10), a.lead())
        .await
        .expect("released on return")
        .unwrap();
    assert!(again.generation() > first);
    drop(again);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_leases_exclude_each_other_across_managers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("leases.db");
    let one = Leases::sqlite().path(&db).identity("one").start().unwrap();
    let two = Leases::sqlite().path(&db).identity("two").start().unwrap();
    let key = PathKey::parse("/system/shard/7").unwrap();
    let (guard, _lost) = one
        .acquire_lease(&key, Duration::from_secs(30), None)
        .await
        .unwrap();
    let denied = two.acquire_lease(&key, Duration::from_secs(30), None).await;
    assert!(denied.is_err(), "{denied:?}");
    guard.release().await.unwrap();
    one.shutdown().await;
    two.shutdown().await;
}
