//! The one list of conformance cases, and the macros it drives.
//!
//! [`__conformance_case_list!`](crate::__conformance_case_list) holds every case once, grouped
//! by clause. Everything that names cases is generated from it:
//!
//! - in this crate, [`suite::cases`](crate::suite::cases) (the public path of each case),
//!   [`CASES`](crate::suite::CASES), [`CLAUSES`](crate::suite::CLAUSES) and the dispatcher
//!   behind [`run_case`](crate::suite::run_case);
//! - in a store's test file, one test per case, by
//!   [`conformance_tests!`](crate::conformance_tests).

/// The list of every conformance case, grouped by clause: `clause { case, ... }`, each clause
/// module's documentation before it. Each `clause::case` is the function
/// `src/suite/clauses/<clause>.rs`'s `case`.
///
/// Calls `callback! { { args } <the list> }` (a callback, as macros cannot return a list).
/// Internal to [`conformance_tests!`](crate::conformance_tests) and this crate's `suite`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_list {
    ([$($callback:tt)*] $args:tt) => {
        $($callback)*! {
            $args

            /// Claim: a claim succeeds only on an absent or expired lease, holds until
            /// `duration` after the call started (and not at the expiry instant), and never
            /// silently succeeds over a valid lease.
            claim {
                claim_on_absent_lease_succeeds,
                claim_on_held_lease_is_held,
                claim_by_same_holder_is_invalid,
                claim_on_expired_lease_succeeds,
                claim_by_previous_holder_after_expiry_succeeds,
                claim_holds_until_duration_from_call_start,
                lease_is_free_at_its_expiry_instant,
                revoked_lease_can_be_claimed_again,
                claims_on_different_keys_are_independent,
            }
            /// Extend: only the holder of an unexpired (or pinned) lease extends it, and an
            /// extend only ever lengthens it.
            extend {
                extend_by_holder_lengthens,
                extend_by_other_is_invalid,
                extend_on_absent_lease_is_invalid,
                extend_after_expiry_is_invalid,
                extend_just_before_expiry_succeeds,
                extend_never_shortens,
                extend_pinned_lease_past_expiry_succeeds,
                extend_answers_changes_since_the_last_extend,
            }
            /// Revoke: only the holder of an unexpired or pinned lease revokes it; a pin never
            /// makes a revoke fail.
            revoke {
                revoke_by_holder_frees_lease,
                revoke_by_other_is_not_held,
                revoke_on_absent_lease_is_invalid,
                revoke_on_expired_lease_is_invalid,
                revoke_twice_is_invalid,
                revoke_pinned_lease_succeeds,
            }
            /// Snapshots: `leases` and `lease_group` report exactly the valid leases asked
            /// for, and never an expired, unpinned one.
            snapshot {
                leases_with_empty_keys_returns_all,
                leases_filters_by_keys,
                leases_omits_unknown_keys,
                lease_group_isolates_namespaces,
                lease_group_isolates_models,
                expired_lease_is_never_reported,
                snapshot_info_matches_claim,
            }
            /// Pins: a pinned lease does not expire, until the last of its entities unpins.
            pin {
                pinned_lease_outlives_expiry,
                pin_on_absent_lease_binds_next_claimant,
                several_entities_pin_until_the_last_unpins,
                unpin_restores_expiry,
                pin_is_idempotent,
                unpin_of_entity_that_never_pinned_is_ok,
                pinned_lists_entities_sorted,
                info_pinned_flag_follows_pins,
            }
            /// Fencing generation: every claim of a key gets a generation strictly greater
            /// than any earlier claim's.
            generation {
                generation_strictly_increases_over_claims,
                generation_increases_after_revoke,
                generation_increases_after_expiry,
                generation_unchanged_by_extend,
                generation_is_independent_per_key,
            }
            /// Metadata: a claim's metadata comes back unchanged; extends replace or keep it.
            metadata {
                metadata_round_trips,
                claim_without_metadata_has_none,
                extend_with_metadata_replaces_it,
                extend_without_metadata_keeps_it,
                new_claim_does_not_inherit_metadata,
            }
            /// Validation first: bad input gets a validation error naming the field, before
            /// anything else, and changes nothing.
            validation {
                claim_validates_every_field_first,
                extend_validates_every_field_first,
                revoke_validates_key_and_holder_first,
                leases_validates_keys,
                lease_group_validates_namespace_and_model,
                pin_and_unpin_validate_key_and_entity,
            }
            /// Batches: `apply` returns one result per op, in order; each op sees the ones
            /// before it, and a failing op fails alone; batches started ahead apply in the
            /// order they were started.
            batch {
                apply_returns_one_result_per_op_in_order,
                apply_later_ops_see_earlier_ones,
                apply_failing_op_does_not_stop_the_others,
                apply_empty_batch_returns_nothing,
                started_batches_apply_in_the_order_started,
            }
            /// Death: a store may free a lease before its expiry only when no process of its
            /// holder can act on it any more; the next claim then gets a higher generation.
            /// A holder that is alive but silent keeps its lease until its expiry, and a pin
            /// keeps a dead holder's lease held.
            death {
                dead_holders_lease_frees_early_with_a_higher_generation,
                silent_holders_lease_frees_only_at_its_expiry,
                dead_holders_pinned_lease_stays_held,
            }
            /// Several instances over one backing: each sees and respects the others' writes,
            /// is told of them (change notification), and racing claims have one winner.
            sibling {
                sibling_sees_claims_extends_and_revokes,
                sibling_respects_claim,
                sibling_generation_continues,
                sibling_sees_pins,
                sibling_change_is_reported,
                concurrent_claims_have_exactly_one_winner,
            }
        }
    };
}

