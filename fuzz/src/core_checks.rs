//! Properties of lease-core's text handling: [`PathKey`] parsing and formatting, and
//! [`validate_string`] / [`validate_duration`]. Each function panics when its property fails.

use std::time::Duration;

use lease_core::leaser::PathKey;
use lease_core::{Error, validate_duration, validate_string};

/// Any text: parsing never panics; whatever parses has a canonical text form that is a valid
/// lease name and parses back to the same key; formatting is stable.
pub fn pathkey_text(text: &str) {
    let Ok(key) = PathKey::parse(text) else {
        return;
    };
    let canonical = key.to_string();
    assert!(
        validate_string("lease", &canonical).is_ok(),
        "{text:?} formats as {canonical:?}, not a valid lease name"
    );
    let back = PathKey::parse(&canonical)
        .unwrap_or_else(|e| panic!("{text:?}: canonical form {canonical:?} does not parse: {e}"));
    assert_eq!(back, key, "{text:?} -> {canonical:?}");
    assert_eq!(back.to_string(), canonical, "formatting is not stable");
    assert!(!key.path().is_empty(), "{text:?}: a key without a path");
    if let Some(module) = key.module_name() {
        assert!(!module.is_empty(), "{text:?}: an empty module name");
    }
}

/// Segments given as values: a key built from them (system or module) formats to text that
/// parses back to exactly those segments, and is a valid lease name.
pub fn pathkey_segments(module: Option<&str>, segments: &[String]) {
    let built = match module {
        Some(m) => PathKey::module(m, segments.iter().cloned()),
        None => PathKey::system(segments.iter().cloned()),
    };
    let valid_input = !segments.is_empty()
        && segments.iter().all(|s| !s.is_empty())
        && module.is_none_or(|m| !m.is_empty());
    let key = match built {
        Ok(key) => key,
        Err(e) => {
            assert!(!valid_input, "{module:?} {segments:?} refused: {e}");
            return;
        }
    };
    assert!(valid_input, "{module:?} {segments:?} accepted");
    let text = key.to_string();
    assert!(validate_string("lease", &text).is_ok(), "{text:?}");
    let back = PathKey::parse(&text).unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"));
    assert_eq!(back.path(), segments, "{text:?}");
    assert_eq!(back.module_name(), module, "{text:?}");
    assert_eq!(back, key);
}

/// Two keys are equal exactly when their text forms are.
pub fn pathkey_distinct(a: &[String], b: &[String]) {
    let (Ok(ka), Ok(kb)) = (
        PathKey::system(a.iter().cloned()),
        PathKey::system(b.iter().cloned()),
    ) else {
        return;
    };
    assert_eq!(
        ka == kb,
        ka.to_string() == kb.to_string(),
        "{a:?} / {b:?}: equality and text disagree"
    );
}

/// `validate_string` accepts exactly the non-empty names without whitespace or any of `.#$`,
/// and its error names the field and the value.
pub fn validate_text(value: &str) {
    let expected_ok = !value.is_empty()
        && !value.chars().any(char::is_whitespace)
        && !value.chars().any(|c| matches!(c, '.' | '#' | '$'));
    match validate_string("lease", value) {
        Ok(()) => assert!(expected_ok, "{value:?} accepted"),
        Err(Error::Validation {
            field,
            value: shown,
            reason,
        }) => {
            assert!(!expected_ok, "{value:?} refused: {reason}");
            assert_eq!(field, "lease");
            assert_eq!(shown, value);
            assert!(!reason.is_empty());
            let message = validate_string("holder", value)
                .expect_err("same value, same answer")
                .to_string();
            assert!(message.starts_with("invalid holder "), "{message}");
        }
        Err(other) => panic!("{value:?}: not a validation error: {other}"),
    }
}

/// `validate_duration` refuses exactly zero.
pub fn validate_nanos(nanos: u64) {
    let d = Duration::from_nanos(nanos);
    assert_eq!(validate_duration(d).is_ok(), nanos > 0, "{d:?}");
}
