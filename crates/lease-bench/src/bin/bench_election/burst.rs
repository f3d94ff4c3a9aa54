//! The burst scenario of `bench_election`: candidates started together, on a fresh lease and on
//! a stale one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp as WallTime};
use kube::api::PostParams;
use kube::{Api, Client};
use lease_bench::Res;
use lease_core::{Clock, Request, Store, SystemClock};
use lease_store_k8s::{LeaseObjectStore, naming};
use lease_store_sqlite::SqliteStore;

use crate::session::Session;
use crate::terms::{generation_problems, intervals, max_simultaneous};
use crate::{
    BURST, BURST_OBSERVE, Backend, EVENT_PATIENCE, LEASE_DURATION, STALE_STAGGER, STARTUP_PATIENCE,
    key, now_ns, span,
};

#[derive(Debug, Clone)]
pub(crate) struct BurstTrial {
    /// From the start barrier to the first `became`.
    pub(crate) first_leader: Duration,
    /// `became` events while the trial was watched (before shutdown).
    pub(crate) leaders_elected: usize,
    /// Most simultaneous leaders over the whole trial, shutdown included.
    pub(crate) max_leaders: usize,
    pub(crate) problems: Vec<String>,
}

/// Makes `lease` stale: held by `dead-holder`, who is gone.
pub(crate) async fn make_stale(backend: &Backend, kube: Option<&Client>, lease: &str) -> Res<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    match backend {
        Backend::K8s { namespace } => {
            let client = kube.ok_or("no kube client")?.clone();
            // Claimed through the store (so the object is what a candidate would have
            // written), then renewTime and acquireTime moved an hour back.
            let mut store = LeaseObjectStore::new(client.clone(), namespace.clone(), clock);
            store
                .claim_lease(&key(lease), &Request::new("dead-holder", LEASE_DURATION))
                .await
                .map_err(|e| format!("cannot claim the stale lease {lease}: {e}"))?;
            drop(store);
            let api: Api<Lease> = Api::namespaced(client, namespace);
            let name = naming::object_name(&key(lease));
            let mut object = api
                .get(&name)
                .await
                .map_err(|e| format!("cannot read Lease {name}: {e}"))?;
            let old = WallTime::now()
                .checked_sub(SignedDuration::from_hours(1))
                .map_err(|e| e.to_string())?;
            object.metadata.managed_fields = None;
            let spec = object.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(MicroTime(old));
            spec.acquire_time = Some(MicroTime(old));
            api.replace(&name, &PostParams::default(), &object)
                .await
                .map_err(|e| format!("cannot age Lease {name}: {e}"))?;
        }
        Backend::Sqlite { path } => {
            let mut store = SqliteStore::builder(path.clone())
                .clock(clock)
                .open()
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            store
                .claim_lease(
                    &key(lease),
                    &Request::new("dead-holder", Duration::from_millis(100)),
                )
                .await
                .map_err(|e| format!("cannot claim the stale lease {lease}: {e}"))?;
            drop(store);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

pub(crate) async fn burst(
    backend: &Backend,
    exe: &Path,
    kube: Option<&Client>,
    tag: &str,
    stale: bool,
) -> Res<BurstTrial> {
    let lease = format!("burst-{tag}");
    if stale {
        make_stale(backend, kube, &lease).await?;
    }
    let mut s = Session::new(backend, exe);
    let mut names = Vec::new();
    for j in 0..BURST {
        let who = format!("{tag}-c{j}");
        s.spawn(&lease, &who)?;
        names.push(who);
    }
    for who in &names {
        s.wait(0, Some(who), "ready", STARTUP_PATIENCE).await?;
    }
    // The start barrier: `lock` to every candidate, back to back.
    let from = s.mark();
    let go = now_ns();
    for i in 0..BURST {
        s.send(i, "lock")?;
    }
    let patience = if stale {
        LEASE_DURATION + EVENT_PATIENCE
    } else {
        EVENT_PATIENCE
    };
    let first = s.wait(from, None, "became", patience).await?;
    tokio::time::sleep(BURST_OBSERVE).await;
    let watched_until = s.mark();
    s.shutdown().await;
    let events = s.events();
    let elected = events[from..watched_until]
        .iter()
        .filter(|e| e.kind == "became")
        .count();
    let terms = intervals(&events);
    let mut problems = generation_problems(&terms);
    for ev in &events {
        if ev.kind == "error" {
            problems.push(format!("candidate {}: {}", ev.who, ev.what));
        }
    }
    Ok(BurstTrial {
        first_leader: span(go, first.t),
        leaders_elected: elected,
        max_leaders: max_simultaneous(&terms),
        problems,
    })
}

pub(crate) async fn bursts(
    backend: &Backend,
    exe: &Path,
    kube: Option<&Client>,
    trials: usize,
    stale: bool,
) -> Res<Vec<BurstTrial>> {
    let kind = if stale { "stale" } else { "fresh" };
    eprintln!(
        "bench_election: {}: {BURST} candidates at once on a {kind} lease, {trials} trials...",
        backend.label()
    );
    if stale && backend.is_k8s() {
        // Each waits out a full lease duration; overlap them, each on its own Lease.
        let runs = (0..trials).map(|i| async move {
            tokio::time::sleep(STALE_STAGGER * u32::try_from(i).unwrap_or(0)).await;
            burst(backend, exe, kube, &format!("{kind}{i}"), stale).await
        });
        return futures::future::join_all(runs).await.into_iter().collect();
    }
    let mut out = Vec::new();
    for i in 0..trials {
        out.push(burst(backend, exe, kube, &format!("{kind}{i}"), stale).await?);
    }
    Ok(out)
}
