//! The manager's own errors: a bad configuration, no runtime to start in, a namespace without a
//! secretary. Each converts into [`lease_core::Error`] where the facade traits need one.

/// What can go wrong when starting a manager or asking it for a facade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// A [`ManagerConfig`](crate::ManagerConfig) field holds an unusable value.
    #[error("invalid manager config {field} {value:?}: {reason}")]
    Config {
        /// The field, as named in [`ManagerConfig`](crate::ManagerConfig) (`max_sleep`,
        /// `retry.attempts`, …).
        field: &'static str,
        /// The offending value, as text.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// [`Manager::start`](crate::Manager::start) was called outside a tokio runtime, so the
    /// worker could not be spawned.
    #[error("no tokio runtime to run the lease manager's worker in")]
    NoRuntime,
    /// A facade was asked for a namespace that has no secretary, and there is no default one.
    #[error("invalid namespace {namespace:?}: no secretary for this namespace")]
    UnknownNamespace {
        /// The namespace asked for.
        namespace: String,
    },
}

impl ManagerError {
    pub(crate) fn config(
        field: &'static str,
        value: impl std::fmt::Debug,
        reason: impl Into<String>,
    ) -> Self {
        ManagerError::Config {
            field,
            value: format!("{value:?}"),
            reason: reason.into(),
        }
    }
}

/// The first 64 characters of `value` and `…` when it is longer: what an error quotes of a
/// value that may be huge (as lease-core's validation does).
pub(crate) fn shortened(value: &str) -> String {
    const SHOWN_CHARS: usize = 64;
    match value.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_owned(),
    }
}

impl From<ManagerError> for lease_core::Error {
    /// Configuration and namespace errors become [`lease_core::Error::Validation`] naming the
    /// same field; [`ManagerError::NoRuntime`] becomes a [`lease_core::Error::Store`] whose
    /// source is the original error.
    fn from(err: ManagerError) -> Self {
        match err {
            ManagerError::Config {
                field,
                value,
                reason,
            } => lease_core::Error::validation(field, value, reason),
            ManagerError::UnknownNamespace { namespace } => lease_core::Error::validation(
                "namespace",
                namespace,
                "no secretary for this namespace",
            ),
            e @ ManagerError::NoRuntime => {
                lease_core::Error::store("starting the lease manager", e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_the_field() {
        let e = ManagerError::config("max_sleep", std::time::Duration::ZERO, "must be > 0");
        assert_eq!(
            e.to_string(),
            r#"invalid manager config max_sleep "0ns": must be > 0"#
        );
        let core: lease_core::Error = e.into();
        assert!(matches!(
            core,
            lease_core::Error::Validation {
                field: "max_sleep",
                ..
            }
        ));

        let core: lease_core::Error = ManagerError::UnknownNamespace {
            namespace: "nope".into(),
        }
        .into();
        assert!(
            matches!(core, lease_core::Error::Validation { field: "namespace", ref value, .. } if value == "nope")
        );

        let core: lease_core::Error = ManagerError::NoRuntime.into();
        assert_eq!(core.kind(), lease_core::ErrorKind::Store);
    }
}
