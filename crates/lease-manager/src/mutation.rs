//! Test-only defects for the deterministic simulator's mutation mode (`lease-sim --mutation`):
//! each re-introduces a defect the library once had, so the simulator can prove it finds it.
//!
//! Compiled in only with the `mutations` feature, which nothing but `lease-sim` enables; even
//! then every mutation is off until [`set`] turns one on for the calling thread (the simulator
//! runs each seed on one thread, so seeds on other threads are unaffected).

use std::cell::Cell;

/// A defect the simulator must find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// `LeaderElector::lock()` calls on one elector are not serialised, so two may both start
    /// a term.
    ConcurrentLock,
    /// A leader's renewal that claimed the lease anew (it had lapsed) continues the term under
    /// the new generation instead of ending it.
    GenerationAcrossTerms,
    /// The worker retries an extend whose outcome was ambiguous (or that was re-read) as a
    /// claim once its view no longer shows the holding valid, so a lapsed holding comes back
    /// under a new generation as though it had never ended.
    RetriedExtendClaims,
    /// `LeaderElector::lock()` does not wait for its own earlier term's revokes still in
    /// flight, so a late revoke can take away the lease the new term just won.
    RevokeRacingLock,
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
