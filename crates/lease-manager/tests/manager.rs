//! The manager's behaviour on the fake clock: claims, extends, denials, retries and backoff,
//! group commit, waiting for expiry, revokes, pins, isolation, checks, failures and shutdown,
//! with the exact store calls each makes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use lease_core::{
    CancellationToken, DefaultSecretary, Error, Facades as _, Generation, Store as _, Token as _,
};
use lease_manager::{Jitter, Manager, ManagerConfig, ManagerError, RetryPolicy};
use lease_testkit::{FakeClock, InMemoryStore};

fn count(log: &[String], prefix: &str) -> usize {
    log.iter().filter(|l| l.starts_with(prefix)).count()
}

#[tokio::test]
async fn claim_then_extend_with_exact_store_calls() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();

    let info = claimer.claim("a", req("h1", secs(10))).await.unwrap();
    assert_eq!(info.holder, "h1");
    assert_eq!(info.expiry, clock.now().saturating_add(secs(10)));
    clock.advance(secs(4));
    let again = claimer.claim("a", req("h1", secs(10))).await.unwrap();
    assert_eq!(
        again.generation, info.generation,
        "an extend keeps the generation"
    );
    assert_eq!(again.expiry, clock.now().saturating_add(secs(10)));
    assert_eq!(store.log(), ["apply [claim a h1]", "apply [extend a h1]"]);

    let report = manager.report();
    assert_eq!((report.claims, report.extends, report.denials), (1, 1, 0));
    assert_eq!(report.batches, 2);
    assert_eq!(report.store_calls, 2);
    assert_eq!(report.outstanding, 0);
}

#[tokio::test]
async fn a_claim_on_a_validly_held_lease_is_denied_without_a_store_call() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    store.clear_log();

    let err = claimer.claim("a", req("h2", secs(10))).await.unwrap_err();
    assert!(err.is_claim_denied(), "{err}");
    assert!(store.log().is_empty(), "{:?}", store.log());
    assert_eq!(manager.report().denials, 1);

    // Once the lease has expired, the view no longer denies: the claim goes to the store.
    clock.advance(secs(10));
    let info = claimer.claim("a", req("h2", secs(10))).await.unwrap();
    assert_eq!(info.holder, "h2");
    assert_eq!(store.log(), ["apply [claim a h2]"]);
}

#[tokio::test]
async fn held_in_the_store_is_denied_at_once_without_retry() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    // Another process holds the lease; this manager has never seen it.
    store
        .sibling()
        .await
        .claim_lease(
            &lease_core::Key::new(NS, MODEL, "a"),
            &req("other", secs(10)),
        )
        .await
        .unwrap();
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let err = claimer.claim("a", req("h1", secs(10))).await.unwrap_err();
    assert!(err.is_claim_denied(), "{err}");
    assert_eq!(store.log(), ["apply [claim a h1]"]);
    assert_eq!(manager.report().retries, 0);
}

#[tokio::test]
async fn validation_happens_before_any_store_call() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();

    let err = claimer
        .claim("bad name", req("h1", secs(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Validation { field: "lease", .. }),
        "{err}"
    );
    let err = claimer.claim("a", req("h#1", secs(1))).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Validation {
                field: "holder",
                ..
            }
        ),
        "{err}"
    );
    let err = claimer
        .claim("a", req("h1", Duration::ZERO))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Validation {
                field: "duration",
                ..
            }
        ),
        "{err}"
    );
    let revoker = manager.revoker(NS, MODEL).unwrap();
    let err = revoker.revoke("a.b", "h1").await.unwrap_err();
    assert!(err.is_validation());
    let pinner = manager.pinner(NS, MODEL).unwrap();
    let err = pinner.pin("a", "").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Validation {
                field: "entity",
                ..
            }
        ),
        "{err}"
    );
    let err = manager.claimer(NS, "bad model").err().unwrap();
    assert!(
        matches!(err, Error::Validation { field: "model", .. }),
        "{err}"
    );
    assert!(store.log().is_empty(), "{:?}", store.log());
}

