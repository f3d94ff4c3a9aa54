//! The body of each operation inside its transaction: claim, extend, revoke, purge and the
//! snapshots, with how rows and timestamps are stored.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use lease_core::{Error, Generation, Info, Key, Op, Request, Timestamp, validate_string};
use rusqlite::{CachedStatement, Connection, OptionalExtension};

use crate::encoding::{decode_expiry, encode_expiry};
use crate::error::{SqliteStoreError, StoreResult};
use crate::own_rows::{OwnRow, OwnRowsTx};
use crate::session::{Liveness, Slot};
use crate::settings::Settings;

/// The outcome of one lease operation inside a transaction: the outer error aborts the
/// transaction (SQLite failed), the inner one is the operation's own answer (`Held`, …).
pub(crate) type OpResult<T> = StoreResult<lease_core::Result<T>>;

/// Makes the connection's query plans independent of bound values (SQLite's query planner
/// stability guarantee). Without it SQLite marks a statement for re-preparing each time a value
/// is bound to a parameter its plan looked at (a `LIMIT ?`, as the purge's; with `STAT4`,
/// which the bundled SQLite enables, a compared indexed column once `ANALYZE` has run): the
/// cached statement would be compiled again at every use. No plan here depends on a value.
pub(crate) fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map(drop)
}

/// Validates one op's inputs, as the single-op methods do.
pub(crate) fn validate_op(op: &Op) -> lease_core::Result<()> {
    match op {
        Op::Claim { key, request } | Op::Extend { key, request } => {
            key.validate()?;
            request.validate()
        }
        Op::Revoke { key, holder } => {
            key.validate()?;
            validate_string("holder", holder)
        }
    }
}

/// A generation as stored: always positive (a `CHECK` constraint), so the conversion is exact.
fn stored_generation(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// One lease row as read.
struct Row {
    holder: String,
    boot: i64,
    expiry: Timestamp,
    generation: u64,
    metadata: Option<String>,
    pinned: bool,
    /// The holder session that claimed or last extended it (`None`: written without one).
    session: Option<i64>,
    /// That session's boot number (`None` when its row is missing).
    session_boot: Option<i64>,
}

impl Row {
    /// The expiry on this boot's timeline: an expiry from another boot has passed.
    fn effective_expiry(&self, settings: &Settings) -> Timestamp {
        if self.boot == settings.boot.seq {
            self.expiry
        } else {
            Timestamp::ZERO
        }
    }

    /// Held: pinned, or unexpired on this boot and written by a holder session that is not
    /// known dead (see [`crate::session`]).
    fn is_valid(&self, settings: &Settings, now: Timestamp) -> bool {
        self.pinned
            || (now < self.effective_expiry(settings)
                && settings
                    .sessions
                    .holder_may_act(self.session, self.session_boot))
    }

    /// The holder session, when it is known dead: its leases are free and it may be removed.
    fn dead_session(&self, settings: &Settings) -> Option<i64> {
        self.session
            .filter(|&seq| settings.sessions.judge(seq, self.session_boot) == Liveness::Dead)
    }

    fn info(self, settings: &Settings, key: &Key) -> StoreResult<Info> {
        let expiry = self.effective_expiry(settings);
        let metadata = parse_metadata(settings, key, self.metadata.as_deref())?;
        Ok(Info {
            holder: self.holder,
            expiry,
            generation: Generation(self.generation),
            metadata,
            pinned: self.pinned,
        })
    }
}

fn parse_metadata(
    settings: &Settings,
    key: &Key,
    text: Option<&str>,
) -> StoreResult<Option<serde_json::Value>> {
    text.map(serde_json::from_str)
        .transpose()
        .map_err(|source| SqliteStoreError::Metadata {
            path: settings.db.path.clone(),
            key: key.to_string(),
            source,
        })
}

fn metadata_text(
    settings: &Settings,
    key: &Key,
    metadata: Option<&serde_json::Value>,
) -> StoreResult<Option<String>> {
    metadata
        .map(serde_json::to_string)
        .transpose()
        .map_err(|source| SqliteStoreError::Metadata {
            path: settings.db.path.clone(),
            key: key.to_string(),
            source,
        })
}

/// The columns every lease read selects, in [`row_from`]'s order, for a lease table aliased `l`.
const LEASE_COLUMNS: &str = "l.namespace, l.model, l.name, l.holder, l.boot, l.expiry, \
    l.generation, l.metadata, EXISTS (SELECT 1 FROM pin p WHERE p.namespace = l.namespace \
    AND p.model = l.model AND p.name = l.name), l.session, \
    (SELECT s.boot FROM session s WHERE s.seq = l.session)";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Key, Row)> {
    Ok((
        Key::new(
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ),
        Row {
            holder: r.get(3)?,
            boot: r.get(4)?,
            expiry: decode_expiry(r.get(5)?),
            generation: stored_generation(r.get(6)?),
            metadata: r.get(7)?,
            pinned: r.get(8)?,
            session: r.get(9)?,
            session_boot: r.get(10)?,
        },
    ))
}

