//! Shared helpers of the manager's integration tests: a store (the testkit's doubles, stacked)
//! that records every call, can be scripted to fail chosen operations and can be held
//! mid-call; a manager builder; and polling helpers for the fake clock.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lease_core::{DefaultSecretary, Op, Request, Store};
use lease_manager::{Jitter, Manager, ManagerConfig, RetryPolicy};
use lease_testkit::{
    CountHandle, CountingStore, FakeClock, Fault, FaultHandle, FaultyStore, InMemoryStore,
    StoreCall,
};

/// What a scripted op or read does instead of reaching the backing store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    Timeout,
    Invalid,
    Broken,
}

impl From<Fail> for Fault {
    fn from(fail: Fail) -> Fault {
        match fail {
            Fail::Timeout => Fault::TimeoutBefore,
            Fail::Invalid => Fault::Invalid,
            // Says "disk on fire" (see `ScriptStore::new`).
            Fail::Broken => Fault::StoreError,
        }
    }
}

/// The store the manager tests run on: an [`InMemoryStore`] behind the testkit's
/// [`FaultyStore`] (no random faults; planned ones, and batches held if asked), behind a
/// [`CountingStore`] that logs every call.
pub type Scripted = CountingStore<FaultyStore<InMemoryStore>>;

/// A test's hold on a [`Scripted`] store: the store itself until [`ScriptStore::take_store`]
/// moves it into a manager, and what stays with the test: the call log, the planned faults,
/// the batch gate and the backing.
#[derive(Clone)]
pub struct ScriptStore {
    store: Arc<Mutex<Option<Scripted>>>,
    calls: CountHandle,
    faults: FaultHandle,
    backing: Arc<InMemoryStore>,
}

fn op_text(op: &Op) -> String {
    match op {
        Op::Claim { key, request } => format!("claim {} {}", key.lease, request.holder),
        Op::Extend { key, request } => format!("extend {} {}", key.lease, request.holder),
        Op::Revoke { key, holder } => format!("revoke {} {holder}", key.lease),
    }
}

/// A call as the tests' logs spell it.
fn call_text(call: &StoreCall) -> String {
    match call {
        StoreCall::Op(Op::Claim { key, .. }) => format!("claim_lease {}", key.lease),
        StoreCall::Op(Op::Extend { key, .. }) => format!("extend_lease {}", key.lease),
        StoreCall::Op(Op::Revoke { key, .. }) => format!("revoke_lease {}", key.lease),
        StoreCall::Leases { keys } => {
            let names: Vec<&str> = keys.iter().map(|k| k.lease.as_str()).collect();
            format!("leases [{}]", names.join(", "))
        }
        StoreCall::LeaseGroup { namespace, model } => format!("lease_group {namespace} {model}"),
        StoreCall::Pin { key, entity } => format!("pin {} {entity}", key.lease),
        StoreCall::Unpin { key, entity } => format!("unpin {} {entity}", key.lease),
        StoreCall::Pinned => "pinned".into(),
        StoreCall::Apply { ops } => {
            let text: Vec<String> = ops.iter().map(op_text).collect();
            format!("apply [{}]", text.join(", "))
        }
        StoreCall::PollChanges => "poll_changes".into(),
    }
}

impl ScriptStore {
    pub fn new(clock: &FakeClock) -> Self {
        ScriptStore::build(clock, false)
    }

    /// A store holding every `apply` until [`ScriptStore::release`].
    pub fn gated(clock: &FakeClock) -> Self {
        ScriptStore::build(clock, true)
    }

    fn build(clock: &FakeClock, gated: bool) -> Self {
        let store = InMemoryStore::new(clock.as_clock());
        let backing = store.sibling();
        // No change notifier: the manager learns of changes only when a test makes it poll.
        let mut faulty = FaultyStore::new(store, clock.as_clock(), 0)
            .with_store_error_message("disk on fire")
            .without_change_notifier();
        if gated {
            faulty = faulty.with_held_batches();
        }
        let faults = faulty.handle();
        let counting = CountingStore::new(faulty).with_call_log();
        ScriptStore {
            calls: counting.handle(),
            store: Arc::new(Mutex::new(Some(counting))),
            faults,
            backing: Arc::new(backing),
        }
    }

    /// The store, to move into a manager (once).
    pub fn take_store(&self) -> Scripted {
        self.store
            .lock()
            .unwrap()
            .take()
            .expect("the scripted store was taken already")
    }

    pub fn release(&self, n: usize) {
        self.faults.release_batches(n);
    }

    pub fn fail_ops(&self, fails: impl IntoIterator<Item = Option<Fail>>) {
        self.faults
            .plan_ops(fails.into_iter().map(|f| f.map(Fault::from)));
    }

    pub fn fail_reads(&self, fails: impl IntoIterator<Item = Option<Fail>>) {
        self.faults
            .plan_reads(fails.into_iter().map(|f| f.map(Fault::from)));
    }

    pub fn log(&self) -> Vec<String> {
        self.calls.calls().iter().map(call_text).collect()
    }

    pub fn clear_log(&self) {
        self.calls.clear_calls();
    }

    /// How many `apply` calls have started.
    pub fn applies(&self) -> usize {
        usize::try_from(self.calls.counts().applies).expect("fits")
    }

    /// A direct handle on the backing store, bypassing the manager (another process).
    pub async fn sibling(&self) -> InMemoryStore {
        self.backing.sibling()
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