#[tokio::test]
async fn a_namespace_without_a_secretary_is_refused() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let config = ManagerConfig::new(store.take_store(), clock.as_clock())
        .with_secretaries(lease_core::standard_secretaries("ctrl"));
    let manager = Manager::start(config).unwrap();
    let err = manager.claimer("nope", MODEL).err().unwrap();
    assert!(
        matches!(&err, Error::Validation { field: "namespace", value, .. } if value == "nope"),
        "{err}"
    );
    // The leadership secretary's own rules apply before the store.
    let claimer = manager
        .claimer(lease_core::APPLICATION_LEADERSHIP_NAMESPACE, MODEL)
        .unwrap();
    let err = claimer
        .claim("mysql", req("not-a-unit", secs(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Validation {
                field: "holder",
                ..
            }
        ),
        "{err}"
    );
    claimer
        .claim("mysql", req("mysql/0", secs(1)))
        .await
        .unwrap();
    assert_eq!(store.log(), ["apply [claim mysql mysql/0]"]);
}

#[tokio::test]
async fn config_errors_name_the_field() {
    let clock = FakeClock::new();
    let cases: Vec<(ManagerConfig, &str)> = vec![
        (
            config(ScriptStore::new(&clock).take_store(), &clock).with_max_sleep(Duration::ZERO),
            "max_sleep",
        ),
        (
            config(ScriptStore::new(&clock).take_store(), &clock)
                .with_refresh_interval(Duration::ZERO),
            "refresh_interval",
        ),
        (
            config(ScriptStore::new(&clock).take_store(), &clock)
                .with_max_sleep(secs(1))
                .with_refresh_interval(secs(2)),
            "refresh_interval",
        ),
        (
            config(ScriptStore::new(&clock).take_store(), &clock).with_retry(RetryPolicy {
                attempts: 0,
                ..RetryPolicy::default()
            }),
            "retry.attempts",
        ),
        (
            config(ScriptStore::new(&clock).take_store(), &clock).with_max_batch(0),
            "max_batch",
        ),
        (
            config(ScriptStore::new(&clock).take_store(), &clock).with_channel_capacity(0),
            "channel_capacity",
        ),
        (
            config(ScriptStore::new(&clock).take_store(), &clock)
                .with_secretary("bad ns", Arc::new(DefaultSecretary)),
            "secretaries",
        ),
    ];
    for (config, field) in cases {
        match Manager::start(config) {
            Err(ManagerError::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let clock = FakeClock::new();
    let err = Manager::start(config(ScriptStore::new(&clock).take_store(), &clock)).unwrap_err();
    assert_eq!(err, ManagerError::NoRuntime);
}

#[tokio::test]
async fn timeouts_are_retried_with_exact_backoff_on_timers() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    store.fail_ops([
        Some(Fail::Timeout),
        Some(Fail::Timeout),
        Some(Fail::Timeout),
    ]);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let task = tokio::spawn(async move { claimer.claim("a", req("h1", secs(10))).await });

    // Retry n waits 50 ms × 1.6^(n-1): 50, 80, 128 ms, each after a re-read of the key.
    for (n, delay) in [ms(50), ms(80), ms(128)].into_iter().enumerate() {
        let n = n as u64 + 1;
        until("the retry is scheduled", || manager.report().retries == n).await;
        clock.wait_for_sleepers(1).await;
        assert_eq!(store.applies(), n as usize);
        clock.advance(delay - Duration::from_nanos(1));
        settle().await;
        assert_eq!(store.applies(), n as usize, "retry {n} came early");
        clock.advance(Duration::from_nanos(1));
        until("the retry runs", || store.applies() == n as usize + 1).await;
    }
    let info = task.await.unwrap().unwrap();
    assert_eq!(info.holder, "h1");
    assert_eq!(
        store.log(),
        [
            "apply [claim a h1]",
            "leases [a]",
            "apply [claim a h1]",
            "leases [a]",
            "apply [claim a h1]",
            "leases [a]",
            "apply [claim a h1]",
        ]
    );
    let report = manager.report();
    assert_eq!((report.retries, report.claims, report.timeouts), (3, 1, 0));
}

async fn exhaust(fail: Fail) -> (Error, Vec<String>, lease_manager::Report) {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    store.fail_ops([Some(fail); 3]);
    let config = config(store.take_store(), &clock).with_retry(RetryPolicy {
        attempts: 3,
        jitter: Jitter::None,
        ..RetryPolicy::default()
    });
    let manager = Manager::start(config).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let task = tokio::spawn(async move { claimer.claim("a", req("h1", secs(10))).await });
    for n in 1..=2u64 {
        until("the retry is scheduled", || manager.report().retries == n).await;
        clock.wait_for_sleepers(1).await;
        clock.advance(secs(1));
    }
    let err = task.await.unwrap().unwrap_err();
    (err, store.log(), manager.report())
}

#[tokio::test]
async fn after_the_last_attempt_timeout_stays_timeout() {
    let (err, log, report) = exhaust(Fail::Timeout).await;
    assert!(err.is_timeout(), "{err}");
    assert_eq!(count(&log, "apply"), 3);
    assert_eq!(
        count(&log, "leases"),
        2,
        "no re-read after the last attempt"
    );
    assert_eq!((report.retries, report.timeouts), (2, 1));
}

#[tokio::test]
async fn after_the_last_attempt_invalid_becomes_claim_denied() {
    let (err, log, report) = exhaust(Fail::Invalid).await;
    assert!(err.is_claim_denied(), "{err}");
    assert_eq!(count(&log, "apply"), 3);
    assert_eq!((report.retries, report.denials), (2, 1));
}

#[tokio::test]
async fn invalid_rereads_and_the_retry_is_decided_from_the_fresh_view() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    // The claim fails Invalid; meanwhile another process took the lease.
    store.fail_ops([Some(Fail::Invalid)]);
    store
        .sibling()
        .await
        .claim_lease(
            &lease_core::Key::new(NS, MODEL, "a"),
            &req("other", secs(60)),
        )
        .await
        .unwrap();
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let task = tokio::spawn(async move { claimer.claim("a", req("h1", secs(10))).await });
    until("the retry is scheduled", || manager.report().retries == 1).await;
    clock.wait_for_sleepers(1).await;
    clock.advance(ms(50));
    let err = task.await.unwrap().unwrap_err();
    assert!(err.is_claim_denied(), "{err}");
    // The retry was denied from the re-read view: no second apply.
    assert_eq!(store.log(), ["apply [claim a h1]", "leases [a]"]);
}

#[tokio::test]
async fn full_jitter_is_seeded_and_within_the_backoff() {
    async fn first_delay(seed: u64) -> Duration {
        let clock = FakeClock::new();
        let store = ScriptStore::new(&clock);
        store.fail_ops([Some(Fail::Timeout)]);
        let config = config(store.take_store(), &clock)
            .with_retry(RetryPolicy::default())
            .with_rng_seed(seed);
        let manager = Manager::start(config).unwrap();
        let claimer = manager.claimer(NS, MODEL).unwrap();
        let start = clock.now();
        let task = tokio::spawn(async move { claimer.claim("a", req("h1", secs(10))).await });
        until("the retry is scheduled", || manager.report().retries == 1).await;
        // Step one millisecond at a time until the retry happens.
        while store.applies() < 2 {
            clock.wait_for_sleepers(1).await;
            clock.advance(ms(1));
            settle().await;
        }
        task.await.unwrap().unwrap();
        clock.now().saturating_duration_since(start)
    }
    let a = first_delay(7).await;
    let b = first_delay(7).await;
    assert_eq!(a, b, "same seed, same delay");
    assert!(a <= ms(51), "{a:?}");
}

#[tokio::test]
async fn queued_requests_go_to_the_store_as_one_batch() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    // All five send before the worker runs (current-thread runtime, spawned in order).
    let tasks: Vec<_> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(|lease| {
            let claimer = Arc::clone(&claimer);
            tokio::spawn(async move { claimer.claim(lease, req("h1", secs(10))).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        store.log(),
        ["apply [claim a h1, claim b h1, claim c h1, claim d h1, claim e h1]"]
    );
    let report = manager.report();
    assert_eq!(
        (report.batches, report.batched_ops, report.claims),
        (1, 5, 5)
    );
}

#[tokio::test]
async fn two_requests_for_one_key_in_a_batch_are_decided_in_turn() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let c1 = Arc::clone(&claimer);
    let t1 = tokio::spawn(async move { c1.claim("a", req("h1", secs(10))).await });
    let c2 = Arc::clone(&claimer);
    let t2 = tokio::spawn(async move { c2.claim("a", req("h2", secs(10))).await });
    let c3 = Arc::clone(&claimer);
    let t3 = tokio::spawn(async move { c3.claim("a", req("h1", secs(20))).await });
    assert_eq!(t1.await.unwrap().unwrap().holder, "h1");
    assert!(t2.await.unwrap().unwrap_err().is_claim_denied());
    t3.await.unwrap().unwrap();
    // The second and third were decided from what the first left: a denial and an extend.
    assert_eq!(store.log(), ["apply [claim a h1]", "apply [extend a h1]"]);
}

#[tokio::test]
async fn a_waiter_wakes_at_the_expiry_instant_not_a_nanosecond_before() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    let expiry = clock.now().saturating_add(secs(10));

    let w = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || manager.report().waiters == 1).await;
    clock.wait_for_sleepers(1).await;
    clock.set(expiry.saturating_sub(Duration::from_nanos(1)));
    settle().await;
    assert!(!waiter.is_finished(), "woken before expiry");
    clock.wait_for_sleepers(1).await;
    clock.set(expiry);
    waiter.await.unwrap().unwrap();
    assert_eq!(clock.now(), expiry);
    assert_eq!(manager.report().waiters, 0);
    // Registered from the view (no read); confirmed with one read at expiry.
    assert_eq!(store.log(), ["apply [claim a h1]", "leases [a]"]);
}

