//! Two-candidate failover against a real Kubernetes API server: lease-manager's [`LeaderElector`],
//! [`ManagerLeaser`] and [`ResourceLocks`], each candidate a [`Manager`] over its own
//! [`LeaseObjectStore`] and client (as two processes would be), on the system clock with short
//! durations (lease 3 s, renew deadline 2 s, retry 500 ms; the Leaser's shortest TTL, 5 s). The
//! winner is cut off from the server (a test partition: its requests fail); the other takes over.
//! Each test checks that the loser stopped acting before the winner started, that the generation
//! increased, and what the Lease object says. Real time cannot be avoided against a real server; no
//! test asserts a tight timing.
//!
//! Ignored by default (they need a server): `cargo xtask k8s up`, then
//! `eval "$(cargo xtask k8s env)"` and `cargo test -p lease-store-k8s -- --ignored`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use lease_core::{Clock, DefaultSecretary, Key, Leaser as _, LeaserError, PathKey, SystemClock};
use lease_manager::{
    Callbacks, ElectionConfig, LeaderElector, Leadership, LeaserConfig, Manager, ManagerConfig,
    ManagerLeaser, ResourceKey, ResourceLockError, ResourceLocks,
};
use lease_store_k8s::naming::{ANNOTATION_GENERATION, object_name};
use lease_store_k8s::{
    BECAME_LEADER, EVENT_REASON, EventRecorder, LeaseObjectStore, STOPPED_LEADING,
};
use lease_store_k8s::{StoreOptions, naming};
use tokio::sync::watch;
use tokio::time::{sleep, timeout};

use common::{NamespaceGuard, Partition, admin_config, client, partitionable_client};

const IGNORE: &str = "needs a Kubernetes API server: cargo xtask k8s up";
const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: Duration = Duration::from_secs(2);
const RETRY_PERIOD: Duration = Duration::from_millis(500);
/// The Leaser's shortest TTL.
const LEASER_TTL: Duration = Duration::from_secs(5);
/// Generous bound for anything that should happen within a few lease durations.
const PATIENCE: Duration = Duration::from_secs(30);

/// One candidate process: a manager over its own store and client, which can be cut off.
struct Candidate {
    manager: Manager,
    clock: Arc<dyn Clock>,
    partition: Partition,
}

fn candidate(config: &kube::Config, namespace: &str, options: StoreOptions) -> Candidate {
    let partition = Partition::default();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let store = LeaseObjectStore::with_options(
        partitionable_client(config, &partition),
        namespace,
        Arc::clone(&clock),
        options.request_timeout(Duration::from_secs(2)),
    );
    let manager = Manager::start(
        ManagerConfig::new(store, Arc::clone(&clock))
            .with_default_secretary(Arc::new(DefaultSecretary)),
    )
    .expect("manager starts");
    Candidate {
        manager,
        clock,
        partition,
    }
}

/// A timeline of what the candidates reported, in the order it happened.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<(Instant, String)>>>);

