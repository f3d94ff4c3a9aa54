//! [`PathKey`]: the path-shaped names of [`Leaser`](crate::Leaser) leases, and
//! [`PathKeyError`]. Re-exported from [`leaser`](crate::leaser).

use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::validate::{MAX_NAME_BYTES, shortened};

/// The bytes escaped in a [`PathKey`] segment: controls, space and every character that is
/// special in a URL path (`/`, `%`, `?`, `#`, …), plus `.` and `$`, which lease names may not
/// contain. Non-ASCII bytes are always escaped, so no whitespace of any kind survives.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'$')
    .add(b'%')
    .add(b'.')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A [`PathKey`] that could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lease key {key:?}: {reason}")]
pub struct PathKeyError {
    /// The key as given (for a constructor, the segments joined with `/`); for a key longer
    /// than 64 characters, only its first 64 and `…`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl PathKeyError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        PathKeyError {
            key: shortened(&key.into()),
            reason: reason.into(),
        }
    }
}

impl From<PathKeyError> for Error {
    /// A validation error for field `key`.
    fn from(err: PathKeyError) -> Self {
        Error::validation("key", err.key, err.reason)
    }
}

/// The name of a [`Leaser`](crate::Leaser) lease: a `/`-separated path whose segments are URL-path-escaped.
///
/// Programs' leases have the form `/module/<module>/...` (e.g. `/module/idv/user/bob`), the
/// system's own `/system/...` (e.g. `/system/runner/deployment-reservation/d1`). Build keys
/// with [`PathKey::system`] or [`PathKey::module`]; [`PathKey::parse`] reads the text form
/// back.
///
/// Any non-empty segment text is allowed: each is percent-escaped (every byte outside
/// unreserved ASCII and `!&'()*+,;=:@~`, including `/`, `%`, `.`, `#`, `$`, whitespace and all
/// non-ASCII bytes), so the text form is unambiguous, round-trips exactly, and is itself a
/// valid lease name for [`validate_string`](crate::validate_string).
///
/// Since the text form is the lease's name, it is at most
/// [`MAX_NAME_BYTES`](crate::MAX_NAME_BYTES) (1 KiB) long *once escaped*: every escaped byte
/// counts three (`%2F`), so a segment of non-ASCII text counts about three times its UTF-8
/// length. The constructors and [`PathKey::parse`] refuse a longer key with an error that says
/// its escaped length and the limit, rather than let the claim fail later.
///
/// ```
/// use lease_core::PathKey;
///
/// let key = PathKey::module("idv", ["user", "bob.smith@example.com"])?;
/// assert_eq!(key.to_string(), "/module/idv/user/bob%2Esmith@example%2Ecom");
/// assert_eq!(PathKey::parse(&key.to_string())?, key);
/// assert_eq!(key.module_name(), Some("idv"));
/// assert_eq!(key.path(), ["user", "bob.smith@example.com"]);
///
/// let err = PathKey::parse("/elsewhere/x").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"invalid lease key "/elsewhere/x": must start with "/system/" or "/module/<module>/""#
/// );
///
/// let err = PathKey::system(["é".repeat(200)]).unwrap_err();
/// assert_eq!(
///     err.reason,
///     "is 1208 bytes long once escaped, over the limit of 1024 bytes for a lease name"
/// );
/// # Ok::<(), lease_core::PathKeyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathKey {
    /// Every segment, unescaped: `["system", ...]` or `["module", <module>, ...]`.
    segments: Vec<String>,
}

