//! The conformance cases, one `pub async fn` per clause of the Store contract, and the table
//! ([`CASES`]) that names them.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use lease_core::{Error, ErrorKind, Generation, Info, Key, Op, Outcome, Request, Store, Timestamp};
use serde_json::json;

use super::{CaseFailure, StoreBuilder, case_clock};
use crate::FakeClock;

/// What every case returns.
type CaseResult = Result<(), CaseFailure>;

/// Fails the case with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(CaseFailure::new(format!($($arg)+)));
        }
    };
}

/// Declares the cases: the public table of names and the dispatcher that runs one by name.
macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// The name of every conformance case, in the order [`test_all`](super::test_all) runs
        /// them. Each is also a public function of this module.
        pub const CASES: &[&str] = &[$(stringify!($name)),*];

        /// Runs the case called `name`; `None` when there is no such case.
        pub(super) async fn dispatch<B: StoreBuilder>(
            builder: &B,
            name: &str,
        ) -> Option<CaseResult> {
            match name {
                $(stringify!($name) => Some($name(builder).await),)*
                _ => None,
            }
        }
    };
}

cases! {
    // Claim.
    claim_on_absent_lease_succeeds,
    claim_on_held_lease_is_held,
    claim_by_same_holder_is_invalid,
    claim_on_expired_lease_succeeds,
    claim_by_previous_holder_after_expiry_succeeds,
    claim_holds_until_duration_from_call_start,
    lease_is_free_at_its_expiry_instant,
    revoked_lease_can_be_claimed_again,
    claims_on_different_keys_are_independent,
    // Extend.
    extend_by_holder_lengthens,
    extend_by_other_is_invalid,
    extend_on_absent_lease_is_invalid,
    extend_after_expiry_is_invalid,
    extend_just_before_expiry_succeeds,
    extend_never_shortens,
    extend_pinned_lease_past_expiry_succeeds,
    // Revoke.
    revoke_by_holder_frees_lease,
    revoke_by_other_is_not_held,
    revoke_on_absent_lease_is_invalid,
    revoke_on_expired_lease_is_invalid,
    revoke_twice_is_invalid,
    revoke_pinned_lease_succeeds,
    // Snapshots.
    leases_with_empty_keys_returns_all,
    leases_filters_by_keys,
    leases_omits_unknown_keys,
    lease_group_isolates_namespaces,
    lease_group_isolates_models,
    expired_lease_is_never_reported,
    snapshot_info_matches_claim,
    // Pins.
    pinned_lease_outlives_expiry,
    pin_on_absent_lease_binds_next_claimant,
    several_entities_pin_until_the_last_unpins,
    unpin_restores_expiry,
    pin_is_idempotent,
    unpin_of_entity_that_never_pinned_is_ok,
    pinned_lists_entities_sorted,
    info_pinned_flag_follows_pins,
    // Fencing generation.
    generation_strictly_increases_over_claims,
    generation_increases_after_revoke,
    generation_increases_after_expiry,
    generation_unchanged_by_extend,
    generation_is_independent_per_key,
    // Metadata.
    metadata_round_trips,
    claim_without_metadata_has_none,
    extend_with_metadata_replaces_it,
    extend_without_metadata_keeps_it,
    new_claim_does_not_inherit_metadata,
    // Validation.
    claim_validates_every_field_first,
    extend_validates_every_field_first,
    revoke_validates_key_and_holder_first,
    leases_validates_keys,
    lease_group_validates_namespace_and_model,
    pin_and_unpin_validate_key_and_entity,
    // Batches.
    apply_returns_one_result_per_op_in_order,
    apply_later_ops_see_earlier_ones,
    apply_failing_op_does_not_stop_the_others,
    apply_empty_batch_returns_nothing,
    // Several instances over one backing.
    sibling_sees_claims_extends_and_revokes,
    sibling_respects_claim,
    sibling_generation_continues,
    sibling_sees_pins,
    sibling_change_is_reported,
    concurrent_claims_have_exactly_one_winner,
}

// ---------------------------------------------------------------------------------------------
// Fixtures and helpers.

/// The lease duration most cases use.
const LEASE: Duration = Duration::from_secs(60);
/// One nanosecond: the finest step of a [`Timestamp`].
const NANO: Duration = Duration::from_nanos(1);
/// How much a store may round a reported expiry up.
const EXPIRY_SLACK: Duration = Duration::from_secs(1);
/// How many instances race in the concurrent case.
const RACERS: usize = 8;
/// How many rounds they race.
const ROUNDS: usize = 6;

const NS: &str = "suite-ns";
const MODEL: &str = "suite-model";
const A: &str = "holder-a";
const B: &str = "holder-b";

/// Values every name field must reject: empty, whitespace, and each of `.#$`.
const BAD_NAMES: [&str; 5] = ["", "has space", "dot.ted", "hash#tag", "dollar$sign"];

fn key(lease: &str) -> Key {
    Key::new(NS, MODEL, lease)
}

fn req(holder: &str, duration: Duration) -> Request {
    Request::new(holder, duration)
}

/// A fresh store with its clock and guard. Fields drop in order: the store before the guard.
struct Fx<Bu: StoreBuilder> {
    clock: FakeClock,
    store: Bu::Store,
    guard: Bu::Guard,
}

async fn fx<Bu: StoreBuilder>(builder: &Bu) -> Result<Fx<Bu>, CaseFailure> {
    let clock = case_clock();
    let (store, guard) = builder
        .build(clock.as_clock())
        .await
        .map_err(|e| CaseFailure::new(format!("building the store failed: {e}")))?;
    Ok(Fx {
        clock,
        store,
        guard,
    })
}

