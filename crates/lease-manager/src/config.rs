//! [`ManagerConfig`]: everything a manager is started with, its defaults and its validation; and
//! [`RetryPolicy`], the backoff for `Timeout`/`Invalid` store results.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Clock, Secretary, Store, validate_string};

use crate::error::ManagerError;

/// How the worker spreads retries of a store operation over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Jitter {
    /// Every delay is exactly the exponential backoff: predictable, for tests.
    None,
    /// "Full jitter": each delay is drawn uniformly from zero to the exponential backoff, so
    /// managers that failed together do not retry together.
    #[default]
    Full,
}

/// Backoff for store operations that fail with `Timeout` or `Invalid` (Juju's manager: 10
/// attempts, 50 ms, ×1.6, jittered).
///
/// Retry *n* (n = 1 for the first retry) waits `min(initial_delay × multiplier^(n-1),
/// max_delay)`, jittered as [`RetryPolicy::jitter`] says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Store attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The backoff before the first retry.
    pub initial_delay: Duration,
    /// The factor each further backoff grows by (at least 1).
    pub multiplier: f64,
    /// The longest backoff.
    pub max_delay: Duration,
    /// Whether the backoffs are jittered.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            initial_delay: Duration::from_millis(50),
            multiplier: 1.6,
            max_delay: Duration::from_secs(5),
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry `retry` (1 for the first retry), before jitter.
    ///
    /// Never panics, for any policy and any `retry`. For a valid policy the delay lies in
    /// `[initial_delay, max_delay]` (zero for a zero `initial_delay`, however large the
    /// multiplier) and never decreases as `retry` grows.
    pub fn backoff(&self, retry: u32) -> Duration {
        if self.initial_delay.is_zero() {
            // 0 × ∞ would be NaN: a zero start stays zero whatever the multiplier.
            return Duration::ZERO;
        }
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.powi(exponent);
        let nanos = self.initial_delay.as_nanos() as f64 * factor;
        if !nanos.is_finite() || nanos >= self.max_delay.as_nanos() as f64 {
            return self.max_delay;
        }
        // Below max_delay, so representable. A cast to u64 would clip at u64::MAX nanoseconds
        // (≈ 584 years), under a longer cap: past that, convert from seconds instead.
        let delay = if nanos < u64::MAX as f64 {
            Duration::from_nanos(nanos.round() as u64)
        } else {
            Duration::try_from_secs_f64(nanos / 1e9).unwrap_or(self.max_delay)
        };
        delay.clamp(self.initial_delay.min(self.max_delay), self.max_delay)
    }

    fn validate(&self) -> Result<(), ManagerError> {
        if self.attempts == 0 {
            return Err(ManagerError::config(
                "retry.attempts",
                self.attempts,
                "must be at least 1",
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ManagerError::config(
                "retry.multiplier",
                self.multiplier,
                "must be a finite number of at least 1",
            ));
        }
        if self.max_delay < self.initial_delay {
            return Err(ManagerError::config(
                "retry.max_delay",
                self.max_delay,
                format!(
                    "must not be shorter than retry.initial_delay ({:?})",
                    self.initial_delay
                ),
            ));
        }
        Ok(())
    }
}

