//! The verdict of one run, from the windows the clients logged, with lease-torture's checker:
//! windows become [`Span`]s (cut at their process's first pause inside them, but for a `lease
//! run` command's, which runs on while its `lease run` is paused; at its crash and at the end
//! of the run), [`sweep`] finds overlaps between different tenures of a lease and
//! [`generations`] checks that generations strictly increase in the order tenures began to act.
//! Calls are checked too: every bounded call answered within the bound while its process ran.
//!
//! Two more checks come from the store's own record of each lease (its state after every
//! write) and from the operator's revokes:
//!
//! - *the store agrees*: while a window is open, the store holds its lease under the window's
//!   generation, unexpired (a term whose lease was revoked behind its back, re-claimed under
//!   another generation, or let expire, is caught even when no other holder happened to claim
//!   the lease meanwhile);
//! - *a retried extend stays an extend*: within one claim or renewal of a holding the client
//!   made, the manager never sends a claim after an extend (a claim would bring a holding
//!   back that had lapsed or been revoked);
//! - *an outside revoke is noticed*: a holding an operator revoked ends the windows of its
//!   tenure at once (nobody can act on a lease taken away without being told), and a term must
//!   have ended within its [`notice`](crate::world::Window::notice) (its renew deadline) after
//!   the revoke.

use std::collections::BTreeMap;
use std::time::Duration;

use lease_torture::check::{Span, Tenure, generations, sweep};

use crate::world::{Record, StoreChange};

/// What one run (or many, added up) showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Non-empty windows checked.
    pub windows: usize,
    /// Tenures (holder, generation) that acted.
    pub tenures: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Everything that broke the guarantee: overlaps, generation faults, unanswered calls.
    pub violations: Vec<String>,
    /// True time simulated.
    pub simulated: Duration,
}

impl Verdict {
    /// All faults injected.
    pub fn fault_count(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// Checks `record` of a run that ended at `end` (true ns), with calls bounded by `bound` ns.
pub fn check(record: &Record, end: u64, bound: u64) -> Verdict {
    let mut verdict = Verdict {
        faults: record
            .faults
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        ..Verdict::default()
    };
    let mut history: BTreeMap<&str, Vec<&StoreChange>> = BTreeMap::new();
    for change in &record.history {
        history.entry(&change.lease).or_default().push(change);
    }
    let mut revoked: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    for r in &record.outside_revokes {
        let at = revoked.entry((&r.lease, r.generation)).or_insert(r.at);
        *at = (*at).min(r.at);
    }
    let mut by_lease: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for w in &record.windows {
        let mut stop = w.end.min(end);
        if let Some(&crash) = record.crashes.get(&w.process) {
            stop = stop.min(crash);
        }
        if let Some(pauses) = record.pauses.get(&w.process).filter(|_| !w.command) {
            for &(from, _) in pauses {
                if from >= w.start && from < stop {
                    stop = from;
                }
            }
        }
        if let Some(&at) = revoked.get(&(w.lease.as_str(), w.generation))
            && at < stop
        {
            if w.term && w.start < stop && stop > at.saturating_add(w.notice) {
                verdict.violations.push(format!(
                    "p{}: {} went on acting on {} with generation {} until {}, though an operator revoked it at {}",
                    w.process,
                    w.holder,
                    w.lease,
                    w.generation,
                    secs(stop),
                    secs(at)
                ));
            }
            stop = at;
        }
        if w.start >= stop {
            continue;
        }
        let changes = history.get(w.lease.as_str()).map_or(&[][..], Vec::as_slice);
        if let Some((at, held)) = unbacked(changes, w.generation, w.start, stop) {
            verdict.violations.push(format!(
                "p{}: {} acted on {} with generation {} at {}, when the store held {held}",
                w.process,
                w.holder,
                w.lease,
                w.generation,
                secs(at)
            ));
        }
        by_lease.entry(&w.lease).or_default().push(Span {
            tenure: (w.holder.clone(), w.generation),
            start: w.start,
            end: stop,
        });
    }
    for (lease, mut spans) in by_lease {
        verdict.windows += spans.len();
        let mut firsts: BTreeMap<Tenure, u64> = BTreeMap::new();
        for s in &spans {
            let first = firsts.entry(s.tenure.clone()).or_insert(s.start);
            *first = (*first).min(s.start);
        }
        verdict.tenures += firsts.len();
        let (overlaps, _) = sweep(lease, &mut spans);
        verdict.violations.extend(overlaps);
        verdict.violations.extend(generations(lease, &firsts));
    }
    for call in &record.calls {
        if let Some((lease, holder)) = &call.holding {
            // One call is one request to the manager: decided as an extend (its holder held the
            // lease), it stays an extend on every retry and never becomes a claim.
            let ops = record
                .ops
                .get(call.first_op..call.end_op.min(record.ops.len()))
                .unwrap_or_default()
                .iter()
                .filter(|o| o.process == call.process && o.lease == *lease && o.holder == *holder);
            let mut extended = false;
            for op in ops {
                if !op.claim {
                    extended = true;
                } else if extended {
                    verdict.violations.push(format!(
                        "p{}: {} of {lease} by {holder} started at {} was sent as an extend, then retried as a claim",
                        call.process,
                        call.what,
                        secs(call.start)
                    ));
                    break;
                }
            }
        }
        let crashed = record.crashes.get(&call.process).copied();
        let answered = call.end.or(crashed).unwrap_or(u64::MAX);
        // Time the process was paused does not count against the bound.
        let paused: u64 = record.pauses.get(&call.process).map_or(0, |ps| {
            ps.iter()
                .map(|&(a, b)| b.min(answered).saturating_sub(a.max(call.start)))
                .sum()
        });
        let took = answered.saturating_sub(call.start).saturating_sub(paused);
        if took > bound {
            verdict.violations.push(format!(
                "p{}: {} started at {} was not answered within {} s",
                call.process,
                call.what,
                call.start,
                bound / 1_000_000_000
            ));
        }
    }
    verdict
}

/// True ns as seconds, for messages.
fn secs(ns: u64) -> String {
    format!("{:.6} s", ns as f64 / 1e9)
}

/// The first instant in `[start, stop)` at which the store did not hold the lease under
/// `generation` (per `changes`, its record after every write, in order), with what it held.
fn unbacked(
    changes: &[&StoreChange],
    generation: u64,
    start: u64,
    stop: u64,
) -> Option<(u64, String)> {
    // The record in force at `start` is the last change at or before it.
    let first = changes.partition_point(|c| c.at <= start);
    let Some(from) = first.checked_sub(1) else {
        return Some((start, "nothing (it was never written)".to_owned()));
    };
    let mut cursor = start;
    for (i, change) in changes.iter().enumerate().skip(from) {
        if cursor >= stop {
            return None;
        }
        if change.at > cursor {
            break;
        }
        let next = changes.get(i + 1).map_or(u64::MAX, |c| c.at);
        if next <= cursor {
            continue;
        }
        match &change.held {
            Some((_, g, expiry)) if *g == generation => {
                if *expiry <= cursor {
                    return Some((
                        cursor,
                        format!("generation {g}, expired at {}", secs(*expiry)),
                    ));
                }
                if *expiry < next && *expiry < stop {
                    return Some((
                        *expiry,
                        format!("generation {g}, expired at {}", secs(*expiry)),
                    ));
                }
                cursor = next;
            }
            Some((holder, g, _)) => {
                return Some((cursor, format!("{holder} with generation {g}")));
            }
            None => return Some((cursor, "nothing (it was free)".to_owned())),
        }
    }
    (cursor < stop).then(|| (cursor, "nothing recorded".to_owned()))
}
