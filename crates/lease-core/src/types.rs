//! The data of the lease system: keys, requests, lease information, fencing generations and
//! instants on a store's clock.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::validate::{validate_duration, validate_metadata, validate_string};

/// Identifies a lease: a name inside a (namespace, model) pair.
///
/// The namespace says what the lease is for (`application-leadership`, `singular-controller`,
/// your own); the model scopes it further (Juju's model UUID; a tenant or environment name in
/// other programs). Keys order by namespace, then model, then lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    /// What kind of lease this is; selects the [`Secretary`](crate::Secretary) that validates it.
    pub namespace: String,
    /// The scope inside the namespace.
    pub model: String,
    /// The lease's own name.
    pub lease: String,
}

impl Key {
    /// A key from its three parts (not validated; see [`Key::validate`]).
    pub fn new(
        namespace: impl Into<String>,
        model: impl Into<String>,
        lease: impl Into<String>,
    ) -> Self {
        Key {
            namespace: namespace.into(),
            model: model.into(),
            lease: lease.into(),
        }
    }

    /// Checks all three parts with [`validate_string`] (each at most
    /// [`MAX_NAME_BYTES`](crate::validate::MAX_NAME_BYTES)).
    ///
    /// # Errors
    ///
    /// [`Error::Validation`](crate::Error::Validation) naming the first bad part.
    pub fn validate(&self) -> Result<()> {
        validate_string("namespace", &self.namespace)?;
        validate_string("model", &self.model)?;
        validate_string("lease", &self.lease)
    }
}

impl fmt::Display for Key {
    /// `namespace/model#lease`: unambiguous, since no part may contain `#`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.namespace, self.model, self.lease)
    }
}

/// A request to claim or extend a lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    /// Who wants the lease.
    pub holder: String,
    /// How long the holder wants it for, from the start of the call. Any positive duration is
    /// valid: an expiry past [`Timestamp::MAX`] saturates to it.
    pub duration: Duration,
    /// Optional JSON stored with a claim and returned in [`Info::metadata`]. An extend that
    /// carries metadata replaces it; one without leaves it as it was. At most
    /// [`MAX_METADATA_BYTES`](crate::validate::MAX_METADATA_BYTES) as compact JSON.
    pub metadata: Option<serde_json::Value>,
}

impl Request {
    /// A request without metadata.
    pub fn new(holder: impl Into<String>, duration: Duration) -> Self {
        Request {
            holder: holder.into(),
            duration,
            metadata: None,
        }
    }

    /// The same request carrying `metadata`.
    #[must_use]
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Checks the holder with [`validate_string`], the duration with [`validate_duration`] and
    /// the metadata, if any, with [`validate_metadata`].
    ///
    /// # Errors
    ///
    /// [`Error::Validation`](crate::Error::Validation) naming `holder`, `duration` or
    /// `metadata`.
    pub fn validate(&self) -> Result<()> {
        validate_string("holder", &self.holder)?;
        validate_duration(self.duration)?;
        match &self.metadata {
            Some(metadata) => validate_metadata(metadata),
            None => Ok(()),
        }
    }
}

/// A lease's fencing generation: strictly greater for every successful claim of a key than for
/// any earlier claim of it, and unchanged by extends.
///
/// A protected resource remembers the highest generation it has seen and refuses writes that
/// carry a lower one: that stops a holder that was paused past its lease from doing damage
/// (Kleppmann's fencing token; Chubby's sequencer).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u64);

impl Generation {
    /// The generation as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An instant on a [`Clock`](crate::Clock)'s own timeline, in nanoseconds since that clock's
/// epoch.
///
/// Timestamps from different clocks are not comparable; a store reports expiries on the clock it
/// was given, and the manager using that store is given the same clock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's epoch.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The latest representable instant; used for "never expires".
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// The instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// The instant `d` after the epoch, saturating at [`Timestamp::MAX`].
    pub fn from_duration(d: Duration) -> Self {
        Timestamp(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since the epoch.
    pub const fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(d))
    }

    /// `self - d`, saturating at the epoch.
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Self {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(d))
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    /// Seconds since the clock's epoch with nanosecond precision, e.g. `12.000000005s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}s",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

/// What a store knows about one lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Info {
    /// The current holder.
    pub holder: String,
    /// The instant, on the store's clock, at which the lease expires: it is valid while
    /// `now < expiry` and expired from `expiry` on. A store may report an expiry later than the
    /// requested duration implies (rounding up), never earlier. A pinned lease stays held past
    /// it until it is unpinned.
    pub expiry: Timestamp,
    /// The fencing generation of the claim that made `holder` the holder.
    pub generation: Generation,
    /// The metadata stored with the claim, if any.
    pub metadata: Option<serde_json::Value>,
    /// Whether at least one entity pins the lease (so it does not expire).
    pub pinned: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_validation_names_the_bad_part() {
        assert!(Key::new("ns", "model", "lease").validate().is_ok());
        for (key, field) in [
            (Key::new("", "m", "l"), "namespace"),
            (Key::new("n", "m m", "l"), "model"),
            (Key::new("n", "m", "l.x"), "lease"),
        ] {
            let err = key.validate().unwrap_err();
            assert!(
                matches!(err, crate::Error::Validation { field: f, .. } if f == field),
                "{key:?}"
            );
        }
    }

