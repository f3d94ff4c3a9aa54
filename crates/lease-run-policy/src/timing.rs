//! `lease run`'s timing: the window a claim or renewal guarantees, when the lease counts as
//! lost, and when the command's tree is killed; and the checks that refuse settings that
//! cannot fit in the window.
//!
//! Every instant is on one monotonic clock (the host's `CLOCK_BOOTTIME` for `lease run`), and
//! every sum saturates. With `S` the start of the last successful claim or renewal:
//!
//! - the **window** ends at `S + ttl`: no other holder can get the lease before;
//! - renewals are tried every `renew_deadline / 2`;
//! - the lease is **lost** at `L`: when a renewal is refused (revoked, taken over), or at
//!   `S + renew_deadline` when no renewal succeeded in time; then the tree gets SIGTERM;
//! - the tree gets SIGKILL at `min(L + kill_after, S + ttl - margin)`, the margin being a tenth
//!   of the ttl: the tree is gone before the window ends, whatever it does with SIGTERM.

use std::time::Duration;

use lease_core::Timestamp;

/// The shortest ttl accepted: below it, the safety margin (a tenth) is shorter than a loaded
/// host takes to schedule the kill.
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// The longest ttl accepted: instants are nanoseconds in 64 bits (584 years), and a longer ttl
/// is a typo, not a plan.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// The kill-after when not given.
pub const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);

/// A setting that cannot fit in the window; each names the setting (`lease run` words it as
/// a usage error naming the flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The ttl is below [`MIN_TTL`].
    #[error("the ttl {0:?} is too short: at least {MIN_TTL:?}")]
    TtlTooShort(Duration),
    /// The ttl is above [`MAX_TTL`].
    #[error("the ttl {0:?} is too long: at most 100 years")]
    TtlTooLong(Duration),
    /// A renew deadline of zero.
    #[error("the renew deadline must be greater than zero")]
    RenewDeadlineZero,
    /// A renew deadline that does not end before the ttl less the margin.
    #[error(
        "the renew deadline {renew_deadline:?} must be shorter than the ttl {ttl:?} minus the \
         safety margin ({margin:?})"
    )]
    RenewDeadlineTooLong {
        /// The renew deadline asked for.
        renew_deadline: Duration,
        /// The ttl.
        ttl: Duration,
        /// The safety margin (a tenth of the ttl).
        margin: Duration,
    },
    /// A kill-after that is not shorter than the ttl.
    #[error("the kill-after {kill_after:?} must be shorter than the ttl {ttl:?}")]
    KillAfterTooLong {
        /// The kill-after asked for.
        kill_after: Duration,
        /// The ttl.
        ttl: Duration,
    },
}

/// The validated timing of one `lease run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    ttl: Duration,
    renew_deadline: Duration,
    renew_every: Duration,
    kill_after: Duration,
    margin: Duration,
}

impl Timing {
    /// Checks the ttl, the renew deadline (default: two thirds of the ttl) and the kill-after
    /// (default: [`DEFAULT_KILL_AFTER`], capped by the window) together.
    ///
    /// # Errors
    ///
    /// A [`TimingError`] naming the setting that cannot fit in the window.
    pub fn new(
        ttl: Duration,
        renew_deadline: Option<Duration>,
        kill_after: Option<Duration>,
    ) -> Result<Timing, TimingError> {
        if ttl < MIN_TTL {
            return Err(TimingError::TtlTooShort(ttl));
        }
        if ttl > MAX_TTL {
            return Err(TimingError::TtlTooLong(ttl));
        }
        let margin = ttl / 10;
        let latest = ttl.saturating_sub(margin);
        let renew_deadline = match renew_deadline {
            None => ttl / 3 * 2,
            Some(d) if d.is_zero() => return Err(TimingError::RenewDeadlineZero),
            Some(d) if d >= latest => {
                return Err(TimingError::RenewDeadlineTooLong {
                    renew_deadline: d,
                    ttl,
                    margin,
                });
            }
            Some(d) => d,
        };
        let kill_after = match kill_after {
            None => DEFAULT_KILL_AFTER,
            Some(d) if d >= ttl => {
                return Err(TimingError::KillAfterTooLong { kill_after: d, ttl });
            }
            Some(d) => d,
        };
        Ok(Timing {
            ttl,
            renew_deadline,
            renew_every: (renew_deadline / 2).max(Duration::from_millis(1)),
            kill_after,
            margin,
        })
    }

    /// How long each claim or renewal guarantees the lease, from the call's start.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long after the last successful renewal's start the lease counts as lost.
    pub fn renew_deadline(&self) -> Duration {
        self.renew_deadline
    }

