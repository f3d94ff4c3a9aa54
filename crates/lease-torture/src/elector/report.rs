//! The elector scenario's section of `RELIABILITY.md`: its parameters, its figures, and the
//! first of each kind of violation.

use super::Summary;
use crate::report::{list, ms};
use crate::secs;

/// The scenario's section of `RELIABILITY.md`.
pub fn section(title: &str, s: &Summary) -> String {
    use std::fmt::Write as _;
    let a = &s.args;
    let v = &s.verdict;
    let t = a.timing;
    let mut out = String::new();
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(out, "| parameter | value |\n| --- | --- |");
    let _ = writeln!(
        out,
        "| timing | lease_duration {}, renew_deadline {}, retry_period {} (also unlock_with_retry_period) |",
        ms(t.lease_duration),
        ms(t.renew_deadline),
        ms(t.retry_period)
    );
    let _ = writeln!(
        out,
        "| candidates | {} managers over one SQLite file × {} electors each (half release on drop), the electors on one multi-thread runtime (4 workers), each manager on its own; two slots per elector call `lock()` concurrently, and again at once from the lost-token handler |",
        a.managers, a.electors
    );
    let _ = writeln!(
        out,
        "| store stalls | {} |",
        if a.stalls {
            format!(
                "the leader's manager's store (else a random one's) hangs for 0.4–1 × lease_duration, before or after the call takes effect, every 0.8–2 × lease_duration ({} injected)",
                s.stalls
            )
        } else {
            "none".to_owned()
        }
    );
    let _ = writeln!(
        out,
        "| run length | {:.0} s (wall time {:.1} s) |",
        a.duration.as_secs_f64(),
        s.elapsed
    );
    let _ = writeln!(out, "\n| figure | value |\n| --- | --- |");
    let _ = writeln!(
        out,
        "| terms of leadership checked | {} ({} renewals seen) |",
        v.terms, v.renewals
    );
    let _ = writeln!(out, "| terms ended by the lost token | {} |", v.lost);
    let _ = writeln!(
        out,
        "| terms given up by release / unlock / unlock_with_retry / drop | {} / {} / {} / {} |",
        s.endings[0], s.endings[1], s.endings[2], s.endings[3]
    );
    let _ = writeln!(
        out,
        "| `lock()` calls from a lost-token handler | {} |",
        s.relocks
    );
    let _ = writeln!(
        out,
        "| concurrent `lock()` calls refused with AlreadyLeading | {} |",
        s.already_leading
    );
    let _ = writeln!(
        out,
        "| longest last renewal → lost token (must be < lease_duration) | {} |",
        v.max_lost_after_renew
            .map_or("–".to_owned(), |n| format!("{:.3} s", secs(n)))
    );
    let _ = writeln!(
        out,
        "| smallest handover margin | {} |",
        v.min_handover_gap
            .map_or("–".to_owned(), |n| format!("{:.3} s", secs(n)))
    );
    let _ = writeln!(
        out,
        "| **violations** (overlapping terms, generation faults, late lost tokens, unended terms, a term not above the one before) | **{}** |",
        s.violations()
    );
    let _ = writeln!(
        out,
        "| longest pause of the process (a 10 ms timer firing late: on the runtime / on a plain thread) | {:.3} s / {:.3} s |",
        secs(s.longest_runtime_pause),
        secs(s.longest_thread_pause)
    );
    let _ = writeln!(out, "| other problems | {} |", s.problems.len());
    for (name, items) in [
        ("Overlaps", &v.overlaps),
        ("Generation faults", &v.generation_faults),
        ("Late lost tokens", &v.late_lost),
        ("Unended terms", &v.unterminated),
        ("Terms not above the one before", &s.term_generation_faults),
        ("Problems", &s.problems),
    ] {
        list(&mut out, name, items);
    }
    out
}
