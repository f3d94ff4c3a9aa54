//! The builders on the fake clock and the in-memory store (no real time passes): an election
//! leads, hands over and fences; `run` releases on return and, when renewals stall, cancels the
//! task's token at the renew deadline and aborts the task before the lease could expire; bad
//! settings are errors naming the setting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lease::{Backend, Election, Error, Leaser as _, Leases, PathKey};
use lease_core::{Key, Store as _, Timestamp};
use lease_testkit::{FakeClock, FaultRates, FaultyStore, InMemoryStore};

const LEASE: &str = "controller";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Lets every task react.
async fn settle() {
    for _ in 0..300 {
        tokio::task::yield_now().await;
    }
}

/// Moves the fake clock forward in small steps, letting every task react after each.
async fn run_clock(clock: &FakeClock, total: Duration, until: impl Fn() -> bool) {
    let step = Duration::from_millis(100);
    let mut moved = Duration::ZERO;
    while moved < total && !until() {
        clock.advance(step);
        moved += step;
        settle().await;
    }
}

fn election(store: &InMemoryStore, clock: &FakeClock, identity: &str) -> Election {
    Election::new(Backend::custom(store.sibling(), clock.as_clock()), LEASE).identity(identity)
}

async fn holder(store: &InMemoryStore) -> Option<lease_core::Info> {
    let key = Key::new("default", "default", LEASE);
    let mut probe = store.sibling();
    probe
        .leases(std::slice::from_ref(&key))
        .await
        .unwrap()
        .remove(&key)
}

