//! The markdown section `bench_election` prints from its runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use lease_bench::k8s::{Verbs, by_verb, total};
use lease_bench::report::{Table, met};
use lease_bench::stats::median;

use crate::burst::BurstTrial;
use crate::pair::{PairResult, Requests, Window};
use crate::{
    BURST, BURST_OBSERVE, Backend, HANDOVER_TARGET, KILL_AFTER_RENEWAL, LEASE_DURATION,
    RENEW_DEADLINE, RETRY_PERIOD, SETTLE, SETTLE_JITTER, SQLITE_DEATH_TAKEOVER, STALE_STAGGER,
    TAKEOVER_SLACK,
};

/// `PUT 30.0 · GET 0.0`: verbs per minute, always naming PUT and GET.
fn per_minute(verbs: &BTreeMap<String, f64>) -> String {
    by_verb(verbs, &["PUT", "GET"], |n| format!("{n:.1}"))
}

/// Requests per minute, verb by verb, of `verbs` counted over `window`.
fn rate(verbs: &Verbs, window: Duration) -> BTreeMap<String, f64> {
    let scale = 60.0 / window.as_secs_f64();
    verbs
        .iter()
        .map(|(v, &n)| (v.clone(), n as f64 * scale))
        .collect()
}

/// `d` in milliseconds below a second, in seconds from there.
fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        return secs(d);
    }
    lease_bench::report::ms(d, 1)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// What `orchestrate` measured on one store.
pub(crate) struct Run {
    pub(crate) backend: Backend,
    pub(crate) pair: PairResult,
    pub(crate) fresh: Vec<BurstTrial>,
    pub(crate) stale: Vec<BurstTrial>,
}

fn writes(verbs: &Verbs) -> u64 {
    verbs
        .iter()
        .filter(|(v, _)| matches!(v.as_str(), "PUT" | "POST" | "PATCH"))
        .map(|(_, n)| n)
        .sum()
}

fn per_renewal(verbs: &Verbs, renewals: usize) -> String {
    if renewals == 0 {
        return "—".to_owned();
    }
    let n = renewals as f64;
    format!(
        "{:.2} writes, {:.2} other",
        writes(verbs) as f64 / n,
        (total(verbs) - writes(verbs)) as f64 / n
    )
}

