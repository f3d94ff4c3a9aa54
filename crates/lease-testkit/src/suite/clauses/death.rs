//! Death: a store may free a lease before its expiry only when no process of its holder can
//! act on it any more (the SQLite store knows it on one host: the kernel releases a dead
//! process's locks). The next claim then gets a strictly higher generation. A holder that is
//! alive but silent (stopped, paused, its renewals hung) keeps its lease until the expiry, and
//! a pin keeps a dead holder's lease held. The holder here is a mortal sibling
//! ([`StoreBuilder::build_mortal_sibling`]), whose drop is its death; each case passes without
//! checking anything for a store that frees leases at their expiry only.

use lease_core::{ErrorKind, Store};

use crate::suite::StoreBuilder;

use super::support::{
    A, B, CaseResult, Ctx, LEASE, NANO, claim_ok, ensure, expect_err, expect_holder, fx, key, req,
};

/// A dead holder's lease is free at once: snapshots stop reporting it and a claim succeeds,
/// with a strictly higher generation, long before the expiry.
pub async fn dead_holders_lease_frees_early_with_a_higher_generation<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let mut fx = fx(builder).await?;
    let case = "dead_holders_lease_frees_early_with_a_higher_generation";
    let Some(mut holder) = fx.mortal(builder, case).await? else {
        return Ok(());
    };
    let k = key("dies");
    let held = claim_ok(
        &mut holder,
        &fx.clock,
        &k,
        &req(A, LEASE),
        "claim by the holder",
    )
    .await?;
    expect_err(
        fx.store.claim_lease(&k, &req(B, LEASE)).await,
        &[ErrorKind::Held],
        "claim while the holder lives",
    )?;
    drop(holder);
    fx.clock.advance(NANO);
    expect_holder(&mut fx.store, &k, None, "the dead holder's lease").await?;
    let taken = claim_ok(
        &mut fx.store,
        &fx.clock,
        &k,
        &req(B, LEASE),
        "claim after the death",
    )
    .await?;
    ensure!(
        taken.generation > held.generation,
        "the takeover got generation {}, not above the dead holder's {}",
        taken.generation,
        held.generation
    );
    Ok(())
}

/// A live holder that makes no call keeps its lease until the expiry instant, and not after.
pub async fn silent_holders_lease_frees_only_at_its_expiry<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let mut fx = fx(builder).await?;
    let case = "silent_holders_lease_frees_only_at_its_expiry";
    let Some(mut holder) = fx.mortal(builder, case).await? else {
        return Ok(());
    };
    let k = key("silent");
    let held = claim_ok(
        &mut holder,
        &fx.clock,
        &k,
        &req(A, LEASE),
        "claim by the holder",
    )
    .await?;
    fx.clock.set(held.expiry.saturating_sub(NANO));
    expect_err(
        fx.store.claim_lease(&k, &req(B, LEASE)).await,
        &[ErrorKind::Held],
        "claim a nanosecond before the silent holder's expiry",
    )?;
    fx.clock.set(held.expiry);
    let taken = fx
        .store
        .claim_lease(&k, &req(B, LEASE))
        .await
        .ctx("claim at the expiry")?;
    ensure!(
        taken.generation > held.generation,
        "generation {} after {}",
        taken.generation,
        held.generation
    );
    expect_err(
        holder.extend_lease(&k, &req(A, LEASE)).await,
        &[ErrorKind::Invalid],
        "the old holder's extend after the takeover",
    )?;
    Ok(())
}

/// A pinned lease does not expire, and its holder's death does not free it either.
pub async fn dead_holders_pinned_lease_stays_held<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let mut fx = fx(builder).await?;
    let case = "dead_holders_pinned_lease_stays_held";
    let Some(mut holder) = fx.mortal(builder, case).await? else {
        return Ok(());
    };
    let k = key("pinned");
    claim_ok(
        &mut holder,
        &fx.clock,
        &k,
        &req(A, LEASE),
        "claim by the holder",
    )
    .await?;
    fx.store.pin_lease(&k, "pinner").await.ctx("pin")?;
    drop(holder);
    expect_err(
        fx.store.claim_lease(&k, &req(B, LEASE)).await,
        &[ErrorKind::Held],
        "claim of a pinned lease whose holder died",
    )?;
    expect_holder(&mut fx.store, &k, Some(A), "the pinned lease").await?;
    Ok(())
}
