//! The simulator's store layer: one backing on true time (the in-memory store, the reference
//! semantics, a server with a perfect clock; or, with `--sqlite`, lease-store-sqlite on a temp
//! file, judging expiry on the same true clock), seen by each process through a [`SimStore`]
//! that injects the simulator's faults and converts expiries to the process's own clock.
//!
//! Faults, each drawn from the run's one random source: a call that times out before taking
//! effect or after it, an `Invalid` answer, latency from a long-tailed distribution before and
//! after the effect, and batches split in two parts applied at different instants (the second
//! part may then time out), and partitions (every call of a process times out for a while,
//! as when it is cut off the network). A paused process's calls neither start nor return until it resumes
//! (the answer waits in its socket); a crashed process's calls never complete. Every write's
//! result is noted in the world's record ([`note`]) so the checker can compare each client's
//! windows with what the store really held.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{
    Clock, Error, Info, Key, Op, Outcome, Request, Result, StartedApply, Store, Timestamp,
};
use lease_testkit::FakeClock;
use tokio::sync::watch;

use crate::clock::DriftClock;
use crate::world::{StoreChange, StoreOp, World};

/// What was decided for one call before it reaches the backing.
struct Plan {
    timeout_after: bool,
    after: Duration,
    start_own: Timestamp,
}

/// One process's view of the shared store: its calls (`Calls`) one at a time, in the order
/// they reach the lock, and its change notices.
///
/// A batch started ahead ([`Store::start_apply`], the manager's pipeline) runs as a task of
/// its own that takes its turn at the lock at once, so it may run before or after the calls the
/// manager makes meanwhile (its re-reads of the batch in flight), with the simulator's faults
/// as any batch; one whose future is dropped before its turn is never applied.
pub struct SimStore {
    calls: Arc<tokio::sync::Mutex<Calls>>,
    changes: Option<watch::Receiver<u64>>,
    process: usize,
}

/// One process's calls to the shared store, each with its faults.
struct Calls {
    inner: Box<dyn Store + Sync>,
    /// Whether the backing does its work on other threads (SQLite's calls run on tokio's
    /// blocking pool): then each call is waited for on the simulation's thread (see
    /// [`settle`]).
    blocking: bool,
    clock: DriftClock,
    world: Arc<World>,
    process: usize,
}

impl std::fmt::Debug for SimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStore")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl SimStore {
    /// Process `process`'s view of the store through `inner`, its own handle on the backing
    /// (which must judge expiry on the world's true clock); `blocking` for a backing whose
    /// calls run on other threads.
    pub fn new(
        inner: Box<dyn Store + Sync>,
        blocking: bool,
        clock: DriftClock,
        world: Arc<World>,
        process: usize,
    ) -> SimStore {
        SimStore {
            changes: Some(world.change_channel()),
            calls: Arc::new(tokio::sync::Mutex::new(Calls {
                inner,
                blocking,
                clock,
                world,
                process,
            })),
            process,
        }
    }
}

/// Marks a started batch abandoned when its future is dropped: if its turn has not come, it
/// never runs.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[async_trait]
impl Store for SimStore {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.calls.lock().await.claim_lease(key, request).await
    }
    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.calls.lock().await.extend_lease(key, request).await
    }
    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()> {
        self.calls.lock().await.revoke_lease(key, holder).await
    }
    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        self.calls.lock().await.leases(keys).await
    }
    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>> {
        self.calls.lock().await.lease_group(namespace, model).await
    }
    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.calls.lock().await.pin_lease(key, entity).await
    }
    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.calls.lock().await.unpin_lease(key, entity).await
    }
    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        self.calls.lock().await.pinned().await
    }
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        self.calls.lock().await.apply(ops).await
    }
    fn start_apply(&mut self, ops: Vec<Op>) -> std::result::Result<StartedApply, Vec<Op>> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ops);
        }
        let n = ops.len();
        let calls = Arc::clone(&self.calls);
        let wanted = Arc::new(AtomicBool::new(true));
        let abandon = Abandon(Arc::clone(&wanted));
        let p = self.process;
        // Spawned now, so it queues for the lock behind the calls already made and ahead of
        // the later ones, as a store's apply thread takes started batches in order.
        let task = tokio::spawn(async move {
            let mut calls = calls.lock().await;
            if !wanted.load(Ordering::Relaxed) {
                calls
                    .world
                    .log(|| format!("p{p} batch dropped before its turn"));
                return None;
            }
            Some(calls.apply(ops).await)
        });
        Ok(Box::pin(async move {
            let _abandon = abandon;
            match task.await {
                Ok(Some(results)) => results,
                _ => (0..n).map(|_| Err(Error::Timeout)).collect(),
            }
        }))
    }
    async fn poll_changes(&mut self) -> Result<bool> {
        self.calls.lock().await.poll_changes().await
    }
    fn change_notifier(&mut self) -> Option<watch::Receiver<u64>> {
        self.changes.take()
    }
}

