//! Lease stores on Kubernetes: [`LeaseObjectStore`] on `coordination.k8s.io/v1` Lease objects and
//! [`ConfigMapStore`] on ConfigMaps, for programs that run on many hosts. Both implement
//! [`lease_core::Store`] and pass the `lease-testkit` conformance suite against a real API
//! server.
//!
//! Also here, the Kubernetes-only parts of the higher-level APIs (lease-manager's
//! `LeaderElector`, `ManagerLeaser` and `ResourceLocks` work over these stores unchanged):
//!
//! - [`LeaderElectionRecord`]: client-go's leader-election record, with lossless conversions to
//!   and from a Lease's `LeaseSpec`;
//! - [`StoreOptions::object_for`]: bind a key to an exact object name, to share one Lease with
//!   client-go's leader election (see [Sharing a Lease with client-go](#sharing-a-lease-with-client-go));
//! - [`EventRecorder`]: leadership changes as Kubernetes Events on the Lease, for the
//!   elector's callbacks;
//! - [`ConfigMapLock`]: the API of Go's ConfigMap locks (in the style of operator-sdk's leader
//!   lock) over [`ConfigMapStore`].
//!
//! # When to pick it
//!
//! When the copies of your program run on many hosts of a Kubernetes cluster. Run it under
//! `lease-manager` for leader election ([`EventRecorder`] records its Events), auto-renewing
//! leases and resource locks; [`ConfigMapLock`] is a lock on its own. Runnable examples:
//!
//! - [leader election with graceful handover](https://github.com/lease-rs/lease/blob/main/examples/src/bin/k8s_leader_election.rs)
//! - [a ConfigMap lock](https://github.com/lease-rs/lease/blob/main/examples/src/bin/configmap_lock.rs)
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use lease_core::{Clock, Key, Request, Store, SystemClock};
//! use lease_store_k8s::LeaseObjectStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
//! let mut store = LeaseObjectStore::new(client, "my-app", clock);
//!
//! let key = Key::new("singular-controller", "prod", "backup");
//! let info = store
//!     .claim_lease(&key, &Request::new("host-a", Duration::from_secs(15)))
//!     .await?;
//! println!("fencing token {}", info.generation);
//! // Renewal: one conditional PUT, no read.
//! store
//!     .extend_lease(&key, &Request::new("host-a", Duration::from_secs(15)))
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Objects
//!
//! One object per [`Key`](lease_core::Key) in the store's Kubernetes namespace (see
//! [`naming`]):
//!
//! - **name**: a readable prefix from the key's parts plus 20 hex digits of the SHA-256 of the
//!   exact key, e.g. `application-leadership-model-1-mysql-0-3f2a…`: a DNS-1123 label of at most
//!   63 characters, deterministic, distinct for distinct keys; or the name the key is bound to
//!   with [`StoreOptions::object_for`];
//! - **labels** `lease-rs/namespace`, `lease-rs/model`, `lease-rs/lease` (each part, or `h-` and
//!   its hash when it is not a valid label value) and `app.kubernetes.io/managed-by=lease-rs`;
//! - **annotations** `lease-rs/key` (the exact key, JSON), `lease-rs/pins` (the pinning entities,
//!   JSON array, at most [`naming::MAX_PINS_BYTES`]: a pin past it is refused), `lease-rs/claim` (holder, generation, exact duration in nanoseconds and the
//!   claim's metadata, JSON; believed only while holder and generation match the fields below),
//!   and on a Lease `lease-rs/generation` (the 64-bit fencing generation and the
//!   `leaseTransitions` written with it, see [Generations](#generations));
//! - **the record**, for a Lease in `spec` with client-go's leader-election meaning, so
//!   client-go can share the object: `holderIdentity` (empty = free), `leaseDurationSeconds`
//!   (rounded *up* to whole seconds; the exact duration is in the claim annotation),
//!   `acquireTime`, `renewTime` (MicroTime, this host's wall clock, informational),
//!   `leaseTransitions` (client-go's transition counter: one more on every successful claim,
//!   also by the same holder after expiry or revoke). A revoke clears `holderIdentity` as
//!   client-go's release does; the stores never delete objects. For a ConfigMap, the same
//!   fields are strings in `data` (see [`ConfigMapStore`]), plus `expiry`, and its
//!   `leaseTransitions` is the whole 64-bit generation.
//!
//! # Generations
//!
//! The fencing [`Generation`](lease_core::Generation) of a claim is above the object's current
//! one, above every generation this process has seen on the object (also after it was
//! deleted), and at least the claiming host's wall clock in microseconds since the Unix epoch.
//! So it never goes backwards for a key, even when someone deletes the object under a paused
//! holder (`kubectl delete`, a Helm reinstall, a namespace clean-up, the garbage collector),
//! provided claims on a key average fewer than one per microsecond and the re-creating host's
//! wall clock is later than the clocks of the claims on the deleted object (a claimant that
//! saw the old object is above it regardless). Generations are therefore large and not
//! consecutive; only their order means anything.
//!
//! A claimant that saw the holder of an object that was then deleted does not re-create it while
//! that holder's claim may still run as this process judges it (the holder does not know yet
//! and keeps acting until its next renewal fails): the claim is refused with `Held` until then.
//! A process that never saw the object cannot know, and creates it at once: the generation is
//! what fences the old holder off then.
//!
//! On a Lease, `leaseTransitions` is an `int32` client-go reads and increments, so it stays a
//! small counter and the generation goes in the `lease-rs/generation` annotation beside the
//! counter value it was written with. client-go keeps the annotation and adds one to the
//! counter on each of its takeovers: the generation reads as the annotation's plus the
//! counter's increase since. A Lease without the annotation (written by client-go) reads its
//! `leaseTransitions` as the generation.
//!
//! # Expiry
//!
//! Like client-go by default, a lease counts as expired only once its record (holder, duration,
//! times, generation; not pins) has not changed for its full duration *as observed on this
//! process's clock* (the injected [`Clock`](lease_core::Clock)), so hosts' clock skew cannot
//! make two holders. The store remembers, per object, the record and the instant it first saw
//! it; a record never seen before counts as just observed (so a fresh process waits a full
//! duration before taking over a lease it did not see being renewed), and the store's own
//! successful claims and extends count from the call's start. [`Info::expiry`](lease_core::Info::expiry) is that instant
//! plus the duration, on the injected clock. [`StoreOptions::trust_renew_time`] judges by the
//! holder's `renewTime` instead (off by default). A pinned lease never expires.
//!
//! Hand-edited objects never panic the store and never make anyone a holder by mistake: a
//! missing or empty `holderIdentity` is free; a missing, zero, negative or unreadable duration
//! is free (claimable, never "held by us"); a missing, negative or unreadable generation
//! (`leaseTransitions`, the `lease-rs/generation` annotation, or a counter below the
//! annotation's) is *unknown*: the record is held as it says, but its holder cannot extend it
//! (that could write a lower generation; it must claim again), and the next claim goes above
//! what the object still says and above the wall clock; unreadable pin annotations read as unpinned, an unreadable claim
//! annotation as no metadata and whole-second duration. Each such object is reported once with
//! `tracing::warn!`.
//!
//! # Sharing a Lease with client-go
//!
//! Bind the elector's key to the Lease client-go uses ([`StoreOptions::object_for`]); then a
//! lease-manager `LeaderElector` and client-go's `leaderelection` contend for the same object:
//! an object written by client-go (no lease-rs annotations) is held by its `holderIdentity`
//! for `leaseDurationSeconds` from when this process observed it change; our writes fill in
//! every field client-go reads (and change `renewTime` on every renewal); every write is
//! conditional on the `resourceVersion`; the bound object is watched by name even without our
//! labels. A client-go v1.20 candidate and a Rust candidate on one Lease never both lead, and
//! each reports the other as the leader (tested against a real API server with a real
//! client-go binary, `tests/clientgo.rs`). Keep both sides' `leaseDuration` equal, and their
//! `renewDeadline` shorter than it.
//!
//! # Requests
//!
//! Every write is conditional: a create (`POST`), which fails with 409 AlreadyExists for the
//! loser of a race, or a replace (`PUT`) carrying the `resourceVersion` it was decided on; never
//! an apply or unconditional patch. A 409 means re-read and re-decide, so a lost race reports
//! `Held` or `Invalid` as the contract says.
//!
//! | operation | requests |
//! | --- | --- |
//! | claim, unknown key | `GET` (404) then `POST` |
//! | claim, free or expired in the cache | `PUT` |
//! | extend by the holder (steady state) | one `PUT` on the object of our last write; no read |
//! | revoke | `PUT` clearing `holderIdentity` |
//! | denial (`Held`, `Invalid`, `NotHeld`) | confirmed by a `GET` when decided on the cache |
//! | `lease_group` | one `LIST` with a label selector (none once the watch is synced) |
//! | `leases`, `pinned` | `GET` or one `LIST` (none once the watch is synced) |
//! | `change_notifier`, `poll_changes` | one watch, started on first use; no polling |
//!
//! The watch (`kube::runtime::watcher`: resumes from the last `resourceVersion`, re-lists after
//! `410 Gone`, backs off on errors) keeps the cache current and bumps the change counter for
//! every change made by someone else.
//!
//! # Errors
//!
//! [`K8sStoreError`] classifies API failures; it converts into [`lease_core::Error`]: 5xx, 429,
//! connection failures and request timeouts become [`Timeout`](lease_core::Error::Timeout)
//! (retry); 401/403 become a store error naming the verb, resource and namespace of the missing
//! permission; a missing namespace is a store error saying so.
//!
//! # Permissions
//!
//! The minimal Role, in the store's namespace (drop the resource you do not use):
//!
//! ```yaml
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: Role
//! metadata:
//!   name: lease-rs
//!   namespace: my-app
//! rules:
//!   - apiGroups: ["coordination.k8s.io"]
//!     resources: ["leases"]
//!     verbs: ["get", "list", "watch", "create", "update"]
//!   - apiGroups: [""]
//!     resources: ["configmaps"]
//!     verbs: ["get", "list", "watch", "create", "update"]
//!   # Only for programs that record leader-election events (client-go does, and so does
//!   # EventRecorder; the stores do not).
//!   - apiGroups: [""]
//!     resources: ["events"]
//!     verbs: ["create"]
//! ```
//!
//! Bind it to the program's service account with a RoleBinding. Without `list`/`watch` the
//! stores still work, but the watch fails (logged) and every poll says "changed".

mod cache;
mod codec;
mod configmap;
mod configmap_lock;
mod engine;
mod error;
mod events;
mod generation;
mod leader_election_record;
mod lease;
pub mod naming;
mod options;
mod record;
mod store_impl;
mod watch;

pub use configmap::{
    ConfigMapStore, ConfigMapStoreBuilder, DATA_ACQUIRE_TIME, DATA_DURATION, DATA_EXPIRY,
    DATA_GENERATION, DATA_HOLDER, DATA_RENEW_TIME, NEVER, OwnerPod,
};
pub use configmap_lock::{CONFIGMAP_LOCK_NAMESPACE, ConfigMapLock, ConfigMapLockError};
pub use error::K8sStoreError;
pub use events::{BECAME_LEADER, EVENT_REASON, EventRecorder, STOPPED_LEADING};
pub use leader_election_record::LeaderElectionRecord;
pub use lease::LeaseObjectStore;
pub use options::StoreOptions;

#[cfg(test)]
mod tests;

// The README's Rust example is compiled and run as a doctest, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
