//! A benchmark of [`LeaseStore`] against a real Kubernetes API server, printed as markdown.
//!
//! Three scenarios, each beside a baseline of raw conditional `PUT`s of a Lease (kube's
//! `Api<Lease>::replace` carrying the last `resourceVersion`) taken in the same run:
//!
//! 1. **Leader renewals**: one store claims a key, then extends it back to back. Renewals per
//!    second, and API requests per renewal by verb. Baselines: a raw `PUT` loop (one `GET` at
//!    the start, then each `PUT` carries the `resourceVersion` of the previous answer), and a
//!    `GET` + `PUT` per renewal (client-go's pattern, emulated). The three run in alternating
//!    blocks so that drift of the machine hits them alike.
//! 2. **Follower**: a second store with a change notifier (its watch) follows a key that a leader
//!    renews every 2 s, and on every notification reads the lease (from the watch's cache).
//!    Follower requests per minute by verb, and the watches it holds open.
//! 3. **Contention**: K stores, each with its own client and watch, race to claim one key in
//!    rounds; the winner revokes, and each racer waits until its watch shows the lease free
//!    before the next round. Successful claims per second and requests per round. Baseline: K
//!    raw clients that each `GET` the Lease, then all `PUT` it conditionally; the winner's
//!    release is one more `PUT`.
//!
//! Requests are counted twice. On the server: `apiserver_request_total{resource="leases"}`
//! from its own `/metrics` (summed over codes, by verb), scraped with the administrator's
//! credentials before and after each measured window; the scrape itself is not a `leases`
//! request. On the client: a tower layer on every client of this benchmark counts the lease
//! requests it sends. The metrics do not say which client made a request, so the follower's cost
//! is the server's count minus the leader's (counted on its client); when the server saw more
//! than this benchmark sent (another program using the same server), the output says so. A
//! watch is counted in `apiserver_request_total` only when it ends, so open watches are read
//! from `apiserver_longrunning_gauge{resource="leases",verb="WATCH"}`.
//!
//! ```text
//! cargo xtask k8s up && eval "$(cargo xtask k8s env)"
//! cargo run --release -p lease-store-k8s --example bench_k8s -- \
//!     [--renewals N] [--follow-secs S] [--racers K] [--rounds R]
//! ```
//!
//! Defaults: 1000 renewals per kind, a 24 s follower period, 8 racers, 100 rounds; about 40 s
//! in all. Every run works in a new Kubernetes namespace (`bench-k8s-…`), which is left behind
//! (a bare API server never finishes deleting one); `cargo xtask k8s down` removes it with
//! etcd's data. The stores judge expiry on [`SystemClock`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp as WallTime;
use kube::api::PostParams;
use kube::client::{Body, ClientBuilder};
use kube::{Api, Client, Config};
use lease_core::{Clock, Key, Request, Store, SystemClock};
use lease_store_k8s::LeaseStore;
use tokio::sync::{Barrier, watch};
use tower::util::MapRequestLayer;

#[path = "support/apiserver_metrics.rs"]
mod apiserver_metrics;

use apiserver_metrics::{delta, scrape};

