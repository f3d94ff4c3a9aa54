//! [`SqliteStoreError`], this crate's one error type, and how it becomes a [`lease_core::Error`].

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::ErrorCode;

/// What the store's internal steps return.
pub(crate) type StoreResult<T> = Result<T, SqliteStoreError>;

/// The database file as an error reports it: its path, and the busy timeout a
/// [`SqliteStoreError::Busy`] says was waited. Every step that runs SQL maps SQLite's failures
/// through it.
#[derive(Debug, Clone)]
pub(crate) struct DbFile {
    /// The database file.
    pub(crate) path: PathBuf,
    /// How long to wait for another connection's write lock.
    pub(crate) busy_timeout: Duration,
    /// The file's device and inode when the store opened it (`None`: unknown, not checked).
    pub(crate) identity: Option<(u64, u64)>,
}

impl DbFile {
    /// The device and inode of the file at `path` now.
    pub(crate) fn identity_of(path: &Path) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    /// Whether `path` still names the file the store opened: a deleted or replaced file is
    /// still read and written through the store's connection, and no other opener sees it, so
    /// an answer from it (a claim, a "held") is worth nothing. Checked after each transaction
    /// that answers, so no answer is given from a file gone before the transaction ended.
    ///
    /// # Errors
    ///
    /// [`SqliteStoreError::Replaced`] saying which.
    pub(crate) fn still_the_opened_file(&self) -> StoreResult<()> {
        let Some(opened) = self.identity else {
            return Ok(());
        };
        let what = match Self::identity_of(&self.path) {
            Some(now) if now == opened => return Ok(()),
            Some(_) => "replaced by another file",
            None => "deleted (or made unreadable)",
        };
        Err(SqliteStoreError::Replaced {
            path: self.path.clone(),
            what,
        })
    }

    /// A mapper from SQLite's errors to ours while doing `action`.
    pub(crate) fn sql(
        &self,
        action: &'static str,
    ) -> impl Fn(rusqlite::Error) -> SqliteStoreError + '_ {
        move |e| SqliteStoreError::from_sqlite(&self.path, self.busy_timeout, action, e)
    }
}

