//! Shared helpers of the manager's integration tests: a store that records every call, can be
//! scripted to fail chosen operations and can be held mid-call; a manager builder; and polling
//! helpers for the fake clock.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{DefaultSecretary, Error, Info, Key, Op, Outcome, Request, Result, Store};
use lease_manager::{Jitter, Manager, ManagerConfig, RetryPolicy};
use lease_testkit::{FakeClock, InMemoryStore};
use tokio::sync::Semaphore;

/// What a scripted op or read does instead of reaching the backing store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    Timeout,
    Invalid,
    Held,
    Broken,
}

impl Fail {
    fn error(self) -> Error {
        match self {
            Fail::Timeout => Error::Timeout,
            Fail::Invalid => Error::Invalid,
            Fail::Held => Error::Held,
            Fail::Broken => Error::store_msg("disk on fire"),
        }
    }
}

#[derive(Debug, Default)]
struct Script {
    log: Vec<String>,
    /// Consumed one per op of `apply` (front first); `None` passes the op through.
    ops: VecDeque<Option<Fail>>,
    /// Consumed one per `leases` call.
    reads: VecDeque<Option<Fail>>,
    applies: usize,
}

/// A store over an [`InMemoryStore`] that logs each call, fails scripted ops, and can be held
/// before `apply` until the test lets it go.
#[derive(Clone)]
pub struct ScriptStore {
    inner: Arc<tokio::sync::Mutex<InMemoryStore>>,
    script: Arc<Mutex<Script>>,
    gate: Option<Arc<Semaphore>>,
}

fn op_text(op: &Op) -> String {
    match op {
        Op::Claim { key, request } => format!("claim {} {}", key.lease, request.holder),
        Op::Extend { key, request } => format!("extend {} {}", key.lease, request.holder),
        Op::Revoke { key, holder } => format!("revoke {} {holder}", key.lease),
    }
}

impl ScriptStore {
    pub fn new(clock: &FakeClock) -> Self {
        ScriptStore::over(InMemoryStore::new(clock.as_clock()))
    }

    pub fn over(store: InMemoryStore) -> Self {
        ScriptStore {
            inner: Arc::new(tokio::sync::Mutex::new(store)),
            script: Arc::new(Mutex::new(Script::default())),
            gate: None,
        }
    }

    /// The same store, holding every `apply` until [`ScriptStore::release`].
    pub fn gated(mut self) -> Self {
        self.gate = Some(Arc::new(Semaphore::new(0)));
        self
    }

    pub fn release(&self, n: usize) {
        if let Some(gate) = &self.gate {
            gate.add_permits(n);
        }
    }

    pub fn fail_ops(&self, fails: impl IntoIterator<Item = Option<Fail>>) {
        self.script.lock().unwrap().ops.extend(fails);
    }

    pub fn fail_reads(&self, fails: impl IntoIterator<Item = Option<Fail>>) {
        self.script.lock().unwrap().reads.extend(fails);
    }

    pub fn log(&self) -> Vec<String> {
        self.script.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.script.lock().unwrap().log.clear();
    }

    /// How many `apply` calls have started.
    pub fn applies(&self) -> usize {
        self.script.lock().unwrap().applies
    }

    fn note(&self, entry: String) {
        self.script.lock().unwrap().log.push(entry);
    }

    /// A direct handle on the backing store, bypassing the manager (another process).
    pub async fn sibling(&self) -> InMemoryStore {
        self.inner.lock().await.sibling()
    }
}

#[async_trait]
impl Store for ScriptStore {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.note(format!("claim_lease {}", key.lease));
        self.inner.lock().await.claim_lease(key, request).await
    }
    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.note(format!("extend_lease {}", key.lease));
        self.inner.lock().await.extend_lease(key, request).await
    }
    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()> {
        self.note(format!("revoke_lease {}", key.lease));
        self.inner.lock().await.revoke_lease(key, holder).await
    }
    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        let names: Vec<&str> = keys.iter().map(|k| k.lease.as_str()).collect();
        self.note(format!("leases [{}]", names.join(", ")));
        let fail = self.script.lock().unwrap().reads.pop_front().flatten();
        if let Some(fail) = fail {
            return Err(fail.error());
        }
        self.inner.lock().await.leases(keys).await
    }
    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>> {
        self.note(format!("lease_group {namespace} {model}"));
        self.inner.lock().await.lease_group(namespace, model).await
    }
    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.note(format!("pin {} {entity}", key.lease));
        self.inner.lock().await.pin_lease(key, entity).await
    }
    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.note(format!("unpin {} {entity}", key.lease));
        self.inner.lock().await.unpin_lease(key, entity).await
    }
    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        self.note("pinned".into());
        self.inner.lock().await.pinned().await
    }
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        let text: Vec<String> = ops.iter().map(op_text).collect();
        self.note(format!("apply [{}]", text.join(", ")));
        self.script.lock().unwrap().applies += 1;
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate closed").forget();
        }
        let mut results = Vec::new();
        for op in ops {
            let fail = self.script.lock().unwrap().ops.pop_front().flatten();
            match fail {
                Some(fail) => results.push(Err(fail.error())),
                None => {
                    let mut r = self.inner.lock().await.apply(vec![op]).await;
                    results.push(r.pop().expect("one result"));
                }
            }
        }
        results
    }
    async fn poll_changes(&mut self) -> Result<bool> {
        self.note("poll_changes".into());
        self.inner.lock().await.poll_changes().await
    }
}

pub const NS: &str = "test-ns";
pub const MODEL: &str = "model-1";

/// A config with a default secretary, exact (unjittered) retries and slow refreshes, so the
/// worker's only timers are the ones a test is about.
pub fn config(store: impl Store + 'static, clock: &FakeClock) -> ManagerConfig {
    ManagerConfig::new(store, clock.as_clock())
        .with_default_secretary(Arc::new(DefaultSecretary))
        .with_retry(RetryPolicy {
            jitter: Jitter::None,
            ..RetryPolicy::default()
        })
        .with_refresh_interval(Duration::from_secs(3600))
        .with_max_sleep(Duration::from_secs(3600))
}

pub fn start(store: impl Store + 'static, clock: &FakeClock) -> Manager {
    Manager::start(config(store, clock)).expect("valid config")
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

pub fn req(holder: &str, d: Duration) -> Request {
    Request::new(holder, d)
}

/// Lets other tasks run until `cond` holds (bounded, so a broken test fails rather than hangs).
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("timed out waiting until {what}");
}

/// Lets other tasks run for a while (to show that something does *not* happen).
pub async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}
