//! [`LeaseObjectStore`]: the [`Store`] on `coordination.k8s.io/v1` Lease objects, one per key, with
//! client-go's leader-election field semantics.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use lease_core::{Clock, Key, Result};

use crate::codec::Codec;
use crate::engine::Engine;
use crate::error::K8sStoreError;
use crate::generation;
use crate::naming::{ANNOTATION_GENERATION, key_labels};
use crate::options::StoreOptions;
use crate::record::{RawFields, Record};

/// Reads and writes a [`Record`] on a Lease.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LeaseCodec;

impl Codec for LeaseCodec {
    type Object = Lease;
    const RESOURCE: &'static str = "leases";

    fn decode(&self, lease: &Lease) -> Record {
        let spec = lease.spec.as_ref();
        Record::from_raw(RawFields {
            holder: spec.and_then(|s| s.holder_identity.as_deref()),
            duration_secs: spec
                .and_then(|s| s.lease_duration_seconds)
                .map(|d| Ok(i64::from(d))),
            forever: false,
            acquire_time: spec.and_then(|s| s.acquire_time.as_ref()).map(|t| t.0),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            transitions: spec
                .and_then(|s| s.lease_transitions)
                .map(|t| Ok(i64::from(t))),
            generation_in_annotation: true,
            annotations: lease.metadata.annotations.as_ref(),
            problems: Vec::new(),
        })
    }

    fn encode(
        &self,
        base: Option<&Lease>,
        name: &str,
        key: &Key,
        record: &Record,
    ) -> Result<Lease, K8sStoreError> {
        let mut lease = base.cloned().unwrap_or_default();
        let meta = &mut lease.metadata;
        meta.name = Some(name.to_owned());
        meta.managed_fields = None;
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        for (label, value) in key_labels(key) {
            labels.insert(label.to_owned(), value);
        }
        let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
        record.write_annotations(key, annotations);
        // The 64-bit generation beside client-go's counter (see `generation`).
        annotations.insert(
            ANNOTATION_GENERATION.to_owned(),
            generation::annotation(record.generation, record.transitions),
        );
        let transitions =
            i32::try_from(record.transitions).map_err(|_| K8sStoreError::GenerationOverflow {
                name: name.to_owned(),
                generation: u64::from(record.transitions),
            })?;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        // client-go writes an empty identity for "nobody", and so do we.
        spec.holder_identity = Some(record.holder.clone().unwrap_or_default());
        spec.lease_duration_seconds = record.duration_secs();
        spec.acquire_time = record.acquire_time.map(MicroTime);
        spec.renew_time = record.renew_time.map(MicroTime);
        spec.lease_transitions = Some(transitions);
        Ok(lease)
    }
}

/// A [`Store`](lease_core::Store) on `coordination.k8s.io/v1` Lease objects in one Kubernetes namespace.
///
/// See the [crate documentation](crate) for the object layout, how expiry is judged, the
/// request pattern of each operation and the permissions it needs.
///
/// Dropping the store stops its watch.
#[derive(Debug)]
pub struct LeaseObjectStore {
    engine: Engine<LeaseCodec>,
}

impl LeaseObjectStore {
    /// A store keeping Lease objects in Kubernetes namespace `namespace`, judging expiry on
    /// `clock` (give the manager the same clock), with default [`StoreOptions`].
    ///
    /// No request is made until the first operation.
    pub fn new(client: kube::Client, namespace: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self::with_options(client, namespace, clock, StoreOptions::default())
    }

    /// [`LeaseObjectStore::new`] with explicit options.
    pub fn with_options(
        client: kube::Client,
        namespace: impl Into<String>,
        clock: Arc<dyn Clock>,
        options: StoreOptions,
    ) -> Self {
        LeaseObjectStore {
            engine: Engine::new(client, namespace.into(), clock, options, LeaseCodec),
        }
    }

    /// The Kubernetes namespace holding the Lease objects.
    pub fn namespace(&self) -> &str {
        self.engine.namespace()
    }

    /// The store's options.
    pub fn options(&self) -> &StoreOptions {
        self.engine.options()
    }

    /// Whether the watch has listed every object and follows changes.
    #[cfg(test)]
    pub(crate) fn watch_synced(&self) -> bool {
        self.engine.watch_synced()
    }
}

crate::store_impl::store_via_engine!(LeaseObjectStore);
