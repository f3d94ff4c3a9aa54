//! Properties of the Kubernetes store's mappings: key → object name and labels, and
//! `LeaderElectionRecord` ⇄ `LeaseSpec`. Each function panics when its property fails.

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use lease_core::Key;
use lease_store_k8s::LeaderElectionRecord;
use lease_store_k8s::naming::{
    is_dns1123_label, is_label_value, key_json, key_labels, object_name,
};

/// One key: its object name is a valid DNS-1123 label of at most 63 characters and
/// deterministic, its labels are valid label values, and the annotation's JSON is the exact
/// key. Keys need not pass validation: the mapping must cope with anything.
pub fn object_name_of(key: &Key) {
    let name = object_name(key);
    assert!(is_dns1123_label(&name), "{key:?} -> {name:?}");
    assert!(name.len() <= 63, "{key:?} -> {name:?}");
    assert_eq!(name, object_name(&key.clone()), "not deterministic");
    for (label, value) in key_labels(key) {
        assert!(is_label_value(&value), "{key:?}: label {label}={value:?}");
    }
    let json = key_json(key);
    let back: Key = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json:?}: {e}"));
    assert_eq!(&back, key, "the key annotation is not exact");
}

/// Two keys: distinct keys get distinct object names.
pub fn object_names_distinct(a: &Key, b: &Key) {
    object_name_of(a);
    object_name_of(b);
    if a != b {
        assert_ne!(
            object_name(a),
            object_name(b),
            "{a:?} and {b:?} map to one object"
        );
    }
}

/// The fields of a spec, as raw values (times in microseconds since the Unix epoch; out of
/// range ones are dropped).
#[derive(Debug, Clone, Default)]
pub struct RawSpec {
    /// `holderIdentity`.
    pub holder: Option<String>,
    /// `leaseDurationSeconds`.
    pub seconds: Option<i32>,
    /// `acquireTime`, in microseconds.
    pub acquire_us: Option<i64>,
    /// `renewTime`, in microseconds.
    pub renew_us: Option<i64>,
    /// `leaseTransitions`.
    pub transitions: Option<i32>,
    /// `preferredHolder`.
    pub preferred: Option<String>,
    /// `strategy`.
    pub strategy: Option<String>,
}

/// The instants a `MicroTime` can carry on the wire: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999Z, in microseconds since the Unix epoch.
pub const WIRE_MICROS: std::ops::RangeInclusive<i64> =
    -62_135_596_800_000_000..=253_402_300_799_999_999;

fn micro_time(us: Option<i64>) -> Option<MicroTime> {
    us.and_then(|us| Timestamp::from_microsecond(us).ok())
        .map(MicroTime)
}

impl RawSpec {
    /// The spec these values describe.
    pub fn spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: self.holder.clone(),
            lease_duration_seconds: self.seconds,
            acquire_time: micro_time(self.acquire_us),
            renew_time: micro_time(self.renew_us),
            lease_transitions: self.transitions,
            preferred_holder: self.preferred.clone(),
            strategy: self.strategy.clone(),
        }
    }
}

/// `LeaseSpec → LeaderElectionRecord → LeaseSpec` and `LeaderElectionRecord → LeaseSpec →
/// LeaderElectionRecord` are the identity, by value and by reference, and both survive the JSON an
/// API server stores; the helpers never call a missing, empty or non-positive field a holder or a
/// duration.
pub fn lock_record_round_trip(raw: &RawSpec) {
    let spec = raw.spec();
    let record = LeaderElectionRecord::from(&spec);
    assert_eq!(LeaseSpec::from(&record), spec);
    assert_eq!(
        LeaseSpec::from(LeaderElectionRecord::from(spec.clone())),
        spec
    );
    assert_eq!(
        LeaderElectionRecord::from(LeaseSpec::from(record.clone())),
        record
    );
    match record.holder() {
        Some(h) => assert!(!h.is_empty()),
        None => assert!(raw.holder.as_deref().is_none_or(str::is_empty)),
    }
    match record.lease_duration() {
        Some(d) => assert!(d.as_secs() > 0 && raw.seconds.is_some_and(|s| s > 0)),
        None => assert!(raw.seconds.is_none_or(|s| s <= 0)),
    }
    // RFC 3339 (the wire format) only has years 0001 to 9999; k8s-openapi writes other
    // instants in a form it cannot read back, and no API server ever sends them.
    let on_the_wire = |us: Option<i64>| us.is_none_or(|us| WIRE_MICROS.contains(&us));
    if !(on_the_wire(raw.acquire_us) && on_the_wire(raw.renew_us)) {
        return;
    }
    let json = serde_json::to_string(&spec).expect("a spec serialises");
    let back: LeaseSpec = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(LeaderElectionRecord::from(back), record, "{json}");
    let own = serde_json::to_string(&record).expect("a record serialises");
    let back: LeaderElectionRecord =
        serde_json::from_str(&own).unwrap_or_else(|e| panic!("{own}: {e}"));
    assert_eq!(back, record, "{own}");
}

/// Arbitrary bytes as the JSON of a spec (a hand-edited object): decoding never panics, and
/// whatever decodes converts to a record and back unchanged.
pub fn lock_record_from_json(bytes: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<LeaseSpec>(bytes) {
        let record = LeaderElectionRecord::from(&spec);
        assert_eq!(LeaseSpec::from(&record), spec);
        let _ = record.holder();
        let _ = record.lease_duration();
    }
    if let Ok(record) = serde_json::from_slice::<LeaderElectionRecord>(bytes) {
        assert_eq!(LeaderElectionRecord::from(LeaseSpec::from(&record)), record);
    }
}
