//! `LeaderElector` races (issue 14 items 1–3), on a multi-thread runtime and many iterations:
//! a `lock()` from the lost-token handler racing the revoke of the term that just ended (on every
//! revoke path), two concurrent `lock()` calls on one elector, and a new term after one that
//! ended while its lease was still recorded, which must get a new generation and must not be
//! ended by the old term's guard.
//!
//! The invariant every case checks: an elector that believes it leads (its guard's lost token
//! has not fired) is the store's holder, with its guard's generation; never two at once.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lease_core::{Facades as _, Key, Store as _};
use lease_manager::{
    Callbacks, ElectionConfig, ElectionError, Fence, LeaderElector, LeadershipGuard, Manager,
};
use lease_testkit::{FakeClock, InMemoryStore};
use support::*;

const LEASE: &str = "controller";

fn config(identity: &str) -> ElectionConfig {
    ElectionConfig::new(NS, MODEL, LEASE, identity)
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

/// Waits until `cond` holds, for up to 30 s of real time (other threads do the work; this is
/// no wait for an expiry, which comes from the fake clock).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < give_up, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// What is wrong with `believers`: a guard that still leads must be the store's holder with its
/// generation, and at most one may lead.
async fn believer_faults(
    backing: &InMemoryStore,
    believers: &[(&str, &LeadershipGuard)],
    what: &str,
) -> Vec<String> {
    let mut faults = Vec::new();
    let leading: Vec<_> = believers.iter().filter(|(_, g)| g.is_leading()).collect();
    if leading.len() > 1 {
        faults.push(format!(
            "{what}: two leaders at once: {:?}",
            leading.iter().map(|(who, _)| *who).collect::<Vec<_>>()
        ));
    }
    let info = stored(backing).await;
    for (who, guard) in leading {
        if !info
            .as_ref()
            .is_some_and(|i| i.holder == *who && i.generation == guard.generation())
        {
            faults.push(format!(
                "{what}: {who} believes it leads in generation {}, but the store holds {info:?}",
                guard.generation()
            ));
        }
    }
    faults
}

/// Fails unless every guard in `believers` that still leads is the store's holder with its
/// generation, and at most one leads.
async fn check_believers(
    backing: &InMemoryStore,
    believers: &[(&str, &LeadershipGuard)],
    what: &str,
) {
    let faults = believer_faults(backing, believers, what).await;
    assert!(faults.is_empty(), "{faults:#?}");
}

/// How the first term ends, so that its lease is revoked by identity.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Unlock,
    UnlockWithRetry,
    Release,
    DropWithReleaseOnCancel,
    /// The lease is revoked behind the leader's back, so its next renewal claims it anew; the
    /// renew task ends the term and gives that claim back.
    RenewalClaimedAnew,
}

const ENDINGS: [Ending; 5] = [
    Ending::Unlock,
    Ending::UnlockWithRetry,
    Ending::Release,
    Ending::DropWithReleaseOnCancel,
    Ending::RenewalClaimedAnew,
];

/// The elector's `on_stopped_leading` (which runs where the term ends, after the lost token
/// fired) calls `lock()` again in a task of its own, and stands for a thread preempted right
/// after firing the token: it lets the new `lock()` run (up to `pause`) before returning. A
/// revoke that is counted only after the term ended, or not at all, loses that race every time.
struct Relocker {
    armed: AtomicBool,
    elector: OnceLock<LeaderElector>,
    relock: Mutex<Option<tokio::task::JoinHandle<Result<LeadershipGuard, ElectionError>>>>,
    pause: Duration,
}

impl Relocker {
    fn callbacks(self: &Arc<Self>) -> Callbacks {
        let me = Arc::clone(self);
        Callbacks::new().on_stopped_leading(move || {
            if !me.armed.swap(false, Ordering::SeqCst) {
                return;
            }
            let elector = me.elector.get().expect("set").clone();
            // Spawned from another thread: a task spawned from this worker thread would sit in
            // its LIFO slot, which no other worker may steal, until this callback returns.
            let runtime = tokio::runtime::Handle::current();
            let task =
                std::thread::spawn(move || runtime.spawn(async move { elector.lock().await }))
                    .join()
                    .expect("spawned");
            let give_up = Instant::now() + me.pause;
            while !task.is_finished() && Instant::now() < give_up {
                std::thread::sleep(Duration::from_micros(200));
            }
            *me.relock.lock().unwrap() = Some(task);
        })
    }

