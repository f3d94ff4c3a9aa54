//! [`SqliteStore`]: the [`Store`] on an SQLite file, running each operation (or batch) as one
//! short transaction.
//!
//! # Never on the runtime's threads
//!
//! An SQLite call blocks: an fsync for each commit, and up to the busy timeout while another
//! process holds the write lock. Run on a runtime worker, that stalls every task of the worker
//! (all of them, on a `current_thread` runtime), including a lease holder's own renew-deadline
//! timer: a self-inflicted pause of the holder, whose lost token then fires after the lease may
//! already be someone else's. So every SQLite call of a [`Store`] method runs in
//! [`tokio::task::spawn_blocking`], one call per method or per [`Store::apply`] batch (one
//! transaction, one fsync, one thread hop: group commit is kept).
//!
//! The connection and its bookkeeping (`Conn`) sit behind an `Arc<tokio::sync::Mutex<_>>`.
//! A method first takes the lock (asynchronously, first come first served), then moves the
//! owned guard into the blocking closure, which releases it when the transaction has ended.
//! Hence cancellation safety: a caller's future dropped while it waits for the lock leaves the
//! queue and never touches the file; one dropped after its closure started does not stop it
//! (a blocking thread cannot be interrupted): the transaction runs to its commit or rollback on
//! its own, and the next call waits for it at the lock. A transaction is never left open: the
//! closure owns it for its whole life, rusqlite's `Transaction` rolls back when dropped (also
//! while unwinding from a panic), and each call checks the connection is back in autocommit
//! before beginning (see `Conn::end_stray_transaction`).
//!
//! Why not a dedicated thread per store with a channel (an actor)? For single calls it would be
//! the same serialisation with a thread that lives as long as the store, a hand-written queue,
//! and a reply channel per call; `spawn_blocking` reuses tokio's pool, costs nothing idle, and
//! its join handle is the reply. For batches started ahead ([`Store::start_apply`], the
//! manager's pipeline) there is one (`crate::pipeline`), started by the first of them: there
//! the queue is the point, as the next batch is waiting when one commits, with no thread to
//! wake and no round trip through the caller's runtime between the two. Why not
//! `block_in_place`? It panics on a `current_thread` runtime. Outside any tokio runtime (a
//! caller polling the future on another executor) there is no runtime to block, and the call
//! runs inline.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use lease_core::{
    Clock, Info, Key, Op, Outcome, Request, StartedApply, Store, Timestamp, validate_string,
};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::batch_results::{self, Checked};
use crate::changes::{ChangeNotifier, data_version, write_counter};
use crate::error::{SqliteStoreError, StoreResult};
use crate::kernel::{record_write, refuse_other_kernels};
use crate::ops::{
    Batch, OpResult, PurgeSchedule, claim, extend, purge, revoke, snapshot_all, snapshot_group,
    snapshot_keys, stable_plans,
};
use crate::own_commits::OwnCommits;
use crate::own_rows::{OwnRows, OwnRowsTx};
use crate::pipeline::ApplyThread;
use crate::session::{SessionHandle, Slot};
use crate::settings::Settings;

