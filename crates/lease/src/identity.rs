//! Defaults taken from the environment: who this candidate is, and where the SQLite file lives.

#[cfg(feature = "sqlite")]
use std::ffi::OsString;
#[cfg(feature = "sqlite")]
use std::path::PathBuf;

use crate::Error;

/// A valid lease name or holder from `raw`: the characters lease names refuse (whitespace and
/// `.#$`) become `_`. `None` when nothing is left.
pub(crate) fn sanitise(raw: &str) -> Option<String> {
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_whitespace() || ".#$".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// This host's name, as the kernel has it.
fn host_name() -> Option<String> {
    let uname = rustix::system::uname();
    let node = uname.nodename().to_string_lossy().into_owned();
    sanitise(node.split('.').next().unwrap_or_default())
}

/// The identity of a candidate on many hosts (Kubernetes): the pod name the downward API puts
/// in `POD_NAME`, else `<host>:<pid>`.
///
/// A pod name is unique among live pods, and one elector per pod and lease is the norm. Without
/// one, the process id is added: two processes on one host must never share an identity, or
/// each would take the other's claims for its own renewals.
pub(crate) fn for_many_hosts() -> Result<String, Error> {
    if let Some(pod) = std::env::var("POD_NAME").ok().as_deref().and_then(sanitise) {
        return Ok(pod);
    }
    for_one_host()
}

/// The identity of a candidate on one host (SQLite): `<host>:<pid>`, unique per process, as the
/// `lease` command's default holder.
pub(crate) fn for_one_host() -> Result<String, Error> {
    let host = host_name().ok_or(Error::NoIdentity)?;
    Ok(format!("{host}:{}", std::process::id()))
}

#[cfg(feature = "sqlite")]
/// The per-user default SQLite database: `$LEASE_DB`, else `$XDG_STATE_HOME/lease/leases.db`,
/// else `~/.local/state/lease/leases.db` (the `lease` command's default too, so `lease list`
/// shows what programs hold).
pub(crate) fn default_database() -> Result<PathBuf, Error> {
    database_from(|name| std::env::var_os(name))
}

#[cfg(feature = "sqlite")]
/// [`default_database`] with the environment passed in, so tests need not change the process's.
fn database_from(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, Error> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(path) = var("LEASE_DB") {
        return Ok(PathBuf::from(path));
    }
    if let Some(state) = var("XDG_STATE_HOME") {
        let state = PathBuf::from(state);
        if !state.is_absolute() {
            return Err(Error::NoDefaultPath(format!(
                "XDG_STATE_HOME ({}) is not an absolute path",
                state.display()
            )));
        }
        return Ok(state.join("lease").join("leases.db"));
    }
    match var("HOME") {
        Some(home) if PathBuf::from(&home).is_absolute() => Ok(PathBuf::from(home)
            .join(".local")
            .join("state")
            .join("lease")
            .join("leases.db")),
        Some(home) => Err(Error::NoDefaultPath(format!(
            "HOME ({}) is not an absolute path",
            PathBuf::from(home).display()
        ))),
        None => Err(Error::NoDefaultPath(
            "neither XDG_STATE_HOME nor HOME is set".to_owned(),
        )),
    }
}

#[cfg(feature = "sqlite")]
/// Creates the directories above the default database, readable by this user only (0700).
pub(crate) fn create_private_parent(path: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::NoDefaultPath(format!("cannot create {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_valid() {
        assert_eq!(
            sanitise("web-1.example.com").as_deref(),
            Some("web-1_example_com")
        );
        assert_eq!(sanitise(" a b#c$ ").as_deref(), Some("a_b_c_"));
        assert_eq!(sanitise("   "), None);
        assert_eq!(sanitise(""), None);
        let id = for_one_host().unwrap();
        assert!(id.ends_with(&format!(":{}", std::process::id())), "{id}");
        assert!(lease_core::validate_string("holder", &id).is_ok(), "{id}");
    }

    #[cfg(feature = "sqlite")]
    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn the_default_directory_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("state").join("lease").join("leases.db");
        create_private_parent(&db).unwrap();
        let mode = std::fs::metadata(db.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        create_private_parent(&db).unwrap();
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn the_default_database_is_per_user_never_the_working_directory() {
        let path = |pairs| database_from(env(pairs));
        assert_eq!(
            path(&[("LEASE_DB", "/srv/l.db"), ("HOME", "/home/u")]).unwrap(),
            PathBuf::from("/srv/l.db")
        );
        assert_eq!(
            path(&[("XDG_STATE_HOME", "/st"), ("HOME", "/home/u")]).unwrap(),
            PathBuf::from("/st/lease/leases.db")
        );
        assert_eq!(
            path(&[("XDG_STATE_HOME", ""), ("HOME", "/home/u")]).unwrap(),
            PathBuf::from("/home/u/.local/state/lease/leases.db")
        );
        let relative = path(&[("XDG_STATE_HOME", "state")]).unwrap_err();
        assert!(
            relative.to_string().contains("XDG_STATE_HOME"),
            "{relative}"
        );
        let relative = path(&[("HOME", "u")]).unwrap_err();
        assert!(relative.to_string().contains("HOME (u)"), "{relative}");
        let none = path(&[]).unwrap_err();
        assert!(none.to_string().contains("neither"), "{none}");
    }
}
