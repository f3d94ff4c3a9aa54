//! Extend: only the holder of an unexpired (or pinned) lease extends it, and an extend only
//! ever lengthens it (`max(current expiry, now + duration)`); anything else is `Invalid`.

use std::time::Duration;

use lease_core::{ErrorKind, Store};
use serde_json::json;

use crate::suite::StoreBuilder;

use super::support::{
    A, B, CaseResult, Ctx, EXPIRY_SLACK, Fx, LEASE, NANO, claim_ok, ensure, expect_err,
    expect_holder, fx, key, req,
};

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

/// Each extend answers the lease as it is now: a pin, an unpin or new metadata since the last
/// extend shows in the next one's answer (a store that remembers what it wrote between
/// extends must not answer from that memory).
pub async fn extend_answers_changes_since_the_last_extend<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("extend-sees-changes");
    claim_ok(&mut store, &clock, &k, &req(A, LEASE), "claim").await?;
    let extend = async |store: &mut Bu::Store, what: &str| {
        clock.advance(NANO);
        store.extend_lease(&k, &req(A, LEASE)).await.ctx(what)
    };
    let first = extend(&mut store, "first extend").await?;
    ensure!(
        !first.pinned,
        "an unpinned lease is reported pinned: {first:?}"
    );
    store.pin_lease(&k, "entity-1").await.ctx("pin")?;
    let pinned = extend(&mut store, "extend after the pin").await?;
    ensure!(
        pinned.pinned,
        "the extend after a pin says unpinned: {pinned:?}"
    );
    let new = json!({"v": 2});
    store
        .extend_lease(&k, &req(A, LEASE).with_metadata(new.clone()))
        .await
        .ctx("extend with metadata")?;
    let kept = extend(&mut store, "extend after the metadata").await?;
    ensure!(
        kept.metadata.as_ref() == Some(&new) && kept.pinned,
        "the extend after new metadata answered {kept:?}, expected metadata {new}, pinned"
    );
    store.unpin_lease(&k, "entity-1").await.ctx("unpin")?;
    let unpinned = extend(&mut store, "extend after the unpin").await?;
    ensure!(
        !unpinned.pinned && unpinned.metadata.as_ref() == Some(&new),
        "the extend after the unpin answered {unpinned:?}, expected unpinned, metadata {new}"
    );
    Ok(())
}