fn read_lease(tx: &Connection, settings: &Settings, key: &Key) -> StoreResult<Option<Row>> {
    let sql = format!(
        "SELECT {LEASE_COLUMNS} FROM lease l \
         WHERE l.namespace = ?1 AND l.model = ?2 AND l.name = ?3"
    );
    let mut stmt = tx
        .prepare_cached(&sql)
        .map_err(settings.sql("reading a lease"))?;
    stmt.query_row([&key.namespace, &key.model, &key.lease], row_from)
        .optional()
        .map(|row| row.map(|(_, row)| row))
        .map_err(settings.sql("reading a lease"))
}

fn is_pinned(tx: &Connection, settings: &Settings, key: &Key) -> StoreResult<bool> {
    tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM pin WHERE namespace = ?1 AND model = ?2 AND name = ?3)",
    )
    .and_then(|mut stmt| stmt.query_row([&key.namespace, &key.model, &key.lease], |r| r.get(0)))
    .map_err(settings.sql("reading pins"))
}

pub(crate) fn claim(
    tx: &Connection,
    settings: &Settings,
    now: Timestamp,
    key: &Key,
    request: &Request,
    slot: &mut Slot<'_>,
    rows: &mut OwnRowsTx<'_>,
) -> OpResult<Info> {
    rows.forget(key);
    let pinned = match read_lease(tx, settings, key)? {
        Some(row) if row.is_valid(settings, now) => {
            return Ok(Err(if row.holder == request.holder {
                Error::Invalid
            } else {
                Error::Held
            }));
        }
        Some(row) => {
            // Free by its holder's death (or expired, with a dead holder): remove the session,
            // its file and its other leases, which are free too.
            if let Some(dead) = row.dead_session(settings) {
                settings.sessions.reap(tx, &settings.db, dead)?;
                rows.forget_all();
            }
            row.pinned
        }
        None => is_pinned(tx, settings, key)?,
    };
    // Only now, when the claim takes effect: a refused claim writes nothing.
    let session = session_for_write(tx, settings, slot)?;
    let generation: i64 = tx
        .prepare_cached(
            "INSERT INTO generation (namespace, model, name, last) VALUES (?1, ?2, ?3, 1) \
             ON CONFLICT (namespace, model, name) DO UPDATE SET last = last + 1 \
             RETURNING last",
        )
        .and_then(|mut stmt| stmt.query_row([&key.namespace, &key.model, &key.lease], |r| r.get(0)))
        .map_err(settings.sql("advancing the generation"))?;
    let expiry = now.saturating_add(request.duration);
    let metadata = metadata_text(settings, key, request.metadata.as_ref())?;
    tx.prepare_cached(
        "INSERT INTO lease (namespace, model, name, holder, boot, expiry, generation, metadata, \
         session, expiry_bound) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (namespace, model, name) DO UPDATE SET holder = excluded.holder, \
         boot = excluded.boot, expiry = excluded.expiry, generation = excluded.generation, \
         metadata = excluded.metadata, session = excluded.session, \
         expiry_bound = excluded.expiry_bound",
    )
    .and_then(|mut stmt| {
        stmt.execute(rusqlite::params![
            key.namespace,
            key.model,
            key.lease,
            request.holder,
            settings.boot.seq,
            encode_expiry(expiry),
            generation,
            metadata,
            session,
            // Exact: a claim nobody renews is purged at its expiry.
            encode_expiry(expiry),
        ])
    })
    .map_err(settings.sql("writing a claim"))?;
    // Not remembered: an upsert does not tell the rowid. The first renewal reads the row.
    Ok(Ok(Info {
        holder: request.holder.clone(),
        expiry,
        generation: Generation(stored_generation(generation)),
        metadata: request.metadata.clone(),
        pinned,
    }))
}

