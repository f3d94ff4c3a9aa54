//! [`LeaderElectionRecord`]: client-go's leader-election record as a Lease's `spec` carries it,
//! and its lossless conversions to and from [`LeaseSpec`].

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff;
use serde::{Deserialize, Serialize};

/// client-go's leader-election record (its `resourcelock.LeaderElectionRecord`), as a Lease's
/// `spec` carries it, with lossless conversions to and from [`LeaseSpec`]. Its JSON uses
/// the Lease spec's field names.
///
/// # Mapping
///
/// | `LeaderElectionRecord` | `LeaseSpec` | meaning |
/// | --- | --- | --- |
/// | `holder_identity: Option<String>` | `holderIdentity` | the leader; absent or empty = free |
/// | `lease_duration_seconds: Option<i32>` | `leaseDurationSeconds` | the claim's length |
/// | `acquire_time: Option<jiff::Timestamp>` | `acquireTime` (`MicroTime`) | the holder's wall clock |
/// | `renew_time: Option<jiff::Timestamp>` | `renewTime` (`MicroTime`) | the holder's wall clock |
/// | `lease_transitions: Option<i32>` | `leaseTransitions` | see below |
/// | `preferred_holder`, `strategy` | `preferredHolder`, `strategy` | coordinated leader election (Kubernetes 1.31+); carried unchanged |
///
/// Every field keeps the spec's presence (`None` = field absent), type and range, and a
/// `MicroTime` is exactly a [`jiff::Timestamp`] (the type k8s-openapi uses), so
/// `LeaseSpec → LeaderElectionRecord → LeaseSpec` and
/// `LeaderElectionRecord → LeaseSpec → LeaderElectionRecord` are both the identity. On the wire
/// a `MicroTime` has microsecond precision: a record whose times are whole microseconds (every
/// record read from an API server) also survives a JSON round trip unchanged.
///
/// # Relation to lease-manager's `TermRecord`
///
/// `lease_manager::TermRecord` (what a `LeaderElector` writes as its lease's metadata) has the
/// same five fields, but its times are instants on the manager's [`Clock`](lease_core::Clock),
/// which is monotonic and not comparable across hosts, so they cannot be mapped to wall-clock
/// `MicroTime`s and are not: the Kubernetes stores write their own wall-clock `acquireTime` and
/// `renewTime` with every claim and renewal, and judge expiry by observation, never by these
/// times. The other fields map as: `holder_identity` = the lease's holder; its
/// `lease_duration_seconds` = `leaseDurationSeconds` (both whole seconds rounded up); its
/// `lease_transitions` = the fencing generation minus one, while the object's
/// `leaseTransitions` is the generation itself (one more on every claim, so at least once per
/// change of holder, as client-go counts).
///
/// # Example
///
/// ```
/// use k8s_openapi::api::coordination::v1::LeaseSpec;
/// use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
/// use k8s_openapi::jiff::Timestamp;
/// use lease_store_k8s::LeaderElectionRecord;
///
/// let now = Timestamp::from_microsecond(1_700_000_000_123_456)?;
/// let spec = LeaseSpec {
///     holder_identity: Some("pod-a".into()),
///     lease_duration_seconds: Some(15),
///     acquire_time: Some(MicroTime(now)),
///     renew_time: Some(MicroTime(now)),
///     lease_transitions: Some(3),
///     ..LeaseSpec::default()
/// };
/// let record = LeaderElectionRecord::from(&spec);
/// assert_eq!(record.holder(), Some("pod-a"));
/// assert_eq!(record.lease_duration(), Some(std::time::Duration::from_secs(15)));
/// assert_eq!(LeaseSpec::from(record), spec);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderElectionRecord {
    /// The holder's identity; `None` or empty when nobody holds the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long the claim lasts after it was last observed to change, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i32>,
    /// When the current holder acquired the lease, by its wall clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<jiff::Timestamp>,
    /// When the current holder last renewed the lease, by its wall clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<jiff::Timestamp>,
    /// How many times the lease changed hands (on objects written by this crate: the fencing
    /// generation, one more on every claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,
    /// `preferredHolder` (coordinated leader election), carried unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_holder: Option<String>,
    /// `strategy` (coordinated leader election), carried unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
}

impl LeaderElectionRecord {
    /// The record of `lease`'s spec (an empty record when it has no spec).
    pub fn from_lease(lease: &Lease) -> LeaderElectionRecord {
        lease
            .spec
            .as_ref()
            .map(LeaderElectionRecord::from)
            .unwrap_or_default()
    }

    /// The holder, when there is one (a non-empty `holder_identity`).
    pub fn holder(&self) -> Option<&str> {
        self.holder_identity.as_deref().filter(|h| !h.is_empty())
    }

    /// The lease duration, when it is positive.
    pub fn lease_duration(&self) -> Option<Duration> {
        self.lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
    }
}

impl From<&LeaseSpec> for LeaderElectionRecord {
    fn from(spec: &LeaseSpec) -> LeaderElectionRecord {
        LeaderElectionRecord {
            holder_identity: spec.holder_identity.clone(),
            lease_duration_seconds: spec.lease_duration_seconds,
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            lease_transitions: spec.lease_transitions,
            preferred_holder: spec.preferred_holder.clone(),
            strategy: spec.strategy.clone(),
        }
    }
}

