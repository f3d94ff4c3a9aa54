//! [`InMemoryStore`]: the reference [`Store`], kept in memory and driven by an injected
//! [`Clock`]. It implements every clause of the Store contract and passes the conformance
//! suite; several instances can share one backing, like processes sharing one SQLite file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use lease_core::{
    Clock, Error, Generation, Info, Key, Op, Outcome, Request, Result, Store, Timestamp,
    validate_string,
};
use tokio::sync::watch;

/// One recorded claim.
#[derive(Debug, Clone)]
struct Record {
    holder: String,
    expiry: Timestamp,
    generation: Generation,
    metadata: Option<serde_json::Value>,
}

/// The state every sibling shares.
#[derive(Debug, Default)]
struct Data {
    leases: BTreeMap<Key, Record>,
    /// Pins by key, whether or not the lease exists (a pin on an absent lease waits for its
    /// next claimant). Never holds an empty set.
    pins: BTreeMap<Key, BTreeSet<String>>,
    /// The last generation handed out per key; never forgotten, so generations survive
    /// revoke, expiry and the removal of records.
    generations: BTreeMap<Key, u64>,
    /// Writes by anyone.
    version: u64,
    /// Writes by each instance.
    writes_by: HashMap<u64, u64>,
    next_instance: u64,
}

struct Backing {
    data: Mutex<Data>,
    changes: watch::Sender<u64>,
}

impl Backing {
    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A complete [`Store`] in memory: the reference implementation of the Store contract.
///
/// Expiry is decided by the [`Clock`] it is given (a [`FakeClock`](crate::FakeClock) in
/// tests): a lease is expired once `now >= expiry`, unless pinned. [`InMemoryStore::sibling`]
/// gives another instance over the same backing, as a second process would open the same
/// database, so multi-instance behaviour (change polling, concurrent claims) can be tested.
///
/// [`Store::apply`] applies a batch under one lock, reading the clock once: the batch is
/// atomic with respect to siblings. [`Store::poll_changes`] says yes only when a sibling wrote
/// since this instance last asked, and [`Store::change_notifier`] is bumped on every write by
/// any instance.
///
/// ```
/// use std::time::Duration;
/// use lease_core::{Key, Request, Store};
/// use lease_testkit::{FakeClock, InMemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lease_core::Result<()> {
/// let clock = FakeClock::new();
/// let mut store = InMemoryStore::new(clock.as_clock());
/// let key = Key::new("singular-controller", "model-1", "backup");
///
/// let info = store.claim_lease(&key, &Request::new("machine-0", Duration::from_secs(10))).await?;
/// assert_eq!(info.holder, "machine-0");
///
/// let mut other = store.sibling();
/// let err = other.claim_lease(&key, &Request::new("machine-1", Duration::from_secs(10))).await;
/// assert!(err.unwrap_err().is_held());
///
/// clock.advance(Duration::from_secs(10));
/// assert!(store.leases(&[]).await?.is_empty());
/// # Ok(())
/// # }
/// ```
pub struct InMemoryStore {
    backing: Arc<Backing>,
    clock: Arc<dyn Clock>,
    id: u64,
    /// Writes by other instances, as of this instance's last poll.
    seen_foreign: u64,
}

impl InMemoryStore {
    /// An empty store whose expiries are decided by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> InMemoryStore {
        let (changes, _) = watch::channel(0);
        let backing = Arc::new(Backing {
            data: Mutex::new(Data::default()),
            changes,
        });
        InMemoryStore::attach(backing, clock)
    }

    fn attach(backing: Arc<Backing>, clock: Arc<dyn Clock>) -> InMemoryStore {
        let (id, seen_foreign) = {
            let mut data = backing.lock();
            let id = data.next_instance;
            data.next_instance += 1;
            (id, data.version)
        };
        InMemoryStore {
            backing,
            clock,
            id,
            seen_foreign,
        }
    }

