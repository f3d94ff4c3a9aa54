//! The observation cache an [`Engine`](crate::engine::Engine) shares with its watch task: what
//! this process last saw of each object, when it first saw each record unchanged (the start of
//! the expiry it judges), and the generation high-water marks that outlive deleted objects.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use kube::ResourceExt;
use lease_core::Timestamp;
use tokio::sync::watch;

use crate::codec::Codec;
use crate::record::Record;

/// What this process knows about one object.
#[derive(Debug, Clone)]
pub(crate) struct Entry<O> {
    /// The object as last read or written.
    pub(crate) object: O,
    /// Its `resourceVersion`.
    pub(crate) rv: String,
    /// The record it carries.
    pub(crate) record: Record,
    /// The record's [`Record::fingerprint`].
    pub(crate) fingerprint: String,
    /// When this process first observed the record unchanged (on the store's clock).
    pub(crate) observed_at: Timestamp,
}

/// The observation cache, shared with the watch task.
#[derive(Debug)]
pub(crate) struct CacheState<O> {
    pub(crate) entries: HashMap<String, Entry<O>>,
    /// The watch has listed everything and is following changes (every stream of it).
    pub(crate) synced: bool,
    /// Each watch stream's state: the label-selected stream first, then one per bound name.
    pub(crate) streams: Vec<StreamState>,
    /// The largest generation seen on each object name, kept after the object is deleted: a
    /// claim on a re-created object starts above it (see [`crate::generation`]).
    pub(crate) high_water: HashMap<String, u64>,
    /// The last entry of each object seen deleted (until an object of that name is seen
    /// again): a claim does not re-create the object while the deleted record's holder may
    /// still believe it holds it (see [`Engine::deleted_holder`]).
    pub(crate) deleted: HashMap<String, Entry<O>>,
}

impl<O> CacheState<O> {
    /// Forgets the object `name` (deleted), keeping its last entry in `deleted`.
    pub(crate) fn bury(&mut self, name: &str) {
        if let Some(entry) = self.entries.remove(name) {
            self.deleted.insert(name.to_owned(), entry);
        }
    }
}

/// The state of one watch stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct StreamState {
    /// It has listed everything and follows changes.
    pub(crate) synced: bool,
    /// Names seen since its current (re)list started.
    pub(crate) listing: Option<HashSet<String>>,
}

#[derive(Debug)]
pub(crate) struct Shared<O> {
    pub(crate) cache: Mutex<CacheState<O>>,
    pub(crate) changes: watch::Sender<u64>,
}

impl<O> Shared<O> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, CacheState<O>> {
        // A panic while holding the lock leaves a consistent map (every update is one insert).
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Whether resource version `new` may be newer than `old`: false only when both are numbers
/// (as they are on every real API server, though documented as opaque) and `new` is older.
pub(crate) fn may_be_newer(old: &str, new: &str) -> bool {
    match (old.parse::<u64>(), new.parse::<u64>()) {
        (Ok(old), Ok(new)) => new >= old,
        _ => true,
    }
}

/// Records an observation of `object` in `state`. `own` is `Some((start, force))` for an
/// object returned by our own write started at `start`; `force` restarts the expiry even if the
/// record is unchanged. Returns whether anything changed.
pub(crate) fn observe<C: Codec>(
    codec: &C,
    state: &mut CacheState<C::Object>,
    object: C::Object,
    now: Timestamp,
    own: Option<(Timestamp, bool)>,
) -> bool {
    let name = object.name_any();
    let rv = object.resource_version().unwrap_or_default();
    for listing in state.streams.iter_mut().filter_map(|s| s.listing.as_mut()) {
        listing.insert(name.clone());
    }
    let record = codec.decode(&object);
    let seen = state.high_water.entry(name.clone()).or_default();
    *seen = (*seen).max(record.generation);
    let fingerprint = record.fingerprint();
    let (at, force) = match own {
        Some((start, force)) => (start, force),
        None => (now, false),
    };
    let observed_at = match state.entries.get(&name) {
        // Already known, or older than what we know (a watch event can trail our own write).
        Some(old)
            if (own.is_none() && old.rv == rv) || (old.rv != rv && !may_be_newer(&old.rv, &rv)) =>
        {
            return false;
        }
        Some(old) if old.fingerprint == fingerprint && !force => old.observed_at,
        _ => {
            if !record.problems.is_empty() {
                tracing::warn!(
                    object = %name,
                    resource = C::RESOURCE,
                    problems = ?record.problems,
                    "lease object has unusable fields; it is treated as not held"
                );
            }
            at
        }
    };
    state.deleted.remove(&name);
    state.entries.insert(
        name,
        Entry {
            object,
            rv,
            record,
            fingerprint,
            observed_at,
        },
    );
    true
}