impl<Bu: StoreBuilder> Fx<Bu> {
    /// Another instance over this fixture's backing, or `None` (the case is then skipped).
    async fn sibling(&self, builder: &Bu, case: &str) -> Result<Option<Bu::Store>, CaseFailure> {
        let sibling = builder
            .build_sibling(&self.guard, self.clock.as_clock())
            .await
            .map_err(|e| CaseFailure::new(format!("building a sibling failed: {e}")))?;
        if sibling.is_none() {
            eprintln!("conformance case {case}: skipped, the store cannot share its backing");
        }
        Ok(sibling)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// Turns a store error into a case failure saying what was being done.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, CaseFailure>;
}

impl<T> Ctx<T> for lease_core::Result<T> {
    fn ctx(self, what: &str) -> Result<T, CaseFailure> {
        self.map_err(|e| CaseFailure::new(format!("{what}: unexpected error: {e}")))
    }
}

/// Fails unless `result` is an error of one of `kinds`.
fn expect_err<T: Debug>(
    result: lease_core::Result<T>,
    kinds: &[ErrorKind],
    what: &str,
) -> CaseResult {
    let wanted = kinds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    match result {
        Ok(value) => Err(CaseFailure::new(format!(
            "{what}: expected a {wanted} error, got Ok({value:?})"
        ))),
        Err(e) if kinds.contains(&e.kind()) => Ok(()),
        Err(e) => Err(CaseFailure::new(format!(
            "{what}: expected a {wanted} error, got a {} error: {e}",
            e.kind()
        ))),
    }
}

fn innermost(e: &Error) -> &Error {
    match e {
        Error::Context { source, .. } => innermost(source),
        other => other,
    }
}

/// Fails unless `result` is a validation error naming `field` (and `value`, when given).
fn expect_validation<T: Debug>(
    result: lease_core::Result<T>,
    field: &str,
    value: Option<&str>,
    what: &str,
) -> CaseResult {
    let wanted = match value {
        Some(v) => format!("a validation error for {field} {v:?}"),
        None => format!("a validation error for {field}"),
    };
    match result {
        Ok(v) => Err(CaseFailure::new(format!(
            "{what}: expected {wanted}, got Ok({v:?})"
        ))),
        Err(e) => match innermost(&e) {
            Error::Validation {
                field: f, value: v, ..
            } if *f == field && value.is_none_or(|want| want == v) => Ok(()),
            _ => Err(CaseFailure::new(format!(
                "{what}: expected {wanted}, got a {} error: {e}",
                e.kind()
            ))),
        },
    }
}

/// The lease `key` as every snapshot reports it, after checking that `leases([key])`,
/// `leases([])` and `lease_group` agree.
async fn snapshot<S: Store>(
    store: &mut S,
    key: &Key,
    what: &str,
) -> Result<Option<Info>, CaseFailure> {
    let one = store
        .leases(std::slice::from_ref(key))
        .await
        .ctx(&format!("{what}: leases([{key}])"))?;
    ensure!(
        one.keys().all(|k| k == key),
        "{what}: leases([{key}]) reported other keys: {:?}",
        one.keys().collect::<Vec<_>>()
    );
    let all = store
        .leases(&[])
        .await
        .ctx(&format!("{what}: leases([])"))?;
    let group = store
        .lease_group(&key.namespace, &key.model)
        .await
        .ctx(&format!("{what}: lease_group"))?;
    let (a, b, c) = (one.get(key), all.get(key), group.get(key));
    ensure!(
        a == b && b == c,
        "{what}: snapshots disagree about {key}: leases([key]) = {a:?}, leases([]) = {b:?}, \
         lease_group = {c:?}"
    );
    Ok(a.cloned())
}

/// Checks that `key` is held by `holder` (or by no one) in every snapshot; returns its info.
async fn expect_holder<S: Store>(
    store: &mut S,
    key: &Key,
    holder: Option<&str>,
    what: &str,
) -> Result<Option<Info>, CaseFailure> {
    let info = snapshot(store, key, what).await?;
    let found = info.as_ref().map(|i| i.holder.as_str());
    ensure!(
        found == holder,
        "{what}: expected {key} to be held by {holder:?}, snapshots say {found:?} ({info:?})"
    );
    Ok(info)
}

/// Checks a fresh claim's info: holder, expiry from `start`, metadata; returns it.
fn check_claim_info(info: &Info, request: &Request, start: Timestamp, what: &str) -> CaseResult {
    ensure!(
        info.holder == request.holder,
        "{what}: claim returned holder {:?}, expected {:?}",
        info.holder,
        request.holder
    );
    let earliest = start.saturating_add(request.duration);
    let latest = earliest.saturating_add(EXPIRY_SLACK);
    ensure!(
        info.expiry >= earliest && info.expiry <= latest,
        "{what}: claim at {start} for {:?} reported expiry {}, expected within [{earliest}, {latest}]",
        request.duration,
        info.expiry
    );
    ensure!(
        info.metadata == request.metadata,
        "{what}: claim returned metadata {:?}, expected {:?}",
        info.metadata,
        request.metadata
    );
    Ok(())
}

/// Claims and checks the returned info.
async fn claim_ok<S: Store>(
    store: &mut S,
    clock: &FakeClock,
    key: &Key,
    request: &Request,
    what: &str,
) -> Result<Info, CaseFailure> {
    let start = clock.now();
    let info = store.claim_lease(key, request).await.ctx(what)?;
    check_claim_info(&info, request, start, what)?;
    Ok(info)
}

fn op_claim(key: &Key, request: Request) -> Op {
    Op::Claim {
        key: key.clone(),
        request,
    }
}

fn op_extend(key: &Key, request: Request) -> Op {
    Op::Extend {
        key: key.clone(),
        request,
    }
}

fn op_revoke(key: &Key, holder: &str) -> Op {
    Op::Revoke {
        key: key.clone(),
        holder: holder.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Claim.

/// A claim on a lease nobody holds succeeds, reports the holder, an expiry `duration` after the
/// call's start, no metadata and no pin, and every snapshot then shows it.
pub async fn claim_on_absent_lease_succeeds<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("absent");
    expect_holder(&mut store, &k, None, "before the claim").await?;
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim by a").await?;
    ensure!(!info.pinned, "a fresh claim reported pinned: {info:?}");
    let seen = expect_holder(&mut store, &k, Some(A), "after the claim").await?;
    ensure!(
        seen.as_ref() == Some(&info),
        "snapshot {seen:?} differs from the claim's info {info:?}"
    );
    Ok(())
}

/// A claim on a lease validly held by someone else fails with `Held` and changes nothing.
pub async fn claim_on_held_lease_is_held<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("held");
    let request = req(A, LEASE).with_metadata(json!({"who": "a"}));
    let info = claim_ok(&mut store, &clock, &k, &request, "claim by a").await?;
    for (step, advance) in [("at once", Duration::ZERO), ("halfway", LEASE / 2)] {
        clock.advance(advance);
        let result = store
            .claim_lease(&k, &req(B, LEASE).with_metadata(json!({"who": "b"})))
            .await;
        expect_err(result, &[ErrorKind::Held], &format!("claim by b {step}"))?;
        let seen =
            expect_holder(&mut store, &k, Some(A), &format!("after b's claim {step}")).await?;
        ensure!(
            seen.as_ref() == Some(&info),
            "b's failed claim {step} changed the lease: {seen:?}, was {info:?}"
        );
    }
    Ok(())
}

/// A claim by the holder of a valid lease fails with `Invalid` (it should extend instead) and
/// changes nothing.
pub async fn claim_by_same_holder_is_invalid<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("mine");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "first claim").await?;
    clock.advance(Duration::from_secs(1));
    let result = store.claim_lease(&k, &req(A, LEASE * 2)).await;
    expect_err(result, &[ErrorKind::Invalid], "second claim by the holder")?;
    let seen = expect_holder(&mut store, &k, Some(A), "after the second claim").await?;
    ensure!(
        seen.as_ref() == Some(&info),
        "the failed claim changed the lease: {seen:?}, was {info:?}"
    );
    Ok(())
}

/// Once a lease has expired, someone else can claim it, with a greater generation.
pub async fn claim_on_expired_lease_succeeds<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("expiring");
    let first = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim by a").await?;
    clock.set(first.expiry.saturating_add(Duration::from_secs(5)));
    let second = claim_ok(
        &mut store,
        &clock,
        &k,
        &req(B, LEASE),
        "claim by b after expiry",
    )
    .await?;
    ensure!(
        second.generation > first.generation,
        "generation did not increase: {} then {}",
        first.generation,
        second.generation
    );
    expect_holder(&mut store, &k, Some(B), "after b's claim").await?;
    Ok(())
}

/// The previous holder of an expired lease can claim it again (it is a new claim: a new
/// generation).
pub async fn claim_by_previous_holder_after_expiry_succeeds<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("again");
    let first = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "first claim").await?;
    clock.set(first.expiry);
    let second = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim after expiry").await?;
    ensure!(
        second.generation > first.generation,
        "generation did not increase: {} then {}",
        first.generation,
        second.generation
    );
    ensure!(
        second.expiry > first.expiry,
        "the new claim's expiry {} is not after the old one's {}",
        second.expiry,
        first.expiry
    );
    Ok(())
}

/// The claim guarantee: a lease claimed at `t` for `d` is held, and cannot be claimed by
/// anyone else, at every instant before `t + d`, down to the last nanosecond.
pub async fn claim_holds_until_duration_from_call_start<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("guarantee");
    let start = clock.now();
    claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim by a").await?;
    for at in [
        NANO,
        LEASE / 2,
        LEASE - Duration::from_millis(1),
        LEASE - NANO,
    ] {
        clock.set(start.saturating_add(at));
        let what = format!("{at:?} after the claim");
        expect_holder(&mut store, &k, Some(A), &what).await?;
        let result = store.claim_lease(&k, &req(B, LEASE)).await;
        expect_err(result, &[ErrorKind::Held], &format!("claim by b {what}"))?;
    }
    Ok(())
}

/// At the expiry instant the lease is expired (`now >= expiry`): no snapshot shows it and
/// another holder can claim it.
pub async fn lease_is_free_at_its_expiry_instant<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("boundary");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim by a").await?;
    clock.set(info.expiry.saturating_sub(NANO));
    expect_holder(&mut store, &k, Some(A), "one nanosecond before expiry").await?;
    clock.set(info.expiry);
    expect_holder(&mut store, &k, None, "at the expiry instant").await?;
    claim_ok(
        &mut store,
        &clock,
        &k,
        &req(B, LEASE),
        "claim by b at the expiry instant",
    )
    .await?;
    Ok(())
}

/// A revoked lease is free at once: anyone, including the old holder, can claim it.
pub async fn revoked_lease_can_be_claimed_again<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("revoked");
    claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim by a").await?;
    store.revoke_lease(&k, A).await.ctx("revoke by a")?;
    claim_ok(
        &mut store,
        &clock,
        &k,
        &req(B, LEASE),
        "claim by b after the revoke",
    )
    .await?;
    store.revoke_lease(&k, B).await.ctx("revoke by b")?;
    claim_ok(
        &mut store,
        &clock,
        &k,
        &req(A, LEASE),
        "claim by a after b's revoke",
    )
    .await?;
    expect_holder(&mut store, &k, Some(A), "at the end").await?;
    Ok(())
}

/// Keys that differ only in namespace, model or lease name are different leases.
pub async fn claims_on_different_keys_are_independent<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let keys = [
        Key::new(NS, MODEL, "shared"),
        Key::new("other-ns", MODEL, "shared"),
        Key::new(NS, "other-model", "shared"),
        Key::new(NS, MODEL, "other-lease"),
    ];
    for (i, k) in keys.iter().enumerate() {
        let holder = format!("holder-{i}");
        claim_ok(
            &mut store,
            &clock,
            k,
            &req(&holder, LEASE),
            &format!("claim of {k}"),
        )
        .await?;
    }
    for (i, k) in keys.iter().enumerate() {
        let holder = format!("holder-{i}");
        expect_holder(&mut store, k, Some(&holder), &format!("{k}")).await?;
    }
    store
        .revoke_lease(&keys[0], "holder-0")
        .await
        .ctx("revoke of the first key")?;
    expect_holder(&mut store, &keys[0], None, "the revoked key").await?;
    for (i, k) in keys.iter().enumerate().skip(1) {
        let holder = format!("holder-{i}");
        expect_holder(
            &mut store,
            k,
            Some(&holder),
            &format!("{k} after the revoke"),
        )
        .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Extend.

/// The holder's extend moves the expiry to `now + duration` and the lease stays held until it.
pub async fn extend_by_holder_lengthens<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("extend");
    let first = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    clock.advance(LEASE / 2);
    let start = clock.now();
    let extended = store
        .extend_lease(&k, &req(A, LEASE))
        .await
        .ctx("extend by holder")?;
    let earliest = start.saturating_add(LEASE);
    ensure!(
        extended.expiry >= earliest && extended.expiry <= earliest.saturating_add(EXPIRY_SLACK),
        "extend at {start} for {LEASE:?} reported expiry {}, expected within [{earliest}, +1s]",
        extended.expiry
    );
    ensure!(
        extended.holder == A,
        "extend reported holder {:?}",
        extended.holder
    );
    clock.set(first.expiry.saturating_add(Duration::from_secs(1)));
    expect_holder(&mut store, &k, Some(A), "past the original expiry").await?;
    clock.set(earliest.saturating_sub(NANO));
    expect_holder(&mut store, &k, Some(A), "just before the extended expiry").await?;
    clock.set(extended.expiry);
    expect_holder(&mut store, &k, None, "at the extended expiry").await?;
    Ok(())
}