    fn take(&self) -> Option<tokio::task::JoinHandle<Result<LeadershipGuard, ElectionError>>> {
        self.relock.lock().unwrap().take()
    }
}

async fn relock_races_the_revoke(ending: Ending, pause: Duration, iteration: usize) -> Vec<String> {
    let what = format!("{ending:?} #{iteration}");
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 1);
    let m: &Manager = &procs[0].1;
    let relocker = Arc::new(Relocker {
        armed: AtomicBool::new(false),
        elector: OnceLock::new(),
        relock: Mutex::new(None),
        pause,
    });
    let a = LeaderElector::new(
        m,
        clock.as_clock(),
        config("pod-a").with_release_on_cancel(matches!(ending, Ending::DropWithReleaseOnCancel)),
        relocker.callbacks(),
    )
    .unwrap();
    relocker.elector.set(a.clone()).unwrap();
    let b = LeaderElector::new(m, clock.as_clock(), config("pod-b"), Callbacks::new()).unwrap();

    let first = a.lock().await.unwrap();
    let first_generation = first.generation();
    // A follower waits for the lease, except where it would take it at the external revoke.
    let b_task = (!matches!(ending, Ending::RenewalClaimedAnew)).then(|| {
        let b = b.clone();
        tokio::spawn(async move { b.lock().await })
    });
    if b_task.is_some() {
        until("B follows", || {
            matches!(
                *b.leadership().borrow(),
                lease_manager::Leadership::Following { .. }
            )
        })
        .await;
    }
    relocker.armed.store(true, Ordering::SeqCst);
    let ending_task = match ending {
        Ending::Unlock => {
            let a = a.clone();
            Some(tokio::spawn(async move {
                a.unlock().await;
                drop(first);
            }))
        }
        Ending::UnlockWithRetry => {
            let a = a.clone();
            Some(tokio::spawn(async move {
                a.unlock_with_retry().await;
                drop(first);
            }))
        }
        Ending::Release => Some(tokio::spawn(async move {
            first.release().await;
        })),
        Ending::DropWithReleaseOnCancel => {
            drop(first);
            None
        }
        Ending::RenewalClaimedAnew => {
            m.revoker(NS, MODEL)
                .unwrap()
                .revoke(LEASE, "pod-a")
                .await
                .unwrap();
            tick(&clock, secs(2)).await;
            until("the renewal claimed anew ends the term", || {
                first.lost().is_cancelled()
            })
            .await;
            None
        }
    };
    eventually("the lost-token handler ran", || {
        relocker.relock.lock().unwrap().is_some()
    })
    .await;
    if let Some(t) = ending_task {
        t.await.unwrap();
    }
    let relock = relocker.take().expect("the handler called lock() again");
    // Someone leads again: the relocked A, or B.
    eventually("a leader again", || {
        relock.is_finished() || b_task.as_ref().is_some_and(|t| t.is_finished())
    })
    .await;
    // Whatever was in flight (the revoke, the other candidate's claim) lands.
    settle().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    settle().await;
    let a_guard = if relock.is_finished() {
        Some(relock.await.unwrap().expect("the relock leads"))
    } else {
        relock.abort();
        None
    };
    let b_guard = match b_task {
        Some(t) if t.is_finished() => Some(t.await.unwrap().expect("B leads")),
        Some(t) => {
            t.abort();
            None
        }
        None => None,
    };
    let mut believers = Vec::new();
    if let Some(g) = &a_guard {
        believers.push(("pod-a", g));
    }
    if let Some(g) = &b_guard {
        believers.push(("pod-b", g));
    }
    let mut faults = believer_faults(&backing, &believers, &what).await;
    if let Some(g) = &a_guard
        && g.generation() <= first_generation
    {
        faults.push(format!(
            "{what}: a new term of A reuses generation {}",
            g.generation()
        ));
    }
    faults
}

/// Runs every ending `iterations` times; fails listing every fault found.
async fn relock_races(pause: Duration, iterations: usize) {
    let mut faults = Vec::new();
    for iteration in 0..iterations {
        for ending in ENDINGS {
            faults.extend(relock_races_the_revoke(ending, pause, iteration).await);
        }
    }
    assert!(faults.is_empty(), "{} faults: {faults:#?}", faults.len());
}