/// Everything [`Manager::start`](crate::Manager::start) needs. Build one with
/// [`ManagerConfig::new`], then adjust the public fields or use the `with_*` methods.
///
/// | field | default |
/// | --- | --- |
/// | `secretaries` | none (add with [`ManagerConfig::with_secretary`]) |
/// | `default_secretary` | none: a namespace without a secretary is refused |
/// | `max_sleep` | 1 min |
/// | `retry` | [`RetryPolicy::default`]: 10 attempts, 50 ms, ×1.6, at most 5 s, full jitter |
/// | `refresh_interval` | 100 ms |
/// | `shutdown_grace` | 5 s |
/// | `channel_capacity` | 1024 |
/// | `max_batch` | 256 |
/// | `rng_seed` | none (seeded from the OS) |
pub struct ManagerConfig {
    /// The store; the worker becomes its only user.
    pub store: Box<dyn Store>,
    /// The secretary of each namespace, which validates names and durations before any store
    /// call.
    pub secretaries: BTreeMap<String, Arc<dyn Secretary>>,
    /// The secretary of every namespace not in `secretaries`; `None` refuses such namespaces.
    pub default_secretary: Option<Arc<dyn Secretary>>,
    /// The clock; it must be the one the store decides expiry with.
    pub clock: Arc<dyn Clock>,
    /// The longest the worker sleeps without re-checking its view (and forgetting what expired).
    pub max_sleep: Duration,
    /// Backoff for `Timeout`/`Invalid` store results.
    pub retry: RetryPolicy,
    /// How often the worker asks the store whether other processes changed it
    /// ([`Store::poll_changes`]) while it has waiters or holds leases.
    pub refresh_interval: Duration,
    /// How long stopping waits for the store call in flight before answering `Aborted`.
    pub shutdown_grace: Duration,
    /// Requests that may queue for the worker before senders wait (back-pressure): from 1 to
    /// [`ManagerConfig::MAX_CHANNEL_CAPACITY`].
    pub channel_capacity: usize,
    /// The most requests the worker takes from its queue into one store batch (group commit).
    pub max_batch: usize,
    /// Seed of the jitter's random numbers, for reproducible tests; `None` seeds from the OS.
    pub rng_seed: Option<u64>,
}

impl ManagerConfig {
    /// The largest [`ManagerConfig::channel_capacity`]: 2^20 (1,048,576) queued requests.
    ///
    /// A queue that long already means minutes of backlog for any store; larger values buy
    /// nothing, and tokio's channel panics past `usize::MAX >> 3`.
    pub const MAX_CHANNEL_CAPACITY: usize = 1 << 20;

    /// A configuration with `store`, `clock` and the defaults in the table above.
    pub fn new(store: impl Store + 'static, clock: Arc<dyn Clock>) -> Self {
        ManagerConfig {
            store: Box::new(store),
            secretaries: BTreeMap::new(),
            default_secretary: None,
            clock,
            max_sleep: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            refresh_interval: Duration::from_millis(100),
            shutdown_grace: Duration::from_secs(5),
            channel_capacity: 1024,
            max_batch: 256,
            rng_seed: None,
        }
    }

    /// Adds (or replaces) the secretary of `namespace`.
    #[must_use]
    pub fn with_secretary(
        mut self,
        namespace: impl Into<String>,
        secretary: Arc<dyn Secretary>,
    ) -> Self {
        self.secretaries.insert(namespace.into(), secretary);
        self
    }

    /// Adds every secretary of `secretaries` (e.g. [`lease_core::standard_secretaries`]).
    #[must_use]
    pub fn with_secretaries(
        mut self,
        secretaries: impl IntoIterator<Item = (String, Arc<dyn Secretary>)>,
    ) -> Self {
        self.secretaries.extend(secretaries);
        self
    }

    /// Sets the secretary of namespaces not otherwise configured.
    #[must_use]
    pub fn with_default_secretary(mut self, secretary: Arc<dyn Secretary>) -> Self {
        self.default_secretary = Some(secretary);
        self
    }

    /// Sets [`ManagerConfig::max_sleep`].
    #[must_use]
    pub fn with_max_sleep(mut self, max_sleep: Duration) -> Self {
        self.max_sleep = max_sleep;
        self
    }