#[tokio::test]
async fn an_extend_moves_the_waiters_deadline() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    let w = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || manager.report().waiters == 1).await;
    clock.advance(secs(5));
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    let expiry = clock.now().saturating_add(secs(10));
    clock.wait_for_sleepers(1).await;
    clock.set(expiry.saturating_sub(Duration::from_nanos(1)));
    settle().await;
    assert!(!waiter.is_finished());
    clock.wait_for_sleepers(1).await;
    clock.set(expiry);
    waiter.await.unwrap().unwrap();
}

#[tokio::test]
async fn waiting_on_an_absent_lease_returns_at_once() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    claimer
        .wait_until_expired("nothing", &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(store.log(), ["leases [nothing]"]);
}

#[tokio::test]
async fn a_revoke_through_the_manager_wakes_waiters_at_once() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let revoker = manager.revoker(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    let w = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || manager.report().waiters == 1).await;
    let before = clock.now();
    revoker.revoke("a", "h1").await.unwrap();
    waiter.await.unwrap().unwrap();
    assert_eq!(clock.now(), before, "no time passed");
    assert_eq!(store.log(), ["apply [claim a h1]", "apply [revoke a h1]"]);
    // Revoking again: the holder no longer holds it.
    assert!(revoker.revoke("a", "h1").await.unwrap_err().is_not_held());
    assert_eq!(manager.report().revokes, 1);
}