/// A lease [`Store`] on an SQLite file, safe for many processes of one host sharing the file.
///
/// Every operation is one short transaction: writes begin with `BEGIN IMMEDIATE`, so each
/// decides on the current state and writes it while holding SQLite's write lock, with no
/// read-then-write race between processes. [`Store::apply`] runs a whole batch in one
/// transaction (one fsync for the batch). Expiries are instants on the injected [`Clock`]
/// (`CLOCK_BOOTTIME` by default, which every process of the host shares and which does not
/// jump when the wall clock is set), stored with the host's boot id: after a reboot every
/// earlier lease has expired. Fencing generations come from a per-key table that is never
/// deleted from.
///
/// # Never blocks the async runtime
///
/// Every SQLite call runs on a blocking thread ([`tokio::task::spawn_blocking`]), never on the
/// runtime's workers: a call waiting up to the [busy timeout](crate::SqliteStoreBuilder::busy_timeout)
/// for another process's write lock, or for an fsync, delays no other task (a lease holder's
/// timers included), on a `current_thread` runtime as on a multi-thread one. Each method (and
/// each [`Store::apply`] batch, as one transaction) is one blocking call. Batches started with
/// [`Store::start_apply`] run, in the order started, on the store's apply thread (created by
/// the first of them, ended when the store is dropped), one straight after another.
///
/// Dropping a method's future is safe: if its transaction had not begun, it never will; if it
/// had, it runs to its commit or rollback on its blocking thread (a write may so take effect
/// after its caller gave up, as after any timeout), and the next call waits for it. No
/// transaction is ever left open.
///
/// Every method takes `&mut self`, so one handle runs one call at a time; besides them, the
/// batches it started run one at a time on its apply thread, each as one transaction, never
/// overlapping another call. A started batch whose future is dropped before its turn is never
/// applied; one dropped after it began runs to its end.
///
/// ```no_run
/// use std::time::Duration;
/// use lease_core::{Key, Request, Store};
/// use lease_store_sqlite::SqliteStore;
///
/// # async fn run() -> lease_core::Result<()> {
/// let mut store = SqliteStore::open("/var/lib/myapp/leases.db")?;
/// let key = Key::new("singular-controller", "model-1", "backup");
/// let info = store.claim_lease(&key, &Request::new("machine-0", Duration::from_secs(15))).await?;
/// println!("holding {key} until {} as generation {}", info.expiry, info.generation);
/// # Ok(())
/// # }
/// ```
pub struct SqliteStore {
    /// Used only on blocking threads (see [`SqliteStore::blocking`]).
    conn: Arc<Mutex<Conn>>,
    settings: Arc<Settings>,
    /// Started by the first [`Store::change_notifier`] call; stopped when the store is dropped.
    notifier: Option<ChangeNotifier>,
    /// The commits the notifier does not report (the same as the connection's).
    own: Arc<OwnCommits>,
    /// Started by the first [`Store::start_apply`]; ends when the store is dropped.
    apply_thread: Option<ApplyThread<Checked>>,
}

