//! The lock record both stores keep, independent of the object that carries it: how it is read
//! from an object's fields and annotations (tolerating hand-edited garbage), how it is written,
//! and how a record plus the instant it was first observed decides whether the lease is held.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff;
use lease_core::{Generation, Info, Key, Request, Timestamp};
use serde::{Deserialize, Serialize};

use crate::generation;
use crate::naming::{ANNOTATION_CLAIM, ANNOTATION_KEY, ANNOTATION_PINS, MAX_PINS_BYTES, key_json};

/// How long a claim lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Term {
    /// This long after the record was (observed to be) written.
    Finite(Duration),
    /// Until revoked (a ConfigMap lock created without a timeout).
    Forever,
}

/// What the key annotation of an object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyField {
    /// No annotation (a hand-made object): taken to be the key its name was computed from.
    Missing,
    /// An annotation that is not a key's JSON.
    Garbage,
    /// The exact key.
    Key(Key),
}

/// The claim annotation ([`ANNOTATION_CLAIM`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimAnnotation {
    holder: String,
    generation: u64,
    duration_nanos: u64,
    /// Present (even as `null`) exactly when the claim carried metadata.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    metadata: Option<serde_json::Value>,
}

/// Reads a field that is present as `Some`, even when its value is `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// The raw fields of a lock record as an object carries them, before any interpretation.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawFields<'a> {
    /// `holderIdentity` (empty means none).
    pub(crate) holder: Option<&'a str>,
    /// `leaseDurationSeconds`, or an error describing why it could not be read.
    pub(crate) duration_secs: Option<Result<i64, String>>,
    /// The record says it never expires.
    pub(crate) forever: bool,
    /// `acquireTime`.
    pub(crate) acquire_time: Option<jiff::Timestamp>,
    /// `renewTime`.
    pub(crate) renew_time: Option<jiff::Timestamp>,
    /// `leaseTransitions`.
    pub(crate) transitions: Option<Result<i64, String>>,
    /// `leaseTransitions` is a Lease's client-go counter and the generation is in the
    /// [`ANNOTATION_GENERATION`](crate::naming::ANNOTATION_GENERATION) annotation (see
    /// [`generation`](crate::generation)); else `leaseTransitions` is the whole generation.
    pub(crate) generation_in_annotation: bool,
    /// The object's annotations.
    pub(crate) annotations: Option<&'a BTreeMap<String, String>>,
    /// Problems the object's decoder already found.
    pub(crate) problems: Vec<String>,
}

/// A lock record, interpreted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    /// The key the object records.
    pub(crate) key: KeyField,
    /// The holder; `None` when free (no or empty `holderIdentity`).
    pub(crate) holder: Option<String>,
    /// How long the claim lasts; `None` when missing or invalid (then the lease is free).
    pub(crate) term: Option<Term>,
    /// When the current holder acquired it (wall clock; informational).
    pub(crate) acquire_time: Option<jiff::Timestamp>,
    /// When the current holder last renewed it (wall clock; used only with `trust_renew_time`).
    pub(crate) renew_time: Option<jiff::Timestamp>,
    /// The fencing generation; a lower bound of it when not `generation_known`.
    pub(crate) generation: u64,
    /// Whether the object says its generation unambiguously (see
    /// [`generation`](crate::generation)): a holder cannot extend a record whose generation
    /// is unknown, as that would write a generation lower than its claim's.
    pub(crate) generation_known: bool,
    /// A Lease's `leaseTransitions`, client-go's transition counter.
    pub(crate) transitions: u32,
    /// The claim's metadata.
    pub(crate) metadata: Option<serde_json::Value>,
    /// The entities pinning the lease.
    pub(crate) pins: BTreeSet<String>,
    /// What was wrong with the object, for a warning.
    pub(crate) problems: Vec<String>,
}