#[tokio::test]
async fn a_cancelled_wait_gives_wait_cancelled() {
    let clock = FakeClock::new();
    let manager = start(ScriptStore::new(&clock).take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    let cancel = CancellationToken::new();
    let (w, c) = (Arc::clone(&claimer), cancel.clone());
    let waiter = tokio::spawn(async move { w.wait_until_expired("a", &c).await });
    until("the waiter is registered", || manager.report().waiters == 1).await;
    cancel.cancel();
    assert!(waiter.await.unwrap().unwrap_err().is_wait_cancelled());
    // An already-cancelled token returns at once.
    let err = claimer.wait_until_expired("a", &cancel).await.unwrap_err();
    assert!(err.is_wait_cancelled());
}

#[tokio::test]
async fn namespaces_and_models_are_isolated() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let m1 = manager.claimer("ns1", "m1").unwrap();
    let m2 = manager.claimer("ns1", "m2").unwrap();
    let n2 = manager.claimer("ns2", "m1").unwrap();
    m1.claim("a", req("h1", secs(10))).await.unwrap();
    m2.claim("a", req("h2", secs(10))).await.unwrap();
    n2.claim("a", req("h3", secs(10))).await.unwrap();
    assert!(
        m1.claim("a", req("h2", secs(10)))
            .await
            .unwrap_err()
            .is_claim_denied()
    );

    let leases = manager.reader("ns1", "m2").unwrap().leases().await.unwrap();
    assert_eq!(
        leases.into_iter().collect::<Vec<_>>(),
        [("a".to_owned(), "h2".to_owned())]
    );
    let token = manager.checker("ns2", "m1").unwrap().token("a", "h1");
    assert!(token.check().await.unwrap_err().is_not_held());
    let token = manager.checker("ns2", "m1").unwrap().token("a", "h3");
    token.check().await.unwrap();

    // Revoking in one model leaves the others.
    manager
        .revoker("ns1", "m1")
        .unwrap()
        .revoke("a", "h1")
        .await
        .unwrap();
    assert!(
        m2.claim("a", req("h1", secs(10)))
            .await
            .unwrap_err()
            .is_claim_denied()
    );
    m1.claim("a", req("h9", secs(10))).await.unwrap();
}