/// The session to record in a lease row this transaction writes (created if need be), or
/// `None` when death-awareness is off.
fn session_for_write(
    tx: &Connection,
    settings: &Settings,
    slot: &mut Slot<'_>,
) -> StoreResult<Option<i64>> {
    slot.as_mut()
        .map(|slot| slot.session(tx, &settings.db, &settings.sessions))
        .transpose()
}

/// The `expiry_bound` (schema version 5) a renewal that takes a lease's expiry to `expiry`
/// past its bound records: one lease `duration` further, so the renewals of about the next
/// `duration` stay under it and leave the bound, and its index entry, as they are. (A claim
/// records its expiry itself.) Never below `expiry` (the table's `CHECK`); at most one
/// duration above it, so what is judged on the bound (a purge's candidates, a boot's latest
/// expiry for [`crate::kernel`]) is late by at most that.
fn expiry_bound(expiry: Timestamp, duration: Duration) -> Timestamp {
    expiry.saturating_add(duration)
}

/// The bound a renewal to `expiry` (for `duration`) leaves on a row whose bound is `bound`,
/// and whether it moved: the same while the expiry stays under it (the renewal writes the
/// expiry alone), else [`expiry_bound`].
fn renewed_bound(bound: Timestamp, expiry: Timestamp, duration: Duration) -> (Timestamp, bool) {
    if expiry <= bound {
        (bound, false)
    } else {
        (expiry_bound(expiry, duration), true)
    }
}

/// A lease this store's session holds, as [`extend_own`] renews it: the row of key `?1..?3`
/// held by `?4` on this boot (`?5`), unexpired at `?6`, written under the session `?7` (ours,
/// or `NULL` without death-awareness): [`Row::is_valid`]'s conditions for a row whose session
/// is known alive, with [`extend`]'s holder check. An expiry or bound of another type than
/// integer (a hand edit) is left to [`extend`]'s general path, which reports or rewrites it.
const OWN_LEASE: &str = "SELECT l.rowid, l.expiry, l.generation, l.metadata, EXISTS (SELECT 1 FROM pin p \
    WHERE p.namespace = l.namespace AND p.model = l.model AND p.name = l.name), \
    l.expiry_bound FROM lease l \
    WHERE l.namespace = ?1 AND l.model = ?2 AND l.name = ?3 AND l.holder = ?4 AND l.boot = ?5 \
      AND typeof(l.expiry) = 'integer' AND l.expiry > ?6 AND l.session IS ?7 \
      AND typeof(l.expiry_bound) = 'integer'";

/// The new expiry (`?2`) of the lease row [`OWN_LEASE`] found (rowid `?1`), under its bound:
/// nothing else changes (not `boot`, a foreign key, nor `metadata`, under a `CHECK`, nor
/// `session` or `expiry_bound`, indexed), so SQLite touches no index and rewrites the row in
/// place. Not `UPDATE … RETURNING` instead of the `SELECT`: a `RETURNING` clause makes SQLite
/// open a statement journal for every renewal, which cost more than the read.
const SET_EXPIRY: &str = "UPDATE lease SET expiry = ?2 WHERE rowid = ?1";