impl Record {
    /// Refuses pins that take this record's pins annotation past [`MAX_PINS_BYTES`], with a
    /// validation error on `entity` (the pin just added) naming the limit: checked on the
    /// record as read, before it is written.
    pub(crate) fn check_pins_size(&self, key: &Key, entity: &str) -> lease_core::Result<()> {
        let bytes = serde_json::to_string(&self.pins).map_or(usize::MAX, |text| text.len());
        if bytes <= MAX_PINS_BYTES {
            return Ok(());
        }
        Err(lease_core::Error::validation(
            "entity",
            entity,
            format!(
                "pinning {key} by {} entities would make its {ANNOTATION_PINS} annotation \
                 {bytes} bytes, over the limit of {MAX_PINS_BYTES} (MAX_PINS_BYTES); unpin \
                 others first",
                self.pins.len()
            ),
        ))
    }

    /// A record for an object that did not exist yet.
    pub(crate) fn empty(key: &Key, generation: u64) -> Record {
        Record {
            key: KeyField::Key(key.clone()),
            holder: None,
            term: None,
            acquire_time: None,
            renew_time: None,
            generation,
            generation_known: true,
            transitions: 0,
            metadata: None,
            pins: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    /// Interprets an object's raw fields. Never fails: whatever cannot be read is recorded in
    /// `problems` and read in the way that cannot make anyone a holder by mistake.
    pub(crate) fn from_raw(raw: RawFields<'_>) -> Record {
        let mut problems = raw.problems;
        let holder = raw.holder.filter(|h| !h.is_empty()).map(str::to_owned);

        let annotations = raw.annotations;
        let decoded = if raw.generation_in_annotation {
            generation::decode_lease(raw.transitions.as_ref(), annotations, &mut problems)
        } else {
            generation::decode_configmap(raw.transitions.as_ref(), &mut problems)
        };
        let generation = decoded.generation;
        let get = |name: &str| annotations.and_then(|a| a.get(name));

        let key = match get(ANNOTATION_KEY) {
            None => KeyField::Missing,
            Some(text) => match serde_json::from_str::<Key>(text) {
                Ok(k) => KeyField::Key(k),
                Err(e) => {
                    problems.push(format!("unreadable {ANNOTATION_KEY} annotation: {e}"));
                    KeyField::Garbage
                }
            },
        };

        let pins = match get(ANNOTATION_PINS) {
            None => BTreeSet::new(),
            Some(text) => match serde_json::from_str::<BTreeSet<String>>(text) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!(
                        "unreadable {ANNOTATION_PINS} annotation ({e}): read as unpinned"
                    ));
                    BTreeSet::new()
                }
            },
        };

        // The claim annotation is believed only while it describes the object's current claim.
        let claim = get(ANNOTATION_CLAIM).and_then(|text| {
            match serde_json::from_str::<ClaimAnnotation>(text) {
                Ok(c) => Some(c),
                Err(e) => {
                    problems.push(format!("unreadable {ANNOTATION_CLAIM} annotation: {e}"));
                    None
                }
            }
        });
        let claim =
            claim.filter(|c| Some(&c.holder) == holder.as_ref() && c.generation == generation);

        let term = if raw.forever {
            Some(Term::Forever)
        } else {
            match raw.duration_secs {
                Some(Ok(secs)) if secs > 0 => {
                    let whole = Duration::from_secs(secs.unsigned_abs());
                    let exact = claim
                        .as_ref()
                        .map(|c| Duration::from_nanos(c.duration_nanos));
                    // The exact duration is used only when it rounds up to the stored seconds.
                    match exact {
                        Some(d)
                            if d <= whole && d > whole.saturating_sub(Duration::from_secs(1)) =>
                        {
                            Some(Term::Finite(d))
                        }
                        _ => Some(Term::Finite(whole)),
                    }
                }
                Some(Ok(secs)) => {
                    if holder.is_some() {
                        problems.push(format!(
                            "leaseDurationSeconds {secs} is not positive: read as not held"
                        ));
                    }
                    None
                }
                Some(Err(e)) => {
                    if holder.is_some() {
                        problems.push(format!(
                            "unreadable leaseDurationSeconds ({e}): read as not held"
                        ));
                    }
                    None
                }
                None => {
                    if holder.is_some() {
                        problems.push("missing leaseDurationSeconds: read as not held".into());
                    }
                    None
                }
            }
        };