/// Item 1: the relock, run while the thread that ended the term is still inside its
/// `on_stopped_leading` (before the old code counted or sent the revoke), must not win a term
/// that the revoke then takes away (while B claims the lease). Fails on the old code on every
/// revoke path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relock_from_the_lost_handler_waits_for_the_revoke_of_the_old_term() {
    relock_races(Duration::from_millis(40), 8).await;
}

/// Item 1 without help: the relock races the revoke as the scheduler has it, many times.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relock_from_the_lost_handler_races_the_revoke_many_times() {
    relock_races(Duration::ZERO, 60).await;
}

/// Item 2: two `lock()` calls on one elector at the same time give one term; the other call
/// gets `AlreadyLeading` with that term's generation, never a second guard. With a leader
/// elsewhere (odd iterations) both calls wait, and are woken together by its unlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_locks_on_one_elector_give_one_term() {
    for iteration in 0..100 {
        let clock = FakeClock::new();
        let (backing, procs) = processes(&clock, 1);
        let m = &procs[0].1;
        let a = LeaderElector::new(m, clock.as_clock(), config("pod-a"), Callbacks::new()).unwrap();
        let b = LeaderElector::new(m, clock.as_clock(), config("pod-b"), Callbacks::new()).unwrap();
        let b_guard = if iteration % 2 == 1 {
            Some(b.lock().await.unwrap())
        } else {
            None
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    a.lock().await
                })
            })
            .collect();
        if let Some(g) = b_guard {
            settle().await;
            assert!(g.release().await);
        }
        let mut guards = Vec::new();
        let mut refused = Vec::new();
        for call in calls {
            match call.await.unwrap() {
                Ok(g) => guards.push(g),
                Err(ElectionError::AlreadyLeading { generation, .. }) => refused.push(generation),
                Err(e) => panic!("#{iteration}: {e}"),
            }
        }
        assert_eq!(
            guards.len(),
            1,
            "#{iteration}: concurrent lock() calls gave {} terms",
            guards.len()
        );
        let guard = guards.pop().unwrap();
        assert_eq!(refused, [guard.generation()], "#{iteration}");
        check_believers(&backing, &[("pod-a", &guard)], &format!("#{iteration}")).await;
        // The one term can be ended: its lost token fires.
        assert!(a.unlock().await);
        assert!(guard.lost().is_cancelled(), "#{iteration}");
        assert!(!a.is_leader());
    }
}

