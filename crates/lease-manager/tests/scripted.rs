//! Exact store call sequences, checked by the testkit's strict [`ScriptedStore`]: every call
//! the worker makes must be the next one in the script, with the same arguments.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{MODEL, NS, config, ms, req, secs, settle, until};
use lease_core::{CancellationToken, Error, Facades as _, Generation, Info, Key, Op, Outcome};
use lease_manager::Manager;
use lease_testkit::{Call, FakeClock, ScriptedStore};

fn key(lease: &str) -> Key {
    Key::new(NS, MODEL, lease)
}

fn info(holder: &str, clock: &FakeClock, d: std::time::Duration, generation: u64) -> Info {
    Info {
        holder: holder.into(),
        expiry: clock.now().saturating_add(d),
        generation: Generation(generation),
        metadata: None,
        pinned: false,
    }
}

#[tokio::test]
async fn invalid_then_reread_then_extend_after_the_backoff() {
    let clock = FakeClock::new();
    let request = req("h1", secs(10));
    // Another instance of h1 holds the lease: the claim is Invalid, the re-read shows h1, so
    // the retry is an extend.
    let held = info("h1", &clock, secs(10), 4);
    let store = ScriptedStore::new(vec![
        Call::apply(vec![Op::Claim {
            key: key("a"),
            request: request.clone(),
        }])
        .returns(vec![Err(Error::Invalid)]),
        Call::leases(vec![key("a")]).returns(Ok(BTreeMap::from([(key("a"), held.clone())]))),
        Call::apply(vec![Op::Extend {
            key: key("a"),
            request: request.clone(),
        }])
        .returns(vec![Ok(Outcome::Extended(held.clone()))]),
    ]);
    let script = store.handle();
    let manager = Manager::start(config(store, &clock)).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let task = tokio::spawn(async move { claimer.claim("a", request).await });
    until("the retry is scheduled", || manager.report().retries == 1).await;
    clock.wait_for_sleepers(1).await;
    clock.advance(ms(50));
    assert_eq!(task.await.unwrap().unwrap(), held);
    script.finish();
    let report = manager.report();
    assert_eq!((report.retries, report.extends, report.claims), (1, 1, 0));
}

#[tokio::test]
async fn revoking_an_absent_lease_is_not_held_after_one_reread() {
    let clock = FakeClock::new();
    let store = ScriptedStore::new(vec![
        Call::apply(vec![Op::Revoke {
            key: key("a"),
            holder: "h1".into(),
        }])
        .returns(vec![Err(Error::Invalid)]),
        Call::leases(vec![key("a")]).returns(Ok(BTreeMap::new())),
    ]);
    let script = store.handle();
    let manager = Manager::start(config(store, &clock)).unwrap();
    let err = manager
        .revoker(NS, MODEL)
        .unwrap()
        .revoke("a", "h1")
        .await
        .unwrap_err();
    assert!(err.is_not_held(), "{err}");
    script.finish();
}

#[tokio::test]
async fn waiters_poll_for_changes_each_refresh_and_reread_only_when_told() {
    let clock = FakeClock::new();
    let other = info("other", &clock, secs(600), 2);
    let store = ScriptedStore::new(vec![
        // The wait: the lease is unknown, so it is read.
        Call::leases(vec![key("a")]).returns(Ok(BTreeMap::from([(key("a"), other)]))),
        // First refresh: nothing changed, nothing read.
        Call::poll_changes().returns(Ok(false)),
        // Second refresh: something changed; the waited lease is re-read and is gone.
        Call::poll_changes().returns(Ok(true)),
        Call::leases(vec![key("a")]).returns(Ok(BTreeMap::new())),
    ]);
    let script = store.handle();
    let manager = Manager::start(
        config(store, &clock)
            .with_refresh_interval(ms(100))
            .with_max_sleep(secs(60)),
    )
    .unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let w = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || manager.report().waiters == 1).await;
    clock.wait_for_sleepers(1).await;
    clock.advance(ms(100));
    until("the first poll", || script.remaining() == 2).await;
    settle().await;
    assert!(!waiter.is_finished());
    clock.wait_for_sleepers(1).await;
    clock.advance(ms(100));
    waiter.await.unwrap().unwrap();
    script.finish();
}

