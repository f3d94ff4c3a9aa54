//! Reading the kill deadline `lease run` shares with the shim (see `run::deadline`, which
//! writes it): one instant, nanoseconds on `CLOCK_BOOTTIME`, as decimal text.

use std::path::Path;

use lease_core::Timestamp;

/// Reads the deadline at `path`; `None` when it cannot be read.
pub(crate) fn read(path: &Path) -> Option<Timestamp> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().map(Timestamp::from_nanos)
}