impl Calls {
    fn truth(&self) -> &FakeClock {
        &self.world.truth
    }

    /// Records a claim or extend the manager sent, for the checker.
    fn sent(&self, key: &Key, holder: &str, claim: bool) {
        let process = self.process;
        self.world.record(|r| {
            r.ops.push(StoreOp {
                process,
                lease: format!("{}/{}", key.namespace, key.lease),
                holder: holder.to_owned(),
                claim,
            });
        });
    }

    /// Records what the store holds for `keys` right after a write, for the checker.
    async fn note(&mut self, keys: impl IntoIterator<Item = &Key>) {
        note(&mut *self.inner, self.blocking, &self.world, keys).await;
    }

    async fn sleep(&self, d: Duration) {
        if !d.is_zero() {
            let until = self.truth().now().saturating_add(d);
            Clock::sleep_until(self.truth(), until).await;
        }
    }

    /// Waits for the process to run, rolls the faults, and returns early with an error for a
    /// fault that strikes before the call takes effect.
    async fn before(&self, what: &'static str, write: bool) -> Result<Plan> {
        self.clock.gate().pass(self.truth()).await;
        let start_own = self.clock.now();
        if self.clock.gate().partitioned(self.truth().now()) {
            // The request never arrives; the client gives up after its own timeout.
            self.world.fault("partitioned call");
            let wait = self.world.rng(|r| r.u64(1_000_000..2_000_000_000));
            self.sleep(Duration::from_nanos(wait)).await;
            self.clock.gate().pass(self.truth()).await;
            let p = self.process;
            self.world
                .log(|| format!("p{p} {what} -> timeout (partitioned)"));
            return Err(Error::Timeout);
        }
        let cfg = &self.world.config;
        let (roll, slow_before, slow_after) = self
            .world
            .rng(|r| (r.f64(), r.f64() < cfg.latency, r.f64() < cfg.latency));
        let slow_before = slow_before && self.world.strikes();
        let slow_after = slow_after && self.world.strikes();
        let before = if slow_before {
            self.world.latency(cfg.max_latency)
        } else {
            Duration::ZERO
        };
        let after = if slow_after {
            self.world.latency(cfg.max_latency)
        } else {
            Duration::ZERO
        };
        let mut edge = cfg.timeout_before;
        let timeout_before = roll < edge;
        edge += cfg.timeout_after;
        let timeout_after = !timeout_before && roll < edge && write;
        edge += cfg.invalid;
        let invalid = !timeout_before && !timeout_after && roll < edge;
        let (timeout_before, timeout_after, invalid) =
            if (timeout_before || timeout_after || invalid) && !self.world.strikes() {
                (false, false, false)
            } else {
                (timeout_before, timeout_after, invalid)
            };
        self.sleep(before).await;
        let p = self.process;
        if timeout_before {
            self.world.fault("timeout before effect");
            self.sleep(after).await;
            self.clock.gate().pass(self.truth()).await;
            self.world
                .log(|| format!("p{p} {what} -> timeout (before effect)"));
            return Err(Error::Timeout);
        }
        if invalid {
            self.world.fault("invalid");
            self.sleep(after).await;
            self.clock.gate().pass(self.truth()).await;
            self.world.log(|| format!("p{p} {what} -> invalid"));
            return Err(Error::Invalid);
        }
        if timeout_after {
            self.world.fault("timeout after effect");
        }
        if !before.is_zero() || !after.is_zero() {
            self.world.fault("latency");
        }
        Ok(Plan {
            timeout_after,
            after,
            start_own,
        })
    }

