//! Shared helpers of the high-level API tests (Leaser, LeaderElector, ResourceLocks): a store
//! that can be switched to failing, a manager builder, and helpers to move the fake clock in
//! steps while letting every task react.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use lease_core::{DefaultSecretary, Store};
use lease_manager::{Jitter, Manager, ManagerConfig, RetryPolicy};
use lease_testkit::{
    CountHandle, CountingStore, FakeClock, FaultHandle, FaultRates, FaultyStore, InMemoryStore,
};

pub const NS: &str = "apis";
pub const MODEL: &str = "model-1";

/// The store each test process runs on: an [`InMemoryStore`] that counts the calls reaching
/// it, behind a [`FaultyStore`] that fails every call with a (non-retryable) store error while
/// broken.
pub type FlakyStore = FaultyStore<CountingStore<InMemoryStore>>;

/// What a test keeps of a [`FlakyStore`] after the store has moved into a manager: the switch
/// that breaks it and the counts of what reached the backing.
#[derive(Clone)]
pub struct Flaky {
    faults: FaultHandle,
    counts: CountHandle,
}

/// A [`FlakyStore`] over `store`, working until [`Flaky::set_broken`].
pub fn flaky(store: InMemoryStore, clock: &FakeClock) -> (Flaky, FlakyStore) {
    let counting = CountingStore::new(store);
    let counts = counting.handle();
    let store = FaultyStore::new(counting, clock.as_clock(), 0)
        .with_rates(FaultRates {
            store_error: 1.0,
            ..FaultRates::NONE
        })
        .with_store_error_message("injected failure");
    let faults = store.handle();
    faults.set_enabled(false);
    (Flaky { faults, counts }, store)
}

impl Flaky {
    pub fn set_broken(&self, broken: bool) {
        self.faults.set_enabled(broken);
    }

    /// Extends applied (in batches) while working.
    pub fn extends(&self) -> usize {
        count(self.counts.counts().extends)
    }

    pub fn claims(&self) -> usize {
        count(self.counts.counts().claims)
    }

    pub fn revokes(&self) -> usize {
        count(self.counts.counts().revokes)
    }

    pub fn group_reads(&self) -> usize {
        count(self.counts.counts().lease_group)
    }
}

fn count(n: u64) -> usize {
    usize::try_from(n).expect("a count fits usize")
}

/// A manager over `store` with a default secretary, unjittered retries and a 1 s refresh.
pub fn manager(store: impl Store + 'static, clock: &FakeClock) -> Manager {
    Manager::start(
        ManagerConfig::new(store, clock.as_clock())
            .with_default_secretary(Arc::new(DefaultSecretary))
            .with_retry(RetryPolicy {
                jitter: Jitter::None,
                ..RetryPolicy::default()
            })
            .with_refresh_interval(Duration::from_secs(1))
            .with_max_sleep(Duration::from_secs(60)),
    )
    .expect("valid config")
}

/// A fresh in-memory backing with `n` flaky sibling stores over it, each with its own manager
/// (`n` processes sharing one database), and a direct handle on the backing.
pub fn processes(clock: &FakeClock, n: usize) -> (InMemoryStore, Vec<(Flaky, Manager)>) {
    let backing = InMemoryStore::new(clock.as_clock());
    let procs = (0..n)
        .map(|_| {
            let (handle, store) = flaky(backing.sibling(), clock);
            (handle, manager(store, clock))
        })
        .collect();
    (backing, procs)
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Lets other tasks run for a while.
pub async fn settle() {
    for _ in 0..300 {
        tokio::task::yield_now().await;
    }
}

/// Lets other tasks run until `cond` holds (bounded, so a broken test fails rather than hangs).
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("timed out waiting until {what}");
}

/// Moves the clock forward by `step`, then lets every task react.
pub async fn tick(clock: &FakeClock, step: Duration) {
    clock.advance(step);
    settle().await;
}
