//! [`K8sStoreError`]: what can go wrong talking to the Kubernetes API, and how each failure maps
//! onto the lease workspace's [`lease_core::Error`].

use std::time::Duration;

/// Everything the Kubernetes stores can fail with, before it is converted to
/// [`lease_core::Error`].
///
/// The conversion ([`From<K8sStoreError> for lease_core::Error`](lease_core::Error)) keeps the
/// contract's classification: [`K8sStoreError::is_transient`] errors become
/// [`lease_core::Error::Timeout`] (retry), everything else a [`lease_core::Error::Store`] that
/// keeps this error as its source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sStoreError {
    /// The API server refused the request (HTTP 401 or 403): the credentials lack a permission.
    /// The message names the missing permission so that an operator can grant it (see the crate
    /// docs for the minimal `Role`).
    #[error(
        "permission denied: cannot {verb} {resource} in namespace {namespace:?} (HTTP {code}: {message}); grant it with a Role (see the lease-store-k8s docs)"
    )]
    Permission {
        /// The API verb: `get`, `list`, `watch`, `create` or `update`.
        verb: &'static str,
        /// The resource: `leases` (group `coordination.k8s.io`) or `configmaps`.
        resource: &'static str,
        /// The Kubernetes namespace of the request.
        namespace: String,
        /// The HTTP status code (401 or 403).
        code: u16,
        /// The API server's message.
        message: String,
    },
    /// The store's Kubernetes namespace does not exist.
    #[error("kubernetes namespace {namespace:?} not found (while trying to {verb} {resource})")]
    NamespaceNotFound {
        /// The namespace the store was configured with.
        namespace: String,
        /// The API verb that found it missing.
        verb: &'static str,
        /// The resource of the request.
        resource: &'static str,
    },
    /// The store's Kubernetes namespace is being deleted: nothing can be created in it.
    #[error(
        "kubernetes namespace {namespace:?} is being terminated (while trying to {verb} {resource})"
    )]
    NamespaceTerminating {
        /// The namespace the store was configured with.
        namespace: String,
        /// The API verb that was refused.
        verb: &'static str,
        /// The resource of the request.
        resource: &'static str,
    },
    /// A failure that is probably transient: a 5xx or 429 response, a lost connection.
    #[error("transient failure: {verb} {resource} {name:?} in namespace {namespace:?}: {source}")]
    Transient {
        /// The API verb.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// The object's name (empty for a list or watch).
        name: String,
        /// The Kubernetes namespace.
        namespace: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A request did not complete within the store's request timeout.
    #[error(
        "request timed out after {timeout:?}: {verb} {resource} {name:?} in namespace {namespace:?}"
    )]
    RequestTimeout {
        /// The API verb.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// The object's name (empty for a list).
        name: String,
        /// The Kubernetes namespace.
        namespace: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// Any other failure of a request (a 4xx other than the above, an undecodable response).
    #[error("{verb} {resource} {name:?} in namespace {namespace:?} failed: {source}")]
    Api {
        /// The API verb.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// The object's name (empty for a list).
        name: String,
        /// The Kubernetes namespace.
        namespace: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The object a key maps to records a different key: a hand-made object, or (never seen in
    /// practice) a collision of 80-bit name hashes.
    #[error("object {name:?} in namespace {namespace:?} records key {found}, not {expected}")]
    KeyMismatch {
        /// The object's name.
        name: String,
        /// The Kubernetes namespace.
        namespace: String,
        /// The key the store wanted.
        expected: String,
        /// The key the object's annotation holds.
        found: String,
    },
    /// A fencing generation can no longer be increased or represented (an object hand-edited
    /// to the largest generation, or a Lease counter that does not fit `leaseTransitions`).
    #[error("object {name:?}: fencing generation {generation} cannot be increased or stored")]
    GenerationOverflow {
        /// The object's name.
        name: String,
        /// The generation that does not fit.
        generation: u64,
    },
    /// Reading the kubeconfig or building the client failed.
    #[error("cannot build a kubernetes client: {0}")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl K8sStoreError {
    /// Whether the failure is probably transient, so retrying the same operation may succeed.
    /// Such errors convert to [`lease_core::Error::Timeout`].
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            K8sStoreError::Transient { .. } | K8sStoreError::RequestTimeout { .. }
        )
    }

    /// Classifies a client error from `verb` on `resource` `name` in `namespace`.
    pub(crate) fn from_kube(
        source: kube::Error,
        verb: &'static str,
        resource: &'static str,
        name: &str,
        namespace: &str,
    ) -> Self {
        let name = name.to_owned();
        let namespace = namespace.to_owned();
        match &source {
            kube::Error::Api(status) => {
                let code = status.code;
                // The NamespaceLifecycle admission plugin also answers 403.
                if code == 403 && status.message.contains("because it is being terminated") {
                    return K8sStoreError::NamespaceTerminating {
                        namespace,
                        verb,
                        resource,
                    };
                }
                if code == 401 || code == 403 {
                    return K8sStoreError::Permission {
                        verb,
                        resource,
                        namespace,
                        code,
                        message: status.message.clone(),
                    };
                }
                if code == 404
                    && status
                        .details
                        .as_ref()
                        .is_some_and(|d| d.kind == "namespaces")
                {
                    return K8sStoreError::NamespaceNotFound {
                        namespace,
                        verb,
                        resource,
                    };
                }
                if code >= 500 || code == 429 || code == 408 {
                    return K8sStoreError::Transient {
                        verb,
                        resource,
                        name,
                        namespace,
                        source: Box::new(source),
                    };
                }
                K8sStoreError::Api {
                    verb,
                    resource,
                    name,
                    namespace,
                    source: Box::new(source),
                }
            }
            kube::Error::HyperError(_)
            | kube::Error::Service(_)
            | kube::Error::ReadEvents(_)
            | kube::Error::Auth(_) => K8sStoreError::Transient {
                verb,
                resource,
                name,
                namespace,
                source: Box::new(source),
            },
            _ => K8sStoreError::Api {
                verb,
                resource,
                name,
                namespace,
                source: Box::new(source),
            },
        }
    }
}