/// [`SET_EXPIRY`] for an expiry past the row's bound: the bound moves too (`?3`).
const SET_EXPIRY_AND_BOUND: &str =
    "UPDATE lease SET expiry = ?2, expiry_bound = ?3 WHERE rowid = ?1";

/// The remembered row's match, shared by the two renewals below: rowid `?1`, the key
/// `?3..?5` held by `?6` on boot `?7` with expiry `?8`, generation `?9` and session `?10`.
macro_rules! remembered_row {
    () => {
        " WHERE rowid = ?1 AND namespace = ?3 AND model = ?4 AND name = ?5 AND holder = ?6 \
          AND boot = ?7 AND expiry = ?8 AND generation = ?9 AND session IS ?10"
    };
}

/// The new expiry (`?2`) of a lease row as this store remembers writing it (rowid `?1`,
/// [`crate::own_rows`]), under its bound: written only if the row is still the key `?3..?5`
/// held by `?6` on boot `?7` with expiry `?8`, generation `?9`, session `?10` and bound `?11`,
/// as remembered. One statement instead of [`OWN_LEASE`]'s read and [`SET_EXPIRY`].
const SET_REMEMBERED_EXPIRY: &str = concat!(
    "UPDATE lease SET expiry = ?2",
    remembered_row!(),
    " AND expiry_bound = ?11"
);

/// [`SET_REMEMBERED_EXPIRY`] for an expiry past the remembered bound: the bound becomes `?11`.
const SET_REMEMBERED_EXPIRY_AND_BOUND: &str = concat!(
    "UPDATE lease SET expiry = ?2, expiry_bound = ?11",
    remembered_row!()
);

/// A write transaction's connection, with the remembered-row renewal
/// ([`SET_REMEMBERED_EXPIRY`]) kept prepared for the whole transaction: through rusqlite's
/// statement cache, each renewal of a batch would hash the statement's text twice, to borrow
/// it and to give it back. Dereferences to the connection for every other statement.
pub(crate) struct Batch<'c> {
    conn: &'c Connection,
    set_remembered: RefCell<Option<CachedStatement<'c>>>,
}

impl<'c> Batch<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Batch<'c> {
        Batch {
            conn,
            set_remembered: RefCell::new(None),
        }
    }

    /// Runs [`SET_REMEMBERED_EXPIRY`] with `params`: the number of rows it wrote.
    fn set_remembered_expiry(&self, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        let mut slot = self.set_remembered.borrow_mut();
        let stmt = match slot.take() {
            Some(stmt) => stmt,
            None => self.conn.prepare_cached(SET_REMEMBERED_EXPIRY)?,
        };
        slot.insert(stmt).execute(params)
    }
}

