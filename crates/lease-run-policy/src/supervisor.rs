//! The supervisor's state machine: what `lease run`'s watchdog does, as a function of what it
//! hears and of the clock's reading, with nothing of its own but state.

use lease_core::Timestamp;

use crate::timing::Timing;

/// What the supervisor hears, each with the clock's reading `now` (see
/// [`Supervisor::handle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Only time passed (the wake-up the machine asked for, or any other).
    Tick,
    /// A renewal that started at this instant succeeded.
    Renewed(Timestamp),
    /// The store refused a renewal (revoked, expired, taken over): the lease is gone. The text
    /// says why, for the verdict.
    Refused(String),
    /// The command's tree is gone: stop watching.
    TreeGone,
}

/// Why the lease counts as lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// No renewal succeeded within the renew deadline.
    NoRenewalInTime,
    /// The store refused a renewal, for this reason.
    Refused(String),
    /// The window is about to end and the tree had to be killed without a loss noticed first
    /// (cannot happen with a valid [`Timing`]; kept so that no kill goes without a verdict).
    WindowEnding,
}

/// What the supervisor asks its driver to do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The lease is lost: send SIGTERM to the command's process group (and stop renewing).
    Terminate(Loss),
    /// Send SIGKILL to the command's whole process tree now; `window_left` is how long before
    /// the window of the last successful renewal ends (for the message).
    Kill {
        /// Time left in the window at the kill.
        window_left: std::time::Duration,
    },
    /// Move the kill deadline shared with the shim to this instant (a renewal succeeded).
    MoveDeadline(Timestamp),
    /// Call [`Supervisor::handle`] again (with [`Event::Tick`]) at this instant at the latest;
    /// without one, only events need waking for.
    WakeAt(Timestamp),
    /// The tree is gone: the verdict, `Some` when the lease was lost while the command ran. No
    /// effect follows.
    Finished(Option<Loss>),
}

/// The supervisor of one `lease run` command.
#[derive(Debug, Clone)]
pub struct Supervisor {
    timing: Timing,
    /// The start of the last successful claim or renewal.
    last_ok: Timestamp,
    /// When and why the lease was lost.
    lost: Option<(Timestamp, Loss)>,
    termed: bool,
    killed: bool,
    finished: bool,
}

impl Supervisor {
    /// The supervisor of a command started under a claim whose call started at
    /// `window_start`.
    pub fn new(timing: Timing, window_start: Timestamp) -> Supervisor {
        Supervisor {
            timing,
            last_ok: window_start,
            lost: None,
            termed: false,
            killed: false,
            finished: false,
        }
    }

    /// The kill deadline to give the shim before the first renewal.
    pub fn first_deadline(&self) -> Timestamp {
        self.timing.kill_at(self.last_ok, None)
    }

    /// The timing it applies.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The start of the last successful claim or renewal it heard of.
    pub fn last_ok(&self) -> Timestamp {
        self.last_ok
    }

    /// Whether the lease counts as lost (renewals should stop).
    pub fn is_lost(&self) -> bool {
        self.lost.is_some()
    }

