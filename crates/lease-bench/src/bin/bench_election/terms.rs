//! Mutual exclusion from the event logs: every candidate's leadership intervals, how many held
//! at once, and whether fencing generations increased from term to term.

use std::collections::BTreeMap;

use crate::session::Ev;

#[derive(Debug, Clone)]
pub(crate) struct Interval {
    pub(crate) who: String,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) generation: u64,
}

/// Every candidate's leadership intervals: from `became` to its next `stopped`, `killed` or
/// `exit` (whichever comes first); still open at the end of the log: until "forever".
pub(crate) fn intervals(events: &[Ev]) -> Vec<Interval> {
    let mut open: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    for ev in events {
        match ev.kind.as_str() {
            "became" => {
                open.insert(&ev.who, (ev.t, ev.generation));
            }
            // A stopped process cannot act: its interval ends at the SIGSTOP, and what it says
            // after SIGCONT (its lost token firing) only confirms the end.
            "stopped" | "killed" | "exit" | "paused" => {
                if let Some((start, generation)) = open.remove(ev.who.as_str()) {
                    out.push(Interval {
                        who: ev.who.clone(),
                        start,
                        end: ev.t,
                        generation,
                    });
                }
            }
            _ => {}
        }
    }
    for (who, (start, generation)) in open {
        out.push(Interval {
            who: who.to_owned(),
            start,
            end: u64::MAX,
            generation,
        });
    }
    out.sort_by_key(|i| i.start);
    out
}

/// The most intervals that hold at one instant (an interval that ends at `t` does not overlap
/// one that starts at `t`).
pub(crate) fn max_simultaneous(intervals: &[Interval]) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for i in intervals {
        edges.push((i.start, 1));
        edges.push((i.end, -1));
    }
    // Ends (-1) sort before starts (+1) at the same instant.
    edges.sort_unstable();
    let mut now = 0i64;
    let mut max = 0i64;
    for (_, d) in edges {
        now += i64::from(d);
        max = max.max(now);
    }
    usize::try_from(max).unwrap_or(0)
}

/// Problems with the fencing generations: they must increase from term to term.
pub(crate) fn generation_problems(intervals: &[Interval]) -> Vec<String> {
    let mut problems = Vec::new();
    for pair in intervals.windows(2) {
        if pair[1].generation <= pair[0].generation {
            problems.push(format!(
                "generation {} of {} after generation {} of {}",
                pair[1].generation, pair[1].who, pair[0].generation, pair[0].who
            ));
        }
    }
    problems
}
