//! The table of the manager's own guaranteed windows, which the worker writes and tokens read
//! without asking it (the token fast path).
//!
//! This file depends on nothing but `std` (its key, generation and instant types are
//! parameters), so the loom model check in `crates/lease-loom` compiles this very file with
//! loom's locks (`cfg(loom)`) without rebuilding lease-manager's dependencies. lease-manager
//! itself is never built with `cfg(loom)`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, PoisonError};

#[cfg(loom)]
use loom::sync::RwLock;
#[cfg(not(loom))]
use std::sync::RwLock;

/// A guaranteed window of an own claim, as tokens see it: `holder` holds the lease with
/// `generation` until (not including) `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window<G, T> {
    pub(crate) holder: Arc<str>,
    pub(crate) generation: G,
    pub(crate) until: T,
}

/// The window of one key, shared by the worker (which writes it) and tokens (which read it).
#[derive(Debug)]
pub(crate) struct Slot<G, T> {
    window: RwLock<Option<Window<G, T>>>,
}

impl<G, T> Default for Slot<G, T> {
    fn default() -> Self {
        Slot {
            window: RwLock::new(None),
        }
    }
}

impl<G: Copy, T: PartialOrd> Slot<G, T> {
    /// The generation, if `holder` provably holds the lease at `now`.
    pub(crate) fn held(&self, holder: &str, now: impl FnOnce() -> T) -> Option<G> {
        let window = self.window.read().unwrap_or_else(PoisonError::into_inner);
        match &*window {
            Some(w) if &*w.holder == holder && now() < w.until => Some(w.generation),
            _ => None,
        }
    }
}

impl<G, T> Slot<G, T> {
    fn set(&self, window: Option<Window<G, T>>) {
        *self.window.write().unwrap_or_else(PoisonError::into_inner) = window;
    }
}

/// Slots by key. A slot exists while some token of its key does (the worker sweeps the rest);
/// the worker publishes into existing slots only, so leases nobody checks cost nothing here.
#[derive(Debug)]
pub(crate) struct SlotTable<K, G, T> {
    slots: RwLock<HashMap<K, Arc<Slot<G, T>>>>,
}

impl<K, G, T> Default for SlotTable<K, G, T> {
    fn default() -> Self {
        SlotTable {
            slots: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, G, T> SlotTable<K, G, T> {
    /// The slot of `key`, made empty if it did not exist.
    pub(crate) fn slot_for(&self, key: &K) -> Arc<Slot<G, T>> {
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
    pub(crate) fn publish(&self, key: &K, window: Option<Window<G, T>>) {
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

    /// How many slots there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
