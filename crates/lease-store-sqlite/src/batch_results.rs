//! A batch's results ([`Store::apply`](lease_core::Store::apply)): validation before any I/O,
//! where an op that fails fails alone; and what every other op is told when the batch's
//! transaction fails as a whole (nothing took effect).

use lease_core::{Error, Op, Outcome};

use crate::error::SqliteStoreError;
use crate::ops::validate_op;

/// A batch's results so far: an op that failed validation, or was applied, has its result;
/// the others `None`.
pub(crate) type Checked = Vec<Option<lease_core::Result<Outcome>>>;

/// Validates each op, before any I/O.
pub(crate) fn check(ops: &[Op]) -> Checked {
    ops.iter()
        .map(|op| validate_op(op).err().map(Err))
        .collect()
}

/// The batch's transaction failed with `err`: every op that did not fail validation gets it
/// (the first with its source, the others its kind and message).
pub(crate) fn failed(results: &mut Checked, err: SqliteStoreError) {
    let shared = Shared::of(&err);
    let mut first = Some(Error::from(err));
    for slot in results.iter_mut() {
        if slot.as_ref().is_none_or(|r| !is_validation(r)) {
            let e = first.take().unwrap_or_else(|| shared.error());
            *slot = Some(Err(e));
        }
    }
}

/// A batch of `count` ops that never reached its transaction (the blocking thread failed):
/// every op gets `err`, as [`failed`] gives it.
pub(crate) fn all_failed(count: usize, err: SqliteStoreError) -> Vec<lease_core::Result<Outcome>> {
    let mut results: Checked = (0..count).map(|_| None).collect();
    failed(&mut results, err);
    finish(results)
}

/// The results, each op's; one left without (which the batch's code never does) says it was
/// not applied.
pub(crate) fn finish(results: Checked) -> Vec<lease_core::Result<Outcome>> {
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::store_msg("operation was not applied"))))
        .collect()
}

fn is_validation(result: &lease_core::Result<Outcome>) -> bool {
    matches!(result, Err(e) if e.is_validation())
}

/// What the other ops of a failed batch are told: the same kind and message, without the
/// source (which only the first op's error carries).
enum Shared {
    Timeout(String),
    Store(String),
}

impl Shared {
    fn of(err: &SqliteStoreError) -> Shared {
        if err.is_busy() {
            Shared::Timeout(err.to_string())
        } else {
            Shared::Store(err.to_string())
        }
    }

    fn error(&self) -> Error {
        match self {
            Shared::Timeout(msg) => Error::Timeout.context(format!("batch not applied: {msg}")),
            Shared::Store(msg) => Error::store_msg(format!("batch not applied: {msg}")),
        }
    }
}
