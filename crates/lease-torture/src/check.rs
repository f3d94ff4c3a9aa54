//! The checkers: from the participants' logs, prove that no two holders' intervals of one lease
//! overlap and that fencing generations strictly increase; count what was checked.
//!
//! Both checkers reduce the logs to *spans* `[start, end)` tagged with their *tenure* (holder and
//! generation: one term of one holder), then sweep each lease's spans in order of start: a span
//! that starts before the latest end seen so far, where that end belongs to another tenure, is an
//! overlap. (If any two spans of different tenures overlap, the sweep reports at least one
//! overlap.) Generations are checked in the order the tenures began to act.

use std::collections::BTreeMap;

use crate::event::{Event, WindowKind};
use crate::secs;

/// One holder's term of one lease: (holder, generation).
pub type Tenure = (String, u64);

/// An interval in which a tenure may act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Whose interval.
    pub tenure: Tenure,
    /// Inclusive start, ns on `CLOCK_BOOTTIME`.
    pub start: u64,
    /// Exclusive end; `u64::MAX` when it never ended as far as the logs show.
    pub end: u64,
}

/// Two spans of different tenures that overlap, described for a report.
fn describe(lease: &str, a: &Span, b: &Span) -> String {
    let end = |s: &Span| {
        if s.end == u64::MAX {
            "never".to_owned()
        } else {
            format!("{:.6}", secs(s.end))
        }
    };
    format!(
        "lease {lease}: {} (generation {}) [{:.6}, {}) overlaps {} (generation {}) [{:.6}, {}) by {:.6} s",
        a.tenure.0,
        a.tenure.1,
        secs(a.start),
        end(a),
        b.tenure.0,
        b.tenure.1,
        secs(b.start),
        end(b),
        secs(a.end.min(b.end).saturating_sub(b.start.max(a.start)))
    )
}

/// Overlaps between spans of different tenures of one lease (see the module docs), and the
/// smallest gap between the end of one tenure's span and the start of another's that followed
/// it (the handover margin; `None` when there was no handover).
pub fn sweep(lease: &str, spans: &mut [Span]) -> (Vec<String>, Option<u64>) {
    spans.sort_by_key(|s| (s.start, s.end));
    let mut overlaps = Vec::new();
    let mut min_gap: Option<u64> = None;
    let mut latest: Option<usize> = None;
    for i in 0..spans.len() {
        if let Some(j) = latest {
            let (prev, cur) = (&spans[j], &spans[i]);
            if prev.tenure != cur.tenure {
                if cur.start < prev.end {
                    overlaps.push(describe(lease, prev, cur));
                } else {
                    let gap = cur.start - prev.end;
                    min_gap = Some(min_gap.map_or(gap, |g| g.min(gap)));
                }
            }
            if spans[i].end > spans[j].end {
                latest = Some(i);
            }
        } else {
            latest = Some(i);
        }
    }
    (overlaps, min_gap)
}

/// Checks that generations strictly increase in the order the tenures began to act, and that
/// no generation belongs to two holders. `firsts` holds each tenure's first instant of acting.
pub fn generations(lease: &str, firsts: &BTreeMap<Tenure, u64>) -> Vec<String> {
    let mut faults = Vec::new();
    let mut by_generation: BTreeMap<u64, &str> = BTreeMap::new();
    for (holder, generation) in firsts.keys() {
        if let Some(other) = by_generation.insert(*generation, holder)
            && other != holder
        {
            faults.push(format!(
                "lease {lease}: generation {generation} was given to both {other} and {holder}"
            ));
        }
    }
    let mut order: Vec<(&Tenure, u64)> = firsts.iter().map(|(t, &at)| (t, at)).collect();
    order.sort_by_key(|&(t, at)| (at, t.1));
    for pair in order.windows(2) {
        let ((a, at_a), (b, at_b)) = (pair[0], pair[1]);
        if b.1 <= a.1 {
            faults.push(format!(
                "lease {lease}: {} acted from {:.6} with generation {}, after {} from {:.6} with generation {}: not strictly increasing",
                b.0,
                secs(at_b),
                b.1,
                a.0,
                secs(at_a),
                a.1
            ));
        }
    }
    faults
}