#[tokio::test]
async fn a_pinned_lease_keeps_its_waiters_until_unpinned_and_expired() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let pinner = manager.pinner(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    pinner.pin("a", "e1").await.unwrap();
    let pinned = pinner.pinned().await.unwrap();
    assert_eq!(pinned.get("a"), Some(&vec!["e1".to_owned()]));

    let w = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || manager.report().waiters == 1).await;
    clock.wait_for_sleepers(1).await;
    clock.advance(secs(60));
    settle().await;
    assert!(!waiter.is_finished(), "a pinned lease does not expire");
    // Still held: another holder is denied.
    assert!(
        claimer
            .claim("a", req("h2", secs(1)))
            .await
            .unwrap_err()
            .is_claim_denied()
    );

    // Unpinning an expired lease: it is gone at once.
    pinner.unpin("a", "e1").await.unwrap();
    waiter.await.unwrap().unwrap();
    claimer.claim("a", req("h2", secs(10))).await.unwrap();
}

#[tokio::test]
async fn unpinning_before_expiry_reschedules_the_waiters_for_expiry() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let pinner = manager.pinner(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    let expiry = clock.now().saturating_add(secs(10));
    pinner.pin("a", "e1").await.unwrap();
    let w = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || manager.report().waiters == 1).await;
    clock.advance(secs(5));
    pinner.unpin("a", "e1").await.unwrap();
    assert!(
        store
            .log()
            .ends_with(&["unpin a e1".to_owned(), "leases [a]".to_owned()])
    );
    clock.wait_for_sleepers(1).await;
    clock.set(expiry.saturating_sub(Duration::from_nanos(1)));
    settle().await;
    assert!(!waiter.is_finished());
    clock.wait_for_sleepers(1).await;
    clock.set(expiry);
    waiter.await.unwrap().unwrap();
}

/// The read after an unpin fails: the waiters of the (no longer pinned) lease must not be
/// stranded without an expiry timer; the worker reads it again a refresh interval later.
#[tokio::test]
async fn a_failed_read_after_unpinning_does_not_strand_the_waiters() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager =
        Manager::start(config(store.take_store(), &clock).with_refresh_interval(ms(100))).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let pinner = manager.pinner(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    let expiry = clock.now().saturating_add(secs(10));
    pinner.pin("a", "e1").await.unwrap();
    let w = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || manager.report().waiters == 1).await;
    store.fail_reads([Some(Fail::Timeout)]);
    pinner.unpin("a", "e1").await.unwrap();
    assert!(
        store
            .log()
            .ends_with(&["unpin a e1".to_owned(), "leases [a]".to_owned()])
    );
    // Step past the expiry; the waiter wakes there, not a step earlier.
    for _ in 0..300 {
        clock.advance(ms(100));
        settle().await;
        if waiter.is_finished() {
            break;
        }
        assert!(clock.now() < expiry, "the waiter woke late or not at all");
    }
    assert!(clock.now() >= expiry, "the waiter woke before the expiry");
    waiter.await.unwrap().unwrap();
}

