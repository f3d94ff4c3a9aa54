//! The worker's view of the leases it has seen, kept compact (about a hundred bytes a lease),
//! and the shared table of its own guaranteed windows that tokens read without asking it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};

// Under `cfg(loom)` the window table's locks are loom's, so the model-checked test below can try
// every interleaving of the worker's publishes and clears with tokens' reads.
#[cfg(loom)]
use loom::sync::RwLock;
#[cfg(not(loom))]
use std::sync::RwLock;

use lease_core::{Generation, Info, Key, Timestamp};

/// What the worker knows about one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The holder (interned: holders repeat across leases).
    pub(crate) holder: Arc<str>,
    /// The store's expiry: the latest instant the lease might still be valid.
    pub(crate) expiry: Timestamp,
    /// The fencing generation of the claim that made `holder` the holder.
    pub(crate) generation: Generation,
    /// For a lease claimed through this manager, the end of its guaranteed window (the call's
    /// start + the duration, on our clock); [`Timestamp::ZERO`] for anyone else's.
    pub(crate) own_until: Timestamp,
    /// Whether the lease is pinned (and so does not expire).
    pub(crate) pinned: bool,
}

impl Entry {
    /// Whether the lease is held at `now`: pinned, or not yet at its expiry.
    pub(crate) fn valid(&self, now: Timestamp) -> bool {
        self.pinned || now < self.expiry
    }

    /// Whether this manager claimed the lease (and has not learnt it lost it).
    pub(crate) fn own(&self) -> bool {
        self.own_until != Timestamp::ZERO
    }
}

/// Whether a store snapshot's `info` says the lease is held at `now`.
pub(crate) fn info_valid(info: &Info, now: Timestamp) -> bool {
    info.pinned || now < info.expiry
}

type Leases = HashMap<Box<str>, Entry>;

/// Leases by namespace, model and name: nested maps, so a lookup by `&Key` allocates nothing and
/// each lease stores its name once.
#[derive(Debug, Default)]
pub(crate) struct View {
    scopes: HashMap<Box<str>, HashMap<Box<str>, Leases>>,
    len: usize,
    own: usize,
    holders: HashSet<Arc<str>>,
}

impl View {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// How many entries are [`Entry::own`].
    pub(crate) fn own_count(&self) -> usize {
        self.own
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&Entry> {
        self.scopes
            .get(key.namespace.as_str())?
            .get(key.model.as_str())?
            .get(key.lease.as_str())
    }

    /// The shared copy of `holder`.
    pub(crate) fn intern(&mut self, holder: &str) -> Arc<str> {
        if let Some(h) = self.holders.get(holder) {
            return Arc::clone(h);
        }
        let h: Arc<str> = Arc::from(holder);
        self.holders.insert(Arc::clone(&h));
        h
    }

    /// Sets the entry of `key`, returning the one it replaces.
    pub(crate) fn insert(&mut self, key: &Key, entry: Entry) -> Option<Entry> {
        let own = entry.own();
        // Look the scope up by `&str` first: `entry` would allocate the namespace's and the
        // model's boxed copies on every call, and this runs once per claim and extend.
        let models = match self.scopes.get_mut(key.namespace.as_str()) {
            Some(models) => models,
            None => self
                .scopes
                .entry(key.namespace.as_str().into())
                .or_default(),
        };
        let leases = match models.get_mut(key.model.as_str()) {
            Some(leases) => leases,
            None => models.entry(key.model.as_str().into()).or_default(),
        };
        let old = match leases.get_mut(key.lease.as_str()) {
            Some(slot) => Some(std::mem::replace(slot, entry)),
            None => {
                leases.insert(key.lease.as_str().into(), entry);
                None
            }
        };
        match &old {
            None => self.len += 1,
            Some(o) if o.own() => self.own -= 1,
            Some(_) => {}
        }
        if own {
            self.own += 1;
        }
        old
    }

    pub(crate) fn remove(&mut self, key: &Key) -> Option<Entry> {
        let models = self.scopes.get_mut(key.namespace.as_str())?;
        let leases = models.get_mut(key.model.as_str())?;
        let old = leases.remove(key.lease.as_str())?;
        if leases.is_empty() {
            models.remove(key.model.as_str());
            if models.is_empty() {
                self.scopes.remove(key.namespace.as_str());
            }
        }
        self.len -= 1;
        if old.own() {
            self.own -= 1;
        }
        Some(old)
    }

    /// The keys of every entry in `namespace`/`model`, in order (so what follows from them,
    /// such as the order waiters are woken in, does not depend on hashing).
    pub(crate) fn keys_in(&self, namespace: &str, model: &str) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .scopes
            .get(namespace)
            .and_then(|m| m.get(model))
            .map(|leases| {
                leases
                    .keys()
                    .map(|l| Key::new(namespace, model, &**l))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort_unstable();
        keys
    }

    /// The keys of the own entries whose guaranteed window has ended by `now` (while it lasts,
    /// nobody else can hold the lease, so there is nothing to re-read), in order (so the
    /// re-reads that follow do not depend on hashing).
    pub(crate) fn own_keys_past_window(&self, now: Timestamp) -> Vec<Key> {
        let mut keys = Vec::new();
        for (ns, models) in &self.scopes {
            for (model, leases) in models {
                for (lease, entry) in leases {
                    if entry.own() && entry.own_until <= now {
                        keys.push(Key::new(&**ns, &**model, &**lease));
                    }
                }
            }
        }
        keys.sort_unstable();
        keys
    }

    /// Keeps the entries for which `keep(key, entry)` says so; returns the removed ones.
    pub(crate) fn retain(
        &mut self,
        mut keep: impl FnMut(&Key, &Entry) -> bool,
    ) -> Vec<(Key, Entry)> {
        let mut removed_keys = Vec::new();
        for (ns, models) in &self.scopes {
            for (model, leases) in models {
                for (lease, entry) in leases {
                    let key = Key::new(&**ns, &**model, &**lease);
                    if !keep(&key, entry) {
                        removed_keys.push(key);
                    }
                }
            }
        }
        removed_keys
            .into_iter()
            .filter_map(|k| self.remove(&k).map(|e| (k, e)))
            .collect()
    }

    /// Forgets interned holders no entry uses any more, and shrinks oversized maps.
    pub(crate) fn compact(&mut self) {
        self.holders.retain(|h| Arc::strong_count(h) > 1);
        self.holders.shrink_to_fit();
        for models in self.scopes.values_mut() {
            for leases in models.values_mut() {
                if leases.capacity() > 64 && leases.capacity() > leases.len() * 4 {
                    leases.shrink_to_fit();
                }
            }
        }
    }
}

/// A guaranteed window of an own claim, as tokens see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) holder: Arc<str>,
    pub(crate) generation: Generation,
    pub(crate) until: Timestamp,
}

/// The window of one key, shared by the worker (which writes it) and tokens (which read it).
#[derive(Debug, Default)]
pub(crate) struct Slot {
    window: RwLock<Option<Window>>,
}

impl Slot {
    /// The generation, if `holder` provably holds the lease at `now`.
    pub(crate) fn held(&self, holder: &str, now: impl FnOnce() -> Timestamp) -> Option<Generation> {
        let window = self.window.read().unwrap_or_else(PoisonError::into_inner);
        match &*window {
            Some(w) if &*w.holder == holder && now() < w.until => Some(w.generation),
            _ => None,
        }
    }