/// What the SQLite workers' logs show.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SqliteVerdict {
    /// Leases with at least one window.
    pub leases: usize,
    /// Successful claims logged.
    pub claims: usize,
    /// Successful extends logged.
    pub extends: usize,
    /// Releases logged (each followed by a revoke).
    pub releases: usize,
    /// Windows that were empty: the call returned at or after its guarantee had ended.
    pub empty_windows: usize,
    /// Terms (holder, generation) that acted.
    pub tenures: usize,
    /// Claims denied because someone else held the lease (from the workers' last stats).
    pub denied: u64,
    /// Revokes that succeeded (from the workers' last stats).
    pub revoked: u64,
    /// Calls that failed otherwise (from the workers' last stats).
    pub errors: u64,
    /// Overlapping windows of different terms: must be empty.
    pub overlaps: Vec<String>,
    /// Generation faults: must be empty.
    pub generation_faults: Vec<String>,
    /// The smallest handover margin seen (ns from one term's end to the next one's start).
    pub min_handover_gap: Option<u64>,
    /// For each lease a SIGKILLed worker held when it was killed: ns from the kill to the next
    /// holder's window.
    pub takeovers_after_kill: Vec<u64>,
}

impl SqliteVerdict {
    /// Operations checked: every logged claim, extend and release.
    pub fn operations(&self) -> usize {
        self.claims + self.extends + self.releases
    }

    /// Violations found.
    pub fn violations(&self) -> usize {
        self.overlaps.len() + self.generation_faults.len()
    }
}

/// Checks the SQLite workers' events.
pub fn check_sqlite(events: &[Event]) -> SqliteVerdict {
    let mut verdict = SqliteVerdict::default();
    // Per lease: windows, and releases by tenure.
    let mut windows: BTreeMap<&str, Vec<(Tenure, WindowKind, u64, u64)>> = BTreeMap::new();
    let mut releases: BTreeMap<(&str, Tenure), Vec<u64>> = BTreeMap::new();
    let mut stats: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    // When each holder acted last: SIGKILLed (after the orchestrator reaped it) or exited.
    let mut deaths: BTreeMap<&str, u64> = BTreeMap::new();
    let mut killed: BTreeMap<&str, u64> = BTreeMap::new();
    for event in events {
        match event {
            Event::Killed { holder, at } => {
                killed.insert(holder, *at);
                let d = deaths.entry(holder).or_insert(*at);
                *d = (*d).min(*at);
            }
            Event::Exit { holder, at } => {
                let d = deaths.entry(holder).or_insert(*at);
                *d = (*d).min(*at);
            }
            Event::Window {
                lease,
                holder,
                generation,
                kind,
                returned,
                end,
                ..
            } => {
                match kind {
                    WindowKind::Claim => verdict.claims += 1,
                    WindowKind::Extend => verdict.extends += 1,
                }
                windows.entry(lease).or_default().push((
                    (holder.clone(), *generation),
                    *kind,
                    *returned,
                    *end,
                ));
            }
            Event::Release {
                lease,
                holder,
                generation,
                at,
            } => {
                verdict.releases += 1;
                releases
                    .entry((lease, (holder.clone(), *generation)))
                    .or_default()
                    .push(*at);
            }
            Event::Stats {
                holder,
                denied,
                revoked,
                errors,
            } => {
                // Totals are cumulative: the last line of each holder counts.
                stats.insert(holder, (*denied, *revoked, *errors));
            }
            _ => {}
        }
    }
    for (denied, revoked, errors) in stats.values() {
        verdict.denied += denied;
        verdict.revoked += revoked;
        verdict.errors += errors;
    }
    verdict.leases = windows.len();
    for (lease, list) in windows {
        let mut spans = Vec::new();
        let mut firsts: BTreeMap<Tenure, u64> = BTreeMap::new();
        let mut first_kind: BTreeMap<Tenure, (u64, WindowKind)> = BTreeMap::new();
        // Claims' window starts, and the kills of a holder inside one of its windows.
        let mut starts: Vec<(u64, String)> = Vec::new();
        let mut held_at_kill: Vec<(u64, String, u64)> = Vec::new();
        for (tenure, kind, returned, end) in list {
            // A release cuts the windows that had begun before it.
            let cut = releases
                .get(&(lease, tenure.clone()))
                .and_then(|r| r.iter().copied().filter(|&at| at >= returned).min());
            let end = cut.map_or(end, |at| at.min(end));
            // So does the holder's death: a dead process acts no more, and the store frees a
            // dead holder's lease at once. (The SQLite orchestrator logs `Killed` when kill(2)
            // has returned: the worker runs none of its own code after that; its exit, and the
            // release of its session lock, come later.)
            if let Some(&k) = killed.get(tenure.0.as_str())
                && returned <= k
                && k < end
            {
                held_at_kill.push((k, tenure.0.clone(), returned));
            }
            let end = deaths.get(tenure.0.as_str()).map_or(end, |&d| d.min(end));
            if kind == WindowKind::Claim {
                starts.push((returned, tenure.0.clone()));
            }
            let entry = first_kind.entry(tenure.clone()).or_insert((returned, kind));
            if returned < entry.0 {
                *entry = (returned, kind);
            }
            if returned >= end {
                verdict.empty_windows += 1;
                continue;
            }
            let first = firsts.entry(tenure.clone()).or_insert(returned);
            *first = (*first).min(returned);
            spans.push(Span {
                tenure,
                start: returned,
                end,
            });
        }
        for (tenure, (_, kind)) in &first_kind {
            if *kind != WindowKind::Claim {
                verdict.generation_faults.push(format!(
                    "lease {lease}: {} extended generation {} without having claimed it",
                    tenure.0, tenure.1
                ));
            }
        }
        starts.sort_unstable();
        held_at_kill.sort_unstable();
        held_at_kill.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        for (k, dead, since) in held_at_kill {
            // The first claim by someone else after the dead holder's window began.
            if let Some((next, _)) = starts.iter().find(|(s, h)| *s > since && *h != dead) {
                verdict.takeovers_after_kill.push(next.saturating_sub(k));
            }
        }
        verdict.tenures += firsts.len();
        let (overlaps, gap) = sweep(lease, &mut spans);
        verdict.overlaps.extend(overlaps);
        if let Some(gap) = gap {
            verdict.min_handover_gap = Some(verdict.min_handover_gap.map_or(gap, |g| g.min(gap)));
        }
        verdict
            .generation_faults
            .extend(generations(lease, &firsts));
    }
    verdict
}

