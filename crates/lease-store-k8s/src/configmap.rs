//! [`ConfigMapStore`]: the [`Store`] on ConfigMaps, in the style of a ConfigMap lock:
//! holder and expiry in `data`, an owner reference to the running pod so the lock is
//! garbage-collected with it, caller-supplied labels, and optionally locks that never expire.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff;
use lease_core::{Clock, Key, Result};

use crate::codec::Codec;
use crate::engine::Engine;
use crate::error::K8sStoreError;
use crate::naming::key_labels;
use crate::options::StoreOptions;
use crate::record::{RawFields, Record, Term};

/// `data` key: the holder's identity (empty or absent when free).
pub const DATA_HOLDER: &str = "holderIdentity";
/// `data` key: the claim's duration in whole seconds, rounded up (absent for a lock without
/// expiry).
pub const DATA_DURATION: &str = "leaseDurationSeconds";
/// `data` key: when the holder acquired the lock (RFC 3339, the holder's wall clock).
pub const DATA_ACQUIRE_TIME: &str = "acquireTime";
/// `data` key: when the holder last renewed the lock (RFC 3339, the holder's wall clock).
pub const DATA_RENEW_TIME: &str = "renewTime";
/// `data` key: the fencing generation (64-bit, decimal; see the crate's
/// [Generations](crate#generations)).
pub const DATA_GENERATION: &str = "leaseTransitions";
/// `data` key: when the lock expires by the holder's wall clock (RFC 3339), or `never`.
/// Informational (and used with [`StoreOptions::trust_renew_time`]); expiry is otherwise judged
/// by observation, as for Leases.
pub const DATA_EXPIRY: &str = "expiry";
/// The [`DATA_EXPIRY`] value of a lock without expiry.
pub const NEVER: &str = "never";

/// The pod a lock's ConfigMap is owned by, so that Kubernetes' garbage collector deletes the
/// lock when the pod is deleted (a lock without expiry is then freed with its pod).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerPod {
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
}

impl OwnerPod {
    /// The pod `name` with UID `uid`.
    pub fn new(name: impl Into<String>, uid: impl Into<String>) -> Self {
        OwnerPod {
            name: name.into(),
            uid: uid.into(),
        }
    }

    /// The running pod, from the downward-API environment variables `POD_NAME` and `POD_UID`;
    /// `None` unless both are set and non-empty.
    ///
    /// ```yaml
    /// env:
    ///   - name: POD_NAME
    ///     valueFrom: {fieldRef: {fieldPath: metadata.name}}
    ///   - name: POD_UID
    ///     valueFrom: {fieldRef: {fieldPath: metadata.uid}}
    /// ```
    pub fn from_env() -> Option<Self> {
        let name = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty())?;
        let uid = std::env::var("POD_UID").ok().filter(|s| !s.is_empty())?;
        Some(OwnerPod { name, uid })
    }

    fn reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            block_owner_deletion: None,
            controller: None,
        }
    }
}

/// Reads and writes a [`Record`] on a ConfigMap.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigMapCodec {
    labels: BTreeMap<String, String>,
    owner: Option<OwnerPod>,
    no_expiry: bool,
}

fn parse_time(
    data: &BTreeMap<String, String>,
    field: &str,
    problems: &mut Vec<String>,
) -> Option<jiff::Timestamp> {
    let text = data.get(field).filter(|s| !s.is_empty())?;
    match text.parse::<jiff::Timestamp>() {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(format!("unreadable {field} {text:?}: {e}"));
            None
        }
    }
}

fn parse_int(data: &BTreeMap<String, String>, field: &str) -> Option<Result<i64, String>> {
    let text = data.get(field).filter(|s| !s.is_empty())?;
    Some(
        text.trim()
            .parse::<i64>()
            .map_err(|e| format!("{text:?}: {e}")),
    )
}

impl Codec for ConfigMapCodec {
    type Object = ConfigMap;
    const RESOURCE: &'static str = "configmaps";

    fn decode(&self, cm: &ConfigMap) -> Record {
        let empty = BTreeMap::new();
        let data = cm.data.as_ref().unwrap_or(&empty);
        let mut problems = Vec::new();
        let acquire_time = parse_time(data, DATA_ACQUIRE_TIME, &mut problems);
        let renew_time = parse_time(data, DATA_RENEW_TIME, &mut problems);
        Record::from_raw(RawFields {
            holder: data.get(DATA_HOLDER).map(String::as_str),
            duration_secs: parse_int(data, DATA_DURATION),
            forever: data.get(DATA_EXPIRY).is_some_and(|e| e == NEVER),
            acquire_time,
            renew_time,
            transitions: parse_int(data, DATA_GENERATION),
            generation_in_annotation: false,
            annotations: cm.metadata.annotations.as_ref(),
            problems,
        })
    }