/// The lease duration every claim and renewal asks for.
const DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews while the follower watches (client-go's retry period).
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How many blocks each kind of renewal loop is split into (they alternate).
const BLOCKS: u64 = 4;
/// How long a racer waits for its watch to show the lease free before giving up.
const WATCH_PATIENCE: Duration = Duration::from_secs(10);

type Res<T> = Result<T, String>;

/// Lease requests by verb (`GET`, `LIST`, `WATCH`, `POST`, `PUT`, ...).
type Verbs = BTreeMap<String, u64>;

/// The command line.
struct Args {
    renewals: u64,
    follow_secs: u64,
    racers: usize,
    rounds: u64,
}

fn parse_args() -> Res<Args> {
    let mut args = Args {
        renewals: 1000,
        follow_secs: 24,
        racers: 8,
        rounds: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| -> Res<u64> {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{what} {value:?} is not a positive number"))
        };
        match flag.as_str() {
            "--renewals" => args.renewals = number("--renewals")?,
            "--follow-secs" => args.follow_secs = number("--follow-secs")?,
            "--racers" => {
                args.racers = usize::try_from(number("--racers")?).map_err(|e| e.to_string())?;
            }
            "--rounds" => args.rounds = number("--rounds")?,
            other => {
                return Err(format!(
                    "unknown argument {other:?} (known: --renewals, --follow-secs, --racers, \
                     --rounds)"
                ));
            }
        }
    }
    if args.racers < 2 {
        return Err("--racers must be at least 2".to_owned());
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------------
// Counting on the client.

/// Lease requests one or more clients sent, by verb, as the server's metrics name them.
#[derive(Debug, Default)]
struct Tally(Mutex<Verbs>);

impl Tally {
    fn record(&self, request: &http::Request<Body>) {
        let uri = request.uri();
        let path = uri.path();
        let Some((_, rest)) = path.split_once("/leases") else {
            return;
        };
        let collection = rest.is_empty() || rest == "/";
        let watching = uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let method = request.method().as_str();
        let verb = match (method, collection) {
            ("GET", true) if watching => "WATCH",
            ("GET", true) => "LIST",
            (other, _) => other,
        };
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(verb.to_owned())
            .or_default() += 1;
    }

    fn snapshot(&self) -> Verbs {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A new client (its own connections) for `config` whose lease requests `tally` counts.
fn counted_client(config: &Config, tally: &Arc<Tally>) -> Res<Client> {
    let tally = Arc::clone(tally);
    let layer = MapRequestLayer::new(move |request: http::Request<Body>| {
        tally.record(&request);
        request
    });
    Ok(ClientBuilder::try_from(config.clone())
        .map_err(|e| format!("cannot build a client: {e}"))?
        .with_layer(&layer)
        .build())
}

// ---------------------------------------------------------------------------------------------
// Counting on the server.

fn minus(total: &Verbs, part: &Verbs) -> Verbs {
    delta(part, total)
}

fn add(into: &mut Verbs, more: &Verbs) {
    for (verb, n) in more {
        *into.entry(verb.clone()).or_default() += n;
    }
}

/// `PUT 12 · GET 0`: whole counts, always naming PUT and GET, then any other verb seen.
fn counts(verbs: &Verbs) -> String {
    let mut parts = Vec::new();
    for verb in ["PUT", "GET"] {
        parts.push(format!("{verb} {}", verbs.get(verb).copied().unwrap_or(0)));
    }
    for (verb, n) in verbs {
        if verb != "PUT" && verb != "GET" {
            parts.push(format!("{verb} {n}"));
        }
    }
    parts.join(" · ")
}

fn total(verbs: &Verbs) -> u64 {
    verbs.values().sum()
}

/// `PUT 1.00 · GET 0.00`: per `per`, always naming PUT and GET, then any other verb seen.
fn per_op(verbs: &Verbs, per: f64) -> String {
    let mut parts = Vec::new();
    for verb in ["PUT", "GET"] {
        let n = verbs.get(verb).copied().unwrap_or(0);
        parts.push(format!("{verb} {:.2}", n as f64 / per));
    }
    for (verb, &n) in verbs {
        if verb != "PUT" && verb != "GET" {
            parts.push(format!("{verb} {:.2}", n as f64 / per));
        }
    }
    parts.join(" · ")
}

/// What a measured window cost, seen from both ends.
#[derive(Debug, Default, Clone)]
struct Cost {
    server: Verbs,
    client: Verbs,
}

impl Cost {
    fn add(&mut self, other: &Cost) {
        add(&mut self.server, &other.server);
        add(&mut self.client, &other.client);
    }

    /// Lease requests the server counted beyond the ones this benchmark sent.
    fn foreign(&self) -> u64 {
        total(&self.server).saturating_sub(total(&self.client))
    }
}

/// Runs `body`, returning its result, its duration and the lease requests it cost (server
/// metrics and the client tallies, before and after).
async fn measured<T>(
    admin: &Client,
    tallies: &[&Tally],
    body: impl Future<Output = Res<T>>,
) -> Res<(T, Duration, Cost)> {
    let client_before = sum_tallies(tallies);
    let server_before = scrape(admin).await?;
    let started = Instant::now();
    let value = body.await?;
    let elapsed = started.elapsed();
    let server_after = scrape(admin).await?;
    let client_after = sum_tallies(tallies);
    Ok((
        value,
        elapsed,
        Cost {
            server: delta(&server_before.requests, &server_after.requests),
            client: delta(&client_before, &client_after),
        },
    ))
}

fn sum_tallies(tallies: &[&Tally]) -> Verbs {
    let mut all = Verbs::new();
    for tally in tallies {
        add(&mut all, &tally.snapshot());
    }
    all
}

// ---------------------------------------------------------------------------------------------
// Setup.

struct Bench {
    config: Config,
    admin: Client,
    namespace: String,
    clock: Arc<dyn Clock>,
    args: Args,
    /// Markdown notes about anything odd in the run (foreign requests, failed targets).
    notes: Vec<String>,
}

impl Bench {
    async fn new(args: Args) -> Res<Bench> {
        if std::env::var_os("KUBECONFIG").is_none_or(|v| v.is_empty()) {
            return Err("KUBECONFIG is not set: run `cargo xtask k8s up`, then \
                 `eval \"$(cargo xtask k8s env)\"` (or `cargo xtask bench bench_k8s`)"
                .to_owned());
        }
        let config = Config::infer()
            .await
            .map_err(|e| format!("cannot read the kubeconfig: {e}"))?;
        let admin =
            Client::try_from(config.clone()).map_err(|e| format!("cannot build a client: {e}"))?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let namespace = format!("bench-k8s-{:x}-{}", secs % 0x100_0000, std::process::id());
        let mut object = Namespace::default();
        object.metadata.name = Some(namespace.clone());
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| format!("cannot create namespace {namespace}: {e}"))?;
        Ok(Bench {
            config,
            admin,
            namespace,
            clock: Arc::new(SystemClock::new()),
            args,
            notes: Vec::new(),
        })
    }

    fn store(&self, tally: &Arc<Tally>) -> Res<LeaseStore> {
        Ok(LeaseStore::new(
            counted_client(&self.config, tally)?,
            self.namespace.clone(),
            Arc::clone(&self.clock),
        ))
    }

    fn raw_api(&self, tally: &Arc<Tally>) -> Res<Api<Lease>> {
        Ok(Api::namespaced(
            counted_client(&self.config, tally)?,
            &self.namespace,
        ))
    }

    /// Notes (in the output) that other clients used the server during a measured window.
    fn check_foreign(&mut self, what: &str, cost: &Cost) {
        let foreign = cost.foreign();
        if foreign > 0 {
            self.notes.push(format!(
                "During *{what}* the server counted {foreign} lease request(s) more than this \
                 benchmark sent (another program used the server); the client-side counts are \
                 exact for this benchmark."
            ));
        }
    }
}

fn key(lease: &str) -> Key {
    Key::new("bench", "k8s", lease)
}

fn request(holder: &str) -> Request {
    Request::new(holder, DURATION)
}

fn now_micro() -> MicroTime {
    MicroTime(WallTime::now())
}

/// Creates a raw Lease object `name` held by `holder` (empty: free).
async fn create_raw(api: &Api<Lease>, name: &str, holder: &str) -> Res<Lease> {
    let mut lease = Lease::default();
    lease.metadata.name = Some(name.to_owned());
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(holder.to_owned()),
        lease_duration_seconds: Some(15),
        renew_time: Some(now_micro()),
        lease_transitions: Some(0),
        ..LeaseSpec::default()
    });
    api.create(&PostParams::default(), &lease)
        .await
        .map_err(|e| format!("cannot create Lease {name}: {e}"))
}

/// Sets `lease`'s holder and renew time, keeping its `resourceVersion` (so a replace of it is
/// conditional).
fn touched(mut lease: Lease, holder: &str) -> Lease {
    lease.metadata.managed_fields = None;
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(holder.to_owned());
    spec.renew_time = Some(now_micro());
    lease
}

fn api_err(what: &str) -> impl FnOnce(kube::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn store_err(what: &str) -> impl FnOnce(lease_core::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

// ---------------------------------------------------------------------------------------------
// 1. Leader renewals.

struct RenewalRow {
    label: &'static str,
    ops: u64,
    elapsed: Duration,
    cost: Cost,
}

impl RenewalRow {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

async fn renewals(bench: &mut Bench) -> Res<String> {
    let n = bench.args.renewals;
    let block = n.div_ceil(BLOCKS);
    let store_tally = Arc::new(Tally::default());
    let raw_tally = Arc::new(Tally::default());
    let mut store = bench.store(&store_tally)?;
    let raw = bench.raw_api(&raw_tally)?;
    let leader = "bench-leader";
    let store_key = key("renew");
    store
        .claim_lease(&store_key, &request(leader))
        .await
        .map_err(store_err("claim before the renewals"))?;
    create_raw(&raw, "raw-renew", leader).await?;
    let mut raw_lease = raw
        .get("raw-renew")
        .await
        .map_err(api_err("GET of the raw Lease"))?;
    // Warm up each path (connections, server caches) outside the measurement.
    for _ in 0..20 {
        store
            .extend_lease(&store_key, &request(leader))
            .await
            .map_err(store_err("warm-up renewal"))?;
        raw_lease = raw
            .replace(
                "raw-renew",
                &PostParams::default(),
                &touched(raw_lease, leader),
            )
            .await
            .map_err(api_err("warm-up PUT"))?;
    }

    let store_setup = store_tally.snapshot();
    let raw_setup = raw_tally.snapshot();
    let mut rows = [
        RenewalRow {
            label: "`LeaseStore::extend_lease` (renewal by the holder)",
            ops: 0,
            elapsed: Duration::ZERO,
            cost: Cost::default(),
        },
        RenewalRow {
            label: "raw conditional `PUT` (`Api::replace` with the last `resourceVersion`) — baseline",
            ops: 0,
            elapsed: Duration::ZERO,
            cost: Cost::default(),
        },
        RenewalRow {
            label: "raw `GET` + conditional `PUT` per renewal (client-go's pattern, emulated)",
            ops: 0,
            elapsed: Duration::ZERO,
            cost: Cost::default(),
        },
    ];
    let mut done = 0;
    while done < n {
        let count = block.min(n - done);
        done += count;

        let ((), elapsed, cost) = measured(&bench.admin, &[&store_tally], async {
            for _ in 0..count {
                store
                    .extend_lease(&store_key, &request(leader))
                    .await
                    .map_err(store_err("renewal"))?;
            }
            Ok(())
        })
        .await?;
        rows[0].ops += count;
        rows[0].elapsed += elapsed;
        rows[0].cost.add(&cost);

        let (lease, elapsed, cost) = measured(&bench.admin, &[&raw_tally], async {
            let mut lease = raw_lease;
            for _ in 0..count {
                lease = raw
                    .replace("raw-renew", &PostParams::default(), &touched(lease, leader))
                    .await
                    .map_err(api_err("raw PUT"))?;
            }
            Ok(lease)
        })
        .await?;
        // The next block's object comes from the GET + PUT loop below.
        drop(lease);
        rows[1].ops += count;
        rows[1].elapsed += elapsed;
        rows[1].cost.add(&cost);

        let (lease, elapsed, cost) = measured(&bench.admin, &[&raw_tally], async {
            let mut lease = None;
            for _ in 0..count {
                let current = raw.get("raw-renew").await.map_err(api_err("raw GET"))?;
                lease = Some(
                    raw.replace(
                        "raw-renew",
                        &PostParams::default(),
                        &touched(current, leader),
                    )
                    .await
                    .map_err(api_err("raw PUT after GET"))?,
                );
            }
            lease.ok_or_else(|| "no renewal ran".to_owned())
        })
        .await?;
        raw_lease = lease;
        rows[2].ops += count;
        rows[2].elapsed += elapsed;
        rows[2].cost.add(&cost);
    }
    for row in &rows {
        bench.check_foreign(row.label, &row.cost);
    }

    let baseline = rows[1].rate();
    let mut out = String::new();
    writeln!(out, "### Leader renewal\n").ok();
    writeln!(
        out,
        "| renewal loop | renewals | renewals/s | lease requests per renewal (server metrics) \
         | (client count) | renewals/s ÷ raw `PUT` |"
    )
    .ok();
    writeln!(out, "| --- | ---: | ---: | --- | --- | ---: |").ok();
    for row in &rows {
        writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {:.2}× |",
            row.label,
            row.ops,
            row.rate(),
            per_op(&row.cost.server, row.ops as f64),
            per_op(&row.cost.client, row.ops as f64),
            row.rate() / baseline
        )
        .ok();
    }
    // Judged on the server's count, unless another program's requests are mixed into it.
    let judged = if rows[0].cost.foreign() > 0 {
        &rows[0].cost.client
    } else {
        &rows[0].cost.server
    };
    let writes = judged.get("PUT").copied().unwrap_or(0);
    let others = total(judged) - writes;
    let met = writes == rows[0].ops && others == 0;
    writeln!(
        out,
        "\nTarget: 1 API write and 0 reads per steady-state renewal: **{}** ({writes} `PUT`s and \
         {others} other lease requests for {} renewals). Not counted: the store's claim and 20 \
         warm-up renewals before the measurement ({}); the raw loops' creation, first read and \
         warm-up ({}).",
        if met { "met" } else { "not met" },
        rows[0].ops,
        counts(&store_setup),
        counts(&raw_setup),
    )
    .ok();
    if !met {
        bench
            .notes
            .push("The renewal target (1 write, 0 reads) was not met in this run.".to_owned());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 2. Follower.

async fn follower(bench: &mut Bench) -> Res<String> {
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
    let follower_server = minus(&cost.server, &leader_cost);
    let per_minute = |verbs: &Verbs| {
        let mut parts: Vec<String> = ["GET", "LIST", "PUT"]
            .iter()
            .map(|v| {
                format!(
                    "{v} {:.1}",
                    verbs.get(*v).copied().unwrap_or(0) as f64 / minutes
                )
            })
            .collect();
        for (verb, &n) in verbs {
            if !["GET", "LIST", "PUT"].contains(&verb.as_str()) {
                parts.push(format!("{verb} {:.1}", n as f64 / minutes));
            }
        }
        format!(
            "**{:.1}** ({})",
            total(verbs) as f64 / minutes,
            parts.join(" · ")
        )
    };
    let watches = gauge_during - gauge_before;

    let mut out = String::new();
    writeln!(out, "### Follower\n").ok();
    writeln!(out, "| measurement | value |").ok();
    writeln!(out, "| --- | --- |").ok();
    writeln!(
        out,
        "| measured period | {:.1} s; the leader renewed every {} s ({renewals} renewals) |",
        elapsed.as_secs_f64(),
        RENEW_EVERY.as_secs()
    )
    .ok();
    writeln!(
        out,
        "| lease requests the server counted in the period | {} |",
        counts(&cost.server)
    )
    .ok();
    writeln!(
        out,
        "| … of which the leader's (its client count) | {} |",
        counts(&leader_cost)
    )
    .ok();
    writeln!(
        out,
        "| follower requests per minute (server count − leader's) | {} |",
        per_minute(&follower_server)
    )
    .ok();
    writeln!(
        out,
        "| follower requests per minute (its client count) | {} |",
        per_minute(&follower_client)
    )
    .ok();
    writeln!(
        out,
        "| lease watches held open (`apiserver_longrunning_gauge`, follower only) | {watches} |"
    )
    .ok();
    writeln!(
        out,
        "| leader renewals the follower was told of by its watch | {noticed} of {renewals}, each \
         read back from the watch's cache{} |",
        if not_leader > 0 {
            format!("; {not_leader} read(s) did not show the leader holding it")
        } else {
            String::new()
        }
    )
    .ok();
    writeln!(
        out,
        "| client-go's follower, for context (DESIGN.md, measured earlier, not in this run) \
         | a `GET` every 2–4.4 s: 14–30 `GET`/min |"
    )
    .ok();
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

// ---------------------------------------------------------------------------------------------
// 3. Contention.

/// One round's handover: when the winner's revoke started, and when the last racer saw the
/// lease free.
type Handover = (Option<Instant>, Option<Instant>);

/// The barriers of one race: `ready` once a racer is set up (its watch listed and open),
/// `start` when the measurement begins (both with this task as one more party), and `round`
/// between the steps of a round (racers only).
#[derive(Clone)]
struct Barriers {
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
async fn store_racer(
    mut store: LeaseStore,
    me: String,
    lease_key: Key,
    rounds: u64,
    barriers: Barriers,
) -> Res<LeaseStore> {
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
async fn wait_free(
    store: &mut LeaseStore,
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
async fn raw_racer(api: Api<Lease>, me: String, rounds: u64, barriers: Barriers) -> Res<()> {
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

/// Waits until `tally` has counted `n` lease watches (a watch's request goes out only after
/// its list; it must not fall into a measured window).
async fn watches_sent(tally: &Tally, n: u64) -> Res<()> {
    let deadline = Instant::now() + WATCH_PATIENCE;
    while tally.snapshot().get("WATCH").copied().unwrap_or(0) < n {
        if Instant::now() >= deadline {
            return Err(format!("fewer than {n} lease watches were opened"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Runs one race: `spawn(i, barriers)` makes racer `i`. Returns the measured time, the cost
/// and the number of rounds with exactly one winner.
async fn race<T, F, Fut>(
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

struct RaceRow {
    label: &'static str,
    elapsed: Duration,
    cost: Cost,
    /// Rounds with exactly one winner.
    clean_rounds: u64,
}

async fn contention(bench: &mut Bench) -> Res<String> {
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
            label: "`LeaseStore::claim_lease` race; winner revokes; racers wait for their watch to \
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
    writeln!(
        out,
        "| race | claims/s | lease requests per round (server metrics) | (client count) \
         | rounds with exactly one winner | claims/s ÷ raw race |"
    )
    .ok();
    writeln!(out, "| --- | ---: | --- | --- | ---: | ---: |").ok();
    for row in &rows {
        writeln!(
            out,
            "| {} | {:.1} | {} | {} | {} of {rounds} | {:.2}× |",
            row.label,
            rate(row),
            per_op(&row.cost.server, rounds as f64),
            per_op(&row.cost.client, rounds as f64),
            row.clean_rounds,
            rate(row) / baseline
        )
        .ok();
    }
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

// ---------------------------------------------------------------------------------------------

async fn run() -> Res<String> {
    let args = parse_args()?;
    let mut bench = Bench::new(args).await?;
    let version = bench
        .admin
        .apiserver_version()
        .await
        .map_or_else(|e| format!("unknown ({e})"), |v| v.git_version);
    let started = Instant::now();
    eprintln!(
        "bench_k8s: namespace {} on kube-apiserver {version}",
        bench.namespace
    );
    eprintln!("bench_k8s: leader renewals...");
    let renewal = renewals(&mut bench).await?;
    eprintln!("bench_k8s: follower ({} s)...", bench.args.follow_secs);
    let follow = follower(&mut bench).await?;
    eprintln!("bench_k8s: contention...");
    let contend = contention(&mut bench).await?;
    eprintln!(
        "bench_k8s: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut out = String::new();
    writeln!(out, "## lease-store-k8s\n").ok();
    writeln!(
        out,
        "`LeaseStore` against a local kube-apiserver {version} (etcd on the same machine), with \
         raw conditional `PUT`s of a Lease (kube's `Api::replace`) as the baseline in the same \
         run. Every client has its own connections. Stores judge expiry on `SystemClock`; \
         leases last {} s.\n",
        DURATION.as_secs()
    )
    .ok();
    out.push_str(&renewal);
    out.push('\n');
    out.push_str(&follow);
    out.push('\n');
    out.push_str(&contend);
    writeln!(
        out,
        "\nFor context, client-go's leader election as measured earlier (DESIGN.md's figures, not \
         re-measured here): 1 `GET` + 1 `PUT` per renewal every 2 s; a follower `GET`s every \
         2–4.4 s.\n"
    )
    .ok();
    writeln!(
        out,
        "Method: lease requests are counted on the server, from its own \
         `apiserver_request_total{{resource=\"leases\"}}` (summed over codes, by verb) scraped \
         from `/metrics` with the administrator's credentials before and after each measured \
         window, and on the client, by a tower layer on every client of the benchmark. The \
         metrics do not say which client made a request, so the follower's cost is the \
         server's count minus the leader's client count; open watches come from \
         `apiserver_longrunning_gauge{{verb=\"WATCH\"}}` (a watch enters the request total \
         only when it ends). Throughputs are operations over wall time of the measured loops \
         (scrapes excluded); the renewal loops alternate in {BLOCKS} blocks each. Namespace \
         `{}`.",
        bench.namespace
    )
    .ok();
    for note in &bench.notes {
        writeln!(out, "\nNote: {note}").ok();
    }
    Ok(out)
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(markdown) => print!("{markdown}"),
        Err(e) => {
            eprintln!("bench_k8s: {e}");
            std::process::exit(1);
        }
    }
}
