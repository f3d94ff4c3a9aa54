//! [`SqliteStoreBuilder`]: the checks before opening a database file, its creation (mode 0600),
//! the schema migration and the registration of the host's boot.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Clock, SystemClock};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::boot::{check_boot_id, host_boot_id};
use crate::encoding::wall_column;
use crate::error::{DbFile, SqliteStoreError, StoreResult};
use crate::filesystem::refuse_shared;
use crate::kernel::{BootRecord, RegisteredBoot, SystemWallClock, WallClock, host_machine_id};
use crate::paths::{parent_dir, sessions_dir};
use crate::schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, read_schema_version};
use crate::session::{SessionScope, SessionSlot, Sessions};
use crate::settings::Settings;
use crate::store::SqliteStore;
use crate::wal::{keep_wal_on_close, switch_to_wal, wal_has_content};

/// How long an operation waits for another connection's write lock unless told otherwise.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest busy timeout SQLite can take (`i32::MAX` milliseconds, about 24.8 days); a longer
/// one given to [`SqliteStoreBuilder::busy_timeout`] is cut to it.
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// How many expired rows an opportunistic purge deletes at most, unless told otherwise.
pub const DEFAULT_PURGE_BATCH: usize = 256;

/// How many pages a log kept at close ([`SqliteStoreBuilder::checkpoint_on_close`]) may grow
/// to before a commit checkpoints it (SQLite's default is 1000). Every opener after the last
/// close reads the whole log to rebuild its index, about 3 µs a page, while a checkpoint costs
/// about three fsyncs (the log, the file, and the log's header when it restarts): with about
/// ten pages written per `lease run`, a checkpoint every dozen runs keeps both small.
pub const KEPT_WAL_CHECKPOINT_PAGES: u32 = 128;

/// The mode of a database file this store creates: readable and writable by its owner only.
pub const NEW_FILE_MODE: u32 = 0o600;

// The store's own constructors live here, beside the builder they start, so that the store
// (store.rs) need not know how a file is opened.
impl SqliteStore {
    /// Opens (creating if need be) the database at `path` with every option at its default:
    /// [`SystemClock`](lease_core::SystemClock) and the host's boot id. See
    /// [`SqliteStoreBuilder::open`].
    ///
    /// # Errors
    ///
    /// As [`SqliteStoreBuilder::open`].
    pub fn open(path: impl Into<PathBuf>) -> StoreResult<SqliteStore> {
        SqliteStoreBuilder::new(path).open()
    }

    /// Options for opening the database at `path`.
    pub fn builder(path: impl Into<PathBuf>) -> SqliteStoreBuilder {
        SqliteStoreBuilder::new(path)
    }
}

/// Options for opening a [`SqliteStore`]; start with [`SqliteStore::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use lease_store_sqlite::SqliteStore;
///
/// let store = SqliteStore::builder("/var/lib/myapp/leases.db")
///     .busy_timeout(Duration::from_millis(500))
///     .open()?;
/// # Ok::<(), lease_store_sqlite::SqliteStoreError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    boot_id: Option<String>,
    /// `None`: the host's; `Some(None)`: none.
    machine_id: Option<Option<String>>,
    wall: Arc<dyn WallClock>,
    busy_timeout: Duration,
    integrity_check: bool,
    allow_network_filesystem: bool,
    purge_batch: usize,
    death_aware: bool,
    session_scope: SessionScope,
    checkpoint_on_close: bool,
}

