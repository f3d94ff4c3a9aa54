//! The one error type of this crate.

use std::time::Duration;

use lease_manager::ElectionError;

/// What went wrong building, starting or running a lease through this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder setting is missing or has a value that cannot work.
    #[error("bad setting {setting}: {reason}")]
    Setting {
        /// The builder method (and so the setting) at fault, e.g. `timing`.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No identity was given and none could be derived from the environment.
    #[error(
        "no identity: call .identity(...), or set POD_NAME (the downward API) or give the host \
         a name"
    )]
    NoIdentity,
    /// The default SQLite path could not be worked out.
    #[error("{0}; or call .path(...)")]
    NoDefaultPath(String),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[source] lease_core::Error),
    /// The manager could not start (e.g. not inside a tokio runtime).
    #[error("starting the lease manager: {0}")]
    Manager(#[source] lease_manager::ManagerError),
    /// Leader election failed (see [`ElectionError`]).
    #[error(transparent)]
    Election(#[from] ElectionError),
    /// The lease was lost while the closure given to
    /// [`RunningElection::run`](crate::RunningElection::run) ran: its token was cancelled at the
    /// renew deadline and, if it had not returned within `grace`, it was aborted before the lease
    /// could expire.
    #[error(
        "lost lease {lease} (generation {generation}) while running; the task {}",
        if *.aborted { format!("was aborted after a grace of {grace:?}") } else { "stopped in time".to_owned() }
    )]
    Lost {
        /// The lease.
        lease: String,
        /// The generation of the term that was lost.
        generation: lease_core::Generation,
        /// How long the task had between its token's cancellation and its abort.
        grace: Duration,
        /// Whether the task had to be aborted.
        aborted: bool,
    },
    /// The closure given to [`RunningElection::run`](crate::RunningElection::run) panicked.
    #[error("the task run under lease {lease} panicked")]
    Panicked {
        /// The lease.
        lease: String,
    },
}

impl Error {
    pub(crate) fn setting(setting: &'static str, reason: impl Into<String>) -> Error {
        Error::Setting {
            setting,
            reason: reason.into(),
        }
    }
}
