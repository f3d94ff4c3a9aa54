//! `lease run`'s timing: the window a claim or renewal guarantees, when the lease counts as
//! lost, and when the command's tree is killed; and the checks that refuse settings that
//! cannot fit in the window.
//!
//! Every instant is on the host's monotonic clock (`CLOCK_BOOTTIME`), and every sum saturates.
//! With `S` the start of the last successful claim or renewal:
//!
//! - the **window** ends at `S + ttl`: no other holder can get the lease before;
//! - renewals are tried every `renew_deadline / 2`;
//! - the lease is **lost** at `L`: when a renewal is refused (revoked, taken over), or at
//!   `S + renew_deadline` when no renewal succeeded in time; then the tree gets SIGTERM;
//! - the tree gets SIGKILL at `min(L + kill_after, S + ttl - margin)`, the margin being a tenth
//!   of the ttl: the tree is gone before the window ends, whatever it does with SIGTERM.

use std::time::Duration;

use lease_core::Timestamp;

use crate::error::{CliError, EXIT_USAGE};
use crate::human::format_duration;

/// The shortest `--ttl` `lease run` accepts: below it, the safety margin (a tenth) is shorter
/// than a loaded host takes to schedule the kill.
pub(crate) const MIN_TTL: Duration = Duration::from_millis(100);
/// The longest `--ttl` `lease run` accepts: instants are nanoseconds since boot in 64 bits
/// (584 years), and a longer ttl is a typo, not a plan.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// `--kill-after` when not given, capped as every kill-after is by the window.
pub(crate) const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);

/// The validated timing of one `lease run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// How long each claim or renewal guarantees the lease, from the call's start.
    pub(crate) ttl: Duration,
    /// How long after the last successful renewal's start the lease counts as lost.
    pub(crate) renew_deadline: Duration,
    /// The pause between renewals.
    pub(crate) renew_every: Duration,
    /// After SIGTERM, how long before SIGKILL (capped by the window).
    pub(crate) kill_after: Duration,
    /// How long before the window's end SIGKILL is sent at the latest.
    pub(crate) margin: Duration,
}

impl Timing {
    /// Checks `--ttl`, `--renew-deadline` and `--kill-after` together.
    ///
    /// # Errors
    ///
    /// A usage error naming the flag when a setting cannot fit in the window.
    pub(crate) fn new(
        ttl: Duration,
        renew_deadline: Option<Duration>,
        kill_after: Option<Duration>,
    ) -> Result<Timing, CliError> {
        let usage = |text: String| CliError::new(EXIT_USAGE, text);
        if ttl < MIN_TTL {
            return Err(usage(format!(
                "--ttl {} is too short for `lease run`: at least {}",
                format_duration(ttl),
                format_duration(MIN_TTL)
            )));
        }
        if ttl > MAX_TTL {
            return Err(usage(format!(
                "--ttl {} is too long: at most 100 years",
                format_duration(ttl)
            )));
        }
        let margin = ttl / 10;
        let latest = ttl.saturating_sub(margin);
        let renew_deadline = match renew_deadline {
            None => ttl / 3 * 2,
            Some(d) if d.is_zero() => {
                return Err(usage("--renew-deadline must be greater than zero".into()));
            }
            Some(d) if d >= latest => {
                return Err(usage(format!(
                    "--renew-deadline {} must be shorter than --ttl {} minus the safety margin \
                     ({}): the command must be stopped before the lease expires",
                    format_duration(d),
                    format_duration(ttl),
                    format_duration(margin)
                )));
            }
            Some(d) => d,
        };
        let kill_after = match kill_after {
            None => DEFAULT_KILL_AFTER,
            Some(d) if d >= ttl => {
                return Err(usage(format!(
                    "--kill-after {} must be shorter than --ttl {}: SIGKILL comes before the \
                     lease expires",
                    format_duration(d),
                    format_duration(ttl)
                )));
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

    /// The end of the window a call that started at `start` guarantees.
    pub(crate) fn window_end(&self, start: Timestamp) -> Timestamp {
        start.saturating_add(self.ttl)
    }

    /// When the lease counts as lost if no renewal after the one that started at `start`
    /// succeeds.
    pub(crate) fn lost_at(&self, start: Timestamp) -> Timestamp {
        start.saturating_add(self.renew_deadline)
    }

    /// When SIGKILL is due: `kill_after` after the loss (if lost), and in any case by the
    /// window's end minus the margin.
    pub(crate) fn kill_at(&self, start: Timestamp, lost: Option<Timestamp>) -> Timestamp {
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
        assert_eq!(t.renew_deadline, s(10.0));
        assert_eq!(t.renew_every, s(5.0));
        assert_eq!(t.margin, s(1.5));
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
    fn settings_that_cannot_fit_are_refused_naming_the_flag() {
        let cases = [
            (Timing::new(s(3.0), None, Some(s(3.0))), "--kill-after"),
            (Timing::new(s(3.0), Some(s(3.0)), None), "--renew-deadline"),
            (Timing::new(s(3.0), Some(s(2.8)), None), "--renew-deadline"),
            (
                Timing::new(s(3.0), Some(Duration::ZERO), None),
                "--renew-deadline",
            ),
            (Timing::new(s(0.05), None, None), "--ttl"),
        ];
        for (result, flag) in cases {
            let err = result.unwrap_err();
            assert_eq!(err.code, EXIT_USAGE);
            assert!(err.message.contains(flag), "{flag}: {}", err.message);
        }
        assert!(Timing::new(s(3.0), Some(s(2.6)), Some(s(2.9))).is_ok());
    }

    #[test]
    fn extreme_durations_are_refused_or_saturate() {
        let err = Timing::new(Duration::MAX, None, None).unwrap_err();
        assert!(err.message.contains("--ttl"), "{}", err.message);
        let t = Timing::new(MAX_TTL, None, Some(MAX_TTL / 2)).unwrap();
        // Late in the clock's range, sums saturate instead of wrapping.
        let start = Timestamp::MAX.saturating_sub(Duration::from_secs(5));
        assert_eq!(t.window_end(start), Timestamp::MAX);
        assert_eq!(t.lost_at(start), Timestamp::MAX);
        assert!(t.kill_at(start, Some(start)) <= t.window_end(start));
        // Early in it, the kill comes before the window ends, never at once.
        let start = Timestamp::from_nanos(5);
        assert!(t.kill_at(start, None) < t.window_end(start));
        assert!(t.kill_at(start, None) > start.saturating_add(t.renew_deadline));
    }
}