    /// Another instance over the same leases, with the same clock: what a second process
    /// opening the same database would see.
    pub fn sibling(&self) -> InMemoryStore {
        InMemoryStore::attach(Arc::clone(&self.backing), Arc::clone(&self.clock))
    }

    /// Another instance over the same leases with its own `clock`. Expiries are compared on
    /// whichever clock the acting instance has, so give siblings clocks with one timeline.
    pub fn sibling_with_clock(&self, clock: Arc<dyn Clock>) -> InMemoryStore {
        InMemoryStore::attach(Arc::clone(&self.backing), clock)
    }

    /// The clock this instance decides expiry with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Whether `other` shares this instance's backing.
    pub fn shares_backing_with(&self, other: &InMemoryStore) -> bool {
        Arc::ptr_eq(&self.backing, &other.backing)
    }

    /// Writes `info` as the record of `key` without any check, as a buggy writer sharing the
    /// backing might: holder, expiry, generation and metadata are taken as given (`info.pinned`
    /// is ignored; pins are kept separately). The key's generation counter is not changed.
    ///
    /// Meant for tests of code that must cope with a store breaking its contract, such as the
    /// deliberately broken stores that check the conformance suite catches them.
    pub fn overwrite_record(&self, key: &Key, info: &Info) {
        self.with_data(|txn| {
            txn.data.leases.insert(
                key.clone(),
                Record {
                    holder: info.holder.clone(),
                    expiry: info.expiry,
                    generation: info.generation,
                    metadata: info.metadata.clone(),
                },
            );
            txn.wrote = true;
        });
    }

    /// Runs `f` on the shared data under the lock, with the clock read once, then announces
    /// the writes it made.
    fn with_data<T>(&self, f: impl FnOnce(&mut Txn<'_>) -> T) -> T {
        let mut data = self.backing.lock();
        let mut txn = Txn {
            data: &mut data,
            now: self.clock.now(),
            wrote: false,
        };
        let out = f(&mut txn);
        if txn.wrote {
            data.version += 1;
            *data.writes_by.entry(self.id).or_insert(0) += 1;
            let version = data.version;
            drop(data);
            self.backing.changes.send_replace(version);
        }
        out
    }
}

impl fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.backing.lock();
        f.debug_struct("InMemoryStore")
            .field("instance", &self.id)
            .field("records", &data.leases.len())
            .field("pinned", &data.pins.len())
            .field("version", &data.version)
            .field("clock", &self.clock)
            .finish()
    }
}

/// The data and the instant of one call (or one batch).
struct Txn<'a> {
    data: &'a mut Data,
    now: Timestamp,
    wrote: bool,
}

fn validate_request(key: &Key, request: &Request) -> Result<()> {
    key.validate()?;
    request.validate()
}

