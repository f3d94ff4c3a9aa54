//! Test-only defects for the deterministic simulator's mutation mode (`lease-sim --mutation`):
//! each re-introduces a defect `lease run`'s supervisor once had, so the simulator can prove it
//! finds it.
//!
//! Compiled in only with the `mutations` feature, which nothing but `lease-sim` enables; even
//! then every mutation is off until [`set`] turns one on for the calling thread (the simulator
//! runs each seed on one thread, so seeds on other threads are unaffected).

use std::cell::Cell;

/// A defect the simulator must find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// The supervisor as it was: the lease counts as lost only when the window has ended
    /// (`S + ttl`), then SIGTERM, and SIGKILL `kill_after` later, with no margin before the
    /// window's end; the deadline shared with the shim is that late one too. A command that
    /// ignores SIGTERM runs on while the next holder's command runs.
    StopAfterExpiry,
}

thread_local! {
    static ON: Cell<Option<Mutation>> = const { Cell::new(None) };
}

/// Turns `mutation` on for this thread (`None`: all off).
pub fn set(mutation: Option<Mutation>) {
    ON.with(|on| on.set(mutation));
}

/// Whether `mutation` is on for this thread.
pub(crate) fn on(mutation: Mutation) -> bool {
    ON.with(|on| on.get() == Some(mutation))
}
