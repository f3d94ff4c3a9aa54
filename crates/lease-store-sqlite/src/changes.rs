//! The change notifier behind [`SqliteStore::change_notifier`](crate::SqliteStore): a
//! file-system watch (inotify on the database's directory, [`crate::inotify`]), confirmed
//! against `PRAGMA data_version` on a connection of its own, by one thread.
//!
//! # Why confirm
//!
//! A commit in WAL mode first appends its frames to the `-wal` file (the writes the watch
//! sees), then syncs them, and only then publishes them in the shared-memory index (`-shm`,
//! written through `mmap`, which no watch sees). A reader woken by the first write would
//! usually look before the commit is visible, find nothing, and hear nothing more: the change
//! would wait for the next poll. So the notifier's thread, woken by a write to the database or
//! its `-wal`, reads `PRAGMA data_version` on its own connection, again and again with a
//! growing pause, until it changes (then it bumps the counter) or [`CONFIRM_WINDOW`] passes
//! without a change (a checkpoint copying pages into the main file, say; nothing to report).
//! A bump therefore means a commit is visible to every new read, so the store's
//! [`poll_changes`](lease_core::Store::poll_changes) right after it sees the change.
//!
//! # Not for the store's own commits
//!
//! The notifier's connection sees the store's own commits as changes too, and a busy manager
//! commits hundreds of times a second: waking it for each, to have its `poll_changes` say "no
//! change", cost a tenth of its CPU. So a change is reported only when it is not made of the
//! store's own commits alone, told by the write counter each commit takes
//! ([`crate::own_commits`]). The manager's re-reads write nothing, so they wake no one either.
//!
//! # Deaths
//!
//! A holder's death changes nothing in the file (its leases simply become free, see
//! [`crate::session`]), so no file event reports it. The [`DeathWatch`] does: the store hands it
//! every live holder session of another process that it meets (a refused claim, a snapshot),
//! and a thread per session blocks on a shared `flock` of the session's lock file, which the
//! kernel grants once the holder's last process is gone. The counter is then bumped and the
//! store's `poll_changes` says yes once. No polling, and the wake-up comes within
//! milliseconds of the death.
//!
//! # Never on the runtime
//!
//! [`ChangeNotifier::start`] is called from async code, so it makes no SQLite call: it sets up
//! the watch (a few system calls) and starts the thread, which opens its connection and reads
//! the baseline itself.
//!
//! # Cost
//!
//! Idle, nothing: the thread blocks on the inotify queue. After each commit (anyone's): a few
//! `data_version` reads and one read of the write counter, microseconds each. While commits
//! keep coming the thread does not wait on the queue between two looks, so the many writes of
//! each commit wake no one (see [`crate::inotify`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::watch;

use crate::inotify::{DirWatch, Stopper, Wake};
use crate::own_commits::{OwnCommits, Verdict};
use crate::paths::session_file;

/// How long after a file event the notifier keeps looking for a new commit to become visible
/// (measured from the latest event). A commit whose sync takes longer is left to the poll.
pub(crate) const CONFIRM_WINDOW: Duration = Duration::from_secs(1);

/// The first pause between two looks; each next one is twice as long, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_micros(250);

/// The longest pause between two looks.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// The least time between two looks after one that found only the store's own commits: how
/// much later another connection's commit may be seen while the store keeps writing.
const OWN_PAUSE: Duration = Duration::from_millis(1);

/// How long the notifier's connection waits for a lock (it only ever reads).
const BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// Why the notifier could not start.
pub(crate) type StartError = Box<dyn std::error::Error + Send + Sync>;

/// A running notifier. Dropping it stops the watch; its thread then ends and closes the
/// channel, which tells receivers to fall back to polling.
pub(crate) struct ChangeNotifier {
    rx: watch::Receiver<u64>,
    /// Kept for its `Drop`, which stops the thread.
    _stopper: Stopper,
    /// Waits for holder sessions' deaths, when the store is death-aware.
    deaths: Option<Arc<DeathWatch>>,
}

