//! Metadata: a claim's metadata comes back unchanged; an extend with metadata replaces it, one
//! without keeps it; a new claim does not inherit the last one's.

use lease_core::Store;
use serde_json::json;

use crate::suite::StoreBuilder;

use super::support::{
    A, B, CaseResult, Ctx, Fx, LEASE, claim_ok, ensure, expect_holder, fx, key, req, snapshot,
};

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
