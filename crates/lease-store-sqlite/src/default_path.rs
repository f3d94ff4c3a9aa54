//! The per-user default database: the one file every program of a user on a host meets in when
//! it names none (the `lease` command and the `lease` crate's builders).

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;

use crate::error::SqliteStoreError;

/// How the default database is chosen, for help texts.
pub const DEFAULT_DATABASE_RULE: &str =
    "$LEASE_DB, else $XDG_STATE_HOME/lease/leases.db, else ~/.local/state/lease/leases.db";

/// The database's path under the state directory.
const STATE_SUBPATH: &str = "lease/leases.db";

/// The default database, and where its path came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DefaultDatabase {
    /// The database file: always absolute, so every working directory means the same file.
    pub path: PathBuf,
    /// The variable it came from: `$LEASE_DB`, `$XDG_STATE_HOME` or `$HOME`.
    pub from: &'static str,
    /// Whether its directory is ours to create (mode 0700): the per-user state path is, a
    /// `$LEASE_DB` the user chose is not.
    pub create_dir: bool,
}

impl DefaultDatabase {
    /// The default database of this process's environment: `$LEASE_DB`, else
    /// `$XDG_STATE_HOME/lease/leases.db`, else `$HOME/.local/state/lease/leases.db`. Never the
    /// working directory: two programs started from different directories must meet in one
    /// database. Empty variables count as unset (as the XDG specification says).
    ///
    /// # Errors
    ///
    /// [`SqliteStoreError::NoDefaultDatabase`] naming the variable when the path it gives is
    /// not absolute, or when none of them is set.
    pub fn from_env() -> Result<DefaultDatabase, SqliteStoreError> {
        DefaultDatabase::from_vars(|name| std::env::var_os(name))
    }

    /// As [`DefaultDatabase::from_env`], with the environment given by `var` (for tests, which
    /// cannot change the process's own environment safely).
    ///
    /// # Errors
    ///
    /// As [`DefaultDatabase::from_env`].
    pub fn from_vars(
        var: impl Fn(&str) -> Option<OsString>,
    ) -> Result<DefaultDatabase, SqliteStoreError> {
        let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let absolute = |name: &str, path: PathBuf| {
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(SqliteStoreError::NoDefaultDatabase(format!(
                    "${name} is {:?}, not an absolute path: a relative one would name a \
                     different lease database in each working directory",
                    path.display().to_string()
                )))
            }
        };
        if let Some(path) = set("LEASE_DB") {
            return Ok(DefaultDatabase {
                path: absolute("LEASE_DB", path)?,
                from: "$LEASE_DB",
                create_dir: false,
            });
        }
        if let Some(state) = set("XDG_STATE_HOME") {
            return Ok(DefaultDatabase {
                path: absolute("XDG_STATE_HOME", state)?.join(STATE_SUBPATH),
                from: "$XDG_STATE_HOME",
                create_dir: true,
            });
        }
        if let Some(home) = set("HOME") {
            return Ok(DefaultDatabase {
                path: absolute("HOME", home)?
                    .join(".local/state")
                    .join(STATE_SUBPATH),
                from: "$HOME",
                create_dir: true,
            });
        }
        Err(SqliteStoreError::NoDefaultDatabase(
            "none of $LEASE_DB, $XDG_STATE_HOME and $HOME is set".to_owned(),
        ))
    }

    /// Creates the database's directory and any missing parent with mode 0700 when it is ours
    /// to create ([`DefaultDatabase::create_dir`]); existing directories are left as they are.
    /// The store creates the file itself 0600.
    ///
    /// # Errors
    ///
    /// [`SqliteStoreError::Io`] when a directory cannot be created.
    pub fn create_private_dir(&self) -> Result<(), SqliteStoreError> {
        let Some(dir) = self.path.parent().filter(|_| self.create_dir) else {
            return Ok(());
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| SqliteStoreError::Io {
                action: "creating the directory of the default lease database",
                path: dir.to_path_buf(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_default_database_never_depends_on_the_working_directory() {
        let db = |vars| DefaultDatabase::from_vars(env(vars)).unwrap();
        let d = db(&[("LEASE_DB", "/srv/l.db"), ("HOME", "/home/u")]);
        assert_eq!(
            (d.path, d.from, d.create_dir),
            ("/srv/l.db".into(), "$LEASE_DB", false)
        );
        let d = db(&[("XDG_STATE_HOME", "/s"), ("HOME", "/home/u")]);
        assert_eq!(
            (d.path, d.from),
            ("/s/lease/leases.db".into(), "$XDG_STATE_HOME")
        );
        let d = db(&[
            ("XDG_STATE_HOME", ""),
            ("LEASE_DB", ""),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            (d.path, d.from, d.create_dir),
            ("/home/u/.local/state/lease/leases.db".into(), "$HOME", true)
        );
    }

    #[test]
    fn an_unusable_default_names_the_variable() {
        let err = |vars| {
            DefaultDatabase::from_vars(env(vars))
                .unwrap_err()
                .to_string()
        };
        let e = err(&[("LEASE_DB", "rel.db")]);
        assert!(e.contains("$LEASE_DB") && e.contains("absolute"), "{e}");
        let e = err(&[("XDG_STATE_HOME", "state"), ("HOME", "/h")]);
        assert!(
            e.contains("$XDG_STATE_HOME") && e.contains("absolute"),
            "{e}"
        );
        let e = err(&[("HOME", "h")]);
        assert!(e.contains("$HOME"), "{e}");
        let e = err(&[]);
        assert!(e.contains("none of"), "{e}");
    }

    #[test]
    fn the_private_directory_is_created_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let db = DefaultDatabase {
            path: tmp.path().join("state/lease/leases.db"),
            from: "$XDG_STATE_HOME",
            create_dir: true,
        };
        db.create_private_dir().unwrap();
        let mode = std::fs::metadata(tmp.path().join("state/lease"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        db.create_private_dir().unwrap();
        let theirs = DefaultDatabase {
            path: tmp.path().join("elsewhere/leases.db"),
            from: "$LEASE_DB",
            create_dir: false,
        };
        theirs.create_private_dir().unwrap();
        assert!(!tmp.path().join("elsewhere").exists());
    }
}