/// The connection and what changes with it: everything a call needs besides [`Settings`],
/// owned by whichever blocking thread holds the lock.
pub(crate) struct Conn {
    conn: Connection,
    /// `PRAGMA data_version` as of the last poll.
    data_version: i64,
    /// The death watch's count of holder deaths as of the last poll.
    deaths: u64,
    /// When the next opportunistic purge runs.
    purges: PurgeSchedule,
    /// This store's commits, for its change notifier (shared with it).
    own: Arc<OwnCommits>,
    /// The data version for which [`Conn::wake_for_others`] last woke the notifier.
    woken_for: i64,
    /// The lease rows this connection wrote and still holds ([`crate::own_rows`]).
    own_rows: OwnRows,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.settings.db.path)
            .field("boot_id", &self.settings.boot.id)
            .field("clock", &self.settings.clock)
            .field("busy_timeout", &self.settings.db.busy_timeout)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// A store over an opened, migrated connection.
    pub(crate) fn from_parts(conn: Connection, settings: Settings) -> StoreResult<SqliteStore> {
        stable_plans(&conn).map_err(settings.sql("configuring the query planner"))?;
        // One snapshot: what the store has seen at open. A commit of any connection before it
        // is not news (the boot's `registered_tx` may be far older: another connection of
        // this boot may have written since); one after it is.
        let (data_version, counter) = {
            let read = conn
                .unchecked_transaction()
                .map_err(settings.sql("reading the data version"))?;
            let version = data_version(&read).map_err(settings.sql("reading the data version"))?;
            let counter =
                write_counter(&read).map_err(settings.sql("reading the write counter"))?;
            read.commit()
                .map_err(settings.sql("reading the data version"))?;
            (version, counter)
        };
        let own = Arc::new(OwnCommits::default());
        own.saw_counter(counter);
        let store = SqliteStore {
            conn: Arc::new(Mutex::new(Conn {
                conn,
                data_version,
                deaths: 0,
                purges: PurgeSchedule::default(),
                own: Arc::clone(&own),
                woken_for: data_version,
                own_rows: OwnRows::default(),
            })),
            settings: Arc::new(settings),
            notifier: None,
            own,
            apply_thread: None,
        };
        // The notifier's check, run on its thread: only when no call holds the connection
        // (one that does checks as it ends). Weak: the store owns the notifier.
        let conn = Arc::downgrade(&store.conn);
        store.own.set_others_check(Box::new(move || {
            if let Some(conn) = conn.upgrade()
                && let Ok(mut conn) = conn.try_lock()
            {
                conn.wake_for_others();
            }
        }));
        Ok(store)
    }

    /// Runs `f` on the connection on a blocking thread, after every earlier call has ended.
    ///
    /// The lock is taken here, asynchronously: a caller dropped while waiting for it never
    /// runs `f`. The owned guard then moves into the blocking closure, so a caller dropped
    /// while `f` runs does not release the connection before `f` ends. Outside a tokio
    /// runtime, `f` runs inline: there is no runtime to block.
    ///
    /// # Errors
    ///
    /// [`SqliteStoreError::BlockingCall`] when `f` panicked (its transaction rolled back as
    /// rusqlite's `Transaction` was dropped) or the runtime shut down before running it.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn, &Settings) -> T + Send + 'static,
    ) -> StoreResult<T> {
        let guard = Arc::clone(&self.conn).lock_owned().await;
        let settings = Arc::clone(&self.settings);
        let run = move || {
            let mut guard: OwnedMutexGuard<Conn> = guard;
            guard.call(&settings, f)
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(run());
        }
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|source| SqliteStoreError::BlockingCall {
                path: self.settings.db.path.clone(),
                source,
            })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.settings.db.path
    }

    /// The boot id stored with the expiries this store writes.
    pub fn boot_id(&self) -> &str {
        &self.settings.boot.id
    }

    /// A new descriptor of this process's holder-session lock on the file (see [the crate
    /// documentation](crate#a-dead-holders-lease-is-free-at-once-a-silent-ones-at-its-expiry)),
    /// *without* close-on-exec, for a child process to inherit: the leases this process holds
    /// are then not freed early while that child (or anything it passes the descriptor on to)
    /// still runs. `lease run` hands it to its command.
    ///
    /// `None` when death-awareness is off, or before this process's first claim or extend on
    /// the file (the session is created then).
    ///
    /// # Errors
    ///
    /// When the descriptor cannot be duplicated (the process is out of descriptors).
    pub fn inheritable_session_lock(&self) -> Option<std::io::Result<std::os::fd::OwnedFd>> {
        self.settings
            .sessions
            .handle()
            .and_then(|handle| handle.inheritable_lock())
    }

    /// A handle on this process's holder session on the file, usable after the store has been
    /// moved away (boxed as a `dyn Store`, say); `None` when death-awareness is off.
    pub fn session_handle(&self) -> Option<SessionHandle> {
        self.settings.sessions.handle()
    }

    /// The clock expiries are measured on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.settings.clock
    }

    /// Deletes up to `limit` expired, unpinned lease rows (of this boot, or written under any
    /// other boot) in one transaction, and returns how many it deleted. Generations are kept,
    /// so later claims still get higher ones. Call it until it returns less than `limit` to
    /// purge everything.
    ///
    /// A row of this boot is purged once past its expiry bound: at its expiry when the lease
    /// was claimed and never renewed, at most one lease duration after it when it was renewed
    /// (the bound spares most renewals an index write; see the crate's schema, version 5). An
    /// expired row counts as free to every call before that; only its deletion waits.
    ///
    /// Like every SQLite call of the store, it runs on a blocking thread.
    ///
    /// # Errors
    ///
    /// [`SqliteStoreError::Busy`] when another connection holds the write lock past the busy
    /// timeout; other SQLite failures; [`SqliteStoreError::BlockingCall`] as for any call.
    pub async fn purge_expired(&mut self, limit: usize) -> StoreResult<usize> {
        self.blocking(move |conn, settings| conn.purge_expired(settings, limit))
            .await?
    }
}

