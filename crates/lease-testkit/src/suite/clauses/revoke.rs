//! Revoke: only the holder of an unexpired or pinned lease revokes it, which frees it at once;
//! an absent or expired lease gives `Invalid`, another holder's `NotHeld`, and a pin never
//! makes a revoke fail.

use crate::suite::StoreBuilder;
use lease_core::{ErrorKind, Store};

use super::support::{
    A, B, CaseResult, Ctx, Fx, LEASE, claim_ok, ensure, expect_err, expect_holder, fx, key, req,
};

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
