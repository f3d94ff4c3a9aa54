//! External change to the holder sessions' files under a live holder: the sessions directory
//! (`<db>-sessions/`) deleted, a session file deleted, replaced (by an empty file, by an
//! editor's save-by-rename, by a directory, by a symbolic link) or edited in place. The rule
//! (`session.rs`): a session is dead only when its own lock file is provably unlocked; when
//! the file is missing or is not the session's (replaced), the lease is judged by its expiry
//! alone. So in every case another store cannot take the live lease early, the holder keeps
//! extending it, nothing panics, and the lease is free once it expires. The directory replaced
//! by a plain file fails new sessions with an error naming it, and frees nothing early.
//!
//! Two stores with sessions of their own ([`SessionScope::Store`]) on one file play two
//! processes; `flock` conflicts between open file descriptions, so they see each other's
//! locks as two processes would. Time is a fake clock shared by both.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Error, Key, Request, Store};
use lease_store_sqlite::{SessionScope, SqliteStore};
use lease_testkit::FakeClock;

const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
enum Change {
    DeleteDirectory,
    DeleteFile,
    ReplaceWithEmptyFile,
    /// An editor's save: a copy with the same content written beside it and renamed over it.
    ReplaceByRename,
    ReplaceWithDirectory,
    /// A symbolic link to an unlocked file.
    ReplaceWithSymlink,
    /// Content overwritten through the same file (the lock stays on it).
    EditInPlace,
}

fn key() -> Key {
    Key::new("ns", "model", "job")
}

fn sessions_dir(db: &Path) -> PathBuf {
    let mut dir = db.as_os_str().to_owned();
    dir.push("-sessions");
    PathBuf::from(dir)
}

/// The only session file in `db`'s sessions directory.
fn only_session_file(db: &Path) -> PathBuf {
    let files: Vec<PathBuf> = fs::read_dir(sessions_dir(db))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one session so far: {files:?}");
    files.into_iter().next().unwrap()
}

fn apply(change: Change, db: &Path, scratch: &Path) {
    let dir = sessions_dir(db);
    let file = only_session_file(db);
    match change {
        Change::DeleteDirectory => fs::remove_dir_all(&dir).unwrap(),
        Change::DeleteFile => fs::remove_file(&file).unwrap(),
        Change::ReplaceWithEmptyFile => {
            fs::remove_file(&file).unwrap();
            fs::write(&file, b"").unwrap();
        }
        Change::ReplaceByRename => {
            let copy = dir.join("edited.tmp");
            fs::copy(&file, &copy).unwrap();
            fs::rename(&copy, &file).unwrap();
        }
        Change::ReplaceWithDirectory => {
            fs::remove_file(&file).unwrap();
            fs::create_dir(&file).unwrap();
        }
        Change::ReplaceWithSymlink => {
            let target = scratch.join("elsewhere");
            fs::write(&target, b"unlocked").unwrap();
            fs::remove_file(&file).unwrap();
            symlink(&target, &file).unwrap();
        }
        Change::EditInPlace => fs::write(&file, b"edited by hand\n").unwrap(),
    }
}

fn open(db: &Path, clock: &Arc<FakeClock>) -> SqliteStore {
    SqliteStore::builder(db)
        .clock(clock.clone())
        .session_scope(SessionScope::Store)
        .open()
        .unwrap()
}

async fn assert_held_by_holder(store: &mut SqliteStore, change: Change, when: &str) {
    match store
        .claim_lease(&key(), &Request::new("intruder", TTL))
        .await
    {
        Err(Error::Held) => {}
        other => panic!("{change:?}, {when}: a live holder's lease was claimed early: {other:?}"),
    }
    let leases = store.leases(&[key()]).await.unwrap();
    assert_eq!(
        leases.get(&key()).map(|i| i.holder.as_str()),
        Some("holder"),
        "{change:?}, {when}"
    );
}