/// Only the holder may extend: anyone else gets `Invalid` and the lease is unchanged.
pub async fn extend_by_other_is_invalid<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("extend-other");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim by a").await?;
    let result = store
        .extend_lease(&k, &req(B, LEASE * 10).with_metadata(json!("b")))
        .await;
    expect_err(result, &[ErrorKind::Invalid], "extend by b")?;
    let seen = expect_holder(&mut store, &k, Some(A), "after b's extend").await?;
    ensure!(
        seen.as_ref() == Some(&info),
        "b's failed extend changed the lease: {seen:?}, was {info:?}"
    );
    Ok(())
}

/// Extending a lease nobody holds gives `Invalid` and creates nothing.
pub async fn extend_on_absent_lease_is_invalid<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("never-claimed");
    let result = store.extend_lease(&k, &req(A, LEASE)).await;
    expect_err(result, &[ErrorKind::Invalid], "extend of an absent lease")?;
    expect_holder(&mut store, &k, None, "after the extend").await?;
    Ok(())
}

/// Extending an expired lease, even by its last holder, gives `Invalid`; the lease stays free.
pub async fn extend_after_expiry_is_invalid<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("late");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    clock.set(info.expiry);
    let result = store.extend_lease(&k, &req(A, LEASE)).await;
    expect_err(
        result,
        &[ErrorKind::Invalid],
        "extend at the expiry instant",
    )?;
    clock.advance(LEASE);
    let result = store.extend_lease(&k, &req(A, LEASE)).await;
    expect_err(result, &[ErrorKind::Invalid], "extend long after expiry")?;
    expect_holder(&mut store, &k, None, "after the extends").await?;
    Ok(())
}

/// The holder can extend at the last nanosecond before expiry.
pub async fn extend_just_before_expiry_succeeds<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("just-in-time");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    clock.set(info.expiry.saturating_sub(NANO));
    let extended = store
        .extend_lease(&k, &req(A, LEASE))
        .await
        .ctx("extend one nanosecond before expiry")?;
    ensure!(
        extended.expiry >= clock.now().saturating_add(LEASE),
        "extend reported expiry {}, before now + duration",
        extended.expiry
    );
    clock.set(info.expiry.saturating_add(LEASE / 2));
    expect_holder(&mut store, &k, Some(A), "after the original expiry").await?;
    Ok(())
}

/// An extend only ever lengthens: a shorter duration keeps the longer expiry, and the lease is
/// still held until then.
pub async fn extend_never_shortens<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("no-shrink");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE * 10), "long claim").await?;
    clock.advance(LEASE);
    let extended = store
        .extend_lease(&k, &req(A, Duration::from_secs(1)))
        .await
        .ctx("short extend")?;
    ensure!(
        extended.expiry >= info.expiry,
        "a short extend moved the expiry back from {} to {}",
        info.expiry,
        extended.expiry
    );
    clock.set(info.expiry.saturating_sub(NANO));
    expect_holder(
        &mut store,
        &k,
        Some(A),
        "just before the long claim's expiry",
    )
    .await?;
    let result = store.claim_lease(&k, &req(B, LEASE)).await;
    expect_err(
        result,
        &[ErrorKind::Held],
        "claim by b before the long expiry",
    )?;
    Ok(())
}

/// A pinned lease is unexpired past its expiry, so its holder can still extend it.
pub async fn extend_pinned_lease_past_expiry_succeeds<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("pinned-extend");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    store.pin_lease(&k, "entity-1").await.ctx("pin")?;
    clock.set(info.expiry.saturating_add(LEASE));
    let extended = store
        .extend_lease(&k, &req(A, LEASE))
        .await
        .ctx("extend of a pinned lease past its expiry")?;
    ensure!(
        extended.expiry >= clock.now().saturating_add(LEASE),
        "extend reported expiry {}, before now + duration",
        extended.expiry
    );
    ensure!(
        extended.pinned,
        "the extended lease is no longer pinned: {extended:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Revoke.

/// The holder's revoke frees the lease at once.
pub async fn revoke_by_holder_frees_lease<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("revoke");
    claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    store
        .revoke_lease(&k, A)
        .await
        .ctx("revoke by the holder")?;
    expect_holder(&mut store, &k, None, "after the revoke").await?;
    Ok(())
}

/// A revoke by someone other than the holder gives `NotHeld` and leaves the lease held.
pub async fn revoke_by_other_is_not_held<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("revoke-other");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    let result = store.revoke_lease(&k, B).await;
    expect_err(result, &[ErrorKind::NotHeld], "revoke by b")?;
    let seen = expect_holder(&mut store, &k, Some(A), "after b's revoke").await?;
    ensure!(
        seen.as_ref() == Some(&info),
        "b's failed revoke changed the lease: {seen:?}, was {info:?}"
    );
    Ok(())
}

/// Revoking a lease nobody holds gives `Invalid`.
pub async fn revoke_on_absent_lease_is_invalid<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let result = store.revoke_lease(&key("nobody"), A).await;
    expect_err(result, &[ErrorKind::Invalid], "revoke of an absent lease")
}

/// Revoking an expired lease, even by its last holder, gives `Invalid`.
pub async fn revoke_on_expired_lease_is_invalid<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("revoke-late");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    clock.set(info.expiry);
    let result = store.revoke_lease(&k, A).await;
    expect_err(
        result,
        &[ErrorKind::Invalid],
        "revoke by the last holder at expiry",
    )?;
    let result = store.revoke_lease(&k, B).await;
    expect_err(
        result,
        &[ErrorKind::Invalid],
        "revoke by another after expiry",
    )?;
    Ok(())
}

/// A second revoke of the same claim finds the lease absent: `Invalid`.
pub async fn revoke_twice_is_invalid<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("revoke-twice");
    claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    store.revoke_lease(&k, A).await.ctx("first revoke")?;
    let result = store.revoke_lease(&k, A).await;
    expect_err(result, &[ErrorKind::Invalid], "second revoke")
}

/// A pin never makes a revoke fail: the holder revokes a pinned lease, before and after its
/// nominal expiry; a non-holder still gets `NotHeld`.
pub async fn revoke_pinned_lease_succeeds<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("revoke-pinned");
    claim_ok(&mut store, &clock, &k, &req(A, LEASE), "first claim").await?;
    store.pin_lease(&k, "entity-1").await.ctx("pin")?;
    let result = store.revoke_lease(&k, B).await;
    expect_err(
        result,
        &[ErrorKind::NotHeld],
        "revoke of the pinned lease by b",
    )?;
    store
        .revoke_lease(&k, A)
        .await
        .ctx("revoke of the pinned lease by its holder")?;
    expect_holder(&mut store, &k, None, "after the revoke").await?;

    let k2 = key("revoke-pinned-late");
    let info = claim_ok(&mut store, &clock, &k2, &req(A, LEASE), "second claim").await?;
    store
        .pin_lease(&k2, "entity-1")
        .await
        .ctx("pin of the second lease")?;
    clock.set(info.expiry.saturating_add(LEASE));
    store
        .revoke_lease(&k2, A)
        .await
        .ctx("revoke of a pinned lease past its nominal expiry")?;
    expect_holder(&mut store, &k2, None, "after the second revoke").await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Snapshots.

async fn claim_several<S: Store>(
    store: &mut S,
    clock: &FakeClock,
    keys: &[Key],
) -> Result<BTreeMap<Key, Info>, CaseFailure> {
    let mut infos = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let holder = format!("holder-{i}");
        let info = claim_ok(
            store,
            clock,
            k,
            &req(&holder, LEASE),
            &format!("claim of {k}"),
        )
        .await?;
        infos.insert(k.clone(), info);
    }
    Ok(infos)
}

/// `leases(&[])` reports every valid lease, across namespaces and models, exactly as claimed.
pub async fn leases_with_empty_keys_returns_all<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let keys = [
        key("one"),
        key("two"),
        Key::new("ns-2", MODEL, "three"),
        Key::new(NS, "model-2", "four"),
    ];
    let claimed = claim_several(&mut store, &clock, &keys).await?;
    let all = store.leases(&[]).await.ctx("leases([])")?;
    ensure!(
        all == claimed,
        "leases([]) = {all:?}, expected exactly the claimed leases {claimed:?}"
    );
    Ok(())
}

/// `leases(keys)` reports exactly the valid leases among `keys`.
pub async fn leases_filters_by_keys<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let keys = [
        key("one"),
        key("two"),
        key("three"),
        Key::new("ns-2", MODEL, "one"),
    ];
    let claimed = claim_several(&mut store, &clock, &keys).await?;
    for wanted in [
        vec![keys[0].clone()],
        vec![keys[1].clone(), keys[3].clone()],
        keys.to_vec(),
    ] {
        let got = store.leases(&wanted).await.ctx("leases(keys)")?;
        let expected: BTreeMap<Key, Info> = wanted
            .iter()
            .map(|k| (k.clone(), claimed[k].clone()))
            .collect();
        ensure!(
            got == expected,
            "leases({wanted:?}) = {got:?}, expected {expected:?}"
        );
    }
    Ok(())
}

