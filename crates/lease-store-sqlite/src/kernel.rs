//! The one-kernel rule, second line: noticing another kernel writing the same file.
//!
//! A lease row's expiry is an instant on the `CLOCK_BOOTTIME` of the boot that wrote it, and a
//! row of another boot id counts as expired. That is sound when the other boot id is an
//! *earlier boot of this host*, and wrong when it is *another kernel writing now* (a VM or a
//! sandbox sharing the file through a mount [`crate::filesystem`] does not recognise): both
//! would hold the lease. The file alone cannot always tell the two apart, so each boot keeps a
//! record in the `boot` table ([`crate::schema`], version 2), and every transaction consults the
//! other boots' records before deciding anything:
//!
//! - `registered_tx` and `last_tx`: a counter bumped by every write transaction. A boot whose
//!   `last_tx` is above this boot's `registered_tx` wrote after this boot first opened the
//!   file, which an earlier boot of this host cannot have done. Exact, needs no clock.
//! - `last_write_wall`: the wall-clock time of the boot's last write. One written after this
//!   boot started (`CLOCK_REALTIME − CLOCK_BOOTTIME`) is not from an earlier boot either.
//! - `machine_id` (`/etc/machine-id`): two known, different machine ids are two machines.
//! - `live_until_wall`: until when, by the wall clock, the boot's leases may be live (its rows'
//!   latest expiry bound, converted when it last wrote: at or after their latest expiry, by at
//!   most one lease duration; equal to `last_write_wall` when it held none).
//!
//! A boot for which any of the first three holds and whose leases may still be live
//! ([`WALL_CLOCK_TOLERANCE`] included) makes the transaction fail with
//! [`SqliteStoreError::AnotherKernel`]: nothing is written, purged or judged.
//!
//! # The assumption
//!
//! Wall clocks of the kernels involved agree to better than the time between a boot's last
//! write and the start of the next boot of the same host (a reboot takes longer than the clock
//! error). A clock that is wrong by more than that only makes the check refuse after a reboot,
//! for at most the ttl of the leases the previous boot left (plus the error): safe, not silent.
//! The same bounded wait follows an unclean reboot of a host whose machine id changes at every
//! boot (a stateless image).
//! What the file cannot show: another kernel with the same or an unknown machine id whose last
//! write came before this kernel booted and before this boot first opened the file (a first
//! contact). Its leases are judged expired once; its next write, or ours, is then refused. The
//! file-system check at open is the first line against that case.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lease_core::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use crate::encoding::{decode_expiry, wall_column};
use crate::error::{DbFile, SqliteStoreError, StoreResult};

/// Added to another boot's `live_until_wall` before judging it past: how far apart the wall
/// clocks of two kernels sharing a file may be while its leases are still counted as live.
pub(crate) const WALL_CLOCK_TOLERANCE: Duration = Duration::from_secs(2);

/// Where machine ids are read from, in order.
pub(crate) const MACHINE_ID_PATHS: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// The wall clock (`CLOCK_REALTIME`): time since the Unix epoch, shared by kernels that keep
/// their clocks in sync. Used only to tell another kernel writing the file from an earlier boot
/// of this one; expiry itself is never judged on it.
pub trait WallClock: Send + Sync + fmt::Debug + 'static {
    /// Now, as time since the Unix epoch.
    fn now(&self) -> Timestamp;
}

/// The real wall clock, [`SystemTime::now`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now(&self) -> Timestamp {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(Timestamp::ZERO, Timestamp::from_duration)
    }
}

/// The host's machine id, from the first of `/etc/machine-id` and `/var/lib/dbus/machine-id`
/// that holds one; `None` when none does (many containers), which makes machine ids no
/// evidence either way.
pub fn host_machine_id() -> Option<String> {
    MACHINE_ID_PATHS
        .iter()
        .find_map(|p| read_machine_id(Path::new(p)))
}

fn read_machine_id(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let id = text.trim();
    (!id.is_empty() && !id.chars().any(char::is_whitespace)).then(|| id.to_owned())
}

/// This boot's identity as the `boot` table records it.
#[derive(Debug, Clone)]
pub(crate) struct BootRecord {
    pub(crate) boot_id: String,
    pub(crate) machine_id: Option<String>,
}

/// This boot once registered in the file: what every transaction compares the other boots'
/// records with.
#[derive(Debug, Clone)]
pub(crate) struct RegisteredBoot {
    /// The host's boot, as given or read.
    pub(crate) id: String,
    /// Its number in the `boot` table.
    pub(crate) seq: i64,
    /// The value of the write counter when this boot was registered in the file.
    pub(crate) registered_tx: i64,
    /// This host's machine id, when it has one.
    pub(crate) machine_id: Option<String>,
}

