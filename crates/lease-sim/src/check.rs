//! The verdict of one run, from the windows the clients logged, with lease-torture's checker:
//! windows become [`Span`]s (cut at their process's first pause inside them, its crash and the
//! end of the run), [`sweep`] finds overlaps between different tenures of a lease and
//! [`generations`] checks that generations strictly increase in the order tenures began to act.
//! Calls are checked too: every bounded call answered within the bound while its process ran.

use std::collections::BTreeMap;
use std::time::Duration;

use lease_torture::check::{Span, Tenure, generations, sweep};

use crate::world::Record;

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
    let mut by_lease: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for w in &record.windows {
        let mut stop = w.end.min(end);
        if let Some(&crash) = record.crashes.get(&w.process) {
            stop = stop.min(crash);
        }
        if let Some(pauses) = record.pauses.get(&w.process) {
            for &(from, _) in pauses {
                if from >= w.start && from < stop {
                    stop = from;
                }
            }
        }
        if w.start >= stop {
            continue;
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