fn requests_section(out: &mut String, r: &Requests) {
    let (a, b) = (&r.alone, &r.both);
    let _ = writeln!(out, "### API requests per minute (Kubernetes)\n");
    // The follower on the server: the second window's rate minus the first's.
    let alone_rate = rate(&a.server, a.server_span);
    let both_rate = rate(&b.server, b.server_span);
    let mut follower_server: BTreeMap<String, f64> = BTreeMap::new();
    for verb in alone_rate.keys().chain(both_rate.keys()) {
        let v = both_rate.get(verb).copied().unwrap_or(0.0)
            - alone_rate.get(verb).copied().unwrap_or(0.0);
        // Rounding noise of the two rates is not a request (and must not print as "-0.0").
        let v = if v.abs() < 0.05 { 0.0 } else { v };
        follower_server.insert(verb.clone(), v);
    }
    let quiet = a.foreign() == 0 && b.foreign() == 0;
    let mark = if quiet { "" } else { " †" };
    // Renewal boundaries can put one renewal's write on either side of a tally.
    let leader_ok = |w: &Window| {
        writes(&w.leader).abs_diff(w.renewals as u64) <= 1
            && total(&w.leader) == writes(&w.leader)
            && w.renewals > 0
    };
    let mut table = Table::text(&[
        "role",
        "its own client (per min)",
        "per renewal",
        "server, `apiserver_request_total` (per min)",
        "lease watches open on the server",
        "target",
        "met",
    ]);
    let leader_target = "1 write per renewal, no reads";
    table.row([
        "leader, alone".to_owned(),
        per_minute(&rate(&a.leader, a.client_span)),
        per_renewal(&a.leader, a.renewals),
        format!(
            "{}{mark} (everything the server counted)",
            per_minute(&alone_rate)
        ),
        a.open_watches.to_string(),
        leader_target.to_owned(),
        met(leader_ok(a)).to_owned(),
    ]);
    table.row([
        "leader, with a follower".to_owned(),
        per_minute(&rate(&b.leader, b.client_span)),
        per_renewal(&b.leader, b.renewals),
        format!("{}{mark} (everything)", per_minute(&both_rate)),
        b.open_watches.to_string(),
        leader_target.to_owned(),
        met(leader_ok(b)).to_owned(),
    ]);
    table.row([
        "follower".to_owned(),
        per_minute(&rate(&b.follower, b.client_span)),
        "—".to_owned(),
        format!(
            "{}{mark} (second window minus the first)",
            per_minute(&follower_server)
        ),
        format!(
            "{:+} (second window minus the first)",
            b.open_watches - a.open_watches
        ),
        "no polling (one watch)".to_owned(),
        met(total(&b.follower) == 0).to_owned(),
    ]);
    out.push_str(&table.to_string());
    let _ = writeln!(
        out,
        "\nMethod: a leader alone for {:.1} s, then the same leader with a follower for {:.1} s \
         (the follower started 3 s before its window, so its start-up list and watch are \
         outside it), scaled to a minute. The server's `apiserver_request_total{{resource=\"leases\"}}` \
         (summed over codes, by verb) is scraped from `/metrics` around each window; it does \
         not say which client sent a request, so the follower's server-side figure is the \
         second window's rate minus the first's. Each candidate also counts the lease requests \
         its own kube client sends (a tower layer), which attributes them exactly: the \
         `met` column is decided on those counts. Renewals: the leader's successful renewals \
         between its two counts. Watches: `apiserver_longrunning_gauge{{resource=\"leases\",verb=\"WATCH\"}}`, \
         server-wide (a watch enters the request total only when it ends).",
        a.server_span.as_secs_f64(),
        b.server_span.as_secs_f64(),
    );
    if quiet {
        let _ = writeln!(
            out,
            "\nThe server counted no lease request beyond the candidates' own in either \
             window, so the server-side figures attribute exactly."
        );
    } else {
        let _ = writeln!(
            out,
            "\n† Other clients used the server during the windows: it counted {} and {} lease \
             requests beyond the candidates' own ({:.1} and {:.1} per minute), so the \
             server-side figures include them and the follower's difference is not meaningful; \
             the client-side counts stand. Run on a quiet server for a clean server-side \
             attribution.",
            a.foreign(),
            b.foreign(),
            a.foreign() as f64 * 60.0 / a.server_span.as_secs_f64(),
            b.foreign() as f64 * 60.0 / b.server_span.as_secs_f64(),
        );
    }
    let _ = writeln!(
        out,
        "\nMeasured elsewhere: client-go's leader 30 `GET` + 30 `PUT` and follower 20 `GET` per \
         minute; kube-lease-manager 2 requests per renewal; kubert 1 `PATCH` per renewal but \
         18–26 conflicting writes per 100 s under contention.\n"
    );
}