/// Another process unpins a waited lease; the refresh's read of it fails. The store reports
/// that change once: the read is owed until it succeeds, so the waiters are not stranded.
#[tokio::test]
async fn a_failed_refresh_read_is_made_again_at_the_next_refresh() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager =
        Manager::start(config(store.take_store(), &clock).with_refresh_interval(ms(100))).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    let expiry = clock.now().saturating_add(secs(10));
    manager
        .pinner(NS, MODEL)
        .unwrap()
        .pin("a", "e1")
        .await
        .unwrap();
    let w = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || manager.report().waiters == 1).await;
    store.fail_reads([Some(Fail::Timeout)]);
    store
        .sibling()
        .await
        .unpin_lease(&lease_core::Key::new(NS, MODEL, "a"), "e1")
        .await
        .unwrap();
    for _ in 0..300 {
        clock.advance(ms(100));
        settle().await;
        if waiter.is_finished() {
            break;
        }
        assert!(clock.now() < expiry, "the waiter woke late or not at all");
    }
    assert!(clock.now() >= expiry, "the waiter woke before the expiry");
    waiter.await.unwrap().unwrap();
}

#[tokio::test]
async fn token_checks_come_from_memory_inside_the_window_and_from_the_store_outside() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let token = manager.token(NS, MODEL, "a", "h1").unwrap();
    assert_eq!(token.check_now(), None, "nothing claimed yet");
    assert!(token.check().await.unwrap_err().is_not_held());
    assert_eq!(store.log(), ["leases [a]"]);
    store.clear_log();

    let info = claimer.claim("a", req("h1", secs(10))).await.unwrap();
    assert_eq!(token.check_now(), Some(info.generation));
    assert_eq!(token.check().await.unwrap(), info.generation);
    let other = manager.token(NS, MODEL, "a", "h2").unwrap();
    assert_eq!(other.check_now(), None);
    assert_eq!(store.log(), ["apply [claim a h1]"], "checks from memory");

    // Through the worker and the store, on request.
    assert_eq!(token.check_store().await.unwrap(), info.generation);
    assert_eq!(store.log().last().unwrap(), "leases [a]");

    // The window ends at the claim's start + duration.
    clock.advance(secs(10) - Duration::from_nanos(1));
    assert_eq!(token.check_now(), Some(info.generation));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(token.check_now(), None);
    store.clear_log();
    assert!(token.check().await.unwrap_err().is_not_held());
    assert_eq!(store.log(), ["leases [a]"]);

    // A new claim has a new generation; a revoke ends the fast path at once.
    let info2 = claimer.claim("a", req("h1", secs(10))).await.unwrap();
    assert!(info2.generation > info.generation);
    assert_eq!(token.check_now(), Some(info2.generation));
    manager
        .revoker(NS, MODEL)
        .unwrap()
        .revoke("a", "h1")
        .await
        .unwrap();
    assert_eq!(token.check_now(), None);
    assert!(token.check().await.unwrap_err().is_not_held());
}

#[tokio::test]
async fn a_token_made_after_the_claim_learns_the_window_on_its_first_check() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let manager = start(store.take_store(), &clock);
    let info = manager
        .claimer(NS, MODEL)
        .unwrap()
        .claim("a", req("h1", secs(10)))
        .await
        .unwrap();
    let checker = manager.checker(NS, MODEL).unwrap();
    let token = manager.token(NS, MODEL, "a", "h1").unwrap();
    assert_eq!(token.check_now(), None);
    // Answered by the worker from its own window, without a store read.
    assert_eq!(
        checker.token("a", "h1").check().await.unwrap(),
        info.generation
    );
    assert_eq!(token.check_now(), Some(info.generation));
    assert_eq!(store.log(), ["apply [claim a h1]"]);
}

