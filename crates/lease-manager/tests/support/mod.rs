//! Shared helpers of the high-level API tests (Leaser, LeaderElector, ResourceLocks): a store
//! that can be switched to failing, a manager builder, and helpers to move the fake clock in
//! steps while letting every task react.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{DefaultSecretary, Error, Info, Key, Op, Outcome, Request, Result, Store};
use lease_manager::{Jitter, Manager, ManagerConfig, RetryPolicy};
use lease_testkit::{FakeClock, InMemoryStore};

pub const NS: &str = "apis";
pub const MODEL: &str = "model-1";

/// An [`InMemoryStore`] that fails every call with a (non-retryable) store error while broken,
/// and counts the ops it applied.
#[derive(Clone)]
pub struct FlakyStore {
    inner: Arc<tokio::sync::Mutex<InMemoryStore>>,
    broken: Arc<AtomicBool>,
    extends: Arc<AtomicUsize>,
    claims: Arc<AtomicUsize>,
    revokes: Arc<AtomicUsize>,
    group_reads: Arc<AtomicUsize>,
}

impl FlakyStore {
    pub fn new(store: InMemoryStore) -> Self {
        FlakyStore {
            inner: Arc::new(tokio::sync::Mutex::new(store)),
            broken: Arc::new(AtomicBool::new(false)),
            extends: Arc::default(),
            claims: Arc::default(),
            revokes: Arc::default(),
            group_reads: Arc::default(),
        }
    }

    pub fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::SeqCst);
    }

    pub fn extends(&self) -> usize {
        self.extends.load(Ordering::SeqCst)
    }

    pub fn claims(&self) -> usize {
        self.claims.load(Ordering::SeqCst)
    }

    pub fn revokes(&self) -> usize {
        self.revokes.load(Ordering::SeqCst)
    }

    pub fn group_reads(&self) -> usize {
        self.group_reads.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            Err(Error::store_msg("injected failure"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.check()?;
        self.inner.lock().await.claim_lease(key, request).await
    }
    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.check()?;
        self.inner.lock().await.extend_lease(key, request).await
    }
    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()> {
        self.check()?;
        self.inner.lock().await.revoke_lease(key, holder).await
    }
    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        self.check()?;
        self.inner.lock().await.leases(keys).await
    }
    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>> {
        self.check()?;
        self.group_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.lock().await.lease_group(namespace, model).await
    }
    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.check()?;
        self.inner.lock().await.pin_lease(key, entity).await
    }
    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.check()?;
        self.inner.lock().await.unpin_lease(key, entity).await
    }
    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        self.check()?;
        self.inner.lock().await.pinned().await
    }
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        if self.check().is_err() {
            return ops
                .iter()
                .map(|_| Err(Error::store_msg("injected failure")))
                .collect();
        }
        for op in &ops {
            let counter = match op {
                Op::Claim { .. } => &self.claims,
                Op::Extend { .. } => &self.extends,
                Op::Revoke { .. } => &self.revokes,
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.lock().await.apply(ops).await
    }
    async fn poll_changes(&mut self) -> Result<bool> {
        self.check()?;
        self.inner.lock().await.poll_changes().await
    }
    fn change_notifier(&mut self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.try_lock().ok()?.change_notifier()
    }
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
pub fn processes(clock: &FakeClock, n: usize) -> (InMemoryStore, Vec<(FlakyStore, Manager)>) {
    let backing = InMemoryStore::new(clock.as_clock());
    let procs = (0..n)
        .map(|_| {
            let store = FlakyStore::new(backing.sibling());
            let m = manager(store.clone(), clock);
            (store, m)
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