/// Keys nobody holds are simply left out of `leases(keys)`.
pub async fn leases_omits_unknown_keys<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let held = key("held");
    claim_ok(&mut store, &clock, &held, &req(A, LEASE), "claim").await?;
    let unknown = [key("unknown"), Key::new("ns-2", MODEL, "held")];
    let got = store.leases(&unknown).await.ctx("leases(unknown keys)")?;
    ensure!(got.is_empty(), "leases of unknown keys reported {got:?}");
    let mixed = [unknown[0].clone(), held.clone(), unknown[1].clone()];
    let got = store.leases(&mixed).await.ctx("leases(mixed keys)")?;
    ensure!(
        got.keys().collect::<Vec<_>>() == vec![&held],
        "leases({mixed:?}) reported {got:?}, expected only {held}"
    );
    Ok(())
}

/// `lease_group` reports one namespace's leases, not another's with the same model.
pub async fn lease_group_isolates_namespaces<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let mine = [Key::new("ns-1", MODEL, "a"), Key::new("ns-1", MODEL, "b")];
    let theirs = [Key::new("ns-2", MODEL, "a"), Key::new("ns-11", MODEL, "c")];
    let claimed = claim_several(
        &mut store,
        &clock,
        &[mine.to_vec(), theirs.to_vec()].concat(),
    )
    .await?;
    let group = store
        .lease_group("ns-1", MODEL)
        .await
        .ctx("lease_group(ns-1)")?;
    let expected: BTreeMap<Key, Info> = mine
        .iter()
        .map(|k| (k.clone(), claimed[k].clone()))
        .collect();
    ensure!(
        group == expected,
        "lease_group(ns-1, {MODEL}) = {group:?}, expected {expected:?}"
    );
    let group = store
        .lease_group("ns-3", MODEL)
        .await
        .ctx("lease_group(ns-3)")?;
    ensure!(
        group.is_empty(),
        "lease_group of an unused namespace = {group:?}"
    );
    Ok(())
}

/// `lease_group` reports one model's leases, not another's in the same namespace.
pub async fn lease_group_isolates_models<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let mine = [Key::new(NS, "model-1", "a"), Key::new(NS, "model-1", "b")];
    let theirs = [Key::new(NS, "model-2", "a"), Key::new(NS, "model-10", "b")];
    let claimed = claim_several(
        &mut store,
        &clock,
        &[mine.to_vec(), theirs.to_vec()].concat(),
    )
    .await?;
    let group = store
        .lease_group(NS, "model-1")
        .await
        .ctx("lease_group(model-1)")?;
    let expected: BTreeMap<Key, Info> = mine
        .iter()
        .map(|k| (k.clone(), claimed[k].clone()))
        .collect();
    ensure!(
        group == expected,
        "lease_group({NS}, model-1) = {group:?}, expected {expected:?}"
    );
    let group = store
        .lease_group(NS, "model-3")
        .await
        .ctx("lease_group(model-3)")?;
    ensure!(
        group.is_empty(),
        "lease_group of an unused model = {group:?}"
    );
    Ok(())
}

/// No snapshot ever reports an expired, unpinned lease, while unexpired ones stay.
pub async fn expired_lease_is_never_reported<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let short = key("short");
    let long = key("long");
    let info = claim_ok(&mut store, &clock, &short, &req(A, LEASE), "short claim").await?;
    claim_ok(&mut store, &clock, &long, &req(B, LEASE * 3), "long claim").await?;
    for (step, at) in [
        ("at expiry", info.expiry),
        ("after expiry", info.expiry.saturating_add(LEASE)),
    ] {
        clock.set(at);
        expect_holder(&mut store, &short, None, &format!("short lease {step}")).await?;
        expect_holder(&mut store, &long, Some(B), &format!("long lease {step}")).await?;
        let all = store.leases(&[]).await.ctx("leases([])")?;
        ensure!(
            all.keys().collect::<Vec<_>>() == vec![&long],
            "leases([]) {step} = {all:?}, expected only {long}"
        );
        let group = store.lease_group(NS, MODEL).await.ctx("lease_group")?;
        ensure!(
            group.keys().collect::<Vec<_>>() == vec![&long],
            "lease_group {step} = {group:?}, expected only {long}"
        );
    }
    Ok(())
}

/// Snapshots report the same info (holder, expiry, generation, metadata, pin) as the claim.
pub async fn snapshot_info_matches_claim<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("info");
    let request = req(A, LEASE).with_metadata(json!({"n": 1}));
    let info = claim_ok(&mut store, &clock, &k, &request, "claim").await?;
    clock.advance(Duration::from_secs(7));
    let seen = snapshot(&mut store, &k, "snapshot").await?;
    ensure!(
        seen.as_ref() == Some(&info),
        "snapshot {seen:?} differs from the claim's info {info:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pins.

/// A pinned lease does not expire: long past its expiry it is still held, reported pinned,
/// and nobody else can claim it.
pub async fn pinned_lease_outlives_expiry<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("pinned");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    store.pin_lease(&k, "entity-1").await.ctx("pin")?;
    for (step, at) in [
        ("at expiry", info.expiry),
        ("long after expiry", info.expiry.saturating_add(LEASE * 100)),
    ] {
        clock.set(at);
        let seen = expect_holder(&mut store, &k, Some(A), step).await?;
        ensure!(
            seen.is_some_and(|i| i.pinned && i.generation == info.generation),
            "the pinned lease {step} is not reported pinned with its generation"
        );
        let result = store.claim_lease(&k, &req(B, LEASE)).await;
        expect_err(result, &[ErrorKind::Held], &format!("claim by b {step}"))?;
    }
    Ok(())
}

/// A pin on an absent lease applies to its next claimant.
pub async fn pin_on_absent_lease_binds_next_claimant<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("pin-first");
    store
        .pin_lease(&k, "entity-1")
        .await
        .ctx("pin of an absent lease")?;
    expect_holder(&mut store, &k, None, "after the pin, before any claim").await?;
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    ensure!(
        info.pinned,
        "the claim of a pre-pinned lease is not reported pinned: {info:?}"
    );
    clock.set(info.expiry.saturating_add(LEASE));
    let seen = expect_holder(&mut store, &k, Some(A), "past expiry").await?;
    ensure!(
        seen.is_some_and(|i| i.pinned),
        "the lease is not reported pinned past its expiry"
    );
    let pinned = store.pinned().await.ctx("pinned")?;
    ensure!(
        pinned.get(&k) == Some(&vec!["entity-1".to_owned()]),
        "pinned() = {pinned:?}, expected {k} pinned by entity-1"
    );
    Ok(())
}

/// Several entities can pin one lease; it stays pinned until the last one unpins.
pub async fn several_entities_pin_until_the_last_unpins<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("many-pins");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    for entity in ["entity-1", "entity-2", "entity-3"] {
        store
            .pin_lease(&k, entity)
            .await
            .ctx(&format!("pin by {entity}"))?;
    }
    clock.set(info.expiry.saturating_add(LEASE));
    for entity in ["entity-2", "entity-1"] {
        store
            .unpin_lease(&k, entity)
            .await
            .ctx(&format!("unpin by {entity}"))?;
        let seen =
            expect_holder(&mut store, &k, Some(A), &format!("after {entity} unpinned")).await?;
        ensure!(
            seen.is_some_and(|i| i.pinned),
            "the lease is not pinned after {entity} unpinned while entity-3 still pins it"
        );
    }
    store
        .unpin_lease(&k, "entity-3")
        .await
        .ctx("unpin by entity-3")?;
    expect_holder(&mut store, &k, None, "after the last unpin, past expiry").await?;
    Ok(())
}

/// Unpinning restores expiry: within its duration the lease stays held until its expiry; past
/// it, the lease expires at once.
pub async fn unpin_restores_expiry<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("unpin");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    store.pin_lease(&k, "entity-1").await.ctx("pin")?;
    clock.advance(LEASE / 2);
    store
        .unpin_lease(&k, "entity-1")
        .await
        .ctx("unpin before expiry")?;
    let seen = expect_holder(&mut store, &k, Some(A), "after the unpin, before expiry").await?;
    ensure!(
        seen.is_some_and(|i| !i.pinned),
        "the lease is still reported pinned after its only pin was removed"
    );
    clock.set(info.expiry);
    expect_holder(&mut store, &k, None, "at expiry after the unpin").await?;

    let k2 = key("unpin-late");
    let info = claim_ok(&mut store, &clock, &k2, &req(A, LEASE), "second claim").await?;
    store.pin_lease(&k2, "entity-1").await.ctx("second pin")?;
    clock.set(info.expiry.saturating_add(LEASE));
    expect_holder(&mut store, &k2, Some(A), "pinned, past expiry").await?;
    store
        .unpin_lease(&k2, "entity-1")
        .await
        .ctx("unpin past expiry")?;
    expect_holder(&mut store, &k2, None, "unpinned past expiry").await?;
    claim_ok(
        &mut store,
        &clock,
        &k2,
        &req(B, LEASE),
        "claim by b after the unpin",
    )
    .await?;
    Ok(())
}