    fn set(&self, window: Option<Window>) {
        *self.window.write().unwrap_or_else(PoisonError::into_inner) = window;
    }
}

/// Slots by key. A slot exists while some token of its key does (the worker sweeps the rest);
/// the worker publishes into existing slots only, so leases nobody checks cost nothing here.
#[derive(Debug, Default)]
pub(crate) struct SlotTable {
    slots: RwLock<HashMap<Key, Arc<Slot>>>,
}

impl SlotTable {
    /// The slot of `key`, made empty if it did not exist.
    pub(crate) fn slot_for(&self, key: &Key) -> Arc<Slot> {
        if let Some(slot) = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return Arc::clone(slot);
        }
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(key.clone()).or_default())
    }

    /// Sets the window of `key`, if any token has a slot for it.
    pub(crate) fn publish(&self, key: &Key, window: Option<Window>) {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(key) {
            slot.set(window);
        }
    }

    /// Clears every window (the manager stopped).
    pub(crate) fn clear_all(&self) {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        for slot in slots.values() {
            slot.set(None);
        }
    }

    /// Drops the slots no token uses any more.
    pub(crate) fn sweep(&self) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|_, slot| Arc::strong_count(slot) > 1);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(view: &mut View, holder: &str, own: u64) -> Entry {
        Entry {
            holder: view.intern(holder),
            expiry: Timestamp::from_nanos(100),
            generation: Generation(1),
            own_until: Timestamp::from_nanos(own),
            pinned: false,
        }
    }

    #[test]
    fn insert_get_remove_keep_counts() {
        let mut view = View::default();
        let a = Key::new("ns", "m", "a");
        let b = Key::new("ns", "m2", "b");
        let e = entry(&mut view, "h", 50);
        assert!(view.insert(&a, e.clone()).is_none());
        let e2 = entry(&mut view, "h", 0);
        view.insert(&b, e2);
        assert_eq!((view.len(), view.own_count()), (2, 1));
        assert_eq!(view.get(&a), Some(&e));
        assert_eq!(view.own_keys_past_window(Timestamp::from_nanos(49)), vec![]);
        assert_eq!(
            view.own_keys_past_window(Timestamp::from_nanos(50)),
            vec![a.clone()]
        );
        // Replacing an own entry with a foreign one.
        let e3 = entry(&mut view, "other", 0);
        assert_eq!(view.insert(&a, e3), Some(e));
        assert_eq!((view.len(), view.own_count()), (2, 0));
        assert_eq!(view.keys_in("ns", "m2"), vec![b.clone()]);
        assert!(view.remove(&b).is_some());
        assert!(view.remove(&b).is_none());
        assert_eq!(view.len(), 1);
        let removed = view.retain(|_, _| false);
        assert_eq!(removed.len(), 1);
        assert_eq!(view.len(), 0);
        assert!(view.scopes.is_empty());
        drop(removed);
        view.compact();
        assert!(view.holders.is_empty());
    }

    #[test]
    fn slots_publish_and_sweep() {
        let table = SlotTable::default();
        let key = Key::new("ns", "m", "a");
        // No slot: publishing does nothing.
        table.publish(&key, None);
        assert_eq!(table.len(), 0);
        let slot = table.slot_for(&key);
        assert_eq!(slot.held("h", || Timestamp::from_nanos(1)), None);
        table.publish(
            &key,
            Some(Window {
                holder: Arc::from("h"),
                generation: Generation(7),
                until: Timestamp::from_nanos(10),
            }),
        );
        assert_eq!(
            slot.held("h", || Timestamp::from_nanos(9)),
            Some(Generation(7))
        );
        assert_eq!(slot.held("h", || Timestamp::from_nanos(10)), None);
        assert_eq!(slot.held("x", || Timestamp::from_nanos(9)), None);
        table.sweep();
        assert_eq!(table.len(), 1);
        drop(slot);
        table.sweep();
        assert_eq!(table.len(), 0);
    }
}

