//! Validation first: every method validates its keys, holders, entities and durations before
//! anything else, fails with a validation error naming the field and value, and changes
//! nothing.

use std::time::Duration;

use lease_core::{Key, Store};
use serde_json::json;

use crate::suite::StoreBuilder;

use super::support::{
    A, B, BAD_NAMES, CaseResult, Ctx, Fx, LEASE, MODEL, NS, claim_ok, ensure, expect_validation,
    fx, key, req, state,
};

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
