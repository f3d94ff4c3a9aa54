//! `MockStore`: expectations on Store calls, with arguments, counts and order.

use std::collections::BTreeMap;
use std::time::Duration;

use lease_core::{Error, Generation, Info, Key, Op, Outcome, Request, Store, Timestamp};
use lease_testkit::MockStore;
use mockall::Sequence;
use mockall::predicate::{always, eq};

fn key() -> Key {
    Key::new("ns", "model", "lease")
}

/// Code under test: claim, and on `Held` read who holds the lease.
async fn claim_or_report_holder<S: Store>(store: &mut S, key: &Key, request: &Request) -> String {
    match store.claim_lease(key, request).await {
        Ok(info) => format!("claimed at generation {}", info.generation),
        Err(e) if e.is_held() => {
            let leases = store.leases(std::slice::from_ref(key)).await.unwrap();
            format!("held by {}", leases[key].holder)
        }
        Err(e) => format!("failed: {e}"),
    }
}

#[tokio::test]
async fn expectations_drive_the_code_under_test() {
    let request = Request::new("me", Duration::from_secs(5));
    let mut store = MockStore::new();
    let mut seq = Sequence::new();
    store
        .expect_claim_lease()
        .with(eq(key()), eq(request.clone()))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(Error::Held));
    store
        .expect_leases()
        .withf(|keys| keys == [key()])
        .times(1)
        .in_sequence(&mut seq)
        .returning(|keys| {
            Ok(BTreeMap::from([(
                keys[0].clone(),
                Info {
                    holder: "them".into(),
                    expiry: Timestamp::from_nanos(9),
                    generation: Generation(4),
                    metadata: None,
                    pinned: false,
                },
            )]))
        });
    assert_eq!(
        claim_or_report_holder(&mut store, &key(), &request).await,
        "held by them"
    );
    store.checkpoint();

    store
        .expect_claim_lease()
        .with(always(), always())
        .returning(|_, r| {
            Ok(Info {
                holder: r.holder.clone(),
                expiry: Timestamp::from_nanos(1),
                generation: Generation(5),
                metadata: None,
                pinned: false,
            })
        });
    assert_eq!(
        claim_or_report_holder(&mut store, &key(), &request).await,
        "claimed at generation 5"
    );
}

#[tokio::test]
async fn provided_methods_are_mocked_too() {
    let mut store = MockStore::new();
    store
        .expect_apply()
        .withf(|ops| ops.len() == 1 && matches!(ops[0], Op::Revoke { .. }))
        .returning(|_| vec![Ok(Outcome::Revoked)]);
    store.expect_poll_changes().times(2).returning(|| Ok(false));
    store.expect_change_notifier().returning(|| None);
    let results = store
        .apply(vec![Op::Revoke {
            key: key(),
            holder: "me".into(),
        }])
        .await;
    assert!(matches!(results.as_slice(), [Ok(Outcome::Revoked)]));
    assert!(!store.poll_changes().await.unwrap());
    assert!(!store.poll_changes().await.unwrap());
    assert!(store.change_notifier().is_none());
}

#[tokio::test]
#[should_panic(expected = "No matching expectation found")]
async fn an_unexpected_call_panics() {
    let mut store = MockStore::new();
    store.expect_pinned().returning(|| Ok(BTreeMap::new()));
    let _ = store.revoke_lease(&key(), "me").await;
}