        Record {
            key,
            holder,
            term,
            acquire_time: raw.acquire_time,
            renew_time: raw.renew_time,
            generation,
            generation_known: decoded.known,
            transitions: decoded.transitions,
            metadata: claim.and_then(|c| c.metadata),
            pins,
            problems,
        }
    }

    /// The part of the record whose change means "the holder wrote": any change restarts the
    /// observed-time expiry. Pins and the key are left out, so pinning does not extend a lease.
    pub(crate) fn fingerprint(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{}",
            self.holder, self.term, self.acquire_time, self.renew_time, self.generation
        )
    }

    /// Sets this record's annotations on `annotations` (key, pins, claim), leaving others alone.
    pub(crate) fn write_annotations(&self, key: &Key, annotations: &mut BTreeMap<String, String>) {
        annotations.insert(ANNOTATION_KEY.to_owned(), key_json(key));
        if self.pins.is_empty() {
            annotations.remove(ANNOTATION_PINS);
        } else {
            annotations.insert(
                ANNOTATION_PINS.to_owned(),
                serde_json::to_string(&self.pins).unwrap_or_default(),
            );
        }
        match (&self.holder, self.term) {
            (Some(holder), Some(term)) => {
                let duration_nanos = match term {
                    Term::Finite(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
                    Term::Forever => 0,
                };
                let claim = ClaimAnnotation {
                    holder: holder.clone(),
                    generation: self.generation,
                    duration_nanos,
                    metadata: self.metadata.clone(),
                };
                annotations.insert(
                    ANNOTATION_CLAIM.to_owned(),
                    serde_json::to_string(&claim).unwrap_or_default(),
                );
            }
            _ => {
                annotations.remove(ANNOTATION_CLAIM);
            }
        }
    }

    /// `leaseDurationSeconds` for the term: whole seconds, rounded up, at least 1.
    pub(crate) fn duration_secs(&self) -> Option<i32> {
        match self.term? {
            Term::Finite(d) => {
                let mut secs = d.as_secs();
                if d.subsec_nanos() > 0 {
                    secs = secs.saturating_add(1);
                }
                Some(i32::try_from(secs.max(1)).unwrap_or(i32::MAX))
            }
            Term::Forever => None,
        }
    }

    /// The record after `request`'s successful claim with generation `generation`.
    pub(crate) fn claimed(&self, request: &Request, term: Term, generation: u64) -> Record {
        let now = wall_now();
        Record {
            holder: Some(request.holder.clone()),
            term: Some(term),
            acquire_time: Some(now),
            renew_time: Some(self.next_renew_time(now)),
            generation,
            generation_known: true,
            transitions: generation::next_transitions(self.transitions),
            metadata: request.metadata.clone(),
            problems: Vec::new(),
            ..self.clone()
        }
    }

    /// The record after its holder extended it to `term`.
    pub(crate) fn extended(&self, request: &Request, term: Term) -> Record {
        let now = wall_now();
        Record {
            term: Some(term),
            renew_time: Some(self.next_renew_time(now)),
            metadata: request.metadata.clone().or_else(|| self.metadata.clone()),
            acquire_time: self.acquire_time.or(Some(now)),
            problems: Vec::new(),
            ..self.clone()
        }
    }

    /// The record after its holder gave it up, as client-go's release writes it: no holder, a
    /// one-second duration, both times now, the generation kept.
    pub(crate) fn revoked(&self) -> Record {
        let now = wall_now();
        Record {
            holder: None,
            term: Some(Term::Finite(Duration::from_secs(1))),
            acquire_time: Some(now),
            renew_time: Some(self.next_renew_time(now)),
            metadata: None,
            problems: Vec::new(),
            ..self.clone()
        }
    }

    /// `now`, or just after the current renew time if the wall clock has not moved past it, so
    /// that every renewal changes the record (observers restart their expiry on a change).
    fn next_renew_time(&self, now: jiff::Timestamp) -> jiff::Timestamp {
        match self.renew_time {
            Some(prev) if prev >= now => prev
                .checked_add(jiff::SignedDuration::from_micros(1))
                .unwrap_or(prev),
            _ => now,
        }
    }
}

/// Whether a lease is held, as one process judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// Nobody holds it: no holder, or an unreadable duration.
    Free,
    /// It had a holder whose claim ran out unrenewed.
    Expired {
        /// The former holder.
        holder: String,
    },
    /// It is held.
    Held {
        /// The holder.
        holder: String,
        /// Until when (on the store's clock); a pin keeps it held past this.
        expiry: Timestamp,
    },
}