impl SqliteStoreBuilder {
    /// Options for the database at `path`, all at their defaults: [`SystemClock`], the host's
    /// boot id and machine id, [`SystemWallClock`], [`DEFAULT_BUSY_TIMEOUT`], no full
    /// integrity scan on opening an up-to-date file, file systems shared between kernels
    /// refused, opportunistic purges of [`DEFAULT_PURGE_BATCH`] rows, death-aware with one
    /// holder session per process.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteStoreBuilder {
            path: path.into(),
            clock: Arc::new(SystemClock::new()),
            boot_id: None,
            machine_id: None,
            wall: Arc::new(SystemWallClock),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            integrity_check: false,
            allow_network_filesystem: false,
            purge_batch: DEFAULT_PURGE_BATCH,
            death_aware: true,
            session_scope: SessionScope::Process,
            checkpoint_on_close: true,
        }
    }

    /// Whether closing the store copies the write-ahead log into the database file and
    /// removes the log and its index (`-wal`, `-shm`), as SQLite does by default (on).
    ///
    /// Off, closing leaves both as they are. Durability is the same: every commit is fsynced
    /// to the log before it returns; the log is copied into the file by an automatic
    /// checkpoint once it holds [`KEPT_WAL_CHECKPOINT_PAGES`] pages, or by the next store that
    /// closes with this on. What it saves a
    /// short-lived process (`lease run`, which opens, claims, releases and closes each time)
    /// is the checkpoint's two fsyncs at close and, at the next open, re-creating the log (a
    /// header fsync and a directory fsync). The price: the database is then the file *and*
    /// its `-wal` (copy both, or neither, as for any WAL database in use), and the next
    /// opener rebuilds the `-shm` index by reading the log.
    ///
    /// Either way, a file found damaged (at open, or by an operation) is never checkpointed
    /// into: its log is left for whoever repairs it.
    #[must_use]
    pub fn checkpoint_on_close(mut self, on: bool) -> Self {
        self.checkpoint_on_close = on;
        self
    }

    /// Whether a lease whose holder's processes are all dead is free at once (on by default;
    /// see [the crate
    /// documentation](crate#a-dead-holders-lease-is-free-at-once-a-silent-ones-at-its-expiry)).
    /// Off, this store writes leases without a holder session (they then free at their expiry
    /// only, whoever reads them) and judges every lease by its expiry alone; no session file is
    /// created.
    #[must_use]
    pub fn death_aware(mut self, on: bool) -> Self {
        self.death_aware = on;
        self
    }

    /// Whose holder session this store writes under: the process's
    /// ([`SessionScope::Process`], the default), its own ([`SessionScope::Store`], for tests
    /// that simulate another process: its leases free when it is dropped), or none
    /// ([`SessionScope::Unbound`], for one-shot commands whose holder outlives the process:
    /// their leases free at expiry only).
    #[must_use]
    pub fn session_scope(mut self, scope: SessionScope) -> Self {
        self.session_scope = scope;
        self
    }

    /// The clock expiries are measured on. Every process using the file must read the same
    /// clock ([`SystemClock`], `CLOCK_BOOTTIME`, does on Linux); tests pass a fake one.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The boot id stored with every expiry, instead of the host's
    /// ([`host_boot_id`](crate::host_boot_id())). Leases written under another boot id count as
    /// expired, so a test can simulate a reboot by reopening the file with a new one.
    #[must_use]
    pub fn boot_id(mut self, boot_id: impl Into<String>) -> Self {
        self.boot_id = Some(boot_id.into());
        self
    }

    /// The machine id recorded with this boot, instead of the host's
    /// ([`host_machine_id`]); `None` for none. Two boots with known,
    /// different machine ids are two machines, so the other's live leases make this store
    /// refuse to write ([`SqliteStoreError::AnotherKernel`]); tests simulate a second machine
    /// with it.
    #[must_use]
    pub fn machine_id(mut self, machine_id: Option<String>) -> Self {
        self.machine_id = Some(machine_id);
        self
    }

    /// The wall clock used to tell another kernel writing the file from an earlier boot of this
    /// host ([`SystemWallClock`] by default; see [one kernel per
    /// file](crate#one-kernel-per-file)). Expiry is never judged on it. Tests simulating
    /// reboots or a second kernel pass a fake one.
    #[must_use]
    pub fn wall_clock(mut self, wall: Arc<dyn WallClock>) -> Self {
        self.wall = wall;
        self
    }

    /// Accept a database on a file system other kernels can write too (NFS, SMB, 9p, FUSE or
    /// virtiofs, cluster file systems, and the shared folders of VirtualBox and VMware), which is
    /// refused by default with [`SqliteStoreError::SharedFileSystem`].
    ///
    /// Only for a file that one kernel alone ever opens (a FUSE overlay holding a rootless
    /// container's own files, an NFS export mounted by a single client): two kernels writing
    /// one file each judge the other's leases expired, and both hold them. The check for
    /// another kernel's writes in the file itself ([`SqliteStoreError::AnotherKernel`]) stays
    /// on.
    #[must_use]
    pub fn allow_network_filesystem(mut self, allow: bool) -> Self {
        self.allow_network_filesystem = allow;
        self
    }

    /// How long an operation waits for another connection's write lock before failing with
    /// [`SqliteStoreError::Busy`] ([`lease_core::Error::Timeout`] through the [`Store`](lease_core::Store)
    /// trait). Each operation blocks its caller for at most about this long. At most
    /// [`MAX_BUSY_TIMEOUT`]: a longer one is cut to it (SQLite counts milliseconds in an `i32`).
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout.min(MAX_BUSY_TIMEOUT);
        self
    }

    /// Whether *every* open runs `PRAGMA quick_check` over the whole file (off by default), so
    /// a damaged file is refused with [`SqliteStoreError::Corrupt`] at once rather than by the
    /// first operation that reads a damaged page. Its cost grows with the file (about a second
    /// per million leases), which a command run once per job cannot afford.
    ///
    /// Without it, opening checks the header, the application id and the schema version, all
    /// O(1); creating or migrating a file always runs the full check first; and a damaged page
    /// met later fails that operation with [`SqliteStoreError::Corrupt`] (never a panic, never
    /// a lease granted over a row that cannot be read). [`crate::check_file`] runs a full
    /// check on demand, read-only.
    #[must_use]
    pub fn integrity_check(mut self, check: bool) -> Self {
        self.integrity_check = check;
        self
    }

    /// The most expired rows a write deletes, in its transaction, after at least 64 writes
    /// since the last purge and, unless that purge deleted this many (a backlog), a second on
    /// the store's clock ([`DEFAULT_PURGE_BATCH`]); 0 turns opportunistic purging off, leaving
    /// it to [`SqliteStore::purge_expired`].
    #[must_use]
    pub fn purge_batch(mut self, rows: usize) -> Self {
        self.purge_batch = rows;
        self
    }

    /// Opens the database, creating it (mode 0600) when it does not exist and migrating its
    /// schema to [`crate::SCHEMA_VERSION`].
    ///
    /// Checks come before any write, so a file that is refused is left byte for byte as it
    /// was. A file or directory whose permission bits grant no write access is refused even to
    /// root, who would otherwise write it regardless.
    ///
    /// # Errors
    ///
    /// - [`SqliteStoreError::MissingDirectory`] when the parent directory does not exist;
    /// - [`SqliteStoreError::SharedFileSystem`] when the file or its directory is on a file
    ///   system other kernels can write too (unless
    ///   [allowed](SqliteStoreBuilder::allow_network_filesystem));
    /// - [`SqliteStoreError::ReadOnly`] when the file or its directory cannot be written;
    /// - [`SqliteStoreError::NotADatabase`], [`SqliteStoreError::ForeignDatabase`] or
    ///   [`SqliteStoreError::Corrupt`] for a file that is not a sound lease database (the full
    ///   scan for damage runs only when the file is created or migrated, or when
    ///   [asked for](SqliteStoreBuilder::integrity_check));
    /// - [`SqliteStoreError::NewerSchema`] for a file written by a newer version of this crate;
    /// - [`SqliteStoreError::Busy`] when another connection holds the write lock past the busy
    ///   timeout while the schema must be created or the boot registered;
    /// - [`SqliteStoreError::BootId`] or [`SqliteStoreError::InvalidBootId`] when the boot id
    ///   cannot be read or is malformed;
    /// - [`SqliteStoreError::Unsupported`] when the file system cannot host a WAL database;
    /// - [`SqliteStoreError::Open`], [`SqliteStoreError::Io`] or [`SqliteStoreError::Sqlite`]
    ///   for other failures.
    pub fn open(self) -> StoreResult<SqliteStore> {
        let boot_id = match &self.boot_id {
            Some(id) => check_boot_id(id)?,
            None => host_boot_id()?,
        };
        let path = self.path.clone();
        check_directory(&path)?;
        if !self.allow_network_filesystem {
            refuse_shared(&path, parent_dir(&path))?;
        }
        create_or_check_file(&path)?;

        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|source| {
            match source.sqlite_error_code() {
                Some(rusqlite::ErrorCode::CannotOpen) => SqliteStoreError::Open {
                    path: path.clone(),
                    source,
                },
                _ => self.classify("opening", source),
            }
        })?;
        let (sql_path, timeout) = (path.clone(), self.busy_timeout);
        let sql = move |action: &'static str| {
            let path = sql_path.clone();
            move |e| SqliteStoreError::from_sqlite(&path, timeout, action, e)
        };
        // Until the checks below pass, closing must not copy a log left by an earlier process
        // into a file that is then refused (damaged, foreign, newer). Without such a log,
        // closing copies nothing and removes the -wal and -shm this connection created.
        if wal_has_content(&path) {
            keep_wal_on_close(&conn, true).map_err(sql("turning off the checkpoint on close"))?;
        }
        conn.busy_timeout(self.busy_timeout)
            .map_err(sql("setting the busy timeout"))?;
        if conn
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(sql("opening"))?
        {
            return Err(SqliteStoreError::ReadOnly {
                path,
                reason: "SQLite could only open it for reading".to_owned(),
            });
        }

        // Inspect before changing anything: this only reads the header and the schema.
        let version = read_schema_version(&conn, &path, self.busy_timeout)?;
        // The full scan costs O(file): only before a migration writes to the file (creation
        // included), or when asked for. Otherwise damage is met by the operation reading it.
        if self.integrity_check || version < SCHEMA_VERSION {
            quick_check(&conn).map_err(|e| match e {
                QuickCheck::Damaged(detail) => SqliteStoreError::Corrupt {
                    path: path.clone(),
                    detail,
                },
                QuickCheck::Failed(e) => sql("checking integrity")(e),
            })?;
        }

        // Now configure and, if need be, write.
        let mode = switch_to_wal(&conn, self.busy_timeout).map_err(sql("switching to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SqliteStoreError::Unsupported {
                path,
                reason: format!(
                    "SQLite kept journal mode {mode:?}: WAL is unavailable on this file system"
                ),
            });
        }
        // FULL: a commit survives power loss, so a fencing generation is never handed out twice.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("setting synchronous"))?;
        conn.set_prepared_statement_cache_capacity(32);

        let mut conn = conn;
        let record = BootRecord {
            boot_id: boot_id.clone(),
            machine_id: self.machine_id.clone().unwrap_or_else(host_machine_id),
        };
        // Off while migrating (the bundled SQLite starts with them on): see below.
        conn.pragma_update(None, "foreign_keys", false)
            .map_err(sql("disabling foreign keys to migrate"))?;
        let (boot_seq, registered_tx) =
            migrate_and_register_boot(&mut conn, &path, version, &record, self.wall.now())
                .map_err(|e| match e {
                    Migrate::Sqlite(action, e) => sql(action)(e),
                    Migrate::Store(e) => e,
                })?;
        // Only now: a migration that rebuilds a table copies rows that break a foreign key (a
        // hand-edited boot) as they are (see `schema.rs`), which SQLite refuses with foreign
        // keys on; and `PRAGMA foreign_keys` cannot change inside the migration's transaction.
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql("enabling foreign keys"))?;
        // The file passed every check: closing may now checkpoint it, if asked to.
        keep_wal_on_close(&conn, !self.checkpoint_on_close)
            .map_err(sql("setting the checkpoint on close"))?;
        if !self.checkpoint_on_close {
            conn.pragma_update(None, "wal_autocheckpoint", KEPT_WAL_CHECKPOINT_PAGES)
                .map_err(sql("setting the automatic checkpoint"))?;
        }
        let dir = self.death_aware.then(|| sessions_dir(&path));
        let session = match &dir {
            Some(dir) if self.session_scope != SessionScope::Unbound => Some(
                SessionSlot::for_file(&path, dir.clone(), boot_seq, self.session_scope).map_err(
                    |source| SqliteStoreError::Io {
                        action: "inspecting lease database",
                        path: path.clone(),
                        source,
                    },
                )?,
            ),
            _ => None,
        };
        SqliteStore::from_parts(
            conn,
            Settings {
                db: DbFile {
                    identity: DbFile::identity_of(&path),
                    path,
                    busy_timeout: self.busy_timeout,
                },
                clock: self.clock,
                boot: RegisteredBoot {
                    id: boot_id,
                    seq: boot_seq,
                    registered_tx,
                    machine_id: record.machine_id,
                },
                wall: self.wall,
                purge_batch: self.purge_batch,
                sessions: Sessions::new(session, dir, boot_seq),
                met_damage: std::sync::atomic::AtomicBool::new(false),
            },
        )
    }

    fn classify(&self, action: &'static str, e: rusqlite::Error) -> SqliteStoreError {
        SqliteStoreError::from_sqlite(&self.path, self.busy_timeout, action, e)
    }
}

