//! [`check_file`]: the full integrity check of a lease database, on demand and read-only.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::error::SqliteStoreError;
use crate::schema::read_schema_version;

/// What [`check_file`] found in a sound lease database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IntegrityReport {
    /// The database file.
    pub path: PathBuf,
    /// Its schema version (`PRAGMA user_version`); 0 for a file no store has migrated yet.
    pub schema_version: i64,
    /// How many lease rows it holds, live or expired.
    pub lease_rows: u64,
    /// Its size in pages.
    pub pages: u64,
}

/// How long the check waits for a writer's lock (it only reads, so only a migration or a
/// checkpoint in progress can hold it up).
const CHECK_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks the whole lease database at `path` with `PRAGMA integrity_check` (every page, every
/// index entry, every constraint), without writing anything: the file is opened read-only, not
/// created when missing, and not checkpointed on close. Its cost grows with the file; opening a
/// store does not pay it ([`SqliteStoreBuilder::integrity_check`](crate::SqliteStoreBuilder::integrity_check)).
///
/// # Errors
///
/// - [`SqliteStoreError::Corrupt`] when the check finds damage (its findings in `detail`);
/// - [`SqliteStoreError::NotADatabase`] or [`SqliteStoreError::ForeignDatabase`] for a file
///   that is not a lease database;
/// - [`SqliteStoreError::NewerSchema`] for a file written by a newer version of this crate;
/// - [`SqliteStoreError::Io`] when the file does not exist or cannot be inspected;
/// - [`SqliteStoreError::Open`], [`SqliteStoreError::Busy`] or [`SqliteStoreError::Sqlite`]
///   when SQLite cannot read it.
pub fn check_file(path: impl AsRef<Path>) -> Result<IntegrityReport, SqliteStoreError> {
    let path = path.as_ref().to_path_buf();
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(SqliteStoreError::Io {
                action: "checking lease database",
                path,
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        Err(source) => {
            return Err(SqliteStoreError::Io {
                action: "checking lease database",
                path,
                source,
            });
        }
    }
    let sql = |action: &'static str| {
        let path = path.clone();
        move |e| SqliteStoreError::from_sqlite(&path, CHECK_BUSY_TIMEOUT, action, e)
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&path, flags).map_err(|source| {
        match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::CannotOpen) => SqliteStoreError::Open {
                path: path.clone(),
                source,
            },
            _ => sql("opening")(source),
        }
    })?;
    conn.busy_timeout(CHECK_BUSY_TIMEOUT)
        .map_err(sql("setting the busy timeout"))?;
    // Belt and braces: no statement may write, and closing must not checkpoint the WAL into
    // the file.
    conn.pragma_update(None, "query_only", true)
        .map_err(sql("making the connection read-only"))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(sql("turning off the checkpoint on close"))?;

    let version = read_schema_version(&conn, &path, CHECK_BUSY_TIMEOUT)?;
    let damaged = |detail: String| SqliteStoreError::Corrupt {
        path: path.clone(),
        detail,
    };
    let findings: Vec<String> = conn
        .prepare("PRAGMA integrity_check(100)")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get(0))
                .and_then(Iterator::collect)
        })
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => damaged(e.to_string()),
            _ => sql("checking integrity")(e),
        })?;
    if findings.len() != 1 || findings[0] != "ok" {
        return Err(damaged(findings.join("; ")));
    }
    let lease_rows: i64 = if version == 0 {
        0
    } else {
        conn.query_row("SELECT count(*) FROM lease", [], |row| row.get(0))
            .map_err(sql("counting leases"))?
    };
    let pages: i64 = conn
        .pragma_query_value(None, "page_count", |row| row.get(0))
        .map_err(sql("reading the page count"))?;
    Ok(IntegrityReport {
        path,
        schema_version: version,
        lease_rows: u64::try_from(lease_rows).unwrap_or(0),
        pages: u64::try_from(pages).unwrap_or(0),
    })
}
