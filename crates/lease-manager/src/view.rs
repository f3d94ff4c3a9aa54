//! The worker's view of the leases it has seen, kept compact (about a hundred bytes a lease).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use foldhash::fast::RandomState;
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

/// The view's maps hash with foldhash rather than std's SipHash: every claim and extend looks
/// its key up a few times (three short strings each), and SipHash was a visible share of the
/// worker's time per op. The keys are the application's lease names, not an attacker's
/// choice; foldhash's per-map random seed still keeps hashes from being predictable.
type Map<K, V> = HashMap<K, V, RandomState>;

type Leases = Map<Box<str>, Entry>;

/// Leases by namespace, model and name: nested maps, so a lookup by `&Key` allocates nothing and
/// each lease stores its name once.
#[derive(Debug, Default)]
pub(crate) struct View {
    scopes: Map<Box<str>, Map<Box<str>, Leases>>,
    len: usize,
    own: usize,
    holders: HashSet<Arc<str>, RandomState>,
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

    /// Changes the entry of `key` in place with `change`, keeping the count of own entries
    /// right; `None` (and `change` not called) when there is none, else what `change`
    /// returned. `change` may decline by returning `None` after changing nothing.
    pub(crate) fn modify<R>(
        &mut self,
        key: &Key,
        change: impl FnOnce(&mut Entry) -> Option<R>,
    ) -> Option<R> {
        let entry = self
            .scopes
            .get_mut(key.namespace.as_str())?
            .get_mut(key.model.as_str())?
            .get_mut(key.lease.as_str())?;
        let was_own = entry.own();
        let out = change(entry);
        match (was_own, entry.own()) {
            (false, true) => self.own += 1,
            (true, false) => self.own -= 1,
            _ => {}
        }
        out
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
        // Changing an entry in place keeps the own count right; a missing key is not changed.
        assert_eq!(
            view.modify(&b, |e| {
                e.own_until = Timestamp::from_nanos(60);
                Some(())
            }),
            Some(())
        );
        assert_eq!(view.own_count(), 2);
        assert_eq!(view.modify(&b, |_| None::<()>), None);
        assert_eq!(
            view.modify(&b, |e| {
                e.own_until = Timestamp::ZERO;
                Some(())
            }),
            Some(())
        );
        assert_eq!(view.own_count(), 1);
        let missing = Key::new("ns", "m", "missing");
        assert_eq!(
            view.modify(&missing, |_| -> Option<()> { unreachable!() }),
            None
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
}