/// Whether permission bits grant no one write access (what `chmod a-w` leaves).
fn no_write_bits(metadata: &fs::Metadata) -> bool {
    metadata.permissions().mode() & 0o222 == 0
}

fn check_directory(path: &Path) -> StoreResult<()> {
    let dir = parent_dir(path);
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SqliteStoreError::MissingDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        }),
        Err(source) => Err(SqliteStoreError::Io {
            action: "inspecting the directory of lease database",
            path: dir.to_path_buf(),
            source,
        }),
        Ok(m) if !m.is_dir() => Err(SqliteStoreError::Io {
            action: "inspecting the directory of lease database",
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        }),
        Ok(m) if no_write_bits(&m) => Err(SqliteStoreError::ReadOnly {
            path: dir.to_path_buf(),
            reason: format!(
                "the directory's mode {:o} grants no write access, and SQLite keeps its \
                 -wal and -shm files there",
                m.permissions().mode() & 0o7777
            ),
        }),
        Ok(_) => writable(
            dir,
            "the directory cannot be written, and SQLite keeps its -wal and -shm files there",
        ),
    }
}

/// Whether this process (by its effective ids) may write `path`, as the kernel decides: this
/// catches permissions for unprivileged users and read-only file systems for everyone.
fn writable(path: &Path, what: &str) -> StoreResult<()> {
    use rustix::fs::{Access, AtFlags, CWD, accessat};
    match accessat(CWD, path, Access::WRITE_OK, AtFlags::EACCESS) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::ACCESS || e == rustix::io::Errno::ROFS => {
            Err(SqliteStoreError::ReadOnly {
                path: path.to_path_buf(),
                reason: format!("{what}: {}", io::Error::from(e)),
            })
        }
        // Anything else (say, no such file after a race) is left for SQLite to report.
        Err(_) => Ok(()),
    }
}

