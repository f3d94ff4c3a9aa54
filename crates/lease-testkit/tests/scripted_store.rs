//! `ScriptedStore`: a matched script passes; an extra call, a missing call and wrong arguments
//! each fail with a message saying what was expected and what happened.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use lease_core::{Error, Generation, Info, Key, Op, Outcome, Request, Store, Timestamp};
use lease_testkit::{Call, ScriptedStore, StoreCall};

fn key(lease: &str) -> Key {
    Key::new("ns", "model", lease)
}

fn request(holder: &str) -> Request {
    Request::new(holder, Duration::from_secs(10))
}

fn info(holder: &str) -> Info {
    Info {
        holder: holder.to_owned(),
        expiry: Timestamp::from_nanos(42),
        generation: Generation(3),
        metadata: None,
        pinned: false,
    }
}

/// The panic message of `f`, which must panic.
async fn panic_of<F: Future>(f: F) -> String {
    match AssertUnwindSafe(f).catch_unwind().await {
        Ok(_) => panic!("expected a panic"),
        Err(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    }
}

#[tokio::test]
async fn a_matched_script_passes_and_replies_in_order() {
    let map = BTreeMap::from([(key("a"), info("h"))]);
    let mut store = ScriptedStore::new(vec![
        Call::claim(key("a"), request("h")).returns(Ok(info("h"))),
        Call::claim(key("a"), request("o")).returns(Err(Error::Held)),
        Call::extend(key("a"), request("h")).returns(Ok(info("h"))),
        Call::leases(vec![key("a"), key("b")]).returns(Ok(map.clone())),
        Call::lease_group("ns", "model").returns(Ok(map.clone())),
        Call::pin(key("a"), "e").returns(Ok(())),
        Call::unpin(key("a"), "e").returns(Err(Error::Timeout)),
        Call::pinned().returns(Ok(BTreeMap::new())),
        Call::apply(vec![Op::Revoke {
            key: key("a"),
            holder: "h".into(),
        }])
        .returns(vec![Ok(Outcome::Revoked)]),
        Call::poll_changes().returns(Ok(true)),
        Call::revoke(key("a"), "h").returns(Err(Error::Invalid)),
    ]);
    let script = store.handle();
    assert_eq!(script.remaining(), 11);
    assert_eq!(
        store.claim_lease(&key("a"), &request("h")).await.unwrap(),
        info("h")
    );
    assert!(
        store
            .claim_lease(&key("a"), &request("o"))
            .await
            .unwrap_err()
            .is_held()
    );
    assert_eq!(
        store.extend_lease(&key("a"), &request("h")).await.unwrap(),
        info("h")
    );
    assert_eq!(store.leases(&[key("a"), key("b")]).await.unwrap(), map);
    assert_eq!(store.lease_group("ns", "model").await.unwrap(), map);
    store.pin_lease(&key("a"), "e").await.unwrap();
    assert!(
        store
            .unpin_lease(&key("a"), "e")
            .await
            .unwrap_err()
            .is_timeout()
    );
    assert!(store.pinned().await.unwrap().is_empty());
    let batch = store
        .apply(vec![Op::Revoke {
            key: key("a"),
            holder: "h".into(),
        }])
        .await;
    assert!(matches!(batch.as_slice(), [Ok(Outcome::Revoked)]));
    assert!(store.poll_changes().await.unwrap());
    assert!(
        store
            .revoke_lease(&key("a"), "h")
            .await
            .unwrap_err()
            .is_invalid()
    );
    assert!(store.change_notifier().is_none());
    assert_eq!(script.remaining(), 0);
    assert_eq!(script.calls().len(), 11);
    assert_eq!(
        script.calls()[0],
        StoreCall::Op(Op::Claim {
            key: key("a"),
            request: request("h")
        })
    );
    script.finish();
    drop(store); // nothing missing: dropping is fine
}

#[tokio::test]
async fn an_extra_call_fails_naming_it() {
    let mut store = ScriptedStore::new(vec![Call::pinned().returns(Ok(BTreeMap::new()))]);
    let script = store.handle();
    store.pinned().await.unwrap();
    let message = panic_of(store.revoke_lease(&key("a"), "h")).await;
    assert_eq!(
        message,
        r#"ScriptedStore: call 2: expected no more calls (the script had 1 call(s)), got revoke_lease(ns/model#a, "h")"#
    );
    // The failure is remembered for the test's final check.
    let message = panic_of(async { script.finish() }).await;
    assert!(
        message.starts_with("ScriptedStore failed earlier: ScriptedStore: call 2"),
        "{message}"
    );
    // A call after a failure fails too.
    let message = panic_of(store.pinned()).await;
    assert!(
        message.contains("after the script had already failed"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_call_fails_finish_naming_it() {
    let mut store = ScriptedStore::new(vec![
        Call::poll_changes().returns(Ok(false)),
        Call::revoke(key("a"), "h").returns(Ok(())),
        Call::pinned().returns(Ok(BTreeMap::new())),
    ]);
    let script = store.handle();
    assert!(!store.poll_changes().await.unwrap());
    let message = panic_of(async { script.finish() }).await;
    assert_eq!(
        message,
        r#"ScriptedStore: 2 scripted call(s) never made, the first being call 2: revoke_lease(ns/model#a, "h"); pinned()"#
    );
    // Dropping the store with calls missing panics as well.
    let message = panic_of(async move { drop(store) }).await;
    assert!(
        message.contains("2 scripted call(s) never made"),
        "{message}"
    );
}

#[tokio::test]
async fn wrong_arguments_fail_with_expected_and_got() {
    let mut store = ScriptedStore::new(vec![
        Call::claim(key("a"), request("h")).returns(Ok(info("h"))),
    ]);
    let script = store.handle();
    let message = panic_of(store.claim_lease(&key("a"), &request("other"))).await;
    assert!(
        message.starts_with(
            "ScriptedStore: call 1: expected claim_lease(ns/model#a, Request { holder: \"h\""
        ),
        "{message}"
    );
    assert!(
        message.contains(", got claim_lease(ns/model#a, Request { holder: \"other\""),
        "{message}"
    );
    assert_eq!(script.calls().len(), 1);
    // The scripted call is still unmade.
    assert_eq!(script.remaining(), 1);
}

#[tokio::test]
async fn a_wrong_method_fails_with_expected_and_got() {
    let mut store = ScriptedStore::new(vec![Call::leases(vec![]).returns(Ok(BTreeMap::new()))]);
    let message = panic_of(store.lease_group("ns", "model")).await;
    assert_eq!(
        message,
        r#"ScriptedStore: call 1: expected leases([]), got lease_group("ns", "model")"#
    );
    let script = store.handle();
    // The failure panicked already: dropping the store does not panic again...
    drop(store);
    // ...but the final check reports it.
    let message = panic_of(async { script.finish() }).await;
    assert!(
        message.starts_with("ScriptedStore failed earlier"),
        "{message}"
    );
}

#[tokio::test]
async fn the_change_notifier_is_given_not_scripted() {
    let (tx, rx) = tokio::sync::watch::channel(0);
    let mut store = ScriptedStore::new(vec![]).with_change_notifier(rx);
    let mut notifier = store.change_notifier().unwrap();
    tx.send(5).unwrap();
    notifier.changed().await.unwrap();
    assert_eq!(*notifier.borrow(), 5);
    store.handle().finish();
}

/// A single-lease write is recorded as the `Op` it would be in a batch, and shown as the call.
#[test]
fn a_single_write_is_recorded_as_its_op() {
    let mut store = ScriptedStore::new(vec![Call::revoke(key("a"), "h").returns(Ok(()))]);
    let script = store.handle();
    store
        .revoke_lease(&key("a"), "h")
        .now_or_never()
        .unwrap()
        .unwrap();
    let op = Op::Revoke {
        key: key("a"),
        holder: "h".into(),
    };
    assert_eq!(script.calls(), [StoreCall::from(op)]);
    assert_eq!(
        script.calls()[0].to_string(),
        format!("revoke_lease({}, \"h\")", key("a"))
    );
    script.finish();
}