    #[test]
    fn request_validation() {
        assert!(Request::new("h", Duration::from_secs(1)).validate().is_ok());
        assert!(
            Request::new("h$", Duration::from_secs(1))
                .validate()
                .is_err()
        );
        let err = Request::new("h", Duration::ZERO).validate().unwrap_err();
        assert!(err.to_string().starts_with("invalid duration"));
        assert!(Request::new("h", Duration::MAX).validate().is_ok());
        let long_holder = "h".repeat(crate::validate::MAX_NAME_BYTES + 1);
        let err = Request::new(long_holder, Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                crate::Error::Validation {
                    field: "holder",
                    ..
                }
            ),
            "{err}"
        );
        let big = serde_json::Value::String("m".repeat(crate::validate::MAX_METADATA_BYTES));
        let err = Request::new("h", Duration::from_secs(1))
            .with_metadata(big)
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                crate::Error::Validation {
                    field: "metadata",
                    ..
                }
            ),
            "{err}"
        );
        let small = serde_json::json!({"pid": 1});
        assert!(
            Request::new("h", Duration::from_secs(1))
                .with_metadata(small)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn over_long_key_parts_are_refused_naming_the_part() {
        let long = "p".repeat(crate::validate::MAX_NAME_BYTES + 1);
        for (key, field) in [
            (Key::new(long.as_str(), "m", "l"), "namespace"),
            (Key::new("n", long.as_str(), "l"), "model"),
            (Key::new("n", "m", long.as_str()), "lease"),
        ] {
            let err = key.validate().unwrap_err();
            assert!(
                matches!(&err, crate::Error::Validation { field: f, reason, .. } if *f == field && reason.contains("over the limit of 1024 bytes")),
                "{err}"
            );
        }
    }

    #[test]
    fn key_display_and_order() {
        let a = Key::new("a", "m", "z");
        let b = Key::new("b", "a", "a");
        assert!(a < b);
        assert_eq!(a.to_string(), "a/m#z");
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp::from_nanos(5);
        assert_eq!(t.saturating_add(Duration::from_nanos(5)).as_nanos(), 10);
        assert_eq!(t.saturating_sub(Duration::from_secs(1)), Timestamp::ZERO);
        assert_eq!(
            Timestamp::MAX.saturating_add(Duration::from_secs(1)),
            Timestamp::MAX
        );
        assert_eq!(
            Timestamp::from_nanos(10).saturating_duration_since(t),
            Duration::from_nanos(5)
        );
        assert_eq!(
            t.saturating_duration_since(Timestamp::from_nanos(10)),
            Duration::ZERO
        );
        assert_eq!(
            Timestamp::from_nanos(12_000_000_005).to_string(),
            "12.000000005s"
        );
        assert_eq!(Timestamp::from_duration(Duration::MAX), Timestamp::MAX);
    }

    proptest::proptest! {
        /// Timestamp arithmetic against u128 arithmetic, for any instant and any duration
        /// (Duration::MAX included): saturating at both ends, never panicking.
        #[test]
        fn timestamp_arithmetic_matches_wide_arithmetic(
            t in proptest::prelude::any::<u64>(),
            secs in proptest::prelude::any::<u64>(),
            nanos in 0u32..1_000_000_000,
            small in 0u64..1_000_000,
        ) {
            for d in [Duration::new(secs, nanos), Duration::from_nanos(small), Duration::MAX] {
                let ts = Timestamp::from_nanos(t);
                let wide = u128::from(t);
                let sum = (wide + d.as_nanos()).min(u128::from(u64::MAX));
                proptest::prop_assert_eq!(u128::from(ts.saturating_add(d).as_nanos()), sum);
                let diff = wide.saturating_sub(d.as_nanos());
                proptest::prop_assert_eq!(u128::from(ts.saturating_sub(d).as_nanos()), diff);
                let later = ts.saturating_add(d);
                proptest::prop_assert_eq!(
                    later.saturating_duration_since(ts).as_nanos(),
                    sum - wide
                );
                proptest::prop_assert_eq!(ts.saturating_duration_since(later), Duration::ZERO);
                proptest::prop_assert_eq!(
                    u128::from(Timestamp::from_duration(d).as_nanos()),
                    d.as_nanos().min(u128::from(u64::MAX))
                );
            }
        }
    }

    #[test]
    fn serde_round_trip() {
        let info = Info {
            holder: "h".into(),
            expiry: Timestamp::from_nanos(7),
            generation: Generation(3),
            metadata: Some(serde_json::json!({"k": [1, 2]})),
            pinned: false,
        };
        let text = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<Info>(&text).unwrap(), info);
        let key = Key::new("n", "m", "l");
        let text = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<Key>(&text).unwrap(), key);
    }
}
