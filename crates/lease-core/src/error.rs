//! The one error type of the lease workspace, and helpers that classify errors through wrapping.

use std::error::Error as StdError;
use std::fmt;

/// A boxed error from a store's backing system (SQLite, the Kubernetes API, …).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The result type of every fallible lease operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a lease operation.
///
/// The first seven variants are Juju's `core/lease` error set and keep its messages. Classify an
/// error with [`Error::kind`] or the `is_*` methods; they see through [`Error::Context`]. For an
/// error that has been wrapped by another type, use the free functions such as [`is_held`], which
/// walk the whole [`source`](StdError::source) chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A claim was denied: the holder is guaranteed *not* to hold the lease.
    #[error("lease claim denied")]
    ClaimDenied,
    /// The holder does not hold the lease (a token check, or a revoke by a non-holder).
    #[error("lease not held")]
    NotHeld,
    /// A `wait_until_expired` was cancelled by its caller.
    #[error("waiting for lease cancelled by client")]
    WaitCancelled,
    /// The store's latest state shows the operation is impossible. A short-range signal: re-read
    /// the store's leases and retry, or return a new error; never pass it on.
    #[error("invalid lease operation")]
    Invalid,
    /// The lease is held by someone else. Do not retry.
    #[error("lease already held")]
    Held,
    /// The store could not complete the operation in time; probably transient, retry.
    #[error("lease operation timed out")]
    Timeout,
    /// The operation was stopped (the manager shut down) before it succeeded or failed.
    #[error("lease operation aborted")]
    Aborted,
    /// An input failed validation before any I/O took place.
    #[error("invalid {field} {value:?}: {reason}")]
    Validation {
        /// Which input was wrong: `namespace`, `model`, `lease`, `holder`, `entity`, `duration`, …
        field: &'static str,
        /// The offending value, as given; for a value over a length limit, only its first 64
        /// characters and `…`.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The store's backing system failed in a way that is not one of the kinds above.
    #[error("{message}")]
    Store {
        /// What the store was doing, and where (a path, an object name).
        message: String,
        /// The underlying error, if there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// Another error with a description of what was being done when it happened.
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// The error itself; its kind is this error's kind.
        #[source]
        source: Box<Error>,
    },
}

