//! The fuzz targets' properties for lease-core (`fuzz/src/core_checks.rs`, compiled in here
//! unchanged), fed by proptest so they run in every `cargo test` on stable Rust: `PathKey`
//! parsing and formatting, and name and duration validation.

use proptest::prelude::*;

#[allow(unreachable_pub)]
#[path = "../../../fuzz/src/core_checks.rs"]
mod core_checks;

/// Text dense in what path keys and names must handle: separators, escapes, whitespace of
/// every kind, forbidden characters, non-ASCII.
fn awkward() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,24}",
        proptest::collection::vec(
            prop::sample::select(vec![
                "/", "/system/", "/module/", "%", "%2", "%2F", "%25", "%zz", "%C3%BC", "%FF", ".",
                "#", "$", " ", "\t", "\n", "\u{a0}", "\u{2003}", "\u{85}", "a", "Z", "9", "-", "~",
                "é", "😀", "?", "\\", "@", "",
            ]),
            0..12,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn pathkey_text(text in awkward()) {
        core_checks::pathkey_text(&text);
        core_checks::pathkey_text(&format!("/system/{text}"));
        core_checks::pathkey_text(&format!("/module/{text}"));
    }

    #[test]
    fn pathkey_segments(
        module in proptest::option::of(awkward()),
        segments in proptest::collection::vec(awkward(), 0..5),
    ) {
        core_checks::pathkey_segments(module.as_deref(), &segments);
    }

    #[test]
    fn pathkey_distinct(
        a in proptest::collection::vec(awkward(), 1..4),
        b in proptest::collection::vec(awkward(), 1..4),
    ) {
        core_checks::pathkey_distinct(&a, &b);
        core_checks::pathkey_distinct(&a, &a.clone());
    }

    #[test]
    fn validate(text in awkward(), nanos in prop_oneof![Just(0u64), any::<u64>()]) {
        core_checks::validate_text(&text);
        core_checks::validate_nanos(nanos);
    }
}

/// Text around and far past the name limit: plain, dense in characters that escape to three
/// bytes, multi-byte, and needlessly escaped (which shrinks when parsed).
fn long_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (1000usize..1100).prop_map(|n| "a".repeat(n)),
        (
            prop::sample::select(vec!["a", "é", "😀", "%41", ".", "/", " ", "ab.", "\u{1b}"]),
            0usize..4000,
        )
            .prop_map(|(part, n)| part.repeat(n)),
        ("\\PC{1,8}", 100usize..800).prop_map(|(part, n)| part.repeat(n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn long_names_and_keys(text in long_text(), split in 1usize..5) {
        core_checks::validate_text(&text);
        core_checks::pathkey_text(&text);
        core_checks::pathkey_text(&format!("/system/{text}"));
        core_checks::pathkey_text(&format!("/module/m/{text}"));
        core_checks::pathkey_segments(None, std::slice::from_ref(&text));
        core_checks::pathkey_segments(Some(&text), &["s".to_owned()]);
        // The same bytes over several segments.
        let chars: Vec<char> = text.chars().collect();
        let parts: Vec<String> = chars
            .chunks(chars.len().div_ceil(split).max(1))
            .map(|c| c.iter().collect())
            .collect();
        core_checks::pathkey_segments(Some("m"), &parts);
    }
}
