//! The default identity of a candidate, taken from the environment.

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
}