/// How a leader's term ended, as the logs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermEnd {
    /// The leader saw its lost token fire.
    Lost {
        /// The start of its last successful renewal.
        last_renew: u64,
    },
    /// The leader stopped at the end of its run.
    Stopped,
    /// The leader was SIGKILLed.
    Killed,
    /// The logs do not say: the term counts as never ending.
    Unknown,
}

/// One leader's term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The lease.
    pub lease: String,
    /// The leader.
    pub holder: String,
    /// The term's generation.
    pub generation: u64,
    /// When the winning claim started.
    pub claim_start: u64,
    /// When the leader began to act (`lock()` returned).
    pub start: u64,
    /// When it stopped acting; `u64::MAX` for [`TermEnd::Unknown`].
    pub end: u64,
    /// How it ended.
    pub how: TermEnd,
    /// Renewals the leader saw succeed.
    pub renewals: u64,
}

/// Leaders' terms from Kubernetes candidates' and the orchestrator's events, in order of start.
pub fn terms(events: &[Event]) -> Vec<Term> {
    let mut terms: Vec<Term> = Vec::new();
    let mut kills: BTreeMap<&str, u64> = BTreeMap::new();
    for event in events {
        match event {
            Event::Lead {
                lease,
                holder,
                generation,
                claim_start,
                at,
            } => terms.push(Term {
                lease: lease.clone(),
                holder: holder.clone(),
                generation: *generation,
                claim_start: *claim_start,
                start: *at,
                end: u64::MAX,
                how: TermEnd::Unknown,
                renewals: 0,
            }),
            Event::Killed { holder, at } => {
                kills.insert(holder, *at);
            }
            _ => {}
        }
    }
    for event in events {
        let (lease, holder, generation, at, how, renewals) = match event {
            Event::Lost {
                lease,
                holder,
                generation,
                at,
                last_renew,
                renewals,
            } => (
                lease,
                holder,
                generation,
                at,
                TermEnd::Lost {
                    last_renew: *last_renew,
                },
                renewals,
            ),
            Event::Stop {
                lease,
                holder,
                generation,
                at,
                renewals,
                ..
            } => (lease, holder, generation, at, TermEnd::Stopped, renewals),
            _ => continue,
        };
        if let Some(t) = terms.iter_mut().find(|t| {
            &t.lease == lease
                && &t.holder == holder
                && t.generation == *generation
                && t.how == TermEnd::Unknown
        }) {
            t.end = *at;
            t.how = how;
            t.renewals = *renewals;
        }
    }
    for t in &mut terms {
        if t.how == TermEnd::Unknown
            && let Some(&at) = kills.get(t.holder.as_str())
            && at >= t.start
        {
            t.end = at;
            t.how = TermEnd::Killed;
        }
    }
    terms.sort_by_key(|t| (t.start, t.generation));
    terms
}