#[tokio::test]
async fn a_lease_lost_to_another_process_ends_the_fast_path() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let config = config(store.take_store(), &clock).with_refresh_interval(ms(100));
    let manager = Manager::start(config).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let info = claimer.claim("a", req("h1", secs(1))).await.unwrap();
    let token = manager.token(NS, MODEL, "a", "h1").unwrap();
    token.check().await.unwrap();
    assert_eq!(token.check_now(), Some(info.generation));
    // The window ends; another process takes the lease.
    clock.wait_for_sleepers(1).await;
    clock.advance(secs(1));
    let mut other = store.sibling().await;
    let key = lease_core::Key::new(NS, MODEL, "a");
    other.claim_lease(&key, &req("h2", secs(30))).await.unwrap();
    assert_eq!(token.check_now(), None);
    // Within a refresh interval the manager has re-read it and denies h1 from its view.
    until("the change is noticed", || {
        store.log().iter().filter(|l| *l == "leases [a]").count() >= 1
    })
    .await;
    store.clear_log();
    assert!(
        claimer
            .claim("a", req("h1", secs(1)))
            .await
            .unwrap_err()
            .is_claim_denied()
    );
    assert!(store.log().is_empty());
}

#[tokio::test]
async fn changes_by_another_process_wake_waiters_within_the_refresh_interval() {
    let clock = FakeClock::new();
    let store = InMemoryStore::new(clock.as_clock());
    let mut other = store.sibling();
    let key = lease_core::Key::new(NS, MODEL, "a");
    other
        .claim_lease(&key, &req("other", secs(60)))
        .await
        .unwrap();
    let config = config(store, &clock)
        .with_refresh_interval(ms(100))
        .with_max_sleep(secs(60));
    let manager = Manager::start(config).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let w = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { w.wait_until_expired("a", &CancellationToken::new()).await });
    until("the waiter is registered", || manager.report().waiters == 1).await;
    other.revoke_lease(&key, "other").await.unwrap();
    // The store's change notifier makes it immediate; at the latest, the next refresh.
    for _ in 0..2 {
        if waiter.is_finished() {
            break;
        }
        clock.wait_for_sleepers(1).await;
        clock.advance(ms(100));
        settle().await;
    }
    waiter.await.unwrap().unwrap();
    claimer.claim("a", req("me", secs(10))).await.unwrap();
}