#[tokio::test(flavor = "current_thread")]
async fn an_election_leads_hands_over_and_fences() {
    let clock = FakeClock::new();
    let store = InMemoryStore::new(clock.as_clock());
    let a = election(&store, &clock, "pod-a").start().unwrap();
    let b = election(&store, &clock, "pod-b").start().unwrap();
    assert_eq!(a.identity(), "pod-a");

    let term_a = a.lead().await.unwrap();
    assert!(term_a.is_leading() && a.is_leader());
    assert_eq!(holder(&store).await.unwrap().holder, "pod-a");
    // Defaults are client-go's.
    let config = a.elector().config();
    assert_eq!(
        (
            config.lease_duration,
            config.renew_deadline,
            config.retry_period
        ),
        (secs(15), secs(10), secs(2))
    );
    let health = term_a.health_check();
    health.check().unwrap();
    assert!(health.is_leading());

    let b_leads = tokio::spawn(async move {
        let term = b.lead().await;
        (b, term)
    });
    settle().await;
    assert!(!b_leads.is_finished(), "b must wait while a leads");
    let generation_a = term_a.generation();
    assert!(term_a.release().await);
    let (b, term_b) = b_leads.await.unwrap();
    let term_b = term_b.unwrap();
    assert!(term_b.generation() > generation_a);
    assert!(!health.is_leading());
    assert_eq!(holder(&store).await.unwrap().holder, "pod-b");
    drop(term_b);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn run_returns_the_task_result_and_releases_the_lease() {
    let clock = FakeClock::new();
    let store = InMemoryStore::new(clock.as_clock());
    let a = election(&store, &clock, "pod-a").start().unwrap();
    let seen = a
        .run(|held| async move { (held.generation(), held.token().is_cancelled()) })
        .await
        .unwrap();
    assert!(!seen.1, "the token is live while the task runs");
    assert!(seen.0.get() >= 1);
    // Released at once, not left to expire: another candidate leads without time passing.
    assert!(holder(&store).await.is_none());
    let b = election(&store, &clock, "pod-b").start().unwrap();
    let term = b.lead().await.unwrap();
    assert!(term.generation() > seen.0);
    drop(term);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_panicking_task_is_an_error_and_the_lease_is_released() {
    let clock = FakeClock::new();
    let store = InMemoryStore::new(clock.as_clock());
    let a = election(&store, &clock, "pod-a").start().unwrap();
    let err = a
        .run(|_| async move {
            if true {
                panic!("task failed");
            }
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Panicked { .. }), "{err:?}");
    assert!(holder(&store).await.is_none());
    a.shutdown().await;
}

/// Renewals stall (every store call times out) while a task that ignores its token runs: the
/// token is cancelled at the renew deadline, and the task is aborted before the end of the
/// window counted from the last successful renewal's start, so it never overlaps the next
/// holder.
#[tokio::test(flavor = "current_thread")]
async fn run_stops_a_task_that_ignores_its_token_before_the_lease_can_expire() {
    let clock = FakeClock::new();
    let backing = InMemoryStore::new(clock.as_clock());
    let faulty = FaultyStore::new(backing.sibling(), clock.as_clock(), 7)
        .with_rates(FaultRates::timeouts(1.0));
    let faults = faulty.handle();
    faults.set_enabled(false);
    let a = Election::new(Backend::custom(faulty, clock.as_clock()), LEASE)
        .identity("pod-a")
        .start()
        .unwrap();

    struct Dropped(Arc<Mutex<Option<Timestamp>>>, FakeClock);
    impl Drop for Dropped {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(self.1.now());
        }
    }
    let ended = Arc::new(Mutex::new(None));
    let cancelled_at = Arc::new(Mutex::new(None));
    let started = Arc::new(AtomicBool::new(false));
    let run = {
        let (ended, cancelled_at, started, clock) = (
            ended.clone(),
            cancelled_at.clone(),
            started.clone(),
            clock.clone(),
        );
        async move {
            a.run(move |held| async move {
                let _guard = Dropped(ended, clock.clone());
                started.store(true, Ordering::SeqCst);
                held.token().cancelled().await;
                *cancelled_at.lock().unwrap() = Some(clock.now());
                // Ignores the token: works on forever.
                std::future::pending::<()>().await;
            })
            .await
        }
    };
    let run = tokio::spawn(run);
    run_clock(&clock, secs(1), || started.load(Ordering::SeqCst)).await;
    assert!(started.load(Ordering::SeqCst));
    // A few renewals succeed, then the store stalls.
    run_clock(&clock, secs(5), || false).await;
    let last_good = holder(&backing).await.unwrap();
    faults.set_enabled(true);
    let stalled_at = clock.now();
    run_clock(&clock, secs(30), || run.is_finished()).await;
    assert!(
        run.is_finished(),
        "run() still waits for a task that ignores its token"
    );
    let err = run.await.unwrap().unwrap_err();
    match err {
        Error::Lost { aborted, .. } => assert!(aborted, "the task ignored its token"),
        other => panic!("{other:?}"),
    }
    let cancelled = cancelled_at.lock().unwrap().expect("token cancelled");
    let ended = ended.lock().unwrap().expect("task dropped");
    // The last successful renewal started at most a retry period before the stall; the
    // store's record expires at its own `now + 15 s` of that renewal, which is no earlier.
    let window_end = last_good.expiry;
    assert!(cancelled > stalled_at, "cancelled only after the stall");
    assert!(
        cancelled < window_end,
        "token cancelled at {cancelled:?}, window ends {window_end:?}"
    );
    assert!(ended >= cancelled);
    assert!(
        ended < window_end,
        "task ended at {ended:?}, after the window ({window_end:?})"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn bad_settings_name_the_setting() {
    let clock = FakeClock::new();
    let store = InMemoryStore::new(clock.as_clock());
    let cases: Vec<(Election, &str)> = vec![
        (
            election(&store, &clock, "a").timing(secs(10), secs(10), secs(2)),
            "timing",
        ),
        (
            election(&store, &clock, "a").timing(Duration::ZERO, secs(1), secs(1)),
            "timing",
        ),
        (election(&store, &clock, "a b"), "identity"),
        (election(&store, &clock, "a").scope("x.y", "m"), "scope"),
        (
            Election::new(Backend::custom(store.sibling(), clock.as_clock()), "a#b").identity("a"),
            "lease",
        ),
        // `path` exists only with the SQLite store.
        #[cfg(feature = "sqlite")]
        (election(&store, &clock, "a").path("/tmp/x.db"), "path"),
    ];
    for (builder, setting) in cases {
        let debug = format!("{builder:?}");
        match builder.start() {
            Err(Error::Setting { setting: s, reason }) => {
                assert_eq!(s, setting, "{debug}: {reason}");
            }
            other => panic!("{setting}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn leases_acquire_renew_and_release_on_any_store() {
    let clock = FakeClock::new();
    let store = InMemoryStore::new(clock.as_clock());
    let leases = Leases::new(Backend::custom(store.sibling(), clock.as_clock()))
        .identity("worker-1")
        .start()
        .unwrap();
    let key = PathKey::parse("/system/jobs/nightly").unwrap();
    let (guard, lost) = leases
        .acquire_lease(&key, secs(10), Some(serde_json::json!({"shard": 3})))
        .await
        .unwrap();
    // Renewed in the background: still held well past the ttl.
    run_clock(&clock, secs(25), || false).await;
    assert!(!lost.is_cancelled());
    let info = leases.lease_info_value(&key).await.unwrap().unwrap();
    assert_eq!(info.metadata, Some(serde_json::json!({"shard": 3})));
    guard.release().await.unwrap();
    assert!(leases.lease_info_value(&key).await.unwrap().is_none());
    leases.shutdown().await;
}

#[test]
fn starting_outside_a_runtime_is_a_clear_error() {
    let clock = FakeClock::new();
    let store = InMemoryStore::new(clock.as_clock());
    let err = election(&store, &clock, "a").start().unwrap_err();
    assert!(matches!(err, Error::Manager(_)), "{err:?}");
    assert!(err.to_string().contains("manager"), "{err}");
}