impl PathKey {
    /// A system lease, `/system/<segments...>`.
    ///
    /// # Errors
    ///
    /// [`PathKeyError`] when there are no segments or one is empty, or when the escaped text
    /// form is longer than [`MAX_NAME_BYTES`](crate::MAX_NAME_BYTES).
    pub fn system<I, S>(segments: I) -> Result<PathKey, PathKeyError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut all = vec!["system".to_owned()];
        all.extend(segments.into_iter().map(Into::into));
        PathKey::from_segments(all)
    }

    /// A program's lease, `/module/<module>/<segments...>`.
    ///
    /// # Errors
    ///
    /// [`PathKeyError`] when `module` is empty, there are no segments, or one is empty, or
    /// when the escaped text form is longer than [`MAX_NAME_BYTES`](crate::MAX_NAME_BYTES).
    pub fn module<I, S>(module: impl Into<String>, segments: I) -> Result<PathKey, PathKeyError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut all = vec!["module".to_owned(), module.into()];
        all.extend(segments.into_iter().map(Into::into));
        PathKey::from_segments(all)
    }

    fn from_segments(segments: Vec<String>) -> Result<PathKey, PathKeyError> {
        let shown = || format!("/{}", segments.join("/"));
        let prefix = if segments[0] == "module" {
            if segments.get(1).is_none_or(String::is_empty) {
                return Err(PathKeyError::new(shown(), "the module name is empty"));
            }
            2
        } else {
            1
        };
        if segments.len() <= prefix {
            return Err(PathKeyError::new(
                shown(),
                "needs at least one segment after the prefix",
            ));
        }
        if let Some(i) = segments.iter().position(String::is_empty) {
            return Err(PathKeyError::new(
                shown(),
                format!("segment {i} is empty (segments count from 0, the prefix included)"),
            ));
        }
        let escaped: usize = segments
            .iter()
            .map(|seg| {
                utf8_percent_encode(seg, SEGMENT)
                    .map(str::len)
                    .fold(1usize, usize::saturating_add)
            })
            .fold(0, usize::saturating_add);
        if escaped > MAX_NAME_BYTES {
            return Err(PathKeyError::new(
                shown(),
                format!(
                    "is {escaped} bytes long once escaped, over the limit of {MAX_NAME_BYTES} \
                     bytes for a lease name"
                ),
            ));
        }
        Ok(PathKey { segments })
    }

    /// Parses the text form: `/system/<seg>/...` or `/module/<module>/<seg>/...`, each segment
    /// percent-escaped. Unnecessary escapes and lowercase hex digits are accepted; the
    /// [`Display`](fmt::Display) form is the canonical one.
    ///
    /// # Errors
    ///
    /// [`PathKeyError`] saying what is wrong: a key not starting with `/system/` or
    /// `/module/<module>/`, an empty segment (`//` or a trailing `/`), no segment after the
    /// prefix, a `%` not followed by two hex digits, or a segment that is not UTF-8 once
    /// unescaped, or a key whose canonical text form is longer than
    /// [`MAX_NAME_BYTES`](crate::MAX_NAME_BYTES).
    pub fn parse(text: &str) -> Result<PathKey, PathKeyError> {
        let err = |reason: String| PathKeyError::new(text, reason);
        // Unescaping shrinks a segment at most threefold (`%41` is `A`), so text this long
        // cannot have a canonical form within the limit: refuse it before any work.
        if text.len() > 3 * MAX_NAME_BYTES {
            return Err(err(format!(
                "is {} bytes long, over the limit of {MAX_NAME_BYTES} bytes for a lease name",
                text.len()
            )));
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(err(
                "must start with \"/system/\" or \"/module/<module>/\"".into()
            ));
        };
        let raw: Vec<&str> = rest.split('/').collect();
        match raw[0] {
            "system" | "module" => {}
            _ => {
                return Err(err(
                    "must start with \"/system/\" or \"/module/<module>/\"".into()
                ));
            }
        }
        let mut segments = Vec::with_capacity(raw.len());
        for (i, seg) in raw.iter().enumerate() {
            if seg.is_empty() {
                return Err(err(format!(
                    "segment {i} is empty (segments count from 0, the prefix included)"
                )));
            }
            segments.push(unescape(seg).map_err(|reason| err(format!("segment {i}: {reason}")))?);
        }
        PathKey::from_segments(segments).map_err(|e| err(e.reason))
    }

    /// Whether this is a `/system/...` key.
    pub fn is_system(&self) -> bool {
        self.segments[0] == "system"
    }

    /// The module of a `/module/<module>/...` key; `None` for a system key.
    pub fn module_name(&self) -> Option<&str> {
        (self.segments[0] == "module").then(|| self.segments[1].as_str())
    }

    /// The segments after the prefix (`/system` or `/module/<module>`), unescaped.
    pub fn path(&self) -> &[String] {
        let prefix = if self.is_system() { 1 } else { 2 };
        &self.segments[prefix..]
    }

    /// Every segment, the prefix included, unescaped.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

