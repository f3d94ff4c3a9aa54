//! The write-ahead log at close: kept as it is (what `lease run` asks for, so a short-lived
//! process does not pay a checkpoint and the log's re-creation each time) or checkpointed into
//! the file and removed (SQLite's default), and whether a log holds anything a checkpoint
//! could copy into a file found damaged.

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite::config::DbConfig;

/// Whether closing `conn` leaves the write-ahead log as it is (`keep`) or checkpoints it into
/// the database file and removes it (SQLite's default).
pub(crate) fn keep_wal_on_close(conn: &Connection, keep: bool) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, keep)?;
    Ok(())
}

/// Whether the write-ahead log of the database at `path` holds anything (frames that a
/// checkpoint could copy into the file); false when it is absent or empty.
pub(crate) fn wal_has_content(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    fs::metadata(PathBuf::from(wal)).is_ok_and(|m| m.len() > 0)
}