    /// Delivers a result that took effect: late, or as a timeout, once the process runs.
    async fn after<T>(&self, what: &'static str, plan: &Plan, result: Result<T>) -> Result<T> {
        self.sleep(plan.after).await;
        self.clock.gate().pass(self.truth()).await;
        let p = self.process;
        if plan.timeout_after {
            self.world
                .log(|| format!("p{p} {what} -> timeout (after effect)"));
            return Err(Error::Timeout);
        }
        self.world.log(|| match &result {
            Ok(_) => format!("p{p} {what} -> ok"),
            Err(e) => format!("p{p} {what} -> {:?}", e.kind()),
        });
        result
    }

    /// `info` with its true-time expiry restated on this process's clock: the call's start
    /// plus the time the store had left (what a server-clock store reports).
    fn own(&self, start_own: Timestamp, mut info: Info) -> Info {
        let left = info.expiry.saturating_duration_since(self.truth().now());
        info.expiry = start_own.saturating_add(left);
        info
    }

    fn own_map(&self, start_own: Timestamp, map: BTreeMap<Key, Info>) -> BTreeMap<Key, Info> {
        map.into_iter()
            .map(|(k, i)| (k, self.own(start_own, i)))
            .collect()
    }

    fn own_outcome(&self, start_own: Timestamp, r: Result<Outcome>) -> Result<Outcome> {
        r.map(|o| match o {
            Outcome::Claimed(i) => Outcome::Claimed(self.own(start_own, i)),
            Outcome::Extended(i) => Outcome::Extended(self.own(start_own, i)),
            Outcome::Revoked => Outcome::Revoked,
        })
    }
}

/// The simulator's own errors (the only ones `before` and `after` make), for every op of a batch.
fn again(e: &Error) -> Error {
    if e.is_invalid() {
        Error::Invalid
    } else {
        Error::Timeout
    }
}

/// Waits for a call to the backing: with `blocking`, on this thread, without letting the
/// runtime run anything else meanwhile. A backing that works on other threads (SQLite's
/// blocking pool) would otherwise wake its caller from another thread at an instant the
/// operating system decides, and the runtime would run its other tasks before or after it
/// depending on that: the order of the run would no longer be the seed's. Time cannot move
/// meanwhile either: only the driver moves it, and it is not running.
pub async fn settle<F: std::future::Future>(blocking: bool, call: F) -> F::Output {
    if blocking {
        // Outside tokio's cooperative budget: a budget spent inside this one poll would never
        // be refilled, and the call would be told to yield forever.
        block_on(tokio::task::unconstrained(call))
    } else {
        call.await
    }
}

/// Polls `future` to completion on this thread, parking it between wake-ups.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn op_key(op: &Op) -> &Key {
    match op {
        Op::Claim { key, .. } | Op::Extend { key, .. } | Op::Revoke { key, .. } => key,
    }
}

/// Records in the world what `store` (on true time) holds for `keys` now.
pub async fn note(
    store: &mut dyn Store,
    blocking: bool,
    world: &World,
    keys: impl IntoIterator<Item = &Key>,
) {
    let keys: Vec<Key> = keys.into_iter().cloned().collect();
    let held = settle(blocking, store.leases(&keys))
        .await
        .unwrap_or_default();
    let at = world.now();
    world.record(|r| {
        for k in &keys {
            r.history.push(StoreChange {
                at,
                lease: format!("{}/{}", k.namespace, k.lease),
                held: held
                    .get(k)
                    .map(|i| (i.holder.clone(), i.generation.get(), i.expiry.as_nanos())),
            });
        }
    });
}

fn describe(key: &Key, holder: &str) -> String {
    format!("{}/{} by {holder}", key.namespace, key.lease)
}

