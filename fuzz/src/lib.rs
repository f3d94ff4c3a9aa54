//! The properties the fuzz targets check, as plain functions that panic on a violation.
//!
//! The same files are compiled into ordinary workspace tests (with `#[path]`), where proptest
//! feeds them, so CI checks the same properties on stable Rust without a fuzzer:
//! `crates/lease-core/tests/fuzz_properties.rs` and
//! `crates/lease-store-k8s/tests/fuzz_properties.rs`.

pub mod core_checks;
pub mod k8s_checks;
