//! Fencing generation: every claim (not extend) of a key gets a generation strictly greater
//! than any earlier claim's, through revokes and expiries, independently per key.

use crate::suite::StoreBuilder;
use lease_core::{Generation, Store};

use super::support::{
    A, B, CaseResult, Ctx, Fx, LEASE, claim_ok, ensure, expect_holder, fx, key, req,
};

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
