//! The fuzz targets' properties for the Kubernetes store (`fuzz/src/k8s_checks.rs`, compiled in
//! here unchanged), fed by proptest so they run in every `cargo test` on stable Rust: key → object
//! name (valid, at most 63 characters, distinct for distinct keys) and `LeaderElectionRecord` ⇄
//! `LeaseSpec` (exact round trips, hand-edited JSON never panics).

use lease_core::Key;
use proptest::prelude::*;

#[allow(unreachable_pub)]
#[path = "../../../fuzz/src/k8s_checks.rs"]
mod k8s_checks;

use k8s_checks::{RawSpec, WIRE_MICROS};

/// Key parts the validation would refuse as well as ones it accepts: the mapping copes with
/// anything.
fn part() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9-]{0,12}",
        "[A-Za-z0-9_.:/@~-]{1,70}",
        "\\PC{0,90}",
    ]
}

fn key() -> impl Strategy<Value = Key> {
    (part(), part(), part()).prop_map(|(n, m, l)| Key::new(n, m, l))
}

fn micros() -> impl Strategy<Value = Option<i64>> {
    proptest::option::of(prop_oneof![WIRE_MICROS, any::<i64>()])
}

fn raw_spec() -> impl Strategy<Value = RawSpec> {
    (
        proptest::option::of(prop_oneof![Just(String::new()), part()]),
        proptest::option::of(prop_oneof![Just(0), Just(-1), any::<i32>()]),
        micros(),
        micros(),
        proptest::option::of(any::<i32>()),
        proptest::option::of(part()),
        proptest::option::of(part()),
    )
        .prop_map(
            |(holder, seconds, acquire_us, renew_us, transitions, preferred, strategy)| RawSpec {
                holder,
                seconds,
                acquire_us,
                renew_us,
                transitions,
                preferred,
                strategy,
            },
        )
}

/// JSON a person might leave in a Lease's spec: right names, wrong types and values.
fn hand_edited_json() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("null".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("1e99".to_owned()),
        Just("2147483648".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"garbage\"".to_owned()),
        Just("\"2024-02-30T25:61:00Z\"".to_owned()),
        Just("\"2024-01-01T00:00:00.123456Z\"".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("true".to_owned()),
    ];
    let field = prop::sample::select(vec![
        "holderIdentity",
        "leaseDurationSeconds",
        "acquireTime",
        "renewTime",
        "leaseTransitions",
        "preferredHolder",
        "strategy",
        "unknown",
    ]);
    prop_oneof![
        proptest::collection::vec((field, value), 0..6).prop_map(|fields| {
            let body: Vec<String> = fields.iter().map(|(f, v)| format!("\"{f}\":{v}")).collect();
            format!("{{{}}}", body.join(",")).into_bytes()
        }),
        any::<Vec<u8>>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn object_names(a in key(), b in key()) {
        k8s_checks::object_names_distinct(&a, &b);
        let c = Key::new(a.namespace.clone(), a.model.clone(), format!("{}x", a.lease));
        k8s_checks::object_names_distinct(&a, &c);
    }

    #[test]
    fn lock_record_round_trip(raw in raw_spec()) {
        k8s_checks::lock_record_round_trip(&raw);
    }

    #[test]
    fn lock_record_from_json(bytes in hand_edited_json()) {
        k8s_checks::lock_record_from_json(&bytes);
    }
}