/// Generates one test per conformance case in a store's `tests/conformance.rs`, each running
/// the case on a fresh store from the given [`StoreBuilder`](crate::suite::StoreBuilder).
///
/// ```text
/// lease_testkit::conformance_tests!(Builder);
/// ```
///
/// expands, for each clause `c` and each of its cases `k`, to a module `c` holding a test `k`
/// that calls `lease_testkit::suite::cases::c::k(&builder)` on its own tokio runtime and fails
/// with `conformance case k failed: <what was checked and found>`. So
/// `cargo test -p my-store claim_holds_until` runs one case, `cargo test -p my-store extend::`
/// one clause. The list of cases is the suite's, so a new case reaches every store at once.
///
/// The builder is an expression evaluated inside each test's `async` block (`.await` is
/// allowed), in a module that sees the invoking module's items (`use super::*`). Options,
/// after the builder, in any order:
///
/// - `ignore = "reason"`: every test is `#[ignore = "reason"]` (for stores that need a server).
/// - `flavor = "multi_thread"` (the default) or `flavor = "current_thread"`: the tokio runtime
///   each test runs on. Cases that race instances spawn tasks, so keep `multi_thread` unless
///   the store cannot run on it.
/// - `worker_threads = N`: the multi-thread runtime's worker threads (default 4).
///
/// `mod name,` first wraps the tests in a module `name` (for several stores in one file, or
/// when the file already has an item named like a clause).
///
/// ```text
/// lease_testkit::conformance_tests!(
///     mod lease_store,
///     LeaseBuilder::connect().await,
///     ignore = "needs a Kubernetes API server: cargo xtask k8s up",
/// );
/// ```
#[macro_export]
macro_rules! conformance_tests {
    (mod $module:ident, $($rest:tt)+) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $crate::conformance_tests!($($rest)+);
        }
    };
    ($builder:expr $(, $($option:tt)*)?) => {
        $crate::__conformance_tests_options! {
            [$builder] [] [multi_thread] [] $($($option)*)?
        }
    };
}

