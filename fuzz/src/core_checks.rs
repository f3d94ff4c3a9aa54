//! Properties of lease-core's text handling: [`PathKey`] parsing and formatting, and
//! [`validate_string`] / [`validate_duration`]. Each function panics when its property fails.

use std::time::Duration;

use lease_core::PathKey;
use lease_core::{Error, MAX_NAME_BYTES, validate_duration, validate_string};

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
/// parses back to exactly those segments, and is a valid lease name. Keys whose escaped text
/// would pass [`MAX_NAME_BYTES`] are refused with an error saying so: certainly when even
/// unescaped the text is too long, never when even with every byte escaped it fits.
pub fn pathkey_segments(module: Option<&str>, segments: &[String]) {
    let built = match module {
        Some(m) => PathKey::module(m, segments.iter().cloned()),
        None => PathKey::system(segments.iter().cloned()),
    };
    let valid_input = !segments.is_empty()
        && segments.iter().all(|s| !s.is_empty())
        && module.is_none_or(|m| !m.is_empty());
    // "/system" or "/module/<module>", then "/<segment>" each.
    let parts: Vec<&str> = match module {
        Some(m) => vec!["module", m],
        None => vec!["system"],
    };
    let parts = parts.into_iter().chain(segments.iter().map(String::as_str));
    let (shortest, longest) = parts.fold((0usize, 0usize), |(lo, hi), p| {
        (lo + 1 + p.len(), hi + 1 + 3 * p.len())
    });
    let key = match built {
        Ok(key) => key,
        Err(e) => {
            let too_long = e.reason.contains("over the limit");
            assert!(
                !valid_input || (too_long && longest > MAX_NAME_BYTES),
                "{module:?} {segments:?} refused: {e}"
            );
            assert!(
                e.key.chars().count() <= 65,
                "the error quotes all of {:?}",
                e.key
            );
            return;
        }
    };
    assert!(valid_input, "{module:?} {segments:?} accepted");
    let text = key.to_string();
    assert!(
        shortest <= MAX_NAME_BYTES && text.len() <= MAX_NAME_BYTES,
        "{} bytes accepted",
        text.len()
    );
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

/// `validate_string` accepts exactly the non-empty names of at most [`MAX_NAME_BYTES`] without
/// whitespace or any of `.#$`, and its error names the field and the value (for an over-long
/// value, its first 64 characters and `…`, with the length and the limit).
pub fn validate_text(value: &str) {
    let too_long = value.len() > MAX_NAME_BYTES;
    let expected_ok = !value.is_empty()
        && !too_long
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
            if too_long {
                let start = shown.strip_suffix('…').expect("an over-long value is cut");
                assert!(value.starts_with(start), "{shown:?} is not the start");
                assert_eq!(start.chars().count(), 64);
                assert!(
                    reason.contains(&format!("is {} bytes long", value.len()))
                        && reason.contains("limit of 1024 bytes"),
                    "{reason}"
                );
            } else {
                assert_eq!(shown, value);
            }
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
