//! Unit tests of [`FaultyStore`](super::FaultyStore).

use super::*;
use futures::FutureExt;

use crate::{FakeClock, InMemoryStore};

fn key(lease: &str) -> Key {
    Key::new("ns", "model", lease)
}

fn req(holder: &str) -> Request {
    Request::new(holder, Duration::from_secs(10))
}

fn only(rates: FaultRates) -> (FakeClock, InMemoryStore, FaultyStore<InMemoryStore>) {
    let clock = FakeClock::new();
    let model = InMemoryStore::new(clock.as_clock());
    let store = FaultyStore::new(model.sibling(), clock.as_clock(), 1).with_rates(rates);
    (clock, model, store)
}

#[tokio::test]
async fn no_rates_pass_everything_through() {
    let (_clock, mut model, mut store) = only(FaultRates::NONE);
    store.claim_lease(&key("a"), &req("h")).await.unwrap();
    store.extend_lease(&key("a"), &req("h")).await.unwrap();
    store.pin_lease(&key("a"), "e").await.unwrap();
    assert_eq!(store.pinned().await.unwrap().len(), 1);
    store.unpin_lease(&key("a"), "e").await.unwrap();
    assert_eq!(store.leases(&[]).await.unwrap().len(), 1);
    assert_eq!(store.lease_group("ns", "model").await.unwrap().len(), 1);
    store.revoke_lease(&key("a"), "h").await.unwrap();
    assert!(model.leases(&[]).await.unwrap().is_empty());
    let counts = store.handle().counts();
    assert_eq!(counts.calls, 8);
    assert_eq!(counts.failures(), 0);
    assert_eq!(counts.delays, 0);
}

#[tokio::test]
async fn faults_before_leave_the_inner_store_alone() {
    for (rates, check) in [
        (
            FaultRates {
                timeout_before: 1.0,
                ..FaultRates::NONE
            },
            Error::is_timeout as fn(&Error) -> bool,
        ),
        (
            FaultRates {
                invalid: 1.0,
                ..FaultRates::NONE
            },
            Error::is_invalid,
        ),
        (
            FaultRates {
                store_error: 1.0,
                ..FaultRates::NONE
            },
            |e: &Error| e.kind() == lease_core::ErrorKind::Store,
        ),
    ] {
        let (_clock, mut model, mut store) = only(rates);
        let err = store.claim_lease(&key("a"), &req("h")).await.unwrap_err();
        assert!(check(&err), "{err}");
        let results = store
            .apply(vec![Op::Claim {
                key: key("b"),
                request: req("h"),
            }])
            .await;
        assert!(check(results[0].as_ref().unwrap_err()));
        assert!(model.leases(&[]).await.unwrap().is_empty(), "{rates:?}");
    }
}

