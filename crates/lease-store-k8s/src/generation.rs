//! The fencing generation of a lock object, and why it never goes backwards for a key.
//!
//! A Kubernetes object can be deleted at any time (`kubectl delete`, a Helm reinstall, a
//! namespace clean-up, the garbage collector after the owner pod of a ConfigMap lock), and
//! with it every number it carried. So a claim never takes "the object's generation plus one"
//! alone: it takes the largest of
//!
//! - the object's generation plus one,
//! - the largest generation this process has ever seen on an object of that name, plus one
//!   (kept after the object is deleted), and
//! - the wall clock of the claiming host in microseconds since the Unix epoch
//!   ([`wall_clock_generation`]).
//!
//! **The invariant**: the generations of successful claims on one key strictly increase, even
//! across deletion and re-creation of its object, provided that (a) claims on the key average
//! fewer than one per microsecond (an API server serves a few thousand writes a second in
//! all), and (b) when an object is re-created, the re-creating host's wall clock is later than
//! the wall clock of every host at its claims on the deleted object (hosts' clocks agree to
//! within the time between the deleted object's last claim and its re-creation, and no clock
//! is set back by more than that). A claimant that saw the old object (every watching
//! follower) is above it whatever the clocks say.
//!
//! On a Lease, `leaseTransitions` is an `int32` that client-go reads and increments: it stays
//! client-go's transition counter (one more per claim, starting again from 0 before it could
//! overflow) and the 64-bit generation goes in the [`ANNOTATION_GENERATION`] annotation with
//! the counter value written beside it. client-go keeps unknown annotations and adds one to
//! `leaseTransitions` on each of its takeovers, so the generation reads as the annotation's
//! plus the counter's increase since; an object without the annotation (client-go made it)
//! reads `leaseTransitions` as its generation. A counter below the annotation's, a negative or
//! unreadable counter or an unreadable annotation makes the generation *unknown*: the record
//! still names its holder (held as it says), but its holder cannot extend it (that would write
//! a lower generation), and the next claim starts above the wall clock as above.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::naming::ANNOTATION_GENERATION;

/// The [`ANNOTATION_GENERATION`] annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationAnnotation {
    generation: u64,
    lease_transitions: u32,
}

/// A record's generation as read from its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// The generation; when not `known`, a lower bound of it.
    pub(crate) generation: u64,
    /// Whether the object says its generation unambiguously.
    pub(crate) known: bool,
    /// A Lease's `leaseTransitions` (0 when unreadable), to count on from.
    pub(crate) transitions: u32,
}

/// Reads the generation of a Lease: `transitions` is its `leaseTransitions` (`None` when
/// absent, `Err` when unreadable), `annotations` its annotations. Problems are pushed to
/// `problems`.
pub(crate) fn decode_lease(
    transitions: Option<&Result<i64, String>>,
    annotations: Option<&BTreeMap<String, String>>,
    problems: &mut Vec<String>,
) -> Decoded {
    let counter = match transitions {
        Some(Ok(t)) => match u32::try_from(*t) {
            Ok(t) => Some(t),
            Err(_) => {
                problems.push(format!(
                    "leaseTransitions {t} is out of range: generation unknown"
                ));
                None
            }
        },
        Some(Err(e)) => {
            problems.push(format!(
                "unreadable leaseTransitions ({e}): generation unknown"
            ));
            None
        }
        None => {
            problems.push("missing leaseTransitions: generation unknown".to_owned());
            None
        }
    };
    let annotation = annotations
        .and_then(|a| a.get(ANNOTATION_GENERATION))
        .map(|text| serde_json::from_str::<GenerationAnnotation>(text).map_err(|e| (text, e)));
    let unknown = |generation: u64| Decoded {
        generation,
        known: false,
        transitions: counter.unwrap_or(0),
    };
    match (annotation, counter) {
        // Written by client-go (or a lease-rs before the annotation): the counter is all.
        (None, Some(t)) => Decoded {
            generation: u64::from(t),
            known: true,
            transitions: t,
        },
        (None, None) => unknown(0),
        (Some(Ok(a)), Some(t)) if t >= a.lease_transitions => {
            match a.generation.checked_add(u64::from(t - a.lease_transitions)) {
                Some(generation) => Decoded {
                    generation,
                    known: true,
                    transitions: t,
                },
                None => {
                    problems.push(format!(
                        "{ANNOTATION_GENERATION} {} overflows: generation unknown",
                        a.generation
                    ));
                    unknown(a.generation)
                }
            }
        }
        (Some(Ok(a)), Some(t)) => {
            problems.push(format!(
                "leaseTransitions {t} is below the {} recorded in {ANNOTATION_GENERATION}: \
                 generation unknown",
                a.lease_transitions
            ));
            unknown(a.generation)
        }
        (Some(Ok(a)), None) => unknown(a.generation),
        (Some(Err((text, e))), t) => {
            problems.push(format!(
                "unreadable {ANNOTATION_GENERATION} annotation {text:?} ({e}): generation unknown"
            ));
            unknown(t.map_or(0, u64::from))
        }
    }
}

