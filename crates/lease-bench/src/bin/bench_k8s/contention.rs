//! Scenario 3 of `bench_k8s`: racers claim one key in rounds, each waiting for its watch to
//! show the lease free; beside raw racers' `GET` and conditional `PUT`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use lease_bench::Res;
use lease_bench::k8s::tally::Tally;
use lease_bench::report::{Align, Table};
use lease_core::{Key, Store};
use lease_store_k8s::LeaseObjectStore;
use tokio::sync::{Barrier, watch};

use crate::WATCH_PATIENCE;
use crate::setup::{
    Bench, Cost, api_err, create_raw, key, measured, per_op, request, store_err, touched,
    watches_sent,
};

/// One round's handover: when the winner's revoke started, and when the last racer saw the
/// lease free.
pub(crate) type Handover = (Option<Instant>, Option<Instant>);

/// The barriers of one race: `ready` once a racer is set up (its watch listed and open),
/// `start` when the measurement begins (both with this task as one more party), and `round`
/// between the steps of a round (racers only).
#[derive(Clone)]
pub(crate) struct Barriers {
    ready: Arc<Barrier>,
    start: Arc<Barrier>,
    round: Arc<Barrier>,
    /// How many racers won each round.
    winners: Arc<Vec<AtomicU64>>,
    /// Per round: when the winner's revoke started, and when the last racer saw it (through
    /// its watch) before the next round.
    handovers: Arc<Mutex<Vec<Handover>>>,
}