    /// The pause between renewals.
    pub fn renew_every(&self) -> Duration {
        self.renew_every
    }

    /// After SIGTERM, how long before SIGKILL (capped by the window).
    pub fn kill_after(&self) -> Duration {
        self.kill_after
    }

    /// How long before the window's end SIGKILL is sent at the latest.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// The end of the window a call that started at `start` guarantees.
    pub fn window_end(&self, start: Timestamp) -> Timestamp {
        start.saturating_add(self.ttl)
    }

    /// When the lease counts as lost if no renewal after the one that started at `start`
    /// succeeds.
    pub fn lost_at(&self, start: Timestamp) -> Timestamp {
        if crate::stops_after_expiry() {
            // The defect: lost only once the window has already ended.
            return self.window_end(start);
        }
        start.saturating_add(self.renew_deadline)
    }

    /// When SIGKILL is due: `kill_after` after the loss (if lost), and in any case by the
    /// window's end minus the margin.
    pub fn kill_at(&self, start: Timestamp, lost: Option<Timestamp>) -> Timestamp {
        if crate::stops_after_expiry() {
            // The defect: `kill_after` after a loss noticed at the window's end, uncapped.
            let lost = lost.unwrap_or_else(|| self.lost_at(start));
            return lost.saturating_add(self.kill_after);
        }
        let latest = self.window_end(start).saturating_sub(self.margin);
        match lost {
            Some(l) => l.saturating_add(self.kill_after).min(latest),
            None => latest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn defaults_fit_in_the_window() {
        let t = Timing::new(s(15.0), None, None).unwrap();
        assert_eq!(t.renew_deadline(), s(10.0));
        assert_eq!(t.renew_every(), s(5.0));
        assert_eq!(t.margin(), s(1.5));
        assert_eq!(t.kill_after(), DEFAULT_KILL_AFTER);
        assert_eq!(t.ttl(), s(15.0));
        let start = Timestamp::from_nanos(1_000_000_000);
        assert_eq!(t.lost_at(start), start.saturating_add(s(10.0)));
        // Default kill-after (10 s) is capped by the window: 13.5 s, not 20 s.
        let lost = t.lost_at(start);
        assert_eq!(t.kill_at(start, Some(lost)), start.saturating_add(s(13.5)));
        // A loss early in the window: kill-after applies.
        let early = start.saturating_add(s(1.0));
        assert_eq!(t.kill_at(start, Some(early)), start.saturating_add(s(11.0)));
        assert!(t.kill_at(start, None) < t.window_end(start));
    }

    #[test]
    fn settings_that_cannot_fit_are_refused_naming_the_setting() {
        assert_eq!(
            Timing::new(s(3.0), None, Some(s(3.0))),
            Err(TimingError::KillAfterTooLong {
                kill_after: s(3.0),
                ttl: s(3.0)
            })
        );
        assert!(matches!(
            Timing::new(s(3.0), Some(s(3.0)), None),
            Err(TimingError::RenewDeadlineTooLong { .. })
        ));
        assert!(matches!(
            Timing::new(s(3.0), Some(s(2.8)), None),
            Err(TimingError::RenewDeadlineTooLong { .. })
        ));
        assert_eq!(
            Timing::new(s(3.0), Some(Duration::ZERO), None),
            Err(TimingError::RenewDeadlineZero)
        );
        assert_eq!(
            Timing::new(s(0.05), None, None),
            Err(TimingError::TtlTooShort(s(0.05)))
        );
        assert!(Timing::new(s(3.0), Some(s(2.6)), Some(s(2.9))).is_ok());
        let text = Timing::new(s(3.0), Some(s(2.8)), None)
            .unwrap_err()
            .to_string();
        assert!(text.contains("renew deadline"), "{text}");
    }

    #[test]
    fn extreme_durations_are_refused_or_saturate() {
        assert_eq!(
            Timing::new(Duration::MAX, None, None),
            Err(TimingError::TtlTooLong(Duration::MAX))
        );
        let t = Timing::new(MAX_TTL, None, Some(MAX_TTL / 2)).unwrap();
        // Late in the clock's range, sums saturate instead of wrapping.
        let start = Timestamp::MAX.saturating_sub(Duration::from_secs(5));
        assert_eq!(t.window_end(start), Timestamp::MAX);
        assert_eq!(t.lost_at(start), Timestamp::MAX);
        assert!(t.kill_at(start, Some(start)) <= t.window_end(start));
        // Early in it, the kill comes before the window ends, never at once.
        let start = Timestamp::from_nanos(5);
        assert!(t.kill_at(start, None) < t.window_end(start));
        assert!(t.kill_at(start, None) > start.saturating_add(t.renew_deadline()));
    }
}