/// Decodes one raw segment, insisting on well-formed escapes and UTF-8.
fn unescape(seg: &str) -> Result<String, String> {
    let bytes = seg.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                let shown: String = seg[i..].chars().take(3).collect();
                return Err(format!(
                    "bad escape {shown:?}: '%' must be followed by two hex digits"
                ));
            }
        }
    }
    percent_decode_str(seg)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "not UTF-8 once unescaped".to_owned())
}

impl fmt::Display for PathKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for seg in &self.segments {
            write!(f, "/{}", utf8_percent_encode(seg, SEGMENT))?;
        }
        Ok(())
    }
}

impl FromStr for PathKey {
    type Err = PathKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PathKey::parse(s)
    }
}

impl Serialize for PathKey {
    /// As its text form.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PathKey {
    /// From its text form, with [`PathKey::parse`]'s checks.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PathKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate_string;
    use proptest::prelude::*;

    #[test]
    fn formats_and_parses_the_seed_examples() {
        let key = PathKey::module("idv", ["user", "bob"]).unwrap();
        assert_eq!(key.to_string(), "/module/idv/user/bob");
        let key = PathKey::system(["runner", "deployment-reservation", "d1"]).unwrap();
        assert_eq!(key.to_string(), "/system/runner/deployment-reservation/d1");
        assert!(key.is_system());
        assert_eq!(key.module_name(), None);
        assert_eq!(
            PathKey::parse("/system/runner/deployment-reservation/d1").unwrap(),
            key
        );
    }

    #[test]
    fn escapes_every_special_character() {
        let key = PathKey::system([
            "a/b", "c.d", "e#f", "g$h", "i%j", "k l", "m\tn", "ü", "x\u{a0}y",
        ])
        .unwrap();
        let text = key.to_string();
        assert_eq!(
            text,
            "/system/a%2Fb/c%2Ed/e%23f/g%24h/i%25j/k%20l/m%09n/%C3%BC/x%C2%A0y"
        );
        validate_string("lease", &text).unwrap();
        assert_eq!(PathKey::parse(&text).unwrap(), key);
    }

    #[test]
    fn lenient_escapes_parse_to_the_same_key() {
        let key = PathKey::parse("/module/m/%41%2e%c3%bc").unwrap();
        assert_eq!(key.path(), ["A.ü"]);
        assert_eq!(key.to_string(), "/module/m/A%2E%C3%BC");
    }

    #[test]
    fn parse_errors_name_the_problem() {
        for (text, reason) in [
            ("", "must start with \"/system/\" or \"/module/<module>/\""),
            (
                "system/a",
                "must start with \"/system/\" or \"/module/<module>/\"",
            ),
            (
                "/sys/a",
                "must start with \"/system/\" or \"/module/<module>/\"",
            ),
            ("/system", "needs at least one segment after the prefix"),
            ("/module/m", "needs at least one segment after the prefix"),
            (
                "/system/",
                "segment 1 is empty (segments count from 0, the prefix included)",
            ),
            (
                "/system/a//b",
                "segment 2 is empty (segments count from 0, the prefix included)",
            ),
            (
                "/module//a",
                "segment 1 is empty (segments count from 0, the prefix included)",
            ),
            (
                "/system/a%zz",
                "segment 1: bad escape \"%zz\": '%' must be followed by two hex digits",
            ),
            (
                "/system/a%4",
                "segment 1: bad escape \"%4\": '%' must be followed by two hex digits",
            ),
            ("/system/%FF", "segment 1: not UTF-8 once unescaped"),
        ] {
            let err = PathKey::parse(text).unwrap_err();
            assert_eq!(err.key, text);
            assert_eq!(err.reason, reason, "{text:?}");
        }
    }