pub(crate) fn report(
    runs: &[Run],
    version: Option<&str>,
    window: Duration,
    trials: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## leader election\n");
    let server = version.map_or_else(String::new, |v| {
        format!(" Kubernetes: a local kube-apiserver {v} (etcd on the same machine).")
    });
    let _ = writeln!(
        out,
        "lease-manager's `LeaderElector` with client-go's default timings (lease {} s, renew \
         deadline {} s, retry period {} s), every candidate a separate process with its own \
         `Manager` and store: `LeaseObjectStore` (its own client and watch; expiry judged by observed \
         time, the default) or `SqliteStore` (its own connection to one file; refresh interval \
         100 ms, the default).{server} Times are `CLOCK_BOOTTIME` stamps the processes print \
         themselves.\n",
        LEASE_DURATION.as_secs(),
        RENEW_DEADLINE.as_secs(),
        RETRY_PERIOD.as_secs()
    );

    // Handover.
    let _ = writeln!(out, "### Handover after the leader releases\n");
    let mut table = Table::text(&[
        "store",
        "handovers",
        "min",
        "median",
        "max",
        "leader's revoke (median)",
        "target",
        "met",
    ]);
    for run in runs {
        let h = &run.pair.handovers;
        let totals: Vec<Duration> = h.iter().map(|x| x.total).collect();
        let max = totals.iter().max().copied().unwrap_or_default();
        table.row([
            run.backend.label().to_owned(),
            h.len().to_string(),
            ms(totals.iter().min().copied().unwrap_or_default()),
            ms(median(totals.clone())),
            ms(max),
            ms(median(h.iter().map(|x| x.revoke).collect())),
            format!("≤ {}", ms(HANDOVER_TARGET)),
            met(!h.is_empty() && max <= HANDOVER_TARGET && h.iter().all(|x| x.revoked)).to_owned(),
        ]);
    }
    out.push_str(&table.to_string());
    let _ = writeln!(
        out,
        "\nFrom the leader's call of `unlock()` to the follower's claim returning, the old \
         leader then calling `lock()` again to follow, {} s plus a random 0–{} ms after it \
         started following. The follower waits in the manager's `wait_until_expired`: on \
         Kubernetes its store's watch reports the release at once; on SQLite a file-change \
         event on the database (confirmed with `PRAGMA data_version`) does, with the manager's \
         100 ms poll of the file as the fallback. Measured elsewhere on the same kind of server: client-go 1.20 0.4–2.2 s; kube-leader-election \
         2.4–5.5 s; kube-lease-manager, kubert and kube-coordinate ignore a release and wait out \
         the lease (5–28 s).\n",
        SETTLE.as_secs(),
        SETTLE_JITTER.as_millis()
    );

    // Takeover.
    let _ = writeln!(out, "### Takeover after the leader is killed (SIGKILL)\n");
    let takeover_table = |from: &str| {
        Table::text(&[
            "store",
            "from the start of its last renewal",
            "from that renewal's success (seen ≤ 5 ms late)",
            from,
            "target",
            "met",
        ])
    };
    let mut table = takeover_table("from the kill");
    let target = LEASE_DURATION + TAKEOVER_SLACK;
    for run in runs {
        if let Some(t) = run.pair.takeover {
            // SQLite sees the holder's death (its session lock goes with its last process):
            // the target is counted from the kill. Elsewhere the lease must expire.
            let (target_text, ok) = if run.backend.is_k8s() {
                (
                    format!("≤ {} from the renewal", secs(target)),
                    t.from_renewal <= target,
                )
            } else {
                (
                    format!("≤ {} ms from the kill", SQLITE_DEATH_TAKEOVER.as_millis()),
                    t.from_kill <= SQLITE_DEATH_TAKEOVER,
                )
            };
            table.row([
                run.backend.label().to_owned(),
                secs(t.from_renewal),
                secs(t.from_renewal_seen),
                secs(t.from_kill),
                target_text,
                met(ok).to_owned(),
            ]);
        }
    }
    out.push_str(&table.to_string());
    let _ = writeln!(
        out,
        "\nOne kill per store, {} ms after a logged renewal (so none was in flight), counted to \
         the follower's claim returning. Measured elsewhere: kubert 15.0 s, kube-lease-manager \
         15.4–15.8 s, kube-leader-election 16.1–16.3 s, client-go 19.1–19.2 s, kube-coordinate \
         21–30 s.\n",
        KILL_AFTER_RENEWAL.as_millis()
    );
    let _ = writeln!(
        out,
        "\n### Takeover after the leader is stopped (SIGSTOP)\n"
    );
    let mut table = takeover_table("from the stop");
    for run in runs {
        if let Some(t) = run.pair.stop_takeover {
            // A stopped holder is alive: no store may free its lease before it expires.
            table.row([
                run.backend.label().to_owned(),
                secs(t.from_renewal),
                secs(t.from_renewal_seen),
                secs(t.from_kill),
                format!(
                    "≥ {} from the renewal (it must expire)",
                    secs(LEASE_DURATION)
                ),
                met(t.from_renewal >= LEASE_DURATION).to_owned(),
            ]);
        }
    }
    out.push_str(&table.to_string());
    let _ = writeln!(
        out,
        "\nOne stop per store, {} ms after a logged renewal, counted to the follower's claim \
         returning; the stopped leader is then continued, sees its term over, and follows.",
        KILL_AFTER_RENEWAL.as_millis()
    );

    // Requests.
    for run in runs {
        if let Some(r) = &run.pair.requests {
            requests_section(&mut out, r);
        }
    }

    // Bursts.
    let _ = writeln!(out, "### {BURST} candidates started at once\n");
    let mut table = Table::text(&[
        "store",
        "lease",
        "trials",
        "max simultaneous leaders",
        "leaders elected per trial",
        "time to first leader (min / median / max)",
        "target",
        "met",
    ]);
    for run in runs {
        for (kind, trials) in [("fresh", &run.fresh), ("stale", &run.stale)] {
            if trials.is_empty() {
                continue;
            }
            let max = trials.iter().map(|t| t.max_leaders).max().unwrap_or(0);
            let elected: Vec<String> = trials
                .iter()
                .map(|t| t.leaders_elected.to_string())
                .collect();
            let firsts: Vec<Duration> = trials.iter().map(|t| t.first_leader).collect();
            let ok = max == 1
                && trials
                    .iter()
                    .all(|t| t.leaders_elected == 1 && t.problems.is_empty());
            table.row([
                run.backend.label().to_owned(),
                kind.to_owned(),
                trials.len().to_string(),
                max.to_string(),
                elected.join(", "),
                format!(
                    "{} / {} / {}",
                    ms(firsts.iter().min().copied().unwrap_or_default()),
                    ms(median(firsts.clone())),
                    ms(firsts.iter().max().copied().unwrap_or_default())
                ),
                "exactly 1 leader at every instant".to_owned(),
                met(ok).to_owned(),
            ]);
        }
    }
    out.push_str(&table.to_string());
    let _ = writeln!(
        out,
        "\nAll {BURST} processes are started and ready (manager and store up) before the start \
         barrier: `lock` written to their stdins back to back. Each trial is watched for {} s \
         after its first leader, then every candidate's stdin is closed (a leader releases, the \
         others may take over, all exit); leadership intervals (`became` to `stopped`, of all \
         candidates, shutdown included) are swept for overlaps, and fencing generations must \
         increase from term to term. Stale lease: on Kubernetes a Lease held by `dead-holder` \
         with `renewTime` an hour old; candidates judge expiry by observed time (the default, \
         as client-go), so they wait a full {} s from first seeing it, which their watches do \
         at start-up, just before the barrier (trials start {} s apart \
         and overlap, each on its own Lease); on SQLite an expired row of `dead-holder`, which \
         is free at once. Measured elsewhere: kube-leader-election and kube-coordinate both let \
         several candidates lead at once.\n",
        BURST_OBSERVE.as_secs(),
        LEASE_DURATION.as_secs(),
        STALE_STAGGER.as_secs(),
    );

    // Anything odd.
    for run in runs {
        let label = run.backend.label();
        if run.pair.max_leaders > 1 {
            let _ = writeln!(
                out,
                "Note: {label}, leader/follower scenario: {} leaders at once.\n",
                run.pair.max_leaders
            );
        }
        for p in &run.pair.problems {
            let _ = writeln!(out, "Note: {label}, leader/follower scenario: {p}.\n");
        }
        for t in run.fresh.iter().chain(&run.stale) {
            for p in &t.problems {
                let _ = writeln!(out, "Note: {label}, burst: {p}.\n");
            }
        }
        let _ = writeln!(
            out,
            "{label}: the leader/follower scenario had {} terms, at most {} leader(s) at once.\n",
            run.pair.terms, run.pair.max_leaders
        );
    }
    let _ = writeln!(
        out,
        "Trials: {trials} handovers, {trials} bursts per kind; request windows {} s.",
        window.as_secs()
    );
    out
}
