//! Test doubles for the lease workspace: a fake clock, an in-memory store, the store
//! conformance suite, mocks and fakes for downstream users' tests.
//!
//! Not written yet: this crate is an empty shell until its issue lands.