impl Barriers {
    fn won(&self, round: u64) {
        if let Some(w) = usize::try_from(round)
            .ok()
            .and_then(|r| self.winners.get(r))
        {
            w.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records, for `round`, the start of the revoke (`revoked`) or a racer's noticing it.
    fn handover(&self, round: u64, revoked: bool) {
        let now = Instant::now();
        let mut handovers = self.handovers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = usize::try_from(round)
            .ok()
            .and_then(|r| handovers.get_mut(r))
        {
            if revoked {
                slot.0 = Some(now);
            } else {
                slot.1 = Some(slot.1.map_or(now, |t| t.max(now)));
            }
        }
    }

    /// The mean and the longest time from a revoke to the last racer seeing it.
    fn handover_times(&self) -> Option<(Duration, Duration)> {
        let handovers = self.handovers.lock().unwrap_or_else(|e| e.into_inner());
        let times: Vec<Duration> = handovers
            .iter()
            .filter_map(|&(revoked, seen)| Some(seen?.saturating_duration_since(revoked?)))
            .collect();
        let n = u32::try_from(times.len()).ok().filter(|&n| n > 0)?;
        let max = times.iter().copied().max()?;
        Some((times.iter().sum::<Duration>() / n, max))
    }
}

/// One racer of the store race. Returns its store, so that its watch stays open (and out of
/// the server's request total) until the measurement is over.
pub(crate) async fn store_racer(
    mut store: LeaseObjectStore,
    me: String,
    lease_key: Key,
    rounds: u64,
    barriers: Barriers,
) -> Res<LeaseObjectStore> {
    let mut changes = store
        .change_notifier()
        .ok_or("a racer's store has no change notifier")?;
    tokio::time::timeout(WATCH_PATIENCE, changes.changed())
        .await
        .map_err(|_| format!("{me}'s watch did not sync"))?
        .map_err(|e| e.to_string())?;
    barriers.ready.wait().await;
    barriers.start.wait().await;
    for round in 0..rounds {
        wait_free(&mut store, &mut changes, &lease_key, &me).await?;
        if let Some(previous) = round.checked_sub(1) {
            barriers.handover(previous, false);
        }
        barriers.round.wait().await;
        let won = match store.claim_lease(&lease_key, &request(&me)).await {
            Ok(_) => true,
            Err(e) if e.is_held() || e.is_invalid() => false,
            Err(e) => return Err(format!("{me}'s claim in round {round}: {e}")),
        };
        if won {
            barriers.won(round);
        }
        barriers.round.wait().await;
        if won {
            barriers.handover(round, true);
            store
                .revoke_lease(&lease_key, &me)
                .await
                .map_err(store_err("the winner's revoke"))?;
        }
    }
    Ok(store)
}

/// Waits until `store`'s view (the watch's cache once synced: no request) shows `key` free.
pub(crate) async fn wait_free(
    store: &mut LeaseObjectStore,
    changes: &mut watch::Receiver<u64>,
    key: &Key,
    me: &str,
) -> Res<()> {
    let deadline = tokio::time::Instant::now() + WATCH_PATIENCE;
    loop {
        let seen = store
            .leases(std::slice::from_ref(key))
            .await
            .map_err(store_err("a racer's read"))?;
        if !seen.contains_key(key) {
            return Ok(());
        }
        tokio::time::timeout_at(deadline, changes.changed())
            .await
            .map_err(|_| format!("{me} never saw the lease released"))?
            .map_err(|e| e.to_string())?;
    }
}

/// One racer of the raw race: `GET`, then a conditional `PUT` claiming it; the winner releases
/// it with one more conditional `PUT`.
pub(crate) async fn raw_racer(
    api: Api<Lease>,
    me: String,
    rounds: u64,
    barriers: Barriers,
) -> Res<()> {
    barriers.ready.wait().await;
    barriers.start.wait().await;
    for round in 0..rounds {
        let current = api
            .get("raw-race")
            .await
            .map_err(api_err("raw racer's GET"))?;
        barriers.round.wait().await;
        let won = match api
            .replace("raw-race", &PostParams::default(), &touched(current, &me))
            .await
        {
            Ok(lease) => Some(lease),
            Err(kube::Error::Api(status)) if status.code == 409 => None,
            Err(e) => return Err(format!("{me}'s raw PUT in round {round}: {e}")),
        };
        if won.is_some() {
            barriers.won(round);
        }
        barriers.round.wait().await;
        if let Some(lease) = won {
            api.replace("raw-race", &PostParams::default(), &touched(lease, ""))
                .await
                .map_err(api_err("raw release"))?;
        }
    }
    Ok(())
}

/// Runs one race: `spawn(i, barriers)` makes racer `i`. Returns the measured time, the cost
/// and the number of rounds with exactly one winner.
pub(crate) async fn race<T, F, Fut>(
    bench: &Bench,
    tally: &Tally,
    watches: u64,
    spawn: F,
) -> Res<(Duration, Cost, u64, Option<(Duration, Duration)>)>
where
    T: Send + 'static,
    F: Fn(usize, Barriers) -> Res<Fut>,
    Fut: Future<Output = Res<T>> + Send + 'static,
{
    let racers = bench.args.racers;
    let rounds = bench.args.rounds;
    let barriers = Barriers {
        ready: Arc::new(Barrier::new(racers + 1)),
        start: Arc::new(Barrier::new(racers + 1)),
        round: Arc::new(Barrier::new(racers)),
        winners: Arc::new((0..rounds).map(|_| AtomicU64::new(0)).collect()),
        handovers: Arc::new(Mutex::new((0..rounds).map(|_| (None, None)).collect())),
    };
    let mut tasks = Vec::new();
    for i in 0..racers {
        tasks.push(tokio::spawn(spawn(i, barriers.clone())?));
    }
    // A racer that fails ends the whole race at once (the others would wait at a barrier).
    let all = futures::future::try_join_all(
        tasks
            .into_iter()
            .map(|task| async { task.await.map_err(|e| format!("a racer panicked: {e}"))? }),
    );
    futures::pin_mut!(all);
    tokio::select! {
        _ = barriers.ready.wait() => {}
        result = &mut all => {
            return Err(result.err().unwrap_or_else(|| "the racers ended early".to_owned()));
        }
    }
    watches_sent(tally, watches).await?;
    let (kept, elapsed, cost) = measured(&bench.admin, &[tally], async {
        barriers.start.wait().await;
        all.await
    })
    .await?;
    // Closing the racers' watches now keeps them out of the measured server counts.
    drop(kept);
    let clean = barriers
        .winners
        .iter()
        .filter(|w| w.load(Ordering::Relaxed) == 1)
        .count() as u64;
    Ok((elapsed, cost, clean, barriers.handover_times()))
}

pub(crate) struct RaceRow {
    label: &'static str,
    elapsed: Duration,
    cost: Cost,
    /// Rounds with exactly one winner.
    clean_rounds: u64,
}

pub(crate) async fn contention(bench: &mut Bench) -> Res<String> {
    let racers = bench.args.racers;
    let rounds = bench.args.rounds;
    let store_tally = Arc::new(Tally::default());
    let raw_tally = Arc::new(Tally::default());

    let race_key = key("race");
    // Create the object first, so that every round is a takeover of an existing, free Lease.
    {
        let setup_tally = Arc::new(Tally::default());
        let mut first = bench.store(&setup_tally)?;
        first
            .claim_lease(&race_key, &request("bench-setup"))
            .await
            .map_err(store_err("the race's first claim"))?;
        first
            .revoke_lease(&race_key, "bench-setup")
            .await
            .map_err(store_err("the race's first revoke"))?;
    }
    let mut stores = Vec::new();
    for _ in 0..racers {
        stores.push(bench.store(&store_tally)?);
    }
    let stores = Mutex::new(stores);
    let watches = u64::try_from(racers).map_err(|e| e.to_string())?;
    let (store_elapsed, store_cost, store_clean, handover) =
        race(bench, &store_tally, watches, |i, barriers| {
            let store = stores
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .ok_or("no store left")?;
            Ok(store_racer(
                store,
                format!("racer-{i}"),
                race_key.clone(),
                rounds,
                barriers,
            ))
        })
        .await?;

    let setup_tally = Arc::new(Tally::default());
    create_raw(&bench.raw_api(&setup_tally)?, "raw-race", "").await?;
    let mut apis = Vec::new();
    for _ in 0..racers {
        apis.push(bench.raw_api(&raw_tally)?);
    }
    let apis = Mutex::new(apis);
    let (raw_elapsed, raw_cost, raw_clean, _) = race(bench, &raw_tally, 0, |i, barriers| {
        let api = apis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or("no client left")?;
        Ok(raw_racer(api, format!("raw-{i}"), rounds, barriers))
    })
    .await?;

    let rows = [
        RaceRow {
            label: "`LeaseObjectStore::claim_lease` race; winner revokes; racers wait for their watch to \
                    show the lease free",
            elapsed: store_elapsed,
            cost: store_cost,
            clean_rounds: store_clean,
        },
        RaceRow {
            label: "raw race: each racer `GET`s, all `PUT` conditionally, the winner releases \
                    with a `PUT` — baseline",
            elapsed: raw_elapsed,
            cost: raw_cost,
            clean_rounds: raw_clean,
        },
    ];
    for row in &rows {
        bench.check_foreign(row.label, &row.cost);
    }
    let rate = |row: &RaceRow| rounds as f64 / row.elapsed.as_secs_f64();
    let baseline = rate(&rows[1]);
    let mut out = String::new();
    writeln!(out, "### Contention: {racers} racers, {rounds} rounds\n").ok();
    let mut table = Table::new(&[
        ("race", Align::Left),
        ("claims/s", Align::Right),
        ("lease requests per round (server metrics)", Align::Left),
        ("(client count)", Align::Left),
        ("rounds with exactly one winner", Align::Right),
        ("claims/s ÷ raw race", Align::Right),
    ]);
    for row in &rows {
        table.row([
            row.label.to_owned(),
            format!("{:.1}", rate(row)),
            per_op(&row.cost.server, rounds as f64),
            per_op(&row.cost.client, rounds as f64),
            format!("{} of {rounds}", row.clean_rounds),
            format!("{:.2}×", rate(row) / baseline),
        ]);
    }
    out.push_str(&table.to_string());
    writeln!(
        out,
        "\nA round is one successful claim (a takeover of the free Lease) and its revoke. The \
         store's losers learn who won (`Held`) from one `GET` after their `PUT`'s 409; the raw \
         racers do not learn it. Every store racer holds a watch, so each write is also sent to \
         all {racers} of them. The store race includes the wait for each racer's watch to \
         deliver the revoke (no polling){}.",
        handover.map_or_else(String::new, |(mean, max)| format!(
            ": from the start of the winner's revoke to the last racer's watch showing the lease free took \
             {:.1} ms on average, {:.1} ms at most",
            mean.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        ))
    )
    .ok();
    if store_clean != rounds {
        bench.notes.push(format!(
            "**Mutual exclusion violated**: only {store_clean} of {rounds} store rounds had \
             exactly one winner."
        ));
    }
    Ok(out)
}
