//! Holder sessions: how the store tells a holder whose processes are all dead (its leases
//! free at once) from one that is alive but silent (its leases free at their expiry only).
//!
//! # The rule
//!
//! A process writing leases to a file has one **session** for it: a row of the `session`
//! table (its `seq`, an `AUTOINCREMENT` key, is never reused) and an exclusive `flock` on the
//! file `<database>-sessions/<seq>` (directory 0700, file 0600), held by an open file
//! description. Every lease row a claim or an extend writes records the session. The kernel
//! releases a `flock` when the last descriptor of its open file description is closed: when
//! every process that had it (the writer, children it forked, commands `lease run` handed it
//! to) has exited or closed it. Nothing else releases it: not a pause, not `SIGSTOP`, not a
//! hung store call.
//!
//! So a lease that is live by its expiry counts as **free** when its session is dead: another
//! descriptor of the session file can take a *shared* lock without waiting
//! (`LOCK_SH | LOCK_NB` succeeds, so nobody holds the exclusive one), or the session belongs
//! to another boot. Shared probes never hold the exclusive lock, so probing (and the waiters
//! of the change notifier, which block on a shared lock) can never make a dead session look
//! alive to anyone. Within one process, `flock` conflicts between open file descriptions, so
//! a process's own session always probes alive.
//!
//! When the answer is unknown (the session file is missing, cannot be opened or locked, or is
//! not the session's own file), the lease is judged by its expiry alone: never freed early on
//! a doubt. The session writes into its file a stamp naming its number and the file's own
//! device and inode, and an unlocked file is taken as proof of death only with that stamp: a
//! file put in its place by hand (an empty file, an editor's save-by-rename, a restored copy,
//! a directory, a symbolic link) proves nothing about the holder. (Files of sessions created
//! before the stamp existed bear none: those holders' leases free at their expiry only.) A session row whose
//! file is missing arises only when a process that found the session dead removed the file
//! and then failed to commit, or when someone deleted the directory by hand (or opened the
//! database through a hard link: the directory is named after the path given, made canonical).
//!
//! # Lifetime: one session per process and file, until the process exits
//!
//! A holder may act on a lease for as long as the window it was promised lasts, whatever
//! becomes of the store handle it claimed through: a program that drops its store (or its
//! manager) while its guaranteed window runs must not see the lease freed under it. So the
//! session belongs to the process, not the handle: a process-wide registry keyed by the
//! database file's identity (device and inode) and boot keeps it until the process exits.
//! [`SessionScope::Store`] ends it with the store instead, for tests that simulate a second
//! process inside one.
//!
//! # Cost
//!
//! Nothing at opening. The session is created lazily, inside the first write transaction
//! that records a lease (a claim or an extend that takes effect): one more row in the same
//! commit (no extra transaction, no extra fsync), a file created and locked. Probing another
//! session is an `open`, a non-blocking `flock` and a `close`, once per session per
//! transaction. Creating a session also probes up to three others and removes the dead
//! ones (file and row), so the table stays as small as the set of live sessions plus a few.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use rusqlite::Connection;
use rustix::fs::{FlockOperation, flock};

use crate::changes::DeathWatch;
use crate::error::{DbFile, SqliteStoreError, StoreResult};
use crate::paths::session_file;

/// How many other sessions creating a session probes (and removes, when dead).
pub(crate) const SWEEP: i64 = 3;

/// The mode of the sessions directory: its owner's only.
pub(crate) const SESSIONS_DIR_MODE: u32 = 0o700;

/// The mode of a session's lock file.
pub(crate) const SESSION_FILE_MODE: u32 = 0o600;

