//! Lease stores on Kubernetes: `coordination.k8s.io/v1` Lease objects and ConfigMaps, for
//! programs that run on many hosts.
//!
//! Not written yet: this crate is an empty shell until its issue lands. It will hold a store
//! whose every write is conditional on a `resourceVersion`, that judges expiry on this process's
//! monotonic clock as client-go does, and that passes the `lease-testkit` conformance suite
//! against a real API server.