impl Conn {
    /// One call on the connection, by whichever thread holds its lock: a transaction left
    /// open by a panic is ended first; after it, the change notifier is woken if others
    /// wrote, and a damaged file is left alone.
    pub(crate) fn call<T>(
        &mut self,
        settings: &Settings,
        f: impl FnOnce(&mut Conn, &Settings) -> T,
    ) -> T {
        self.end_stray_transaction(settings);
        let out = f(self, settings);
        self.wake_for_others();
        if settings
            .met_damage
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.leave_damaged_file_alone(settings);
        }
        out
    }

    /// Stops every checkpoint of this connection, automatic or at close, once an operation
    /// found the file damaged: a log is not copied into a file that is damaged (it stays as
    /// it was found, for whoever repairs it), even when the log is sound and a later write of
    /// this connection succeeds. Runs after every call once damage was met, so a log that
    /// gained content since is kept too; an empty one is left to the close, which copies
    /// nothing and removes it.
    fn leave_damaged_file_alone(&mut self, settings: &Settings) {
        let keep = crate::wal::wal_has_content(&settings.db.path);
        let stopped = self
            .conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .and_then(|()| crate::wal::keep_wal_on_close(&self.conn, keep));
        if let Err(error) = stopped {
            tracing::error!(
                path = %settings.db.path.display(),
                %error,
                "cannot stop checkpoints into the damaged lease database"
            );
        }
    }

    /// Rolls back a transaction an earlier call left open. None can be (each call's
    /// `Transaction` ends it, even while unwinding), so this is a cheap guard against a bug
    /// leaving the write lock held by this connection for good.
    fn end_stray_transaction(&mut self, settings: &Settings) {
        if !self.conn.is_autocommit() {
            tracing::error!(
                path = %settings.db.path.display(),
                "a transaction was left open on the lease database; rolling it back"
            );
            if let Err(error) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(path = %settings.db.path.display(), %error, "rollback failed");
            }
        }
    }

    /// After each call, and when the notifier asks: when another connection committed since
    /// the last [`Store::poll_changes`], wake the manager (once per data version), as the
    /// notifier may have judged that change together with a commit of ours
    /// ([`crate::own_commits`]). A read of the data version that fails is left to the next
    /// poll.
    fn wake_for_others(&mut self) {
        if !self.own.watched() {
            return;
        }
        if let Ok(version) = data_version(&self.conn)
            && version != self.data_version
            && version != self.woken_for
        {
            self.woken_for = version;
            self.own.wake();
        }
    }

    fn purge_expired(&mut self, settings: &Settings, limit: usize) -> StoreResult<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(settings.sql("beginning a purge"))?;
        settings.sessions.new_transaction();
        let (now, wall) = (settings.clock.now(), settings.wall.now());
        refuse_other_kernels(&tx, &settings.db, &settings.boot, now, wall)?;
        let deleted = purge(&tx, settings, now, limit)?;
        // Only expired rows go, which no renewal would take from the memory; forgotten all
        // the same, as this is rare.
        self.own_rows.forget_all();
        commit(
            tx,
            settings,
            &self.own,
            deleted > 0,
            (now, wall),
            "committing a purge",
        )?;
        Ok(deleted)
    }

    /// Runs one write operation in its own `BEGIN IMMEDIATE` transaction.
    fn write<T>(
        &mut self,
        settings: &Settings,
        begin: &'static str,
        f: impl FnOnce(
            &Transaction<'_>,
            &Settings,
            Timestamp,
            &mut Slot<'_>,
            &mut OwnRowsTx<'_>,
        ) -> OpResult<T>,
    ) -> lease_core::Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(settings.sql(begin))?;
        settings.sessions.new_transaction();
        // After BEGIN IMMEDIATE: see `SessionSlot::begin`. Dropped before `tx` on an early
        // return, which abandons a session created in this transaction.
        let mut slot: Slot<'_> = settings.sessions.begin();
        let (now, wall) = (settings.clock.now(), settings.wall.now());
        refuse_other_kernels(&tx, &settings.db, &settings.boot, now, wall)?;
        // Dropped on an early return too, which forgets every remembered row.
        let mut rows = self.own_rows.begin(own_rows_version(&tx, settings)?);
        let changes = tx.total_changes();
        let out = f(&tx, settings, now, &mut slot, &mut rows)?;
        if out.is_ok() && self.purges.due(settings, 1, now) {
            self.purges.purge(&tx, settings, now, &mut rows)?;
        }
        // A transaction that changed nothing (a refused claim) stays read-only: no fsync.
        let wrote = tx.total_changes() != changes;
        commit(tx, settings, &self.own, wrote, (now, wall), "committing")?;
        rows.committed();
        if let Some(slot) = slot {
            slot.committed();
        }
        out
    }

    /// Runs reads in one deferred transaction, so they see one snapshot.
    fn read<T>(
        &mut self,
        settings: &Settings,
        f: impl FnOnce(&Transaction<'_>, &Settings, Timestamp) -> StoreResult<T>,
    ) -> lease_core::Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(settings.sql("beginning a read"))?;
        settings.sessions.new_transaction();
        let now = settings.clock.now();
        refuse_other_kernels(&tx, &settings.db, &settings.boot, now, settings.wall.now())?;
        let out = f(&tx, settings, now)?;
        tx.commit().map_err(settings.sql("ending a read"))?;
        settings.db.still_the_opened_file()?;
        Ok(out)
    }

    pub(crate) fn apply_batch(
        &mut self,
        settings: &Settings,
        ops: &[Op],
    ) -> Vec<lease_core::Result<Outcome>> {
        self.apply_checked(settings, ops, batch_results::check(ops))
    }

    /// [`Conn::apply_batch`] of `ops` whose validation `results` holds
    /// ([`batch_results::check`]).
    pub(crate) fn apply_checked(
        &mut self,
        settings: &Settings,
        ops: &[Op],
        mut results: Checked,
    ) -> Vec<lease_core::Result<Outcome>> {
        if results.iter().all(Option::is_some) {
            return results.into_iter().flatten().collect();
        }
        if let Err(err) = self.apply_valid(settings, ops, &mut results) {
            batch_results::failed(&mut results, err);
        }
        batch_results::finish(results)
    }

    fn apply_valid(
        &mut self,
        settings: &Settings,
        ops: &[Op],
        results: &mut [Option<lease_core::Result<Outcome>>],
    ) -> StoreResult<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(settings.sql("beginning a batch"))?;
        settings.sessions.new_transaction();
        let mut session: Slot<'_> = settings.sessions.begin();
        let (now, wall) = (settings.clock.now(), settings.wall.now());
        refuse_other_kernels(&tx, &settings.db, &settings.boot, now, wall)?;
        // Dropped on an early return too, which forgets every remembered row.
        let mut rows = self.own_rows.begin(own_rows_version(&tx, settings)?);
        let changes = tx.total_changes();
        let mut wrote = 0;
        let batch = Batch::new(&tx);
        for (op, slot) in ops.iter().zip(results.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            let result = match op {
                Op::Claim { key, request } => {
                    claim(&tx, settings, now, key, request, &mut session, &mut rows)?
                        .map(Outcome::Claimed)
                }
                Op::Extend { key, request } => {
                    extend(&batch, settings, now, key, request, &mut session, &mut rows)?
                        .map(Outcome::Extended)
                }
                Op::Revoke { key, holder } => {
                    revoke(&tx, settings, now, key, holder, &mut rows)?.map(|()| Outcome::Revoked)
                }
            };
            if result.is_ok() {
                wrote += 1;
            }
            *slot = Some(result);
        }
        drop(batch);
        if self.purges.due(settings, wrote, now) {
            self.purges.purge(&tx, settings, now, &mut rows)?;
        }
        let wrote = tx.total_changes() != changes;
        commit(
            tx,
            settings,
            &self.own,
            wrote,
            (now, wall),
            "committing a batch",
        )?;
        rows.committed();
        if let Some(session) = session {
            session.committed();
        }
        Ok(())
    }
}

