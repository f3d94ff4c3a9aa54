//! The conformance suite checked against deliberately broken stores: each breaks one clause of
//! the Store contract, and the cases that check that clause must fail, by name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{Clock, Generation, Info, Key, Request, Result, Store, Timestamp};
use lease_testkit::InMemoryStore;
use lease_testkit::suite::{self, CASES, StoreBuilder};

/// One way of breaking the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A claim on a lease someone else holds takes it over.
    SecondHolderWins,
    /// An extend sets the expiry to now + duration, even when that is earlier.
    ExtendShortens,
    /// Every claim gets generation 1.
    ReusesGeneration,
    /// Leases really end one nanosecond before the expiry reported.
    ExpiresEarly,
    /// Leases are still held at the expiry instant reported (`now > expiry` means expired).
    ExpiryInclusive,
}

const NANO: Duration = Duration::from_nanos(1);

/// An in-memory store with one [`Fault`].
struct Faulty {
    inner: InMemoryStore,
    fault: Fault,
}

impl Faulty {
    /// For the expiry faults: the stored expiry for a reported one.
    fn stored(&self, reported: Timestamp) -> Timestamp {
        match self.fault {
            Fault::ExpiresEarly => reported.saturating_sub(NANO),
            Fault::ExpiryInclusive => reported.saturating_add(NANO),
            _ => reported,
        }
    }

    /// For the expiry faults: the reported expiry for a stored one.
    fn reported(&self, stored: Timestamp) -> Timestamp {
        match self.fault {
            Fault::ExpiresEarly => stored.saturating_add(NANO),
            Fault::ExpiryInclusive => stored.saturating_sub(NANO),
            _ => stored,
        }
    }

    fn report_all(&self, mut map: BTreeMap<Key, Info>) -> BTreeMap<Key, Info> {
        for info in map.values_mut() {
            info.expiry = self.reported(info.expiry);
        }
        map
    }

    /// Stores `info` with its expiry shifted by the fault; returns it as reported.
    fn shift(&self, key: &Key, info: Info) -> Info {
        let mut stored = info.clone();
        stored.expiry = self.stored(info.expiry);
        self.inner.overwrite_record(key, &stored);
        info
    }
}

#[async_trait]
impl Store for Faulty {
    async fn claim_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        match self.fault {
            // Steals a held lease: revokes whoever holds it and claims. Racers stealing from
            // each other can find the lease gone or changed between the steps, so it tries
            // until its own claim lands: every racer then "wins", which is the fault the
            // suite must catch (and not a side effect of the steal's own race).
            Fault::SecondHolderWins => {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match self.inner.claim_lease(key, request).await {
                        Err(e) if e.is_held() && attempts < 1000 => {
                            let current = self.inner.leases(std::slice::from_ref(key)).await?;
                            if let Some(info) = current.get(key) {
                                let holder = info.holder.clone();
                                // Another thief may have got there first; try again.
                                let _ = self.inner.revoke_lease(key, &holder).await;
                            }
                        }
                        other => break other,
                    }
                }
            }
            Fault::ReusesGeneration => {
                let mut info = self.inner.claim_lease(key, request).await?;
                info.generation = Generation(1);
                self.inner.overwrite_record(key, &info);
                Ok(info)
            }
            Fault::ExpiresEarly | Fault::ExpiryInclusive => {
                let info = self.inner.claim_lease(key, request).await?;
                Ok(self.shift(key, info))
            }
            Fault::ExtendShortens => self.inner.claim_lease(key, request).await,
        }
    }

    async fn extend_lease(&mut self, key: &Key, request: &Request) -> Result<Info> {
        let mut info = self.inner.extend_lease(key, request).await?;
        match self.fault {
            Fault::ExtendShortens => {
                info.expiry = self.inner.clock().now().saturating_add(request.duration);
                self.inner.overwrite_record(key, &info);
                Ok(info)
            }
            Fault::ExpiresEarly | Fault::ExpiryInclusive => {
                // The inner store extended the stored expiry; report and store it shifted.
                info.expiry = self
                    .reported(info.expiry)
                    .max(self.inner.clock().now().saturating_add(request.duration));
                Ok(self.shift(key, info))
            }
            _ => Ok(info),
        }
    }

    async fn revoke_lease(&mut self, key: &Key, holder: &str) -> Result<()> {
        self.inner.revoke_lease(key, holder).await
    }

    async fn leases(&mut self, keys: &[Key]) -> Result<BTreeMap<Key, Info>> {
        let map = self.inner.leases(keys).await?;
        Ok(self.report_all(map))
    }

    async fn lease_group(&mut self, namespace: &str, model: &str) -> Result<BTreeMap<Key, Info>> {
        let map = self.inner.lease_group(namespace, model).await?;
        Ok(self.report_all(map))
    }

    async fn pin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.inner.pin_lease(key, entity).await
    }

    async fn unpin_lease(&mut self, key: &Key, entity: &str) -> Result<()> {
        self.inner.unpin_lease(key, entity).await
    }

    async fn pinned(&mut self) -> Result<BTreeMap<Key, Vec<String>>> {
        self.inner.pinned().await
    }

    async fn poll_changes(&mut self) -> Result<bool> {
        self.inner.poll_changes().await
    }

    fn change_notifier(&mut self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.change_notifier()
    }
    // `apply` is the trait's default, so batches go through the faulty methods above.
}