    /// Whether it has finished (after [`Event::TreeGone`]).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Hears `event` at `now` (the reading of the clock every instant of this machine is on,
    /// never earlier than a `now` given before) and returns what to do, in order. After
    /// [`Effect::Finished`] it returns nothing.
    pub fn handle(&mut self, now: Timestamp, event: Event) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.finished {
            return effects;
        }
        match event {
            Event::Tick => {}
            Event::Renewed(start) => {
                // Once lost, always lost: the command has been told to stop.
                if self.lost.is_none() && start > self.last_ok {
                    self.last_ok = start;
                    effects.push(Effect::MoveDeadline(self.timing.kill_at(start, None)));
                }
            }
            Event::Refused(reason) => {
                if self.lost.is_none() {
                    self.lost = Some((now, Loss::Refused(reason)));
                }
            }
            Event::TreeGone => {
                // The tree may have ended after the renew deadline without this machine having
                // been woken for it (`lease run` was stopped while the shim enforced the kill
                // deadline on its own): the lease was lost all the same.
                if self.lost.is_none() && now >= self.timing.lost_at(self.last_ok) {
                    self.lost = Some((now, Loss::NoRenewalInTime));
                }
                self.finished = true;
                effects.push(Effect::Finished(self.lost.take().map(|(_, loss)| loss)));
                return effects;
            }
        }
        if self.lost.is_none() && now >= self.timing.lost_at(self.last_ok) {
            self.lost = Some((now, Loss::NoRenewalInTime));
        }
        if let Some((_, loss)) = &self.lost
            && !self.termed
        {
            self.termed = true;
            effects.push(Effect::Terminate(loss.clone()));
        }
        let kill_at = self
            .timing
            .kill_at(self.last_ok, self.lost.as_ref().map(|(at, _)| *at));
        if !self.killed && now >= kill_at {
            self.killed = true;
            if self.lost.is_none() {
                self.lost = Some((now, Loss::WindowEnding));
            }
            let window_left = self
                .timing
                .window_end(self.last_ok)
                .saturating_duration_since(now);
            effects.push(Effect::Kill { window_left });
        }
        let mut next = Timestamp::MAX;
        if self.lost.is_none() {
            next = next.min(self.timing.lost_at(self.last_ok));
        }
        if !self.killed {
            next = next.min(kill_at);
        }
        if next < Timestamp::MAX {
            effects.push(Effect::WakeAt(next));
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    fn at(secs: f64) -> Timestamp {
        Timestamp::from_nanos(1_000_000_000).saturating_add(s(secs))
    }

    /// ttl 15 s: renew deadline 10 s, margin 1.5 s, kill-after 10 s.
    fn machine() -> Supervisor {
        Supervisor::new(Timing::new(s(15.0), None, None).unwrap(), at(0.0))
    }

    #[test]
    fn a_quiet_start_asks_to_be_woken_at_the_renew_deadline() {
        let mut m = machine();
        assert_eq!(m.first_deadline(), at(13.5));
        assert_eq!(m.handle(at(0.0), Event::Tick), [Effect::WakeAt(at(10.0))]);
        assert_eq!(m.handle(at(3.0), Event::Tick), [Effect::WakeAt(at(10.0))]);
    }

    #[test]
    fn a_renewal_moves_the_deadline_and_the_wake_up() {
        let mut m = machine();
        m.handle(at(0.0), Event::Tick);
        assert_eq!(
            m.handle(at(5.5), Event::Renewed(at(5.0))),
            [Effect::MoveDeadline(at(18.5)), Effect::WakeAt(at(15.0))]
        );
        // An older renewal's answer, arriving late, changes nothing.
        assert_eq!(
            m.handle(at(6.0), Event::Renewed(at(4.0))),
            [Effect::WakeAt(at(15.0))]
        );
        assert_eq!(m.last_ok(), at(5.0));
    }

    #[test]
    fn no_renewal_in_time_terminates_then_kills_before_the_window_ends() {
        let mut m = machine();
        assert_eq!(
            m.handle(at(10.0), Event::Tick),
            [
                Effect::Terminate(Loss::NoRenewalInTime),
                Effect::WakeAt(at(13.5))
            ]
        );
        assert!(m.is_lost());
        // Once lost, a renewal does not bring the lease back.
        assert_eq!(
            m.handle(at(11.0), Event::Renewed(at(10.5))),
            [Effect::WakeAt(at(13.5))]
        );
        assert_eq!(
            m.handle(at(13.5), Event::Tick),
            [Effect::Kill {
                window_left: s(1.5)
            }]
        );
        assert_eq!(m.handle(at(14.0), Event::Tick), []);
        assert_eq!(
            m.handle(at(14.1), Event::TreeGone),
            [Effect::Finished(Some(Loss::NoRenewalInTime))]
        );
        assert_eq!(m.handle(at(20.0), Event::Tick), []);
    }

    #[test]
    fn a_refusal_terminates_at_once_and_kills_kill_after_later() {
        let mut m = Supervisor::new(Timing::new(s(15.0), None, Some(s(2.0))).unwrap(), at(0.0));
        let reason = "revoked".to_owned();
        assert_eq!(
            m.handle(at(1.0), Event::Refused(reason.clone())),
            [
                Effect::Terminate(Loss::Refused(reason.clone())),
                Effect::WakeAt(at(3.0))
            ]
        );
        assert_eq!(
            m.handle(at(3.0), Event::Tick),
            [Effect::Kill {
                window_left: s(12.0)
            }]
        );
        assert_eq!(
            m.handle(at(3.0), Event::TreeGone),
            [Effect::Finished(Some(Loss::Refused(reason)))]
        );
    }

    #[test]
    fn a_tree_gone_in_time_is_no_loss_and_a_late_one_is() {
        let mut m = machine();
        m.handle(at(0.0), Event::Tick);
        assert_eq!(m.handle(at(9.0), Event::TreeGone), [Effect::Finished(None)]);
        assert!(m.is_finished());
        // The machine was not woken (its process was stopped) and the shim killed the tree.
        let mut m = machine();
        m.handle(at(0.0), Event::Tick);
        assert_eq!(
            m.handle(at(30.0), Event::TreeGone),
            [Effect::Finished(Some(Loss::NoRenewalInTime))]
        );
    }

    /// The mutation brings the defect back on this thread only: lost at the window's end,
    /// SIGKILL `kill_after` later, past the window.
    #[cfg(feature = "mutations")]
    #[test]
    fn stop_after_expiry_kills_only_after_the_window_and_only_where_switched_on() {
        use crate::mutation::{Mutation, set};
        set(Some(Mutation::StopAfterExpiry));
        let mut m = machine();
        let timing = *m.timing();
        assert_eq!(m.first_deadline(), at(25.0));
        assert_eq!(m.handle(at(0.0), Event::Tick), [Effect::WakeAt(at(15.0))]);
        assert_eq!(
            m.handle(at(15.0), Event::Tick),
            [
                Effect::Terminate(Loss::NoRenewalInTime),
                Effect::WakeAt(at(25.0))
            ]
        );
        let other = std::thread::spawn(move || timing.kill_at(at(0.0), None))
            .join()
            .unwrap();
        assert_eq!(other, at(13.5), "another thread keeps the real supervisor");
        set(None);
        assert_eq!(timing.kill_at(at(0.0), None), at(13.5));
    }

    #[test]
    fn a_late_wake_up_does_everything_due_at_once() {
        let mut m = machine();
        assert_eq!(
            m.handle(at(40.0), Event::Tick),
            [
                Effect::Terminate(Loss::NoRenewalInTime),
                Effect::Kill {
                    window_left: Duration::ZERO
                }
            ]
        );
    }
}