/// Creates an absent database file with mode 0600, or checks that an existing one may be
/// written. Never changes an existing file.
fn create_or_check_file(path: &Path) -> StoreResult<()> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(SqliteStoreError::Io {
            action: "opening lease database",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::IsADirectory, "is a directory"),
        }),
        Ok(m) if no_write_bits(&m) => Err(SqliteStoreError::ReadOnly {
            path: path.to_path_buf(),
            reason: format!(
                "its mode {:o} grants no write access",
                m.permissions().mode() & 0o7777
            ),
        }),
        Ok(_) => writable(path, "the file cannot be written"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(NEW_FILE_MODE)
                .open(path)
            {
                // Another process created it first: fine, it is checked when opened.
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    Err(SqliteStoreError::ReadOnly {
                        path: parent_dir(path).to_path_buf(),
                        reason: format!("cannot create {}: {e}", path.display()),
                    })
                }
                Err(source) => Err(SqliteStoreError::Io {
                    action: "creating lease database",
                    path: path.to_path_buf(),
                    source,
                }),
            }
        }
        Err(source) => Err(SqliteStoreError::Io {
            action: "inspecting lease database",
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) enum QuickCheck {
    Damaged(String),
    Failed(rusqlite::Error),
}

pub(crate) fn quick_check(conn: &Connection) -> Result<(), QuickCheck> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check(20)")
        .map_err(QuickCheck::Failed)?;
    let lines: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .and_then(Iterator::collect)
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => QuickCheck::Damaged(e.to_string()),
            _ => QuickCheck::Failed(e),
        })?;
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(())
    } else {
        Err(QuickCheck::Damaged(lines.join("; ")))
    }
}