/// Waits for the death of holder sessions (see [`crate::session`]): one thread per watched
/// session, blocked on a shared `flock` of its lock file, which the kernel grants once no
/// process holds the session's exclusive lock any more. The shared lock is released at once
/// (a shared lock never makes a session look alive to a probe, which also asks for a shared
/// one). Then the count of deaths goes up and the change counter is bumped.
pub(crate) struct DeathWatch {
    dir: PathBuf,
    /// Weak: the channel closes when the notifier ends, whatever threads still wait.
    sender: Weak<watch::Sender<u64>>,
    watched: Mutex<HashSet<i64>>,
    deaths: AtomicU64,
}

impl DeathWatch {
    /// How many watched sessions have died so far.
    pub(crate) fn deaths(&self) -> u64 {
        self.deaths.load(Ordering::Acquire)
    }

    /// Starts waiting for session `seq`'s death, unless already waiting. The file is opened
    /// here, so a session that is removed right after still has its wait.
    pub(crate) fn watch(self: &Arc<Self>, seq: i64) {
        {
            let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
            if !watched.insert(seq) {
                return;
            }
        }
        let forget = move |watch: &DeathWatch| {
            watch
                .watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&seq);
        };
        let Ok(file) = std::fs::File::open(session_file(&self.dir, seq)) else {
            forget(self);
            return;
        };
        let this = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("lease-sqlite-death".to_owned())
            .spawn(move || {
                let locked = rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared);
                drop(file);
                if locked.is_ok() {
                    this.deaths.fetch_add(1, Ordering::AcqRel);
                    if let Some(sender) = this.sender.upgrade() {
                        sender.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
                forget(&this);
            });
        if spawned.is_err() {
            forget(self);
        }
    }
}

impl ChangeNotifier {
    /// Watches the directory of the database at `path` and starts the confirming thread.
    ///
    /// # Errors
    ///
    /// When the watch cannot be set up (no inotify instances or watches left, a file system
    /// that does not support it) or the thread cannot be started. When the notifier's
    /// connection cannot be opened or read, the thread logs a warning and ends, closing the
    /// channel: receivers then fall back to polling, as when the notifier ends.
    pub(crate) fn start(
        path: &Path,
        sessions_dir: Option<&Path>,
        own: Arc<OwnCommits>,
    ) -> Result<ChangeNotifier, StartError> {
        Self::start_with(path, sessions_dir, own, || {})
    }

    /// [`ChangeNotifier::start`], running `before_baseline` on the notifier's thread before it
    /// reads its baseline (tests stage a commit there).
    fn start_with(
        path: &Path,
        sessions_dir: Option<&Path>,
        own: Arc<OwnCommits>,
        before_baseline: impl FnOnce() + Send + 'static,
    ) -> Result<ChangeNotifier, StartError> {
        let (mut dir_watch, stopper) = DirWatch::new(path)?;

        // The notifier's connection is opened, and its baseline read, on its own thread:
        // `change_notifier` is called from async code, and SQLite may block (up to
        // `BUSY_TIMEOUT` on a lock). The baseline is read after the watch is in place, so a
        // commit made after it is followed by an event (kept in the kernel's queue until the
        // thread reads it); if it is in the baseline too, [`first_look`] has that event judge
        // it.
        let (tx, rx) = watch::channel(0_u64);
        let tx = Arc::new(tx);
        own.set_counter(Arc::downgrade(&tx));
        let deaths = sessions_dir.map(|dir| {
            Arc::new(DeathWatch {
                dir: dir.to_path_buf(),
                sender: Arc::downgrade(&tx),
                watched: Mutex::default(),
                deaths: AtomicU64::new(0),
            })
        });
        // What the store knows now, when its notifier is asked for: every commit past it is
        // reported (or judged the store's own), though the store's polls may learn of one
        // before the thread reads its baseline.
        let known = own.known_counter();
        let path = path.to_owned();
        thread::Builder::new()
            .name("lease-sqlite-notify".to_owned())
            .spawn(move || {
                // Recorded from now on: a commit of ours after the baseline is known as ours.
                own.set_watched(true);
                before_baseline();
                match open_baseline(&path) {
                    Ok((conn, seen)) => {
                        let seen = first_look(seen, known);
                        confirm(&conn, seen, &own, &mut dir_watch, &tx);
                    }
                    // Ending drops `tx`, closing the channel: receivers fall back to polling.
                    Err(error) => tracing::warn!(
                        path = %path.display(),
                        %error,
                        "cannot read the lease database for change notification; other \
                         processes' changes will be noticed at refresh polls only"
                    ),
                }
                own.set_watched(false);
            })?;
        Ok(ChangeNotifier {
            rx,
            _stopper: stopper,
            deaths,
        })
    }

