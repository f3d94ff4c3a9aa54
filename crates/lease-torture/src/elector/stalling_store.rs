//! The store the elector scenario stalls: an SQLite store whose every call the orchestrator can
//! make hang, before the call (no effect yet) or after it (it took effect, the answer is late).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{Info, Key, Op, Outcome, Request, Result as LeaseResult, Store};
use lease_store_sqlite::SqliteStore;

use crate::now;

/// Every store call waits while its stall lasts: before the call (it hangs) or after it (it
/// took effect, and the answer comes late).
#[derive(Debug, Clone, Default)]
pub(super) struct Stall {
    until: Arc<AtomicU64>,
    after_effect: Arc<AtomicBool>,
}

impl Stall {
    /// Stalls every call until `until` (nanoseconds of [`now`]): before it takes effect, or
    /// after (`after_effect`).
    pub(super) fn stall_until(&self, until: u64, after_effect: bool) {
        self.after_effect.store(after_effect, Ordering::SeqCst);
        self.until.store(until, Ordering::SeqCst);
    }

    /// Ends the stall at once.
    pub(super) fn end(&self) {
        self.until.store(0, Ordering::SeqCst);
    }

    async fn wait(&self) {
        loop {
            let until = self.until.load(Ordering::SeqCst);
            let now = now();
            if now >= until {
                return;
            }
            tokio::time::sleep(Duration::from_nanos(until - now)).await;
        }
    }

    async fn before(&self) {
        if !self.after_effect.load(Ordering::SeqCst) {
            self.wait().await;
        }
    }

    async fn after(&self) {
        if self.after_effect.load(Ordering::SeqCst) {
            self.wait().await;
        }
    }
}

/// A store whose calls can be stalled by the orchestrator.
pub(super) struct StallingStore {
    inner: SqliteStore,
    stall: Stall,
}

impl StallingStore {
    /// `inner`, stalled by `stall` (which the orchestrator keeps a clone of).
    pub(super) fn new(inner: SqliteStore, stall: Stall) -> StallingStore {
        StallingStore { inner, stall }
    }
}

macro_rules! stalled {
    ($self:ident . $call:ident ( $($arg:expr),* )) => {{
        $self.stall.before().await;
        let result = $self.inner.$call($($arg),*).await;
        $self.stall.after().await;
        result
    }};
}

#[async_trait]
impl Store for StallingStore {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> LeaseResult<Info> {
        stalled!(self.claim_lease(key, request))
    }
    async fn extend_lease(&mut self, key: &Key, request: &Request) -> LeaseResult<Info> {
        stalled!(self.extend_lease(key, request))
    }
    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> LeaseResult<()> {
        stalled!(self.revoke_lease(key, holder))
    }
    async fn leases(&mut self, keys: &[Key]) -> LeaseResult<std::collections::BTreeMap<Key, Info>> {
        stalled!(self.leases(keys))
    }
    async fn lease_group(
        &mut self,
        namespace: &str,
        model: &str,
    ) -> LeaseResult<std::collections::BTreeMap<Key, Info>> {
        stalled!(self.lease_group(namespace, model))
    }
    async fn pin_lease(&mut self, key: &Key, entity: &str) -> LeaseResult<()> {
        stalled!(self.pin_lease(key, entity))
    }
    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> LeaseResult<()> {
        stalled!(self.unpin_lease(key, entity))
    }
    async fn pinned(&mut self) -> LeaseResult<std::collections::BTreeMap<Key, Vec<String>>> {
        stalled!(self.pinned())
    }
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<LeaseResult<Outcome>> {
        stalled!(self.apply(ops))
    }
    async fn poll_changes(&mut self) -> LeaseResult<bool> {
        stalled!(self.poll_changes())
    }
    fn change_notifier(&mut self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.change_notifier()
    }
}