/// Who a session belongs to: how long it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionScope {
    /// One session per process and database file (and boot), kept until the process exits,
    /// shared by every store the process opens on the file. The default, and the only safe
    /// choice for a program: a lease is never freed early while the process that was promised
    /// it lives.
    #[default]
    Process,
    /// A session of this store alone, ended when the store is dropped (its leases then free
    /// at once, as if its process had died). For tests simulating several processes inside
    /// one; unsafe for a program that keeps acting on a lease after dropping its store.
    Store,
    /// No session: this store's claims and extends are written without one, so they free at
    /// their expiry only, whatever becomes of this process. For one-shot commands whose holder
    /// outlives them (`lease claim` run from a script, whose holder is the script). Other
    /// holders' deaths are still seen.
    Unbound,
}

/// What a probe tells of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Some process holds its lock.
    Alive,
    /// Nobody does, or it is of another boot: its leases are free.
    Dead,
    /// Its file is missing or cannot be probed: judge its leases by their expiry.
    Unknown,
}

/// Probes session `seq`'s lock file in `dir`: alive when a shared lock cannot be taken at
/// once (someone holds the exclusive one).
pub(crate) fn probe(dir: &Path, seq: i64) -> Liveness {
    let Ok(file) = File::open(session_file(dir, seq)) else {
        return Liveness::Unknown;
    };
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        // Unlocked, it is dead only if it is the very file the session locked: one replaced
        // by hand (an empty file, an editor's save, a directory, a link) says nothing of the
        // holder. Closing the file (here) releases the shared lock at once.
        Ok(()) if stamped(&file, seq) => Liveness::Dead,
        Ok(()) => Liveness::Unknown,
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Liveness::Alive,
        Err(_) => Liveness::Unknown,
    }
}

/// What a session's lock file says of itself: its number and its own device and inode, so a
/// copy (an editor's save, a restore) or any other file put in its place is told from it.
fn stamp(seq: i64, meta: &fs::Metadata) -> String {
    format!("lease-session {seq} {} {}\n", meta.dev(), meta.ino())
}

/// Whether `file` is session `seq`'s own lock file: it bears the stamp [`create`] wrote.
fn stamped(file: &File, seq: i64) -> bool {
    use std::io::Read;
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let expected = stamp(seq, &meta);
    let mut content = Vec::with_capacity(expected.len() + 1);
    // One byte more than the stamp: a longer file is not the stamp either.
    let limit = u64::try_from(expected.len() + 1).unwrap_or(u64::MAX);
    meta.is_file()
        && file.take(limit).read_to_end(&mut content).is_ok()
        && content == expected.as_bytes()
}

/// A session this process holds: its number and the locked file.
#[derive(Debug)]
struct Held {
    seq: i64,
    /// A random number also stored in the row: tells this session's row from a row of the same
    /// number in another file that replaced the first.
    token: i64,
    file: File,
    path: PathBuf,
}

impl Held {
    /// Gives up a session whose row was never committed: the file goes first (while still
    /// locked, so nobody who opens the same path afterwards gets this inode), then the lock.
    fn abandon(self) {
        if same_file(&self.file, &self.path) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Whether `path` still names the open `file`.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[derive(Debug)]
enum State {
    /// No session yet: the next write transaction that records a lease creates one.
    None,
    /// Created inside the current write transaction, which has not committed yet.
    Pending(Held),
    /// Committed: lease rows may name it.
    Established(Held),
}

/// The session of a process (or of one store, [`SessionScope::Store`]) on one database file.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    dir: PathBuf,
    state: Mutex<State>,
    /// The established session's number, 0 while there is none: read without the lock.
    established: AtomicI64,
}

type RegistryKey = (u64, u64, i64, PathBuf);

/// The sessions of this process, by database file (device, inode, sessions directory) and
/// boot: never emptied,
/// so a session lives until the process exits.
static REGISTRY: OnceLock<Mutex<HashMap<RegistryKey, Arc<SessionSlot>>>> = OnceLock::new();

impl SessionSlot {
    /// The session slot for the database at `path` (its directory of session files `dir`),
    /// under `scope`, for boot number `boot_seq`.
    pub(crate) fn for_file(
        path: &Path,
        dir: PathBuf,
        boot_seq: i64,
        scope: SessionScope,
    ) -> io::Result<Arc<SessionSlot>> {
        let fresh = |dir| {
            Arc::new(SessionSlot {
                dir,
                state: Mutex::new(State::None),
                established: AtomicI64::new(0),
            })
        };
        if scope == SessionScope::Store {
            return Ok(fresh(dir));
        }
        let meta = fs::metadata(path)?;
        let key = (meta.dev(), meta.ino(), boot_seq, dir.clone());
        let mut registry = REGISTRY
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(
            registry.entry(key).or_insert_with(|| fresh(dir)),
        ))
    }

