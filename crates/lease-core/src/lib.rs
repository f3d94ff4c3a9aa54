//! The core of the lease workspace: keys, lease information, requests, validation, the error
//! set, and the traits every other crate implements or uses.
//!
//! A *lease* is a named, time-bounded claim that one holder renews and others wait for: the way
//! exactly one copy of a program leads, owns a shard or runs a job at a time. This crate follows
//! Juju's `core/lease`:
//!
//! - [`Key`], [`Request`], [`Info`], [`Generation`] (the fencing token) and [`Timestamp`];
//! - [`Error`], one enum holding Juju's error set, with `is_*` helpers that see through
//!   wrapping;
//! - the facades a program uses ([`Checker`]/[`Token`], [`Claimer`], [`Revoker`], [`Pinner`],
//!   [`Reader`]) and the [`Facades`] trait that hands them out;
//! - [`Store`], where leases are recorded, with the contract every store keeps;
//! - [`Secretary`], the per-namespace validation rules;
//! - [`Clock`], so that tests drive expiry with a fake clock, and [`SystemClock`].
//!
//! # Limits
//!
//! Every name (namespace, model, lease, holder, pinning entity) is non-empty, without
//! whitespace or any of `.#$`, and at most [`MAX_NAME_BYTES`] (1 KiB) of UTF-8; a
//! [`PathKey`]'s escaped text form counts against the same limit. A request's metadata is at
//! most [`MAX_METADATA_BYTES`] (64 KiB) of compact JSON. The limits are the same for every
//! store and are checked before any I/O, with an error naming the field, the length and the
//! limit. Durations have no upper limit: expiries saturate at [`Timestamp::MAX`], and no
//! duration makes the lease code overflow. Why these numbers: they keep a key comfortably
//! inside what every backing system stores in one row or object (a Kubernetes object keeps the
//! exact key, holder and metadata in annotations, which share 256 KiB, and the API server
//! refuses a larger write), and keep error messages, tables and logs readable.
//!
//! It does no I/O: stores live in `lease-store-sqlite` and `lease-store-k8s`, the worker that
//! serialises store calls in `lease-manager`, test doubles in `lease-testkit`.
//!
//! # When to pick it
//!
//! Depend on it alone when you write code *against* leases (take a `&dyn Claimer` or a
//! `&dyn Facades`), a new [`Store`], or test doubles: it pulls in no database, HTTP or
//! Kubernetes crate. To run leases, add a store and `lease-manager`. Runnable programs for each
//! task are in the workspace's `examples/`, e.g.:
//!
//! - [a singular worker](https://github.com/lease-rs/lease/blob/main/examples/src/bin/singular_worker.rs)
//! - [application leadership with pins](https://github.com/lease-rs/lease/blob/main/examples/src/bin/app_leadership_pins.rs)
//! - [a Leaser with metadata](https://github.com/lease-rs/lease/blob/main/examples/src/bin/leaser_metadata.rs)
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use lease_core::{Key, Request};
//!
//! let key = Key::new("singular-controller", "model-1", "backup");
//! key.validate()?;
//! let request = Request::new("machine-0", Duration::from_secs(15))
//!     .with_metadata(serde_json::json!({"pid": 42}));
//! request.validate()?;
//!
//! let bad = Key::new("singular-controller", "model 1", "backup");
//! assert_eq!(
//!     bad.validate().unwrap_err().to_string(),
//!     r#"invalid model "model 1": contains whitespace"#
//! );
//! # Ok::<(), lease_core::Error>(())
//! ```

// One public path per item: every item is exported at the crate root, the modules are private.
mod clock;
mod error;
mod facade;
mod leaser;
mod pathkey;
mod secretary;
mod store;
mod types;
mod validate;

pub use clock::{Clock, Sleep, SystemClock};
pub use error::{
    BoxError, Error, ErrorKind, Result, has_kind, is_aborted, is_claim_denied, is_held, is_invalid,
    is_not_held, is_timeout, is_wait_cancelled,
};
pub use facade::{Checker, Claimer, Facades, Pinner, Reader, Revoker, Token};
pub use leaser::{
    LeaseGuard, LeaseHandle, LeaseInfo, Leaser, LeaserError, LeaserExt, MIN_TTL, PathKey,
    PathKeyError, validate_ttl,
};
pub use secretary::{
    APPLICATION_LEADERSHIP_NAMESPACE, DefaultSecretary, LeadershipSecretary,
    SINGULAR_CONTROLLER_NAMESPACE, Secretary, SingularSecretary, standard_secretaries,
};
pub use store::{Op, Outcome, StartedApply, Store};
pub use types::{Generation, Info, Key, Request, Timestamp};
pub use validate::{
    FORBIDDEN_CHARS, MAX_METADATA_BYTES, MAX_NAME_BYTES, validate_duration, validate_metadata,
    validate_string,
};

/// Re-exported so implementors of the facades name the same cancellation type.
pub use tokio_util::sync::CancellationToken;
