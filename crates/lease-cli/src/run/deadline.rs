//! The kill deadline `lease run` shares with the shim, so that the shim can enforce the
//! lease's window on its own when `lease run` cannot: stopped (SIGSTOP, or Ctrl-Z, which
//! reaches `lease run` but not CMD's separate process group), or starved of CPU.
//!
//! The first deadline (the claim's) goes to the shim in its go message (see `run::tree`); later
//! ones, moved after each successful renewal, go through a file (`--deadline-file PATH`)
//! holding one instant, nanoseconds on `CLOCK_BOOTTIME` (shared by every process of the
//! host): when the command's tree must be SIGKILLed unless a renewal moved it. The file is
//! written beside and renamed over, so a reader never sees half of it, in a private directory
//! (0700) with an unpredictable name that `lease run` creates at the first renewal: a command
//! that ends before any renewal (most) costs no file at all. The shim reads the file whenever
//! the instant it knows has come (`crate::supervisor::deadline::read`), and kills the tree if
//! it has not moved; a file that is not there (no renewal yet) has not moved it.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use lease_core::Timestamp;

/// The deadline, as `lease run` shares it; removes its directory when dropped.
#[derive(Debug)]
pub(crate) struct DeadlineFile {
    first: Timestamp,
    dir: PathBuf,
    path: PathBuf,
    next: PathBuf,
    /// Whether this process created `dir` (at the first [`DeadlineFile::set`]).
    created: AtomicBool,
}

impl DeadlineFile {
    /// The deadline `first`, for the shim's go message, and the path of the file that will
    /// carry later ones, in a directory under `parent` (the temporary directory) that does
    /// not exist yet. No I/O.
    pub(crate) fn new(parent: &Path, first: Timestamp) -> DeadlineFile {
        // Unpredictable (fastrand's per-thread generator, seeded from std's randomly keyed
        // hasher), so that the directory's name cannot be guessed and taken first.
        let dir = parent.join(format!("lease-run-{:016x}", fastrand::u64(..)));
        DeadlineFile {
            first,
            path: dir.join("deadline"),
            next: dir.join("deadline.next"),
            dir,
            created: AtomicBool::new(false),
        }
    }

    /// The first deadline, for the shim's go message.
    pub(crate) fn first(&self) -> Timestamp {
        self.first
    }

    /// Sets the first deadline, known once the lease is claimed (the path is chosen before,
    /// as the shim starts before the claim).
    pub(crate) fn set_first(&mut self, first: Timestamp) {
        self.first = first;
    }

    /// The file's path, for the shim's `--deadline-file`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the deadline to `at`, creating the private directory the first time.
    ///
    /// # Errors
    ///
    /// When the file cannot be written, or the directory already existed (someone else's: it
    /// is not used), or cannot be created (the old deadline then stands: the safe side).
    pub(crate) fn set(&self, at: Timestamp) -> std::io::Result<()> {
        if !self.created.load(Ordering::SeqCst) {
            std::fs::DirBuilder::new().mode(0o700).create(&self.dir)?;
            self.created.store(true, Ordering::SeqCst);
        }
        std::fs::write(&self.next, format!("{}\n", at.as_nanos()))?;
        std::fs::rename(&self.next, &self.path)
    }
}

impl Drop for DeadlineFile {
    fn drop(&mut self) {
        if self.created.load(Ordering::SeqCst) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::deadline::read;

    #[test]
    fn the_deadline_is_written_at_the_first_move_and_removed_when_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let file = DeadlineFile::new(parent.path(), Timestamp::from_nanos(42));
        assert_eq!(file.first(), Timestamp::from_nanos(42));
        assert_eq!(read(file.path()), None, "no file before the first move");
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
        file.set(Timestamp::from_nanos(7_000_000_000)).unwrap();
        assert_eq!(
            read(file.path()),
            Some(Timestamp::from_nanos(7_000_000_000))
        );
        file.set(Timestamp::from_nanos(8_000_000_000)).unwrap();
        assert_eq!(
            read(file.path()),
            Some(Timestamp::from_nanos(8_000_000_000))
        );
        drop(file);
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_taken_first_is_not_used() {
        let parent = tempfile::tempdir().unwrap();
        let file = DeadlineFile::new(parent.path(), Timestamp::from_nanos(42));
        std::fs::create_dir(file.path().parent().unwrap()).unwrap();
        assert!(file.set(Timestamp::from_nanos(7)).is_err());
        assert_eq!(read(file.path()), None);
        drop(file);
        assert_eq!(
            std::fs::read_dir(parent.path()).unwrap().count(),
            1,
            "someone else's directory was removed"
        );
    }
}