pub(crate) enum Migrate {
    /// SQLite failed while doing this.
    Sqlite(&'static str, rusqlite::Error),
    /// The file cannot be migrated.
    Store(SqliteStoreError),
}

/// Brings the schema up to date and returns this boot's number and the write counter when it
/// was registered, writing only when needed: opening an up-to-date file from a boot it
/// already knows takes no write lock. `wall` is the wall-clock time now. Called with foreign
/// keys off, so that a step that rebuilds a table keeps hand-edited rows ([`crate::schema`]).
pub(crate) fn migrate_and_register_boot(
    conn: &mut Connection,
    path: &Path,
    version: i64,
    boot: &BootRecord,
    wall: lease_core::Timestamp,
) -> Result<(i64, i64), Migrate> {
    let boot_id = boot.boot_id.as_str();
    if version == SCHEMA_VERSION
        && let Some(found) =
            find_boot(conn, boot_id).map_err(|e| Migrate::Sqlite("reading boots", e))?
    {
        return Ok(found);
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| Migrate::Sqlite("locking the database to migrate it", e))?;
    // Another process may have migrated the file since we looked.
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| Migrate::Sqlite("reading the schema version", e))?;
    if version > SCHEMA_VERSION {
        return Err(Migrate::Store(SqliteStoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        }));
    }
    let from = usize::try_from(version).unwrap_or(0);
    for step in MIGRATIONS.iter().skip(from) {
        tx.execute_batch(step)
            .map_err(|e| Migrate::Sqlite("migrating the schema", e))?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| Migrate::Sqlite("setting the schema version", e))?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(|e| Migrate::Sqlite("setting the application id", e))?;
    }
    // Registration is a write: it takes the next value of the write counter.
    tx.execute(
        "INSERT INTO boot (boot_id, machine_id, registered_tx, last_tx, last_write_wall) \
         SELECT ?1, ?2, next, next, ?3 \
         FROM (SELECT coalesce(max(last_tx), 0) + 1 AS next FROM boot) WHERE true \
         ON CONFLICT (boot_id) DO NOTHING",
        rusqlite::params![boot_id, boot.machine_id, wall_column(wall)],
    )
    .map_err(|e| Migrate::Sqlite("registering the boot", e))?;
    let found = find_boot(&tx, boot_id)
        .map_err(|e| Migrate::Sqlite("reading boots", e))?
        .ok_or_else(|| {
            Migrate::Sqlite("registering the boot", rusqlite::Error::QueryReturnedNoRows)
        })?;
    tx.commit()
        .map_err(|e| Migrate::Sqlite("committing the migration", e))?;
    Ok(found)
}

