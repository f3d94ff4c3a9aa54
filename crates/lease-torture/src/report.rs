//! Markdown sections of `RELIABILITY.md` from the scenarios' summaries.

use std::fmt::Write as _;

use crate::{k8s, secs, sqlite};

/// A duration as whole milliseconds, for a table cell.
pub(crate) fn ms(d: std::time::Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn opt_s(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_owned(), |s| format!("{s:.digits$} s"))
}

/// A list of up to the first 20 `items` under `title` (nothing when there are none).
pub(crate) fn list(out: &mut String, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title} ({}; the first 20):\n", items.len());
    for item in items.iter().take(20) {
        let _ = writeln!(out, "- {item}");
    }
}

/// The SQLite scenario's section.
pub fn sqlite_section(title: &str, s: &sqlite::Summary) -> String {
    let a = &s.args;
    let v = &s.verdict;
    let mut out = String::new();
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(out, "| parameter | value |\n| --- | --- |");
    let _ = writeln!(out, "| worker processes at a time | {} |", a.workers);
    let _ = writeln!(out, "| leases, shared by every worker | {} |", a.leases);
    let _ = writeln!(
        out,
        "| run length | {:.0} s (wall time {:.1} s) |",
        a.duration.as_secs_f64(),
        s.elapsed
    );
    let _ = writeln!(
        out,
        "| claim / extend durations | random {}–{} |",
        ms(a.durations.0),
        ms(a.durations.1)
    );
    let _ = writeln!(
        out,
        "| kill -9 / SIGSTOP | {} |",
        a.kill_every.map_or("none".to_owned(), |(lo, hi)| format!(
            "a random worker every {}–{}: two times in three killed and restarted as a new \
             incarnation (new holder name), else stopped for up to {} and continued",
            ms(lo),
            ms(hi),
            ms(a.durations.1 * 2)
        ))
    );
    if (a.stretch - 1.0).abs() > f64::EPSILON {
        let _ = writeln!(
            out,
            "| **mutation** | workers believe their windows last {}× the duration they claimed |",
            a.stretch
        );
    }
    let _ = writeln!(out, "\n| figure | value |\n| --- | --- |");
    let _ = writeln!(
        out,
        "| operations checked (claims + extends + releases) | {} ({} + {} + {}) |",
        v.operations(),
        v.claims,
        v.extends,
        v.releases
    );
    let _ = writeln!(
        out,
        "| terms (holder, generation) checked | {} |",
        v.tenures
    );
    let _ = writeln!(out, "| claims denied (held by another) | {} |", v.denied);
    let _ = writeln!(
        out,
        "| revokes / other failed calls | {} / {} |",
        v.revoked, v.errors
    );
    let _ = writeln!(out, "| kills survived | {} |", s.kills);
    let _ = writeln!(
        out,
        "| workers stopped (SIGSTOP, then SIGCONT) | {} |",
        s.stops
    );
    let mut takeovers = v.takeovers_after_kill.clone();
    takeovers.sort_unstable();
    let ms = |ns: u64| format!("{:.1} ms", ns as f64 / 1e6);
    let _ = writeln!(
        out,
        "| takeover after a kill (kill -9 → next holder's window), median / max over {} leases | {} / {} (claim durations {} to {} ms) |",
        takeovers.len(),
        takeovers
            .get(takeovers.len() / 2)
            .map_or("–".to_owned(), |&n| ms(n)),
        takeovers.last().map_or("–".to_owned(), |&n| ms(n)),
        s.args.durations.0.as_millis(),
        s.args.durations.1.as_millis()
    );
    let _ = writeln!(out, "| worker incarnations | {} |", s.incarnations);
    let _ = writeln!(
        out,
        "| empty windows (the call returned after its guarantee ended) | {} |",
        v.empty_windows
    );
    let _ = writeln!(
        out,
        "| smallest handover margin (one term's end to the next's start) | {} |",
        v.min_handover_gap
            .map_or("–".to_owned(), |g| format!("{:.3} ms", g as f64 / 1e6))
    );
    let _ = writeln!(
        out,
        "| log lines torn by kill -9 (skipped) | {} |",
        s.torn_lines
    );
    let _ = writeln!(out, "| worker crashes | {} |", s.crashes.len());
    let _ = writeln!(
        out,
        "| **violations** (overlapping windows, generation faults) | **{}** ({} + {}) |",
        v.violations(),
        v.overlaps.len(),
        v.generation_faults.len()
    );
    list(&mut out, "Overlaps", &v.overlaps);
    list(&mut out, "Generation faults", &v.generation_faults);
    list(&mut out, "Crashes", &s.crashes);
    out
}

