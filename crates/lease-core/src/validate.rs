//! Input validation, as Juju's `ValidateString`: applied to every name before any I/O.
//!
//! # Limits
//!
//! Every name (namespace, model, lease, holder, pinning entity, and the identities and
//! transaction names of the higher-level APIs) is at most [`MAX_NAME_BYTES`] (1 KiB) of UTF-8,
//! whatever the store: a name that one store accepts, every store accepts. The limit keeps keys
//! comfortably inside what every backing system stores in one row or object (a Kubernetes
//! object keeps the exact key and holder in annotations, which share 256 KiB), and keeps error
//! messages, tables and logs readable.
//!
//! A request's metadata is at most [`MAX_METADATA_BYTES`] (64 KiB) once serialised as compact
//! JSON: the Kubernetes stores keep it in an annotation, and all of an object's annotations
//! together may not exceed 256 KiB (the whole object about 1.5 MiB), so unbounded metadata would
//! make the API server refuse the write, and every reader of the lease would pay for it.
//!
//! Durations have no upper limit: arithmetic on them saturates (an expiry past
//! [`Timestamp::MAX`](crate::Timestamp::MAX) is `Timestamp::MAX`, that is never), so no input
//! makes the lease code overflow.

use std::time::Duration;

use crate::error::{Error, Result};

/// The characters no name may contain (besides whitespace): they are separators or special in
/// the stores' own key syntaxes.
pub const FORBIDDEN_CHARS: &[char] = &['.', '#', '$'];

/// The longest name [`validate_string`] accepts, in bytes of UTF-8: 1 KiB, the same for every
/// store. A [`PathKey`](crate::PathKey)'s text form (its escaped segments) counts against it
/// too.
pub const MAX_NAME_BYTES: usize = 1024;

/// The largest metadata [`validate_metadata`] accepts, in bytes of compact JSON: 64 KiB, the
/// same for every store.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// How many characters of an over-long value an error message shows.
const SHOWN_CHARS: usize = 64;

/// The first [`SHOWN_CHARS`] characters of `value` and `…` when it is longer: what an error
/// about an over-long value quotes, so the message stays readable.
pub(crate) fn shortened(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

/// Checks a name: non-empty, at most [`MAX_NAME_BYTES`] bytes, no whitespace, none of `.#$`.
///
/// `field` names the input in the error (`"namespace"`, `"model"`, `"lease"`, `"holder"`, …).
/// The length is checked first, so an over-long value costs no more than reading its length.
///
/// # Errors
///
/// [`Error::Validation`] naming `field`, the value and the rule it broke. For an over-long
/// value the error quotes only its first 64 characters (then `…`) and says its length and the
/// limit.
///
/// ```
/// use lease_core::{MAX_NAME_BYTES, validate_string};
/// assert!(validate_string("lease", "mysql").is_ok());
/// let err = validate_string("holder", "unit 0").unwrap_err();
/// assert_eq!(err.to_string(), r#"invalid holder "unit 0": contains whitespace"#);
///
/// assert!(validate_string("lease", &"x".repeat(MAX_NAME_BYTES)).is_ok());
/// let err = validate_string("lease", &"x".repeat(70_000)).unwrap_err();
/// assert!(err.to_string().ends_with(
///     "…\": is 70000 bytes long, over the limit of 1024 bytes for a name"
/// ));
/// ```
pub fn validate_string(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::validation(field, value, "is empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::validation(
            field,
            shortened(value),
            format!(
                "is {} bytes long, over the limit of {MAX_NAME_BYTES} bytes for a name",
                value.len()
            ),
        ));
    }
    if is_plain_ascii_name(value) {
        return Ok(());
    }
    if value.chars().any(char::is_whitespace) {
        return Err(Error::validation(field, value, "contains whitespace"));
    }
    if let Some(c) = value.chars().find(|c| FORBIDDEN_CHARS.contains(c)) {
        return Err(Error::validation(
            field,
            value,
            format!("contains {c:?} (none of '.', '#', '$' is allowed)"),
        ));
    }
    Ok(())
}

/// Whether `value` is ASCII with no whitespace and none of [`FORBIDDEN_CHARS`]: nearly every
/// name, checked in one pass over its bytes instead of two over its chars (every request's
/// key and holder are checked by the handle and again by the store). Anything else takes the
/// general checks, which find what is wrong.
fn is_plain_ascii_name(value: &str) -> bool {
    // `char::is_whitespace` on ASCII: tab, line feed, vertical tab, form feed, carriage return
    // and space.
    value
        .bytes()
        .all(|b| b.is_ascii() && !matches!(b, b'\t'..=b'\r' | b' ' | b'.' | b'#' | b'$'))
}