    /// The death watch, when the store is death-aware.
    pub(crate) fn death_watch(&self) -> Option<Arc<DeathWatch>> {
        self.deaths.clone()
    }

    /// A receiver of the counter, bumped once per confirmed change.
    pub(crate) fn receiver(&self) -> watch::Receiver<u64> {
        self.rx.clone()
    }
}

/// What the notifier last saw of the file: its data version, and the highest write counter
/// (`boot.last_tx`) in the same snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    version: i64,
    counter: i64,
}

/// The notifier's read-only connection to the database at `path`, and what it sees.
fn open_baseline(path: &Path) -> rusqlite::Result<(Connection, Seen)> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", true)?;
    let seen = look(&conn)?;
    Ok((conn, seen))
}

/// `PRAGMA data_version`: changed by every commit of another connection.
pub(crate) fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))
}

/// The file's write counter: the highest `boot.last_tx` (see [`crate::own_commits`]).
pub(crate) fn write_counter(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT coalesce(max(last_tx), 0) FROM boot")?
        .query_row([], |row| row.get(0))
}

/// The data version and the highest write counter, in one snapshot (one read transaction).
fn look(conn: &Connection) -> rusqlite::Result<Seen> {
    let read = conn.unchecked_transaction()?;
    let counter = write_counter(&read)?;
    let version = data_version(&read)?;
    read.commit()?;
    Ok(Seen { version, counter })
}

/// What a starting notifier takes as its last look, given its `baseline` and the write counter
/// the store knew when the notifier was started (`known`, [`OwnCommits::known_counter`]), not
/// when its thread read the baseline (a poll between the two may have learnt of a commit the
/// notifier's receiver must still hear of): when other commits may hide in
/// the baseline, the store's counter, and a data version no look returns, so the first event
/// has the numbers since judged.
fn first_look(baseline: Seen, known: i64) -> Seen {
    if baseline.counter > known {
        Seen {
            version: i64::MIN,
            counter: known,
        }
    } else {
        baseline
    }
}

