//! `LeaderElector` on the fake clock: config validation, renewal cadence, loss detection before
//! anyone else can lead, health checks, wake-ups on release, unlock with and without retry,
//! release on cancel, failover with fencing, and five candidates started at once.

mod support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lease_core::{Error, Generation, Key, Store as _};
use lease_manager::{
    Callbacks, ElectionConfig, ElectionError, Fence, LeaderElector, Leadership, Manager, TermRecord,
};
use lease_testkit::{CountingStore, FakeClock, FaultyStore, InMemoryStore};
use support::*;

const LEASE: &str = "controller";

fn config(identity: &str) -> ElectionConfig {
    ElectionConfig::new(NS, MODEL, LEASE, identity)
}

fn elector(m: &Manager, clock: &FakeClock, identity: &str) -> LeaderElector {
    LeaderElector::new(m, clock.as_clock(), config(identity), Callbacks::new()).unwrap()
}

async fn stored(backing: &InMemoryStore) -> Option<lease_core::Info> {
    let mut probe = backing.sibling();
    let k = Key::new(NS, MODEL, LEASE);
    probe
        .leases(std::slice::from_ref(&k))
        .await
        .unwrap()
        .remove(&k)
}

#[test]
fn config_errors_name_the_field() {
    let ok = config("a");
    ok.validate().unwrap();
    assert_eq!(ok.lease_duration, secs(15));
    assert_eq!(ok.renew_deadline, secs(10));
    assert_eq!(ok.retry_period, secs(2));
    assert_eq!(ok.name, LEASE);
    let cases = [
        (config("a").with_name(""), "name"),
        (config("a b"), "identity"),
        (ElectionConfig::new(NS, MODEL, "l.x", "a"), "lease"),
        (
            config("a").with_timing(Duration::ZERO, secs(10), secs(2)),
            "lease_duration",
        ),
        (
            config("a").with_timing(secs(15), Duration::ZERO, secs(2)),
            "renew_deadline",
        ),
        (
            config("a").with_timing(secs(15), secs(10), Duration::ZERO),
            "retry_period",
        ),
        (
            config("a").with_unlock_with_retry_period(Duration::ZERO),
            "unlock_with_retry_period",
        ),
        (
            config("a").with_timing(secs(15), secs(15), secs(2)),
            "renew_deadline",
        ),
        (
            config("a").with_timing(secs(15), secs(12), secs(10)),
            "renew_deadline",
        ),
    ];
    for (cfg, field) in cases {
        match cfg.validate() {
            Err(ElectionError::Config { field: f, .. }) => assert_eq!(f, field, "{cfg:?}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    let err = config("a")
        .with_timing(secs(15), secs(12), secs(10))
        .validate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid election config renew_deadline "12s": must be longer than 1.2 × retry_period (10s)"#
    );
}

#[tokio::test]
async fn leads_renews_every_retry_period_and_records_the_lock() {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 1);
    let (store, m) = &procs[0];
    let started = Arc::new(Mutex::new(Vec::new()));
    let leaders = Arc::new(Mutex::new(Vec::new()));
    let callbacks = Callbacks::new()
        .on_started_leading({
            let started = Arc::clone(&started);
            move |g| started.lock().unwrap().push(g)
        })
        .on_new_leader({
            let leaders = Arc::clone(&leaders);
            move |l| leaders.lock().unwrap().push(l.to_owned())
        });
    let e = LeaderElector::new(m, clock.as_clock(), config("pod-a"), callbacks).unwrap();
    assert_eq!(*e.leadership().borrow(), Leadership::Standby);
    let t0 = clock.now();
    let guard = e.lock().await.unwrap();
    let g = guard.generation();
    assert_eq!(
        *e.leadership().borrow(),
        Leadership::Leading { generation: g }
    );
    assert_eq!(*started.lock().unwrap(), [g]);
    assert_eq!(*leaders.lock().unwrap(), ["pod-a"]);
    assert!(matches!(
        e.lock().await,
        Err(ElectionError::AlreadyLeading { generation, .. }) if generation == g
    ));

    for n in 1..=3u32 {
        tick(&clock, secs(2) - Duration::from_nanos(1)).await;
        assert_eq!(store.extends(), n as usize - 1, "renewal {n} came early");
        tick(&clock, Duration::from_nanos(1)).await;
        until("the renewal", || store.extends() == n as usize).await;
        let info = stored(&backing).await.unwrap();
        assert_eq!(info.expiry, t0.saturating_add(secs(2) * n + secs(15)));
        assert_eq!(info.generation, g);
        let record: TermRecord = serde_json::from_value(info.metadata.unwrap()).unwrap();
        assert_eq!(
            record,
            TermRecord {
                holder_identity: "pod-a".into(),
                lease_duration_seconds: 15,
                acquire_time: t0,
                renew_time: t0.saturating_add(secs(2) * n),
                lease_transitions: g.get() - 1,
            }
        );
        assert_eq!(e.term_record(), Some(record));
    }
    assert!(guard.is_leading());
}

#[tokio::test]
async fn a_failing_store_ends_the_term_at_the_renew_deadline_before_the_lease_expires() {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 1);
    let (store, m) = &procs[0];
    let stopped = Arc::new(AtomicI64::new(0));
    let callbacks = Callbacks::new().on_stopped_leading({
        let stopped = Arc::clone(&stopped);
        move || {
            stopped.fetch_add(1, Ordering::SeqCst);
        }
    });
    let e = LeaderElector::new(m, clock.as_clock(), config("pod-a"), callbacks).unwrap();
    let mut watch = e.leadership();
    let t0 = clock.now();
    let guard = e.lock().await.unwrap();
    tick(&clock, secs(2)).await;
    until("the first renewal", || store.extends() == 1).await;
    store.set_broken(true);
    let last_renewal = t0.saturating_add(secs(2));

    // Renewals at 4, 6, 8 and 10 s fail; the term ends at last renewal + renew_deadline.
    while clock.now() < last_renewal.saturating_add(secs(10) - ms(500)) {
        tick(&clock, ms(500)).await;
        assert!(guard.is_leading(), "ended early at {}", clock.now());
        assert!(e.check(Duration::ZERO).is_ok());
    }
    tick(&clock, ms(500)).await;
    assert!(guard.lost().is_cancelled());
    assert_eq!(clock.now(), last_renewal.saturating_add(secs(10)));
    assert_eq!(*watch.borrow_and_update(), Leadership::Standby);
    assert_eq!(stopped.load(Ordering::SeqCst), 1);
    assert!(!e.is_leader());
    // Nobody else could have taken over yet: the lease is valid until last renewal + 15 s.
    assert_eq!(
        stored(&backing).await.unwrap().expiry,
        last_renewal.saturating_add(secs(15))
    );
    // Dropping the ended term's guard does nothing more.
    drop(guard);
    settle().await;
    assert_eq!(stopped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn check_fails_when_the_last_renewal_is_too_old() {
    let clock = FakeClock::new();
    let (_, procs) = processes(&clock, 1);
    let e = elector(&procs[0].1, &clock, "pod-a");
    e.check(Duration::ZERO).unwrap(); // not leading: healthy
    let _guard = e.lock().await.unwrap();
    e.check(Duration::ZERO).unwrap();
    // The process was frozen for 20 s: its renewal task has not run yet.
    clock.advance(secs(20));
    match e.check(secs(1)) {
        Err(ElectionError::Unhealthy { since, limit, .. }) => {
            assert_eq!(since, secs(20));
            assert_eq!(limit, secs(16));
        }
        other => panic!("{other:?}"),
    }
    e.check(secs(5)).unwrap();
}

#[tokio::test]
async fn a_follower_takes_over_at_once_when_the_leader_unlocks() {
    for same_manager in [true, false] {
        let clock = FakeClock::new();
        let (_, procs) = processes(&clock, 2);
        let a = elector(&procs[0].1, &clock, "pod-a");
        let b_manager = if same_manager {
            &procs[0].1
        } else {
            &procs[1].1
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b = LeaderElector::new(
            b_manager,
            clock.as_clock(),
            config("pod-b"),
            Callbacks::new().on_new_leader({
                let seen = Arc::clone(&seen);
                move |l| seen.lock().unwrap().push(l.to_owned())
            }),
        )
        .unwrap();
        let a_guard = a.lock().await.unwrap();
        let b_task = tokio::spawn({
            let b = b.clone();
            async move { b.lock().await }
        });
        let mut b_watch = b.leadership();
        until("B follows A", || {
            *b_watch.borrow_and_update()
                == Leadership::Following {
                    leader: "pod-a".into(),
                }
        })
        .await;
        let before = clock.now();
        assert!(a.unlock().await);
        assert!(a_guard.lost().is_cancelled());
        assert!(!a.unlock().await, "not leading any more");
        let b_guard = b_task.await.unwrap().unwrap();
        assert_eq!(
            clock.now(),
            before,
            "no time passed: B was woken, not polling"
        );
        assert!(b_guard.generation() > a_guard.generation());
        assert_eq!(*seen.lock().unwrap(), ["pod-a", "pod-b"]);
    }
}

#[tokio::test]
async fn a_follower_does_not_poll_the_store_while_the_leader_renews() {
    let clock = FakeClock::new();
    let (_, procs) = processes(&clock, 2);
    let a = elector(&procs[0].1, &clock, "pod-a");
    let b = elector(&procs[1].1, &clock, "pod-b");
    let _a_guard = a.lock().await.unwrap();
    let b_task = tokio::spawn({
        let b = b.clone();
        async move { b.lock().await }
    });
    settle().await;
    let (b_store, _) = &procs[1];
    let (reads, claims) = (b_store.group_reads(), b_store.claims());
    assert_eq!(reads, 1, "one read to learn the leader");
    for _ in 0..60 {
        tick(&clock, ms(500)).await;
    }
    assert_eq!(procs[0].0.extends(), 15, "A renewed every 2 s");
    assert_eq!(
        b_store.group_reads(),
        reads,
        "no more reads while following"
    );
    assert_eq!(
        b_store.claims(),
        claims,
        "retries are denied from the manager's view"
    );
    assert!(!b_task.is_finished());
    assert_eq!(
        *b.leadership().borrow(),
        Leadership::Following {
            leader: "pod-a".into()
        }
    );
}

#[tokio::test]
async fn release_on_cancel_decides_what_dropping_the_guard_does() {
    for release_on_cancel in [true, false] {
        let clock = FakeClock::new();
        let (_, procs) = processes(&clock, 1);
        let m = &procs[0].1;
        let a = LeaderElector::new(
            m,
            clock.as_clock(),
            config("pod-a").with_release_on_cancel(release_on_cancel),
            Callbacks::new(),
        )
        .unwrap();
        let b = elector(m, &clock, "pod-b");
        let a_guard = a.lock().await.unwrap();
        let b_task = tokio::spawn({
            let b = b.clone();
            async move { b.lock().await.map(|g| (g, b.config().identity.clone())) }
        });
        settle().await;
        let t_drop = clock.now();
        drop(a_guard);
        assert_eq!(*a.leadership().borrow(), Leadership::Standby);
        settle().await;
        if release_on_cancel {
            assert!(b_task.is_finished(), "released: B leads at once");
        } else {
            assert!(!b_task.is_finished(), "not released: B waits for expiry");
            while !b_task.is_finished() {
                tick(&clock, ms(500)).await;
            }
            assert_eq!(clock.now(), t_drop.saturating_add(secs(15)));
        }
        let (b_guard, who) = b_task.await.unwrap().unwrap();
        assert_eq!(who, "pod-b");
        assert!(b_guard.is_leading());
    }
}

#[tokio::test]
async fn unlock_with_retry_retries_until_the_store_recovers() {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 1);
    let (store, m) = &procs[0];
    let a = elector(m, &clock, "pod-a");
    assert!(!a.unlock_with_retry().await, "not leading");
    let guard = a.lock().await.unwrap();
    // lock() revoked this identity's earlier lease (there was none) before claiming.
    let revokes_before = store.revokes();
    store.set_broken(true);
    let task = tokio::spawn({
        let a = a.clone();
        async move { a.unlock_with_retry().await }
    });
    settle().await;
    assert!(
        guard.lost().is_cancelled(),
        "the term ends before the first revoke"
    );
    tick(&clock, ms(1300)).await;
    tick(&clock, ms(1300)).await;
    assert!(!task.is_finished());
    store.set_broken(false);
    for _ in 0..3 {
        tick(&clock, ms(1300)).await;
    }
    assert!(task.await.unwrap());
    assert_eq!(store.revokes() - revokes_before, 1);
    assert!(stored(&backing).await.is_none());

    // A store that never recovers: give up once the lease has expired by itself.
    let _guard = a.lock().await.unwrap();
    store.set_broken(true);
    let t = clock.now();
    let task = tokio::spawn({
        let a = a.clone();
        async move { a.unlock_with_retry().await }
    });
    while !task.is_finished() {
        tick(&clock, ms(500)).await;
    }
    assert!(!task.await.unwrap());
    assert!(clock.now() <= t.saturating_add(secs(15)));
}

#[tokio::test]
async fn a_stopped_manager_aborts_lock() {
    let clock = FakeClock::new();
    let (_, procs) = processes(&clock, 1);
    let e = elector(&procs[0].1, &clock, "pod-a");
    procs[0].1.stop().await;
    match e.lock().await {
        Err(ElectionError::Lease(err)) => assert!(err.is_aborted(), "{err}"),
        other => panic!("{other:?}"),
    }
    let err = LeaderElector::new(
        &procs[0].1,
        clock.as_clock(),
        config("pod-a"),
        Callbacks::new(),
    )
    .unwrap_err();
    assert!(matches!(err, ElectionError::Lease(Error::Aborted)), "{err}");
}

/// A leads and its store fails; B follows. At no instant do both act; A stops at its renew
/// deadline, B leads from A's expiry on with a newer generation, and A's late write is fenced.
#[tokio::test]
async fn failover_between_two_candidates_is_fenced() {
    let clock = FakeClock::new();
    let (_, procs) = processes(&clock, 2);
    let a = elector(&procs[0].1, &clock, "pod-a");
    let b = elector(&procs[1].1, &clock, "pod-b");
    let fence = Fence::new();
    let t0 = clock.now();
    let a_guard = a.lock().await.unwrap();
    let b_task = tokio::spawn({
        let b = b.clone();
        async move { b.lock().await }
    });
    tick(&clock, secs(2)).await;
    until("A's first renewal", || procs[0].0.extends() == 1).await;
    procs[0].0.set_broken(true);
    let mut a_stopped_at = None;
    let mut b_guard = None;
    let mut a_acts = Vec::new();
    for _ in 0..40 {
        tick(&clock, ms(500)).await;
        if a_guard.lost().is_cancelled() && a_stopped_at.is_none() {
            a_stopped_at = Some(clock.now());
        }
        if b_guard.is_none() && b_task.is_finished() {
            b_guard = Some(b_task.await.unwrap().unwrap());
            // `b_task` is consumed; the loop only reads `b_guard` from here on.
            break;
        }
        assert!(
            !(a_guard.is_leading() && b.is_leader()),
            "both lead at {}",
            clock.now()
        );
        if a_guard.is_leading() {
            fence.admit(a_guard.generation()).unwrap();
            a_acts.push(clock.now());
        }
    }
    let b_guard = b_guard.expect("B took over");
    assert!(!a_guard.is_leading());
    let a_stopped_at = a_stopped_at.unwrap();
    assert_eq!(
        a_stopped_at,
        t0.saturating_add(secs(12)),
        "last renewal + renew_deadline"
    );
    assert_eq!(
        clock.now(),
        t0.saturating_add(secs(17)),
        "B leads at A's expiry"
    );
    assert!(a_acts.iter().all(|t| *t < a_stopped_at));
    assert!(b_guard.generation() > a_guard.generation());
    fence.admit(b_guard.generation()).unwrap();
    assert!(fence.admit(a_guard.generation()).is_err());
    assert_eq!(
        *a.leadership().borrow(),
        Leadership::Standby,
        "A cannot see B: its store is down"
    );
}

/// Five candidates on five processes start together on a fresh lease. Leadership then moves
/// by unlocking and by store failures. At every step at most one leads (by the callbacks'
/// shared counter and by the watch values), and after each move exactly one does, with a newer
/// generation.
#[tokio::test]
async fn five_candidates_started_together_have_one_leader_at_every_instant() {
    let clock = FakeClock::new();
    let (_, procs) = processes(&clock, 5);
    let leaders = Arc::new(AtomicI64::new(0));
    let max_leaders = Arc::new(AtomicI64::new(0));
    let mut electors = Vec::new();
    for (i, (_, m)) in procs.iter().enumerate() {
        let callbacks = Callbacks::new()
            .on_started_leading({
                let (leaders, max) = (Arc::clone(&leaders), Arc::clone(&max_leaders));
                move |_| {
                    let n = leaders.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                }
            })
            .on_stopped_leading({
                let leaders = Arc::clone(&leaders);
                move || {
                    leaders.fetch_sub(1, Ordering::SeqCst);
                }
            });
        let e = LeaderElector::new(m, clock.as_clock(), config(&format!("pod-{i}")), callbacks)
            .unwrap();
        // Each candidate campaigns forever: lead until the term ends, then campaign again.
        tokio::spawn({
            let e = e.clone();
            async move {
                loop {
                    match e.lock().await {
                        Ok(guard) => guard.lost().cancelled().await,
                        Err(_) => return,
                    }
                }
            }
        });
        electors.push(e);
    }
    let watches: Vec<_> = electors.iter().map(LeaderElector::leadership).collect();
    let leading = || -> Vec<usize> {
        watches
            .iter()
            .enumerate()
            .filter(|(_, w)| w.borrow().is_leading())
            .map(|(i, _)| i)
            .collect()
    };
    let check_instant = |when: &str| {
        let now = leading();
        assert!(now.len() <= 1, "{when}: several lead: {now:?}");
        assert!(
            leaders.load(Ordering::SeqCst) <= 1,
            "{when}: counter says several lead"
        );
    };

    settle().await;
    check_instant("start");
    assert_eq!(leading().len(), 1, "one leader once the start settles");
    let mut generation = Generation(0);
    for round in 0..6 {
        let leader = leading()[0];
        let Leadership::Leading { generation: g } = *watches[leader].borrow() else {
            unreachable!()
        };
        assert!(g > generation, "round {round}: generations only grow");
        generation = g;
        if round % 2 == 0 {
            assert!(electors[leader].unlock().await);
        } else {
            procs[leader].0.set_broken(true);
        }
        for _ in 0..40 {
            tick(&clock, ms(500)).await;
            check_instant(&format!("round {round} at {}", clock.now()));
            if leading().first().is_some_and(|l| *l != leader) {
                break;
            }
        }
        procs[leader].0.set_broken(false);
        settle().await;
        check_instant(&format!("end of round {round}"));
        assert_eq!(leading().len(), 1, "round {round}: a leader again");
    }
    assert_eq!(max_leaders.load(Ordering::SeqCst), 1);
}

/// Regression (found by `cargo xtask torture` during an API server outage): a claim that
/// returns only after its renew deadline has passed guarantees nothing any more, so `lock()`
/// must not start a term on it. It claims again (an extend, as the holder) and leads from that
/// fresh start, instead of returning a guard whose lost token is already due.
#[tokio::test]
async fn a_claim_returning_after_its_renew_deadline_starts_no_term() {
    let clock = FakeClock::new();
    let backing = InMemoryStore::new(clock.as_clock());
    // Every batch waits for a release; the first (lock()'s revoke of an earlier lease) may go,
    // the second (the claim) stalls until the test lets it go: a claim the manager keeps
    // retrying through an outage, returning long after it started. No change notifier, as
    // before this store was the testkit's.
    let stalling = FaultyStore::new(backing.sibling(), clock.as_clock(), 0)
        .with_held_batches()
        .without_change_notifier();
    let gate = stalling.handle();
    gate.release_batches(1);
    let store = CountingStore::new(stalling);
    let counts = store.handle();
    let m = manager(store, &clock);
    let a = elector(&m, &clock, "a");
    let started = clock.now();
    let locking = tokio::spawn(async move {
        let guard = a.lock().await;
        (a, guard)
    });
    until("the first claim is in the store", || {
        counts.counts().applies == 2
    })
    .await;
    // The claim is stuck past its renew deadline (10 s) before the store answers.
    clock.advance(secs(11));
    gate.release_batches(1_000);

    let (a, guard) = tokio::time::timeout(Duration::from_secs(10), locking)
        .await
        .expect("lock() returned")
        .unwrap();
    let guard = guard.expect("a leads after claiming again");
    settle().await;
    assert!(
        !guard.lost().is_cancelled(),
        "the term must start from the fresh claim, not end at once"
    );
    assert_eq!(
        counts.counts().applies,
        3,
        "lock()'s revoke of an earlier lease, then the stale claim, then exactly one fresh \
         claim (an extend)"
    );
    let info = stored(&backing).await.expect("held");
    assert_eq!(info.holder, "a");
    assert!(
        info.expiry >= started.saturating_add(secs(11) + secs(15)),
        "the lease runs a full duration from the fresh claim: {info:?}"
    );
    // The term lasts renew_deadline from the fresh claim, not from the stale one.
    clock.advance(secs(9));
    settle().await;
    assert!(!guard.lost().is_cancelled());
    drop(guard);
    drop(a);
}

/// Regression: a `lock()` started while `unlock_with_retry` waits to retry a failed revoke must
/// wait for it. Otherwise the new term's claim lands first (an extend, as the same holder), and
/// the retried revoke, which names the holder and not the term, ends the lease under the new
/// leader while it believes it leads.
#[tokio::test]
async fn lock_waits_for_a_pending_unlock_with_retry() {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 1);
    let (store, m) = &procs[0];
    let a = elector(m, &clock, "pod-a");
    let first = a.lock().await.unwrap();
    let first_generation = first.generation();
    store.set_broken(true);
    let unlocking = tokio::spawn({
        let a = a.clone();
        async move { a.unlock_with_retry().await }
    });
    settle().await;
    assert!(first.lost().is_cancelled());
    assert!(!unlocking.is_finished(), "asleep until its retry");

    // The store recovers and a new lock() starts while the retry is still pending.
    store.set_broken(false);
    let locking = tokio::spawn({
        let a = a.clone();
        async move { a.lock().await }
    });
    settle().await;
    assert!(
        !locking.is_finished(),
        "lock() must wait for the pending revoke instead of leading under it"
    );

    // The retry revokes; only then does lock() claim, afresh.
    while !unlocking.is_finished() {
        tick(&clock, ms(500)).await;
    }
    assert!(unlocking.await.unwrap());
    let mut waited = 0;
    while !locking.is_finished() && waited < 100 {
        tick(&clock, ms(100)).await;
        waited += 1;
    }
    let second = locking.await.unwrap().expect("leads after the revoke");
    assert!(second.generation() > first_generation, "a fresh claim");
    settle().await;
    assert!(!second.lost().is_cancelled());
    let info = stored(&backing).await.expect("held by the new term");
    assert_eq!(info.holder, "pod-a");
    assert_eq!(info.generation, second.generation());
    drop(second);
}
