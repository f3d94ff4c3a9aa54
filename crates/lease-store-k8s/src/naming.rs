//! How a lease [`Key`] maps onto a Kubernetes object: its name, its labels and the annotation
//! that keeps the exact key.
//!
//! - **Name**: a readable, sanitized prefix built from the key's parts, a dash, and 20 hex digits
//!   (80 bits) of the SHA-256 of the key's JSON. Always a valid DNS-1123 label of at most 63
//!   characters; deterministic; distinct keys get distinct names (the hash covers the exact key,
//!   so keys that sanitize alike still differ).
//! - **Labels**: [`LABEL_NAMESPACE`], [`LABEL_MODEL`], [`LABEL_LEASE`] carry the key's parts
//!   when they are valid label values, or `h-` and 40 hex digits of their SHA-256 when not, so a
//!   namespace and model is one label-selected list; [`LABEL_MANAGED_BY`] marks every object
//!   of this crate (the watch selects on it).
//! - **Annotations**: [`ANNOTATION_KEY`] keeps the exact key as JSON; lists filter on it, so a
//!   label collision can only over-select, never mix keys up.

use lease_core::Key;
use sha2::{Digest, Sha256};

/// The label every object of this crate carries (`app.kubernetes.io/managed-by`).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "lease-rs";
/// The label holding the key's namespace (or its hash).
pub const LABEL_NAMESPACE: &str = "lease-rs/namespace";
/// The label holding the key's model (or its hash).
pub const LABEL_MODEL: &str = "lease-rs/model";
/// The label holding the key's lease name (or its hash).
pub const LABEL_LEASE: &str = "lease-rs/lease";
/// The annotation holding the exact key as JSON: `{"namespace":…,"model":…,"lease":…}`.
pub const ANNOTATION_KEY: &str = "lease-rs/key";
/// The annotation holding the entities that pin the lease, as a sorted JSON array of strings.
pub const ANNOTATION_PINS: &str = "lease-rs/pins";
/// The most bytes the [`ANNOTATION_PINS`] annotation may hold (its JSON text): 128 KiB. A pin
/// that would take it past this is refused with a validation error naming the limit, before
/// anything is written; unpinning others makes room. Kubernetes refuses an object whose
/// annotations total more than 256 KiB, and the key (a few KiB at most) and the claim (with
/// up to [`MAX_METADATA_BYTES`](lease_core::MAX_METADATA_BYTES) of metadata) share that
/// budget; without a bound, one pin per entity would grow the object until every write to it
/// failed, the holder's renewals included.
pub const MAX_PINS_BYTES: usize = 128 * 1024;
/// The annotation describing the current claim as JSON: `{"holder", "generation",
/// "durationNanos", "metadata"}`. It keeps the exact (sub-second) duration and the claim's
/// metadata; it is only believed while its holder and generation match the object's own fields.
pub const ANNOTATION_CLAIM: &str = "lease-rs/claim";
/// The annotation carrying a Lease's 64-bit fencing generation as JSON:
/// `{"generation": G, "leaseTransitions": T}`, where `T` is the `leaseTransitions` written with
/// it. `leaseTransitions` itself stays client-go's small transition counter; client-go keeps
/// the annotation and adds one to `leaseTransitions` on each of its takeovers, so the
/// generation reads as `G + (leaseTransitions - T)`.
pub const ANNOTATION_GENERATION: &str = "lease-rs/generation";

/// Hex digits of the hash in an object name.
const NAME_HASH_HEX: usize = 20;
/// The longest DNS-1123 label.
const MAX_NAME: usize = 63;
/// The longest label value.
const MAX_LABEL_VALUE: usize = 63;

fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    out
}

/// The exact key as the JSON kept in [`ANNOTATION_KEY`].
pub fn key_json(key: &Key) -> String {
    // Serializing three strings cannot fail.
    serde_json::to_string(key).unwrap_or_default()
}

/// The Kubernetes object name for `key`: a valid DNS-1123 label of at most 63 characters,
/// deterministic, and distinct for distinct keys.
///
/// ```
/// use lease_core::Key;
/// use lease_store_k8s::naming::object_name;
///
/// let name = object_name(&Key::new("application-leadership", "model-1", "mysql/0"));
/// assert!(name.starts_with("application-leadership-model-1-mysql-0-"));
/// assert!(name.len() <= 63);
/// ```
pub fn object_name(key: &Key) -> String {
    let hash = sha256_hex(key_json(key).as_bytes());
    let hash = &hash[..NAME_HASH_HEX];
    let raw = format!("{}-{}-{}", key.namespace, key.model, key.lease);
    let prefix = sanitize(&raw, MAX_NAME - NAME_HASH_HEX - 1);
    if prefix.is_empty() {
        hash.to_owned()
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Lowercase ASCII alphanumerics, every other run of characters one `-`, no leading or trailing
/// `-`, at most `max` characters.
fn sanitize(raw: &str, max: usize) -> String {
    let mut out = String::with_capacity(raw.len().min(max));
    let mut dash = false;
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c);
        } else {
            dash = true;
        }
        if out.len() >= max {
            break;
        }
    }
    out.truncate(max);
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Whether `value` is a valid, non-empty Kubernetes label value:
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
pub fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    value.len() <= MAX_LABEL_VALUE
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The label value for one part of a key: the part itself when it is a valid label value,
/// otherwise `h-` and 40 hex digits of its SHA-256.
pub fn label_value(part: &str) -> String {
    if is_label_value(part) {
        part.to_owned()
    } else {
        format!("h-{}", &sha256_hex(part.as_bytes())[..40])
    }
}