    /// The established session's number, if any.
    pub(crate) fn own(&self) -> Option<i64> {
        match self.established.load(Ordering::Acquire) {
            0 => None,
            seq => Some(seq),
        }
    }

    /// A new descriptor of the session's lock (its open file description), without
    /// close-on-exec, for a child process to inherit: the lock then lasts until that child and
    /// everything it hands the descriptor to are gone too. `None` before the session exists.
    pub(crate) fn inheritable_lock(&self) -> Option<io::Result<OwnedFd>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &*state {
            State::Established(held) => Some(rustix::io::dup(&held.file).map_err(io::Error::from)),
            _ => None,
        }
    }

    /// Locks the slot for one write transaction. Take it only after `BEGIN IMMEDIATE`: write
    /// transactions on the file are serialised by SQLite, so the lock is never waited for
    /// while holding what its holder waits for.
    pub(crate) fn begin(&self) -> SlotTx<'_> {
        SlotTx {
            slot: self,
            state: self.state.lock().unwrap_or_else(PoisonError::into_inner),
            verified: false,
        }
    }
}

/// The holder session of one write transaction: `None` when this store writes under none
/// (death-awareness off, or [`SessionScope::Unbound`]).
pub(crate) type Slot<'a> = Option<SlotTx<'a>>;

/// A session slot locked for one write transaction. Call [`SlotTx::committed`] once the
/// transaction has committed; dropped otherwise, a session created in it is abandoned.
pub(crate) struct SlotTx<'a> {
    slot: &'a SessionSlot,
    state: MutexGuard<'a, State>,
    /// The established session's row was found, with its token, in this transaction: no other
    /// connection can remove it before the transaction ends (it holds the write lock), so it
    /// is not looked up again for each op of a batch.
    verified: bool,
}

impl SlotTx<'_> {
    /// The session to record in a lease row written by this transaction, created (row, file,
    /// lock) if there is none yet.
    ///
    /// # Errors
    ///
    /// When the row cannot be inserted, or the file cannot be created or locked.
    pub(crate) fn session(
        &mut self,
        tx: &Connection,
        db: &DbFile,
        sessions: &Sessions,
    ) -> StoreResult<i64> {
        if let Some(seq) = self.established(tx, db)? {
            return Ok(seq);
        }
        match &*self.state {
            State::Pending(held) => return Ok(held.seq),
            // The file was replaced by another one at the same place (same device, inode and
            // path), or our row was removed (a store of this process simulating another
            // boot): this session means nothing in this file. Start a new one.
            State::Established(_) => {
                self.slot.established.store(0, Ordering::Release);
                *self.state = State::None;
            }
            State::None => {}
        }
        let held = create(tx, db, sessions.boot_seq, &self.slot.dir)?;
        let seq = held.seq;
        *self.state = State::Pending(held);
        sweep(tx, db, sessions, seq)?;
        Ok(seq)
    }

    /// The established session, when its row is still in the file with its token (looked up
    /// once per transaction); `None` when there is none, or it is not ours any more (then
    /// [`SlotTx::session`] starts a new one). Creates nothing.
    ///
    /// # Errors
    ///
    /// When the session row cannot be read.
    pub(crate) fn established(&mut self, tx: &Connection, db: &DbFile) -> StoreResult<Option<i64>> {
        let State::Established(held) = &*self.state else {
            return Ok(None);
        };
        if !self.verified {
            self.verified = still_ours(tx, db, held)?;
        }
        Ok(self.verified.then_some(held.seq))
    }

    /// The transaction committed: a session created in it is established.
    pub(crate) fn committed(mut self) {
        if let State::Pending(_) = &*self.state
            && let State::Pending(held) = std::mem::replace(&mut *self.state, State::None)
        {
            self.slot.established.store(held.seq, Ordering::Release);
            *self.state = State::Established(held);
        }
    }
}

