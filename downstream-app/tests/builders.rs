//! The `lease` facade's builders in a user's tests: `lease::Backend::custom` takes the
//! testkit's in-memory store and fake clock, so two copies of a once-per-fleet job run with no
//! real time passing and no database file.

use std::sync::Arc;

use downstream_app::{Outbox, publish_digest};
use lease::{Backend, Election};
use lease_testkit::{FakeClock, InMemoryStore};

fn copy(store: &InMemoryStore, clock: &FakeClock, identity: &str) -> lease::RunningElection {
    Election::new(Backend::custom(store.sibling(), clock.as_clock()), "digest")
        .identity(identity)
        .start()
        .expect("an elector")
}

#[tokio::test(flavor = "current_thread")]
async fn each_copy_publishes_under_its_own_term_and_fencing_keeps_order() {
    let clock = FakeClock::new();
    let store = InMemoryStore::new(clock.as_clock());
    let outbox = Arc::new(Outbox::new());
    let a = copy(&store, &clock, "copy-a");
    let b = copy(&store, &clock, "copy-b");

    let first = publish_digest(&a, outbox.clone(), "monday".into())
        .await
        .unwrap()
        .unwrap();
    // The lease was released when the job returned: b leads at once, with a newer generation.
    let second = publish_digest(&b, outbox.clone(), "tuesday".into())
        .await
        .unwrap()
        .unwrap();
    assert!(second > first);
    let reports = outbox.reports();
    assert_eq!(
        reports,
        vec![(first, "monday".to_owned()), (second, "tuesday".to_owned())]
    );
    // A copy that still believed in the older term would be refused by the outbox.
    assert!(outbox.publish(first, "late".into()).is_err());
    a.shutdown().await;
    b.shutdown().await;
}
