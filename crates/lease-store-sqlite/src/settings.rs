//! [`Settings`]: what every operation of a store needs besides its connection, fixed when the
//! store is opened and shared by its blocking calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lease_core::Clock;

use crate::error::{DbFile, SqliteStoreError};
use crate::kernel::{RegisteredBoot, WallClock};
use crate::session::Sessions;

/// What every operation needs besides the connection.
pub(crate) struct Settings {
    /// The database file and its busy timeout, as errors report them.
    pub(crate) db: DbFile,
    /// Decides expiry.
    pub(crate) clock: Arc<dyn Clock>,
    /// This boot as registered in the file.
    pub(crate) boot: RegisteredBoot,
    /// The wall clock, to tell another kernel from an earlier boot.
    pub(crate) wall: Arc<dyn WallClock>,
    /// Rows per opportunistic purge; 0 for none.
    pub(crate) purge_batch: usize,
    /// The holder sessions: this store's own, and what it knows of the others.
    pub(crate) sessions: Sessions,
    /// Set when an operation found the file damaged (see `Conn::leave_damaged_file_alone`).
    pub(crate) met_damage: AtomicBool,
}

impl Settings {
    /// A mapper from SQLite's errors to ours while doing `action`.
    pub(crate) fn sql(
        &self,
        action: &'static str,
    ) -> impl Fn(rusqlite::Error) -> SqliteStoreError + '_ {
        let to_ours = self.db.sql(action);
        move |e| {
            let err = to_ours(e);
            if matches!(
                err,
                SqliteStoreError::Corrupt { .. } | SqliteStoreError::NotADatabase { .. }
            ) {
                self.met_damage.store(true, Ordering::Relaxed);
            }
            err
        }
    }
}