/// Counts the bytes written through it and keeps the first few, failing as soon as they pass
/// a limit, so measuring a huge value stops early.
struct Budget {
    written: usize,
    limit: usize,
    head: Vec<u8>,
}

impl std::io::Write for Budget {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = (SHOWN_CHARS * 4).saturating_sub(self.head.len());
        self.head.extend_from_slice(&buf[..buf.len().min(room)]);
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.limit {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks a request's metadata: at most [`MAX_METADATA_BYTES`] bytes as compact JSON.
///
/// Measuring stops as soon as the limit is passed, so a huge value is refused cheaply.
///
/// # Errors
///
/// [`Error::Validation`] for field `metadata`, quoting the start of the JSON and saying the
/// limit.
///
/// ```
/// use lease_core::validate_metadata;
/// assert!(validate_metadata(&serde_json::json!({"pid": 42})).is_ok());
/// let big = serde_json::Value::String("x".repeat(100_000));
/// let err = validate_metadata(&big).unwrap_err();
/// assert!(err.to_string().ends_with("is over the limit of 65536 bytes of JSON"));
/// ```
pub fn validate_metadata(metadata: &serde_json::Value) -> Result<()> {
    let mut budget = Budget {
        written: 0,
        limit: MAX_METADATA_BYTES,
        head: Vec::new(),
    };
    if serde_json::to_writer(&mut budget, metadata).is_err() {
        // Serialising a `Value` only fails through the writer, that is: over the limit.
        let head = match std::str::from_utf8(&budget.head) {
            Ok(text) => text.to_owned(),
            Err(e) => String::from_utf8_lossy(&budget.head[..e.valid_up_to()]).into_owned(),
        };
        return Err(Error::validation(
            "metadata",
            format!("{}…", head.chars().take(SHOWN_CHARS).collect::<String>()),
            format!("is over the limit of {MAX_METADATA_BYTES} bytes of JSON"),
        ));
    }
    Ok(())
}

/// Checks a lease duration: strictly positive.
///
/// There is no upper limit: every store saturates an expiry past
/// [`Timestamp::MAX`](crate::Timestamp::MAX) to it, which is "never" in practice.
///
/// # Errors
///
/// [`Error::Validation`] for field `duration` when it is zero.
pub fn validate_duration(duration: Duration) -> Result<()> {
    if duration.is_zero() {
        return Err(Error::validation(
            "duration",
            format!("{duration:?}"),
            "must be greater than zero",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "a",
            "mysql",
            "mysql/0",
            "unit-mysql-0",
            "machine-0",
            "c1b2a3d4-0000-4000-8000-000000000001",
            "application-leadership",
            "ÜnïcødéNamé",
            "UPPER_lower-09:~@!%^&*()",
        ] {
            validate_string("lease", ok).unwrap_or_else(|e| panic!("{ok:?} rejected: {e}"));
        }
    }

    proptest::proptest! {
        /// The one-pass ASCII check accepts exactly the names the general checks accept:
        /// never one with whitespace (ASCII or not) or a forbidden character.
        #[test]
        fn the_ascii_fast_path_agrees_with_the_general_checks(
            value in proptest::string::string_regex(
                "[a-z0-9 \t\n\u{0b}\u{0c}\r.#$_/:~\u{85}\u{a0}\u{2003}\u{1f}\u{7f}é]{0,12}"
            ).unwrap()
        ) {
            let general = !value.is_empty()
                && !value.chars().any(char::is_whitespace)
                && !value.chars().any(|c| FORBIDDEN_CHARS.contains(&c));
            if !value.is_empty() && is_plain_ascii_name(&value) {
                proptest::prop_assert!(general, "{:?} passed the fast path only", value);
            }
            proptest::prop_assert_eq!(validate_string("lease", &value).is_ok(), general);
        }
    }

    #[test]
    fn every_ascii_byte_is_judged_as_the_general_checks_judge_it() {
        for b in 0u8..0x80 {
            let c = char::from(b);
            let general = !c.is_whitespace() && !FORBIDDEN_CHARS.contains(&c);
            let value = format!("a{c}b");
            assert_eq!(is_plain_ascii_name(&value), general, "byte {b:#04x}");
            assert_eq!(
                validate_string("lease", &value).is_ok(),
                general,
                "byte {b:#04x}"
            );
        }
    }

    #[test]
    fn rejects_empty() {
        let err = validate_string("namespace", "").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation);
        assert_eq!(err.to_string(), r#"invalid namespace "": is empty"#);
    }

    #[test]
    fn rejects_each_whitespace() {
        for bad in [
            "a b",
            " a",
            "a ",
            "a\tb",
            "a\nb",
            "a\rb",
            "a\u{00a0}b",
            "a\u{2003}b",
        ] {
            let err = validate_string("model", bad).unwrap_err();
            assert!(
                matches!(&err, Error::Validation { field: "model", value, reason } if value == bad && reason == "contains whitespace"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn rejects_each_forbidden_char() {
        for (bad, c) in [("a.b", '.'), ("#a", '#'), ("a$", '$'), (".", '.')] {
            let err = validate_string("holder", bad).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("invalid holder {bad:?}: contains {c:?}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn names_up_to_the_limit_pass_and_longer_ones_are_refused_naming_field_length_and_limit() {
        let ascii = "x".repeat(MAX_NAME_BYTES);
        validate_string("lease", &ascii).unwrap();
        // The limit is in bytes: 512 two-byte characters fit, 513 do not.
        validate_string("holder", &"é".repeat(MAX_NAME_BYTES / 2)).unwrap();
        for (field, value) in [
            ("lease", "x".repeat(MAX_NAME_BYTES + 1)),
            ("holder", "é".repeat(MAX_NAME_BYTES / 2 + 1)),
            ("namespace", "n".repeat(65_536)),
            ("model", "😀".repeat(100_000)),
            ("entity", format!("{} with spaces", "e".repeat(2000))),
        ] {
            let err = validate_string(field, &value).unwrap_err();
            let Error::Validation {
                field: f,
                value: shown,
                reason,
            } = &err
            else {
                panic!("{err:?}");
            };
            assert_eq!(*f, field);
            assert_eq!(
                reason,
                &format!(
                    "is {} bytes long, over the limit of 1024 bytes for a name",
                    value.len()
                )
            );
            // Only the start is quoted, so the message stays short.
            assert_eq!(shown.chars().count(), SHOWN_CHARS + 1, "{shown}");
            assert!(shown.ends_with('…'));
            assert!(value.starts_with(shown.trim_end_matches('…')));
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("invalid {field} \"")),
                "{message}"
            );
            assert!(message.len() < 400, "{message}");
            assert_eq!(message.lines().count(), 1);
        }
    }

    #[test]
    fn metadata_up_to_the_limit_passes_and_more_is_refused() {
        validate_metadata(&serde_json::json!({"pid": 42, "host": "a"})).unwrap();
        // A JSON string is its characters and two quotes.
        let fits = serde_json::Value::String("x".repeat(MAX_METADATA_BYTES - 2));
        validate_metadata(&fits).unwrap();
        let over = serde_json::Value::String("x".repeat(MAX_METADATA_BYTES - 1));
        let err = validate_metadata(&over).unwrap_err();
        assert!(
            matches!(&err, Error::Validation { field: "metadata", value, .. } if value.starts_with("\"xxx") && value.ends_with('…') && value.chars().count() == SHOWN_CHARS + 1),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .ends_with(": is over the limit of 65536 bytes of JSON"),
            "{err}"
        );
        // Deep or wide values are measured the same way.
        let wide = serde_json::Value::Array(vec![serde_json::json!(1234567); 20_000]);
        assert!(validate_metadata(&wide).is_err());
        let multibyte = serde_json::json!({"k": "😀".repeat(20_000)});
        let err = validate_metadata(&multibyte).unwrap_err();
        assert!(
            matches!(&err, Error::Validation { value, .. } if value.starts_with("{\"k\":\"😀😀") && value.chars().count() == SHOWN_CHARS + 1),
            "{err:?}"
        );
    }

    #[test]
    fn durations_must_be_positive() {
        assert!(validate_duration(Duration::from_nanos(1)).is_ok());
        assert!(validate_duration(Duration::from_secs(60)).is_ok());
        let err = validate_duration(Duration::ZERO).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid duration \"0ns\": must be greater than zero"
        );
        // No upper limit: the largest durations are accepted (expiries saturate).
        assert!(validate_duration(Duration::MAX).is_ok());
        assert!(validate_duration(Duration::from_nanos(u64::MAX)).is_ok());
    }
}