impl Drop for SlotTx<'_> {
    fn drop(&mut self) {
        if let State::Pending(_) = &*self.state
            && let State::Pending(held) = std::mem::replace(&mut *self.state, State::None)
        {
            held.abandon();
        }
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SqliteStoreError {
    let path = path.to_path_buf();
    move |source| SqliteStoreError::Io {
        action,
        path,
        source,
    }
}

/// A random 64-bit number (std's randomly keyed hasher over the pid and the time). Not
/// `fastrand`'s global generator: the simulator seeds that one for its schedules, which a
/// store's session tokens drawing from it would shift.
fn random_token() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    i64::from_ne_bytes(hasher.finish().to_ne_bytes())
}

/// Whether `held`'s row is still in the file, with its token.
fn still_ours(tx: &Connection, db: &DbFile, held: &Held) -> StoreResult<bool> {
    tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM session WHERE seq = ?1 AND token = ?2)")
        .and_then(|mut stmt| stmt.query_row([held.seq, held.token], |r| r.get(0)))
        .map_err(db.sql("reading holder sessions"))
}

/// Inserts a session row of boot number `boot_seq` and creates and locks its file in `dir`,
/// before any lease row names it.
fn create(tx: &Connection, db: &DbFile, boot_seq: i64, dir: &Path) -> StoreResult<Held> {
    let token = random_token();
    let seq: i64 = tx
        .prepare_cached("INSERT INTO session (boot, pid, token) VALUES (?1, ?2, ?3) RETURNING seq")
        .and_then(|mut stmt| {
            stmt.query_row(
                rusqlite::params![boot_seq, i64::from(std::process::id()), token],
                |r| r.get(0),
            )
        })
        .map_err(db.sql("creating a holder session"))?;
    match fs::DirBuilder::new().mode(SESSIONS_DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(io_error("creating the holder sessions directory", dir)(e)),
    }
    let path = session_file(dir, seq);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(SESSION_FILE_MODE)
        .open(&path)
        .map_err(io_error("creating a holder session file", &path))?;
    flock(&file, FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| io_error("locking a holder session file", &path)(e.into()))?;
    // Another process abandoning the same number may have unlinked the path between our open
    // and our lock: then the lock is on a file nobody else can find. Refuse it.
    if !same_file(&file, &path) {
        return Err(io_error("locking a holder session file", &path)(
            io::Error::other("the file was replaced while it was being locked"),
        ));
    }
    // Stamped before the row commits, so nobody ever probes it unstamped (over whatever a
    // file left at this path said: a database restored from a backup reuses numbers).
    file.set_len(0)
        .and_then(|()| file.metadata())
        .and_then(|meta| (&file).write_all(stamp(seq, &meta).as_bytes()))
        .map_err(io_error("writing a holder session file", &path))?;
    Ok(Held {
        seq,
        token,
        file,
        path,
    })
}

