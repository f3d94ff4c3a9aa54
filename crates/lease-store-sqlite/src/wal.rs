//! The write-ahead log at close: kept as it is (what `lease run` asks for, so a short-lived
//! process does not pay a checkpoint and the log's re-creation each time) or checkpointed into
//! the file and removed (SQLite's default), and whether a log holds anything a checkpoint
//! could copy into a file found damaged.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Switches `conn`'s database to WAL (`PRAGMA journal_mode=WAL`) and returns the journal mode
/// SQLite kept, waiting up to `timeout` for other connections' locks.
///
/// SQLite's busy handler is not called here: switching a file that is not in WAL yet (a new
/// one) upgrades a read transaction to a write transaction, which SQLite refuses at once with
/// `SQLITE_BUSY` when another connection writes (rather than risk a deadlock), as when several
/// processes create the file at once. So this waits as the handler would, pausing between
/// tries. A file already in WAL is left as it is, without a write.
pub(crate) fn switch_to_wal(conn: &Connection, timeout: Duration) -> rusqlite::Result<String> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && start.elapsed() < timeout =>
            {
                std::thread::sleep(pause.min(timeout.saturating_sub(start.elapsed())));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            answer => return answer,
        }
    }
}