#[tokio::test]
async fn hard_errors_say_the_message_set() {
    let (_clock, mut model, store) = only(FaultRates {
        store_error: 1.0,
        ..FaultRates::NONE
    });
    let mut store = store.with_store_error_message("disk on fire");
    let err = store.claim_lease(&key("a"), &req("h")).await.unwrap_err();
    assert_eq!(err.to_string(), "disk on fire");
    let batch = store
        .apply(vec![Op::Revoke {
            key: key("a"),
            holder: "h".into(),
        }])
        .await;
    let [Err(err)] = batch.as_slice() else {
        panic!("{batch:?}")
    };
    assert_eq!(err.to_string(), "disk on fire");
    assert!(model.leases(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_timeout_after_the_fact_applies_the_write() {
    let (_clock, mut model, mut store) = only(FaultRates {
        timeout_after: 1.0,
        ..FaultRates::NONE
    });
    let handle = store.handle();
    assert!(
        store
            .claim_lease(&key("a"), &req("h"))
            .await
            .unwrap_err()
            .is_timeout()
    );
    let results = store
        .apply(vec![
            Op::Claim {
                key: key("b"),
                request: req("h"),
            },
            Op::Revoke {
                key: key("a"),
                holder: "h".into(),
            },
        ])
        .await;
    assert!(results.iter().all(|r| r.as_ref().unwrap_err().is_timeout()));
    let leases = model.leases(&[]).await.unwrap();
    assert_eq!(leases.keys().cloned().collect::<Vec<_>>(), vec![key("b")]);
    // Reads are never "after": they time out without reaching the store.
    assert!(store.leases(&[]).await.unwrap_err().is_timeout());
    let counts = handle.counts();
    // Two single calls, one batch roll and two op rolls... of which the batch roll is also
    // "after", and the read is counted as a timeout before.
    assert_eq!(counts.timeouts_after, 4);
    assert_eq!(counts.timeouts_before, 1);
}

#[tokio::test]
async fn per_kind_rates_override_the_default_and_can_be_switched_off() {
    let clock = FakeClock::new();
    let model = InMemoryStore::new(clock.as_clock());
    let mut store = FaultyStore::new(model.sibling(), clock.as_clock(), 3)
        .with_rates(FaultRates::uniform(1.0))
        .with_rates_for(OpKind::Claim, FaultRates::NONE);
    assert_eq!(store.rates_for(OpKind::Claim), FaultRates::NONE);
    store.claim_lease(&key("a"), &req("h")).await.unwrap();
    assert!(store.extend_lease(&key("a"), &req("h")).await.is_err());
    let handle = store.handle();
    handle.set_enabled(false);
    assert!(!handle.is_enabled());
    store.extend_lease(&key("a"), &req("h")).await.unwrap();
    handle.set_enabled(true);
    assert!(store.leases(&[]).await.is_err());
}

#[tokio::test]
async fn rates_are_honoured_and_rolls_reproduce_from_the_seed() {
    async fn run(seed: u64) -> (Vec<bool>, FaultCounts) {
        let clock = FakeClock::new();
        let model = InMemoryStore::new(clock.as_clock());
        let mut store =
            FaultyStore::new(model, clock.as_clock(), seed).with_rates(FaultRates::uniform(0.4));
        let mut outcomes = Vec::new();
        for _ in 0..2000 {
            outcomes.push(store.leases(&[]).await.is_ok());
        }
        (outcomes, store.handle().counts())
    }
    let (a, counts) = run(42).await;
    let (b, _) = run(42).await;
    let (c, _) = run(43).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    let failed = a.iter().filter(|ok| !**ok).count();
    // 40 % of 2000, give or take: far outside this would mean the rates are wrong.
    assert!((650..950).contains(&failed), "{failed} failures");
    assert_eq!(counts.failures() as usize, failed);
    assert!(
        counts.invalid > 100 && counts.store_errors > 100,
        "{counts:?}"
    );
}

#[tokio::test]
async fn latency_sleeps_on_the_injected_clock() {
    let clock = FakeClock::new();
    let model = InMemoryStore::new(clock.as_clock());
    let mut store = FaultyStore::new(model, clock.as_clock(), 9)
        .with_rates(FaultRates::NONE.with_latency(1.0))
        .with_max_latency(Duration::from_secs(1));
    let handle = store.handle();
    let task = tokio::spawn(async move {
        let mut n = 0;
        for _ in 0..5 {
            store.leases(&[]).await.unwrap();
            n += 1;
        }
        n
    });
    let mut advanced = Duration::ZERO;
    while !task.is_finished() {
        tokio::task::yield_now().await;
        if clock.sleepers() > 0 {
            clock.advance(Duration::from_millis(100));
            advanced += Duration::from_millis(100);
        }
        assert!(advanced < Duration::from_secs(10), "delays are bounded");
    }
    assert_eq!(task.await.unwrap(), 5);
    assert_eq!(handle.counts().delays, 5);
    assert!(
        advanced > Duration::ZERO,
        "at least one delay needed the clock"
    );
}

#[test]
fn write_kinds() {
    assert!(OpKind::Claim.is_write() && OpKind::Batch.is_write() && OpKind::Pin.is_write());
    assert!(!OpKind::Read.is_write() && !OpKind::Poll.is_write() && !OpKind::Pinned.is_write());
    let rates = FaultRates::timeouts(0.5);
    assert_eq!(rates.timeout_before, 0.25);
    assert_eq!(rates.timeout_after, 0.25);
    assert_eq!(FaultRates::uniform(0.4).with_latency(0.5).latency, 0.5);
}

#[tokio::test]
async fn planned_faults_hit_the_next_ops_in_order_whatever_their_kind() {
    // No rates at all: only the plan fails anything.
    let (_clock, mut model, mut store) = only(FaultRates::NONE);
    let faults = store.handle();
    faults.plan_ops([None, Some(Fault::Invalid), Some(Fault::TimeoutAfter)]);
    let results = store
        .apply(vec![
            Op::Claim {
                key: key("a"),
                request: req("h"),
            },
            Op::Extend {
                key: key("a"),
                request: req("h"),
            },
        ])
        .await;
    assert!(results[0].is_ok(), "{results:?}");
    assert!(results[1].as_ref().unwrap_err().is_invalid(), "{results:?}");
    // The third planned fault falls on the next op, a single revoke: it takes effect, then
    // times out.
    let err = store.revoke_lease(&key("a"), "h").await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        model.leases(&[]).await.unwrap().is_empty(),
        "the revoke took effect"
    );
    // The plan is used up: the next op passes.
    store.claim_lease(&key("b"), &req("h")).await.unwrap();
    let counts = faults.counts();
    assert_eq!((counts.invalid, counts.timeouts_after), (1, 1));
}

#[tokio::test]
async fn planned_reads_fail_even_with_rolls_switched_off() {
    let (_clock, _model, mut store) = only(FaultRates::uniform(1.0));
    let faults = store.handle();
    faults.set_enabled(false);
    faults.plan_reads([Some(Fault::TimeoutAfter), None]);
    // A timeout "after" a read is one before it: a read changes nothing.
    assert!(store.leases(&[]).await.unwrap_err().is_timeout());
    store.lease_group("ns", "model").await.unwrap();
    store.leases(&[]).await.unwrap();
    let counts = faults.counts();
    assert_eq!((counts.timeouts_before, counts.timeouts_after), (1, 0));
    // Planned reads do not touch the writes' plan.
    store.claim_lease(&key("a"), &req("h")).await.unwrap();
}

#[tokio::test]
async fn held_batches_wait_for_a_release() {
    let (_clock, mut model, store) = only(FaultRates::NONE);
    let mut store = store.with_held_batches();
    let faults = store.handle();
    let claim = vec![Op::Claim {
        key: key("a"),
        request: req("h"),
    }];
    let mut held = Box::pin(store.apply(claim));
    for _ in 0..10 {
        assert!(
            held.as_mut().now_or_never().is_none(),
            "held until released"
        );
        tokio::task::yield_now().await;
    }
    assert!(
        model.leases(&[]).await.unwrap().is_empty(),
        "nothing applied yet"
    );
    faults.release_batches(1);
    let results = held.await;
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(model.leases(&[]).await.unwrap().len(), 1);
}

#[test]
fn the_change_notifier_can_be_hidden() {
    let (_clock, _model, mut store) = only(FaultRates::NONE);
    assert!(
        store.change_notifier().is_some(),
        "the inner store's, by default"
    );
    let mut store = store.without_change_notifier();
    assert!(store.change_notifier().is_none());
}