/// The number of boot `boot_id` and the write counter when it was registered.
fn find_boot(conn: &Connection, boot_id: &str) -> rusqlite::Result<Option<(i64, i64)>> {
    conn.query_row(
        "SELECT seq, registered_tx FROM boot WHERE boot_id = ?1",
        [boot_id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn empty_db() -> (tempfile::TempDir, PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        fs::write(&path, b"").unwrap();
        let conn = Connection::open(&path).unwrap();
        (dir, path, conn)
    }

    fn pragma(conn: &Connection, name: &str) -> i64 {
        conn.pragma_query_value(None, name, |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_busy_timeout_longer_than_sqlite_takes_is_cut_not_a_panic() {
        // rusqlite panics ("too big") on more than i32::MAX milliseconds.
        let dir = tempfile::tempdir().unwrap();
        for timeout in [
            Duration::MAX,
            Duration::from_secs(u64::from(u32::MAX)),
            MAX_BUSY_TIMEOUT,
        ] {
            let builder = SqliteStoreBuilder::new(dir.path().join("t.db")).busy_timeout(timeout);
            assert_eq!(builder.busy_timeout, MAX_BUSY_TIMEOUT.min(timeout));
            builder.open().unwrap();
        }
    }

    /// A wall-clock reading for registrations.
    pub(crate) const WALL: lease_core::Timestamp =
        lease_core::Timestamp::from_nanos(1_700_000_000_000_000_000);

    pub(crate) fn boot(id: &str) -> BootRecord {
        BootRecord {
            boot_id: id.to_owned(),
            machine_id: Some("machine-1".to_owned()),
        }
    }

    pub(crate) fn seq(result: Result<(i64, i64), Migrate>) -> i64 {
        match result {
            Ok((seq, _)) => seq,
            Err(Migrate::Sqlite(action, e)) => panic!("{action}: {e}"),
            Err(Migrate::Store(e)) => panic!("{e}"),
        }
    }

    #[test]
    fn an_empty_file_migrates_to_the_current_schema() {
        let (_dir, path, mut conn) = empty_db();
        assert_eq!(pragma(&conn, "user_version"), 0);
        assert_eq!(
            seq(migrate_and_register_boot(
                &mut conn,
                &path,
                0,
                &boot("b1"),
                WALL
            )),
            1
        );
        assert_eq!(pragma(&conn, "user_version"), SCHEMA_VERSION);
        assert_eq!(pragma(&conn, "application_id"), i64::from(APPLICATION_ID));
        let mut names: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        names.sort();
        assert_eq!(
            names,
            [
                "boot",
                "generation",
                "lease",
                "lease_by_expiry_bound",
                "lease_by_key",
                "lease_by_session",
                "pin",
                "session"
            ]
        );
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
    }

    #[test]
    fn reopening_registers_each_boot_once_and_writes_nothing_when_current() {
        let (_dir, path, mut conn) = empty_db();
        assert_eq!(
            seq(migrate_and_register_boot(
                &mut conn,
                &path,
                0,
                &boot("b1"),
                WALL
            )),
            1
        );
        assert_eq!(
            seq(migrate_and_register_boot(
                &mut conn,
                &path,
                SCHEMA_VERSION,
                &boot("b2"),
                WALL
            )),
            2
        );
        let changes = conn.total_changes();
        assert_eq!(
            seq(migrate_and_register_boot(
                &mut conn,
                &path,
                SCHEMA_VERSION,
                &boot("b1"),
                WALL
            )),
            1
        );
        assert_eq!(
            conn.total_changes(),
            changes,
            "an up-to-date open writes nothing"
        );
        let boots: i64 = conn
            .query_row("SELECT count(*) FROM boot", [], |r| r.get(0))
            .unwrap();
        assert_eq!(boots, 2);
    }

    #[test]
    fn a_migration_raced_by_another_process_is_not_repeated() {
        let (_dir, path, mut conn) = empty_db();
        seq(migrate_and_register_boot(
            &mut conn,
            &path,
            0,
            &boot("b1"),
            WALL,
        ));
        // This opener read version 0 before the other finished: under the lock it re-reads.
        assert_eq!(
            seq(migrate_and_register_boot(
                &mut conn,
                &path,
                0,
                &boot("b2"),
                WALL
            )),
            2
        );
        assert_eq!(pragma(&conn, "user_version"), SCHEMA_VERSION);
    }

    #[test]
    fn a_schema_made_newer_under_our_feet_is_refused_under_the_lock() {
        let (_dir, path, mut conn) = empty_db();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        match migrate_and_register_boot(&mut conn, &path, 0, &boot("b1"), WALL) {
            Err(Migrate::Store(SqliteStoreError::NewerSchema { found, .. })) => {
                assert_eq!(found, SCHEMA_VERSION + 1);
            }
            Err(Migrate::Store(e)) => panic!("{e}"),
            Err(Migrate::Sqlite(a, e)) => panic!("{a}: {e}"),
            Ok(found) => panic!("migrated to boot {found:?}"),
        }
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0, "nothing was created");
    }
}