/// Reads [`conformance_tests!`](crate::conformance_tests)'s options, one at a time, into
/// `[builder] [attributes] [flavor] [worker threads]`, then expands the tests.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_options {
    ([$builder:expr] [$($attr:tt)*] [$flavor:ident] [$($threads:tt)*]
        ignore = $reason:literal $(, $($rest:tt)*)?) => {
        $crate::__conformance_tests_options! {
            [$builder] [$($attr)* #[ignore = $reason]] [$flavor] [$($threads)*] $($($rest)*)?
        }
    };
    ([$builder:expr] [$($attr:tt)*] [$flavor:ident] [$($threads:tt)*]
        flavor = "multi_thread" $(, $($rest:tt)*)?) => {
        $crate::__conformance_tests_options! {
            [$builder] [$($attr)*] [multi_thread] [$($threads)*] $($($rest)*)?
        }
    };
    ([$builder:expr] [$($attr:tt)*] [$flavor:ident] [$($threads:tt)*]
        flavor = "current_thread" $(, $($rest:tt)*)?) => {
        $crate::__conformance_tests_options! {
            [$builder] [$($attr)*] [current_thread] [$($threads)*] $($($rest)*)?
        }
    };
    ([$builder:expr] [$($attr:tt)*] [$flavor:ident] [$($threads:tt)*]
        worker_threads = $n:literal $(, $($rest:tt)*)?) => {
        $crate::__conformance_tests_options! {
            [$builder] [$($attr)*] [$flavor] [$n] $($($rest)*)?
        }
    };
    ([$builder:expr] [$($attr:tt)*] [multi_thread] []) => {
        $crate::__conformance_tests_options! {
            [$builder] [$($attr)*] [multi_thread] [4]
        }
    };
    ([$builder:expr] [$($attr:tt)*] [multi_thread] [$threads:literal]) => {
        $crate::__conformance_case_list! {
            [$crate::__conformance_tests_expand] {
                [$builder]
                [$($attr)*]
                [$crate::suite::__private::Flavor::MultiThread($threads)]
            }
        }
    };
    ([$builder:expr] [$($attr:tt)*] [current_thread] []) => {
        $crate::__conformance_case_list! {
            [$crate::__conformance_tests_expand] {
                [$builder]
                [$($attr)*]
                [$crate::suite::__private::Flavor::CurrentThread]
            }
        }
    };
    ([$builder:expr] [$($attr:tt)*] [current_thread] [$threads:literal]) => {
        ::core::compile_error!(
            "conformance_tests!: worker_threads needs flavor = \"multi_thread\""
        );
    };
    ([$builder:expr] [$($attr:tt)*] [$flavor:ident] [$($threads:tt)*] $($rest:tt)+) => {
        ::core::compile_error!(::core::concat!(
            "conformance_tests!: unknown option `",
            ::core::stringify!($($rest)+),
            "`; the options are ignore = \"reason\", flavor = \"multi_thread\" or ",
            "\"current_thread\", worker_threads = N"
        ));
    };
}

/// The callback of [`__conformance_case_list!`](crate::__conformance_case_list) for
/// [`conformance_tests!`](crate::conformance_tests): a module per clause, a test per case.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_expand {
    (
        { [$builder:expr] $attrs:tt [$flavor:expr] }
        $( $(#[$clause_doc:meta])* $clause:ident { $($case:ident),* $(,)? } )*
    ) => {
        $(
            $(#[$clause_doc])*
            mod $clause {
                #[allow(unused_imports)]
                use super::*;

                $(
                    $crate::__conformance_test! { $clause $case [$builder] $attrs [$flavor] }
                )*
            }
        )*
    };
}

/// One generated test: `case` of `clause`, on a fresh store from `builder`, with `attrs`, on a
/// runtime of `flavor`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    ($clause:ident $case:ident [$builder:expr] [$(#[$attr:meta])*] [$flavor:expr]) => {
        #[test]
        $(#[$attr])*
        fn $case() {
            $crate::suite::__private::run_test($flavor, ::core::stringify!($case), async {
                let builder = $builder;
                $crate::suite::cases::$clause::$case(&builder).await
            });
        }
    };
}
