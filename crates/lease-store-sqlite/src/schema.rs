//! The database schema, its version, and the migrations that bring a file up to date.
//!
//! The version lives in SQLite's `PRAGMA user_version`; `PRAGMA application_id`
//! ([`APPLICATION_ID`]) marks the file as a lease database. [`MIGRATIONS`]`[i]` takes a database
//! from version `i` to `i + 1`, inside the same `BEGIN IMMEDIATE` transaction that sets the new
//! version; migrations only ever append, a released step is never edited.
//!
//! # Version 1
//!
//! - `boot (seq, boot_id)`: every host boot that has written to the file. Expiries are instants
//!   on `CLOCK_BOOTTIME`, which restarts at each boot, so each lease row names the boot its
//!   expiry belongs to; a row from another boot has expired. Never deleted from (one row per
//!   reboot).
//! - `generation (namespace, model, name, last)`: the last fencing generation handed out per
//!   lease key. Never deleted from, so generations keep increasing across revoke, expiry,
//!   purges and reopening.
//! - `lease (namespace, model, name, holder, boot, expiry, generation, metadata)`: the current
//!   claims, with foreign keys to `boot` and `generation`. `expiry` is the clock's nanoseconds
//!   minus 2^63, so the whole `u64` range of a timestamp orders correctly as SQLite's signed
//!   64-bit integer; it is indexed with `boot` for bounded purges. `metadata` is JSON (checked
//!   with `json_valid`). A row may outlive its expiry until it is purged or claimed again.
//! - `pin (namespace, model, name, entity)`: who pins which lease. Not a foreign key to
//!   `lease`: a pin on an absent lease waits for the next claimant, and revoking a pinned lease
//!   deletes the lease row only.
//!
//! # Version 2
//!
//! One kernel per file ([`crate::kernel`]): `boot` gains what tells another kernel writing
//! the file from an earlier boot of this host.
//!
//! - `machine_id`: the host's `/etc/machine-id` when the boot was registered, if any.
//! - `registered_tx`, `last_tx`: a write counter (every write transaction sets its boot's
//!   `last_tx` to the highest in the table plus one); `registered_tx` is its value when the
//!   boot was registered. Rows of version 1 start at 0.
//! - `last_write_wall`: the wall-clock time (nanoseconds since the Unix epoch) of the boot's
//!   last write.
//! - `live_until_wall`: the wall-clock time until which the boot's leases may be live, as of
//!   its last write (0: none).
//!
//! # Version 3
//!
//! Holder sessions ([`crate::session`]): a lease whose holder's processes are all dead is free
//! before its expiry.
//!
//! - `session (seq, boot, pid, token)`: one row per holder session (a process writing leases
//!   to the file), `seq` an `AUTOINCREMENT` key so a number is never reused, `boot` the boot
//!   it ran in, `pid` for people reading the table, `token` a random number that tells the
//!   session's row from one of the same number in a file that replaced this one. Its lock file is `<database>-sessions/<seq>`.
//!   Deleted, with its file, by whoever finds it dead.
//! - `lease.session`: the session that claimed or last extended the lease, a foreign key to
//!   `session`; `NULL` for rows written before version 3 or by a store with death-awareness
//!   off, which are judged by their expiry alone. Indexed, for removing a dead session's rows.
//!
//! # Version 4
//!
//! `lease` is a rowid table, its key a unique index (`lease_by_key`), instead of a table
//! stored in its key's order (`WITHOUT ROWID`): a renewal then finds its row by rowid (the
//! store remembers the rowids of the rows it wrote, [`crate::own_rows`]) and rewrites it in
//! place, where the keyed table deleted and re-inserted the whole row. Same columns, same
//! constraints, same indexes besides. The step copies every row as it is, hand-edited ones
//! included: it runs with foreign keys off (as every migration: they are switched on once the
//! schema is current), so a row naming a boot or session that does not exist is kept for the
//! store to judge, as before, rather than failing the migration or being dropped. (A row that
//! breaks the `CHECK`, metadata that is not JSON, never gets this far: the integrity check
//! before every migration refuses the file as damaged, as it did for the earlier steps.)
//!
//! # Version 5
//!
//! `lease.expiry_bound`: an instant at or after the row's `expiry` (a `CHECK` holds it there
//! for every integer expiry), indexed with `boot` in place of `expiry` itself
//! (`lease_by_expiry_bound`). What the index served (the purge's expired rows, the live rows
//! of a listing, a boot's latest expiry for [`crate::kernel`]) needs only a bound, and a bound
//! need not move at every renewal, where the exact expiry did: each renewal rewrote two index
//! entries, a fifth of a renewal's cost. A write that takes a lease's expiry past its bound
//! sets the bound one lease duration further ([`crate::ops`]), so a lease renewed more often
//! than once per duration rewrites its index entry once every duration or so, instead of at
//! every renewal. The step rebuilds the table as version 4 did, rows and rowids kept; each
//! row's bound starts at its expiry (the least bound), or at the smallest integer for an
//! expiry of another type (a hand edit, which no bound orders and the store refuses to read).

