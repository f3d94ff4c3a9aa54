//! The decisions of `lease run`'s supervisor, apart from threads, clocks and signals, so that
//! the deterministic simulator can drive the very code `lease run` runs.
//!
//! - [`Timing`]: the window a claim or renewal guarantees, when the lease counts as lost and
//!   when the command's tree is killed, and the checks that refuse settings that cannot fit.
//! - [`Supervisor`]: the state machine. It hears the clock's reading with every [`Event`] (a
//!   renewal that started at `S` succeeded, a renewal was refused, the tree is gone, or only
//!   that time passed) and answers with [`Effect`]s: SIGTERM to the command's group, SIGKILL
//!   to its tree, the kill deadline shared with the shim moved, when to be woken next, and the
//!   verdict once the tree is gone.
//!
//! The machine reads no clock, starts no thread and sends no signal: whoever drives it does
//! (`lease run`'s watchdog thread on the host's monotonic clock; `lease-sim` on simulated
//! clocks). Its invariant: SIGKILL is asked for no later than `S + ttl - margin`, `S` the start
//! of the last successful claim or renewal, provided the driver calls it at the instants it asks
//! to be woken at.

#![forbid(unsafe_code)]

#[cfg(feature = "mutations")]
pub mod mutation;
mod supervisor;
mod timing;

pub use supervisor::{Effect, Event, Loss, Supervisor};
pub use timing::{DEFAULT_KILL_AFTER, MAX_TTL, MIN_TTL, Timing, TimingError};

/// Whether the simulator switched on the defect of `lease run` stopping the command only
/// after expiry (always false without the `mutations` feature).
fn stops_after_expiry() -> bool {
    #[cfg(feature = "mutations")]
    {
        mutation::on(mutation::Mutation::StopAfterExpiry)
    }
    #[cfg(not(feature = "mutations"))]
    {
        false
    }
}