/// The connection's data version inside a write transaction, for [`OwnRows::begin`].
fn own_rows_version(tx: &Transaction<'_>, settings: &Settings) -> StoreResult<i64> {
    data_version(tx).map_err(settings.sql("reading the data version"))
}

/// Commits `tx`. When it `wrote`, first records the write ([`record_write`]) and tells `own`
/// the write counter's value it took, pending until the commit has ended, so the change
/// notifier does not report this commit as someone else's ([`crate::own_commits`]). Then
/// checks that the path still names the file the store opened
/// ([`DbFile::still_the_opened_file`](crate::error::DbFile::still_the_opened_file)): what a
/// transaction on a deleted or replaced file decided is no answer.
fn commit(
    tx: Transaction<'_>,
    settings: &Settings,
    own: &OwnCommits,
    wrote: bool,
    (now, wall): (Timestamp, Timestamp),
    action: &'static str,
) -> StoreResult<()> {
    let number = if wrote {
        record_write(&tx, &settings.db, settings.boot.seq, now, wall)?
    } else {
        None
    };
    if let Some(n) = number {
        own.committing(n);
    }
    // A failed commit has rolled back when `commit` returns (rusqlite's `Transaction` does it
    // as it is dropped): the number is free for the next writer.
    let committed = tx.commit().map_err(settings.sql(action));
    if let Some(n) = number {
        own.settled(n, committed.is_ok());
    }
    committed?;
    settings.db.still_the_opened_file()
}