    fn encode(
        &self,
        base: Option<&ConfigMap>,
        name: &str,
        key: &Key,
        record: &Record,
    ) -> Result<ConfigMap, K8sStoreError> {
        let mut cm = base.cloned().unwrap_or_default();
        let meta = &mut cm.metadata;
        meta.name = Some(name.to_owned());
        meta.managed_fields = None;
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        for (label, value) in &self.labels {
            labels.insert(label.clone(), value.clone());
        }
        for (label, value) in key_labels(key) {
            labels.insert(label.to_owned(), value);
        }
        record.write_annotations(key, meta.annotations.get_or_insert_with(BTreeMap::new));
        // The claimant's pod owns the lock (on creation, and on every claim).
        if let Some(owner) = &self.owner
            && (base.is_none() || record.holder.is_some())
        {
            let refs = meta.owner_references.get_or_insert_with(Vec::new);
            refs.retain(|r| !(r.kind == "Pod" && r.api_version == "v1"));
            refs.push(owner.reference());
        }

        let data = cm.data.get_or_insert_with(BTreeMap::new);
        let mut set = |field: &str, value: Option<String>| match value {
            Some(v) => {
                data.insert(field.to_owned(), v);
            }
            None => {
                data.remove(field);
            }
        };
        set(DATA_HOLDER, Some(record.holder.clone().unwrap_or_default()));
        set(DATA_DURATION, record.duration_secs().map(|s| s.to_string()));
        set(
            DATA_ACQUIRE_TIME,
            record.acquire_time.map(|t| t.to_string()),
        );
        set(DATA_RENEW_TIME, record.renew_time.map(|t| t.to_string()));
        set(DATA_GENERATION, Some(record.generation.to_string()));
        let expiry = match record.term {
            Some(Term::Forever) => Some(NEVER.to_owned()),
            Some(Term::Finite(d)) => record.renew_time.and_then(|renew| {
                let d = jiff::SignedDuration::try_from(d).ok()?;
                renew.checked_add(d).ok().map(|t| t.to_string())
            }),
            None => None,
        };
        set(DATA_EXPIRY, expiry);
        Ok(cm)
    }

    fn term(&self, duration: Duration) -> Term {
        if self.no_expiry {
            Term::Forever
        } else {
            Term::Finite(duration)
        }
    }
}

/// A [`Store`](lease_core::Store) on ConfigMaps in one Kubernetes namespace, one per key (names,
/// labels and annotations as for [`LeaseObjectStore`](crate::LeaseObjectStore); the record in
/// `data`, see [`DATA_HOLDER`] and the other `DATA_*` keys).
///
/// Build one with [`ConfigMapStore::builder`]. Dropping the store stops its watch.
#[derive(Debug)]
pub struct ConfigMapStore {
    engine: Engine<ConfigMapCodec>,
}

/// Builds a [`ConfigMapStore`].
#[must_use]
pub struct ConfigMapStoreBuilder {
    client: kube::Client,
    namespace: String,
    clock: Arc<dyn Clock>,
    options: StoreOptions,
    codec: ConfigMapCodec,
}

impl std::fmt::Debug for ConfigMapStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMapStoreBuilder")
            .field("namespace", &self.namespace)
            .field("clock", &self.clock)
            .field("options", &self.options)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl ConfigMapStoreBuilder {
    /// The pod that owns the locks this store claims; by default [`OwnerPod::from_env`]. `None`
    /// for no owner reference (the ConfigMaps then outlive every pod).
    pub fn owner(mut self, owner: Option<OwnerPod>) -> Self {
        self.codec.owner = owner;
        self
    }

    /// Labels added to every ConfigMap the store writes (besides its own key labels).
    pub fn labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.codec.labels = labels;
        self
    }

    /// Claims without expiry (the Go ConfigMap lock created with a negative timeout): a claim
    /// lasts until it is revoked or its owner pod is deleted, whatever duration it asks for, and
    /// its [`Info::expiry`](lease_core::Info::expiry) is
    /// [`Timestamp::MAX`](lease_core::Timestamp::MAX).
    pub fn without_expiry(mut self) -> Self {
        self.codec.no_expiry = true;
        self
    }

    /// The store's [`StoreOptions`].
    pub fn options(mut self, options: StoreOptions) -> Self {
        self.options = options;
        self
    }

    /// The store.
    pub fn build(self) -> ConfigMapStore {
        ConfigMapStore {
            engine: Engine::new(
                self.client,
                self.namespace,
                self.clock,
                self.options,
                self.codec,
            ),
        }
    }
}

impl ConfigMapStore {
    /// A builder for a store keeping ConfigMaps in Kubernetes namespace `namespace`, judging
    /// expiry on `clock`. The owner pod defaults to [`OwnerPod::from_env`].
    pub fn builder(
        client: kube::Client,
        namespace: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> ConfigMapStoreBuilder {
        ConfigMapStoreBuilder {
            client,
            namespace: namespace.into(),
            clock,
            options: StoreOptions::default(),
            codec: ConfigMapCodec {
                labels: BTreeMap::new(),
                owner: OwnerPod::from_env(),
                no_expiry: false,
            },
        }
    }

    /// The Kubernetes namespace holding the ConfigMaps.
    pub fn namespace(&self) -> &str {
        self.engine.namespace()
    }

    /// The store's options.
    pub fn options(&self) -> &StoreOptions {
        self.engine.options()
    }

    /// The pod that owns the locks this store claims, if any.
    pub fn owner(&self) -> Option<&OwnerPod> {
        self.engine.codec().owner.as_ref()
    }
}

crate::store_impl::store_via_engine!(ConfigMapStore);
