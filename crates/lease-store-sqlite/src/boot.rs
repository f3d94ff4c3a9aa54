//! The host's boot id: which boot of the machine the `CLOCK_BOOTTIME` instants belong to.

use std::path::{Path, PathBuf};

use crate::error::SqliteStoreError;

/// Where Linux publishes a random id chosen afresh at every boot.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Reads the host's boot id from [`BOOT_ID_PATH`].
///
/// # Errors
///
/// [`SqliteStoreError::BootId`] when the file cannot be read (systems other than Linux do not
/// have it: give the store a boot id with
/// [`SqliteStoreBuilder::boot_id`](crate::SqliteStoreBuilder::boot_id) there), and
/// [`SqliteStoreError::InvalidBootId`] when it is empty.
pub fn host_boot_id() -> Result<String, SqliteStoreError> {
    read_boot_id(Path::new(BOOT_ID_PATH))
}

fn read_boot_id(path: &Path) -> Result<String, SqliteStoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| SqliteStoreError::BootId {
        path: PathBuf::from(path),
        source,
    })?;
    check_boot_id(text.trim())
}

/// Accepts a boot id that is non-empty and has no whitespace.
pub(crate) fn check_boot_id(id: &str) -> Result<String, SqliteStoreError> {
    if id.is_empty() || id.chars().any(char::is_whitespace) {
        return Err(SqliteStoreError::InvalidBootId(id.to_owned()));
    }
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_host_has_a_stable_boot_id() {
        let a = host_boot_id().unwrap();
        let b = host_boot_id().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 36, "a UUID: {a}");
    }

    #[test]
    fn a_missing_boot_id_file_is_a_clear_error() {
        let err = read_boot_id(Path::new("/nonexistent/boot_id")).unwrap_err();
        assert!(matches!(err, SqliteStoreError::BootId { .. }));
        assert!(err.to_string().contains("/nonexistent/boot_id"), "{err}");
    }

    #[test]
    fn boot_ids_are_checked() {
        assert_eq!(check_boot_id("abc").unwrap(), "abc");
        assert!(check_boot_id("").is_err());
        assert!(check_boot_id("a b").is_err());
    }
}