/// Model-checked (`RUSTFLAGS="--cfg loom" cargo test -p lease-manager --release --lib loom`,
/// or `cargo xtask loom`): every interleaving of the worker's publish, its clear-before-revoke
/// and a token's lock-free read.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::thread;

    fn window(generation: u64, until: u64) -> Option<Window> {
        Some(Window {
            holder: Arc::from("h"),
            generation: Generation(generation),
            until: Timestamp::from_nanos(until),
        })
    }

    /// The worker publishes a window, then gives the lease up: it clears the window, then
    /// sends the revoke (here: sets `revoked`). A token that has seen the revoke go out never
    /// reads "held", and no read says "held" at or past the window's end or with a generation
    /// never published.
    #[test]
    fn loom_no_read_says_held_after_the_clear_before_revoke_or_past_the_window() {
        loom::model(|| {
            let table = Arc::new(SlotTable::default());
            let key = Key::new("ns", "m", "a");
            let slot = table.slot_for(&key);
            let revoked = Arc::new(AtomicBool::new(false));
            let worker = {
                let (table, key, revoked) = (Arc::clone(&table), key.clone(), Arc::clone(&revoked));
                thread::spawn(move || {
                    table.publish(&key, window(1, 10));
                    table.publish(&key, window(1, 20));
                    // disown: clear first, then revoke.
                    table.publish(&key, None);
                    revoked.store(true, Ordering::Release);
                })
            };
            let reader = {
                let (slot, revoked) = (Arc::clone(&slot), Arc::clone(&revoked));
                thread::spawn(move || {
                    let seen_revoke = revoked.load(Ordering::Acquire);
                    let at_15 = slot.held("h", || Timestamp::from_nanos(15));
                    let at_20 = slot.held("h", || Timestamp::from_nanos(20));
                    let other = slot.held("x", || Timestamp::from_nanos(1));
                    assert!(!(seen_revoke && at_15.is_some()), "held after the revoke");
                    assert_eq!(at_20, None, "held at the window's end");
                    assert_eq!(other, None, "held by another holder");
                    assert!(matches!(at_15, None | Some(Generation(1))));
                })
            };
            // The main thread reads too: a second token, at an instant only the first window
            // does not cover.
            let at_12 = slot.held("h", || Timestamp::from_nanos(12));
            worker.join().unwrap();
            reader.join().unwrap();
            assert!(matches!(at_12, None | Some(Generation(1))));
            assert_eq!(slot.held("h", || Timestamp::from_nanos(1)), None);
        });
    }

    /// A token making its slot while the worker publishes and then stops (`clear_all`): the
    /// read sees the window or nothing (and then asks the worker), and once the stop is done
    /// nothing reads "held".
    #[test]
    fn loom_a_slot_made_while_the_worker_publishes_and_stops() {
        loom::model(|| {
            let table = Arc::new(SlotTable::default());
            let key = Key::new("ns", "m", "a");
            let worker = {
                let (table, key) = (Arc::clone(&table), key.clone());
                thread::spawn(move || {
                    table.publish(&key, window(3, 10));
                    table.clear_all();
                })
            };
            let slot = table.slot_for(&key);
            let before = slot.held("h", || Timestamp::from_nanos(5));
            assert!(matches!(before, None | Some(Generation(3))));
            worker.join().unwrap();
            assert_eq!(slot.held("h", || Timestamp::from_nanos(5)), None);
            table.sweep();
            drop(slot);
            table.sweep();
            assert_eq!(table.len(), 0);
        });
    }
}
