//! [`CountingStore`]: a [`Store`] wrapper that counts the calls reaching the store it wraps, by
//! method and by op, and keeps a copy of the change notifier it handed out, so a test can
//! assert how much store traffic the code under test made (a denial that needed no store call,
//! a batch of many ops in one transaction, a change noticed without a poll), and, if asked,
//! every call with its arguments, in order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use lease_core::{Info, Key, Op, Outcome, Request, Result, Store};
use tokio::sync::watch;

use crate::StoreCall;

/// How many calls a [`CountingStore`] has passed to the store it wraps, by kind. Every call is
/// counted when it is made, whatever it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CallCounts {
    /// [`Store::claim_lease`] calls.
    pub claim_lease: u64,
    /// [`Store::extend_lease`] calls.
    pub extend_lease: u64,
    /// [`Store::revoke_lease`] calls.
    pub revoke_lease: u64,
    /// [`Store::leases`] calls.
    pub leases: u64,
    /// [`Store::lease_group`] calls.
    pub lease_group: u64,
    /// [`Store::pin_lease`] calls.
    pub pin_lease: u64,
    /// [`Store::unpin_lease`] calls.
    pub unpin_lease: u64,
    /// [`Store::pinned`] calls.
    pub pinned: u64,
    /// [`Store::apply`] calls (batches, each counted once however many ops it holds).
    pub applies: u64,
    /// The ops of every batch, of any kind.
    pub ops: u64,
    /// [`Op::Claim`]s in batches.
    pub claims: u64,
    /// [`Op::Extend`]s in batches.
    pub extends: u64,
    /// [`Op::Revoke`]s in batches.
    pub revokes: u64,
    /// [`Store::poll_changes`] calls.
    pub polls: u64,
    /// [`Store::poll_changes`] calls that answered `Ok(true)` (a change was seen).
    pub changed_polls: u64,
}

#[derive(Debug, Default)]
struct Counters {
    claim_lease: AtomicU64,
    extend_lease: AtomicU64,
    revoke_lease: AtomicU64,
    leases: AtomicU64,
    lease_group: AtomicU64,
    pin_lease: AtomicU64,
    unpin_lease: AtomicU64,
    pinned: AtomicU64,
    applies: AtomicU64,
    ops: AtomicU64,
    claims: AtomicU64,
    extends: AtomicU64,
    revokes: AtomicU64,
    polls: AtomicU64,
    changed_polls: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
}

#[derive(Debug, Default)]
struct Shared {
    counters: Counters,
    /// A clone of the last receiver [`Store::change_notifier`] handed out.
    notifier: Mutex<Option<watch::Receiver<u64>>>,
    /// Every call, in order, when recording ([`CountingStore::with_call_log`]).
    log: Mutex<Option<Vec<StoreCall>>>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Option<Vec<StoreCall>>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the call `call` makes to the log, if recording (built only then).
    fn record(&self, call: impl FnOnce() -> StoreCall) {
        if let Some(log) = self.log().as_mut() {
            log.push(call());
        }
    }
}

/// A cloneable handle on a [`CountingStore`]'s counts, kept by the test after the store itself
/// has been moved into a manager.
#[derive(Debug, Clone)]
pub struct CountHandle {
    shared: Arc<Shared>,
}

impl CountHandle {
    /// The calls counted so far.
    pub fn counts(&self) -> CallCounts {
        let c = &self.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        CallCounts {
            claim_lease: load(&c.claim_lease),
            extend_lease: load(&c.extend_lease),
            revoke_lease: load(&c.revoke_lease),
            leases: load(&c.leases),
            lease_group: load(&c.lease_group),
            pin_lease: load(&c.pin_lease),
            unpin_lease: load(&c.unpin_lease),
            pinned: load(&c.pinned),
            applies: load(&c.applies),
            ops: load(&c.ops),
            claims: load(&c.claims),
            extends: load(&c.extends),
            revokes: load(&c.revokes),
            polls: load(&c.polls),
            changed_polls: load(&c.changed_polls),
        }
    }

