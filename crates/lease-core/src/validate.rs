//! Input validation, as Juju's `ValidateString`: applied to every name before any I/O.

use std::time::Duration;

use crate::error::{Error, Result};

/// The characters no name may contain (besides whitespace): they are separators or special in
/// the stores' own key syntaxes.
pub const FORBIDDEN_CHARS: &[char] = &['.', '#', '$'];

/// Checks a name: non-empty, no whitespace, none of `.#$`.
///
/// `field` names the input in the error (`"namespace"`, `"model"`, `"lease"`, `"holder"`, …).
///
/// # Errors
///
/// [`Error::Validation`] naming `field`, the value and the rule it broke.
///
/// ```
/// use lease_core::validate::validate_string;
/// assert!(validate_string("lease", "mysql").is_ok());
/// let err = validate_string("holder", "unit 0").unwrap_err();
/// assert_eq!(err.to_string(), r#"invalid holder "unit 0": contains whitespace"#);
/// ```
pub fn validate_string(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::validation(field, value, "is empty"));
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

/// Checks a lease duration: strictly positive.
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
    fn durations_must_be_positive() {
        assert!(validate_duration(Duration::from_nanos(1)).is_ok());
        assert!(validate_duration(Duration::from_secs(60)).is_ok());
        let err = validate_duration(Duration::ZERO).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid duration \"0ns\": must be greater than zero"
        );
    }
}
