//! Snapshots: `leases` and `lease_group` report exactly the valid leases asked for, as they
//! were claimed, and never an expired, unpinned one.

use std::collections::BTreeMap;
use std::time::Duration;

use lease_core::{Info, Key, Store};
use serde_json::json;

use crate::suite::StoreBuilder;

use super::support::{
    A, B, CaseResult, Ctx, Fx, LEASE, MODEL, NS, claim_ok, claim_several, ensure, expect_holder,
    fx, key, req, snapshot,
};

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