/// How expiry is judged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Judge {
    /// Trust `renewTime` (the holder's wall clock) instead of the observation instant.
    pub(crate) trust_renew_time: bool,
}

impl Judge {
    /// The expiry of `record`, first observed unchanged at `observed_at`, on the store's clock
    /// whose current reading is `now`.
    pub(crate) fn expiry(
        &self,
        record: &Record,
        observed_at: Timestamp,
        now: Timestamp,
    ) -> Option<Timestamp> {
        match record.term? {
            Term::Forever => Some(Timestamp::MAX),
            Term::Finite(d) => {
                if self.trust_renew_time
                    && let Some(renew) = record.renew_time
                {
                    // The holder's wall-clock expiry, translated onto our clock through our own
                    // wall clock.
                    let wall_expiry = renew.checked_add(d).unwrap_or(jiff::Timestamp::MAX);
                    let left = wall_now().duration_until(wall_expiry);
                    let expiry = if left.is_negative() {
                        now.saturating_sub(left.unsigned_abs())
                    } else {
                        now.saturating_add(left.unsigned_abs())
                    };
                    return Some(expiry);
                }
                Some(observed_at.saturating_add(d))
            }
        }
    }

    /// Whether `record` is held at `now`.
    pub(crate) fn status(&self, record: &Record, observed_at: Timestamp, now: Timestamp) -> Status {
        let Some(holder) = record.holder.clone() else {
            return Status::Free;
        };
        let Some(expiry) = self.expiry(record, observed_at, now) else {
            return Status::Free;
        };
        if !record.pins.is_empty() || now < expiry {
            Status::Held { holder, expiry }
        } else {
            Status::Expired { holder }
        }
    }

    /// The lease's information when it is held at `now`.
    pub(crate) fn info(
        &self,
        record: &Record,
        observed_at: Timestamp,
        now: Timestamp,
    ) -> Option<Info> {
        match self.status(record, observed_at, now) {
            Status::Held { holder, expiry } => Some(Info {
                holder,
                expiry,
                generation: Generation(record.generation),
                metadata: record.metadata.clone(),
                pinned: !record.pins.is_empty(),
            }),
            Status::Free | Status::Expired { .. } => None,
        }
    }
}

