//! Claim: a claim succeeds only on an absent or expired lease, holds until `duration` after
//! the call started (and not at the expiry instant), and never silently succeeds over a valid
//! lease: another holder's gives `Held`, the same holder's `Invalid`.

use std::time::Duration;

use lease_core::{ErrorKind, Key, Store};
use serde_json::json;

use crate::suite::StoreBuilder;

use super::support::{
    A, B, CaseResult, Ctx, Fx, LEASE, MODEL, NANO, NS, claim_ok, ensure, expect_err, expect_holder,
    fx, key, req,
};

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