/// The schema version this crate writes and understands (the file's `PRAGMA user_version`).
///
/// A store opening an older file migrates it to this version; a file with a higher version was
/// written by a newer version of the crate and is refused with
/// [`SqliteStoreError::NewerSchema`](crate::SqliteStoreError::NewerSchema), whose `supported`
/// is this value. Compare it with [`IntegrityReport::schema_version`](crate::IntegrityReport)
/// to tell whether a file a tool checked is current. The only part of the schema that is
/// public: the tables themselves are the crate's business.
pub const SCHEMA_VERSION: i64 = 5;

/// The `PRAGMA application_id` of a lease database: `"LEAS"` in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x4C45_4153;

/// The SQL of the steps from each version to the next: `MIGRATIONS[i]` takes version `i` to
/// `i + 1`, so `MIGRATIONS.len() == SCHEMA_VERSION`.
pub(crate) const MIGRATIONS: [&str; 5] = [V1, V2, V3, V4, V5];

/// Version 1; see the module documentation.
const V1: &str = "
CREATE TABLE boot (
    seq     INTEGER PRIMARY KEY,
    boot_id TEXT NOT NULL UNIQUE
);
CREATE TABLE generation (
    namespace TEXT NOT NULL,
    model     TEXT NOT NULL,
    name      TEXT NOT NULL,
    last      INTEGER NOT NULL CHECK (last > 0),
    PRIMARY KEY (namespace, model, name)
) WITHOUT ROWID;
CREATE TABLE lease (
    namespace  TEXT NOT NULL,
    model      TEXT NOT NULL,
    name       TEXT NOT NULL,
    holder     TEXT NOT NULL,
    boot       INTEGER NOT NULL REFERENCES boot (seq),
    expiry     INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    metadata   TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
    PRIMARY KEY (namespace, model, name),
    FOREIGN KEY (namespace, model, name) REFERENCES generation (namespace, model, name)
) WITHOUT ROWID;
CREATE INDEX lease_by_expiry ON lease (boot, expiry);
CREATE TABLE pin (
    namespace TEXT NOT NULL,
    model     TEXT NOT NULL,
    name      TEXT NOT NULL,
    entity    TEXT NOT NULL,
    PRIMARY KEY (namespace, model, name, entity)
) WITHOUT ROWID;
";

/// Version 2; see the module documentation.
const V2: &str = "
ALTER TABLE boot ADD COLUMN machine_id TEXT;
ALTER TABLE boot ADD COLUMN registered_tx INTEGER NOT NULL DEFAULT 0;
ALTER TABLE boot ADD COLUMN last_tx INTEGER NOT NULL DEFAULT 0;
ALTER TABLE boot ADD COLUMN last_write_wall INTEGER NOT NULL DEFAULT 0;
ALTER TABLE boot ADD COLUMN live_until_wall INTEGER NOT NULL DEFAULT 0;
";

/// Version 3; see the module documentation.
const V3: &str = "
CREATE TABLE session (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    boot INTEGER NOT NULL REFERENCES boot (seq),
    pid   INTEGER NOT NULL,
    token INTEGER NOT NULL
);
ALTER TABLE lease ADD COLUMN session INTEGER REFERENCES session (seq);
CREATE INDEX lease_by_session ON lease (session) WHERE session IS NOT NULL;
";

