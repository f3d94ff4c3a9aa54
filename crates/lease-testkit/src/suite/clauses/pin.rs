//! Pins: a pinned lease does not expire; a pin on an absent lease binds its next claimant;
//! several entities may pin one lease, and expiry returns when the last one unpins; pinning
//! twice, or unpinning an entity that never pinned, is not an error.

use std::collections::BTreeMap;

use crate::suite::StoreBuilder;
use lease_core::{ErrorKind, Key, Store};

use super::support::{
    A, B, CaseResult, Ctx, Fx, LEASE, claim_ok, claim_several, ensure, expect_err, expect_holder,
    fx, key, req,
};

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