async fn live_holder_survives(change: Change) {
    let scratch = tempfile::tempdir().unwrap();
    let db = scratch.path().canonicalize().unwrap().join("leases.db");
    let clock = Arc::new(FakeClock::new());
    let mut holder = open(&db, &clock);
    let request = Request::new("holder", TTL);
    let claimed = holder.claim_lease(&key(), &request).await.unwrap();
    apply(change, &db, scratch.path());

    // Another "process", whose first claim also creates (and sweeps for) a session of its own.
    let mut other = open(&db, &clock);
    let mut own = Key::new("ns", "model", "other's");
    other
        .claim_lease(&own, &Request::new("intruder", TTL))
        .await
        .unwrap();
    assert_held_by_holder(&mut other, change, "after the change").await;

    // The holder acts on: it extends, and it is still not freed early.
    clock.advance(TTL / 2);
    let extended = holder.extend_lease(&key(), &request).await.unwrap();
    assert_eq!(extended.generation, claimed.generation, "{change:?}");
    let mut third = open(&db, &clock);
    assert_held_by_holder(&mut third, change, "after an extend").await;
    assert_held_by_holder(&mut other, change, "after an extend, again").await;

    // Its death can no longer be seen through the changed file: the lease frees at its expiry
    // (never earlier), and then it is free.
    drop(holder);
    if !matches!(change, Change::EditInPlace) {
        // (Edited in place, the file is still the session's lock: its death may be seen.)
        assert_held_by_holder(&mut other, change, "after the holder's death").await;
    }
    clock.advance(TTL);
    let taken = other
        .claim_lease(&key(), &Request::new("intruder", TTL))
        .await
        .unwrap_or_else(|e| panic!("{change:?}: not free at its expiry: {e}"));
    assert!(taken.generation > claimed.generation, "{change:?}");
    own = Key::new("ns", "model", "after");
    third
        .claim_lease(&own, &Request::new("third", TTL))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_live_holder_keeps_its_lease_with_the_sessions_directory_deleted() {
    live_holder_survives(Change::DeleteDirectory).await;
}

#[tokio::test]
async fn a_live_holder_keeps_its_lease_with_its_session_file_deleted() {
    live_holder_survives(Change::DeleteFile).await;
}

#[tokio::test]
async fn a_live_holder_keeps_its_lease_with_its_session_file_replaced_by_an_empty_file() {
    live_holder_survives(Change::ReplaceWithEmptyFile).await;
}

#[tokio::test]
async fn a_live_holder_keeps_its_lease_with_its_session_file_replaced_by_an_editors_save() {
    live_holder_survives(Change::ReplaceByRename).await;
}

#[tokio::test]
async fn a_live_holder_keeps_its_lease_with_its_session_file_replaced_by_a_directory() {
    live_holder_survives(Change::ReplaceWithDirectory).await;
}

#[tokio::test]
async fn a_live_holder_keeps_its_lease_with_its_session_file_replaced_by_a_symlink() {
    live_holder_survives(Change::ReplaceWithSymlink).await;
}

#[tokio::test]
async fn a_live_holder_keeps_its_lease_with_its_session_file_edited_in_place() {
    live_holder_survives(Change::EditInPlace).await;
}

/// The sessions directory replaced by a plain file: another process cannot create a session,
/// so its claims fail with an error naming the path (never a panic, never an early free); the
/// holder, whose session exists already, keeps extending; its lease frees at its expiry.
#[tokio::test]
async fn a_sessions_directory_replaced_by_a_file_fails_new_sessions_with_an_error() {
    let scratch = tempfile::tempdir().unwrap();
    let db = scratch.path().canonicalize().unwrap().join("leases.db");
    let clock = Arc::new(FakeClock::new());
    let mut holder = open(&db, &clock);
    let request = Request::new("holder", TTL);
    holder.claim_lease(&key(), &request).await.unwrap();
    let dir = sessions_dir(&db);
    fs::remove_dir_all(&dir).unwrap();
    fs::write(&dir, b"not a directory").unwrap();

    let mut other = open(&db, &clock);
    let intruder = Request::new("intruder", TTL);
    match other.claim_lease(&key(), &intruder).await {
        Err(Error::Held) => {}
        other => panic!("a live holder's lease: {other:?}"),
    }
    let err = other
        .claim_lease(&Key::new("ns", "model", "free"), &intruder)
        .await
        .expect_err("no session can be created");
    assert!(
        err.to_string().contains("sessions"),
        "the error names the sessions directory: {err}"
    );
    clock.advance(TTL / 2);
    holder.extend_lease(&key(), &request).await.unwrap();
    clock.advance(TTL);
    // Expired: free, though the claimant still cannot record a session for it.
    let leases = other.leases(&[key()]).await.unwrap();
    assert!(leases.is_empty(), "{leases:?}");
    fs::remove_file(&dir).unwrap();
    other.claim_lease(&key(), &intruder).await.unwrap();
}