/// Probes up to [`SWEEP`] sessions other than `own`, from a point that moves with `own` (so
/// successive sessions look at different parts of the table), and removes the dead ones.
fn sweep(tx: &Connection, db: &DbFile, sessions: &Sessions, own: i64) -> StoreResult<()> {
    // A multiplicative hash of `own` spread over [0, own): cheap, deterministic, and it
    // reaches every row over time, not only the oldest (which may be long-lived and alive).
    let start = i64::try_from(
        u64::try_from(own)
            .unwrap_or(0)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .checked_rem(u64::try_from(own).unwrap_or(1).max(1))
            .unwrap_or(0),
    )
    .unwrap_or(0);
    let candidates: Vec<(i64, i64)> = tx
        .prepare_cached(
            "SELECT seq, boot FROM session WHERE seq >= ?1 AND seq <> ?2 ORDER BY seq LIMIT ?3",
        )
        .and_then(|mut stmt| {
            stmt.query_map(rusqlite::params![start, own, SWEEP], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })
        .map_err(db.sql("reading holder sessions"))?;
    for (seq, boot) in candidates {
        if sessions.judge(seq, Some(boot)) == Liveness::Dead {
            sessions.reap(tx, db, seq)?;
        }
    }
    Ok(())
}

/// What one store remembers of other sessions' liveness: dead is for good; alive only for the
/// current transaction.
#[derive(Debug, Default)]
pub(crate) struct LivenessCache {
    dead: std::collections::HashSet<i64>,
    alive: std::collections::HashSet<i64>,
}

impl LivenessCache {
    /// Forgets which sessions were alive (at the start of each transaction).
    pub(crate) fn new_transaction(&mut self) {
        self.alive.clear();
    }

    pub(crate) fn get(&self, seq: i64) -> Option<Liveness> {
        if self.dead.contains(&seq) {
            Some(Liveness::Dead)
        } else if self.alive.contains(&seq) {
            Some(Liveness::Alive)
        } else {
            None
        }
    }

    pub(crate) fn put(&mut self, seq: i64, liveness: Liveness) {
        match liveness {
            Liveness::Dead => {
                self.dead.insert(seq);
            }
            Liveness::Alive => {
                self.alive.insert(seq);
            }
            Liveness::Unknown => {}
        }
    }
}

/// A handle on a process's holder session on one database file (see [the crate
/// documentation](crate#a-dead-holders-lease-is-free-at-once-a-silent-ones-at-its-expiry)),
/// from [`SqliteStore::session_handle`](crate::SqliteStore::session_handle).
#[derive(Clone)]
pub struct SessionHandle(pub(crate) Arc<SessionSlot>);

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle")
            .field("session", &self.0.own())
            .finish_non_exhaustive()
    }
}

impl SessionHandle {
    /// As [`SqliteStore::inheritable_session_lock`](crate::SqliteStore::inheritable_session_lock): a new descriptor of the session's lock,
    /// without close-on-exec, for a child process to inherit; `None` before the process's
    /// first claim or extend on the file.
    ///
    /// # Errors
    ///
    /// When the descriptor cannot be duplicated.
    pub fn inheritable_lock(&self) -> Option<std::io::Result<std::os::fd::OwnedFd>> {
        self.0.inheritable_lock()
    }
}

/// What a store knows of holder sessions on its file: the one it writes under (if any), where
/// every session's lock file is (when death-awareness is on), which sessions it found alive or
/// dead, and the death watch it hands live ones to.
pub(crate) struct Sessions {
    /// The holder session this store writes under; `None` when death-awareness is off or the
    /// session scope is [`SessionScope::Unbound`].
    slot: Option<Arc<SessionSlot>>,
    /// The directory of the session files, when death-awareness is on (other holders' deaths
    /// are seen); `None` judges every lease by its expiry alone.
    dir: Option<PathBuf>,
    /// This boot's number in the `boot` table: sessions of other boots are dead.
    boot_seq: i64,
    /// Which other sessions were found alive (this transaction) or dead (for good).
    liveness: Mutex<LivenessCache>,
    /// Set when the change notifier starts: the sessions found alive are watched for death.
    death_watch: OnceLock<Arc<DeathWatch>>,
}

impl Sessions {
    /// The sessions of a store writing under `slot`, with session files in `dir` (`None`: not
    /// death-aware), on boot number `boot_seq`.
    pub(crate) fn new(slot: Option<Arc<SessionSlot>>, dir: Option<PathBuf>, boot_seq: i64) -> Self {
        Sessions {
            slot,
            dir,
            boot_seq,
            liveness: Mutex::default(),
            death_watch: OnceLock::new(),
        }
    }