/// Reads the generation of a ConfigMap, whose `leaseTransitions` is the whole 64-bit
/// generation as a decimal string.
pub(crate) fn decode_configmap(
    transitions: Option<&Result<i64, String>>,
    problems: &mut Vec<String>,
) -> Decoded {
    let (generation, known) = match transitions {
        Some(Ok(t)) if *t >= 0 => (t.unsigned_abs(), true),
        Some(Ok(t)) => {
            problems.push(format!("negative leaseTransitions {t}: generation unknown"));
            (0, false)
        }
        Some(Err(e)) => {
            problems.push(format!(
                "unreadable leaseTransitions ({e}): generation unknown"
            ));
            (0, false)
        }
        None => {
            problems.push("missing leaseTransitions: generation unknown".to_owned());
            (0, false)
        }
    };
    Decoded {
        generation,
        known,
        transitions: 0,
    }
}

/// The annotation value recording `generation` written together with `leaseTransitions` =
/// `transitions`.
pub(crate) fn annotation(generation: u64, transitions: u32) -> String {
    serde_json::to_string(&GenerationAnnotation {
        generation,
        lease_transitions: transitions,
    })
    .unwrap_or_default()
}

/// `leaseTransitions` after one more claim: one more, starting again from 0 before client-go's
/// own increment (an `int32`) could overflow.
pub(crate) fn next_transitions(transitions: u32) -> u32 {
    match transitions.checked_add(1) {
        Some(t) if i32::try_from(t).is_ok_and(|t| t < i32::MAX) => t,
        _ => 0,
    }
}

/// The least generation a claim made now may take: this host's wall clock in microseconds
/// since the Unix epoch (0 for a clock before it). See the module documentation for the
/// assumption it rests on.
pub(crate) fn wall_clock_generation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(annotation_value: Option<&str>) -> Option<BTreeMap<String, String>> {
        annotation_value.map(|v| {
            [(ANNOTATION_GENERATION.to_owned(), v.to_owned())]
                .into_iter()
                .collect()
        })
    }

    fn lease(t: Option<Result<i64, String>>, annotation_value: Option<&str>) -> Decoded {
        let mut problems = Vec::new();
        let decoded = decode_lease(t.as_ref(), with(annotation_value).as_ref(), &mut problems);
        assert_eq!(
            problems.is_empty(),
            decoded.known,
            "{decoded:?} {problems:?}"
        );
        decoded
    }

    #[test]
    fn client_go_objects_read_their_counter() {
        assert_eq!(
            lease(Some(Ok(4)), None),
            Decoded {
                generation: 4,
                known: true,
                transitions: 4
            }
        );
    }

    #[test]
    fn client_go_takeovers_after_ours_count_on_from_the_annotation() {
        let ours = annotation(1_700_000_000_000_000, 5);
        assert_eq!(
            lease(Some(Ok(5)), Some(&ours)).generation,
            1_700_000_000_000_000
        );
        // client-go took over twice, keeping our annotation.
        let read = lease(Some(Ok(7)), Some(&ours));
        assert_eq!(read.generation, 1_700_000_000_000_002);
        assert_eq!(read.transitions, 7);
        assert!(read.known);
    }

    #[test]
    fn anything_that_could_lower_it_is_unknown() {
        let ours = annotation(1_700_000_000_000_000, 5);
        // The counter went down (a hand edit): unknown, never below the annotation.
        let read = lease(Some(Ok(2)), Some(&ours));
        assert!(!read.known);
        assert_eq!(read.generation, 1_700_000_000_000_000);
        for t in [
            None,
            Some(Ok(-1)),
            Some(Ok(i64::MAX)),
            Some(Err("x".to_owned())),
        ] {
            let read = lease(t.clone(), Some(&ours));
            assert!(!read.known, "{t:?}");
            assert_eq!(read.generation, 1_700_000_000_000_000);
            assert!(!lease(t, None).known);
        }
        for garbage in ["", "{", "7", r#"{"generation":-1,"leaseTransitions":0}"#] {
            let read = lease(Some(Ok(3)), Some(garbage));
            assert!(!read.known, "{garbage}");
            assert_eq!(read.generation, 3);
        }
        let huge = annotation(u64::MAX, 0);
        assert!(!lease(Some(Ok(1)), Some(&huge)).known);
    }

    #[test]
    fn configmaps_carry_the_whole_generation() {
        let mut problems = Vec::new();
        let read = decode_configmap(Some(&Ok(1_700_000_000_000_123)), &mut problems);
        assert!(read.known && problems.is_empty());
        assert_eq!(read.generation, 1_700_000_000_000_123);
        for t in [None, Some(Ok(-3)), Some(Err("many".to_owned()))] {
            let read = decode_configmap(t.as_ref(), &mut problems);
            assert!(!read.known, "{t:?}");
        }
    }

    #[test]
    fn the_counter_stays_valid_for_client_go() {
        assert_eq!(next_transitions(0), 1);
        assert_eq!(next_transitions(41), 42);
        // client-go adds one to what we write: it must still fit an int32.
        let max = u32::try_from(i32::MAX).unwrap();
        assert_eq!(next_transitions(max - 2), max - 1);
        assert_eq!(next_transitions(max - 1), 0);
        assert_eq!(next_transitions(u32::MAX), 0);
    }

    #[test]
    fn the_wall_clock_seed_is_in_microseconds() {
        let seed = wall_clock_generation();
        // 2023-11-14 in microseconds; a millisecond seed would be 1000 times smaller.
        assert!(seed > 1_700_000_000_000_000, "{seed}");
        assert!(wall_clock_generation() >= seed);
    }
}
