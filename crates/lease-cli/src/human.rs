//! Human input and output: durations read and printed as `15s`, `2m`, `1.5s`; names checked
//! with the lease rules before any I/O; table cells padded and made safe to print.

use std::time::Duration;

/// The longest duration any option takes: 10 years (humantime's `10y`, 3652.5 days). Longer
/// ones are surely typos, and refusing them keeps every deadline computed from them in range.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(315_576_000);

/// Parses a positive duration such as `15s`, `2m`, `1h30m`, `500ms` (humantime's syntax; a bare
/// number is seconds), at most [`MAX_DURATION`].
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
        let secs = trimmed
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())
            .ok_or_else(|| format!("unparseable duration {trimmed:?} (expected e.g. 15s, 2m)"))?;
        // Past Duration's range is past MAX_DURATION too: say so rather than "unparseable".
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    } else {
        match humantime::parse_duration(trimmed) {
            Ok(parsed) => parsed,
            // Without a fraction, an overflow can only mean too many years.
            Err(humantime::DurationError::NumberOverflow) if !trimmed.contains('.') => {
                Duration::MAX
            }
            Err(e) => {
                return Err(format!(
                    "unparseable duration {trimmed:?} (expected e.g. 15s, 2m, 500ms): {e}"
                ));
            }
        }
    };
    if parsed.is_zero() {
        return Err(format!(
            "zero duration {trimmed:?}: durations must be greater than zero"
        ));
    }
    if parsed > MAX_DURATION {
        return Err(format!(
            "duration {trimmed:?} is too long: at most 10y (ten years of 365.25 days)"
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

/// Appends `cell` to `line`, made safe to print (see [`cell_width`]), then spaces up to `width`
/// characters.
///
/// Not `format!("{cell:<width$}")`: a width over 65535 makes the formatter panic, and a
/// store may hold names of any length (written by an older version, another tool, or by hand).
pub(crate) fn push_cell(line: &mut String, cell: &str, width: usize) {
    let mut used = 0usize;
    for c in cell.chars() {
        if c.is_control() {
            // An escape sequence from a stored name must not reach the terminal.
            for e in c.escape_default() {
                line.push(e);
                used = used.saturating_add(1);
            }
        } else {
            line.push(c);
            used = used.saturating_add(1);
        }
    }
    line.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
}

/// The width [`push_cell`] gives `cell`: its characters, control characters counted as their
/// escaped form (`\u{1b}`).
pub(crate) fn cell_width(cell: &str) -> usize {
    cell.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().count()
            } else {
                1
            }
        })
        .fold(0, usize::saturating_add)
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
    fn huge_durations_are_refused_with_the_limit() {
        assert_eq!(parse_duration("10y"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration("3652d"),
            Ok(Duration::from_secs(3652 * 86_400))
        );
        for text in [
            "11y",
            "3653d",
            "300000000000y",
            "584942417355y",
            "18446744073709551615s",
            "315576001",
            "99999999999999999999999",
            "1e400",
            "9999999999999999999999999999999999999999y",
        ] {
            let err = parse_duration(text).unwrap_err();
            let expected = if text == "1e400" {
                "unparseable"
            } else {
                "too long: at most 10y"
            };
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(
            parse_duration("300000000000y")
                .unwrap_err()
                .contains("too long")
        );
        assert!(
            parse_duration("315576001")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn cells_pad_at_any_length_and_escape_controls() {
        let mut line = String::new();
        push_cell(&mut line, "ab", 5);
        assert_eq!(line, "ab   ");
        let long = "x".repeat(70_000);
        let mut line = String::new();
        push_cell(&mut line, &long, 70_003);
        assert_eq!(line.len(), 70_003);
        let mut line = String::new();
        push_cell(&mut line, "é😀", 3);
        assert_eq!(line, "é😀 ");
        let evil = "a\u{1b}[2Jb\u{7}";
        assert_eq!(cell_width(evil), 2 + 6 + 3 + 5);
        let mut line = String::new();
        push_cell(&mut line, evil, 0);
        assert_eq!(line, "a\\u{1b}[2Jb\\u{7}");
        assert!(!line.chars().any(char::is_control));
        assert_eq!(line.chars().count(), cell_width(evil));
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
