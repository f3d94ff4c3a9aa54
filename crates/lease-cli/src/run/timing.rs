//! `lease run`'s timing: the rules live in lease-run-policy ([`lease_run_policy::Timing`], where
//! the simulator drives them too); this is their face in the command: the flags' usage errors,
//! checked by [`new`]; the modules read the settings from [`Timing`] itself.
//!
//! With `S` the start of the last successful claim or renewal, on the host's monotonic clock
//! (`CLOCK_BOOTTIME`): the window ends at `S + ttl`; renewals are tried every
//! `renew_deadline / 2`; the lease is lost when a renewal is refused or at `S + renew_deadline`,
//! and the tree gets SIGTERM; SIGKILL comes at `min(loss + kill_after, S + ttl - margin)`, the
//! margin a tenth of the ttl.

use std::time::Duration;

use lease_run_policy::{MIN_TTL, TimingError};

use crate::error::{CliError, EXIT_USAGE};
use crate::human::format_duration;

pub(crate) use lease_run_policy::Timing;

impl From<TimingError> for CliError {
    /// A usage error naming the flag.
    fn from(e: TimingError) -> CliError {
        let text = match e {
            TimingError::TtlTooShort(ttl) => format!(
                "--ttl {} is too short for `lease run`: at least {}",
                format_duration(ttl),
                format_duration(MIN_TTL)
            ),
            TimingError::TtlTooLong(ttl) => {
                format!(
                    "--ttl {} is too long: at most 100 years",
                    format_duration(ttl)
                )
            }
            TimingError::RenewDeadlineZero => "--renew-deadline must be greater than zero".into(),
            TimingError::RenewDeadlineTooLong {
                renew_deadline,
                ttl,
                margin,
            } => format!(
                "--renew-deadline {} must be shorter than --ttl {} minus the safety margin \
                 ({}): the command must be stopped before the lease expires",
                format_duration(renew_deadline),
                format_duration(ttl),
                format_duration(margin)
            ),
            TimingError::KillAfterTooLong { kill_after, ttl } => format!(
                "--kill-after {} must be shorter than --ttl {}: SIGKILL comes before the \
                 lease expires",
                format_duration(kill_after),
                format_duration(ttl)
            ),
        };
        CliError::new(EXIT_USAGE, text)
    }
}

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
    Ok(Timing::new(ttl, renew_deadline, kill_after)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lease_core::Timestamp;
    use lease_run_policy::MAX_TTL;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn defaults_fit_in_the_window() {
        let t = new(s(15.0), None, None).unwrap();
        assert_eq!(t.renew_deadline(), s(10.0));
        assert_eq!(t.renew_every(), s(5.0));
        assert_eq!(t.margin(), s(1.5));
        let start = Timestamp::from_nanos(1_000_000_000);
        assert_eq!(t.lost_at(start), start.saturating_add(s(10.0)));
        // Default kill-after (10 s) is capped by the window: 13.5 s, not 20 s.
        let lost = t.lost_at(start);
        assert_eq!(t.kill_at(start, Some(lost)), start.saturating_add(s(13.5)));
        assert!(t.kill_at(start, None) < t.window_end(start));
    }

    #[test]
    fn settings_that_cannot_fit_are_refused_naming_the_flag() {
        let cases = [
            (new(s(3.0), None, Some(s(3.0))), "--kill-after"),
            (new(s(3.0), Some(s(3.0)), None), "--renew-deadline"),
            (new(s(3.0), Some(s(2.8)), None), "--renew-deadline"),
            (new(s(3.0), Some(Duration::ZERO), None), "--renew-deadline"),
            (new(s(0.05), None, None), "--ttl"),
            (new(Duration::MAX, None, None), "--ttl"),
        ];
        for (result, flag) in cases {
            let err = result.unwrap_err();
            assert_eq!(err.code, EXIT_USAGE);
            assert!(err.message.contains(flag), "{flag}: {}", err.message);
        }
        assert!(new(s(3.0), Some(s(2.6)), Some(s(2.9))).is_ok());
        assert!(new(MAX_TTL, None, Some(MAX_TTL / 2)).is_ok());
    }
}
