//! The names of the exported metrics, one constant each (public as
//! [`lease_manager::metric`](crate::metric)'s items).

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