/// The thread: on each relevant write, look for a new commit until one is visible or the
/// window passes; report it unless it was the store's own ([`OwnCommits::judge`]); end when
/// the watch stops.
fn confirm(
    conn: &Connection,
    mut seen: Seen,
    own: &OwnCommits,
    watch: &mut DirWatch,
    tx: &watch::Sender<u64>,
) {
    loop {
        match watch.wait(None) {
            Wake::Stop => return,
            Wake::Quiet => continue,
            Wake::Written => {}
        }
        let mut deadline = Instant::now() + CONFIRM_WINDOW;
        // The least time between two looks: FIRST_PAUSE, or OWN_PAUSE while the store's own
        // commits keep coming (each brings many file events).
        let mut floor = FIRST_PAUSE;
        let mut pause = floor;
        loop {
            // An error (a lock held through the busy timeout) is a look that saw nothing. The
            // cheap version check first; the counter only once something changed.
            if let Ok(version) = data_version(conn)
                && version != seen.version
                && let Ok(now_seen) = look(conn)
            {
                let verdict = own.judge(seen.counter, now_seen.counter);
                // Unsettled until the window ends: report then rather than risk a silence.
                if verdict != Verdict::Unsettled || Instant::now() >= deadline {
                    seen = now_seen;
                    if verdict == Verdict::Own {
                        own.check_others();
                        floor = OWN_PAUSE;
                    } else {
                        tx.send_modify(|n| *n = n.wrapping_add(1));
                        floor = FIRST_PAUSE;
                    }
                    // No break: keep looking until the window passes. The file event of
                    // another commit may have come (and been read) before this look, while
                    // that commit became visible only after it.
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Not waiting on the watch for the least pause: the writes made meanwhile wait in
            // the kernel's queue, merged into one event, and wake no one.
            thread::sleep(floor.min(deadline - now));
            match watch.wait(Some(pause.saturating_sub(floor))) {
                Wake::Stop => return,
                // Another write: perhaps another commit on its way; look now, and for a full
                // window again.
                Wake::Written => {
                    deadline = Instant::now() + CONFIRM_WINDOW;
                    pause = floor;
                }
                Wake::Quiet => pause = (pause * 2).min(MAX_PAUSE),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far longer than a notification takes; only a lost one reaches it.
    const HANG: Duration = Duration::from_secs(5);

    /// A lease database (made by a store, then closed) in a temporary directory.
    fn database() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.db");
        drop(crate::SqliteStore::builder(&path).open().unwrap());
        (dir, path)
    }

    /// The file's write counter, read on a connection of its own.
    fn counter(path: &Path) -> i64 {
        write_counter(&Connection::open(path).unwrap()).unwrap()
    }

    /// A commit that takes the next write-counter number, as any store's write does.
    fn numbered_commit(path: &Path) {
        Connection::open(path)
            .unwrap()
            .execute_batch(
                "BEGIN IMMEDIATE;
                 UPDATE boot SET last_tx = (SELECT max(last_tx) FROM boot) + 1
                     WHERE seq = (SELECT min(seq) FROM boot);
                 COMMIT;",
            )
            .unwrap();
    }

    /// Whether `rx` is bumped within `limit`.
    fn bumped_within(rx: &mut watch::Receiver<u64>, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if rx.has_changed().unwrap_or(false) {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Another connection's commit made after `change_notifier` returned but before the
    /// notifier's thread read its baseline is in that baseline, with only its file event left:
    /// it is reported all the same. (It was lost before: the notifier compared the event's look
    /// with a baseline that already held the commit.)
    #[test]
    fn a_commit_made_while_the_notifier_starts_is_reported() {
        let (_dir, path) = database();
        let own = Arc::new(OwnCommits::default());
        own.saw_counter(counter(&path));
        let writer = path.clone();
        let notifier =
            ChangeNotifier::start_with(&path, None, own, move || numbered_commit(&writer)).unwrap();
        let mut rx = notifier.receiver();
        assert!(
            bumped_within(&mut rx, HANG),
            "a commit made while the notifier started was never reported"
        );
    }

    /// The same, when the store's poll saw that commit before the notifier's thread read its
    /// baseline (the poll raised the counter the store knows past it): still reported. The
    /// notifier was asked for before the commit, so its receiver must hear of it. (It was lost
    /// before: the thread judged its baseline against the counter known when it read it,
    /// which already held the commit; the conformance case `sibling_change_is_reported`
    /// failed so, once, under load.)
    #[test]
    fn a_commit_polled_while_the_notifier_starts_is_reported() {
        let (_dir, path) = database();
        let own = Arc::new(OwnCommits::default());
        own.saw_counter(counter(&path));
        let (writer, store) = (path.clone(), Arc::clone(&own));
        let notifier = ChangeNotifier::start_with(&path, None, own, move || {
            numbered_commit(&writer);
            store.saw_counter(counter(&writer));
        })
        .unwrap();
        let mut rx = notifier.receiver();
        assert!(
            bumped_within(&mut rx, HANG),
            "a commit the store polled while the notifier started was never reported"
        );
    }

    /// The store's own commit made at the same moment is judged as its own: no report.
    #[test]
    fn the_stores_own_commit_while_the_notifier_starts_is_not_reported() {
        let (_dir, path) = database();
        let own = Arc::new(OwnCommits::default());
        let before = counter(&path);
        own.saw_counter(before);
        let (writer, ours) = (path.clone(), Arc::clone(&own));
        let notifier = ChangeNotifier::start_with(&path, None, own, move || {
            ours.committing(before + 1);
            numbered_commit(&writer);
            ours.settled(before + 1, true);
        })
        .unwrap();
        let mut rx = notifier.receiver();
        assert!(
            !bumped_within(&mut rx, Duration::from_millis(300)),
            "the store's own commit was reported as a change"
        );
    }
}
