//! The command's errors and exit codes: every failure becomes one line on stderr
//! (`lease: error: …`) and one of the documented exit codes.

use std::error::Error as StdError;
use std::fmt;

/// The command succeeded (for `run`: the command's own status, when the lease was kept).
pub(crate) const EXIT_OK: u8 = 0;
/// The lease is held by someone else (or not held by the given holder), or a wait timed out
/// while it was still held.
pub(crate) const EXIT_HELD: u8 = 1;
// Defined with the shim, which exits with them too and is also built on its own.
pub(crate) use crate::supervisor::{EXIT_CANNOT_EXEC, EXIT_LOST, EXIT_STORE, EXIT_USAGE};

/// The exit codes, as `--help` shows them.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success (for `run`: the command's own exit status, 128+N if killed by signal N)
  1    the lease is held by someone else / not held by the given holder, or a wait timed out
  2    bad usage: unknown option or store, invalid name, bad duration, missing command
  3    `run`: the lease was lost while the command ran (it got SIGTERM, then SIGKILL)
  4    store error: unwritable or damaged database, unreachable or forbidden Kubernetes API
  126  `run`: the command was found but could not be executed (permission denied)
  127  `run`: the command could not be executed (not found)";

/// A failure of the command: what to print and how to exit.
#[derive(Debug)]
pub(crate) struct CliError {
    /// The exit code.
    pub(crate) code: u8,
    /// One line, without the `lease: error: ` prefix.
    pub(crate) message: String,
}

impl CliError {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn held(message: impl Into<String>) -> Self {
        Self::new(EXIT_HELD, message)
    }

    pub(crate) fn store(message: impl Into<String>) -> Self {
        Self::new(EXIT_STORE, message)
    }

    /// A lease error, with `what` describing the operation, classified into an exit code.
    pub(crate) fn lease(what: &str, err: &lease_core::Error) -> Self {
        use lease_core::ErrorKind as K;
        let code = match err.kind() {
            K::Validation => EXIT_USAGE,
            K::Held | K::ClaimDenied | K::NotHeld | K::Invalid => EXIT_HELD,
            _ => EXIT_STORE,
        };
        let text = chain(err);
        let message = if what.is_empty() {
            text
        } else {
            format!("{what}: {text}")
        };
        Self::new(code, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error and its sources on one line, skipping sources whose text is already included.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    // One line, whatever the sources said.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl From<lease_store_sqlite::SqliteStoreError> for CliError {
    fn from(err: lease_store_sqlite::SqliteStoreError) -> Self {
        CliError::store(chain(&err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_errors_map_to_exit_codes() {
        let e = CliError::lease("claim", &lease_core::Error::Held);
        assert_eq!(e.code, EXIT_HELD);
        assert_eq!(e.message, "claim: lease already held");
        let e = CliError::lease("", &lease_core::Error::validation("lease", "a b", "bad"));
        assert_eq!(e.code, EXIT_USAGE);
        let e = CliError::lease("x", &lease_core::Error::Timeout.context("extending"));
        assert_eq!(e.code, EXIT_STORE);
        assert_eq!(e.message, "x: extending: lease operation timed out");
    }
}