    #[test]
    fn constructors_reject_empty_parts() {
        assert!(PathKey::system(Vec::<String>::new()).is_err());
        assert!(PathKey::system(["a", ""]).is_err());
        assert!(PathKey::module("", ["a"]).is_err());
        let err = PathKey::module("m", Vec::<String>::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid lease key "/module/m": needs at least one segment after the prefix"#
        );
        let core: Error = err.into();
        assert!(matches!(core, Error::Validation { field: "key", .. }));
    }

    #[test]
    fn serde_uses_the_text_form() {
        let key = PathKey::module("m", ["a b"]).unwrap();
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, r#""/module/m/a%20b""#);
        assert_eq!(serde_json::from_str::<PathKey>(&json).unwrap(), key);
        assert!(serde_json::from_str::<PathKey>(r#""/nope""#).is_err());
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            // Arbitrary unicode, whitespace and controls included.
            "\\PC{1,12}",
            any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
            // Dense in the characters that need escaping.
            proptest::collection::vec(
                prop::sample::select(vec![
                    ".", "#", "$", "%", "/", " ", "\t", "\n", "\u{a0}", "\u{2003}", "%2F", "%25",
                    "a", "Z", "9", "-", "~", "é", "😀", "?", "\\", "@",
                ]),
                1..8
            )
            .prop_map(|parts| parts.concat()),
        ]
    }

    /// The length of the text form of a key with these segments (prefix included), computed
    /// here by hand: each segment is `/` and its bytes, three for each escaped one.
    fn expected_len(segments: &[String]) -> usize {
        segments
            .iter()
            .map(|seg| {
                1 + seg
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-_~!&'()*+,;=:@".contains(&b) {
                            1
                        } else {
                            3
                        }
                    })
                    .sum::<usize>()
            })
            .sum()
    }

    #[test]
    fn keys_up_to_the_name_limit_are_accepted_and_longer_ones_refused() {
        // "/system/" is 8 bytes, "/module/m/" 10.
        let key = PathKey::system(["a".repeat(MAX_NAME_BYTES - 8)]).unwrap();
        assert_eq!(key.to_string().len(), MAX_NAME_BYTES);
        validate_string("lease", &key.to_string()).unwrap();
        let key = PathKey::module("m", ["a".repeat(MAX_NAME_BYTES - 10)]).unwrap();
        assert_eq!(key.to_string().len(), MAX_NAME_BYTES);
        // Escaped bytes count three: 338 dots are 1014 bytes.
        let key = PathKey::system([format!("{}ab", ".".repeat(338))]).unwrap();
        assert_eq!(key.to_string().len(), MAX_NAME_BYTES);
        for over in [
            PathKey::system(["a".repeat(MAX_NAME_BYTES - 7)]),
            PathKey::module("m", ["a".repeat(MAX_NAME_BYTES - 9)]),
            PathKey::system([format!("{}abc", ".".repeat(338))]),
            PathKey::module("é".repeat(200), ["x"]),
            PathKey::system(vec!["s"; 600]),
            PathKey::system(["x".repeat(1 << 20)]),
        ] {
            let err = over.unwrap_err();
            assert!(
                err.reason
                    .contains("bytes long once escaped, over the limit of 1024 bytes"),
                "{err}"
            );
            // The error quotes only the start of the key.
            assert!(err.key.chars().count() <= 65, "{}", err.key);
            let core: Error = err.into();
            assert!(matches!(core, Error::Validation { field: "key", .. }));
        }
    }

    #[test]
    fn parse_refuses_text_whose_canonical_form_is_over_the_limit() {
        let at_limit = format!("/system/{}", "a".repeat(MAX_NAME_BYTES - 8));
        assert_eq!(PathKey::parse(&at_limit).unwrap().to_string(), at_limit);
        let err = PathKey::parse(&format!("{at_limit}b")).unwrap_err();
        assert!(err.reason.contains("once escaped, over the limit"), "{err}");
        // Needless escapes make the text longer than its canonical form: judged on the latter.
        let lenient = format!("/system/{}", "%41".repeat(1000));
        assert_eq!(PathKey::parse(&lenient).unwrap().path(), ["A".repeat(1000)]);
        // Text that cannot shrink to the limit is refused before it is split or unescaped.
        let huge = format!("/system/{}", "%41".repeat(100_000));
        let err = PathKey::parse(&huge).unwrap_err();
        assert_eq!(
            err.reason,
            "is 300008 bytes long, over the limit of 1024 bytes for a lease name"
        );
        assert!(err.to_string().len() < 300, "{err}");
    }

    proptest! {
        #[test]
        fn system_keys_round_trip(segs in proptest::collection::vec(segment(), 1..5)) {
            let mut all = vec!["system".to_owned()];
            all.extend(segs.iter().cloned());
            let expected = expected_len(&all);
            let key = match PathKey::system(segs.clone()) {
                Ok(key) => key,
                Err(e) => {
                    prop_assert!(expected > MAX_NAME_BYTES, "{} refused: {}", expected, e);
                    prop_assert!(e.reason.contains("over the limit"), "{}", e);
                    return Ok(());
                }
            };
            let text = key.to_string();
            prop_assert_eq!(text.len(), expected);
            prop_assert!(text.len() <= MAX_NAME_BYTES);
            prop_assert!(validate_string("lease", &text).is_ok(), "{}", text);
            let back = PathKey::parse(&text).unwrap();
            prop_assert_eq!(back.path(), &segs[..]);
            prop_assert_eq!(back.to_string(), text);
            prop_assert_eq!(&back, &key);
        }

        #[test]
        fn module_keys_round_trip(module in segment(), segs in proptest::collection::vec(segment(), 1..5)) {
            let mut all = vec!["module".to_owned(), module.clone()];
            all.extend(segs.iter().cloned());
            let expected = expected_len(&all);
            let key = match PathKey::module(module.clone(), segs.clone()) {
                Ok(key) => key,
                Err(e) => {
                    prop_assert!(expected > MAX_NAME_BYTES, "{} refused: {}", expected, e);
                    prop_assert!(e.reason.contains("over the limit"), "{}", e);
                    return Ok(());
                }
            };
            let text = key.to_string();
            prop_assert_eq!(text.len(), expected);
            prop_assert!(validate_string("lease", &text).is_ok(), "{}", text);
            prop_assert_eq!(text.matches('/').count(), segs.len() + 2);
            let back = PathKey::parse(&text).unwrap();
            prop_assert_eq!(back.module_name(), Some(module.as_str()));
            prop_assert_eq!(back.path(), &segs[..]);
            prop_assert_eq!(back, key);
        }

        #[test]
        fn long_segments_are_refused_exactly_past_the_limit(
            ch in prop::sample::select(vec!["a", ".", "é", "😀", "%", "~", " "]),
            count in 0usize..1200,
        ) {
            let seg = ch.repeat(count.max(1));
            let all = vec!["system".to_owned(), seg.clone()];
            let expected = expected_len(&all);
            let built = PathKey::system([seg]);
            prop_assert_eq!(built.is_ok(), expected <= MAX_NAME_BYTES, "{}", expected);
            if let Ok(key) = built {
                prop_assert_eq!(key.to_string().len(), expected);
            }
        }

        #[test]
        fn distinct_keys_have_distinct_text(a in proptest::collection::vec(segment(), 1..4), b in proptest::collection::vec(segment(), 1..4)) {
            let (Ok(ka), Ok(kb)) = (PathKey::system(a), PathKey::system(b)) else {
                return Ok(());
            };
            prop_assert_eq!(ka == kb, ka.to_string() == kb.to_string());
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            if let Ok(key) = PathKey::parse(&text) {
                // Whatever parses has a canonical form that parses to the same key.
                prop_assert_eq!(PathKey::parse(&key.to_string()).unwrap(), key);
            }
        }
    }
}
