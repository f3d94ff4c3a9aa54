//! Where a database's companion files are: the directory holding it (where SQLite keeps its
//! `-wal` and `-shm` files, and which the change notifier watches), and the holder sessions'
//! lock files (see [`crate::session`]).

use std::fs;
use std::path::{Path, PathBuf};

/// The directory holding `path`; `.` for a bare file name.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The directory of the session files of the database at `path`: `<path>-sessions`, with the
/// path made canonical (symbolic links resolved) so every opener names the same directory.
pub(crate) fn sessions_dir(path: &Path) -> PathBuf {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut name = path.into_os_string();
    name.push("-sessions");
    PathBuf::from(name)
}

/// The lock file of session `seq` in the sessions directory `dir`.
pub(crate) fn session_file(dir: &Path, seq: i64) -> PathBuf {
    dir.join(seq.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_a_bare_name_is_the_current_directory() {
        assert_eq!(parent_dir(Path::new("leases.db")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/a/b.db")), Path::new("/a"));
    }
}