#[tokio::test]
async fn a_store_error_on_a_read_fails_only_that_check() {
    let clock = FakeClock::new();
    let granted = info("h1", &clock, secs(10), 1);
    let request = req("h1", secs(10));
    let store = ScriptedStore::new(vec![
        Call::leases(vec![key("a")]).returns(Err(Error::store_msg("connection reset"))),
        Call::apply(vec![Op::Claim {
            key: key("a"),
            request: request.clone(),
        }])
        .returns(vec![Ok(Outcome::Claimed(granted.clone()))]),
    ]);
    let script = store.handle();
    let manager = Manager::start(config(store, &clock)).unwrap();
    let token = manager.token(NS, MODEL, "a", "h1").unwrap();
    let err = lease_core::Token::check(&token).await.unwrap_err();
    assert_eq!(err.kind(), lease_core::ErrorKind::Store);
    assert_eq!(err.to_string(), "connection reset");
    // The manager carries on.
    let claimed = manager
        .claimer(NS, MODEL)
        .unwrap()
        .claim("a", request)
        .await
        .unwrap();
    assert_eq!(claimed, granted);
    assert_eq!(token.check_now(), Some(Generation(1)));
    script.finish();
    let report = manager.report();
    assert_eq!(report.store_errors, 1);
    assert_eq!(
        report.last_error.as_deref(),
        Some("reading leases: connection reset")
    );
}

/// A store read can report a later expiry than the holder's own guarantee (Kubernetes: a write
/// this process saw late expires late here, but not for the processes that saw it early). A
/// token check answered by such a read says "held" only until the holder's call start +
/// duration.
#[tokio::test]
async fn a_store_read_with_a_late_expiry_does_not_extend_a_tokens_window() {
    let clock = FakeClock::new();
    let start = clock.now();
    let request = req("h1", secs(10));
    // The store reports the claim expiring 5 s after the caller's window.
    let late = info("h1", &clock, secs(15), 3);
    let store = ScriptedStore::new(vec![
        Call::apply(vec![Op::Claim {
            key: key("a"),
            request: request.clone(),
        }])
        .returns(vec![Ok(Outcome::Claimed(late.clone()))]),
        Call::leases(vec![key("a")]).returns(Ok(BTreeMap::from([(key("a"), late.clone())]))),
        Call::leases(vec![key("a")]).returns(Ok(BTreeMap::from([(key("a"), late.clone())]))),
    ]);
    let script = store.handle();
    let manager = Manager::start(config(store, &clock)).unwrap();
    let token = manager.token(NS, MODEL, "a", "h1").unwrap();
    manager
        .claimer(NS, MODEL)
        .unwrap()
        .claim("a", request)
        .await
        .unwrap();
    clock.advance(secs(10) - ms(1));
    assert_eq!(token.check_now(), Some(Generation(3)));
    // Through the store, inside the window: held.
    assert_eq!(token.check_store().await.unwrap(), Generation(3));
    clock.advance(ms(1));
    assert_eq!(clock.now(), start.saturating_add(secs(10)));
    assert_eq!(token.check_now(), None);
    // Past call start + duration the store still says h1 holds it; the check does not.
    let err = lease_core::Token::check(&token).await.unwrap_err();
    assert!(err.is_not_held(), "{err}");
    script.finish();
}

/// A claim that timed out may have taken effect: if a later read shows its holder holding the
/// lease, a check says "held" until the claim call's start + duration, not until the (late)
/// expiry the store reports.
#[tokio::test]
async fn a_claim_that_timed_out_bounds_checks_by_its_call_start() {
    let clock = FakeClock::new();
    let request = req("h1", secs(10));
    let late = info("h1", &clock, secs(15), 3);
    let store = ScriptedStore::new(vec![
        Call::apply(vec![Op::Claim {
            key: key("a"),
            request: request.clone(),
        }])
        .returns(vec![Err(Error::Timeout)]),
        Call::leases(vec![key("a")]).returns(Ok(BTreeMap::from([(key("a"), late.clone())]))),
        Call::leases(vec![key("a")]).returns(Ok(BTreeMap::from([(key("a"), late.clone())]))),
    ]);
    let script = store.handle();
    let manager = Manager::start(
        config(store, &clock).with_retry(lease_manager::RetryPolicy {
            attempts: 1,
            ..lease_manager::RetryPolicy::default()
        }),
    )
    .unwrap();
    let err = manager
        .claimer(NS, MODEL)
        .unwrap()
        .claim("a", request)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let token = manager.token(NS, MODEL, "a", "h1").unwrap();
    clock.advance(secs(9));
    // The write happened after the call started: held inside that window.
    assert_eq!(token.check_store().await.unwrap(), Generation(3));
    assert_eq!(
        token.check_now(),
        None,
        "no window to vouch for from memory"
    );
    clock.advance(secs(1));
    let err = lease_core::Token::check(&token).await.unwrap_err();
    assert!(err.is_not_held(), "{err}");
    script.finish();
}
