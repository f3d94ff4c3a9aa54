//! Scenario 2 of `bench_k8s`: a follower with a watch, following a key a leader renews every
//! 2 s; what it costs the server per minute.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use lease_bench::Res;
use lease_bench::k8s::apiserver_metrics::scrape;
use lease_bench::k8s::tally::Tally;
use lease_bench::k8s::{Verbs, by_verb, delta, total};
use lease_bench::report::Table;
use lease_core::Store;

use crate::setup::{Bench, counts, key, measured, request, store_err, watches_sent};
use crate::{RENEW_EVERY, WATCH_PATIENCE};

pub(crate) async fn follower(bench: &mut Bench) -> Res<String> {
    let period = Duration::from_secs(bench.args.follow_secs);
    let leader_tally = Arc::new(Tally::default());
    let follower_tally = Arc::new(Tally::default());
    let mut leader = bench.store(&leader_tally)?;
    let mut follower = bench.store(&follower_tally)?;
    let lease_key = key("follow");
    let leader_name = "bench-leader";
    leader
        .claim_lease(&lease_key, &request(leader_name))
        .await
        .map_err(store_err("the leader's claim"))?;

    let gauge_before = scrape(&bench.admin).await?.open_watches;
    // Start the follower's watch and let it list everything before measuring.
    let mut changes = follower
        .change_notifier()
        .ok_or("the follower's store has no change notifier")?;
    tokio::time::timeout(WATCH_PATIENCE, changes.changed())
        .await
        .map_err(|_| "the follower's watch did not sync within 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let seen = follower
        .leases(std::slice::from_ref(&lease_key))
        .await
        .map_err(store_err("the follower's first read"))?;
    if seen.get(&lease_key).map(|i| i.holder.as_str()) != Some(leader_name) {
        return Err(format!(
            "the follower does not see the leader's claim: {seen:?}"
        ));
    }
    watches_sent(&follower_tally, 1).await?;

    let follower_key = lease_key.clone();
    let run_follower = async move {
        // What a manager does as a follower: wait for a change, then read the lease it cares
        // about (answered from the watch's cache once the watch has synced).
        let deadline = tokio::time::Instant::now() + period;
        let mut noticed = 0u64;
        let mut not_leader = 0u64;
        while let Ok(changed) = tokio::time::timeout_at(deadline, changes.changed()).await {
            changed.map_err(|e| e.to_string())?;
            let seen = follower
                .leases(std::slice::from_ref(&follower_key))
                .await
                .map_err(store_err("the follower's read"))?;
            noticed += 1;
            if seen.get(&follower_key).map(|i| i.holder.as_str()) != Some(leader_name) {
                not_leader += 1;
            }
        }
        Ok::<_, String>((noticed, not_leader, follower))
    };
    let run_leader = async {
        let mut renewals = 0u64;
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the claim just happened, so skip it.
        tick.tick().await;
        let end = tokio::time::Instant::now() + period;
        loop {
            tick.tick().await;
            if tokio::time::Instant::now() >= end {
                break;
            }
            leader
                .extend_lease(&lease_key, &request(leader_name))
                .await
                .map_err(store_err("the leader's renewal"))?;
            renewals += 1;
        }
        Ok::<_, String>(renewals)
    };
    let tallies = [leader_tally.as_ref(), follower_tally.as_ref()];
    let follower_setup = follower_tally.snapshot();
    let leader_before = leader_tally.snapshot();
    let follower_before = follower_tally.snapshot();
    let ((renewals, (noticed, not_leader, follower)), elapsed, cost) =
        measured(&bench.admin, &tallies, async {
            let (renewals, followed) = tokio::join!(run_leader, run_follower);
            Ok((renewals?, followed?))
        })
        .await?;
    let gauge_during = scrape(&bench.admin).await?.open_watches;
    drop(follower);
    let leader_cost = delta(&leader_before, &leader_tally.snapshot());
    let follower_client = delta(&follower_before, &follower_tally.snapshot());
    bench.check_foreign("the follower period", &cost);

    let minutes = elapsed.as_secs_f64() / 60.0;
    let follower_server = delta(&leader_cost, &cost.server);
    let per_minute = |verbs: &Verbs| {
        format!(
            "**{:.1}** ({})",
            total(verbs) as f64 / minutes,
            by_verb(verbs, &["GET", "LIST", "PUT"], |n| format!(
                "{:.1}",
                n as f64 / minutes
            ))
        )
    };
    let watches = gauge_during - gauge_before;

    let mut out = String::new();
    writeln!(out, "### Follower\n").ok();
    let mut table = Table::text(&["measurement", "value"]);
    table.row([
        "measured period".to_owned(),
        format!(
            "{:.1} s; the leader renewed every {} s ({renewals} renewals)",
            elapsed.as_secs_f64(),
            RENEW_EVERY.as_secs()
        ),
    ]);
    table.row([
        "lease requests the server counted in the period".to_owned(),
        counts(&cost.server),
    ]);
    table.row([
        "… of which the leader's (its client count)".to_owned(),
        counts(&leader_cost),
    ]);
    table.row([
        "follower requests per minute (server count − leader's)".to_owned(),
        per_minute(&follower_server),
    ]);
    table.row([
        "follower requests per minute (its client count)".to_owned(),
        per_minute(&follower_client),
    ]);
    table.row([
        "lease watches held open (`apiserver_longrunning_gauge`, follower only)".to_owned(),
        watches.to_string(),
    ]);
    let misread = if not_leader > 0 {
        format!("; {not_leader} read(s) did not show the leader holding it")
    } else {
        String::new()
    };
    table.row([
        "leader renewals the follower was told of by its watch".to_owned(),
        format!("{noticed} of {renewals}, each read back from the watch's cache{misread}"),
    ]);
    table.row(
        [
            "client-go's follower, for context (DESIGN.md, measured earlier, not in this run)",
            "a `GET` every 2–4.4 s: 14–30 `GET`/min",
        ]
        .map(str::to_owned),
    );
    out.push_str(&table.to_string());
    let met = total(&follower_server) == 0 && total(&follower_client) == 0 && watches == 1;
    writeln!(
        out,
        "\nTarget: one watch and no polling: **{}**. Before the period the follower started \
         its watch, waited for it to sync and read the lease once ({}, counted on its \
         client); the leader ran without a watch, so the open-watch gauge counts the \
         follower's alone.",
        if met { "met" } else { "not met" },
        counts(&follower_setup)
    )
    .ok();
    if !met {
        bench.notes.push(
            "The follower target (one watch, no polling) was not met in this run.".to_owned(),
        );
    }
    Ok(out)
}