struct FaultyBuilder(Fault);

#[async_trait]
impl StoreBuilder for FaultyBuilder {
    type Store = Faulty;
    type Guard = InMemoryStore;

    async fn build(&self, clock: Arc<dyn Clock>) -> Result<(Faulty, InMemoryStore)> {
        let inner = InMemoryStore::new(clock);
        let guard = inner.sibling();
        Ok((
            Faulty {
                inner,
                fault: self.0,
            },
            guard,
        ))
    }

    async fn build_sibling(
        &self,
        guard: &InMemoryStore,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<Faulty>> {
        Ok(Some(Faulty {
            inner: guard.sibling_with_clock(clock),
            fault: self.0,
        }))
    }
}

/// Runs the whole suite against `fault`; checks that each of `must_fail` failed (with a message
/// containing the given text) and that each of `must_pass` passed.
async fn check(fault: Fault, must_fail: &[(&str, &str)], must_pass: &[&str]) {
    let report = suite::run_all(&FaultyBuilder(fault)).await;
    assert_eq!(report.results.len(), CASES.len());
    assert!(
        !report.passed(),
        "{fault:?}: the suite passed a broken store"
    );
    for (name, text) in must_fail {
        assert!(CASES.contains(name), "{name} is not a case");
        let failure = report.failure(name).unwrap_or_else(|| {
            panic!(
                "{fault:?}: case {name} passed; failed: {:?}",
                report.failed()
            )
        });
        assert!(
            failure.message.contains(text),
            "{fault:?}: case {name} failed, but with {:?}, not mentioning {text:?}",
            failure.message
        );
    }
    for name in must_pass {
        assert!(
            report.failure(name).is_none(),
            "{fault:?}: unrelated case {name} failed: {:?}",
            report.failure(name)
        );
    }
    // The report names every failed case.
    let text = report.to_string();
    for name in report.failed() {
        assert!(text.contains(&format!("case {name} failed: ")), "{text}");
    }
}

/// Cases about clauses none of the faults touch.
const UNRELATED: &[&str] = &[
    "revoke_on_absent_lease_is_invalid",
    "revoke_by_other_is_not_held",
    "lease_group_validates_namespace_and_model",
    "pin_and_unpin_validate_key_and_entity",
    "unpin_of_entity_that_never_pinned_is_ok",
    "apply_empty_batch_returns_nothing",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_letting_a_second_holder_claim_fails_the_held_cases() {
    check(
        Fault::SecondHolderWins,
        &[
            (
                "claim_on_held_lease_is_held",
                "claim by b at once: expected a held error, got Ok",
            ),
            (
                "claim_holds_until_duration_from_call_start",
                "expected a held error",
            ),
            (
                "sibling_respects_claim",
                "claim by b on the sibling: expected a held error",
            ),
            (
                "concurrent_claims_have_exactly_one_winner",
                "concurrent claims succeeded",
            ),
            ("apply_later_ops_see_earlier_ones", "did not see it"),
        ],
        &[
            UNRELATED,
            &[
                "generation_unchanged_by_extend",
                "extend_by_holder_lengthens",
            ],
        ]
        .concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_extend_shortens_fails_extend_never_shortens() {
    check(
        Fault::ExtendShortens,
        &[(
            "extend_never_shortens",
            "a short extend moved the expiry back",
        )],
        &[
            UNRELATED,
            &[
                "extend_by_holder_lengthens",
                "claim_on_held_lease_is_held",
                "generation_strictly_increases_over_claims",
                "concurrent_claims_have_exactly_one_winner",
            ],
        ]
        .concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_reusing_generations_fails_the_generation_cases() {
    check(
        Fault::ReusesGeneration,
        &[
            (
                "generation_strictly_increases_over_claims",
                "not greater than the previous",
            ),
            ("generation_increases_after_revoke", "is not greater than"),
            ("generation_increases_after_expiry", "is not greater than"),
            ("generation_is_independent_per_key", "not greater than"),
            ("sibling_generation_continues", "not greater than"),
            (
                "claim_on_expired_lease_succeeds",
                "generation did not increase",
            ),
            (
                "concurrent_claims_have_exactly_one_winner",
                "is not greater than the last round's",
            ),
        ],
        &[
            UNRELATED,
            &[
                "generation_unchanged_by_extend",
                "claim_on_held_lease_is_held",
            ],
        ]
        .concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_expiring_a_nanosecond_early_fails_the_claim_guarantee() {
    check(
        Fault::ExpiresEarly,
        &[(
            "claim_holds_until_duration_from_call_start",
            "59.999999999s after the claim: expected suite-ns/suite-model#guarantee to be held by Some(\"holder-a\"), snapshots say None",
        ), (
            "lease_is_free_at_its_expiry_instant",
            "one nanosecond before expiry: expected suite-ns/suite-model#boundary to be held by Some(\"holder-a\")",
        ), (
            "extend_just_before_expiry_succeeds",
            "extend one nanosecond before expiry: unexpected error: invalid lease operation",
        )],
        &[UNRELATED, &["claim_on_held_lease_is_held", "revoke_by_holder_frees_lease"]].concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_holding_leases_at_their_expiry_instant_fails_the_boundary_case() {
    check(
        Fault::ExpiryInclusive,
        &[(
            "lease_is_free_at_its_expiry_instant",
            "at the expiry instant: expected suite-ns/suite-model#boundary to be held by None",
        )],
        &[
            UNRELATED,
            &[
                "claim_holds_until_duration_from_call_start",
                "claim_on_held_lease_is_held",
            ],
        ]
        .concat(),
    )
    .await;
}

#[tokio::test]
async fn a_single_case_can_be_run_by_name_against_a_broken_store() {
    let failure = suite::run_case(
        &FaultyBuilder(Fault::ExtendShortens),
        "extend_never_shortens",
    )
    .await
    .unwrap_err();
    assert!(
        failure
            .message
            .starts_with("a short extend moved the expiry back"),
        "{failure}"
    );
    suite::run_case(
        &FaultyBuilder(Fault::ExtendShortens),
        "claim_on_held_lease_is_held",
    )
    .await
    .unwrap();
}

/// A store that panics is reported as the failing case, and the other cases still run.
struct Panicky;

#[async_trait]
impl StoreBuilder for Panicky {
    type Store = InMemoryStore;
    type Guard = ();

    async fn build(&self, clock: Arc<dyn Clock>) -> Result<(InMemoryStore, ())> {
        if clock.now() > Timestamp::ZERO {
            panic!("this builder always panics");
        }
        Ok((InMemoryStore::new(clock), ()))
    }
}

#[tokio::test]
async fn a_panic_fails_its_case_with_the_panic_message() {
    let report = suite::run_cases(
        &Panicky,
        &["claim_on_absent_lease_succeeds", "pin_is_idempotent"],
    )
    .await;
    assert_eq!(
        report.failed(),
        vec!["claim_on_absent_lease_succeeds", "pin_is_idempotent"]
    );
    assert_eq!(
        report.failure("pin_is_idempotent").unwrap().message,
        "panicked: this builder always panics"
    );
}

#[tokio::test]
#[should_panic(
    expected = "case extend_never_shortens failed: a short extend moved the expiry back"
)]
async fn test_all_panics_naming_the_failed_cases() {
    suite::test_all(&FaultyBuilder(Fault::ExtendShortens)).await;
}

/// What `conformance_tests!` generates for one case (this is its per-case expansion), against a
/// store that breaks the case's clause: the test fails with a message naming the case and what
/// was found.
mod generated_test {
    use super::{Fault, FaultyBuilder};

    lease_testkit::__conformance_test! {
        extend extend_never_shortens
        [FaultyBuilder(Fault::ExtendShortens)]
        [#[should_panic(
            expected = "conformance case extend_never_shortens failed: a short extend moved the expiry back"
        )]]
        [lease_testkit::suite::__private::Flavor::MultiThread(2)]
    }
}