/// Every pin, as [`Store::pinned`] returns them.
fn read_pins(
    tx: &Transaction<'_>,
    s: &Settings,
    _now: Timestamp,
) -> StoreResult<BTreeMap<Key, Vec<String>>> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT namespace, model, name, entity FROM pin \
             ORDER BY namespace, model, name, entity",
        )
        .map_err(s.sql("reading pins"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                Key::new(
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ),
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(s.sql("reading pins"))?;
    let mut out: BTreeMap<Key, Vec<String>> = BTreeMap::new();
    for row in rows {
        let (key, entity) = row.map_err(s.sql("reading pins"))?;
        out.entry(key).or_default().push(entity);
    }
    Ok(out)
}

#[async_trait]
impl Store for SqliteStore {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> lease_core::Result<Info> {
        key.validate()?;
        request.validate()?;
        let (key, request) = (key.clone(), request.clone());
        self.blocking(move |conn, settings| {
            conn.write(settings, "beginning a claim", |tx, s, now, slot, rows| {
                claim(tx, s, now, &key, &request, slot, rows)
            })
        })
        .await?
    }

    async fn extend_lease(&mut self, key: &Key, request: &Request) -> lease_core::Result<Info> {
        key.validate()?;
        request.validate()?;
        let (key, request) = (key.clone(), request.clone());
        self.blocking(move |conn, settings| {
            conn.write(
                settings,
                "beginning an extension",
                |tx, s, now, slot, rows| {
                    extend(&Batch::new(tx), s, now, &key, &request, slot, rows)
                },
            )
        })
        .await?
    }

    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> lease_core::Result<()> {
        key.validate()?;
        validate_string("holder", holder)?;
        let (key, holder) = (key.clone(), holder.to_owned());
        self.blocking(move |conn, settings| {
            conn.write(settings, "beginning a revoke", |tx, s, now, _, rows| {
                revoke(tx, s, now, &key, &holder, rows)
            })
        })
        .await?
    }

    async fn leases(&mut self, keys: &[Key]) -> lease_core::Result<BTreeMap<Key, Info>> {
        for key in keys {
            key.validate()?;
        }
        let keys = keys.to_vec();
        self.blocking(move |conn, settings| {
            conn.read(settings, |tx, s, now| {
                if keys.is_empty() {
                    snapshot_all(tx, s, now)
                } else {
                    snapshot_keys(tx, s, now, &keys)
                }
            })
        })
        .await?
    }

    async fn lease_group(
        &mut self,
        namespace: &str,
        model: &str,
    ) -> lease_core::Result<BTreeMap<Key, Info>> {
        validate_string("namespace", namespace)?;
        validate_string("model", model)?;
        let (namespace, model) = (namespace.to_owned(), model.to_owned());
        self.blocking(move |conn, settings| {
            conn.read(settings, |tx, s, now| {
                snapshot_group(tx, s, now, &namespace, &model)
            })
        })
        .await?
    }

    async fn pin_lease(&mut self, key: &Key, entity: &str) -> lease_core::Result<()> {
        key.validate()?;
        validate_string("entity", entity)?;
        let (key, entity) = (key.clone(), entity.to_owned());
        self.blocking(move |conn, settings| {
            conn.write(settings, "beginning a pin", |tx, s, _, _, rows| {
                rows.forget(&key);
                tx.prepare_cached(
                    "INSERT INTO pin (namespace, model, name, entity) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT DO NOTHING",
                )
                .and_then(|mut stmt| {
                    stmt.execute([&key.namespace, &key.model, &key.lease, &entity])
                })
                .map_err(s.sql("pinning a lease"))?;
                Ok(Ok(()))
            })
        })
        .await?
    }

    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> lease_core::Result<()> {
        key.validate()?;
        validate_string("entity", entity)?;
        let (key, entity) = (key.clone(), entity.to_owned());
        self.blocking(move |conn, settings| {
            conn.write(settings, "beginning an unpin", |tx, s, _, _, rows| {
                rows.forget(&key);
                tx.prepare_cached(
                    "DELETE FROM pin WHERE namespace = ?1 AND model = ?2 AND name = ?3 \
                     AND entity = ?4",
                )
                .and_then(|mut stmt| {
                    stmt.execute([&key.namespace, &key.model, &key.lease, &entity])
                })
                .map_err(s.sql("unpinning a lease"))?;
                Ok(Ok(()))
            })
        })
        .await?
    }

    /// Every pinned key, including absent leases whose pins wait for their next claimant.
    async fn pinned(&mut self) -> lease_core::Result<BTreeMap<Key, Vec<String>>> {
        self.blocking(|conn, settings| conn.read(settings, read_pins))
            .await?
    }

    /// The whole batch in one `BEGIN IMMEDIATE` transaction with one clock reading and one
    /// commit, in one blocking call. Ops that fail validation fail alone, before the
    /// transaction; if SQLite fails, the transaction is rolled back and every other op gets
    /// the error.
    async fn apply(&mut self, ops: Vec<Op>) -> Vec<lease_core::Result<Outcome>> {
        let count = ops.len();
        match self
            .blocking(move |conn, settings| conn.apply_batch(settings, &ops))
            .await
        {
            Ok(results) => results,
            // The blocking thread failed (a panic rolled the transaction back, or the runtime
            // is shutting down): nothing took effect, every op says so.
            Err(err) => batch_results::all_failed(count, err),
        }
    }

    /// Queues the batch on the store's apply thread (started at the first call), which
    /// applies started batches in order, each as [`Store::apply`] does, one straight after
    /// another. `Err(ops)` only when that thread cannot be started or has failed.
    fn start_apply(&mut self, ops: Vec<Op>) -> Result<StartedApply, Vec<Op>> {
        let thread = match &mut self.apply_thread {
            Some(thread) => thread,
            slot @ None => {
                let (conn, settings) = (Arc::clone(&self.conn), Arc::clone(&self.settings));
                let apply = move |ops: &[Op], checked: Checked| {
                    conn.blocking_lock().call(&settings, |conn, settings| {
                        conn.apply_checked(settings, ops, checked)
                    })
                };
                match ApplyThread::spawn(apply) {
                    Ok(thread) => slot.insert(thread),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot start the SQLite store's apply thread");
                        return Err(ops);
                    }
                }
            }
        };
        // Validated here, on the caller's thread, so that the apply thread spends its time on
        // the file (see `pipeline::Reply`).
        let checked = batch_results::check(&ops);
        thread.start(ops, checked)
    }

    /// `PRAGMA data_version`: true when another connection committed since the last poll (or
    /// since opening), or when the change notifier saw a holder session this store had found
    /// alive die (its leases are free now, with nothing written). This store's own writes do
    /// not count.
    async fn poll_changes(&mut self) -> lease_core::Result<bool> {
        let changed = self
            .blocking(|conn, settings| {
                let version =
                    data_version(&conn.conn).map_err(settings.sql("polling for changes"))?;
                // For a notifier that starts later (`OwnCommits::known_counter`).
                let counter =
                    write_counter(&conn.conn).map_err(settings.sql("polling for changes"))?;
                conn.own.saw_counter(counter);
                let deaths = settings.sessions.deaths();
                let changed = version != conn.data_version || deaths != conn.deaths;
                conn.data_version = version;
                conn.deaths = deaths;
                Ok::<_, SqliteStoreError>(changed)
            })
            .await??;
        Ok(changed)
    }

    /// A counter bumped within milliseconds of each commit to the file by another connection
    /// (of this process or another), so the manager re-polls at once instead of at its next
    /// refresh.
    ///
    /// The first call starts the notifier: a non-recursive watch (inotify on Linux) on the
    /// database's directory for writes to the file and its `-wal`, and a thread with a
    /// connection of its own, used only to read, that bumps the counter once the commit behind
    /// such a write is visible (`PRAGMA data_version` changed), so a
    /// [`poll_changes`](Store::poll_changes) right after a bump sees another connection's
    /// commit. Later calls return clones of the same receiver.
    ///
    /// It bumps too when a holder dies: every holder session of another process that this
    /// store has found alive (a refused claim, a snapshot) gets a thread blocked on a shared
    /// `flock` of the session's lock file, which the kernel grants when the holder's last
    /// process is gone; the thread then bumps the counter and ends, and the next
    /// [`poll_changes`](Store::poll_changes) says yes. No polling: the holder's death wakes
    /// its waiters within milliseconds. One thread per watched session, ended by that
    /// session's death (not by dropping the store). The store's own commits do not bump it
    /// (each takes a number of the file's write counter, which the notifier recognises); a
    /// change that took no number (a hand edit) does, at the latest by the store's next commit.
    /// Idle, it costs nothing; the watch and the thread end when the store is dropped, which
    /// closes the channel.
    ///
    /// `None`, after a `tracing` warning, when the notifier cannot start (no inotify instances
    /// or watches left, a file system without change notification): the manager then notices
    /// other processes' changes at its refresh polls only. The store itself is unaffected. The
    /// notifier's connection is opened on its thread, not here (this is called from async
    /// code); if that fails, the thread logs a warning and the channel closes, with the same
    /// fallback.
    fn change_notifier(&mut self) -> Option<tokio::sync::watch::Receiver<u64>> {
        if self.notifier.is_none() {
            match ChangeNotifier::start(
                &self.settings.db.path,
                self.settings.sessions.dir(),
                Arc::clone(&self.own),
            ) {
                Ok(notifier) => {
                    if let Some(watch) = notifier.death_watch() {
                        self.settings.sessions.set_death_watch(watch);
                    }
                    self.notifier = Some(notifier);
                }
                Err(error) => {
                    tracing::warn!(
                        path = %self.settings.db.path.display(),
                        %error,
                        "cannot watch the lease database for changes; other processes' \
                         changes will be noticed at refresh polls only"
                    );
                    return None;
                }
            }
        }
        self.notifier.as_ref().map(ChangeNotifier::receiver)
    }
}
