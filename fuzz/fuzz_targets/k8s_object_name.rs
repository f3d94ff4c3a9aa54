//! Fuzz target: every key maps to a valid DNS-1123 object name of at most 63 characters, with
//! valid labels and an exact key annotation, and distinct keys map to distinct names.

#![no_main]

use lease_core::Key;
use lease_fuzz::k8s_checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|parts: [String; 6]| {
    let [n1, m1, l1, n2, m2, l2] = parts;
    let a = Key::new(n1, m1, l1);
    let b = Key::new(n2, m2, l2);
    k8s_checks::object_names_distinct(&a, &b);
    // Keys that differ in one part only are the likeliest to collide.
    let c = Key::new(a.namespace.clone(), a.model.clone(), b.lease.clone());
    k8s_checks::object_names_distinct(&a, &c);
});
