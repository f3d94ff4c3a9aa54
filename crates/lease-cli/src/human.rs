//! Human input and output: durations read and printed as `15s`, `2m`, `1.5s`; names checked
//! with the lease rules before any I/O.

use std::time::Duration;

/// Parses a positive duration such as `15s`, `2m`, `1h30m`, `500ms` (humantime's syntax; a bare
/// number is seconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration (expected e.g. 15s, 2m, 500ms)".to_owned());
    }
    if trimmed.starts_with('-') {
        return Err(format!(
            "negative duration {trimmed:?}: durations must be greater than zero"
        ));
    }
    let parsed = if trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        trimmed
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| format!("unparseable duration {trimmed:?} (expected e.g. 15s, 2m)"))?
    } else {
        humantime::parse_duration(trimmed).map_err(|e| {
            format!("unparseable duration {trimmed:?} (expected e.g. 15s, 2m, 500ms): {e}")
        })?
    };
    if parsed.is_zero() {
        return Err(format!(
            "zero duration {trimmed:?}: durations must be greater than zero"
        ));
    }
    Ok(parsed)
}

/// Prints a duration briefly: `250ms`, `1.5s`, `15s`, `2m`, `2m5s`, `1h2m`.
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let tenths = (ms + 50) / 100;
        return if tenths.is_multiple_of(10) || tenths >= 100 {
            format!("{}s", (tenths + 5) / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        };
    }
    let secs = (ms + 500) / 1000;
    if secs < 3600 {
        let (m, s) = (secs / 60, secs % 60);
        return if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{s}s")
        };
    }
    let mins = (secs + 30) / 60;
    let (h, m) = (mins / 60, mins % 60);
    if m == 0 {
        format!("{h}h")
    } else {
        format!("{h}h{m}m")
    }
}

fn check(field: &'static str, value: &str) -> Result<String, String> {
    lease_core::validate_string(field, value)
        .map(|()| value.to_owned())
        .map_err(|e| e.to_string())
}

/// A lease name.
pub(crate) fn parse_lease(value: &str) -> Result<String, String> {
    check("lease", value)
}

/// A namespace.
pub(crate) fn parse_namespace(value: &str) -> Result<String, String> {
    check("namespace", value)
}

/// A model.
pub(crate) fn parse_model(value: &str) -> Result<String, String> {
    check("model", value)
}

/// A holder.
pub(crate) fn parse_holder(value: &str) -> Result<String, String> {
    check("holder", value)
}

/// A pinning entity.
pub(crate) fn parse_entity(value: &str) -> Result<String, String> {
    check("entity", value)
}

/// The default holder: this host's name (up to its first dot) and a process id, `web-1:4242`.
pub(crate) fn default_holder(pid: u32) -> String {
    let uname = rustix::system::uname();
    let node = uname.nodename().to_string_lossy();
    let host: String = node
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_whitespace() || "#$".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    };
    format!("{host}:{pid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert!(parse_duration("0").unwrap_err().contains("zero"));
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
        assert!(parse_duration("soon").unwrap_err().contains("unparseable"));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn durations_print() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(15)), "15s");
        assert_eq!(format_duration(Duration::from_millis(14_960)), "15s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m5s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h2m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn names_are_checked() {
        assert!(parse_lease("backup").is_ok());
        assert!(parse_lease("a b").unwrap_err().contains("whitespace"));
        assert!(parse_model("m.1").is_err());
        let holder = default_holder(42);
        assert!(holder.ends_with(":42"));
        assert!(parse_holder(&holder).is_ok(), "{holder}");
    }
}