/// The wall clock now, at the microsecond precision of a `MicroTime`.
pub(crate) fn wall_now() -> jiff::Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    jiff::Timestamp::from_microsecond(micros).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn garbage_is_never_held() {
        let judge = Judge {
            trust_renew_time: false,
        };
        let t = Timestamp::from_nanos(1_000);
        let garbage = annotations(&[
            (ANNOTATION_KEY, "{not json"),
            (ANNOTATION_PINS, "[1, 2"),
            (ANNOTATION_CLAIM, "42"),
        ]);
        for (secs, transitions) in [
            (None, None),
            (Some(Ok(0)), Some(Ok(-3))),
            (Some(Ok(-5)), Some(Err("x".to_owned()))),
            (Some(Err("abc".to_owned())), None),
        ] {
            let record = Record::from_raw(RawFields {
                holder: Some("me"),
                duration_secs: secs,
                transitions,
                annotations: Some(&garbage),
                ..RawFields::default()
            });
            assert_eq!(judge.status(&record, t, t), Status::Free, "{record:?}");
            assert!(judge.info(&record, t, t).is_none());
            assert!(!record.problems.is_empty());
            assert!(record.pins.is_empty());
            assert_eq!(record.key, KeyField::Garbage);
        }
        // An empty holder is free whatever the duration.
        let record = Record::from_raw(RawFields {
            holder: Some(""),
            duration_secs: Some(Ok(15)),
            ..RawFields::default()
        });
        assert_eq!(judge.status(&record, t, t), Status::Free);
    }

    #[test]
    fn observed_time_expiry_and_exact_durations() {
        let judge = Judge {
            trust_renew_time: false,
        };
        let key = Key::new("n", "m", "l");
        let base = Record::empty(&key, 4);
        let request = Request::new("h", Duration::from_millis(1500));
        let claimed = base.claimed(&request, Term::Finite(request.duration), 5);
        assert_eq!(claimed.duration_secs(), Some(2));
        let mut ann = BTreeMap::new();
        claimed.write_annotations(&key, &mut ann);
        let read = Record::from_raw(RawFields {
            holder: Some("h"),
            duration_secs: Some(Ok(2)),
            transitions: Some(Ok(5)),
            annotations: Some(&ann),
            ..RawFields::default()
        });
        assert_eq!(read.term, Some(Term::Finite(Duration::from_millis(1500))));
        assert_eq!(read.key, KeyField::Key(key.clone()));
        let t0 = Timestamp::from_nanos(10_000_000_000);
        let held = judge.status(&read, t0, t0.saturating_add(Duration::from_millis(1499)));
        assert!(matches!(held, Status::Held { .. }));
        let gone = judge.status(&read, t0, t0.saturating_add(Duration::from_millis(1500)));
        assert_eq!(gone, Status::Expired { holder: "h".into() });

        // A claim annotation from another claim (say client-go took over) is ignored.
        let other = Record::from_raw(RawFields {
            holder: Some("client-go"),
            duration_secs: Some(Ok(2)),
            transitions: Some(Ok(6)),
            annotations: Some(&ann),
            ..RawFields::default()
        });
        assert_eq!(other.term, Some(Term::Finite(Duration::from_secs(2))));
        assert_eq!(other.metadata, None);

        // Pinned: never expires.
        let mut pinned = read.clone();
        pinned.pins.insert("e".into());
        assert!(matches!(
            judge.status(&pinned, t0, Timestamp::MAX),
            Status::Held { .. }
        ));
    }

    #[test]
    fn null_metadata_is_not_no_metadata() {
        let key = Key::new("n", "m", "l");
        for metadata in [
            None,
            Some(serde_json::Value::Null),
            Some(serde_json::json!({"a": 1})),
        ] {
            let mut request = Request::new("h", Duration::from_secs(1));
            request.metadata = metadata.clone();
            let claimed =
                Record::empty(&key, 0).claimed(&request, Term::Finite(request.duration), 1);
            let mut ann = BTreeMap::new();
            claimed.write_annotations(&key, &mut ann);
            let read = Record::from_raw(RawFields {
                holder: Some("h"),
                duration_secs: Some(Ok(1)),
                transitions: Some(Ok(1)),
                annotations: Some(&ann),
                ..RawFields::default()
            });
            assert_eq!(read.metadata, metadata);
        }
    }

    #[test]
    fn renewals_always_change_the_record() {
        let key = Key::new("n", "m", "l");
        let request = Request::new("h", Duration::from_secs(1));
        let mut r = Record::empty(&key, 0).claimed(&request, Term::Finite(request.duration), 1);
        // Even with a renew time in the future (a wall clock set back), the next one differs.
        r.renew_time = Some(
            wall_now()
                .checked_add(jiff::SignedDuration::from_secs(60))
                .unwrap(),
        );
        let next = r.extended(&request, Term::Finite(request.duration));
        assert!(next.renew_time > r.renew_time);
        assert_ne!(next.fingerprint(), r.fingerprint());
        // Pins do not change the fingerprint.
        let mut pinned = next.clone();
        pinned.pins.insert("x".into());
        assert_eq!(pinned.fingerprint(), next.fingerprint());
    }

    #[test]
    fn trusting_renew_time() {
        let judge = Judge {
            trust_renew_time: true,
        };
        let key = Key::new("n", "m", "l");
        let mut r = Record::empty(&key, 0);
        r.holder = Some("h".into());
        r.term = Some(Term::Finite(Duration::from_secs(10)));
        // Renewed 20 s ago by the wall clock: expired although just observed.
        r.renew_time = Some(
            wall_now()
                .checked_sub(jiff::SignedDuration::from_secs(20))
                .unwrap(),
        );
        let now = Timestamp::from_nanos(100_000_000_000);
        assert!(matches!(judge.status(&r, now, now), Status::Expired { .. }));
        r.renew_time = Some(wall_now());
        assert!(matches!(judge.status(&r, now, now), Status::Held { .. }));
    }
}