#[async_trait]
impl Store for Calls {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.sent(key, &request.holder, true);
        let plan = self.before("claim", true).await?;
        let p = self.process;
        self.world
            .log(|| format!("p{p} claim {}", describe(key, &request.holder)));
        let r = settle(self.blocking, self.inner.claim_lease(key, request)).await;
        self.note([key]).await;
        self.world.changed();
        let r = r.map(|i| self.own(plan.start_own, i));
        self.after("claim", &plan, r).await
    }

    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.sent(key, &request.holder, false);
        let plan = self.before("extend", true).await?;
        let p = self.process;
        self.world
            .log(|| format!("p{p} extend {}", describe(key, &request.holder)));
        let r = settle(self.blocking, self.inner.extend_lease(key, request)).await;
        self.note([key]).await;
        self.world.changed();
        let r = r.map(|i| self.own(plan.start_own, i));
        self.after("extend", &plan, r).await
    }

    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()> {
        let plan = self.before("revoke", true).await?;
        let p = self.process;
        self.world
            .log(|| format!("p{p} revoke {}", describe(key, holder)));
        let r = settle(self.blocking, self.inner.revoke_lease(key, holder)).await;
        self.note([key]).await;
        self.world.changed();
        self.after("revoke", &plan, r).await
    }

    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        let plan = self.before("read", false).await?;
        let r = settle(self.blocking, self.inner.leases(keys)).await;
        let r = r.map(|m| self.own_map(plan.start_own, m));
        self.after("read", &plan, r).await
    }

    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>> {
        let plan = self.before("read group", false).await?;
        let r = settle(self.blocking, self.inner.lease_group(namespace, model)).await;
        let r = r.map(|m| self.own_map(plan.start_own, m));
        self.after("read group", &plan, r).await
    }

    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        let plan = self.before("pin", true).await?;
        let r = settle(self.blocking, self.inner.pin_lease(key, entity)).await;
        self.world.changed();
        self.after("pin", &plan, r).await
    }

    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        let plan = self.before("unpin", true).await?;
        let r = settle(self.blocking, self.inner.unpin_lease(key, entity)).await;
        self.world.changed();
        self.after("unpin", &plan, r).await
    }

    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        let plan = self.before("pinned", false).await?;
        let r = settle(self.blocking, self.inner.pinned()).await;
        self.after("pinned", &plan, r).await
    }

    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        let n = ops.len();
        for op in &ops {
            match op {
                Op::Claim { key, request } => self.sent(key, &request.holder, true),
                Op::Extend { key, request } => self.sent(key, &request.holder, false),
                Op::Revoke { .. } => {}
            }
        }
        let plan = match self.before("batch", true).await {
            Ok(plan) => plan,
            Err(e) => return (0..n).map(|_| Err(again(&e))).collect(),
        };
        let p = self.process;
        for op in &ops {
            self.world.log(|| match op {
                Op::Claim { key, request } => {
                    format!("p{p} +claim {}", describe(key, &request.holder))
                }
                Op::Extend { key, request } => {
                    format!("p{p} +extend {}", describe(key, &request.holder))
                }
                Op::Revoke { key, holder } => format!("p{p} +revoke {}", describe(key, holder)),
            });
        }
        let split =
            n >= 2 && self.world.rng(|r| r.f64() < self.world.config.split) && self.world.strikes();
        let mut results = Vec::with_capacity(n);
        if split {
            self.world.fault("batch split");
            let at = self.world.rng(|r| r.usize(1..n));
            let mut ops = ops;
            let second = ops.split_off(at);
            let keys: Vec<Key> = ops.iter().map(|op| op_key(op).clone()).collect();
            for r in settle(self.blocking, self.inner.apply(ops)).await {
                results.push(self.own_outcome(plan.start_own, r));
            }
            self.note(&keys).await;
            self.world.changed();
            let gap = self.world.latency(self.world.config.max_latency);
            self.sleep(gap).await;
            // The second part is a transaction of its own: it may fail as one.
            let lost = self
                .world
                .rng(|r| r.f64() < self.world.config.timeout_before * 4.0)
                && self.world.strikes();
            if lost {
                self.world.fault("timeout before effect");
                results.extend((0..second.len()).map(|_| Err(Error::Timeout)));
            } else {
                let keys: Vec<Key> = second.iter().map(|op| op_key(op).clone()).collect();
                for r in settle(self.blocking, self.inner.apply(second)).await {
                    results.push(self.own_outcome(plan.start_own, r));
                }
                self.note(&keys).await;
                self.world.changed();
            }
        } else {
            let keys: Vec<Key> = ops.iter().map(|op| op_key(op).clone()).collect();
            for r in settle(self.blocking, self.inner.apply(ops)).await {
                results.push(self.own_outcome(plan.start_own, r));
            }
            self.note(&keys).await;
            self.world.changed();
        }
        match self.after("batch", &plan, Ok(())).await {
            Ok(()) => results,
            Err(e) => (0..n).map(|_| Err(again(&e))).collect(),
        }
    }

    async fn poll_changes(&mut self) -> Result<bool> {
        self.clock.gate().pass(&self.world.truth).await;
        let r = settle(self.blocking, self.inner.poll_changes()).await;
        self.clock.gate().pass(&self.world.truth).await;
        r
    }
}