/// Fails when another kernel may hold live leases in the file; see the module documentation.
/// Runs at the start of every transaction, on its snapshot.
pub(crate) fn refuse_other_kernels(
    tx: &Connection,
    db: &DbFile,
    boot: &RegisteredBoot,
    now: Timestamp,
    wall: Timestamp,
) -> StoreResult<()> {
    let sql = db.sql("reading the boots that wrote the file");
    // This boot began at about `wall - now` on the wall clock.
    let started = wall_column(Timestamp::from_nanos(
        wall.as_nanos().saturating_sub(now.as_nanos()),
    ));
    let horizon = wall_column(Timestamp::from_nanos(wall.as_nanos().saturating_sub(
        u64::try_from(WALL_CLOCK_TOLERANCE.as_nanos()).unwrap_or(u64::MAX),
    )));
    let mut stmt = tx
        .prepare_cached(
            "SELECT boot_id, machine_id, last_tx, last_write_wall, live_until_wall FROM boot \
             WHERE seq <> ?1 AND live_until_wall > ?2 AND live_until_wall > last_write_wall",
        )
        .map_err(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params![boot.seq, horizon], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(&sql)?;
    for row in rows {
        let (other, machine, last_tx, last_write, live_until) = row.map_err(&sql)?;
        let evidence = if last_tx > boot.registered_tx {
            "it wrote after this boot first opened the file".to_owned()
        } else if last_write > started {
            format!(
                "it wrote {} ms after this boot started, by the wall clock",
                last_write.saturating_sub(started) / 1_000_000
            )
        } else {
            match (&machine, &boot.machine_id) {
                (Some(theirs), Some(ours)) if theirs != ours => {
                    format!("it runs on machine {theirs}, this is machine {ours}")
                }
                _ => continue,
            }
        };
        let live_for = live_until.saturating_sub(wall_column(wall)).max(0) / 1_000_000;
        return Err(SqliteStoreError::AnotherKernel {
            path: db.path.clone(),
            other_boot: other,
            evidence,
            live_for_ms: u64::try_from(live_for).unwrap_or(0),
        });
    }
    Ok(())
}

/// The latest integer expiry bound of boot `?1`'s rows (at or after its latest expiry, by at
/// most one lease duration; [`crate::schema`], version 5): one descent of the
/// `(boot, expiry_bound)` index.
pub(crate) const LATEST_EXPIRY_BOUND: &str = "SELECT expiry_bound FROM lease \
    WHERE boot = ?1 AND expiry_bound <= 9223372036854775807 ORDER BY expiry_bound DESC LIMIT 1";

/// Records that this boot wrote in this transaction: the write counter, the wall-clock time,
/// and until when its leases may be live (its rows' latest expiry bound, by the index on
/// `(boot, expiry_bound)`: past its latest expiry by at most one lease duration).
/// Returns the write counter's new value, which no other committed transaction takes
/// ([`crate::own_commits`]); `None` when this boot's row is missing (a hand edit), which
/// records nothing, as before the value was returned.
pub(crate) fn record_write(
    tx: &Connection,
    db: &DbFile,
    boot_seq: i64,
    now: Timestamp,
    wall: Timestamp,
) -> StoreResult<Option<i64>> {
    let sql = db.sql("recording this boot's write");
    // The latest integer bound, by one descent of the index: a hand-edited bound of another
    // type (text sorts above every number) says nothing and must not stop every write.
    let latest: Option<i64> = tx
        .prepare_cached(LATEST_EXPIRY_BOUND)
        .and_then(|mut s| s.query_row([boot_seq], |r| r.get::<_, Value>(0)).optional())
        .map_err(&sql)?
        .and_then(|v| match v {
            Value::Integer(i) => Some(i),
            _ => None,
        });
    let live_for = latest.map_or(Duration::ZERO, |e| {
        decode_expiry(e).saturating_duration_since(now)
    });
    tx.prepare_cached(
        "UPDATE boot SET last_tx = (SELECT max(last_tx) FROM boot) + 1, last_write_wall = ?2, \
         live_until_wall = ?3 WHERE seq = ?1",
    )
    .and_then(|mut s| {
        s.execute(rusqlite::params![
            boot_seq,
            wall_column(wall),
            wall_column(wall.saturating_add(live_for)),
        ])
    })
    .map_err(&sql)?;
    // Read back rather than `RETURNING`, which would make SQLite open a statement journal.
    tx.prepare_cached("SELECT last_tx FROM boot WHERE seq = ?1")
        .and_then(|mut s| s.query_row([boot_seq], |r| r.get(0)).optional())
        .map_err(&sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_are_read_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("machine-id");
        std::fs::write(&p, "0123abcd\n").unwrap();
        assert_eq!(read_machine_id(&p).as_deref(), Some("0123abcd"));
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(read_machine_id(&p), None);
        std::fs::write(&p, "a b").unwrap();
        assert_eq!(read_machine_id(&p), None);
        assert_eq!(read_machine_id(&dir.path().join("missing")), None);
    }

    #[test]
    fn wall_instants_saturate() {
        assert_eq!(wall_column(Timestamp::MAX), i64::MAX);
        assert_eq!(wall_column(Timestamp::from_nanos(5)), 5);
        let now = SystemWallClock.now();
        assert!(now.as_nanos() > 1_600_000_000 * 1_000_000_000, "{now}");
    }
}
