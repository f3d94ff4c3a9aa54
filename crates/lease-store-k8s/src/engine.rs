//! The store logic shared by [`LeaseObjectStore`](crate::LeaseObjectStore) and
//! [`ConfigMapStore`](crate::ConfigMapStore): the observation cache, the conditional writes,
//! the decisions of the [`Store`](lease_core::Store) contract, and the watch.
//!
//! Reads and decisions: a decision may be taken on a cached object only when it ends in a write
//! conditional on that object's `resourceVersion` (the server rejects it if the cache was
//! stale); every other outcome (`Held`, `Invalid`, `NotHeld`, "nothing to do") is confirmed by a
//! fresh read first. So a steady-state renewal is one `PUT`, and nothing is ever decided on
//! stale data.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};

use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use lease_core::{Clock, Error, Info, Key, Request, Result, Timestamp};
use tokio::sync::watch;

use crate::cache::{CacheState, Entry, Shared, observe};
use crate::codec::Codec;
use crate::error::{K8sStoreError, has_code};
use crate::naming::{
    group_selector, is_dns1123_subdomain, key_json, managed_selector, object_name,
};
use crate::options::StoreOptions;
use crate::record::{Judge, KeyField, Record, Status, Term};

/// How many times an operation re-reads and re-decides after a write conflict before it gives
/// up with [`Error::Invalid`] (retryable).
const ATTEMPTS: usize = 5;

/// Aborts the watch task when the store is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The outcome of a conditional write.
enum Write<O> {
    Done(O),
    Conflict,
}

/// An object as the decision sees it.
struct View<O> {
    entry: Entry<O>,
    /// Taken from the cache rather than read just now.
    cached: bool,
}

/// Keys bound to explicit object names ([`StoreOptions::object_for`]).
#[derive(Debug, Default)]
struct Bindings {
    by_name: HashMap<String, Key>,
    /// Keys whose binding is unusable, with the reason.
    bad: HashMap<Key, (String, String)>,
}

impl Bindings {
    fn new(objects: &BTreeMap<Key, String>) -> Bindings {
        let mut out = Bindings::default();
        let mut keys_of: HashMap<&str, Vec<&Key>> = HashMap::new();
        for (key, name) in objects {
            keys_of.entry(name.as_str()).or_default().push(key);
        }
        for (name, keys) in keys_of {
            if !is_dns1123_subdomain(name) {
                for key in keys {
                    out.bad.insert(
                        key.clone(),
                        (
                            name.to_owned(),
                            "is not a valid object name (a DNS-1123 subdomain)".to_owned(),
                        ),
                    );
                }
            } else if keys.len() > 1 {
                let all: Vec<String> = keys.iter().map(ToString::to_string).collect();
                for key in keys {
                    out.bad.insert(
                        key.clone(),
                        (
                            name.to_owned(),
                            format!("is bound to several keys ({})", all.join(", ")),
                        ),
                    );
                }
            } else if let [key] = keys.as_slice() {
                out.by_name.insert(name.to_owned(), (*key).clone());
            }
        }
        out
    }
}

/// The shared store logic over one object kind.
#[derive(Debug)]
pub(crate) struct Engine<C: Codec> {
    api: Api<C::Object>,
    namespace: String,
    clock: Arc<dyn Clock>,
    options: StoreOptions,
    codec: Arc<C>,
    shared: Arc<Shared<C::Object>>,
    watch_task: Option<AbortOnDrop>,
    last_polled: Option<u64>,
    bindings: Arc<Bindings>,
}

impl<C: Codec> Engine<C> {
    pub(crate) fn new(
        client: kube::Client,
        namespace: String,
        clock: Arc<dyn Clock>,
        options: StoreOptions,
        codec: C,
    ) -> Self {
        let (changes, _) = watch::channel(0);
        let options_objects = options.objects.clone();
        Engine {
            api: Api::namespaced(client, &namespace),
            namespace,
            clock,
            options,
            codec: Arc::new(codec),
            shared: Arc::new(Shared {
                cache: Mutex::new(CacheState {
                    entries: HashMap::new(),
                    synced: false,
                    streams: Vec::new(),
                    high_water: HashMap::new(),
                    deleted: HashMap::new(),
                }),
                changes,
            }),
            watch_task: None,
            last_polled: None,
            bindings: Arc::new(Bindings::new(&options_objects)),
        }
    }

