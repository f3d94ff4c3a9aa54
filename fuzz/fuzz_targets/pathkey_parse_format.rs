//! Fuzz target: `PathKey` parsing and formatting never panic, round-trip exactly, and two keys
//! are equal exactly when their text forms are.

#![no_main]

use arbitrary::Arbitrary;
use lease_fuzz::core_checks;
use libfuzzer_sys::fuzz_target;

/// What one run exercises.
#[derive(Debug, Arbitrary)]
enum Input {
    /// Parse arbitrary text.
    Text(String),
    /// Build a system key from segments.
    System(Vec<String>),
    /// Build a module key from a module and segments.
    Module(String, Vec<String>),
    /// Compare two system keys.
    Pair(Vec<String>, Vec<String>),
}

fuzz_target!(|input: Input| {
    match input {
        Input::Text(text) => core_checks::pathkey_text(&text),
        Input::System(segments) => core_checks::pathkey_segments(None, &segments),
        Input::Module(module, segments) => {
            core_checks::pathkey_segments(Some(&module), &segments);
        }
        Input::Pair(a, b) => core_checks::pathkey_distinct(&a, &b),
    }
});
