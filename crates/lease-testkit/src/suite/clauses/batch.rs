//! Batches: `apply` returns one result per op, in order, each what the single call would have
//! returned; each op sees the ones before it, and a failing op fails alone.

use std::time::Duration;

use lease_core::{Outcome, Store};
use serde_json::json;

use crate::suite::{CaseFailure, StoreBuilder};

use super::support::{
    A, B, CaseResult, Fx, LEASE, claim_ok, ensure, expect_holder, fx, key, op_claim, op_extend,
    op_revoke, req, state,
};

fn describe(result: &lease_core::Result<Outcome>) -> String {
    match result {
        Ok(outcome) => format!("Ok({outcome:?})"),
        Err(e) => format!("Err({}: {e})", e.kind()),
    }
}

/// `apply` returns one result per op, in the order of the ops, each what the single call
/// would have returned.
pub async fn apply_returns_one_result_per_op_in_order<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let held = key("held");
    claim_ok(&mut store, &clock, &held, &req(B, LEASE), "claim by b").await?;
    let now = clock.now();
    let ops = vec![
        op_claim(&key("k1"), req(A, LEASE)),
        op_revoke(&key("absent"), A),
        op_claim(&key("k2"), req(B, LEASE * 2)),
        op_claim(&held, req(A, LEASE)),
        op_extend(&key("absent"), req(A, LEASE)),
        op_revoke(&held, A),
    ];
    let n = ops.len();
    let results = store.apply(ops).await;
    ensure!(
        results.len() == n,
        "apply of {n} ops returned {} results",
        results.len()
    );
    let all: Vec<String> = results.iter().map(describe).collect();
    ensure!(
        matches!(&results[0], Ok(Outcome::Claimed(i)) if i.holder == A && i.expiry >= now.saturating_add(LEASE)),
        "result 0 (claim of k1 by a) = {}; all: {all:?}",
        all[0]
    );
    ensure!(
        matches!(&results[1], Err(e) if e.is_invalid()),
        "result 1 (revoke of an absent lease) = {}; all: {all:?}",
        all[1]
    );
    ensure!(
        matches!(&results[2], Ok(Outcome::Claimed(i)) if i.holder == B && i.expiry >= now.saturating_add(LEASE * 2)),
        "result 2 (claim of k2 by b) = {}; all: {all:?}",
        all[2]
    );
    ensure!(
        matches!(&results[3], Err(e) if e.is_held()),
        "result 3 (claim of a lease held by b) = {}; all: {all:?}",
        all[3]
    );
    ensure!(
        matches!(&results[4], Err(e) if e.is_invalid()),
        "result 4 (extend of an absent lease) = {}; all: {all:?}",
        all[4]
    );
    ensure!(
        matches!(&results[5], Err(e) if e.is_not_held()),
        "result 5 (revoke by a non-holder) = {}; all: {all:?}",
        all[5]
    );
    expect_holder(&mut store, &key("k1"), Some(A), "k1 after the batch").await?;
    expect_holder(&mut store, &key("k2"), Some(B), "k2 after the batch").await?;
    expect_holder(&mut store, &held, Some(B), "the held lease after the batch").await?;
    Ok(())
}

/// Each op of a batch sees the effects of the ops before it.
pub async fn apply_later_ops_see_earlier_ones<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("batch");
    let ops = vec![
        op_claim(&k, req(A, LEASE)),
        op_claim(&k, req(B, LEASE)),
        op_extend(&k, req(A, LEASE * 2).with_metadata(json!("extended"))),
        op_revoke(&k, A),
        op_claim(&k, req(B, LEASE)),
        op_extend(&k, req(A, LEASE)),
    ];
    let results = store.apply(ops).await;
    let all: Vec<String> = results.iter().map(describe).collect();
    ensure!(
        results.len() == 6,
        "apply of 6 ops returned {} results: {all:?}",
        results.len()
    );
    let first_gen = match &results[0] {
        Ok(Outcome::Claimed(i)) if i.holder == A => i.generation,
        _ => return Err(CaseFailure::new(format!("the first claim failed: {all:?}"))),
    };
    ensure!(
        matches!(&results[1], Err(e) if e.is_held()),
        "a claim by b after a's claim in the same batch did not see it: {all:?}"
    );
    ensure!(
        matches!(&results[2], Ok(Outcome::Extended(i)) if i.generation == first_gen && i.metadata == Some(json!("extended"))),
        "a's extend after its claim in the same batch did not succeed as expected: {all:?}"
    );
    ensure!(
        matches!(&results[3], Ok(Outcome::Revoked)),
        "a's revoke after its claim in the same batch failed: {all:?}"
    );
    ensure!(
        matches!(&results[4], Ok(Outcome::Claimed(i)) if i.holder == B && i.generation > first_gen && i.metadata.is_none()),
        "b's claim after a's revoke in the same batch did not succeed with a greater generation: {all:?}"
    );
    ensure!(
        matches!(&results[5], Err(e) if e.is_invalid()),
        "a's extend of b's lease in the same batch was not Invalid: {all:?}"
    );
    let _ = clock;
    expect_holder(&mut store, &k, Some(B), "after the batch").await?;
    Ok(())
}

