//! Links the `lease` and `lease-run-shim` programs as position-dependent executables on Linux.
//!
//! Each `lease run` execs both, and in a position-independent executable the dynamic loader
//! first patches every pointer in the program's read-only data (about 29,000 in `lease`,
//! vtables and static tables of its dependencies), copying each page it writes: that was a
//! sixth of the start-up of `lease --version` (about 0.4 ms, 130 page faults of 275).
//! Linked at fixed addresses, the pointers are final in the file. The price is that the
//! programs' own code and data are not placed at random addresses (shared libraries, stack and
//! heap still are); build with `LEASE_PIE=1` in the environment to keep the default.

#![forbid(unsafe_code)]

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=LEASE_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let keep_pie = std::env::var_os("LEASE_PIE").is_some_and(|v| !v.is_empty() && v != "0");
    if linux && !keep_pie {
        // After rustc's own `-pie`: the compiler driver takes the last of the two.
        println!("cargo::rustc-link-arg-bins=-no-pie");
    }
}