/// The Kubernetes scenario's section.
pub fn k8s_section(title: &str, s: &k8s::Summary) -> String {
    let a = &s.args;
    let v = &s.verdict;
    let t = a.timing;
    let mut out = String::new();
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(out, "| parameter | value |\n| --- | --- |");
    let _ = writeln!(
        out,
        "| timing | lease_duration {}, renew_deadline {}, retry_period {}, request timeout {} |",
        ms(t.lease_duration),
        ms(t.renew_deadline),
        ms(t.retry_period),
        ms(t.request_timeout)
    );
    let _ = writeln!(
        out,
        "| main phase | {} candidate processes on one lease; {}; {} |",
        a.candidates,
        if s.outages.is_empty() {
            "no server restarts".to_owned()
        } else {
            format!(
                "stopped and restarted: {} (each down {:.0} s)",
                a.outages
                    .iter()
                    .map(|o| match o.strip_suffix(":kill") {
                        Some(name) => format!("{name} ({})", a.backend.stop_how(true)),
                        None => format!("{o} ({})", a.backend.stop_how(false)),
                    })
                    .collect::<Vec<_>>()
                    .join(", then "),
                a.outage_length.as_secs_f64()
            )
        },
        match (a.kill_leader, a.random_kills) {
            (true, 0) => "then the leader is SIGKILLed".to_owned(),
            (true, n) => format!(
                "then the leader is SIGKILLed, then {n} candidates at random (the leader half of the time), each replaced"
            ),
            (false, 0) => "no leader kill".to_owned(),
            (false, n) => format!("then {n} candidates SIGKILLed at random, each replaced"),
        }
    );
    let _ = writeln!(
        out,
        "| bursts | {} round(s) of {} candidates started at the same instant, on a fresh lease and on a stale lease whose holder was SIGKILLed |",
        a.burst_rounds, a.burst_size
    );
    let _ = writeln!(out, "| wall time | {:.1} s |", s.elapsed);
    let _ = writeln!(out, "\n| figure | value |\n| --- | --- |");
    let _ = writeln!(out, "| candidate processes | {} |", s.processes);
    let _ = writeln!(
        out,
        "| terms of leadership checked | {} ({} renewals seen) |",
        v.terms, v.renewals
    );
    let _ = writeln!(out, "| terms ended by the lost token | {} |", v.lost);
    let _ = writeln!(
        out,
        "| longest last renewal → lost token (must be < lease_duration) | {} |",
        opt_s(v.max_lost_after_renew.map(secs), 3)
    );
    let _ = writeln!(
        out,
        "| smallest handover margin (a leader's lost/stop/kill → the next leader's start) | {} |",
        opt_s(v.min_handover_gap.map(secs), 3)
    );
    let _ = writeln!(out, "| server restarts | {} |", s.outages.len());
    if !s.deletions.is_empty() {
        let after: Vec<String> = s.deletions.iter().map(|d| format!("{d:.2} s")).collect();
        let _ = writeln!(
            out,
            "| Lease object deleted under its leader (`kubectl delete`, a Helm reinstall) | {} times; leader again after {} |",
            s.deletions.len(),
            after.join(", ")
        );
    }
    let _ = writeln!(out, "| candidates SIGKILLed | {} |", s.kills);
    if let Some(tk) = s.takeover_after_leader_kill {
        let _ = writeln!(
            out,
            "| takeover after kill -9 of the leader, from the kill (the lease runs from its last renewal, up to retry_period earlier) | {tk:.2} s |"
        );
    }
    if !s.takeovers_after_random_kills.is_empty() {
        let mut sorted = s.takeovers_after_random_kills.clone();
        sorted.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "| takeover after a random kill -9 that hit the leader, from the kill ({} times) | median {:.2} s, max {:.2} s |",
            sorted.len(),
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        );
    }
    let _ = writeln!(
        out,
        "| **violations** (overlapping terms, generation faults, late lost tokens, unended terms) | **{}** |",
        v.violations()
    );
    let _ = writeln!(out, "| other problems | {} |", s.problems.len());
    if !s.outages.is_empty() {
        let _ = writeln!(
            out,
            "\n| server process stopped | down for | leader's lost token, after it stopped | leader again, after it stopped | … after the restart command returned (negative: a leader before the command saw the server ready) |\n| --- | --- | --- | --- | --- |"
        );
        for o in &s.outages {
            let _ = writeln!(
                out,
                "| {} | {:.1} s | {} | {} | {} |",
                o.what,
                o.down_for,
                opt_s(o.lost_after_down, 2),
                opt_s(o.regained_after_down, 2),
                opt_s(o.regained_after_up, 2)
            );
        }
    }
    if !s.bursts.is_empty() {
        let _ = writeln!(
            out,
            "\n| burst | lease | first leader after the common start | after the old holder's kill | terms (1 = one leader throughout) |\n| --- | --- | --- | --- | --- |"
        );
        for b in &s.bursts {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} | {} |",
                b.kind,
                b.lease,
                opt_s(b.first_leader_after_start, 3),
                opt_s(b.takeover_after_kill, 2),
                b.terms
            );
        }
    }
    list(&mut out, "Overlaps", &v.overlaps);
    list(&mut out, "Generation faults", &v.generation_faults);
    list(&mut out, "Late lost tokens", &v.late_lost);
    list(&mut out, "Unended terms", &v.unterminated);
    list(&mut out, "Problems", &s.problems);
    out
}