/// A failing op, a rejected one included, fails alone: the ops around it take effect.
pub async fn apply_failing_op_does_not_stop_the_others<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let ops = vec![
        op_claim(&key("before"), req(A, LEASE)),
        op_claim(&key("bad lease"), req(A, LEASE)),
        op_claim(&key("zero"), req(A, Duration::ZERO)),
        op_revoke(&key("absent"), A),
        op_claim(&key("after"), req(B, LEASE)),
    ];
    let results = store.apply(ops).await;
    let all: Vec<String> = results.iter().map(describe).collect();
    ensure!(
        results.len() == 5,
        "apply of 5 ops returned {} results: {all:?}",
        results.len()
    );
    ensure!(
        results[0].is_ok(),
        "the op before the failures failed: {all:?}"
    );
    ensure!(
        matches!(&results[1], Err(e) if e.is_validation()),
        "a claim of a bad key was not a validation error: {all:?}"
    );
    ensure!(
        matches!(&results[2], Err(e) if e.is_validation()),
        "a zero-duration claim was not a validation error: {all:?}"
    );
    ensure!(
        matches!(&results[3], Err(e) if e.is_invalid()),
        "a revoke of an absent lease was not Invalid: {all:?}"
    );
    ensure!(
        results[4].is_ok(),
        "the op after the failures failed: {all:?}"
    );
    expect_holder(
        &mut store,
        &key("before"),
        Some(A),
        "the first claimed lease",
    )
    .await?;
    expect_holder(&mut store, &key("after"), Some(B), "the last claimed lease").await?;
    expect_holder(&mut store, &key("zero"), None, "the zero-duration lease").await?;
    Ok(())
}

/// An empty batch returns no results and changes nothing.
pub async fn apply_empty_batch_returns_nothing<Bu: StoreBuilder>(builder: &Bu) -> CaseResult {
    let Fx {
        clock,
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    claim_ok(&mut store, &clock, &key("held"), &req(A, LEASE), "claim").await?;
    let before = state(&mut store).await?;
    let results = store.apply(Vec::new()).await;
    ensure!(
        results.is_empty(),
        "an empty batch returned {} results",
        results.len()
    );
    let after = state(&mut store).await?;
    ensure!(before == after, "an empty batch changed the store");
    Ok(())
}

/// Batches started ahead (`start_apply`, for a store that can) are applied in the order they
/// were started, each seeing the ones before, whatever order their results are awaited in. A
/// store that cannot start batches gives the ops back untouched.
pub async fn started_batches_apply_in_the_order_started<Bu: StoreBuilder>(
    builder: &Bu,
) -> CaseResult {
    let Fx {
        mut store,
        guard: _guard,
        ..
    } = fx(builder).await?;
    let k = key("started");
    let first_ops = vec![op_claim(&k, req(A, LEASE))];
    let first = match store.start_apply(first_ops.clone()) {
        Ok(first) => first,
        Err(ops) => {
            ensure!(
                ops == first_ops,
                "a store that cannot start batches changed the ops it gave back: {ops:?}"
            );
            return Ok(());
        }
    };
    let second = store
        .start_apply(vec![
            op_claim(&k, req(B, LEASE)),
            op_extend(&k, req(A, LEASE * 2)),
        ])
        .map_err(|ops| {
            CaseFailure::new(format!(
                "the store started one batch and refused the next: {ops:?}"
            ))
        })?;
    let third = store
        .start_apply(vec![op_revoke(&k, A), op_claim(&k, req(B, LEASE))])
        .map_err(|ops| CaseFailure::new(format!("the store refused a third batch: {ops:?}")))?;
    // Awaited last first: the order they take effect in is the order they were started in.
    let third = third.await;
    let second = second.await;
    let first = first.await;
    let all: Vec<String> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(describe)
        .collect();
    ensure!(
        first.len() == 1 && second.len() == 2 && third.len() == 2,
        "started batches of 1, 2 and 2 ops returned {all:?}"
    );
    let generation = match &first[0] {
        Ok(Outcome::Claimed(i)) if i.holder == A => i.generation,
        _ => {
            return Err(CaseFailure::new(format!(
                "the first batch's claim failed: {all:?}"
            )));
        }
    };
    ensure!(
        matches!(&second[0], Err(e) if e.is_held())
            && matches!(&second[1], Ok(Outcome::Extended(i)) if i.generation == generation),
        "the second batch did not see the first's claim: {all:?}"
    );
    ensure!(
        matches!(&third[0], Ok(Outcome::Revoked))
            && matches!(&third[1], Ok(Outcome::Claimed(i)) if i.holder == B && i.generation > generation),
        "the third batch did not see the second's extend, or its own revoke: {all:?}"
    );
    expect_holder(
        &mut store,
        &k,
        Some(B),
        "the lease after three started batches",
    )
    .await?;
    Ok(())
}
