//! What every scenario of `bench_k8s` uses: the run's namespace, stores and raw clients whose
//! lease requests are counted, a measured window's cost seen from both ends, and raw Lease
//! objects for the baselines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp as WallTime;
use kube::api::PostParams;
use kube::{Api, Client, Config};
use lease_bench::Res;
use lease_bench::k8s::apiserver_metrics::scrape;
use lease_bench::k8s::tally::{self, Tally, counted_client};
use lease_bench::k8s::{Verbs, add, admin_client, by_verb, create_namespace, delta, total};
use lease_core::{Clock, Key, Request, SystemClock};
use lease_store_k8s::LeaseObjectStore;

use crate::{Args, DURATION, WATCH_PATIENCE};

/// `PUT 12 · GET 0`: whole counts, always naming PUT and GET, then any other verb seen.
pub(crate) fn counts(verbs: &Verbs) -> String {
    by_verb(verbs, &["PUT", "GET"], |n| n.to_string())
}

/// `PUT 1.00 · GET 0.00`: per `per`, always naming PUT and GET, then any other verb seen.
pub(crate) fn per_op(verbs: &Verbs, per: f64) -> String {
    by_verb(verbs, &["PUT", "GET"], |n| format!("{:.2}", n as f64 / per))
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Cost {
    pub(crate) server: Verbs,
    pub(crate) client: Verbs,
}

impl Cost {
    pub(crate) fn add(&mut self, other: &Cost) {
        add(&mut self.server, &other.server);
        add(&mut self.client, &other.client);
    }

    /// Lease requests the server counted beyond the ones this benchmark sent.
    pub(crate) fn foreign(&self) -> u64 {
        total(&self.server).saturating_sub(total(&self.client))
    }
}

/// Runs `body`, returning its result, its duration and the lease requests it cost (server
/// metrics and the client tallies, before and after).
pub(crate) async fn measured<T>(
    admin: &Client,
    tallies: &[&Tally],
    body: impl Future<Output = Res<T>>,
) -> Res<(T, Duration, Cost)> {
    let client_before = tally::sum(tallies);
    let server_before = scrape(admin).await?;
    let started = Instant::now();
    let value = body.await?;
    let elapsed = started.elapsed();
    let server_after = scrape(admin).await?;
    let client_after = tally::sum(tallies);
    Ok((
        value,
        elapsed,
        Cost {
            server: delta(&server_before.requests, &server_after.requests),
            client: delta(&client_before, &client_after),
        },
    ))
}

pub(crate) struct Bench {
    pub(crate) config: Config,
    pub(crate) admin: Client,
    pub(crate) namespace: String,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) args: Args,
    /// Markdown notes about anything odd in the run (foreign requests, failed targets).
    pub(crate) notes: Vec<String>,
}

impl Bench {
    pub(crate) async fn new(args: Args) -> Res<Bench> {
        let (config, admin) = admin_client("").await?;
        let namespace = create_namespace(&admin, "bench-k8s").await?;
        Ok(Bench {
            config,
            admin,
            namespace,
            clock: Arc::new(SystemClock::new()),
            args,
            notes: Vec::new(),
        })
    }

    pub(crate) fn store(&self, tally: &Arc<Tally>) -> Res<LeaseObjectStore> {
        Ok(LeaseObjectStore::new(
            counted_client(&self.config, tally)?,
            self.namespace.clone(),
            Arc::clone(&self.clock),
        ))
    }

    pub(crate) fn raw_api(&self, tally: &Arc<Tally>) -> Res<Api<Lease>> {
        Ok(Api::namespaced(
            counted_client(&self.config, tally)?,
            &self.namespace,
        ))
    }

    /// Notes (in the output) that other clients used the server during a measured window.
    pub(crate) fn check_foreign(&mut self, what: &str, cost: &Cost) {
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

pub(crate) fn key(lease: &str) -> Key {
    Key::new("bench", "k8s", lease)
}

pub(crate) fn request(holder: &str) -> Request {
    Request::new(holder, DURATION)
}

pub(crate) fn now_micro() -> MicroTime {
    MicroTime(WallTime::now())
}

/// Creates a raw Lease object `name` held by `holder` (empty: free).
pub(crate) async fn create_raw(api: &Api<Lease>, name: &str, holder: &str) -> Res<Lease> {
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
pub(crate) fn touched(mut lease: Lease, holder: &str) -> Lease {
    lease.metadata.managed_fields = None;
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(holder.to_owned());
    spec.renew_time = Some(now_micro());
    lease
}

pub(crate) fn api_err(what: &str) -> impl FnOnce(kube::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

pub(crate) fn store_err(what: &str) -> impl FnOnce(lease_core::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Waits until `tally` has counted `n` lease watches (a watch's request goes out only after
/// its list; it must not fall into a measured window).
pub(crate) async fn watches_sent(tally: &Tally, n: u64) -> Res<()> {
    let deadline = Instant::now() + WATCH_PATIENCE;
    while tally.snapshot().get("WATCH").copied().unwrap_or(0) < n {
        if Instant::now() >= deadline {
            return Err(format!("fewer than {n} lease watches were opened"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