/// Item 3: a term that ended at its renew deadline leaves its lease recorded (still valid for
/// others until it expires). The next term gets a newer generation, the old term's guard
/// cannot end it (not even with `release_on_cancel`, which would revoke it), and a fence tells
/// the two terms apart.
async fn a_new_term_after_the_renew_deadline(release_on_cancel: bool) {
    let clock = FakeClock::new();
    let (backing, procs) = processes(&clock, 1);
    let (store, m) = &procs[0];
    let a = LeaderElector::new(
        m,
        clock.as_clock(),
        config("pod-a").with_release_on_cancel(release_on_cancel),
        Callbacks::new(),
    )
    .unwrap();
    let old = a.lock().await.unwrap();
    store.set_broken(true);
    for _ in 0..12 {
        tick(&clock, secs(1)).await;
    }
    until("the old term ended at its renew deadline", || {
        old.lost().is_cancelled()
    })
    .await;
    let lingering = stored(&backing)
        .await
        .expect("the old lease is still recorded");
    assert_eq!(lingering.holder, "pod-a");
    assert!(lingering.expiry > clock.now(), "and still valid");
    store.set_broken(false);

    let new = a.lock().await.unwrap();
    assert!(
        new.generation() > old.generation(),
        "the new term reuses generation {}",
        new.generation()
    );
    drop(old);
    settle().await;
    assert!(
        new.is_leading(),
        "dropping the old guard ended the new term"
    );
    assert!(a.is_leader());
    check_believers(&backing, &[("pod-a", &new)], "after the old guard's drop").await;

    let fence = Fence::new();
    fence.admit(new.generation()).unwrap();
    assert!(fence.admit(lingering.generation).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_term_after_the_renew_deadline_gets_a_new_generation() {
    for _ in 0..10 {
        a_new_term_after_the_renew_deadline(false).await;
        a_new_term_after_the_renew_deadline(true).await;
    }
}

/// Item 3: `unlock()` whose revoke failed leaves the lease recorded; the next term still gets
/// a newer generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_term_after_a_failed_unlock_gets_a_new_generation() {
    for _ in 0..10 {
        let clock = FakeClock::new();
        let (backing, procs) = processes(&clock, 1);
        let (store, m) = &procs[0];
        let a = LeaderElector::new(m, clock.as_clock(), config("pod-a"), Callbacks::new()).unwrap();
        let old = a.lock().await.unwrap();
        store.set_broken(true);
        assert!(!a.unlock().await, "the revoke failed");
        store.set_broken(false);
        assert_eq!(stored(&backing).await.unwrap().generation, old.generation());
        let new = a.lock().await.unwrap();
        assert!(new.generation() > old.generation());
        drop(old);
        assert!(new.is_leading());
        check_believers(&backing, &[("pod-a", &new)], "after a failed unlock").await;
    }
}

/// A broken store whose claims always report generation 1 (the generation never rises).
struct StuckGenerations(InMemoryStore, Arc<std::sync::atomic::AtomicUsize>);

#[async_trait::async_trait]
impl lease_core::Store for StuckGenerations {
    async fn claim_lease(
        &mut self,
        key: &Key,
        request: &lease_core::Request,
    ) -> lease_core::Result<lease_core::Info> {
        self.0.claim_lease(key, request).await
    }
    async fn extend_lease(
        &mut self,
        key: &Key,
        request: &lease_core::Request,
    ) -> lease_core::Result<lease_core::Info> {
        self.0.extend_lease(key, request).await
    }
    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> lease_core::Result<()> {
        self.0.revoke_lease(key, holder).await
    }
    async fn leases(
        &mut self,
        keys: &[Key],
    ) -> lease_core::Result<std::collections::BTreeMap<Key, lease_core::Info>> {
        self.0.leases(keys).await
    }
    async fn lease_group(
        &mut self,
        namespace: &str,
        model: &str,
    ) -> lease_core::Result<std::collections::BTreeMap<Key, lease_core::Info>> {
        self.0.lease_group(namespace, model).await
    }
    async fn pin_lease(&mut self, key: &Key, entity: &str) -> lease_core::Result<()> {
        self.0.pin_lease(key, entity).await
    }
    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> lease_core::Result<()> {
        self.0.unpin_lease(key, entity).await
    }
    async fn pinned(&mut self) -> lease_core::Result<std::collections::BTreeMap<Key, Vec<String>>> {
        self.0.pinned().await
    }
    async fn apply(
        &mut self,
        ops: Vec<lease_core::Op>,
    ) -> Vec<lease_core::Result<lease_core::Outcome>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        let mut results = self.0.apply(ops).await;
        for r in &mut results {
            if let Ok(lease_core::Outcome::Claimed(info) | lease_core::Outcome::Extended(info)) = r
            {
                info.generation = lease_core::Generation(1);
            }
        }
        results
    }
}

/// Item 3 against a broken store whose generations never rise: `lock()` refuses to start a
/// second term with generation 1 (it keeps revoking and claiming afresh), and does so at the
/// `retry_period` pace rather than spinning on the store.
#[tokio::test]
async fn a_store_whose_generations_do_not_rise_gets_no_second_term_and_no_spin() {
    let clock = FakeClock::new();
    let applies = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let m = manager(
        StuckGenerations(InMemoryStore::new(clock.as_clock()), Arc::clone(&applies)),
        &clock,
    );
    let a = LeaderElector::new(&m, clock.as_clock(), config("pod-a"), Callbacks::new()).unwrap();
    let first = a.lock().await.unwrap();
    assert_eq!(first.generation(), lease_core::Generation(1));
    assert!(a.unlock().await);
    let relock = tokio::spawn({
        let a = a.clone();
        async move { a.lock().await }
    });
    settle().await;
    let before = applies.load(Ordering::SeqCst);
    for _ in 0..10 {
        tick(&clock, secs(1)).await;
    }
    assert!(!relock.is_finished(), "a second term with generation 1");
    let calls = applies.load(Ordering::SeqCst) - before;
    // A revoke and a claim per retry_period (2 s, jittered up to 20 %): about 10 in 10 s.
    assert!(calls <= 14, "{calls} store calls in 10 s: spinning");
    assert!(calls >= 4, "{calls} store calls in 10 s: not retrying");
    relock.abort();
}