/// Version 4; see the module documentation. The `lease` table is rebuilt (SQLite's way to
/// change how a table is stored): a new table, the rows copied, the old one dropped (with its
/// indexes) and the new one renamed, then the indexes made again.
const V4: &str = "
CREATE TABLE lease_v4 (
    namespace  TEXT NOT NULL,
    model      TEXT NOT NULL,
    name       TEXT NOT NULL,
    holder     TEXT NOT NULL,
    boot       INTEGER NOT NULL REFERENCES boot (seq),
    expiry     INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    metadata   TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
    session    INTEGER REFERENCES session (seq),
    FOREIGN KEY (namespace, model, name) REFERENCES generation (namespace, model, name)
);
INSERT INTO lease_v4 (namespace, model, name, holder, boot, expiry, generation, metadata, session)
    SELECT namespace, model, name, holder, boot, expiry, generation, metadata, session FROM lease;
DROP TABLE lease;
ALTER TABLE lease_v4 RENAME TO lease;
CREATE UNIQUE INDEX lease_by_key ON lease (namespace, model, name);
CREATE INDEX lease_by_expiry ON lease (boot, expiry);
CREATE INDEX lease_by_session ON lease (session) WHERE session IS NOT NULL;
";

/// Version 5; see the module documentation. Rebuilt as in version 4: a `CHECK` that names two
/// columns cannot be added to a table with rows.
const V5: &str = "
CREATE TABLE lease_v5 (
    namespace    TEXT NOT NULL,
    model        TEXT NOT NULL,
    name         TEXT NOT NULL,
    holder       TEXT NOT NULL,
    boot         INTEGER NOT NULL REFERENCES boot (seq),
    expiry       INTEGER NOT NULL,
    generation   INTEGER NOT NULL,
    metadata     TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
    session      INTEGER REFERENCES session (seq),
    expiry_bound INTEGER NOT NULL,
    CHECK (typeof(expiry) <> 'integer' OR expiry <= expiry_bound),
    FOREIGN KEY (namespace, model, name) REFERENCES generation (namespace, model, name)
);
INSERT INTO lease_v5 (rowid, namespace, model, name, holder, boot, expiry, generation, metadata,
        session, expiry_bound)
    SELECT rowid, namespace, model, name, holder, boot, expiry, generation, metadata, session,
        CASE WHEN typeof(expiry) = 'integer' THEN expiry ELSE -9223372036854775808 END
    FROM lease;
DROP TABLE lease;
ALTER TABLE lease_v5 RENAME TO lease;
CREATE UNIQUE INDEX lease_by_key ON lease (namespace, model, name);
CREATE INDEX lease_by_expiry_bound ON lease (boot, expiry_bound);
CREATE INDEX lease_by_session ON lease (session) WHERE session IS NOT NULL;
";

