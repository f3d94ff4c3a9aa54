//! [`ElectionConfig`] and [`ElectionError`].

use std::fmt;
use std::time::Duration;

use lease_core::{Error, Generation, validate_string};

#[cfg(doc)]
use super::{LeaderElector, LeadershipGuard};

/// What can go wrong with leader election.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElectionError {
    /// An [`ElectionConfig`] field holds an unusable value.
    #[error("invalid election config {field} {value:?}: {reason}")]
    Config {
        /// The field, as named in [`ElectionConfig`].
        field: &'static str,
        /// The offending value, as text.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// [`LeaderElector::lock`] was called while this elector already leads.
    #[error("already leading lease {lease} (generation {generation})")]
    AlreadyLeading {
        /// The lease.
        lease: String,
        /// The generation of the current term.
        generation: Generation,
    },
    /// [`LeaderElector::check`]: this elector thinks it leads, but its last renewal is too old.
    #[error(
        "leader of {lease} last renewed {since:?} ago, more than the lease duration plus the \
         tolerance ({limit:?})"
    )]
    Unhealthy {
        /// The lease.
        lease: String,
        /// Time since the start of the last successful renewal.
        since: Duration,
        /// `lease_duration + max_tolerable_expired`.
        limit: Duration,
    },
    /// A lease operation failed (the manager stopped, validation, the store).
    #[error(transparent)]
    Lease(#[from] Error),
}

impl ElectionError {
    pub(super) fn config(
        field: &'static str,
        value: impl fmt::Debug,
        reason: impl Into<String>,
    ) -> Self {
        ElectionError::Config {
            field,
            value: format!("{value:?}"),
            reason: reason.into(),
        }
    }
}

/// Everything a [`LeaderElector`] needs to know. [`ElectionConfig::new`] fills in client-go's
/// defaults; adjust the public fields or use the `with_*` methods, and
/// [`ElectionConfig::validate`] (which [`LeaderElector::new`] calls) checks them.
///
/// Durations have no upper bound: a huge one saturates (a lease of `Duration::MAX` never
/// expires) rather than overflowing.
///
/// How expiry is judged is not the elector's choice but the store's: the manager decides with
/// its own clock, and the Kubernetes stores judge a record expired only once it has not changed
/// for its full duration as observed on this process's clock (client-go's rule), unless they
/// were built with `lease_store_k8s::StoreOptions::trust_renew_time`, which trusts the record's
/// own renew time instead (only safe when the hosts' clocks agree). (The seed's
/// `UseObservedTime` setting therefore lives there, not here.)
///
/// | field | default |
/// | --- | --- |
/// | `lease_duration` | 15 s |
/// | `renew_deadline` | 10 s |
/// | `retry_period` | 2 s |
/// | `unlock_with_retry_period` | 1 s |
/// | `release_on_cancel` | false |
/// | `name` | the lease name |
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ElectionConfig {
    /// The manager namespace of the lease.
    pub namespace: String,
    /// The model (scope) of the lease.
    pub model: String,
    /// The lease the candidates contend for.
    pub lease: String,
    /// This candidate's identity: the lease holder while it leads. Unique per candidate.
    pub identity: String,
    /// A name for logs and errors (client-go's `Name`).
    pub name: String,
    /// How long a claim or renewal is good for: followers take over only once it has passed
    /// without a renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps retrying a failing renewal before it gives leadership up
    /// (and its lost token fires). Shorter than `lease_duration`, so it stops acting before
    /// anyone else can lead.
    pub renew_deadline: Duration,
    /// The leader renews this often; followers retry this often (jittered) when no expiry
    /// wakes them first.
    pub retry_period: Duration,
    /// The pause between attempts of [`LeaderElector::unlock_with_retry`].
    pub unlock_with_retry_period: Duration,
    /// Whether dropping the [`LeadershipGuard`] releases the lease at once (true) or just stops
    /// renewing it, so it expires after `lease_duration` (false). Only set it when all work
    /// under the lease has stopped before the guard is dropped.
    pub release_on_cancel: bool,
}

impl ElectionConfig {
    /// A configuration for `identity` contending for `lease` in `namespace`/`model`, with the
    /// defaults in the table above.
    pub fn new(
        namespace: impl Into<String>,
        model: impl Into<String>,
        lease: impl Into<String>,
        identity: impl Into<String>,
    ) -> ElectionConfig {
        let lease = lease.into();
        ElectionConfig {
            namespace: namespace.into(),
            model: model.into(),
            name: lease.clone(),
            lease,
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            unlock_with_retry_period: Duration::from_secs(1),
            release_on_cancel: false,
        }
    }

    /// Sets the three timings.
    #[must_use]
    pub fn with_timing(
        mut self,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Self {
        self.lease_duration = lease_duration;
        self.renew_deadline = renew_deadline;
        self.retry_period = retry_period;
        self
    }

    /// Sets [`ElectionConfig::release_on_cancel`].
    #[must_use]
    pub fn with_release_on_cancel(mut self, release_on_cancel: bool) -> Self {
        self.release_on_cancel = release_on_cancel;
        self
    }

    /// Sets [`ElectionConfig::unlock_with_retry_period`].
    #[must_use]
    pub fn with_unlock_with_retry_period(mut self, period: Duration) -> Self {
        self.unlock_with_retry_period = period;
        self
    }

    /// Sets [`ElectionConfig::name`].
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`ElectionError::Config`] naming the first bad field: an empty `name`; an `identity`,
    /// `lease`, `namespace` or `model` that is not a valid lease name; a zero duration;
    /// `renew_deadline` not shorter than `lease_duration`; `renew_deadline` not longer than
    /// 1.2 × `retry_period`.
    pub fn validate(&self) -> Result<(), ElectionError> {
        if self.name.is_empty() {
            return Err(ElectionError::config("name", &self.name, "is empty"));
        }
        for (field, value) in [
            ("identity", &self.identity),
            ("lease", &self.lease),
            ("namespace", &self.namespace),
            ("model", &self.model),
        ] {
            if let Err(Error::Validation { reason, .. }) = validate_string(field, value) {
                return Err(ElectionError::config(field, value, reason));
            }
        }
        for (field, value) in [
            ("lease_duration", self.lease_duration),
            ("renew_deadline", self.renew_deadline),
            ("retry_period", self.retry_period),
            ("unlock_with_retry_period", self.unlock_with_retry_period),
        ] {
            if value.is_zero() {
                return Err(ElectionError::config(
                    field,
                    value,
                    "must be greater than zero",
                ));
            }
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(ElectionError::config(
                "renew_deadline",
                self.renew_deadline,
                format!(
                    "must be shorter than lease_duration ({:?})",
                    self.lease_duration
                ),
            ));
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err(ElectionError::config(
                "renew_deadline",
                self.renew_deadline,
                format!(
                    "must be longer than 1.2 × retry_period ({:?})",
                    self.retry_period
                ),
            ));
        }
        Ok(())
    }
}