    /// A clone of the last change notifier the wrapped store handed out through
    /// [`Store::change_notifier`]; `None` if none was asked for or the store has none.
    pub fn notifier(&self) -> Option<watch::Receiver<u64>> {
        self.shared
            .notifier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every call made so far (since the last [`CountHandle::clear_calls`]), in order, with its
    /// arguments; empty unless the store was built [`with_call_log`](CountingStore::with_call_log).
    pub fn calls(&self) -> Vec<StoreCall> {
        self.shared.log().clone().unwrap_or_default()
    }

    /// Empties the log of calls (the counts stay).
    pub fn clear_calls(&self) {
        if let Some(log) = self.shared.log().as_mut() {
            log.clear();
        }
    }
}

/// A [`Store`] that passes every call to the store it wraps, unchanged, and counts it
/// ([`CallCounts`], read through a [`CountHandle`]).
///
/// ```
/// use std::time::Duration;
/// use lease_core::{Key, Op, Request, Store};
/// use lease_testkit::{CountingStore, FakeClock, InMemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let clock = FakeClock::new();
/// let mut store = CountingStore::new(InMemoryStore::new(clock.as_clock()));
/// let counts = store.handle();
///
/// let key = Key::new("ns", "model", "lease");
/// let request = Request::new("h", Duration::from_secs(5));
/// store.apply(vec![Op::Claim { key: key.clone(), request }]).await;
/// store.leases(&[key]).await.unwrap();
///
/// let seen = counts.counts();
/// assert_eq!((seen.applies, seen.claims, seen.leases), (1, 1, 1));
/// # }
/// ```
#[derive(Debug)]
pub struct CountingStore<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> CountingStore<S> {
    /// Wraps `inner`, with every count at zero.
    pub fn new(inner: S) -> CountingStore<S> {
        CountingStore {
            inner,
            shared: Arc::default(),
        }
    }

    /// The same store, also keeping every call with its arguments, in order
    /// ([`CountHandle::calls`]).
    #[must_use]
    pub fn with_call_log(self) -> CountingStore<S> {
        *self.shared.log() = Some(Vec::new());
        self
    }