/// Reads the file's application id and schema version and refuses a file that is another
/// program's (a foreign application id, or tables without a lease schema version) or of a newer
/// schema. Only the header and the schema table are read, by one statement, so in one snapshot
/// (a migration committed between two reads must not make a new file look foreign): O(1) in the
/// file's size. Returns the schema version, 0 for an empty file.
pub(crate) fn read_schema_version(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    busy_timeout: std::time::Duration,
) -> Result<i64, crate::error::SqliteStoreError> {
    use crate::error::SqliteStoreError;
    let (application_id, version, tables): (i32, i64, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id), \
             (SELECT user_version FROM pragma_user_version), \
             (SELECT count(*) FROM sqlite_schema)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .map_err(|e| {
            SqliteStoreError::from_sqlite(path, busy_timeout, "reading the schema version", e)
        })?;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(SqliteStoreError::ForeignDatabase {
            path: path.to_path_buf(),
            reason: format!(
                "its application id is {application_id:#010x}, not {APPLICATION_ID:#010x}"
            ),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(SqliteStoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 && tables > 0 {
        return Err(SqliteStoreError::ForeignDatabase {
            path: path.to_path_buf(),
            reason: format!("it has {tables} schema objects but no lease schema version"),
        });
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_migration_per_version() {
        assert_eq!(i64::try_from(MIGRATIONS.len()), Ok(SCHEMA_VERSION));
    }

    #[test]
    fn application_id_spells_leas() {
        assert_eq!(&APPLICATION_ID.to_be_bytes(), b"LEAS");
    }

    /// Every lease row of the file, every column as SQLite quotes it, in key order.
    fn lease_rows(conn: &rusqlite::Connection) -> Vec<Vec<String>> {
        conn.prepare(
            "SELECT quote(namespace), quote(model), quote(name), quote(holder), quote(boot), \
             quote(expiry), quote(generation), quote(metadata), quote(session) FROM lease \
             ORDER BY namespace, model, name",
        )
        .unwrap()
        .query_map([], |r| (0..9).map(|i| r.get::<_, String>(i)).collect())
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    /// A file of version 3, as the previous release left it, with a held lease, a pinned one,
    /// and a row edited by hand that breaks the table's foreign keys (a boot and a session that
    /// do not exist): opening it
    /// rebuilds `lease` as a rowid table with every row exactly as it was, and the store then
    /// works on it (generations continue).
    #[tokio::test]
    async fn version_3_rows_survive_the_rebuild_of_version_4_hand_edits_included() {
        use lease_core::{Key, Request, Store};
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        // As a person with the `sqlite3` shell would edit it (rusqlite's SQLite has them on).
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = OFF")
            .unwrap();
        for step in &MIGRATIONS[..3] {
            conn.execute_batch(step).unwrap();
        }
        conn.execute_batch(&format!(
            "PRAGMA user_version = 3; PRAGMA application_id = {APPLICATION_ID};
             INSERT INTO boot (seq, boot_id) VALUES (1, 'old-boot');
             INSERT INTO session (seq, boot, pid, token) VALUES (1, 1, 4242, 7);
             INSERT INTO generation VALUES ('ns', 'm', 'held', 3), ('ns', 'm', 'pinned', 1),
                 ('ns', 'm', 'ghost-boot', 2);
             INSERT INTO lease VALUES
                 ('ns', 'm', 'held', 'h', 1, 12345, 3, '{{\"a\":1}}', 1),
                 ('ns', 'm', 'pinned', 'p', 1, -9223372036854775000, 1, NULL, NULL),
                 ('ns', 'm', 'ghost-boot', 'g', 999, 5, 2, NULL, 77);
             INSERT INTO pin VALUES ('ns', 'm', 'pinned', 'e');"
        ))
        .unwrap();
        let before = lease_rows(&conn);
        assert_eq!(before.len(), 3);
        drop(conn);

        let mut store = crate::SqliteStore::builder(&path)
            .boot_id("new-boot")
            .open()
            .unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(
            conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                .unwrap(),
            SCHEMA_VERSION
        );
        assert_eq!(lease_rows(&conn), before, "a row changed in the rebuild");
        // Version 5's bound starts at each row's expiry.
        let bounds: Vec<(String, i64)> = conn
            .prepare("SELECT name, expiry_bound FROM lease ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            bounds,
            [
                ("ghost-boot".to_owned(), 5),
                ("held".to_owned(), 12345),
                ("pinned".to_owned(), -9223372036854775000)
            ]
        );
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'lease'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!sql.contains("WITHOUT ROWID"), "{sql}");
        let rowids: i64 = conn
            .query_row("SELECT count(rowid) FROM lease", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rowids, 3);
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        // The hand edits are kept as they were, for the store to judge: the ghost boot's row
        // (and its missing session) still break their foreign keys.
        let broken: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_foreign_key_check('lease')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(broken, 2);

        // The store works on the rebuilt table: the old boot's leases have expired, so they
        // are claimed again with the next generations, and renewed.
        let key = |name: &str| Key::new("ns", "m", name);
        let request = Request::new("new", Duration::from_secs(30));
        let held = store.claim_lease(&key("held"), &request).await.unwrap();
        assert_eq!(held.generation.0, 4);
        let renewed = store.extend_lease(&key("held"), &request).await.unwrap();
        assert_eq!(renewed.generation.0, 4);
        let renewed = store.extend_lease(&key("held"), &request).await.unwrap();
        assert_eq!(renewed.generation.0, 4);
        // Pinned: held by `p` still, whatever its expiry.
        let pinned = store.claim_lease(&key("pinned"), &request).await;
        assert!(pinned.is_err_and(|e| e.is_held()));
        let fresh = store.claim_lease(&key("fresh"), &request).await.unwrap();
        assert_eq!(fresh.generation.0, 1);
    }
}
