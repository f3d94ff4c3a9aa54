//! The names of the metrics the manager and the high-level APIs export through the
//! [`metrics`](https://docs.rs/metrics) facade when the `metrics` feature is on.
//!
//! Install any `metrics` recorder (e.g. `metrics-exporter-prometheus`) before starting the
//! manager; with no recorder installed the calls cost next to nothing. Histograms are recorded
//! in seconds; their buckets are the exporter's choice.
//!
//! | name | kind | labels | what |
//! | --- | --- | --- | --- |
//! | `lease_claims_total` | counter | `namespace`, `outcome` | claim requests answered, by outcome: `claimed` (a new holding, a new fencing generation), `extended` (the holder renewed), `denied` (`ClaimDenied`: someone else holds it, decided from memory or by the store), `timeout` (still `Timeout` after the last retry), `error` (a store failure) |
//! | `lease_retries_total` | counter | `namespace` | claims and revokes put on a retry timer after `Timeout` or `Invalid` |
//! | `lease_timeouts_total` | counter | `namespace` | claims and revokes answered `Timeout` after their last attempt |
//! | `lease_revokes_total` | counter | `namespace` | successful revokes |
//! | `lease_store_errors_total` | counter | — | store failures (not lease outcomes such as `Held`) |
//! | `lease_store_latency_seconds` | histogram | `call` | every store call the worker makes: `apply`, `leases`, `lease_group`, `pin_lease`, `unpin_lease`, `pinned`, `poll_changes` |
//! | `lease_leases_held` | gauge | — | leases this process holds through its managers (claimed, not yet revoked, lost or forgotten after expiry) |
//! | `lease_leases_known` | gauge | — | leases in the managers' views (own and others') |
//! | `lease_waiters` | gauge | — | callers of `wait_until_expired` the managers hold |
//! | `lease_leader` | gauge | `elector` | 1 while the [`LeaderElector`](crate::LeaderElector) named `elector` ([`ElectionConfig::name`](crate::ElectionConfig::name)) leads, else 0 |
//! | `lease_leadership_changes_total` | counter | `elector`, `transition` | terms `started` and `stopped` |
//! | `lease_leaser_leases_held` | gauge | `namespace` | leases held through [`ManagerLeaser`](crate::ManagerLeaser)s |
//! | `lease_leaser_lost_total` | counter | `namespace` | [`ManagerLeaser`](crate::ManagerLeaser) leases lost (renewals failed, or re-claimed by someone else) |
//!
//! The same counts, without labels, are in [`Manager::report`](crate::Manager::report) with or
//! without the feature.

/// Counter `lease_claims_total{namespace, outcome}`.
pub const CLAIMS_TOTAL: &str = "lease_claims_total";
/// Counter `lease_retries_total{namespace}`.
pub const RETRIES_TOTAL: &str = "lease_retries_total";
/// Counter `lease_timeouts_total{namespace}`.
pub const TIMEOUTS_TOTAL: &str = "lease_timeouts_total";
/// Counter `lease_revokes_total{namespace}`.
pub const REVOKES_TOTAL: &str = "lease_revokes_total";
/// Counter `lease_store_errors_total`.
pub const STORE_ERRORS_TOTAL: &str = "lease_store_errors_total";
/// Histogram `lease_store_latency_seconds{call}`.
pub const STORE_LATENCY_SECONDS: &str = "lease_store_latency_seconds";
/// Gauge `lease_leases_held`.
pub const LEASES_HELD: &str = "lease_leases_held";
/// Gauge `lease_leases_known`.
pub const LEASES_KNOWN: &str = "lease_leases_known";
/// Gauge `lease_waiters`.
pub const WAITERS: &str = "lease_waiters";
/// Gauge `lease_leader{elector}`.
pub const LEADER: &str = "lease_leader";
/// Counter `lease_leadership_changes_total{elector, transition}`.
pub const LEADERSHIP_CHANGES_TOTAL: &str = "lease_leadership_changes_total";
/// Gauge `lease_leaser_leases_held{namespace}`.
pub const LEASER_LEASES_HELD: &str = "lease_leaser_leases_held";
/// Counter `lease_leaser_lost_total{namespace}`.
pub const LEASER_LOST_TOTAL: &str = "lease_leaser_lost_total";
