//! The candidate process of `bench_election`: a `Manager` over its own store and a
//! `LeaderElector`, driven by commands on stdin, reporting events on stdout as JSON lines.

use std::io::{BufRead, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::Config;
use lease_bench::k8s::tally::{Tally, counted_client};
use lease_bench::{Res, flag_pairs};
use lease_core::{Clock, DefaultSecretary, SystemClock, Timestamp};
use lease_manager::{
    Callbacks, ElectionConfig, LeaderElector, Leadership, LeadershipGuard, Manager, ManagerConfig,
};
use lease_store_k8s::LeaseObjectStore;
use lease_store_sqlite::SqliteStore;
use serde_json::{Value, json};

use crate::{Backend, LEASE_DURATION, MODEL, NAMESPACE, RENEW_DEADLINE, RETRY_PERIOD};

pub(crate) struct CandidateArgs {
    pub(crate) backend: Backend,
    pub(crate) lease: String,
    pub(crate) identity: String,
}

pub(crate) fn parse_candidate(args: &[String]) -> Res<CandidateArgs> {
    let mut backend = None;
    let mut lease = None;
    let mut identity = None;
    for (flag, value) in flag_pairs(args.iter().cloned())? {
        match flag.as_str() {
            "--k8s" => backend = Some(Backend::K8s { namespace: value }),
            "--sqlite" => {
                backend = Some(Backend::Sqlite {
                    path: PathBuf::from(value),
                });
            }
            "--lease" => lease = Some(value),
            "--identity" => identity = Some(value),
            other => return Err(format!("unknown candidate argument {other:?}")),
        }
    }
    Ok(CandidateArgs {
        backend: backend.ok_or("--k8s or --sqlite is required")?,
        lease: lease.ok_or("--lease is required")?,
        identity: identity.ok_or("--identity is required")?,
    })
}

/// Prints one event line and flushes it at once.
pub(crate) fn emit(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

pub(crate) async fn candidate(args: CandidateArgs) -> Res<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let tally = Arc::new(Tally::default());
    let config = match &args.backend {
        Backend::K8s { namespace } => {
            let kube_config = Config::infer()
                .await
                .map_err(|e| format!("cannot read the kubeconfig: {e}"))?;
            let store = LeaseObjectStore::new(
                counted_client(&kube_config, &tally)?,
                namespace.clone(),
                Arc::clone(&clock),
            );
            ManagerConfig::new(store, Arc::clone(&clock))
        }
        Backend::Sqlite { path } => {
            let store = SqliteStore::builder(path.clone())
                .clock(Arc::clone(&clock))
                .open()
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            ManagerConfig::new(store, Arc::clone(&clock))
        }
    };
    let manager = Manager::start(config.with_default_secretary(Arc::new(DefaultSecretary)))
        .map_err(|e| format!("cannot start the manager: {e}"))?;
    let callbacks = {
        let (c1, c2) = (Arc::clone(&clock), Arc::clone(&clock));
        Callbacks::new()
            .on_started_leading(move |generation| {
                emit(&json!({"ev": "became", "t": c1.now().as_nanos(), "gen": generation.get()}));
            })
            .on_stopped_leading(move || emit(&json!({"ev": "stopped", "t": c2.now().as_nanos()})))
    };
    let election = ElectionConfig::new(NAMESPACE, MODEL, &*args.lease, &*args.identity)
        .with_timing(LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD);
    let elector = LeaderElector::new(&manager, Arc::clone(&clock), election, callbacks)
        .map_err(|e| format!("cannot create the elector: {e}"))?;
    let observer = tokio::spawn(observe(elector.clone(), Arc::clone(&clock)));

    // Commands from stdin; its end (the orchestrator closed it or died) ends the candidate.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    emit(&json!({"ev": "ready", "t": clock.now().as_nanos()}));

    let guard: Arc<Mutex<Option<LeadershipGuard>>> = Arc::default();
    let mut locking: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(command) = rx.recv().await {
        match command.trim() {
            "lock" => {
                if locking.as_ref().is_none_or(|h| h.is_finished()) {
                    let elector = elector.clone();
                    let guard = Arc::clone(&guard);
                    locking = Some(tokio::spawn(async move {
                        match elector.lock().await {
                            Ok(g) => {
                                *guard.lock().unwrap_or_else(PoisonError::into_inner) = Some(g)
                            }
                            Err(e) => emit(&json!({"ev": "error", "what": format!("lock: {e}")})),
                        }
                    }));
                }
            }
            "unlock" => unlock(&elector, &*clock, &guard).await,
            "tally" => emit(&json!({
                "ev": "tally",
                "t": clock.now().as_nanos(),
                "verbs": tally.snapshot(),
            })),
            other => emit(&json!({"ev": "error", "what": format!("unknown command {other:?}")})),
        }
    }
    if let Some(h) = locking {
        h.abort();
        let _ = h.await;
    }
    if elector.is_leader() {
        unlock(&elector, &*clock, &guard).await;
    }
    observer.abort();
    manager.stop().await;
    Ok(())
}

/// Gives leadership up with [`LeaderElector::unlock`], reporting before and after.
pub(crate) async fn unlock(
    elector: &LeaderElector,
    clock: &dyn Clock,
    guard: &Mutex<Option<LeadershipGuard>>,
) {
    emit(&json!({"ev": "unlocking", "t": clock.now().as_nanos()}));
    let revoked = elector.unlock().await;
    emit(&json!({"ev": "released", "t": clock.now().as_nanos(), "ok": revoked}));
    // The term has ended, so dropping its guard does nothing more.
    drop(guard.lock().unwrap_or_else(PoisonError::into_inner).take());
}

/// Reports successful renewals (the start of each, from the lock record) and whom this
/// candidate follows. Runs until aborted.
pub(crate) async fn observe(elector: LeaderElector, clock: Arc<dyn Clock>) {
    let mut state = elector.leadership();
    let mut last: Option<Timestamp> = None;
    loop {
        if let Some(record) = elector.term_record()
            && record.renew_time != record.acquire_time
            && last != Some(record.renew_time)
        {
            last = Some(record.renew_time);
            emit(&json!({
                "ev": "renewed",
                "t": record.renew_time.as_nanos(),
                "seen": clock.now().as_nanos(),
            }));
        }
        if state.has_changed().unwrap_or(false) {
            let now = state.borrow_and_update().clone();
            if let Leadership::Following { leader } = now {
                emit(&json!({"ev": "following", "t": clock.now().as_nanos(), "leader": leader}));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