    /// A handle to read the counts, kept after the store is moved away.
    pub fn handle(&self) -> CountHandle {
        CountHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped store, mutably (calls through it are not counted).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }
}

#[async_trait]
impl<S: Store> Store for CountingStore<S> {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        bump(&self.counters().claim_lease);
        self.shared.record(|| {
            StoreCall::Op(Op::Claim {
                key: key.clone(),
                request: request.clone(),
            })
        });
        self.inner.claim_lease(key, request).await
    }

    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        bump(&self.counters().extend_lease);
        self.shared.record(|| {
            StoreCall::Op(Op::Extend {
                key: key.clone(),
                request: request.clone(),
            })
        });
        self.inner.extend_lease(key, request).await
    }

    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()> {
        bump(&self.counters().revoke_lease);
        self.shared.record(|| {
            StoreCall::Op(Op::Revoke {
                key: key.clone(),
                holder: holder.to_owned(),
            })
        });
        self.inner.revoke_lease(key, holder).await
    }

    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        bump(&self.counters().leases);
        self.shared.record(|| StoreCall::Leases {
            keys: keys.to_vec(),
        });
        self.inner.leases(keys).await
    }

    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>> {
        bump(&self.counters().lease_group);
        self.shared.record(|| StoreCall::LeaseGroup {
            namespace: namespace.to_owned(),
            model: model.to_owned(),
        });
        self.inner.lease_group(namespace, model).await
    }

    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        bump(&self.counters().pin_lease);
        self.shared.record(|| StoreCall::Pin {
            key: key.clone(),
            entity: entity.to_owned(),
        });
        self.inner.pin_lease(key, entity).await
    }

    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        bump(&self.counters().unpin_lease);
        self.shared.record(|| StoreCall::Unpin {
            key: key.clone(),
            entity: entity.to_owned(),
        });
        self.inner.unpin_lease(key, entity).await
    }

    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        bump(&self.counters().pinned);
        self.shared.record(|| StoreCall::Pinned);
        self.inner.pinned().await
    }

    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        self.shared.record(|| StoreCall::Apply { ops: ops.clone() });
        let c = self.counters();
        bump(&c.applies);
        for op in &ops {
            bump(&c.ops);
            bump(match op {
                Op::Claim { .. } => &c.claims,
                Op::Extend { .. } => &c.extends,
                Op::Revoke { .. } => &c.revokes,
            });
        }
        self.inner.apply(ops).await
    }

    async fn poll_changes(&mut self) -> Result<bool> {
        bump(&self.counters().polls);
        self.shared.record(|| StoreCall::PollChanges);
        let changed = self.inner.poll_changes().await;
        if matches!(changed, Ok(true)) {
            bump(&self.counters().changed_polls);
        }
        changed
    }

    fn change_notifier(&mut self) -> Option<watch::Receiver<u64>> {
        let rx = self.inner.change_notifier();
        rx.clone_into(
            &mut self
                .shared
                .notifier
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        rx
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{FakeClock, InMemoryStore};

    fn key(lease: &str) -> Key {
        Key::new("ns", "model", lease)
    }

    fn req(holder: &str) -> Request {
        Request::new(holder, Duration::from_secs(10))
    }

    #[tokio::test]
    async fn counts_each_method_once_per_call() {
        let clock = FakeClock::new();
        let mut store = CountingStore::new(InMemoryStore::new(clock.as_clock()));
        let handle = store.handle();
        let k = key("a");
        store.claim_lease(&k, &req("h")).await.unwrap();
        store.extend_lease(&k, &req("h")).await.unwrap();
        store.pin_lease(&k, "e").await.unwrap();
        store.pinned().await.unwrap();
        store.unpin_lease(&k, "e").await.unwrap();
        store.leases(&[]).await.unwrap();
        store.lease_group("ns", "model").await.unwrap();
        store.revoke_lease(&k, "h").await.unwrap();
        assert_eq!(
            handle.counts(),
            CallCounts {
                claim_lease: 1,
                extend_lease: 1,
                revoke_lease: 1,
                leases: 1,
                lease_group: 1,
                pin_lease: 1,
                unpin_lease: 1,
                pinned: 1,
                ..CallCounts::default()
            }
        );
    }

    #[tokio::test]
    async fn counts_a_batch_once_and_each_op_by_kind() {
        let clock = FakeClock::new();
        let mut store = CountingStore::new(InMemoryStore::new(clock.as_clock()));
        let handle = store.handle();
        let results = store
            .apply(vec![
                Op::Claim {
                    key: key("a"),
                    request: req("h"),
                },
                Op::Claim {
                    key: key("b"),
                    request: req("h"),
                },
                Op::Extend {
                    key: key("a"),
                    request: req("h"),
                },
                Op::Revoke {
                    key: key("b"),
                    holder: "h".into(),
                },
            ])
            .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let seen = handle.counts();
        assert_eq!(
            (
                seen.applies,
                seen.ops,
                seen.claims,
                seen.extends,
                seen.revokes
            ),
            (1, 4, 2, 1, 1)
        );
        assert_eq!(seen.claim_lease, 0, "ops in a batch are not single calls");
    }

    #[tokio::test]
    async fn failed_calls_are_counted_and_passed_through() {
        let clock = FakeClock::new();
        let mut store = CountingStore::new(InMemoryStore::new(clock.as_clock()));
        let handle = store.handle();
        let err = store.revoke_lease(&key("absent"), "h").await.unwrap_err();
        assert!(err.is_invalid(), "{err:?}");
        assert_eq!(handle.counts().revoke_lease, 1);
    }

    #[tokio::test]
    async fn polls_count_changes_seen_and_keep_the_notifier() {
        let clock = FakeClock::new();
        let backing = InMemoryStore::new(clock.as_clock());
        let mut other = backing.sibling();
        let mut store = CountingStore::new(backing);
        let handle = store.handle();
        assert!(handle.notifier().is_none(), "nothing asked for yet");
        let rx = store.change_notifier();
        assert!(rx.is_some() && handle.notifier().is_some());

        assert!(!store.poll_changes().await.unwrap());
        other.claim_lease(&key("a"), &req("o")).await.unwrap();
        assert!(
            store.poll_changes().await.unwrap(),
            "a sibling's write is news"
        );
        let seen = handle.counts();
        assert_eq!((seen.polls, seen.changed_polls), (2, 1));
        let kept = handle.notifier().expect("kept");
        assert_eq!(*kept.borrow(), *rx.expect("handed out").borrow());
        // The inner store was reached only through the wrapper's own calls.
        assert_eq!(store.inner_mut().leases(&[]).await.unwrap().len(), 1);
        assert_eq!(
            handle.counts().leases,
            0,
            "calls through inner_mut are not counted"
        );
    }

    #[tokio::test]
    async fn the_call_log_keeps_every_call_in_order_only_when_asked() {
        let clock = FakeClock::new();
        let mut plain = CountingStore::new(InMemoryStore::new(clock.as_clock()));
        plain.leases(&[]).await.unwrap();
        assert!(plain.handle().calls().is_empty(), "no log unless asked");

        let mut store = CountingStore::new(InMemoryStore::new(clock.as_clock())).with_call_log();
        let handle = store.handle();
        let claim = Op::Claim {
            key: key("a"),
            request: req("h"),
        };
        store.apply(vec![claim.clone()]).await;
        store.revoke_lease(&key("a"), "h").await.unwrap();
        store.leases(&[key("a")]).await.unwrap();
        store.poll_changes().await.unwrap();
        assert_eq!(
            handle.calls(),
            [
                StoreCall::Apply { ops: vec![claim] },
                StoreCall::Op(Op::Revoke {
                    key: key("a"),
                    holder: "h".into()
                }),
                StoreCall::Leases {
                    keys: vec![key("a")]
                },
                StoreCall::PollChanges,
            ]
        );
        handle.clear_calls();
        store.pinned().await.unwrap();
        assert_eq!(handle.calls(), [StoreCall::Pinned]);
        assert_eq!(
            handle.counts().applies,
            1,
            "clearing the log keeps the counts"
        );
    }
}