impl std::ops::Deref for Batch<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// [`extend`]'s common case: the lease is held by the requester under this store's own session
/// (alive: it is ours) and the request brings no metadata. `None` when that is not the case
/// (nothing was written); then the general path decides, on the row as read.
///
/// The row is found in `rows` when this store wrote it last and no other connection has
/// committed since; otherwise it is read ([`OWN_LEASE`]). Either way it is remembered as
/// written; when this path does not write it, [`extend`] forgets it.
fn extend_own(
    tx: &Batch<'_>,
    settings: &Settings,
    now: Timestamp,
    key: &Key,
    request: &Request,
    slot: &mut Slot<'_>,
    rows: &mut OwnRowsTx<'_>,
) -> StoreResult<Option<Info>> {
    if request.metadata.is_some() {
        return Ok(None);
    }
    let session = match slot.as_mut() {
        None => None,
        Some(slot) => match slot.established(tx, &settings.db)? {
            Some(seq) => Some(seq),
            None => return Ok(None),
        },
    };
    let sql = settings.sql("writing an extension");
    if let Some(row) = rows.get_mut(key)
        && row.holder == request.holder
        && row.session == session
        && now < row.expiry
    {
        let expiry = row.expiry.max(now.saturating_add(request.duration));
        let (bound, moved) = renewed_bound(row.expiry_bound, expiry, request.duration);
        let params = rusqlite::params![
            row.rowid,
            encode_expiry(expiry),
            key.namespace,
            key.model,
            key.lease,
            row.holder,
            settings.boot.seq,
            encode_expiry(row.expiry),
            i64::try_from(row.generation).unwrap_or(i64::MAX),
            session,
            encode_expiry(bound),
        ];
        let written = if moved {
            tx.prepare_cached(SET_REMEMBERED_EXPIRY_AND_BOUND)
                .and_then(|mut stmt| stmt.execute(params))
        } else {
            tx.set_remembered_expiry(params)
        }
        .map_err(&sql)?;
        if written == 1 {
            row.expiry = expiry;
            row.expiry_bound = bound;
            return Ok(Some(row.info()));
        }
        // Not as remembered: read it.
    }
    let found = tx
        .prepare_cached(OWN_LEASE)
        .and_then(|mut stmt| {
            stmt.query_row(
                rusqlite::params![
                    key.namespace,
                    key.model,
                    key.lease,
                    request.holder,
                    settings.boot.seq,
                    encode_expiry(now),
                    session,
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, bool>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .optional()
        })
        .map_err(&sql)?;
    let Some((rowid, expiry, generation, metadata, pinned, bound)) = found else {
        return Ok(None);
    };
    let metadata = parse_metadata(settings, key, metadata.as_deref())?;
    let expiry = decode_expiry(expiry).max(now.saturating_add(request.duration));
    let (bound, moved) = renewed_bound(decode_expiry(bound), expiry, request.duration);
    if moved {
        tx.prepare_cached(SET_EXPIRY_AND_BOUND)
            .and_then(|mut stmt| {
                stmt.execute(rusqlite::params![
                    rowid,
                    encode_expiry(expiry),
                    encode_expiry(bound)
                ])
            })
    } else {
        tx.prepare_cached(SET_EXPIRY)
            .and_then(|mut stmt| stmt.execute(rusqlite::params![rowid, encode_expiry(expiry)]))
    }
    .map_err(&sql)?;
    let row = OwnRow {
        rowid,
        holder: request.holder.clone(),
        session,
        expiry,
        expiry_bound: bound,
        generation: stored_generation(generation),
        metadata,
        pinned,
    };
    let info = row.info();
    rows.record(key.clone(), row);
    Ok(Some(info))
}

pub(crate) fn extend(
    tx: &Batch<'_>,
    settings: &Settings,
    now: Timestamp,
    key: &Key,
    request: &Request,
    slot: &mut Slot<'_>,
    rows: &mut OwnRowsTx<'_>,
) -> OpResult<Info> {
    match extend_own(tx, settings, now, key, request, slot, rows) {
        Ok(Some(info)) => return Ok(Ok(info)),
        // Not written by the common case: the general path may change the row, an error may
        // leave it unknown. The memory must not vouch for it either way.
        other => {
            rows.forget(key);
            other?;
        }
    }
    let row = match read_lease(tx, settings, key)? {
        Some(row) if row.is_valid(settings, now) && row.holder == request.holder => row,
        _ => return Ok(Err(Error::Invalid)),
    };
    let expiry = row
        .effective_expiry(settings)
        .max(now.saturating_add(request.duration));
    let new_metadata = metadata_text(settings, key, request.metadata.as_ref())?;
    let session = session_for_write(tx, settings, slot)?;
    tx.prepare_cached(
        "UPDATE lease SET boot = ?4, expiry = ?5, metadata = coalesce(?6, metadata), \
         session = ?7, expiry_bound = ?8 WHERE namespace = ?1 AND model = ?2 AND name = ?3",
    )
    .and_then(|mut stmt| {
        stmt.execute(rusqlite::params![
            key.namespace,
            key.model,
            key.lease,
            settings.boot.seq,
            encode_expiry(expiry),
            new_metadata,
            session,
            encode_expiry(expiry_bound(expiry, request.duration)),
        ])
    })
    .map_err(settings.sql("writing an extension"))?;
    let mut info = row.info(settings, key)?;
    info.expiry = expiry;
    if let Some(metadata) = &request.metadata {
        info.metadata = Some(metadata.clone());
    }
    Ok(Ok(info))
}

pub(crate) fn revoke(
    tx: &Connection,
    settings: &Settings,
    now: Timestamp,
    key: &Key,
    holder: &str,
    rows: &mut OwnRowsTx<'_>,
) -> OpResult<()> {
    rows.forget(key);
    match read_lease(tx, settings, key)? {
        Some(row) if row.is_valid(settings, now) => {
            if row.holder != holder {
                return Ok(Err(Error::NotHeld));
            }
        }
        _ => return Ok(Err(Error::Invalid)),
    }
    tx.prepare_cached("DELETE FROM lease WHERE namespace = ?1 AND model = ?2 AND name = ?3")
        .and_then(|mut stmt| stmt.execute([&key.namespace, &key.model, &key.lease]))
        .map_err(settings.sql("deleting a lease"))?;
    Ok(Ok(()))
}

/// How many successful writes pass between opportunistic purges, at least.
const PURGE_EVERY_WRITES: u64 = 64;

/// How long, on the store's clock, after a purge that left nothing behind (it deleted fewer
/// rows than its limit) the next one waits. A row only becomes purgeable by expiring, so
/// right after a purge that caught up there is little to find; without the pause a batch of
/// more than [`PURGE_EVERY_WRITES`] ops (the manager's, 256 at a time) would run the purge's
/// two index scans in every transaction. A purge that deleted its limit runs again after
/// [`PURGE_EVERY_WRITES`] writes, so a backlog is worked off at the old pace.
const PURGE_PAUSE: Duration = Duration::from_secs(1);

/// When the next opportunistic purge runs: see [`PURGE_EVERY_WRITES`] and [`PURGE_PAUSE`].
#[derive(Debug, Default)]
pub(crate) struct PurgeSchedule {
    writes_since: u64,
    /// Not before this instant on the store's clock (`ZERO`: as soon as the writes are done).
    not_before: Timestamp,
}

impl PurgeSchedule {
    /// Counts `writes` successful writes; true when a purge is due now.
    pub(crate) fn due(&mut self, settings: &Settings, writes: u64, now: Timestamp) -> bool {
        self.writes_since = self.writes_since.saturating_add(writes);
        settings.purge_batch > 0
            && self.writes_since >= PURGE_EVERY_WRITES
            // A clock that went back (a fake one) does not stop purging for longer.
            && (now >= self.not_before
                || self.not_before.saturating_duration_since(now) > PURGE_PAUSE)
    }

    /// Runs the purge (in the caller's transaction) and schedules the next.
    pub(crate) fn purge(
        &mut self,
        tx: &Connection,
        settings: &Settings,
        now: Timestamp,
        rows: &mut OwnRowsTx<'_>,
    ) -> StoreResult<()> {
        let deleted = purge(tx, settings, now, settings.purge_batch)?;
        if deleted > 0 {
            // Only expired rows go, which no renewal would take from the memory; forgotten
            // all the same, as purges are rare.
            rows.forget_all();
        }
        self.writes_since = 0;
        self.not_before = if deleted >= settings.purge_batch {
            Timestamp::ZERO
        } else {
            now.saturating_add(PURGE_PAUSE)
        };
        Ok(())
    }
}

/// Up to `?3` expired, unpinned lease keys: rows of boots other than `?1`, then rows of boot
/// `?1` whose expiry is at or before `?2`, among those whose bound is. Two index range scans
/// (the second by the bound: a row past its expiry but not its bound waits for a later purge,
/// at most one lease duration; the expiry is checked all the same, so no bound, however
/// edited, gets a live row deleted).
const PURGE_CANDIDATES: &str = "SELECT l.namespace, l.model, l.name FROM lease l \
    WHERE l.boot IN (SELECT seq FROM boot WHERE seq <> ?1) \
      AND NOT EXISTS (SELECT 1 FROM pin p WHERE p.namespace = l.namespace \
                      AND p.model = l.model AND p.name = l.name) \
    UNION ALL \
    SELECT l.namespace, l.model, l.name FROM lease l \
    WHERE l.boot = ?1 AND l.expiry_bound <= ?2 AND l.expiry <= ?2 \
      AND NOT EXISTS (SELECT 1 FROM pin p WHERE p.namespace = l.namespace \
                      AND p.model = l.model AND p.name = l.name) \
    LIMIT ?3";

/// Deletes up to `limit` expired, unpinned rows; returns how many. The candidates come from two
/// index range scans (rows of other boots, rows of this boot past their expiry) and are deleted
/// one by one by primary key: never a statement that walks the whole table.
pub(crate) fn purge(
    tx: &Connection,
    settings: &Settings,
    now: Timestamp,
    limit: usize,
) -> StoreResult<usize> {
    if limit == 0 {
        return Ok(0);
    }
    let sql = settings.sql("purging expired leases");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut select = tx.prepare_cached(PURGE_CANDIDATES).map_err(&sql)?;
    let expired: Vec<(String, String, String)> = select
        .query_map(
            rusqlite::params![settings.boot.seq, encode_expiry(now), limit],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .and_then(Iterator::collect)
        .map_err(&sql)?;
    let mut delete = tx
        .prepare_cached("DELETE FROM lease WHERE namespace = ?1 AND model = ?2 AND name = ?3")
        .map_err(&sql)?;
    let mut deleted = 0;
    for (namespace, model, name) in &expired {
        deleted += delete.execute([namespace, model, name]).map_err(&sql)?;
    }
    Ok(deleted)
}

pub(crate) fn snapshot_keys(
    tx: &Connection,
    settings: &Settings,
    now: Timestamp,
    keys: &[Key],
) -> StoreResult<BTreeMap<Key, Info>> {
    let mut out = BTreeMap::new();
    for key in keys {
        if let Some(row) = read_lease(tx, settings, key)?
            && row.is_valid(settings, now)
        {
            out.insert(key.clone(), row.info(settings, key)?);
        }
    }
    Ok(out)
}

/// Collects the valid rows a query returns into `out`.
fn collect_valid(
    tx: &Connection,
    settings: &Settings,
    now: Timestamp,
    sql: &str,
    params: impl rusqlite::Params,
    out: &mut BTreeMap<Key, Info>,
) -> StoreResult<()> {
    let mut stmt = tx
        .prepare_cached(sql)
        .map_err(settings.sql("reading leases"))?;
    let rows = stmt
        .query_map(params, row_from)
        .map_err(settings.sql("reading leases"))?;
    for row in rows {
        let (key, row) = row.map_err(settings.sql("reading leases"))?;
        if row.is_valid(settings, now) {
            let info = row.info(settings, &key)?;
            out.insert(key, info);
        }
    }
    Ok(())
}

pub(crate) fn snapshot_all(
    tx: &Connection,
    settings: &Settings,
    now: Timestamp,
) -> StoreResult<BTreeMap<Key, Info>> {
    let mut out = BTreeMap::new();
    // Unexpired rows of this boot, by the bound's index; then pinned rows of any age.
    collect_valid(
        tx,
        settings,
        now,
        &format!(
            "SELECT {LEASE_COLUMNS} FROM lease l \
             WHERE l.boot = ?1 AND l.expiry_bound > ?2 AND l.expiry > ?2"
        ),
        rusqlite::params![settings.boot.seq, encode_expiry(now)],
        &mut out,
    )?;
    collect_valid(
        tx,
        settings,
        now,
        &format!(
            "SELECT {LEASE_COLUMNS} FROM (SELECT DISTINCT namespace, model, name FROM pin) k \
             JOIN lease l ON l.namespace = k.namespace AND l.model = k.model AND l.name = k.name"
        ),
        [],
        &mut out,
    )?;
    Ok(out)
}

pub(crate) fn snapshot_group(
    tx: &Connection,
    settings: &Settings,
    now: Timestamp,
    namespace: &str,
    model: &str,
) -> StoreResult<BTreeMap<Key, Info>> {
    let mut out = BTreeMap::new();
    collect_valid(
        tx,
        settings,
        now,
        &format!("SELECT {LEASE_COLUMNS} FROM lease l WHERE l.namespace = ?1 AND l.model = ?2"),
        [namespace, model],
        &mut out,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open::migrate_and_register_boot;
    use crate::open::tests::{WALL, boot, empty_db, seq};

    /// The plan of `sql` as SQLite's `EXPLAIN QUERY PLAN` describes it, one step per line.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map([1, 2, 3], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// How many times the cached statement `sql` was compiled again while running it with
    /// each of `params`.
    fn reprepares(conn: &Connection, sql: &str, params: &[[i64; 8]]) -> i32 {
        for p in params {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            let n = stmt.parameter_count();
            let mut rows = stmt.query(rusqlite::params_from_iter(&p[..n])).unwrap();
            while rows.next().unwrap().is_some() {}
        }
        conn.prepare_cached(sql)
            .unwrap()
            .get_status(rusqlite::StatementStatus::RePrepare)
    }

    #[test]
    fn the_statements_of_every_batch_are_compiled_once() {
        let (_dir, path, mut conn) = empty_db();
        seq(migrate_and_register_boot(
            &mut conn,
            &path,
            0,
            &boot("b1"),
            WALL,
        ));
        // Each use binds other values, as the store does (`now`, a limit, keys).
        let params: Vec<[i64; 8]> = (0..3)
            .map(|i| [1, 10 + i, 256 - i, 4, 5, 6, 7, 8])
            .collect();
        // What SQLite does without the guarantee: the purge's `LIMIT ?3` recompiles it.
        assert!(reprepares(&conn, PURGE_CANDIDATES, &params) > 0);
        conn.flush_prepared_statement_cache();
        stable_plans(&conn).unwrap();
        for sql in [
            PURGE_CANDIDATES,
            crate::kernel::LATEST_EXPIRY_BOUND,
            OWN_LEASE,
            SET_EXPIRY,
        ] {
            assert_eq!(reprepares(&conn, sql, &params), 0, "{sql}");
        }
    }

    #[test]
    fn purging_and_listing_use_indexes_never_a_table_scan() {
        let (_dir, path, mut conn) = empty_db();
        seq(migrate_and_register_boot(
            &mut conn,
            &path,
            0,
            &boot("b1"),
            WALL,
        ));
        let purge = plan(&conn, PURGE_CANDIDATES);
        assert!(
            purge
                .iter()
                .any(|s| s.contains("lease_by_expiry_bound (boot=? AND expiry_bound<?)")),
            "{purge:#?}"
        );
        assert!(!purge.iter().any(|s| s.starts_with("SCAN l")), "{purge:#?}");
        let all = plan(
            &conn,
            &format!(
                "SELECT {LEASE_COLUMNS} FROM lease l WHERE l.boot = ?1 AND l.expiry_bound > ?2 AND l.expiry > ?2 AND ?3"
            ),
        );
        assert!(!all.iter().any(|s| s.starts_with("SCAN l")), "{all:#?}");
        // What every write records about its boot: one index descent, whatever the table holds.
        let latest: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                crate::kernel::LATEST_EXPIRY_BOUND
            ))
            .unwrap()
            .query_map([1], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            latest
                .iter()
                .any(|s| s.contains("lease_by_expiry_bound (boot=? AND expiry_bound<?)")),
            "{latest:#?}"
        );
        assert!(!latest.iter().any(|s| s.starts_with("SCAN")), "{latest:#?}");
        assert!(
            !latest.iter().any(|s| s.contains("TEMP B-TREE")),
            "{latest:#?}"
        );
    }
}