impl Timeline {
    fn push(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push((Instant::now(), what.into()));
    }
    fn when(&self, what: &str) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, w)| w == what)
            .map(|(t, _)| *t)
    }
    fn dump(&self) -> String {
        let events = self.0.lock().unwrap();
        let Some(start) = events.first().map(|(t, _)| *t) else {
            return String::new();
        };
        events
            .iter()
            .map(|(t, w)| format!("{:>8.3}s {w}", t.duration_since(start).as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn callbacks(name: &'static str, timeline: &Timeline) -> Callbacks {
    let (t1, t2, t3) = (timeline.clone(), timeline.clone(), timeline.clone());
    Callbacks::new()
        .on_started_leading(move |g| t1.push(format!("{name} started {g}")))
        .on_stopped_leading(move || t2.push(format!("{name} stopped")))
        .on_new_leader(move |leader| t3.push(format!("{name} sees {leader}")))
}

fn election(identity: &str) -> ElectionConfig {
    ElectionConfig::new("election", "failover", "controller", identity).with_timing(
        LEASE_DURATION,
        RENEW_DEADLINE,
        RETRY_PERIOD,
    )
}

/// Waits until `rx` shows `want`.
async fn wait_for(rx: &mut watch::Receiver<Leadership>, want: &Leadership) {
    let seen = timeout(PATIENCE, rx.wait_for(|l| l == want))
        .await
        .map(|r| r.map(|_| ()));
    match seen {
        Ok(r) => r.expect("elector alive"),
        Err(_) => panic!("never saw {want:?}; last {:?}", *rx.borrow()),
    }
}

/// Work under a lease: records an instant every 20 ms until `lost` fires, checking it right
/// before each action.
fn work(lost: lease_core::CancellationToken) -> tokio::task::JoinHandle<Vec<Instant>> {
    tokio::spawn(async move {
        let mut acts = Vec::new();
        loop {
            if lost.is_cancelled() {
                return acts;
            }
            acts.push(Instant::now());
            sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn lease_object(config: &kube::Config, namespace: &str, name: &str) -> Lease {
    Api::<Lease>::namespaced(client(config), namespace)
        .get(name)
        .await
        .expect("the Lease object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn leader_elector_fails_over_when_the_leader_is_cut_off() {
    let _ = IGNORE;
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "elect-failover")
        .await
        .unwrap();
    let timeline = Timeline::default();
    let a = candidate(&config, &ns.name, StoreOptions::default());
    let b = candidate(&config, &ns.name, StoreOptions::default());
    let elector_a = LeaderElector::new(
        &a.manager,
        Arc::clone(&a.clock),
        election("cand-a"),
        callbacks("a", &timeline),
    )
    .unwrap();
    let elector_b = LeaderElector::new(
        &b.manager,
        Arc::clone(&b.clock),
        election("cand-b"),
        callbacks("b", &timeline),
    )
    .unwrap();

    let guard_a = timeout(PATIENCE, elector_a.lock())
        .await
        .expect("a leads in time")
        .unwrap();
    let acts_a = work(guard_a.lost().clone());
    let mut b_state = elector_b.leadership();
    let b_lock = tokio::spawn({
        let elector_b = elector_b.clone();
        async move { elector_b.lock().await }
    });
    wait_for(
        &mut b_state,
        &Leadership::Following {
            leader: "cand-a".into(),
        },
    )
    .await;
    // b follows and keeps following while a renews (two lease durations).
    sleep(LEASE_DURATION * 2).await;
    assert!(!elector_b.is_leader(), "{}", timeline.dump());
    assert!(guard_a.is_leading());

    // Cut a off: its renewals fail, its term ends, then b takes over.
    a.partition.set(true);
    let guard_b = timeout(PATIENCE, b_lock)
        .await
        .expect("b leads in time")
        .unwrap()
        .unwrap();
    let b_started = timeline
        .when(&format!("b started {}", guard_b.generation()))
        .expect("b's start reported");
    let a_stopped = timeline.when("a stopped").expect("a's end reported");
    assert!(
        a_stopped < b_started,
        "a stopped after b started:\n{}",
        timeline.dump()
    );
    assert!(guard_a.lost().is_cancelled());
    assert!(!elector_a.is_leader());
    let acts = acts_a.await.unwrap();
    assert!(!acts.is_empty());
    assert!(
        acts.iter().all(|t| *t < b_started),
        "a acted after b started leading"
    );
    assert!(guard_b.generation() > guard_a.generation());

    // The Lease object names b, with the new generation in its generation annotation.
    let key = Key::new("election", "failover", "controller");
    let lease = lease_object(&config, &ns.name, &object_name(&key)).await;
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("cand-b"));
    assert_eq!(spec.lease_duration_seconds, Some(3));
    let annotation: serde_json::Value =
        serde_json::from_str(&lease.metadata.annotations.as_ref().unwrap()[ANNOTATION_GENERATION])
            .unwrap();
    assert_eq!(annotation["generation"], guard_b.generation().get());
    assert_eq!(
        annotation["leaseTransitions"],
        i64::from(spec.lease_transitions.unwrap())
    );

    // Reconnected, a follows b; when b releases, a leads again with a newer generation.
    a.partition.set(false);
    let mut a_state = elector_a.leadership();
    let a_lock = tokio::spawn({
        let elector_a = elector_a.clone();
        async move { elector_a.lock().await }
    });
    wait_for(
        &mut a_state,
        &Leadership::Following {
            leader: "cand-b".into(),
        },
    )
    .await;
    assert!(guard_b.is_leading());
    let b_generation = guard_b.generation();
    assert!(guard_b.release().await);
    let guard_a2 = timeout(PATIENCE, a_lock)
        .await
        .expect("a leads again in time")
        .unwrap()
        .unwrap();
    assert!(guard_a2.generation() > b_generation);
    assert!(!elector_b.is_leader());
    drop(guard_a2);
    a.manager.stop().await;
    b.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn leaser_fails_over_when_the_holder_is_cut_off() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "leaser-failover")
        .await
        .unwrap();
    let a = candidate(&config, &ns.name, StoreOptions::default());
    let b = candidate(&config, &ns.name, StoreOptions::default());
    let leaser_a = ManagerLeaser::new(
        &a.manager,
        Arc::clone(&a.clock),
        LeaserConfig::new("leaser", "failover", "host-a"),
    )
    .unwrap();
    let leaser_b = ManagerLeaser::new(
        &b.manager,
        Arc::clone(&b.clock),
        LeaserConfig::new("leaser", "failover", "host-b"),
    )
    .unwrap();
    let key = PathKey::system(["jobs", "nightly-backup"]).unwrap();

    let (guard_a, lost_a) = leaser_a
        .acquire_lease(&key, LEASER_TTL, None)
        .await
        .unwrap();
    let acts_a = work(lost_a.clone());
    let lost_at = tokio::spawn({
        let lost_a = lost_a.clone();
        async move {
            lost_a.cancelled().await;
            Instant::now()
        }
    });
    match leaser_b.acquire_lease(&key, LEASER_TTL, None).await {
        Err(LeaserError::Conflict { .. }) => {}
        other => panic!("b should conflict with a: {other:?}"),
    }
    // a keeps it through renewals.
    sleep(LEASER_TTL * 2).await;
    assert!(!lost_a.is_cancelled());
    assert!(matches!(
        leaser_b.acquire_lease(&key, LEASER_TTL, None).await,
        Err(LeaserError::Conflict { .. })
    ));

    a.partition.set(true);
    let started = Instant::now();
    let (guard_b, lost_b) = loop {
        match leaser_b.acquire_lease(&key, LEASER_TTL, None).await {
            Ok(got) => break got,
            Err(LeaserError::Conflict { .. }) => {}
            Err(e) => panic!("b's acquire failed: {e}"),
        }
        assert!(started.elapsed() < PATIENCE, "b never got the lease");
        sleep(Duration::from_millis(100)).await;
    };
    let b_acquired = Instant::now();
    let lost_at = timeout(Duration::from_secs(1), lost_at)
        .await
        .expect("a's lost token fired before b acquired")
        .unwrap();
    assert!(lost_at < b_acquired);
    let acts = acts_a.await.unwrap();
    assert!(!acts.is_empty());
    assert!(
        acts.iter().all(|t| *t < b_acquired),
        "a acted after b acquired"
    );
    assert!(guard_b.generation() > guard_a.generation());
    assert!(!lost_b.is_cancelled());

    // Reconnected, a is refused while b holds it.
    a.partition.set(false);
    assert!(matches!(
        leaser_a.acquire_lease(&key, LEASER_TTL, None).await,
        Err(LeaserError::Conflict { .. })
    ));
    drop(guard_a);
    guard_b.release().await.unwrap();
    assert!(lost_b.is_cancelled());
    a.manager.stop().await;
    b.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn resource_locks_fail_over_when_the_holder_is_cut_off() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "txn-failover")
        .await
        .unwrap();
    let a = candidate(&config, &ns.name, StoreOptions::default());
    let b = candidate(&config, &ns.name, StoreOptions::default());
    let locks_a = ResourceLocks::new(&a.manager, "txn-locks", "failover").unwrap();
    let locks_b = ResourceLocks::new(&b.manager, "txn-locks", "failover").unwrap();
    let web = ResourceKey::new("apps", "Deployment", "prod", "web");

    let lock_a = locks_a
        .acquire(&web, "txn-a", LEASE_DURATION)
        .await
        .unwrap();
    match locks_b.acquire(&web, "txn-b", LEASE_DURATION).await {
        Err(ResourceLockError::AlreadyLocked { holder, .. }) => assert_eq!(holder, "txn-a"),
        other => panic!("b should find a's lock: {other:?}"),
    }
    // a renews (as a transaction would) and keeps it.
    for _ in 0..4 {
        sleep(RETRY_PERIOD * 2).await;
        assert_eq!(
            locks_a
                .renew(&lock_a.lease_name, "txn-a", LEASE_DURATION)
                .await
                .unwrap(),
            lock_a.generation
        );
    }

    // Cut off, a cannot renew; its lock lapses and b takes it.
    a.partition.set(true);
    assert!(
        locks_a
            .renew(&lock_a.lease_name, "txn-a", LEASE_DURATION)
            .await
            .is_err()
    );
    let started = Instant::now();
    let lock_b = loop {
        match locks_b.acquire(&web, "txn-b", LEASE_DURATION).await {
            Ok(lock) => break lock,
            Err(ResourceLockError::AlreadyLocked { .. }) => {}
            Err(e) => panic!("b's acquire failed: {e}"),
        }
        assert!(started.elapsed() < PATIENCE, "b never got the lock");
        sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lock_b.lease_name, lock_a.lease_name);
    assert!(lock_b.generation > lock_a.generation);

    // Reconnected, a's renewal is refused and its release is a no-op: b keeps the lock.
    a.partition.set(false);
    match locks_a
        .renew(&lock_a.lease_name, "txn-a", LEASE_DURATION)
        .await
    {
        Err(ResourceLockError::AlreadyLocked { holder, .. }) => assert_eq!(holder, "txn-b"),
        Err(ResourceLockError::LockExpired { .. }) => {}
        other => panic!("a's renewal should fail: {other:?}"),
    }
    locks_a.release(&lock_a.lease_name, "txn-a").await.unwrap();
    assert_eq!(
        locks_b
            .renew(&lock_b.lease_name, "txn-b", LEASE_DURATION)
            .await
            .unwrap(),
        lock_b.generation
    );
    a.manager.stop().await;
    b.manager.stop().await;
}

/// Events named after `object` in `namespace`, oldest first.
async fn events_of(config: &kube::Config, namespace: &str, object: &str) -> Vec<Event> {
    let api = Api::<Event>::namespaced(client(config), namespace);
    let params = ListParams::default().fields(&format!("involvedObject.name={object}"));
    let mut events = api.list(&params).await.expect("events list").items;
    events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn leadership_changes_are_recorded_as_events_on_the_lease() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "elect-events")
        .await
        .unwrap();
    let object = "events-controller-lock";
    let key = Key::new("election", "failover", "controller");
    let options = StoreOptions::default().object_for(key, object);
    let a = candidate(&config, &ns.name, options.clone());
    let b = candidate(&config, &ns.name, options);
    let events_a = EventRecorder::new(client(&config), &*ns.name, object, "cand-a");
    // b's recording is switched off.
    let events_b = EventRecorder::new(client(&config), &*ns.name, object, "cand-b").enabled(false);
    let elector_a = LeaderElector::new(
        &a.manager,
        Arc::clone(&a.clock),
        election("cand-a"),
        Callbacks::new()
            .on_started_leading(events_a.on_started_leading())
            .on_stopped_leading(events_a.on_stopped_leading()),
    )
    .unwrap();
    let elector_b = LeaderElector::new(
        &b.manager,
        Arc::clone(&b.clock),
        election("cand-b"),
        Callbacks::new()
            .on_started_leading(events_b.on_started_leading())
            .on_stopped_leading(events_b.on_stopped_leading()),
    )
    .unwrap();

    let guard_a = timeout(PATIENCE, elector_a.lock()).await.unwrap().unwrap();
    assert!(guard_a.release().await);
    let guard_b = timeout(PATIENCE, elector_b.lock()).await.unwrap().unwrap();
    assert!(guard_b.is_leading());

    // a's two events arrive (they are recorded in the background); b recorded none.
    let started = Instant::now();
    let events = loop {
        let events = events_of(&config, &ns.name, object).await;
        if events.len() >= 2 || started.elapsed() > PATIENCE {
            break events;
        }
        sleep(Duration::from_millis(100)).await;
    };
    let messages: Vec<&str> = events.iter().filter_map(|e| e.message.as_deref()).collect();
    assert_eq!(
        messages,
        [
            format!("cand-a {BECAME_LEADER}"),
            format!("cand-a {STOPPED_LEADING}")
        ],
        "{events:#?}"
    );
    for event in &events {
        assert_eq!(event.reason.as_deref(), Some(EVENT_REASON));
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        let involved = &event.involved_object;
        assert_eq!(involved.kind.as_deref(), Some("Lease"));
        assert_eq!(
            involved.api_version.as_deref(),
            Some("coordination.k8s.io/v1")
        );
        assert_eq!(involved.name.as_deref(), Some(object));
        assert_eq!(involved.namespace.as_deref(), Some(ns.name.as_str()));
    }
    // The Lease the events are about is the explicitly named one, held by b.
    let lease = lease_object(&config, &ns.name, object).await;
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("cand-b")
    );
    assert!(naming::is_dns1123_subdomain(object));
    // Recording directly returns the created event.
    let direct = events_a.record("says hello").await.unwrap().unwrap();
    assert_eq!(direct.message.as_deref(), Some("cand-a says hello"));
    assert!(events_b.record("says hello").await.unwrap().is_none());
    drop(guard_b);
    a.manager.stop().await;
    b.manager.stop().await;
}