impl From<LeaseSpec> for LeaderElectionRecord {
    fn from(spec: LeaseSpec) -> LeaderElectionRecord {
        LeaderElectionRecord {
            holder_identity: spec.holder_identity,
            lease_duration_seconds: spec.lease_duration_seconds,
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            lease_transitions: spec.lease_transitions,
            preferred_holder: spec.preferred_holder,
            strategy: spec.strategy,
        }
    }
}

impl From<LeaderElectionRecord> for LeaseSpec {
    fn from(record: LeaderElectionRecord) -> LeaseSpec {
        LeaseSpec {
            holder_identity: record.holder_identity,
            lease_duration_seconds: record.lease_duration_seconds,
            acquire_time: record.acquire_time.map(MicroTime),
            renew_time: record.renew_time.map(MicroTime),
            lease_transitions: record.lease_transitions,
            preferred_holder: record.preferred_holder,
            strategy: record.strategy,
        }
    }
}

impl From<&LeaderElectionRecord> for LeaseSpec {
    fn from(record: &LeaderElectionRecord) -> LeaseSpec {
        LeaseSpec::from(record.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any instant a `MicroTime` can carry on the wire: whole microseconds from year 0001 to
    /// 9999 (RFC 3339).
    fn micro_time() -> impl Strategy<Value = jiff::Timestamp> {
        // 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z, in microseconds.
        (-62_135_596_800_000_000_i64..=253_402_300_799_999_999_i64)
            .prop_map(|us| jiff::Timestamp::from_microsecond(us).expect("in range"))
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["", "[a-z0-9-]{1,20}", "\\PC{1,40}"]
    }

    /// Every spec the API server accepts (durations positive, transitions not negative), and
    /// beyond: the conversions do not depend on validity.
    fn spec() -> impl Strategy<Value = LeaseSpec> {
        (
            proptest::option::of(text()),
            proptest::option::of(any::<i32>()),
            proptest::option::of(micro_time()),
            proptest::option::of(micro_time()),
            proptest::option::of(any::<i32>()),
            proptest::option::of(text()),
            proptest::option::of(prop_oneof!["OldestEmulationVersion", text()]),
        )
            .prop_map(
                |(holder, secs, acquire, renew, transitions, preferred, strategy)| LeaseSpec {
                    holder_identity: holder,
                    lease_duration_seconds: secs,
                    acquire_time: acquire.map(MicroTime),
                    renew_time: renew.map(MicroTime),
                    lease_transitions: transitions,
                    preferred_holder: preferred,
                    strategy,
                },
            )
    }

    fn record() -> impl Strategy<Value = LeaderElectionRecord> {
        spec().prop_map(|s| LeaderElectionRecord {
            holder_identity: s.holder_identity,
            lease_duration_seconds: s.lease_duration_seconds,
            acquire_time: s.acquire_time.map(|t| t.0),
            renew_time: s.renew_time.map(|t| t.0),
            lease_transitions: s.lease_transitions,
            preferred_holder: s.preferred_holder,
            strategy: s.strategy,
        })
    }

    proptest! {
        #[test]
        fn spec_to_record_to_spec_is_identity(spec in spec()) {
            let record = LeaderElectionRecord::from(&spec);
            prop_assert_eq!(&LeaseSpec::from(&record), &spec);
            prop_assert_eq!(LeaseSpec::from(LeaderElectionRecord::from(spec.clone())), spec);
        }

        #[test]
        fn record_to_spec_to_record_is_identity(record in record()) {
            let spec = LeaseSpec::from(&record);
            prop_assert_eq!(LeaderElectionRecord::from(&spec), record.clone());
            prop_assert_eq!(LeaderElectionRecord::from(LeaseSpec::from(record.clone())), record);
        }

        #[test]
        fn microsecond_records_survive_the_wire(record in record()) {
            // What an API server stores and returns: the spec's JSON.
            let json = serde_json::to_string(&LeaseSpec::from(&record)).unwrap();
            let back: LeaseSpec = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(LeaderElectionRecord::from(back), record.clone());
            // The record's own JSON uses client-go's field names and round-trips too.
            let own = serde_json::to_value(&record).unwrap();
            let spec_json = serde_json::to_value(LeaseSpec::from(&record)).unwrap();
            prop_assert_eq!(own.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
                spec_json.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()));
            let back: LeaderElectionRecord = serde_json::from_value(own).unwrap();
            prop_assert_eq!(back, record);
        }
    }

    #[test]
    fn holder_and_duration_helpers() {
        let mut r = LeaderElectionRecord::default();
        assert_eq!(r.holder(), None);
        r.holder_identity = Some(String::new());
        assert_eq!(r.holder(), None, "client-go's empty identity means free");
        r.holder_identity = Some("a".into());
        assert_eq!(r.holder(), Some("a"));
        for (secs, want) in [
            (Some(0), None),
            (Some(-1), None),
            (None, None),
            (Some(7), Some(7)),
        ] {
            r.lease_duration_seconds = secs;
            assert_eq!(r.lease_duration(), want.map(Duration::from_secs));
        }
        assert_eq!(
            LeaderElectionRecord::from_lease(&Lease::default()),
            LeaderElectionRecord::default()
        );
    }
}