impl From<K8sStoreError> for lease_core::Error {
    fn from(err: K8sStoreError) -> Self {
        if err.is_transient() {
            tracing::debug!(error = %err, "transient kubernetes failure");
            lease_core::Error::Timeout.context(err.to_string())
        } else {
            lease_core::Error::Store {
                message: err.to_string(),
                source: Some(Box::new(err)),
            }
        }
    }
}

/// Whether a client error is an HTTP status with `code`.
pub(crate) fn has_code(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Status::failure("boom", reason).with_code(code).boxed())
    }

    #[test]
    fn classifies_status_codes() {
        let e = K8sStoreError::from_kube(api(403, "Forbidden"), "create", "leases", "x", "ns");
        assert!(matches!(
            e,
            K8sStoreError::Permission {
                verb: "create",
                resource: "leases",
                code: 403,
                ..
            }
        ));
        let msg = e.to_string();
        assert!(
            msg.contains("cannot create leases in namespace \"ns\""),
            "{msg}"
        );
        let core: lease_core::Error = e.into();
        assert_eq!(core.kind(), lease_core::ErrorKind::Store);
        assert!(core.to_string().contains("permission denied"));

        for code in [500, 503, 504, 429] {
            let e = K8sStoreError::from_kube(api(code, "x"), "get", "leases", "x", "ns");
            assert!(e.is_transient(), "{code}");
            let core: lease_core::Error = e.into();
            assert!(core.is_timeout(), "{code}");
        }
        let e = K8sStoreError::from_kube(api(422, "Invalid"), "update", "leases", "x", "ns");
        assert!(!e.is_transient());
    }

    #[test]
    fn namespace_not_found_is_recognised() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "namespaces \"nope\" not found", "reason": "NotFound",
            "details": {"name": "nope", "kind": "namespaces"}, "code": 404
        }))
        .unwrap();
        let e = K8sStoreError::from_kube(
            kube::Error::Api(status.boxed()),
            "create",
            "leases",
            "x",
            "nope",
        );
        assert!(matches!(e, K8sStoreError::NamespaceNotFound { .. }), "{e}");
        assert!(e.to_string().contains("namespace \"nope\" not found"));
    }
}