/// Pinning twice by the same entity is not an error and counts once: one unpin removes it.
pub async fn pin_is_idempotent<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("pin-twice");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    store.pin_lease(&k, "entity-1").await.ctx("first pin")?;
    store.pin_lease(&k, "entity-1").await.ctx("second pin")?;
    let pinned = store.pinned().await.ctx("pinned")?;
    ensure!(
        pinned.get(&k) == Some(&vec!["entity-1".to_owned()]),
        "pinned() after pinning twice = {pinned:?}, expected entity-1 once"
    );
    store.unpin_lease(&k, "entity-1").await.ctx("unpin")?;
    let pinned = store.pinned().await.ctx("pinned after unpin")?;
    ensure!(
        !pinned.contains_key(&k),
        "pinned() after one unpin = {pinned:?}, expected {k} unpinned"
    );
    clock.set(info.expiry);
    expect_holder(&mut store, &k, None, "at expiry after the unpin").await?;
    Ok(())
}

/// Unpinning an entity that never pinned is not an error and leaves other pins alone.
pub async fn unpin_of_entity_that_never_pinned_is_ok<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    store
        .unpin_lease(&key("absent"), "entity-1")
        .await
        .ctx("unpin of an absent lease")?;
    let k = key("pinned");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    store
        .unpin_lease(&k, "entity-1")
        .await
        .ctx("unpin of an unpinned lease")?;
    store.pin_lease(&k, "entity-1").await.ctx("pin")?;
    store
        .unpin_lease(&k, "entity-2")
        .await
        .ctx("unpin by an entity that never pinned")?;
    clock.set(info.expiry.saturating_add(LEASE));
    let seen = expect_holder(&mut store, &k, Some(A), "past expiry").await?;
    ensure!(
        seen.is_some_and(|i| i.pinned),
        "another entity's unpin removed entity-1's pin"
    );
    Ok(())
}

/// `pinned()` lists each pinned lease with its entities sorted, and no unpinned lease.
pub async fn pinned_lists_entities_sorted<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let (k1, k2, k3) = (
        key("p1"),
        Key::new("ns-2", "model-2", "p2"),
        key("unpinned"),
    );
    claim_several(&mut store, &clock, &[k1.clone(), k2.clone(), k3.clone()]).await?;
    for entity in ["zeta", "alpha", "mu"] {
        store
            .pin_lease(&k1, entity)
            .await
            .ctx(&format!("pin of p1 by {entity}"))?;
    }
    store.pin_lease(&k2, "only").await.ctx("pin of p2")?;
    let pinned = store.pinned().await.ctx("pinned")?;
    let expected: BTreeMap<Key, Vec<String>> = [
        (
            k1.clone(),
            vec!["alpha".to_owned(), "mu".to_owned(), "zeta".to_owned()],
        ),
        (k2.clone(), vec!["only".to_owned()]),
    ]
    .into_iter()
    .collect();
    ensure!(
        pinned == expected,
        "pinned() = {pinned:?}, expected {expected:?}"
    );
    store.unpin_lease(&k2, "only").await.ctx("unpin of p2")?;
    let pinned = store.pinned().await.ctx("pinned after unpin")?;
    ensure!(
        pinned.keys().collect::<Vec<_>>() == vec![&k1],
        "pinned() after unpinning p2 = {pinned:?}, expected only p1"
    );
    Ok(())
}

/// `Info::pinned` follows the pins in every snapshot.
pub async fn info_pinned_flag_follows_pins<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("flag");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    ensure!(!info.pinned, "a fresh claim is reported pinned");
    store.pin_lease(&k, "entity-1").await.ctx("pin")?;
    let seen = expect_holder(&mut store, &k, Some(A), "after the pin").await?;
    ensure!(
        seen.is_some_and(|i| i.pinned),
        "Info::pinned is false after the pin"
    );
    store.unpin_lease(&k, "entity-1").await.ctx("unpin")?;
    let seen = expect_holder(&mut store, &k, Some(A), "after the unpin").await?;
    ensure!(
        seen.is_some_and(|i| !i.pinned),
        "Info::pinned is true after the unpin"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fencing generation.

/// Over a history of claims, revokes and expiries, every claim's generation is strictly
/// greater than all earlier ones.
pub async fn generation_strictly_increases_over_claims<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("fenced");
    let mut last: Option<Generation> = None;
    for round in 0..6 {
        let holder = if round % 2 == 0 { A } else { B };
        let info = claim_ok(
            &mut store,
            &clock,
            &k,
            &req(holder, LEASE),
            &format!("claim {round}"),
        )
        .await?;
        if let Some(last) = last {
            ensure!(
                info.generation > last,
                "claim {round} got generation {}, not greater than the previous {last}",
                info.generation
            );
        }
        last = Some(info.generation);
        if round % 3 == 0 {
            store
                .revoke_lease(&k, holder)
                .await
                .ctx(&format!("revoke {round}"))?;
        } else {
            clock.set(info.expiry);
        }
    }
    Ok(())
}

/// A claim after a revoke gets a greater generation than the revoked claim's.
pub async fn generation_increases_after_revoke<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("fenced-revoke");
    let first = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "first claim").await?;
    store.revoke_lease(&k, A).await.ctx("revoke")?;
    let second = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim after revoke").await?;
    ensure!(
        second.generation > first.generation,
        "generation after revoke {} is not greater than {}",
        second.generation,
        first.generation
    );
    Ok(())
}

/// A claim after an expiry gets a greater generation than the expired claim's, even long after.
pub async fn generation_increases_after_expiry<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("fenced-expiry");
    let first = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "first claim").await?;
    clock.set(first.expiry.saturating_add(LEASE * 1000));
    // Reads in between give a store the chance to clean expired records up.
    expect_holder(&mut store, &k, None, "long after expiry").await?;
    let second = claim_ok(&mut store, &clock, &k, &req(B, LEASE), "claim after expiry").await?;
    ensure!(
        second.generation > first.generation,
        "generation after expiry {} is not greater than {}",
        second.generation,
        first.generation
    );
    Ok(())
}

/// Extends keep the claim's generation.
pub async fn generation_unchanged_by_extend<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("fenced-extend");
    let info = claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    for i in 0..3 {
        clock.advance(LEASE / 2);
        let extended = store
            .extend_lease(&k, &req(A, LEASE))
            .await
            .ctx(&format!("extend {i}"))?;
        ensure!(
            extended.generation == info.generation,
            "extend {i} changed the generation from {} to {}",
            info.generation,
            extended.generation
        );
    }
    let seen = expect_holder(&mut store, &k, Some(A), "after the extends").await?;
    ensure!(
        seen.is_some_and(|i| i.generation == info.generation),
        "the snapshot's generation differs from the claim's {}",
        info.generation
    );
    Ok(())
}

/// Claims of one key do not disturb another key's generation, and each key's claims increase.
pub async fn generation_is_independent_per_key<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let (ka, kb) = (key("key-a"), key("key-b"));
    let a1 = claim_ok(&mut store, &clock, &ka, &req(A, LEASE), "claim of key-a").await?;
    let mut last_b = None;
    for i in 0..4 {
        let b = claim_ok(
            &mut store,
            &clock,
            &kb,
            &req(B, LEASE),
            &format!("claim {i} of key-b"),
        )
        .await?;
        if let Some(last) = last_b {
            ensure!(
                b.generation > last,
                "key-b's claim {i} got generation {}, not greater than {last}",
                b.generation
            );
        }
        last_b = Some(b.generation);
        store
            .revoke_lease(&kb, B)
            .await
            .ctx(&format!("revoke {i} of key-b"))?;
    }
    let seen = expect_holder(&mut store, &ka, Some(A), "key-a after key-b's claims").await?;
    ensure!(
        seen.is_some_and(|i| i.generation == a1.generation),
        "key-b's claims changed key-a's generation from {}",
        a1.generation
    );
    store.revoke_lease(&ka, A).await.ctx("revoke of key-a")?;
    let a2 = claim_ok(
        &mut store,
        &clock,
        &ka,
        &req(A, LEASE),
        "second claim of key-a",
    )
    .await?;
    ensure!(
        a2.generation > a1.generation,
        "key-a's second generation {} is not greater than its first {}",
        a2.generation,
        a1.generation
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Metadata.

/// Metadata given with a claim comes back unchanged from the claim and every snapshot.
pub async fn metadata_round_trips<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("meta");
    let metadata = json!({
        "pid": 4242,
        "host": "node-1",
        "ratio": 0.5,
        "tags": ["a", "b", {"nested": null}],
        "unicode": "ÜnïcødéNamé ✓",
        "big": 18_446_744_073_709_551_615u64,
        "neg": -7,
        "flag": true,
    });
    let request = req(A, LEASE).with_metadata(metadata.clone());
    claim_ok(&mut store, &clock, &k, &request, "claim with metadata").await?;
    let seen = expect_holder(&mut store, &k, Some(A), "after the claim").await?;
    ensure!(
        seen.as_ref().and_then(|i| i.metadata.as_ref()) == Some(&metadata),
        "snapshot metadata {:?}, expected {metadata}",
        seen.map(|i| i.metadata)
    );
    for scalar in [json!("just a string"), json!(12), json!(null)] {
        let k = key(&format!("meta-{}", scalar.to_string().len()));
        let request = req(A, LEASE).with_metadata(scalar.clone());
        claim_ok(
            &mut store,
            &clock,
            &k,
            &request,
            &format!("claim with metadata {scalar}"),
        )
        .await?;
        let seen = snapshot(&mut store, &k, "scalar metadata").await?;
        ensure!(
            seen.as_ref().and_then(|i| i.metadata.as_ref()) == Some(&scalar),
            "metadata {scalar} came back as {:?}",
            seen.map(|i| i.metadata)
        );
    }
    Ok(())
}

