//! The kill deadline `lease run` shares with the shim through a file, so that the shim can
//! enforce the lease's window on its own when `lease run` cannot: stopped (SIGSTOP, or Ctrl-Z,
//! which reaches `lease run` but not CMD's separate process group), or starved of CPU.
//!
//! The file holds one instant, nanoseconds on `CLOCK_BOOTTIME` (shared by every process of the
//! host): when the command's tree must be SIGKILLed unless a renewal moved it. `lease run`
//! moves it after each successful renewal (written beside and renamed over, so a reader never
//! sees half of it); the shim re-reads it whenever the instant it knows has come, and kills
//! the tree if it has not moved (`crate::supervisor::deadline::read`).

use std::path::{Path, PathBuf};

use lease_core::Timestamp;

/// The deadline file, as `lease run` writes it.
#[derive(Debug)]
pub(crate) struct DeadlineFile {
    path: PathBuf,
    next: PathBuf,
}

impl DeadlineFile {
    /// Creates `dir/deadline` holding `at`.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub(crate) fn create(dir: &Path, at: Timestamp) -> std::io::Result<DeadlineFile> {
        let file = DeadlineFile {
            path: dir.join("deadline"),
            next: dir.join("deadline.next"),
        };
        file.set(at)?;
        Ok(file)
    }

    /// The file's path, for the shim.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the deadline to `at`.
    ///
    /// # Errors
    ///
    /// When the file cannot be written (the old deadline then stands: the safe side).
    pub(crate) fn set(&self, at: Timestamp) -> std::io::Result<()> {
        std::fs::write(&self.next, format!("{}\n", at.as_nanos()))?;
        std::fs::rename(&self.next, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::deadline::read;

    #[test]
    fn the_deadline_round_trips_and_moves() {
        let dir = tempfile::tempdir().unwrap();
        let file = DeadlineFile::create(dir.path(), Timestamp::from_nanos(42)).unwrap();
        assert_eq!(read(file.path()), Some(Timestamp::from_nanos(42)));
        file.set(Timestamp::from_nanos(7_000_000_000)).unwrap();
        assert_eq!(
            read(file.path()),
            Some(Timestamp::from_nanos(7_000_000_000))
        );
        assert_eq!(read(&dir.path().join("missing")), None);
    }
}
