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

// What the manager counts, in one place: `names` (the exported names, the only public part),
// `report` (the counters behind `Manager::report` and its `Report`), `histogram` (the report's
// latency histogram) and `export` (the `metrics` facade calls, empty without the feature).
pub(crate) mod export;
mod histogram;
mod names;
pub(crate) mod report;

pub use names::*;