/// A claim without metadata has none.
pub async fn claim_without_metadata_has_none<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("no-meta");
    claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    let seen = expect_holder(&mut store, &k, Some(A), "after the claim").await?;
    ensure!(
        seen.as_ref().is_some_and(|i| i.metadata.is_none()),
        "a claim without metadata reports {:?}",
        seen.map(|i| i.metadata)
    );
    Ok(())
}

/// An extend that carries metadata replaces the stored metadata.
pub async fn extend_with_metadata_replaces_it<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("meta-replace");
    let request = req(A, LEASE).with_metadata(json!({"v": 1}));
    claim_ok(&mut store, &clock, &k, &request, "claim").await?;
    let new = json!({"v": 2, "extra": [1]});
    let extended = store
        .extend_lease(&k, &req(A, LEASE).with_metadata(new.clone()))
        .await
        .ctx("extend with metadata")?;
    ensure!(
        extended.metadata.as_ref() == Some(&new),
        "extend returned metadata {:?}, expected {new}",
        extended.metadata
    );
    let seen = snapshot(&mut store, &k, "after the extend").await?;
    ensure!(
        seen.as_ref().and_then(|i| i.metadata.as_ref()) == Some(&new),
        "snapshot metadata after the extend {:?}, expected {new}",
        seen.map(|i| i.metadata)
    );
    Ok(())
}

/// An extend without metadata leaves the stored metadata as it was.
pub async fn extend_without_metadata_keeps_it<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("meta-keep");
    let old = json!({"v": 1});
    claim_ok(
        &mut store,
        &clock,
        &k,
        &req(A, LEASE).with_metadata(old.clone()),
        "claim",
    )
    .await?;
    let extended = store
        .extend_lease(&k, &req(A, LEASE))
        .await
        .ctx("extend without metadata")?;
    ensure!(
        extended.metadata.as_ref() == Some(&old),
        "extend returned metadata {:?}, expected {old}",
        extended.metadata
    );
    let seen = snapshot(&mut store, &k, "after the extend").await?;
    ensure!(
        seen.as_ref().and_then(|i| i.metadata.as_ref()) == Some(&old),
        "snapshot metadata after the extend {:?}, expected {old}",
        seen.map(|i| i.metadata)
    );
    Ok(())
}

/// Metadata belongs to a claim: a new claim without metadata does not inherit the last one's.
pub async fn new_claim_does_not_inherit_metadata<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("meta-new");
    let request = req(A, LEASE).with_metadata(json!("old"));
    let info = claim_ok(&mut store, &clock, &k, &request, "first claim").await?;
    store.revoke_lease(&k, A).await.ctx("revoke")?;
    let after_revoke =
        claim_ok(&mut store, &clock, &k, &req(B, LEASE), "claim after revoke").await?;
    let seen = snapshot(&mut store, &k, "after the claim that followed a revoke").await?;
    ensure!(
        seen.as_ref() == Some(&after_revoke),
        "the claim after a revoke reports {after_revoke:?}, snapshots {seen:?}"
    );
    let k2 = key("meta-new-2");
    let request = req(A, LEASE).with_metadata(json!("older"));
    claim_ok(&mut store, &clock, &k2, &request, "claim of a second key").await?;
    clock.set(info.expiry.saturating_add(LEASE * 2));
    let after_expiry = claim_ok(
        &mut store,
        &clock,
        &k2,
        &req(B, LEASE),
        "claim after expiry",
    )
    .await?;
    let seen = snapshot(&mut store, &k2, "after the claim that followed an expiry").await?;
    ensure!(
        seen.as_ref() == Some(&after_expiry),
        "the claim after an expiry reports {after_expiry:?}, snapshots {seen:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// Keys with one bad part each, with the field it is in.
fn bad_keys(lease: &str) -> Vec<(Key, &'static str, &'static str)> {
    let mut keys = Vec::new();
    for bad in BAD_NAMES {
        keys.push((Key::new(bad, MODEL, lease), "namespace", bad));
        keys.push((Key::new(NS, bad, lease), "model", bad));
        keys.push((Key::new(NS, MODEL, bad), "lease", bad));
    }
    keys
}

/// The store's whole visible state, to check that rejected input changed nothing.
async fn state<S: Store>(
    store: &mut S,
) -> Result<(BTreeMap<Key, Info>, BTreeMap<Key, Vec<String>>), CaseFailure> {
    let leases = store.leases(&[]).await.ctx("leases([])")?;
    let pinned = store.pinned().await.ctx("pinned")?;
    Ok((leases, pinned))
}

/// A claim validates namespace, model, lease, holder and duration before anything else: bad
/// input gets a validation error naming the field and value even on a held lease, and changes
/// nothing.
pub async fn claim_validates_every_field_first<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let held = key("held");
    claim_ok(&mut store, &clock, &held, &req(A, LEASE), "claim").await?;
    let before = state(&mut store).await?;
    for (k, field, value) in bad_keys("held") {
        let result = store.claim_lease(&k, &req(B, LEASE)).await;
        expect_validation(result, field, Some(value), &format!("claim of {k:?}"))?;
    }
    for bad in BAD_NAMES {
        for k in [&held, &key("fresh")] {
            let result = store.claim_lease(k, &req(bad, LEASE)).await;
            expect_validation(
                result,
                "holder",
                Some(bad),
                &format!("claim of {k} by {bad:?}"),
            )?;
        }
    }
    for (k, holder) in [(&held, B), (&held, A), (&key("fresh"), A)] {
        let result = store.claim_lease(k, &req(holder, Duration::ZERO)).await;
        expect_validation(
            result,
            "duration",
            None,
            &format!("zero-duration claim of {k} by {holder}"),
        )?;
    }
    let after = state(&mut store).await?;
    ensure!(
        before == after,
        "rejected claims changed the store: {before:?} became {after:?}"
    );
    Ok(())
}

/// An extend validates every field before anything else, even on a lease it could extend.
pub async fn extend_validates_every_field_first<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let held = key("held");
    claim_ok(&mut store, &clock, &held, &req(A, LEASE), "claim").await?;
    let before = state(&mut store).await?;
    for (k, field, value) in bad_keys("held") {
        let result = store.extend_lease(&k, &req(A, LEASE)).await;
        expect_validation(result, field, Some(value), &format!("extend of {k:?}"))?;
    }
    for bad in BAD_NAMES {
        let result = store.extend_lease(&held, &req(bad, LEASE)).await;
        expect_validation(result, "holder", Some(bad), &format!("extend by {bad:?}"))?;
    }
    for k in [&held, &key("absent")] {
        let result = store
            .extend_lease(k, &req(A, Duration::ZERO).with_metadata(json!("x")))
            .await;
        expect_validation(
            result,
            "duration",
            None,
            &format!("zero-duration extend of {k}"),
        )?;
    }
    let after = state(&mut store).await?;
    ensure!(
        before == after,
        "rejected extends changed the store: {before:?} became {after:?}"
    );
    Ok(())
}

/// A revoke validates the key and holder before anything else, even of a lease the holder
/// holds.
pub async fn revoke_validates_key_and_holder_first<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let held = key("held");
    claim_ok(&mut store, &clock, &held, &req(A, LEASE), "claim").await?;
    let before = state(&mut store).await?;
    for (k, field, value) in bad_keys("held") {
        let result = store.revoke_lease(&k, A).await;
        expect_validation(result, field, Some(value), &format!("revoke of {k:?}"))?;
    }
    for bad in BAD_NAMES {
        for k in [&held, &key("absent")] {
            let result = store.revoke_lease(k, bad).await;
            expect_validation(
                result,
                "holder",
                Some(bad),
                &format!("revoke of {k} by {bad:?}"),
            )?;
        }
    }
    let after = state(&mut store).await?;
    ensure!(
        before == after,
        "rejected revokes changed the store: {before:?} became {after:?}"
    );
    Ok(())
}

/// `leases(keys)` validates every key, also when good keys come first.
pub async fn leases_validates_keys<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let held = key("held");
    claim_ok(&mut store, &clock, &held, &req(A, LEASE), "claim").await?;
    for (k, field, value) in bad_keys("held") {
        let result = store.leases(&[held.clone(), k.clone()]).await;
        expect_validation(
            result,
            field,
            Some(value),
            &format!("leases([good, {k:?}])"),
        )?;
    }
    Ok(())
}

/// `lease_group` validates its namespace and model.
pub async fn lease_group_validates_namespace_and_model<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    for bad in BAD_NAMES {
        let result = store.lease_group(bad, MODEL).await;
        expect_validation(
            result,
            "namespace",
            Some(bad),
            &format!("lease_group({bad:?}, model)"),
        )?;
        let result = store.lease_group(NS, bad).await;
        expect_validation(
            result,
            "model",
            Some(bad),
            &format!("lease_group(ns, {bad:?})"),
        )?;
    }
    Ok(())
}

