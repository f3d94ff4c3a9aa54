//! Fuzz target: `validate_string` accepts exactly the names Juju's `ValidateString` does and
//! names the field and value when it refuses; `validate_duration` refuses exactly zero.

#![no_main]

use lease_fuzz::core_checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, u64)| {
    let (text, nanos) = input;
    core_checks::validate_text(&text);
    core_checks::validate_nanos(nanos);
});
