//! How one kind of Kubernetes object (a Lease, a ConfigMap) carries a lease's [`Record`]: the
//! one seam between the shared [`Engine`](crate::engine::Engine) and the two store types.

use std::fmt::Debug;
use std::time::Duration;

use kube::Resource;
use kube::core::NamespaceResourceScope;
use lease_core::{Key, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::K8sStoreError;
use crate::record::{Record, Term};

/// How one kind of object carries a [`Record`].
pub(crate) trait Codec: Send + Sync + 'static {
    /// The object type.
    type Object: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static;

    /// The API resource name (`leases`, `configmaps`), for errors.
    const RESOURCE: &'static str;

    /// Reads the record an object carries; never fails.
    fn decode(&self, object: &Self::Object) -> Record;

    /// The object to write: `base` (the object the write was decided on, keeping its
    /// `resourceVersion` and anything else on it) carrying `record`, or a new object.
    ///
    /// # Errors
    ///
    /// When the record cannot be represented.
    fn encode(
        &self,
        base: Option<&Self::Object>,
        name: &str,
        key: &Key,
        record: &Record,
    ) -> Result<Self::Object, K8sStoreError>;

    /// The term a claim for `duration` gets.
    fn term(&self, duration: Duration) -> Term {
        Term::Finite(duration)
    }
}
