//! Several instances over one backing: what one instance does the others see and respect
//! (claims, extends, revokes, pins, generations), a write through one is reported to the
//! others' change notification, and instances racing to claim one lease have exactly one
//! winner. Each case passes without checking anything when the store cannot share its
//! backing ([`StoreBuilder::build_sibling`] returns `None`).

use std::time::Duration;

use lease_core::{ErrorKind, Generation, Store};
use serde_json::json;

use crate::suite::{CaseFailure, StoreBuilder};

use super::support::{
    A, B, CaseResult, Ctx, Fx, LEASE, NANO, check_claim_info, claim_ok, ensure, expect_err,
    expect_holder, fx, key, req,
};

/// How many instances race in the concurrent case.
const RACERS: usize = 8;
/// How many rounds they race.
const ROUNDS: usize = 6;

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
