//! Fuzz target: `LeaderElectionRecord` ⇄ `LeaseSpec` conversions are exact round trips, survive
//! JSON, and decoding arbitrary (hand-edited) JSON never panics.

#![no_main]

use arbitrary::Arbitrary;
use lease_fuzz::k8s_checks::{self, RawSpec};
use libfuzzer_sys::fuzz_target;

/// What one run exercises.
#[derive(Debug, Arbitrary)]
enum Input {
    /// A spec from field values.
    Fields {
        holder: Option<String>,
        seconds: Option<i32>,
        acquire_us: Option<i64>,
        renew_us: Option<i64>,
        transitions: Option<i32>,
        preferred: Option<String>,
        strategy: Option<String>,
    },
    /// Raw bytes as a spec's JSON.
    Json(Vec<u8>),
}

fuzz_target!(|input: Input| {
    match input {
        Input::Fields {
            holder,
            seconds,
            acquire_us,
            renew_us,
            transitions,
            preferred,
            strategy,
        } => k8s_checks::lock_record_round_trip(&RawSpec {
            holder,
            seconds,
            acquire_us,
            renew_us,
            transitions,
            preferred,
            strategy,
        }),
        Input::Json(bytes) => k8s_checks::lock_record_from_json(&bytes),
    }
});