/// Everything that can go wrong opening or using a [`SqliteStore`](crate::SqliteStore).
///
/// Every variant names the database file (or directory) it is about. The [`Store`] methods
/// return these inside [`lease_core::Error`]: [`SqliteStoreError::Busy`] becomes
/// [`lease_core::Error::Timeout`] (transient, retry), every other variant
/// [`lease_core::Error::Store`] with this error as its source, so it can be recovered with
/// [`downcast_ref`](std::error::Error#method.downcast_ref).
///
/// [`Store`]: lease_core::Store
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteStoreError {
    /// The directory that should hold the database does not exist.
    #[error("cannot open lease database {path}: directory {dir} does not exist")]
    MissingDirectory {
        /// The database file.
        path: PathBuf,
        /// Its missing parent directory.
        dir: PathBuf,
    },
    /// The database file, or the directory holding it (where SQLite keeps its `-wal` and
    /// `-shm` files), cannot be written.
    #[error("lease database {path} is read-only: {reason}")]
    ReadOnly {
        /// The file or directory that cannot be written.
        path: PathBuf,
        /// Why it cannot be written.
        reason: String,
    },
    /// The file exists but is not an SQLite database (or its header is damaged).
    #[error("{path} is not a lease database: {source}")]
    NotADatabase {
        /// The database file.
        path: PathBuf,
        /// SQLite's report.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is an SQLite database belonging to another application: it carries another
    /// `application_id`, or tables but no lease schema version.
    #[error("{path} is not a lease database: {reason}")]
    ForeignDatabase {
        /// The database file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The database is damaged: a page is missing (a truncated file), malformed or
    /// inconsistent.
    #[error("lease database {path} is corrupt (damaged database): {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite found.
        detail: String,
    },
    /// The database was written by a newer version of this crate; it is left untouched.
    #[error(
        "lease database {path} has schema version {found}, newer than the {supported} this \
         version of lease-store-sqlite supports; refusing to open it"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The file's `PRAGMA user_version`.
        found: i64,
        /// [`SCHEMA_VERSION`](crate::SCHEMA_VERSION).
        supported: i64,
    },
    /// The file system cannot host the database as this store needs it (WAL mode is not
    /// available there, as on some network file systems).
    #[error("lease database {path}: {reason}")]
    Unsupported {
        /// The database file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The database is on a file system another kernel can write at the same time (NFS, SMB,
    /// 9p, FUSE or virtiofs, a cluster file system, ...). Expiries are instants on one
    /// kernel's clock, so two kernels sharing the file would each judge the other's leases
    /// expired and both hold them. See
    /// [`SqliteStoreBuilder::allow_network_filesystem`](crate::SqliteStoreBuilder::allow_network_filesystem).
    #[error(
        "lease database {path} is on {filesystem} (statfs magic {magic:#x}), a file system \
         another kernel can write too; an SQLite lease database must be used by one kernel \
         only: put it on a local file system, or use the Kubernetes store across hosts"
    )]
    SharedFileSystem {
        /// The file or directory that is on it.
        path: PathBuf,
        /// The file system's name.
        filesystem: &'static str,
        /// Its `statfs` `f_type`.
        magic: u32,
    },
    /// Another kernel (a different boot id, not an earlier boot of this host) has written
    /// leases to this file that may still be live: the file is shared between kernels (a VM or
    /// sandbox mount, a network file system). Nothing was written and no lease was taken.
    #[error(
        "lease database {path} is being written by another kernel: boot {other_boot} \
         ({evidence}) has leases that may be live until about {live_for_ms} ms from now by the \
         wall clock; an SQLite lease database must be used by one kernel only (each kernel \
         would judge the other's leases expired); refusing to write or to judge its leases"
    )]
    AnotherKernel {
        /// The database file.
        path: PathBuf,
        /// The other kernel's boot id.
        other_boot: String,
        /// Why it cannot be an earlier boot of this host.
        evidence: String,
        /// How much longer, by the wall clock, its leases may be live.
        live_for_ms: u64,
    },
    /// Another connection held the database's write lock for longer than the busy timeout.
    /// Transient: retry.
    #[error("lease database {path} is locked (busy for more than {timeout:?}): {source}")]
    Busy {
        /// The database file.
        path: PathBuf,
        /// The busy timeout that ran out.
        timeout: Duration,
        /// SQLite's report.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite could not open the file.
    #[error("cannot open lease database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's report.
        #[source]
        source: rusqlite::Error,
    },
    /// A file-system operation on the database file or its directory failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`"creating lease database"`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's report.
        #[source]
        source: io::Error,
    },
    /// No default database can be worked out from the environment (see
    /// [`DefaultDatabase`](crate::DefaultDatabase)); the message names the variable.
    #[error("no default lease database: {0} (set LEASE_DB=/path/to/leases.db or name a file)")]
    NoDefaultDatabase(String),
    /// The host's boot id could not be read.
    #[error("cannot read the host's boot id from {path}: {source}")]
    BootId {
        /// Where it was read from.
        path: PathBuf,
        /// The operating system's report.
        #[source]
        source: io::Error,
    },
    /// A boot id given to the builder is empty or contains whitespace.
    #[error("invalid boot id {0:?}: must be non-empty and contain no whitespace")]
    InvalidBootId(String),
    /// Metadata stored with a lease is not valid JSON.
    #[error("lease database {path}: metadata of lease {key} is not valid JSON: {source}")]
    Metadata {
        /// The database file.
        path: PathBuf,
        /// The lease, as `namespace/model#lease`.
        key: String,
        /// The parser's report.
        #[source]
        source: serde_json::Error,
    },
    /// The blocking thread that ran an SQLite call for this store failed: the call panicked
    /// (its transaction was rolled back), or the runtime shut down before running it.
    #[error("lease database {path}: the blocking thread running the call failed: {source}")]
    BlockingCall {
        /// The database file.
        path: PathBuf,
        /// Tokio's report.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The database file was deleted or replaced by another file while this store had it
    /// open. The store's connection still reads and writes the old file, which no other
    /// opener sees, so nothing it says can be trusted: the call that found it counts as
    /// failed (what it wrote went to the old file only). Reopen the store.
    #[error(
        "lease database {path} was {what} while this store had it open: its answers would come \
         from a file no other process sees; refusing them (reopen the store)"
    )]
    Replaced {
        /// The database file.
        path: PathBuf,
        /// What became of it.
        what: &'static str,
    },
    /// Any other SQLite failure while opening or using the database.
    #[error("lease database {path}: {action}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// SQLite's report.
        #[source]
        source: rusqlite::Error,
    },
}