#[tokio::test]
async fn a_failing_store_request_fails_alone() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    store.fail_ops([None, Some(Fail::Broken), None]);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let tasks: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|lease| {
            let claimer = Arc::clone(&claimer);
            tokio::spawn(async move { claimer.claim(lease, req("h1", secs(10))).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert!(results[0].is_ok());
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.kind(), lease_core::ErrorKind::Store);
    assert!(results[2].is_ok());
    // The manager is still up.
    claimer.claim("b", req("h1", secs(10))).await.unwrap();
    let report = manager.report();
    assert_eq!(report.store_errors, 1);
    assert!(report.last_error.unwrap().contains("disk on fire"));
    assert!(!manager.worker_finished());
}

#[tokio::test]
async fn stop_answers_pending_callers_aborted_and_ends_the_worker() {
    let clock = FakeClock::new();
    let store = ScriptStore::gated(&clock);
    let manager =
        Manager::start(config(store.take_store(), &clock).with_shutdown_grace(secs(2))).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    // One claim is stuck in the store, one waiter waits.
    let c = Arc::clone(&claimer);
    let stuck = tokio::spawn(async move { c.claim("a", req("h1", secs(10))).await });
    until("the claim reaches the store", || store.applies() == 1).await;
    let c = Arc::clone(&claimer);
    let queued = tokio::spawn(async move { c.claim("b", req("h1", secs(10))).await });
    let c = Arc::clone(&claimer);
    let waiter =
        tokio::spawn(async move { c.wait_until_expired("z", &CancellationToken::new()).await });
    until("both are queued", || manager.report().outstanding == 3).await;

    let m = manager.clone();
    let stopping = tokio::spawn(async move { m.stop().await });
    // The store call in flight gets the grace period, on the clock.
    clock.wait_for_sleepers(1).await;
    clock.advance(secs(2) - Duration::from_nanos(1));
    settle().await;
    assert!(!stopping.is_finished());
    clock.advance(Duration::from_nanos(1));
    stopping.await.unwrap();
    assert!(manager.worker_finished());
    assert!(stuck.await.unwrap().unwrap_err().is_aborted());
    assert!(queued.await.unwrap().unwrap_err().is_aborted());
    assert!(waiter.await.unwrap().unwrap_err().is_aborted());
    // Later requests, and new facades, are aborted too.
    assert!(
        claimer
            .claim("c", req("h1", secs(1)))
            .await
            .unwrap_err()
            .is_aborted()
    );
    assert!(manager.claimer(NS, MODEL).err().unwrap().is_aborted());
    assert_eq!(manager.report().outstanding, 0);
}

#[tokio::test]
async fn stop_lets_the_store_call_in_flight_finish_within_the_grace() {
    let clock = FakeClock::new();
    let store = ScriptStore::gated(&clock);
    let manager =
        Manager::start(config(store.take_store(), &clock).with_shutdown_grace(secs(2))).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let c = Arc::clone(&claimer);
    let in_flight = tokio::spawn(async move { c.claim("a", req("h1", secs(10))).await });
    until("the claim reaches the store", || store.applies() == 1).await;
    let m = manager.clone();
    let stopping = tokio::spawn(async move { m.stop().await });
    clock.wait_for_sleepers(1).await;
    clock.advance(secs(1));
    store.release(1);
    stopping.await.unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap().holder, "h1");
    assert!(manager.worker_finished());
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_worker() {
    let clock = FakeClock::new();
    let manager = start(ScriptStore::new(&clock).take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    let join = manager.take_worker_handle().unwrap();
    drop(manager);
    settle().await;
    assert!(!join.is_finished(), "a facade is still a handle");
    drop(claimer);
    tokio::time::timeout(Duration::from_secs(10), join)
        .await
        .expect("the worker ends")
        .unwrap();
}

#[tokio::test]
async fn report_counts_outstanding_requests_and_latency() {
    let clock = FakeClock::new();
    let store = ScriptStore::gated(&clock);
    let manager = start(store.take_store(), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let c = Arc::clone(&claimer);
    let task = tokio::spawn(async move { c.claim("a", req("h1", secs(10))).await });
    until("the claim reaches the store", || store.applies() == 1).await;
    assert_eq!(manager.report().outstanding, 1);
    clock.advance(ms(3));
    store.release(1);
    task.await.unwrap().unwrap();
    let report = manager.report();
    assert_eq!(report.outstanding, 0);
    assert_eq!(report.store_calls, 1);
    // The store call took 3 ms on the manager's clock.
    assert!(report.store_latency_p50 >= ms(3) && report.store_latency_p50 <= ms(4));
    assert_eq!(report.store_latency_p99, report.store_latency_p50);
    assert!(report.to_string().contains("claims=1"));
}

#[tokio::test]
async fn the_view_forgets_expired_leases_after_max_sleep() {
    let clock = FakeClock::new();
    let config = config(ScriptStore::new(&clock).take_store(), &clock)
        .with_max_sleep(secs(60))
        .with_refresh_interval(secs(60));
    let manager = Manager::start(config).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    until("the view has it", || manager.report().known_leases == 1).await;
    // Housekeeping runs every max_sleep.
    clock.wait_for_sleepers(1).await;
    clock.advance(secs(60));
    until("the view is empty", || manager.report().known_leases == 0).await;
}

#[tokio::test]
async fn generation_is_returned_by_checks_of_other_processes_leases() {
    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    let key = lease_core::Key::new(NS, MODEL, "a");
    let info = store
        .sibling()
        .await
        .claim_lease(&key, &req("other", secs(10)))
        .await
        .unwrap();
    let manager = start(store.take_store(), &clock);
    let token = manager.checker(NS, MODEL).unwrap().token("a", "other");
    assert_eq!(token.check().await.unwrap(), info.generation);
    assert_ne!(info.generation, Generation(0));
}