/// Pins and unpins validate the key and the entity, and rejected ones change nothing.
pub async fn pin_and_unpin_validate_key_and_entity<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let held = key("held");
    claim_ok(&mut store, &clock, &held, &req(A, LEASE), "claim").await?;
    store.pin_lease(&held, "entity-1").await.ctx("pin")?;
    let before = state(&mut store).await?;
    for (k, field, value) in bad_keys("held") {
        let result = store.pin_lease(&k, "entity-2").await;
        expect_validation(result, field, Some(value), &format!("pin of {k:?}"))?;
        let result = store.unpin_lease(&k, "entity-1").await;
        expect_validation(result, field, Some(value), &format!("unpin of {k:?}"))?;
    }
    for bad in BAD_NAMES {
        let result = store.pin_lease(&held, bad).await;
        expect_validation(result, "entity", Some(bad), &format!("pin by {bad:?}"))?;
        let result = store.unpin_lease(&held, bad).await;
        expect_validation(result, "entity", Some(bad), &format!("unpin by {bad:?}"))?;
    }
    let after = state(&mut store).await?;
    ensure!(
        before == after,
        "rejected pins changed the store: {before:?} became {after:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Batches.

fn describe(result: &lease_core::Result<Outcome>) -> String {
    match result {
        Ok(outcome) => format!("Ok({outcome:?})"),
        Err(e) => format!("Err({}: {e})", e.kind()),
    }
}

/// `apply` returns one result per op, in the order of the ops, each what the single call
/// would have returned.
pub async fn apply_returns_one_result_per_op_in_order<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let held = key("held");
    claim_ok(&mut store, &clock, &held, &req(B, LEASE), "claim by b").await?;
    let now = clock.now();
    let ops = vec![
        op_claim(&key("k1"), req(A, LEASE)),
        op_revoke(&key("absent"), A),
        op_claim(&key("k2"), req(B, LEASE * 2)),
        op_claim(&held, req(A, LEASE)),
        op_extend(&key("absent"), req(A, LEASE)),
        op_revoke(&held, A),
    ];
    let n = ops.len();
    let results = store.apply(ops).await;
    ensure!(
        results.len() == n,
        "apply of {n} ops returned {} results",
        results.len()
    );
    let all: Vec<String> = results.iter().map(describe).collect();
    ensure!(
        matches!(&results[0], Ok(Outcome::Claimed(i)) if i.holder == A && i.expiry >= now.saturating_add(LEASE)),
        "result 0 (claim of k1 by a) = {}; all: {all:?}",
        all[0]
    );
    ensure!(
        matches!(&results[1], Err(e) if e.is_invalid()),
        "result 1 (revoke of an absent lease) = {}; all: {all:?}",
        all[1]
    );
    ensure!(
        matches!(&results[2], Ok(Outcome::Claimed(i)) if i.holder == B && i.expiry >= now.saturating_add(LEASE * 2)),
        "result 2 (claim of k2 by b) = {}; all: {all:?}",
        all[2]
    );
    ensure!(
        matches!(&results[3], Err(e) if e.is_held()),
        "result 3 (claim of a lease held by b) = {}; all: {all:?}",
        all[3]
    );
    ensure!(
        matches!(&results[4], Err(e) if e.is_invalid()),
        "result 4 (extend of an absent lease) = {}; all: {all:?}",
        all[4]
    );
    ensure!(
        matches!(&results[5], Err(e) if e.is_not_held()),
        "result 5 (revoke by a non-holder) = {}; all: {all:?}",
        all[5]
    );
    expect_holder(&mut store, &key("k1"), Some(A), "k1 after the batch").await?;
    expect_holder(&mut store, &key("k2"), Some(B), "k2 after the batch").await?;
    expect_holder(&mut store, &held, Some(B), "the held lease after the batch").await?;
    Ok(())
}

/// Each op of a batch sees the effects of the ops before it.
pub async fn apply_later_ops_see_earlier_ones<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("batch");
    let ops = vec![
        op_claim(&k, req(A, LEASE)),
        op_claim(&k, req(B, LEASE)),
        op_extend(&k, req(A, LEASE * 2).with_metadata(json!("extended"))),
        op_revoke(&k, A),
        op_claim(&k, req(B, LEASE)),
        op_extend(&k, req(A, LEASE)),
    ];
    let results = store.apply(ops).await;
    let all: Vec<String> = results.iter().map(describe).collect();
    ensure!(
        results.len() == 6,
        "apply of 6 ops returned {} results: {all:?}",
        results.len()
    );
    let first_gen = match &results[0] {
        Ok(Outcome::Claimed(i)) if i.holder == A => i.generation,
        _ => return Err(CaseFailure::new(format!("the first claim failed: {all:?}"))),
    };
    ensure!(
        matches!(&results[1], Err(e) if e.is_held()),
        "a claim by b after a's claim in the same batch did not see it: {all:?}"
    );
    ensure!(
        matches!(&results[2], Ok(Outcome::Extended(i)) if i.generation == first_gen && i.metadata == Some(json!("extended"))),
        "a's extend after its claim in the same batch did not succeed as expected: {all:?}"
    );
    ensure!(
        matches!(&results[3], Ok(Outcome::Revoked)),
        "a's revoke after its claim in the same batch failed: {all:?}"
    );
    ensure!(
        matches!(&results[4], Ok(Outcome::Claimed(i)) if i.holder == B && i.generation > first_gen && i.metadata.is_none()),
        "b's claim after a's revoke in the same batch did not succeed with a greater generation: {all:?}"
    );
    ensure!(
        matches!(&results[5], Err(e) if e.is_invalid()),
        "a's extend of b's lease in the same batch was not Invalid: {all:?}"
    );
    let _ = clock;
    expect_holder(&mut store, &k, Some(B), "after the batch").await?;
    Ok(())
}

/// A failing op, a rejected one included, fails alone: the ops around it take effect.
pub async fn apply_failing_op_does_not_stop_the_others<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let ops = vec![
        op_claim(&key("before"), req(A, LEASE)),
        op_claim(&key("bad lease"), req(A, LEASE)),
        op_claim(&key("zero"), req(A, Duration::ZERO)),
        op_revoke(&key("absent"), A),
        op_claim(&key("after"), req(B, LEASE)),
    ];
    let results = store.apply(ops).await;
    let all: Vec<String> = results.iter().map(describe).collect();
    ensure!(
        results.len() == 5,
        "apply of 5 ops returned {} results: {all:?}",
        results.len()
    );
    ensure!(
        results[0].is_ok(),
        "the op before the failures failed: {all:?}"
    );
    ensure!(
        matches!(&results[1], Err(e) if e.is_validation()),
        "a claim of a bad key was not a validation error: {all:?}"
    );
    ensure!(
        matches!(&results[2], Err(e) if e.is_validation()),
        "a zero-duration claim was not a validation error: {all:?}"
    );
    ensure!(
        matches!(&results[3], Err(e) if e.is_invalid()),
        "a revoke of an absent lease was not Invalid: {all:?}"
    );
    ensure!(
        results[4].is_ok(),
        "the op after the failures failed: {all:?}"
    );
    expect_holder(
        &mut store,
        &key("before"),
        Some(A),
        "the first claimed lease",
    )
    .await?;
    expect_holder(&mut store, &key("after"), Some(B), "the last claimed lease").await?;
    expect_holder(&mut store, &key("zero"), None, "the zero-duration lease").await?;
    Ok(())
}

/// An empty batch returns no results and changes nothing.
pub async fn apply_empty_batch_returns_nothing<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    claim_ok(&mut store, &clock, &key("held"), &req(A, LEASE), "claim").await?;
    let before = state(&mut store).await?;
    let results = store.apply(Vec::new()).await;
    ensure!(
        results.is_empty(),
        "an empty batch returned {} results",
        results.len()
    );
    let after = state(&mut store).await?;
    ensure!(before == after, "an empty batch changed the store");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Several instances over one backing.

/// What one instance does, the other sees: claims, extends and revokes.
pub async fn sibling_sees_claims_extends_and_revokes<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let mut fx = fx(builder).await?;
    let Some(mut other) = fx
        .sibling(builder, "sibling_sees_claims_extends_and_revokes")
        .await?
    else {
        return Ok(());
    };
    let k = key("shared");
    let request = req(A, LEASE).with_metadata(json!({"from": "first"}));
    let info = claim_ok(
        &mut fx.store,
        &fx.clock,
        &k,
        &request,
        "claim on the first instance",
    )
    .await?;
    let seen = expect_holder(&mut other, &k, Some(A), "the claim, seen by the sibling").await?;
    ensure!(
        seen.as_ref() == Some(&info),
        "the sibling sees {seen:?}, the claim returned {info:?}"
    );
    fx.clock.advance(LEASE / 2);
    let extended = other
        .extend_lease(&k, &req(A, LEASE))
        .await
        .ctx("extend on the sibling")?;
    let seen = expect_holder(&mut fx.store, &k, Some(A), "the extend, seen by the first").await?;
    ensure!(
        seen.as_ref().is_some_and(|i| i.expiry == extended.expiry),
        "the first instance sees {seen:?} after the sibling's extend to {}",
        extended.expiry
    );
    fx.clock.set(info.expiry);
    expect_holder(
        &mut fx.store,
        &k,
        Some(A),
        "at the original expiry, after the extend",
    )
    .await?;
    fx.store
        .revoke_lease(&k, A)
        .await
        .ctx("revoke on the first instance")?;
    expect_holder(&mut other, &k, None, "the revoke, seen by the sibling").await?;
    let start = fx.now();
    let info = other
        .claim_lease(&k, &req(B, LEASE))
        .await
        .ctx("claim on the sibling")?;
    check_claim_info(&info, &req(B, LEASE), start, "claim on the sibling")?;
    expect_holder(
        &mut fx.store,
        &k,
        Some(B),
        "the sibling's claim, seen by the first",
    )
    .await?;
    Ok(())
}