impl SqliteStoreError {
    /// Classifies an SQLite failure while doing `action` on the database at `path`.
    pub(crate) fn from_sqlite(
        path: &Path,
        timeout: Duration,
        action: &'static str,
        source: rusqlite::Error,
    ) -> Self {
        let path = path.to_path_buf();
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => SqliteStoreError::Busy {
                path,
                timeout,
                source,
            },
            Some(ErrorCode::NotADatabase) => SqliteStoreError::NotADatabase { path, source },
            Some(ErrorCode::DatabaseCorrupt) => SqliteStoreError::Corrupt {
                path,
                detail: source.to_string(),
            },
            Some(ErrorCode::ReadOnly) => SqliteStoreError::ReadOnly {
                path,
                reason: source.to_string(),
            },
            _ => SqliteStoreError::Sqlite {
                path,
                action,
                source,
            },
        }
    }

    /// Whether this is a transient failure ([`SqliteStoreError::Busy`]) worth retrying.
    pub fn is_busy(&self) -> bool {
        matches!(self, SqliteStoreError::Busy { .. })
    }
}

impl From<SqliteStoreError> for lease_core::Error {
    /// [`SqliteStoreError::Busy`] becomes [`lease_core::Error::Timeout`] with the cause as
    /// context; everything else [`lease_core::Error::Store`] with this error as its source.
    fn from(err: SqliteStoreError) -> Self {
        if err.is_busy() {
            lease_core::Error::Timeout.context(err.to_string())
        } else {
            lease_core::Error::store(err.to_string(), err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn sqlite(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    fn classify(code: i32) -> SqliteStoreError {
        SqliteStoreError::from_sqlite(
            Path::new("/x/leases.db"),
            Duration::from_millis(5),
            "claiming",
            sqlite(code),
        )
    }

    #[test]
    fn sqlite_codes_are_classified() {
        assert!(matches!(
            classify(ffi::SQLITE_BUSY),
            SqliteStoreError::Busy { .. }
        ));
        assert!(matches!(
            classify(ffi::SQLITE_LOCKED),
            SqliteStoreError::Busy { .. }
        ));
        assert!(matches!(
            classify(ffi::SQLITE_NOTADB),
            SqliteStoreError::NotADatabase { .. }
        ));
        assert!(matches!(
            classify(ffi::SQLITE_CORRUPT),
            SqliteStoreError::Corrupt { .. }
        ));
        assert!(matches!(
            classify(ffi::SQLITE_READONLY),
            SqliteStoreError::ReadOnly { .. }
        ));
        assert!(matches!(
            classify(ffi::SQLITE_FULL),
            SqliteStoreError::Sqlite {
                action: "claiming",
                ..
            }
        ));
    }

    #[test]
    fn busy_becomes_a_timeout_naming_the_path() {
        let err = lease_core::Error::from(classify(ffi::SQLITE_BUSY));
        assert!(err.is_timeout());
        assert!(err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("/x/leases.db"), "{text}");
        assert!(text.contains("locked"), "{text}");
    }

    #[test]
    fn other_errors_become_store_errors_with_their_source() {
        let err = lease_core::Error::from(classify(ffi::SQLITE_CORRUPT));
        assert_eq!(err.kind(), lease_core::ErrorKind::Store);
        let source = std::error::Error::source(&err).expect("a source");
        let ours = source
            .downcast_ref::<SqliteStoreError>()
            .expect("the source is a SqliteStoreError");
        assert!(matches!(ours, SqliteStoreError::Corrupt { .. }));
        assert!(err.to_string().contains("/x/leases.db is corrupt"));
    }
}
