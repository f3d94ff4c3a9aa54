//! [`PostgresStoreError`], this crate's one error type, and how it becomes a [`lease_core::Error`].
//!
//! No variant ever carries the password: connection targets are described by user, host, port
//! and database only, and the driver's own messages (which may quote the connection string on a
//! parse error) are not passed through for configuration errors.

use tokio_postgres::error::SqlState;

/// Everything that can go wrong connecting to or using a
/// [`PostgresStore`](crate::PostgresStore).
///
/// The [`Store`](lease_core::Store) methods return these inside [`lease_core::Error`]: the
/// transient ones ([`is_transient`](PostgresStoreError::is_transient): a lost connection, a
/// server restarting, a statement timeout, a deadlock) become
/// [`lease_core::Error::Timeout`] (the outcome may be unknown; retry), every other variant
/// [`lease_core::Error::Store`] with this error as its source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresStoreError {
    /// The connection string could not be parsed, or names no host.
    #[error("invalid Postgres connection string {redacted}: {reason}")]
    BadUrl {
        /// The connection string with any password replaced by `***`.
        redacted: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The schema name is not a plain lowercase identifier.
    #[error(
        "invalid schema name {0:?}: use 1 to 40 of a-z, 0-9 and '_', not starting with a digit"
    )]
    BadSchemaName(String),
    /// No server answered at the target (refused, unreachable, or no answer in time).
    #[error("cannot reach the Postgres server at {target}: {reason}")]
    Unreachable {
        /// `user@host:port/database`.
        target: String,
        /// What the network said.
        reason: String,
    },
    /// The server refused the user's credentials.
    #[error("Postgres server at {target} refused the credentials of user {user:?}: {reason}")]
    Authentication {
        /// `user@host:port/database`.
        target: String,
        /// The user.
        user: String,
        /// The server's message (never containing the password).
        reason: String,
    },
    /// The database named in the connection string does not exist.
    #[error("Postgres database {database:?} does not exist on {target}")]
    MissingDatabase {
        /// `user@host:port/database`.
        target: String,
        /// The missing database.
        database: String,
    },
    /// The user lacks a privilege the store needs.
    #[error(
        "Postgres user {user:?} lacks a privilege while {action} in schema {schema:?}: {reason} \
         (see the crate documentation for the privileges the store needs)"
    )]
    Permission {
        /// The user.
        user: String,
        /// The lease schema.
        schema: String,
        /// What the store was doing.
        action: &'static str,
        /// The server's message.
        reason: String,
    },
    /// The schema was written by a newer version of this crate, or is not a lease schema.
    #[error(
        "Postgres schema {schema:?} has lease schema version {found}, not the {supported} this \
         version of lease-store-postgres supports; refusing to use it"
    )]
    SchemaVersion {
        /// The lease schema.
        schema: String,
        /// The version found.
        found: i64,
        /// [`SCHEMA_VERSION`](crate::SCHEMA_VERSION).
        supported: i32,
    },
    /// The schema exists and holds tables, but no lease schema version.
    #[error("Postgres schema {schema:?} exists but is not a lease schema (no {schema}.meta table)")]
    ForeignSchema {
        /// The schema.
        schema: String,
    },
    /// The connection was lost, the server is restarting or shutting down, a statement timed
    /// out, or a transaction hit a deadlock or serialisation failure: transient, and for a
    /// write the outcome may be unknown. Becomes [`lease_core::Error::Timeout`].
    #[error("Postgres at {target}: {action} failed transiently: {reason}")]
    Transient {
        /// `user@host:port/database`.
        target: String,
        /// What the store was doing.
        action: &'static str,
        /// What happened.
        reason: String,
    },
    /// The operation did not finish within the store's operation timeout. Becomes
    /// [`lease_core::Error::Timeout`].
    #[error("Postgres at {target}: {action} did not finish within {timeout:?}")]
    TimedOut {
        /// `user@host:port/database`.
        target: String,
        /// What the store was doing.
        action: &'static str,
        /// The operation timeout.
        timeout: std::time::Duration,
    },
    /// Any other failure reported by the server or the driver.
    #[error("Postgres at {target}: {action} failed: {reason}")]
    Other {
        /// `user@host:port/database`.
        target: String,
        /// What the store was doing.
        action: &'static str,
        /// What happened.
        reason: String,
    },
    /// A stored row could not be read back (bad metadata JSON, an unknown status).
    #[error("lease schema {schema:?} holds a bad row for {key}: {reason}")]
    BadRow {
        /// The lease schema.
        schema: String,
        /// The lease.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl PostgresStoreError {
    /// Whether the failure is transient (the store answers [`lease_core::Error::Timeout`]).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PostgresStoreError::Transient { .. } | PostgresStoreError::TimedOut { .. }
        )
    }
}

impl From<PostgresStoreError> for lease_core::Error {
    fn from(err: PostgresStoreError) -> Self {
        if err.is_transient() {
            let message = err.to_string();
            lease_core::Error::Timeout.context(message)
        } else {
            lease_core::Error::store(err.to_string(), err)
        }
    }
}

/// Whether a driver error means the connection (or the server) failed, or the statement was
/// stopped for a reason that retrying may cure.
pub(crate) fn is_transient(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.code() {
        None => true, // I/O, protocol or timeout errors: the connection is no longer usable.
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("53") // insufficient resources
                || c.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
                || *code == SqlState::QUERY_CANCELED // statement_timeout, pg_cancel_backend
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::LOCK_NOT_AVAILABLE
                || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
                || *code == SqlState::IN_FAILED_SQL_TRANSACTION
        }
    }
}

/// The driver's report of a failure: the server's message and code when it sent one, else the
/// driver's own (which names no password: only connection-string parsing could, and that is
/// never reported through here).
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// Where the store connects, for messages: `user@host:port/database`, never the password.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) display: String,
    pub(crate) user: String,
    pub(crate) database: String,
}

impl Target {
    /// A failure while `action`, classified.
    pub(crate) fn error(
        &self,
        action: &'static str,
        err: &tokio_postgres::Error,
    ) -> PostgresStoreError {
        let reason = describe(err);
        if is_transient(err) {
            PostgresStoreError::Transient {
                target: self.display.clone(),
                action,
                reason,
            }
        } else {
            PostgresStoreError::Other {
                target: self.display.clone(),
                action,
                reason,
            }
        }
    }

    /// A failure while connecting, classified as a configuration error where it is one.
    pub(crate) fn connect_error(&self, err: &tokio_postgres::Error) -> PostgresStoreError {
        let reason = describe(err);
        match err.code() {
            Some(code)
                if *code == SqlState::INVALID_PASSWORD
                    || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                PostgresStoreError::Authentication {
                    target: self.display.clone(),
                    user: self.user.clone(),
                    reason,
                }
            }
            Some(code) if *code == SqlState::INVALID_CATALOG_NAME => {
                PostgresStoreError::MissingDatabase {
                    target: self.display.clone(),
                    database: self.database.clone(),
                }
            }
            Some(code) if code.code().starts_with("57P") || code.code().starts_with("53") => {
                PostgresStoreError::Transient {
                    target: self.display.clone(),
                    action: "connecting",
                    reason,
                }
            }
            Some(_) => PostgresStoreError::Other {
                target: self.display.clone(),
                action: "connecting",
                reason,
            },
            None => PostgresStoreError::Unreachable {
                target: self.display.clone(),
                reason,
            },
        }
    }
}
