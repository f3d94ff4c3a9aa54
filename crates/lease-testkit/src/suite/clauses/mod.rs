//! The cases, one file per clause of the [`Store`](lease_core::Store) contract, each case an
//! `async fn(&impl StoreBuilder) -> Result<(), CaseFailure>`, and what they share
//! ([`support`]).
//!
//! These modules are private: the cases are reached only through [`crate::suite::cases`],
//! which the one list of cases ([`crate::__conformance_case_list`]) generates. A case that is
//! not in that list is therefore never used, and `deny(dead_code)` makes it a compile error.

#![deny(dead_code)]

mod support;

pub(super) mod batch;
pub(super) mod claim;
pub(super) mod death;
pub(super) mod extend;
pub(super) mod generation;
pub(super) mod metadata;
pub(super) mod pin;
pub(super) mod revoke;
pub(super) mod sibling;
pub(super) mod snapshot;
pub(super) mod validation;