/// What the Kubernetes candidates' logs show.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct K8sVerdict {
    /// Terms of leadership checked.
    pub terms: usize,
    /// Renewals the leaders saw succeed.
    pub renewals: u64,
    /// Terms that ended by the lost token.
    pub lost: usize,
    /// Overlapping terms: must be empty.
    pub overlaps: Vec<String>,
    /// Generation faults: must be empty.
    pub generation_faults: Vec<String>,
    /// Leaders whose lost token fired (as they saw it) after their guarantee had ended
    /// (last renewal start + lease duration): must be empty.
    pub late_lost: Vec<String>,
    /// Terms whose end the logs do not show: must be empty.
    pub unterminated: Vec<String>,
    /// The longest time from a leader's last successful renewal to its lost token (ns): at most
    /// the renew deadline plus scheduling, below the lease duration.
    pub max_lost_after_renew: Option<u64>,
    /// The smallest handover margin (ns from one leader's end to the next one's start).
    pub min_handover_gap: Option<u64>,
}

impl K8sVerdict {
    /// Violations found.
    pub fn violations(&self) -> usize {
        self.overlaps.len()
            + self.generation_faults.len()
            + self.late_lost.len()
            + self.unterminated.len()
    }
}

/// Checks leaders' terms (see [`terms`]) with `lease_duration` in ns.
pub fn check_terms(terms: &[Term], lease_duration: u64) -> K8sVerdict {
    let mut verdict = K8sVerdict {
        terms: terms.len(),
        ..K8sVerdict::default()
    };
    let mut by_lease: BTreeMap<&str, Vec<&Term>> = BTreeMap::new();
    for t in terms {
        by_lease.entry(&t.lease).or_default().push(t);
        verdict.renewals += t.renewals;
        match t.how {
            TermEnd::Lost { last_renew } => {
                verdict.lost += 1;
                let after = t.end.saturating_sub(last_renew);
                verdict.max_lost_after_renew = Some(verdict.max_lost_after_renew.unwrap_or(0).max(after));
                if t.end > last_renew.saturating_add(lease_duration) {
                    verdict.late_lost.push(format!(
                        "lease {}: {} (generation {}) saw its lost token {:.3} s after its last renewal, past the {:.3} s lease",
                        t.lease,
                        t.holder,
                        t.generation,
                        secs(after),
                        secs(lease_duration)
                    ));
                }
            }
            TermEnd::Unknown => verdict.unterminated.push(format!(
                "lease {}: {} (generation {}) began leading at {:.6} and the logs never show it stop",
                t.lease,
                t.holder,
                t.generation,
                secs(t.start)
            )),
            TermEnd::Stopped | TermEnd::Killed => {}
        }
    }
    for (lease, list) in by_lease {
        let mut spans: Vec<Span> = list
            .iter()
            .map(|t| Span {
                tenure: (t.holder.clone(), t.generation),
                start: t.start,
                end: t.end,
            })
            .collect();
        let firsts: BTreeMap<Tenure, u64> = list
            .iter()
            .map(|t| ((t.holder.clone(), t.generation), t.start))
            .collect();
        let (overlaps, gap) = sweep(lease, &mut spans);
        verdict.overlaps.extend(overlaps);
        if let Some(gap) = gap {
            verdict.min_handover_gap = Some(verdict.min_handover_gap.map_or(gap, |g| g.min(gap)));
        }
        verdict
            .generation_faults
            .extend(generations(lease, &firsts));
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(holder: &str, generation: u64, kind: WindowKind, returned: u64, end: u64) -> Event {
        Event::Window {
            lease: "l".into(),
            holder: holder.into(),
            generation,
            kind,
            start: returned.saturating_sub(1),
            returned,
            end,
        }
    }

    #[test]
    fn disjoint_windows_pass() {
        let events = [
            window("a", 1, WindowKind::Claim, 10, 20),
            window("a", 1, WindowKind::Extend, 15, 30),
            window("b", 2, WindowKind::Claim, 30, 40),
            Event::Release {
                lease: "l".into(),
                holder: "b".into(),
                generation: 2,
                at: 35,
            },
            window("c", 3, WindowKind::Claim, 36, 50),
            // An empty window (returned after its end) is not an interval of acting.
            window("d", 4, WindowKind::Claim, 60, 55),
        ];
        let v = check_sqlite(&events);
        assert_eq!(v.violations(), 0, "{v:?}");
        assert_eq!(v.operations(), 6);
        assert_eq!(v.tenures, 3);
        assert_eq!(v.empty_windows, 1);
        assert_eq!(v.min_handover_gap, Some(0));
    }

    #[test]
    fn overlap_is_found_even_behind_a_long_window() {
        let events = [
            window("a", 1, WindowKind::Claim, 10, 100),
            window("a", 1, WindowKind::Extend, 20, 30),
            window("b", 2, WindowKind::Claim, 50, 60),
        ];
        let v = check_sqlite(&events);
        assert_eq!(v.overlaps.len(), 1, "{v:?}");
        assert!(v.overlaps[0].contains("a (generation 1)"));
    }

    #[test]
    fn a_release_logged_after_the_next_claim_is_an_overlap() {
        let events = [
            window("a", 1, WindowKind::Claim, 10, 100),
            Event::Release {
                lease: "l".into(),
                holder: "a".into(),
                generation: 1,
                at: 40,
            },
            window("b", 2, WindowKind::Claim, 30, 60),
        ];
        assert_eq!(check_sqlite(&events).overlaps.len(), 1);
    }

    #[test]
    fn generation_faults_are_found() {
        let events = [
            window("a", 5, WindowKind::Claim, 10, 20),
            window("b", 5, WindowKind::Claim, 30, 40),
            window("c", 4, WindowKind::Claim, 50, 60),
            window("d", 9, WindowKind::Extend, 70, 80),
        ];
        let v = check_sqlite(&events);
        assert!(v.overlaps.is_empty());
        // Generation 5 twice, 5 → 5 and 5 → 4 not increasing, and an extend without a claim.
        assert_eq!(v.generation_faults.len(), 4, "{:#?}", v.generation_faults);
    }

    fn lead(holder: &str, generation: u64, at: u64) -> Event {
        Event::Lead {
            lease: "l".into(),
            holder: holder.into(),
            generation,
            claim_start: at - 1,
            at,
        }
    }

    #[test]
    fn leader_terms() {
        let events = [
            lead("a", 1, 10),
            Event::Lost {
                lease: "l".into(),
                holder: "a".into(),
                generation: 1,
                at: 40,
                last_renew: 30,
                renewals: 3,
            },
            lead("b", 2, 50),
            Event::Killed {
                holder: "b".into(),
                at: 60,
            },
            lead("c", 3, 70),
            Event::Stop {
                lease: "l".into(),
                holder: "c".into(),
                generation: 3,
                at: 80,
                last_renew: 75,
                renewals: 1,
            },
        ];
        let terms = terms(&events);
        assert_eq!(terms.len(), 3);
        assert_eq!(terms[1].how, TermEnd::Killed);
        let v = check_terms(&terms, 20);
        assert_eq!(v.violations(), 0, "{v:?}");
        assert_eq!(v.renewals, 4);
        assert_eq!(v.max_lost_after_renew, Some(10));
        assert_eq!(v.min_handover_gap, Some(10));
        // A shorter lease makes the lost token late; a leader that never stops overlaps.
        assert_eq!(check_terms(&terms, 5).late_lost.len(), 1);
        let mut events = events.to_vec();
        events.remove(3);
        let v = check_terms(&super::terms(&events), 20);
        assert_eq!(v.unterminated.len(), 1);
        assert_eq!(v.overlaps.len(), 1);
    }
}