/// A lease claimed through one instance is respected by the other: its claim is `Held`, its
/// extend `Invalid`, its revoke `NotHeld`; and its own claim is `Invalid` for the same holder.
pub async fn sibling_respects_claim<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let mut fx = fx(builder).await?;
    let Some(mut other) = fx.sibling(builder, "sibling_respects_claim").await? else {
        return Ok(());
    };
    let k = key("shared");
    let info = claim_ok(
        &mut fx.store,
        &fx.clock,
        &k,
        &req(A, LEASE),
        "claim on the first",
    )
    .await?;
    expect_err(
        other.claim_lease(&k, &req(B, LEASE)).await,
        &[ErrorKind::Held],
        "claim by b on the sibling",
    )?;
    expect_err(
        other.claim_lease(&k, &req(A, LEASE)).await,
        &[ErrorKind::Invalid],
        "claim by the holder on the sibling",
    )?;
    expect_err(
        other.extend_lease(&k, &req(B, LEASE)).await,
        &[ErrorKind::Invalid],
        "extend by b on the sibling",
    )?;
    expect_err(
        other.revoke_lease(&k, B).await,
        &[ErrorKind::NotHeld],
        "revoke by b on the sibling",
    )?;
    fx.clock.set(info.expiry.saturating_sub(NANO));
    expect_err(
        other.claim_lease(&k, &req(B, LEASE)).await,
        &[ErrorKind::Held],
        "claim by b on the sibling just before expiry",
    )?;
    fx.clock.set(info.expiry);
    claim_ok(
        &mut other,
        &fx.clock,
        &k,
        &req(B, LEASE),
        "claim by b on the sibling at expiry",
    )
    .await?;
    let seen = expect_holder(&mut fx.store, &k, Some(B), "b's claim, seen by the first").await?;
    ensure!(
        seen.is_some_and(|i| i.generation > info.generation),
        "b's claim through the sibling did not get a greater generation than {}",
        info.generation
    );
    Ok(())
}

/// Generations keep increasing when successive claims go through different instances.
pub async fn sibling_generation_continues<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let mut fx = fx(builder).await?;
    let Some(other) = fx.sibling(builder, "sibling_generation_continues").await? else {
        return Ok(());
    };
    let k = key("shared");
    let mut stores = [fx.store, other];
    let mut last: Option<Generation> = None;
    for round in 0..6 {
        let store = &mut stores[round % 2];
        let holder = format!("holder-{round}");
        let info = claim_ok(
            store,
            &fx.clock,
            &k,
            &req(&holder, LEASE),
            &format!("claim {round}"),
        )
        .await?;
        if let Some(last) = last {
            ensure!(
                info.generation > last,
                "claim {round} (instance {}) got generation {}, not greater than {last}",
                round % 2,
                info.generation
            );
        }
        last = Some(info.generation);
        if round % 3 == 2 {
            // The other instance reads the lease before it expires: a store that judges expiry
            // by when it observed a record (as client-go does) may only count the lease expired
            // a full duration after it first saw it.
            let other_idx = (round + 1) % 2;
            stores[other_idx]
                .leases(std::slice::from_ref(&k))
                .await
                .ctx(&format!(
                    "round {round}: the other instance reads the lease"
                ))?;
            fx.clock.set(info.expiry);
        } else {
            // Revoke through the other instance.
            stores[(round + 1) % 2]
                .revoke_lease(&k, &holder)
                .await
                .ctx(&format!("revoke {round} through the other instance"))?;
        }
    }
    let [first, _] = stores;
    fx.store = first;
    Ok(())
}

/// Pins made through one instance hold for the other.
pub async fn sibling_sees_pins<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let mut fx = fx(builder).await?;
    let Some(mut other) = fx.sibling(builder, "sibling_sees_pins").await? else {
        return Ok(());
    };
    let k = key("shared");
    let info = claim_ok(&mut fx.store, &fx.clock, &k, &req(A, LEASE), "claim").await?;
    other
        .pin_lease(&k, "entity-1")
        .await
        .ctx("pin on the sibling")?;
    let pinned = fx.store.pinned().await.ctx("pinned on the first")?;
    ensure!(
        pinned.get(&k) == Some(&vec!["entity-1".to_owned()]),
        "the first instance's pinned() = {pinned:?} after the sibling pinned {k}"
    );
    fx.clock.set(info.expiry.saturating_add(LEASE));
    expect_holder(
        &mut fx.store,
        &k,
        Some(A),
        "past expiry, pinned through the sibling",
    )
    .await?;
    fx.store
        .unpin_lease(&k, "entity-1")
        .await
        .ctx("unpin on the first")?;
    expect_holder(
        &mut other,
        &k,
        None,
        "past expiry, unpinned through the first",
    )
    .await?;
    Ok(())
}

/// A write through one instance is reported to the other by `poll_changes` (and by its
/// `change_notifier`, if it has one).
pub async fn sibling_change_is_reported<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let mut fx = fx(builder).await?;
    let Some(mut other) = fx.sibling(builder, "sibling_change_is_reported").await? else {
        return Ok(());
    };
    let mut notifier = fx.store.change_notifier();
    if let Some(rx) = notifier.as_mut() {
        rx.borrow_and_update();
    }
    // Whatever was pending before is consumed.
    fx.store.poll_changes().await.ctx("first poll")?;
    let k = key("shared");
    claim_ok(
        &mut other,
        &fx.clock,
        &k,
        &req(A, LEASE),
        "claim on the sibling",
    )
    .await?;
    // A store that learns of changes from a watch knows only once the event arrives, so poll
    // until it says yes, for at most 10 s of real time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let changed = fx
            .store
            .poll_changes()
            .await
            .ctx("poll after the sibling's claim")?;
        if changed {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "poll_changes still said no 10 s after a sibling claimed a lease"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(mut rx) = notifier {
        let waited = tokio::time::timeout(Duration::from_secs(10), rx.changed()).await;
        ensure!(
            matches!(waited, Ok(Ok(()))),
            "the change notifier did not change within 10 s of a sibling's claim ({waited:?})"
        );
    }
    Ok(())
}

/// Instances racing to claim one lease (tokio tasks, launched together): exactly one wins each
/// round, the others get `Held` or `Invalid`, everyone then sees the winner, and each round's
/// generation is greater than the last. Rounds alternate freeing the lease by revoke and by
/// expiry.
pub async fn concurrent_claims_have_exactly_one_winner<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        clock,
        store,
        guard,
    } = fx(builder).await?;
    let mut stores = vec![store];
    while stores.len() < RACERS {
        let sibling = builder
            .build_sibling(&guard, clock.as_clock())
            .await
            .map_err(|e| CaseFailure::new(format!("building a sibling failed: {e}")))?;
        match sibling {
            Some(s) => stores.push(s),
            None => {
                eprintln!(
                    "conformance case concurrent_claims_have_exactly_one_winner: skipped, the \
                     store cannot share its backing"
                );
                return Ok(());
            }
        }
    }
    let k = key("contested");
    let mut last: Option<Generation> = None;
    for round in 0..ROUNDS {
        let mut tasks = Vec::with_capacity(RACERS);
        for (i, mut store) in stores.drain(..).enumerate() {
            let k = k.clone();
            let request = req(&format!("racer-{i}"), LEASE);
            tasks.push(tokio::spawn(async move {
                let result = store.claim_lease(&k, &request).await;
                (store, result)
            }));
        }
        let mut winners = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            let (store, result) = task.await.map_err(|e| {
                CaseFailure::new(format!("round {round}: racer {i}'s task failed: {e}"))
            })?;
            stores.push(store);
            match result {
                Ok(info) => winners.push((i, info)),
                Err(e) if e.is_held() || e.is_invalid() => {}
                Err(e) => {
                    return Err(CaseFailure::new(format!(
                        "round {round}: racer {i} got a {} error, expected Held or Invalid: {e}",
                        e.kind()
                    )));
                }
            }
        }
        ensure!(
            winners.len() == 1,
            "round {round}: {} of {RACERS} concurrent claims succeeded: {winners:?}",
            winners.len()
        );
        let (winner, info) = winners.remove(0);
        let holder = format!("racer-{winner}");
        ensure!(
            info.holder == holder,
            "round {round}: racer {winner}'s claim reported holder {:?}",
            info.holder
        );
        if let Some(last) = last {
            ensure!(
                info.generation > last,
                "round {round}: the winner's generation {} is not greater than the last round's {last}",
                info.generation
            );
        }
        last = Some(info.generation);
        for (i, store) in stores.iter_mut().enumerate() {
            expect_holder(
                store,
                &k,
                Some(&holder),
                &format!("round {round}, instance {i}"),
            )
            .await?;
        }
        if round % 2 == 0 {
            stores[winner]
                .revoke_lease(&k, &holder)
                .await
                .ctx(&format!("round {round}: the winner's revoke"))?;
        } else {
            clock.set(info.expiry);
        }
    }
    drop(stores);
    drop(guard);
    Ok(())
}