    /// The object name of `key`: its bound name, or the derived one.
    fn name_of(&self, key: &Key) -> Result<String> {
        if let Some((name, reason)) = self.bindings.bad.get(key) {
            return Err(Error::validation(
                "object name",
                name.clone(),
                reason.clone(),
            ));
        }
        Ok(self
            .options
            .objects
            .get(key)
            .cloned()
            .unwrap_or_else(|| object_name(key)))
    }

    /// The key an object named `name` records when it has no key annotation: the key bound to
    /// that name, if any.
    fn bound_key(&self, name: &str) -> Option<&Key> {
        self.bindings.by_name.get(name)
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn options(&self) -> &StoreOptions {
        &self.options
    }

    pub(crate) fn codec(&self) -> &C {
        &self.codec
    }

    fn judge(&self) -> Judge {
        Judge {
            trust_renew_time: self.options.trust_renew_time,
        }
    }

    /// Runs one API call with the request timeout, classifying its errors.
    async fn call<T>(
        &self,
        verb: &'static str,
        name: &str,
        fut: impl Future<Output = kube::Result<T>>,
    ) -> Result<kube::Result<T>, K8sStoreError> {
        match tokio::time::timeout(self.options.request_timeout, fut).await {
            Ok(result) => Ok(result),
            Err(_) => Err(K8sStoreError::RequestTimeout {
                verb,
                resource: C::RESOURCE,
                name: name.to_owned(),
                namespace: self.namespace.clone(),
                timeout: self.options.request_timeout,
            }),
        }
    }

    fn classify(&self, err: kube::Error, verb: &'static str, name: &str) -> K8sStoreError {
        K8sStoreError::from_kube(err, verb, C::RESOURCE, name, &self.namespace)
    }

    /// Reads `name` from the API server into the cache.
    async fn read(&self, name: &str) -> Result<Option<Entry<C::Object>>> {
        let got = self
            .call("get", name, self.api.get_opt(name))
            .await?
            .map_err(|e| self.classify(e, "get", name))?;
        let now = self.clock.now();
        let mut state = self.shared.lock();
        match got {
            Some(object) => {
                observe(&*self.codec, &mut state, object, now, None);
                Ok(state.entries.get(name).cloned())
            }
            None => {
                state.bury(name);
                Ok(None)
            }
        }
    }

    /// The object for `key`: from the cache unless `fresh`, else read.
    async fn load(&self, key: &Key, name: &str, fresh: bool) -> Result<Option<View<C::Object>>> {
        let cached = if fresh {
            None
        } else {
            self.shared.lock().entries.get(name).cloned()
        };
        let (entry, cached) = match cached {
            Some(entry) => (Some(entry), true),
            None => (self.read(name).await?, false),
        };
        let Some(entry) = entry else {
            return Ok(None);
        };
        match &entry.record.key {
            KeyField::Key(found) if found != key => {
                return Err(K8sStoreError::KeyMismatch {
                    name: name.to_owned(),
                    namespace: self.namespace.clone(),
                    expected: key_json(key),
                    found: key_json(found),
                }
                .into());
            }
            KeyField::Key(_) => {}
            // An object written by another program (client-go) under a name bound to this key:
            // expected, no warning.
            KeyField::Missing if self.bound_key(name) == Some(key) => {}
            KeyField::Missing | KeyField::Garbage => {
                tracing::warn!(
                    object = %name,
                    resource = C::RESOURCE,
                    key = %key,
                    "lease object has no readable key annotation; taking it to be this key's"
                );
            }
        }
        Ok(Some(View { entry, cached }))
    }

    /// Creates `object`; `Conflict` when it already exists.
    async fn create(&self, name: &str, object: &C::Object) -> Result<Write<C::Object>> {
        let params = self.post_params();
        match self
            .call("create", name, self.api.create(&params, object))
            .await?
        {
            Ok(o) => Ok(Write::Done(o)),
            Err(e) if has_code(&e, 409) => Ok(Write::Conflict),
            Err(e) => Err(self.classify(e, "create", name).into()),
        }
    }

    /// Replaces `object`, conditional on the `resourceVersion` it carries; `Conflict` when the
    /// object changed (409) or vanished (404) since.
    async fn replace(&self, name: &str, object: &C::Object) -> Result<Write<C::Object>> {
        debug_assert!(object.resource_version().is_some(), "unconditional replace");
        let params = self.post_params();
        match self
            .call("update", name, self.api.replace(name, &params, object))
            .await?
        {
            Ok(o) => Ok(Write::Done(o)),
            Err(e) if has_code(&e, 409) => Ok(Write::Conflict),
            Err(e) if has_code(&e, 404) && !is_namespace_missing(&e) => Ok(Write::Conflict),
            Err(e) => Err(self.classify(e, "update", name).into()),
        }
    }

    fn post_params(&self) -> PostParams {
        PostParams {
            dry_run: false,
            field_manager: Some(self.options.field_manager.clone()),
        }
    }

    /// Writes `record` for `key`: an update of `base` when there is one, else a create.
    async fn write(
        &self,
        key: &Key,
        name: &str,
        base: Option<&C::Object>,
        record: &Record,
        start: Timestamp,
        restart_expiry: bool,
    ) -> Result<Option<Entry<C::Object>>> {
        let object = self.codec.encode(base, name, key, record)?;
        let written = match base {
            Some(_) => self.replace(name, &object).await?,
            None => self.create(name, &object).await?,
        };
        match written {
            Write::Conflict => {
                tracing::debug!(object = %name, resource = C::RESOURCE, "write conflict; re-reading");
                Ok(None)
            }
            Write::Done(object) => {
                // What we wrote, observed at the call's start: the holder's guarantee.
                let record = self.codec.decode(&object);
                let written = Entry {
                    object: object.clone(),
                    rv: object.resource_version().unwrap_or_default(),
                    fingerprint: record.fingerprint(),
                    record,
                    observed_at: start,
                };
                let now = self.clock.now();
                observe(
                    &*self.codec,
                    &mut self.shared.lock(),
                    object,
                    now,
                    Some((start, restart_expiry)),
                );
                Ok(Some(written))
            }
        }
    }

    fn status(&self, entry: &Entry<C::Object>, now: Timestamp) -> Status {
        self.judge().status(&entry.record, entry.observed_at, now)
    }

    fn info(&self, entry: &Entry<C::Object>, now: Timestamp) -> Option<Info> {
        self.judge().info(&entry.record, entry.observed_at, now)
    }

    /// The holder of the last record of object `name`, seen deleted, when that record is
    /// still held at `now` as this process judges it: someone deleted the object under a
    /// holder (`kubectl delete`, a Helm reinstall) who may not know yet and keeps acting until
    /// its claim runs out, so re-creating it at once would make two holders. Pins do not
    /// count (they went with the object), nor does a claim without expiry (a ConfigMap lock
    /// deleted with its owner pod is free, as the Go ConfigMap lock promises).
    fn deleted_holder(&self, name: &str, now: Timestamp) -> Option<String> {
        let state = self.shared.lock();
        let entry = state.deleted.get(name)?;
        if matches!(entry.record.term, Some(Term::Forever)) {
            return None;
        }
        let mut record = entry.record.clone();
        record.pins.clear();
        match self.judge().status(&record, entry.observed_at, now) {
            Status::Held { holder, .. } => Some(holder),
            Status::Free | Status::Expired { .. } => None,
        }
    }

    /// The generation of a claim on object `name` whose current record (if it exists) is
    /// `current`: above it, above every generation this process saw on that name (the object
    /// may have been deleted and re-created since), and at least the wall clock's
    /// [`wall_clock_generation`](crate::generation::wall_clock_generation).
    fn claim_generation(&self, name: &str, current: Option<&Record>) -> Result<u64> {
        let seen = self
            .shared
            .lock()
            .high_water
            .get(name)
            .copied()
            .unwrap_or(0);
        let floor = current.map_or(0, |r| r.generation).max(seen);
        let next = floor.checked_add(1).ok_or_else(|| {
            Error::from(K8sStoreError::GenerationOverflow {
                name: name.to_owned(),
                generation: floor,
            })
        })?;
        Ok(next.max(crate::generation::wall_clock_generation()))
    }

    pub(crate) async fn claim(&mut self, key: &Key, request: &Request) -> Result<Info> {
        key.validate()?;
        request.validate()?;
        let start = self.clock.now();
        let name = self.name_of(key)?;
        let term = self.codec.term(request.duration);
        for attempt in 0..ATTEMPTS {
            let view = self.load(key, &name, attempt > 0).await?;
            let base = match &view {
                // Absent, as just read (a cache miss always reads).
                None => {
                    if let Some(holder) = self.deleted_holder(&name, self.clock.now()) {
                        return Err(if holder == request.holder {
                            Error::Invalid
                        } else {
                            Error::Held
                        }
                        .context(format!(
                            "object {name:?} was deleted while {holder} held it; it is \
                             not re-created until that claim has run out"
                        )));
                    }
                    None
                }
                Some(view) => match self.status(&view.entry, self.clock.now()) {
                    Status::Held { holder, .. } => {
                        if view.cached {
                            continue;
                        }
                        return Err(if holder == request.holder {
                            Error::Invalid
                        } else {
                            Error::Held
                        });
                    }
                    Status::Free | Status::Expired { .. } => Some(&view.entry),
                },
            };
            let record = match base {
                Some(entry) => {
                    let generation = self.claim_generation(&name, Some(&entry.record))?;
                    entry.record.claimed(request, term, generation)
                }
                None => {
                    let generation = self.claim_generation(&name, None)?;
                    Record::empty(key, 0).claimed(request, term, generation)
                }
            };
            let base_object = base.map(|e| &e.object);
            if let Some(entry) = self
                .write(key, &name, base_object, &record, start, true)
                .await?
            {
                return self.info(&entry, start).ok_or_else(|| {
                    Error::store_msg(format!("object {name:?} not held right after our claim"))
                });
            }
        }
        Err(Error::Invalid.context(format!(
            "claim of {key}: object {name:?} kept changing under us"
        )))
    }

    pub(crate) async fn extend(&mut self, key: &Key, request: &Request) -> Result<Info> {
        key.validate()?;
        request.validate()?;
        let start = self.clock.now();
        let name = self.name_of(key)?;
        for attempt in 0..ATTEMPTS {
            let Some(view) = self.load(key, &name, attempt > 0).await? else {
                return Err(Error::Invalid);
            };
            let expiry = match self.status(&view.entry, self.clock.now()) {
                // An extend keeps the generation, so it needs to know it: a holder whose
                // object's generation became unreadable must claim again (above it).
                Status::Held { holder, expiry }
                    if holder == request.holder && view.entry.record.generation_known =>
                {
                    expiry
                }
                _ if view.cached => continue,
                _ => return Err(Error::Invalid),
            };
            let term = match view.entry.record.term {
                Some(Term::Forever) => Term::Forever,
                _ => match self.codec.term(request.duration) {
                    Term::Forever => Term::Forever,
                    // Only ever lengthen: at least what is left of the current term.
                    Term::Finite(d) => Term::Finite(d.max(expiry.saturating_duration_since(start))),
                },
            };
            let record = view.entry.record.extended(request, term);
            if let Some(entry) = self
                .write(key, &name, Some(&view.entry.object), &record, start, true)
                .await?
            {
                return self.info(&entry, start).ok_or_else(|| {
                    Error::store_msg(format!("object {name:?} not held right after our extend"))
                });
            }
        }
        Err(Error::Invalid.context(format!(
            "extend of {key}: object {name:?} kept changing under us"
        )))
    }

    pub(crate) async fn revoke(&mut self, key: &Key, holder: &str) -> Result<()> {
        key.validate()?;
        lease_core::validate_string("holder", holder)?;
        let start = self.clock.now();
        let name = self.name_of(key)?;
        for attempt in 0..ATTEMPTS {
            let Some(view) = self.load(key, &name, attempt > 0).await? else {
                return Err(Error::Invalid);
            };
            match self.status(&view.entry, self.clock.now()) {
                Status::Held { holder: h, .. } if h == holder => {}
                _ if view.cached => continue,
                Status::Held { .. } => return Err(Error::NotHeld),
                Status::Free | Status::Expired { .. } => return Err(Error::Invalid),
            }
            let record = view.entry.record.revoked();
            if self
                .write(key, &name, Some(&view.entry.object), &record, start, true)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(Error::Invalid.context(format!(
            "revoke of {key}: object {name:?} kept changing under us"
        )))
    }

    /// Adds (`pin`) or removes an entity's pin.
    pub(crate) async fn set_pin(&mut self, key: &Key, entity: &str, pin: bool) -> Result<()> {
        key.validate()?;
        lease_core::validate_string("entity", entity)?;
        let start = self.clock.now();
        let name = self.name_of(key)?;
        for attempt in 0..ATTEMPTS {
            let view = self.load(key, &name, attempt > 0).await?;
            let (base, mut record) = match &view {
                Some(view) => (Some(&view.entry.object), view.entry.record.clone()),
                None if pin => (None, Record::empty(key, 0)),
                None => return Ok(()),
            };
            let changed = if pin {
                record.pins.insert(entity.to_owned())
            } else {
                record.pins.remove(entity)
            };
            if pin && changed {
                record.check_pins_size(key, entity)?;
            }
            if !changed {
                if view.as_ref().is_some_and(|v| v.cached) {
                    continue;
                }
                return Ok(());
            }
            if self
                .write(key, &name, base, &record, start, false)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(Error::Invalid.context(format!(
            "pin change of {key}: object {name:?} kept changing under us"
        )))
    }

    /// Every object matching `selector` (all of ours when `None`) plus the objects named in
    /// `bound` (which may lack our labels), from the watch's cache when it is synced and
    /// allowed, else listed (and read) and the cache updated.
    async fn snapshot(
        &self,
        selector: Option<String>,
        bound: &[String],
    ) -> Result<Vec<Entry<C::Object>>> {
        if self.options.snapshots_from_watch {
            let state = self.shared.lock();
            if state.synced {
                return Ok(state.entries.values().cloned().collect());
            }
        }
        let selector = selector.unwrap_or_else(managed_selector);
        let params = ListParams::default().labels(&selector);
        let list = self
            .call("list", "", self.api.list(&params))
            .await?
            .map_err(|e| self.classify(e, "list", ""))?;
        let now = self.clock.now();
        let mut names = Vec::with_capacity(list.items.len());
        {
            let mut state = self.shared.lock();
            for object in list.items {
                names.push(object.name_any());
                observe(&*self.codec, &mut state, object, now, None);
            }
        }
        let mut out: Vec<Entry<C::Object>> = {
            let state = self.shared.lock();
            names
                .iter()
                .filter_map(|n| state.entries.get(n).cloned())
                .collect()
        };
        for name in bound {
            if !names.contains(name)
                && let Some(entry) = self.read(name).await?
            {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// The names bound to keys of `namespace`/`model` (all bound names when `None`).
    fn bound_names(&self, group: Option<(&str, &str)>) -> Vec<String> {
        self.bindings
            .by_name
            .iter()
            .filter(|(_, k)| group.is_none_or(|(n, m)| k.namespace == n && k.model == m))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The key an entry records (or the key bound to its name), warning when it has none.
    fn entry_key(&self, entry: &Entry<C::Object>) -> Option<Key> {
        let name = entry.object.name_any();
        match &entry.record.key {
            KeyField::Key(k) if self.name_of(k).is_ok_and(|n| n == name) => Some(k.clone()),
            KeyField::Missing | KeyField::Garbage if self.bound_key(&name).is_some() => {
                self.bound_key(&name).cloned()
            }
            _ => {
                tracing::warn!(
                    object = %entry.object.name_any(),
                    resource = C::RESOURCE,
                    "object labelled as a lease has no usable key annotation; skipped"
                );
                None
            }
        }
    }

    pub(crate) async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        for key in keys {
            key.validate()?;
            self.name_of(key)?;
        }
        let entries = if let [key] = keys
            && !(self.options.snapshots_from_watch && self.shared.lock().synced)
        {
            self.load(key, &self.name_of(key)?, true)
                .await?
                .map(|v| v.entry)
                .into_iter()
                .collect()
        } else {
            self.snapshot(None, &self.bound_names(None)).await?
        };
        let wanted: HashSet<&Key> = keys.iter().collect();
        let now = self.clock.now();
        let mut out = BTreeMap::new();
        for entry in &entries {
            let key = match (keys, &entry.record.key) {
                ([key], KeyField::Missing | KeyField::Garbage)
                    if self
                        .name_of(key)
                        .is_ok_and(|n| n == entry.object.name_any()) =>
                {
                    Some(key.clone())
                }
                _ => self.entry_key(entry),
            };
            let Some(key) = key else { continue };
            if !wanted.is_empty() && !wanted.contains(&key) {
                continue;
            }
            if let Some(info) = self.info(entry, now) {
                out.insert(key, info);
            }
        }
        Ok(out)
    }

    pub(crate) async fn lease_group(
        &mut self,
        namespace: &str,
        model: &str,
    ) -> Result<BTreeMap<Key, Info>> {
        lease_core::validate_string("namespace", namespace)?;
        lease_core::validate_string("model", model)?;
        let entries = self
            .snapshot(
                Some(group_selector(namespace, model)),
                &self.bound_names(Some((namespace, model))),
            )
            .await?;
        let now = self.clock.now();
        let mut out = BTreeMap::new();
        for entry in &entries {
            let Some(key) = self.entry_key(entry) else {
                continue;
            };
            if key.namespace != namespace || key.model != model {
                continue;
            }
            if let Some(info) = self.info(entry, now) {
                out.insert(key, info);
            }
        }
        Ok(out)
    }

    pub(crate) async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        let entries = self.snapshot(None, &self.bound_names(None)).await?;
        let mut out = BTreeMap::new();
        for entry in &entries {
            if entry.record.pins.is_empty() {
                continue;
            }
            if let Some(key) = self.entry_key(entry) {
                out.insert(key, entry.record.pins.iter().cloned().collect());
            }
        }
        Ok(out)
    }

    /// Starts the watch task if it is not running. Returns whether it runs (it needs a tokio
    /// runtime).
    fn ensure_watch(&mut self) -> bool {
        if self.watch_task.is_some() {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no tokio runtime: the lease store cannot watch for changes");
            return false;
        };
        let task = runtime.spawn(crate::watch::watch_loop(
            self.api.clone(),
            self.bound_names(None),
            self.namespace.clone(),
            Arc::clone(&self.codec),
            Arc::clone(&self.shared),
            Arc::clone(&self.clock),
        ));
        self.watch_task = Some(AbortOnDrop(task));
        true
    }

    pub(crate) fn change_notifier(&mut self) -> Option<watch::Receiver<u64>> {
        self.ensure_watch().then(|| self.shared.changes.subscribe())
    }

    pub(crate) async fn poll_changes(&mut self) -> bool {
        if !self.ensure_watch() {
            return true;
        }
        if self.last_polled == Some(*self.shared.changes.borrow()) {
            // Let the watch task handle events that have already arrived.
            tokio::task::yield_now().await;
        }
        let current = *self.shared.changes.borrow();
        let synced = self.shared.lock().synced;
        let changed = self.last_polled != Some(current) || !synced;
        self.last_polled = Some(current);
        changed
    }

    /// Whether the watch has listed every object and follows changes (for tests).
    #[cfg(test)]
    pub(crate) fn watch_synced(&self) -> bool {
        self.shared.lock().synced
    }
}

fn is_namespace_missing(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| d.kind == "namespaces"))
}