impl Txn<'_> {
    fn is_pinned(&self, key: &Key) -> bool {
        self.data.pins.contains_key(key)
    }

    /// The record of `key` if it is held: present and unexpired or pinned.
    fn valid(&self, key: &Key) -> Option<&Record> {
        let record = self.data.leases.get(key)?;
        (self.now < record.expiry || self.is_pinned(key)).then_some(record)
    }

    fn info(&self, key: &Key, record: &Record) -> Info {
        Info {
            holder: record.holder.clone(),
            expiry: record.expiry,
            generation: record.generation,
            metadata: record.metadata.clone(),
            pinned: self.is_pinned(key),
        }
    }

    fn claim(&mut self, key: &Key, request: &Request) -> Result<Info> {
        validate_request(key, request)?;
        if let Some(record) = self.valid(key) {
            return Err(if record.holder == request.holder {
                Error::Invalid
            } else {
                Error::Held
            });
        }
        let last = self.data.generations.entry(key.clone()).or_insert(0);
        // A generation is never reused: past u64::MAX claims, refuse rather than wrap.
        let generation = last.checked_add(1).ok_or_else(|| {
            Error::store_msg(format!(
                "in-memory store: lease {key} has used every fencing generation"
            ))
        })?;
        *last = generation;
        let record = Record {
            holder: request.holder.clone(),
            expiry: self.now.saturating_add(request.duration),
            generation: Generation(generation),
            metadata: request.metadata.clone(),
        };
        let info = self.info(key, &record);
        self.data.leases.insert(key.clone(), record);
        self.wrote = true;
        Ok(info)
    }

    fn extend(&mut self, key: &Key, request: &Request) -> Result<Info> {
        validate_request(key, request)?;
        match self.valid(key) {
            Some(record) if record.holder == request.holder => {}
            _ => return Err(Error::Invalid),
        }
        let now = self.now;
        let record =
            self.data.leases.get_mut(key).ok_or_else(|| {
                Error::store_msg("in-memory store: record vanished under its lock")
            })?;
        record.expiry = record.expiry.max(now.saturating_add(request.duration));
        if let Some(metadata) = &request.metadata {
            record.metadata = Some(metadata.clone());
        }
        let record = record.clone();
        self.wrote = true;
        Ok(self.info(key, &record))
    }

    fn revoke(&mut self, key: &Key, holder: &str) -> Result<()> {
        key.validate()?;
        validate_string("holder", holder)?;
        match self.valid(key) {
            None => Err(Error::Invalid),
            Some(record) if record.holder != holder => Err(Error::NotHeld),
            Some(_) => {
                self.data.leases.remove(key);
                self.wrote = true;
                Ok(())
            }
        }
    }

    fn apply(&mut self, op: &Op) -> Result<Outcome> {
        match op {
            Op::Claim { key, request } => self.claim(key, request).map(Outcome::Claimed),
            Op::Extend { key, request } => self.extend(key, request).map(Outcome::Extended),
            Op::Revoke { key, holder } => self.revoke(key, holder).map(|()| Outcome::Revoked),
        }
    }

    fn snapshot<'k>(&self, keys: impl Iterator<Item = &'k Key>) -> BTreeMap<Key, Info> {
        keys.filter_map(|key| {
            self.valid(key)
                .map(|record| (key.clone(), self.info(key, record)))
        })
        .collect()
    }

    fn pin(&mut self, key: &Key, entity: &str) -> Result<()> {
        key.validate()?;
        validate_string("entity", entity)?;
        if self
            .data
            .pins
            .entry(key.clone())
            .or_default()
            .insert(entity.to_owned())
        {
            self.wrote = true;
        }
        Ok(())
    }

    fn unpin(&mut self, key: &Key, entity: &str) -> Result<()> {
        key.validate()?;
        validate_string("entity", entity)?;
        if let Some(entities) = self.data.pins.get_mut(key) {
            if entities.remove(entity) {
                self.wrote = true;
            }
            if entities.is_empty() {
                self.data.pins.remove(key);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Store for InMemoryStore {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.with_data(|txn| txn.claim(key, request))
    }

    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        self.with_data(|txn| txn.extend(key, request))
    }

    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()> {
        self.with_data(|txn| txn.revoke(key, holder))
    }

    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        for key in keys {
            key.validate()?;
        }
        Ok(self.with_data(|txn| {
            if keys.is_empty() {
                let all: Vec<Key> = txn.data.leases.keys().cloned().collect();
                txn.snapshot(all.iter())
            } else {
                txn.snapshot(keys.iter())
            }
        }))
    }

    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>> {
        validate_string("namespace", namespace)?;
        validate_string("model", model)?;
        Ok(self.with_data(|txn| {
            let group: Vec<Key> = txn
                .data
                .leases
                .keys()
                .filter(|k| k.namespace == namespace && k.model == model)
                .cloned()
                .collect();
            txn.snapshot(group.iter())
        }))
    }

    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.with_data(|txn| txn.pin(key, entity))
    }

    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.with_data(|txn| txn.unpin(key, entity))
    }

    /// Every pinned key, including absent leases whose pins wait for their next claimant.
    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        Ok(self.with_data(|txn| {
            txn.data
                .pins
                .iter()
                .map(|(key, entities)| (key.clone(), entities.iter().cloned().collect()))
                .collect()
        }))
    }

    /// The whole batch under one lock and one clock reading: siblings see all of it or none.
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome>> {
        self.with_data(|txn| ops.iter().map(|op| txn.apply(op)).collect())
    }

    /// Whether a sibling has written since this instance last asked (or was created).
    async fn poll_changes(&mut self) -> Result<bool> {
        let data = self.backing.lock();
        let own = data.writes_by.get(&self.id).copied().unwrap_or(0);
        let foreign = data.version - own;
        drop(data);
        let changed = foreign != self.seen_foreign;
        self.seen_foreign = foreign;
        Ok(changed)
    }

    /// A receiver of the backing's write count, bumped on every write by any instance.
    fn change_notifier(&mut self) -> Option<watch::Receiver<u64>> {
        Some(self.backing.changes.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeClock;
    use std::time::Duration;

    fn key(lease: &str) -> Key {
        Key::new("ns", "model", lease)
    }

    fn req(holder: &str, secs: u64) -> Request {
        Request::new(holder, Duration::from_secs(secs))
    }

    #[tokio::test]
    async fn claim_extend_revoke_basics() {
        let clock = FakeClock::new();
        let mut store = InMemoryStore::new(clock.as_clock());
        let info = store.claim_lease(&key("a"), &req("h", 10)).await.unwrap();
        assert_eq!(info.generation, Generation(1));
        assert_eq!(
            info.expiry,
            clock.now().saturating_add(Duration::from_secs(10))
        );
        assert!(
            store
                .claim_lease(&key("a"), &req("h", 10))
                .await
                .unwrap_err()
                .is_invalid()
        );
        assert!(
            store
                .claim_lease(&key("a"), &req("o", 10))
                .await
                .unwrap_err()
                .is_held()
        );
        clock.advance(Duration::from_secs(5));
        let info = store.extend_lease(&key("a"), &req("h", 1)).await.unwrap();
        assert_eq!(
            info.expiry,
            crate::FAKE_CLOCK_START.saturating_add(Duration::from_secs(10))
        );
        assert!(
            store
                .revoke_lease(&key("a"), "o")
                .await
                .unwrap_err()
                .is_not_held()
        );
        store.revoke_lease(&key("a"), "h").await.unwrap();
        assert!(
            store
                .revoke_lease(&key("a"), "h")
                .await
                .unwrap_err()
                .is_invalid()
        );
        let info = store.claim_lease(&key("a"), &req("o", 10)).await.unwrap();
        assert_eq!(info.generation, Generation(2));
    }

    #[tokio::test]
    async fn poll_changes_is_honest() {
        let clock = FakeClock::new();
        let mut a = InMemoryStore::new(clock.as_clock());
        let mut b = a.sibling();
        assert!(a.shares_backing_with(&b));
        assert!(!a.poll_changes().await.unwrap());
        assert!(!b.poll_changes().await.unwrap());
        // Own writes are not news.
        a.claim_lease(&key("a"), &req("h", 10)).await.unwrap();
        assert!(!a.poll_changes().await.unwrap());
        // A sibling's are, once.
        assert!(b.poll_changes().await.unwrap());
        assert!(!b.poll_changes().await.unwrap());
        // A failed write is no change.
        assert!(b.claim_lease(&key("a"), &req("o", 10)).await.is_err());
        assert!(!a.poll_changes().await.unwrap());
        // A sibling's write followed by our own is still news.
        b.claim_lease(&key("b"), &req("o", 10)).await.unwrap();
        a.claim_lease(&key("c"), &req("h", 10)).await.unwrap();
        assert!(a.poll_changes().await.unwrap());
        assert!(!a.poll_changes().await.unwrap());
        // Reads are no change either.
        b.leases(&[]).await.unwrap();
        assert!(!a.poll_changes().await.unwrap());
        // A new instance starts with nothing to report.
        let mut c = a.sibling();
        assert!(!c.poll_changes().await.unwrap());
        // Pins are changes; a repeated pin is not.
        a.pin_lease(&key("a"), "e").await.unwrap();
        assert!(c.poll_changes().await.unwrap());
        a.pin_lease(&key("a"), "e").await.unwrap();
        assert!(!c.poll_changes().await.unwrap());
    }

    #[tokio::test]
    async fn change_notifier_sees_every_write_by_any_instance() {
        let clock = FakeClock::new();
        let mut a = InMemoryStore::new(clock.as_clock());
        let mut b = a.sibling();
        let mut rx = a.change_notifier().unwrap();
        assert!(!rx.has_changed().unwrap());
        b.claim_lease(&key("a"), &req("h", 10)).await.unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
        a.revoke_lease(&key("a"), "h").await.unwrap();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 2);
        assert!(a.revoke_lease(&key("a"), "h").await.is_err());
        assert!(!rx.has_changed().unwrap());
    }

    #[tokio::test]
    async fn apply_is_one_atomic_batch_at_one_instant() {
        let clock = FakeClock::new();
        let mut store = InMemoryStore::new(clock.as_clock());
        let mut rx = store.change_notifier().unwrap();
        let results = store
            .apply(vec![
                Op::Claim {
                    key: key("a"),
                    request: req("h", 10),
                },
                Op::Claim {
                    key: key("a"),
                    request: req("o", 10),
                },
                Op::Extend {
                    key: key("a"),
                    request: req("h", 20),
                },
                Op::Revoke {
                    key: key("b"),
                    holder: "h".into(),
                },
            ])
            .await;
        assert_eq!(results.len(), 4);
        assert!(matches!(&results[0], Ok(Outcome::Claimed(i)) if i.holder == "h"));
        assert!(results[1].as_ref().unwrap_err().is_held());
        assert!(
            matches!(&results[2], Ok(Outcome::Extended(i)) if i.expiry == clock.now().saturating_add(Duration::from_secs(20)))
        );
        assert!(results[3].as_ref().unwrap_err().is_invalid());
        // One batch, one announced write.
        assert_eq!(*rx.borrow_and_update(), 1);
    }

    #[tokio::test]
    async fn pins_wait_for_absent_leases_and_are_listed() {
        let clock = FakeClock::new();
        let mut store = InMemoryStore::new(clock.as_clock());
        store.pin_lease(&key("a"), "z").await.unwrap();
        store.pin_lease(&key("a"), "b").await.unwrap();
        let pinned = store.pinned().await.unwrap();
        assert_eq!(pinned[&key("a")], vec!["b".to_owned(), "z".to_owned()]);
        let info = store.claim_lease(&key("a"), &req("h", 1)).await.unwrap();
        assert!(info.pinned);
        clock.advance(Duration::from_secs(100));
        assert!(store.leases(&[key("a")]).await.unwrap()[&key("a")].pinned);
        store.unpin_lease(&key("a"), "z").await.unwrap();
        store.unpin_lease(&key("a"), "b").await.unwrap();
        store.unpin_lease(&key("a"), "never").await.unwrap();
        assert!(store.pinned().await.unwrap().is_empty());
        assert!(store.leases(&[]).await.unwrap().is_empty());
    }

    #[test]
    fn debug_is_informative() {
        let store = InMemoryStore::new(FakeClock::new().as_clock());
        let text = format!("{store:?}");
        assert!(
            text.starts_with("InMemoryStore { instance: 0, records: 0"),
            "{text}"
        );
    }
}