/// The labels of the object for `key`, including [`LABEL_MANAGED_BY`].
pub fn key_labels(key: &Key) -> [(&'static str, String); 4] {
    [
        (LABEL_MANAGED_BY, MANAGED_BY.to_owned()),
        (LABEL_NAMESPACE, label_value(&key.namespace)),
        (LABEL_MODEL, label_value(&key.model)),
        (LABEL_LEASE, label_value(&key.lease)),
    ]
}

/// The label selector of every object of this crate.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// The label selector of one namespace and model's objects (filter the result on
/// [`ANNOTATION_KEY`]: hashed label values may, in theory, collide).
pub fn group_selector(namespace: &str, model: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_NAMESPACE}={},{LABEL_MODEL}={}",
        label_value(namespace),
        label_value(model)
    )
}

/// Whether `name` is a valid DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    name.len() <= MAX_NAME
        && alnum(first)
        && alnum(last)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// Whether `name` is a valid DNS-1123 subdomain (the names of Leases and ConfigMaps):
/// dot-separated DNS-1123 labels, at most 253 characters.
///
/// ```
/// use lease_store_k8s::naming::is_dns1123_subdomain;
///
/// assert!(is_dns1123_subdomain("my-controller-lock"));
/// assert!(is_dns1123_subdomain("kube-scheduler.example.com"));
/// assert!(!is_dns1123_subdomain("Upper"));
/// assert!(!is_dns1123_subdomain("a..b"));
/// ```
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            let bytes = part.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            matches!((bytes.first(), bytes.last()), (Some(f), Some(l)) if alnum(f) && alnum(l))
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn readable_names() {
        let k = Key::new("application-leadership", "c1b2", "mysql");
        let name = object_name(&k);
        assert!(
            name.starts_with("application-leadership-c1b2-mysql-"),
            "{name}"
        );
        assert_eq!(name.len(), "application-leadership-c1b2-mysql-".len() + 20);
        assert_eq!(name, object_name(&k.clone()));
        // Unusual keys still make valid names.
        for k in [
            Key::new("ÜÜ", "::", "@@"),
            Key::new("-", "_", "/"),
            Key::new("X".repeat(300), "m", "l"),
        ] {
            let name = object_name(&k);
            assert!(is_dns1123_label(&name), "{k:?} -> {name}");
        }
        assert_eq!(object_name(&Key::new("ÜÜ", "::", "@@")).len(), 20);
        // Keys that sanitize alike differ by hash.
        assert_ne!(
            object_name(&Key::new("a-b", "c", "d")),
            object_name(&Key::new("a", "b-c", "d"))
        );
        assert_ne!(
            object_name(&Key::new("A", "m", "l")),
            object_name(&Key::new("a", "m", "l"))
        );
    }

    #[test]
    fn label_values() {
        assert_eq!(label_value("model-1"), "model-1");
        assert_eq!(label_value("A_b-9"), "A_b-9");
        for bad in ["mysql/0", "-x", "x_", "ü", &"a".repeat(64)] {
            let v = label_value(bad);
            assert!(v.starts_with("h-") && v.len() == 42, "{bad} -> {v}");
            assert!(is_label_value(&v));
        }
        assert_ne!(label_value("a/0"), label_value("a/1"));
        assert_eq!(
            group_selector("ns", "m/1"),
            format!(
                "app.kubernetes.io/managed-by=lease-rs,lease-rs/namespace=ns,lease-rs/model={}",
                label_value("m/1")
            )
        );
    }

    fn part() -> impl Strategy<Value = String> {
        // Everything the lease validation allows, weighted towards the awkward.
        prop_oneof![
            "[a-z0-9-]{1,12}",
            "[A-Za-z0-9_:/@~!%^&*()-]{1,40}",
            "\\PC{1,80}".prop_map(|s| {
                let s: String = s
                    .chars()
                    .filter(|c| !c.is_whitespace() && !lease_core::FORBIDDEN_CHARS.contains(c))
                    .collect();
                if s.is_empty() { "x".to_owned() } else { s }
            }),
            "[a-z]{60,120}",
        ]
    }

    fn key() -> impl Strategy<Value = Key> {
        (part(), part(), part()).prop_map(|(n, m, l)| Key::new(n, m, l))
    }

    proptest! {
        #[test]
        fn names_are_valid_and_deterministic(k in key()) {
            prop_assert!(k.validate().is_ok());
            let name = object_name(&k);
            prop_assert!(is_dns1123_label(&name), "{:?} -> {}", k, name);
            prop_assert_eq!(&name, &object_name(&k));
            for (_, v) in key_labels(&k) {
                prop_assert!(is_label_value(&v), "{:?} -> label {}", k, v);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4))]

        #[test]
        fn distinct_keys_get_distinct_names(keys in proptest::collection::vec(key(), 2500)) {
            let mut seen: HashMap<String, Key> = HashMap::new();
            for k in keys {
                let name = object_name(&k);
                if let Some(other) = seen.get(&name) {
                    prop_assert_eq!(other, &k, "collision on {}", name);
                }
                seen.insert(name, k);
            }
        }
    }
}