/// The kind of an [`Error`], with any [`Error::Context`] wrapping removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::ClaimDenied`].
    ClaimDenied,
    /// See [`Error::NotHeld`].
    NotHeld,
    /// See [`Error::WaitCancelled`].
    WaitCancelled,
    /// See [`Error::Invalid`].
    Invalid,
    /// See [`Error::Held`].
    Held,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::Aborted`].
    Aborted,
    /// See [`Error::Validation`].
    Validation,
    /// See [`Error::Store`].
    Store,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ErrorKind::ClaimDenied => "claim denied",
            ErrorKind::NotHeld => "not held",
            ErrorKind::WaitCancelled => "wait cancelled",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Held => "held",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Validation => "validation",
            ErrorKind::Store => "store",
        };
        f.write_str(name)
    }
}

impl Error {
    /// A validation error for `field` holding `value`.
    pub fn validation(
        field: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Validation {
            field,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// A store error with a message and the underlying cause.
    pub fn store(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Store {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A store error with a message and no underlying cause.
    pub fn store_msg(message: impl Into<String>) -> Self {
        Error::Store {
            message: message.into(),
            source: None,
        }
    }

    /// Wraps this error with a description of what was being done; the kind is unchanged.
    #[must_use]
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// This error's kind, looking through any [`Error::Context`] wrapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ClaimDenied => ErrorKind::ClaimDenied,
            Error::NotHeld => ErrorKind::NotHeld,
            Error::WaitCancelled => ErrorKind::WaitCancelled,
            Error::Invalid => ErrorKind::Invalid,
            Error::Held => ErrorKind::Held,
            Error::Timeout => ErrorKind::Timeout,
            Error::Aborted => ErrorKind::Aborted,
            Error::Validation { .. } => ErrorKind::Validation,
            Error::Store { .. } => ErrorKind::Store,
            Error::Context { source, .. } => source.kind(),
        }
    }

    /// Whether this is (or wraps) [`Error::ClaimDenied`].
    pub fn is_claim_denied(&self) -> bool {
        self.kind() == ErrorKind::ClaimDenied
    }
    /// Whether this is (or wraps) [`Error::NotHeld`].
    pub fn is_not_held(&self) -> bool {
        self.kind() == ErrorKind::NotHeld
    }
    /// Whether this is (or wraps) [`Error::WaitCancelled`].
    pub fn is_wait_cancelled(&self) -> bool {
        self.kind() == ErrorKind::WaitCancelled
    }
    /// Whether this is (or wraps) [`Error::Invalid`].
    pub fn is_invalid(&self) -> bool {
        self.kind() == ErrorKind::Invalid
    }
    /// Whether this is (or wraps) [`Error::Held`].
    pub fn is_held(&self) -> bool {
        self.kind() == ErrorKind::Held
    }
    /// Whether this is (or wraps) [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }
    /// Whether this is (or wraps) [`Error::Aborted`].
    pub fn is_aborted(&self) -> bool {
        self.kind() == ErrorKind::Aborted
    }
    /// Whether this is (or wraps) [`Error::Validation`].
    pub fn is_validation(&self) -> bool {
        self.kind() == ErrorKind::Validation
    }

    /// Whether retrying the same operation after re-reading may succeed ([`Error::Timeout`] or
    /// [`Error::Invalid`]), as the manager's retry loop decides.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Timeout | ErrorKind::Invalid)
    }
}

/// Whether any error in `err`'s source chain is a lease [`Error`] of `kind`.
///
/// This is how the `is_*` functions see through wrapping by other error types (an application's
/// own error enum, `anyhow`, `std::io::Error::other`'s chain, …).
pub fn has_kind(err: &(dyn StdError + 'static), kind: ErrorKind) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(lease_err) = e.downcast_ref::<Error>()
            && lease_err.kind() == kind
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Whether `err` is, or wraps anywhere in its source chain, [`Error::ClaimDenied`].
pub fn is_claim_denied(err: &(dyn StdError + 'static)) -> bool {
    has_kind(err, ErrorKind::ClaimDenied)
}
/// Whether `err` is, or wraps anywhere in its source chain, [`Error::NotHeld`].
pub fn is_not_held(err: &(dyn StdError + 'static)) -> bool {
    has_kind(err, ErrorKind::NotHeld)
}
/// Whether `err` is, or wraps anywhere in its source chain, [`Error::WaitCancelled`].
pub fn is_wait_cancelled(err: &(dyn StdError + 'static)) -> bool {
    has_kind(err, ErrorKind::WaitCancelled)
}
/// Whether `err` is, or wraps anywhere in its source chain, [`Error::Invalid`].
pub fn is_invalid(err: &(dyn StdError + 'static)) -> bool {
    has_kind(err, ErrorKind::Invalid)
}
/// Whether `err` is, or wraps anywhere in its source chain, [`Error::Held`].
pub fn is_held(err: &(dyn StdError + 'static)) -> bool {
    has_kind(err, ErrorKind::Held)
}
/// Whether `err` is, or wraps anywhere in its source chain, [`Error::Timeout`].
pub fn is_timeout(err: &(dyn StdError + 'static)) -> bool {
    has_kind(err, ErrorKind::Timeout)
}
/// Whether `err` is, or wraps anywhere in its source chain, [`Error::Aborted`].
pub fn is_aborted(err: &(dyn StdError + 'static)) -> bool {
    has_kind(err, ErrorKind::Aborted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An application's own error type that wraps a lease error as its source.
    #[derive(Debug, thiserror::Error)]
    #[error("application step failed")]
    struct AppError(#[source] Error);

    /// Two levels of foreign wrapping.
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] AppError);

    fn all() -> Vec<(Error, ErrorKind, &'static str)> {
        vec![
            (
                Error::ClaimDenied,
                ErrorKind::ClaimDenied,
                "lease claim denied",
            ),
            (Error::NotHeld, ErrorKind::NotHeld, "lease not held"),
            (
                Error::WaitCancelled,
                ErrorKind::WaitCancelled,
                "waiting for lease cancelled by client",
            ),
            (
                Error::Invalid,
                ErrorKind::Invalid,
                "invalid lease operation",
            ),
            (Error::Held, ErrorKind::Held, "lease already held"),
            (
                Error::Timeout,
                ErrorKind::Timeout,
                "lease operation timed out",
            ),
            (
                Error::Aborted,
                ErrorKind::Aborted,
                "lease operation aborted",
            ),
        ]
    }

    type Helper = fn(&(dyn StdError + 'static)) -> bool;
    const HELPERS: [(ErrorKind, Helper); 7] = [
        (ErrorKind::ClaimDenied, is_claim_denied),
        (ErrorKind::NotHeld, is_not_held),
        (ErrorKind::WaitCancelled, is_wait_cancelled),
        (ErrorKind::Invalid, is_invalid),
        (ErrorKind::Held, is_held),
        (ErrorKind::Timeout, is_timeout),
        (ErrorKind::Aborted, is_aborted),
    ];

    #[test]
    fn messages_match_juju() {
        for (err, _, msg) in all() {
            assert_eq!(err.to_string(), msg);
        }
    }

    #[test]
    fn each_helper_recognises_only_its_kind_directly_and_through_wrapping() {
        for (err, kind, _) in all() {
            let wrapped = Outer(AppError(err.context("claiming lease \"x\"")));
            for (helper_kind, helper) in HELPERS {
                let expect = helper_kind == kind;
                assert_eq!(helper(&wrapped), expect, "{helper_kind} on wrapped {kind}");
            }
        }
        for (err, kind, _) in all() {
            for (helper_kind, helper) in HELPERS {
                assert_eq!(helper(&err), helper_kind == kind, "{helper_kind} on {kind}");
            }
        }
    }

    #[test]
    fn methods_see_through_context() {
        let err = Error::Held.context("a").context("b");
        assert!(err.is_held());
        assert!(!err.is_timeout());
        assert_eq!(err.kind(), ErrorKind::Held);
        assert_eq!(err.to_string(), "b: a: lease already held");
        assert!(Error::Timeout.context("x").is_retryable());
        assert!(Error::Invalid.is_retryable());
        assert!(!Error::Held.is_retryable());
        assert!(Error::ClaimDenied.is_claim_denied());
        assert!(Error::NotHeld.is_not_held());
        assert!(Error::WaitCancelled.is_wait_cancelled());
        assert!(Error::Aborted.is_aborted());
        assert!(Error::Invalid.is_invalid());
        assert!(Error::validation("lease", "a b", "contains whitespace").is_validation());
    }

    #[test]
    fn store_errors_keep_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let err = Error::store("opening /tmp/x.db", io);
        assert_eq!(err.kind(), ErrorKind::Store);
        assert_eq!(err.source().unwrap().to_string(), "denied");
        assert!(!is_timeout(&err));
        assert_eq!(Error::store_msg("boom").to_string(), "boom");
    }

    #[test]
    fn a_timeout_inside_a_store_error_source_is_seen() {
        let err = Error::store("batch failed", Error::Timeout);
        assert_eq!(err.kind(), ErrorKind::Store);
        assert!(is_timeout(&err));
    }

    #[test]
    fn unrelated_errors_are_no_kind() {
        let io = std::io::Error::other("nothing to do with leases");
        for (_, helper) in HELPERS {
            assert!(!helper(&io));
        }
    }

    #[test]
    fn errors_are_send_sync_static() {
        fn check<T: Send + Sync + 'static + StdError>() {}
        check::<Error>();
    }
}