    /// Sets [`ManagerConfig::retry`].
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`ManagerConfig::refresh_interval`].
    #[must_use]
    pub fn with_refresh_interval(mut self, refresh_interval: Duration) -> Self {
        self.refresh_interval = refresh_interval;
        self
    }

    /// Sets [`ManagerConfig::shutdown_grace`].
    #[must_use]
    pub fn with_shutdown_grace(mut self, shutdown_grace: Duration) -> Self {
        self.shutdown_grace = shutdown_grace;
        self
    }

    /// Sets [`ManagerConfig::channel_capacity`].
    #[must_use]
    pub fn with_channel_capacity(mut self, channel_capacity: usize) -> Self {
        self.channel_capacity = channel_capacity;
        self
    }

    /// Sets [`ManagerConfig::max_batch`].
    #[must_use]
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Sets [`ManagerConfig::rng_seed`].
    #[must_use]
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Config`] naming the first bad field: a zero `max_sleep`,
    /// `refresh_interval`, `channel_capacity` or `max_batch`; a `channel_capacity` over
    /// [`ManagerConfig::MAX_CHANNEL_CAPACITY`]; a `refresh_interval` longer than
    /// `max_sleep`; a bad `retry` field; a secretary namespace that is not a valid name.
    pub fn validate(&self) -> Result<(), ManagerError> {
        if self.max_sleep.is_zero() {
            return Err(ManagerError::config(
                "max_sleep",
                self.max_sleep,
                "must be greater than zero",
            ));
        }
        if self.refresh_interval.is_zero() {
            return Err(ManagerError::config(
                "refresh_interval",
                self.refresh_interval,
                "must be greater than zero",
            ));
        }
        if self.refresh_interval > self.max_sleep {
            return Err(ManagerError::config(
                "refresh_interval",
                self.refresh_interval,
                format!("must not be longer than max_sleep ({:?})", self.max_sleep),
            ));
        }
        self.retry.validate()?;
        if !(1..=Self::MAX_CHANNEL_CAPACITY).contains(&self.channel_capacity) {
            return Err(ManagerError::config(
                "channel_capacity",
                self.channel_capacity,
                format!(
                    "must be between 1 and {} requests",
                    Self::MAX_CHANNEL_CAPACITY
                ),
            ));
        }
        if self.max_batch == 0 {
            return Err(ManagerError::config(
                "max_batch",
                self.max_batch,
                "must be at least 1",
            ));
        }
        for namespace in self.secretaries.keys() {
            if let Err(e) = validate_string("namespace", namespace) {
                return Err(ManagerError::config(
                    "secretaries",
                    namespace,
                    e.to_string(),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ManagerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerConfig")
            .field("secretaries", &self.secretaries)
            .field("default_secretary", &self.default_secretary)
            .field("clock", &self.clock)
            .field("max_sleep", &self.max_sleep)
            .field("retry", &self.retry)
            .field("refresh_interval", &self.refresh_interval)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("channel_capacity", &self.channel_capacity)
            .field("max_batch", &self.max_batch)
            .field("rng_seed", &self.rng_seed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_multiplier_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(50));
        assert_eq!(p.backoff(2), Duration::from_millis(80));
        assert_eq!(p.backoff(3), Duration::from_millis(128));
        assert_eq!(p.backoff(4), Duration::from_nanos(204_800_000));
        assert_eq!(p.backoff(100), Duration::from_secs(5));
    }

    #[test]
    fn bad_retry_fields_are_named() {
        let mut p = RetryPolicy {
            attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(matches!(
            p.validate(),
            Err(ManagerError::Config {
                field: "retry.attempts",
                ..
            })
        ));
        p.attempts = 1;
        p.multiplier = 0.5;
        assert!(matches!(
            p.validate(),
            Err(ManagerError::Config {
                field: "retry.multiplier",
                ..
            })
        ));
        p.multiplier = f64::NAN;
        assert!(matches!(
            p.validate(),
            Err(ManagerError::Config {
                field: "retry.multiplier",
                ..
            })
        ));
        p.multiplier = 2.0;
        p.max_delay = Duration::from_millis(1);
        assert!(matches!(
            p.validate(),
            Err(ManagerError::Config {
                field: "retry.max_delay",
                ..
            })
        ));
    }
}