    /// The directory of the session files, when death-awareness is on.
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// A handle on the session this store writes under, if any.
    pub(crate) fn handle(&self) -> Option<SessionHandle> {
        self.slot.clone().map(SessionHandle)
    }

    /// Locks this store's session slot for one write transaction (see [`SessionSlot::begin`]).
    pub(crate) fn begin(&self) -> Slot<'_> {
        self.slot.as_deref().map(SessionSlot::begin)
    }

    /// Hands live sessions to `watch` from now on (once: later calls are ignored).
    pub(crate) fn set_death_watch(&self, watch: Arc<DeathWatch>) {
        let _ = self.death_watch.set(watch);
    }

    /// How many watched sessions have died so far (0 without a death watch).
    pub(crate) fn deaths(&self) -> u64 {
        self.death_watch.get().map_or(0, |w| w.deaths())
    }

    fn liveness_cache(&self) -> std::sync::MutexGuard<'_, LivenessCache> {
        self.liveness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a transaction's view of other sessions: which were alive is asked again.
    pub(crate) fn new_transaction(&self) {
        self.liveness_cache().new_transaction();
    }

    /// Whether session `seq` (of boot number `boot`, `None` when its row is missing) is
    /// alive. This store's own session is; one of another boot is dead; otherwise its lock
    /// file is probed (once per transaction). A live session of another process is handed to
    /// the death watch, if the change notifier runs, so waiters hear of its death at once.
    pub(crate) fn judge(&self, seq: i64, boot: Option<i64>) -> Liveness {
        let Some(dir) = &self.dir else {
            return Liveness::Unknown;
        };
        if self.slot.as_deref().and_then(SessionSlot::own) == Some(seq) {
            return Liveness::Alive;
        }
        if let Some(known) = self.liveness_cache().get(seq) {
            return known;
        }
        let liveness = match boot {
            None => Liveness::Unknown,
            Some(boot) if boot != self.boot_seq => Liveness::Dead,
            Some(_) => probe(dir, seq),
        };
        self.liveness_cache().put(seq, liveness);
        if liveness == Liveness::Alive
            && let Some(watch) = self.death_watch.get()
        {
            watch.watch(seq);
        }
        liveness
    }

    /// Whether a lease row written under `session` (of boot number `boot`) may still be acted
    /// on by its holder: not when its session is known dead.
    pub(crate) fn holder_may_act(&self, session: Option<i64>, boot: Option<i64>) -> bool {
        session.is_none_or(|seq| self.judge(seq, boot) != Liveness::Dead)
    }

    /// Removes dead session `seq`: its file, its unpinned leases (free already: this is a purge),
    /// its mark on pinned ones (judged by pins and expiry from now on), and its row. Inside a
    /// write transaction; the file goes first, so a rollback leaves a row without a file, which
    /// is judged by expiry alone (never freed early on a doubt).
    pub(crate) fn reap(&self, tx: &Connection, db: &DbFile, seq: i64) -> StoreResult<()> {
        if let Some(dir) = self.dir() {
            let path = session_file(dir, seq);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::debug!(
                        path = %path.display(),
                        error = %e,
                        "cannot remove a dead session's file"
                    )
                }
            }
        }
        let sql = db.sql("removing a dead holder session");
        tx.prepare_cached(
            "UPDATE lease SET session = NULL WHERE session = ?1 AND EXISTS (SELECT 1 FROM pin p \
             WHERE p.namespace = lease.namespace AND p.model = lease.model \
             AND p.name = lease.name)",
        )
        .and_then(|mut stmt| stmt.execute([seq]))
        .map_err(&sql)?;
        tx.prepare_cached("DELETE FROM lease WHERE session = ?1")
            .and_then(|mut stmt| stmt.execute([seq]))
            .map_err(&sql)?;
        tx.prepare_cached("DELETE FROM session WHERE seq = ?1")
            .and_then(|mut stmt| stmt.execute([seq]))
            .map_err(&sql)?;
        Ok(())
    }
}
