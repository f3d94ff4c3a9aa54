//! Sharing one Lease object with client-go's leader election, against a real API server.
//!
//! - `client_go_shaped_lease_*`: Lease objects written the way client-go's `LeaseLock` writes
//!   them (no lease-rs labels or annotations), through the plain API, and a [`LeaseObjectStore`]
//!   bound to them by name ([`StoreOptions::object_for`]).
//! - `rust_and_client_go_candidates_never_both_lead`: a real client-go v1.20.2 candidate
//!   (`tests/clientgo/main.go`, built by `tests/clientgo/build.sh` from Debian's kubernetes
//!   source package and cached beside the API server; `LEASE_CLIENTGO_BIN` names another
//!   binary) and a lease-manager `LeaderElector` on the same Lease: they take turns through a
//!   kill, a release and a graceful stop, never both lead, and each reports the other as the
//!   leader.
//!
//! Ignored by default (they need a server): `cargo xtask k8s up`, then
//! `eval "$(cargo xtask k8s env)"` and `cargo test -p lease-store-k8s -- --ignored`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff;
use kube::Api;
use kube::api::PostParams;
use lease_core::{Clock, DefaultSecretary, Generation, Key, Request, Store, SystemClock};
use lease_manager::{Callbacks, ElectionConfig, LeaderElector, Leadership, Manager, ManagerConfig};
use lease_store_k8s::naming::{ANNOTATION_CLAIM, ANNOTATION_GENERATION, LABEL_MANAGED_BY};
use lease_store_k8s::{LeaderElectionRecord, LeaseObjectStore, StoreOptions};
use tokio::time::{sleep, timeout};

use common::{NamespaceGuard, admin_config, client};

const PATIENCE: Duration = Duration::from_secs(30);

fn now_micros() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_microsecond(now.as_microsecond()).unwrap()
}

/// The generation annotation of `lease`: (generation, the leaseTransitions written with it).
fn generation_annotation(lease: &Lease) -> Option<(u64, i32)> {
    let text = lease
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_GENERATION)?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    Some((
        value["generation"].as_u64()?,
        i32::try_from(value["leaseTransitions"].as_i64()?).ok()?,
    ))
}

/// A Lease as client-go's `LeaseLock.Create` writes it.
fn client_go_lease(name: &str, holder: &str, secs: i32, transitions: i32) -> Lease {
    let now = now_micros();
    let mut lease = Lease::default();
    lease.metadata.name = Some(name.to_owned());
    lease.spec = Some(LeaseSpec::from(LeaderElectionRecord {
        holder_identity: Some(holder.to_owned()),
        lease_duration_seconds: Some(secs),
        acquire_time: Some(now),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..LeaderElectionRecord::default()
    }));
    lease
}

fn store_for(config: &kube::Config, namespace: &str, key: &Key, object: &str) -> LeaseObjectStore {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    LeaseObjectStore::with_options(
        client(config),
        namespace,
        clock,
        StoreOptions::default().object_for(key.clone(), object),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn client_go_shaped_lease_is_held_by_its_holder_until_it_stops_changing() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "clientgo-shape")
        .await
        .unwrap();
    let leases = Api::<Lease>::namespaced(client(&config), &ns.name);
    let object = "my-controller-lock";
    let key = Key::new("election", "prod", "controller");
    let created = leases
        .create(
            &PostParams::default(),
            &client_go_lease(object, "go-1", 3, 4),
        )
        .await
        .unwrap();
    let mut store = store_for(&config, &ns.name, &key, object);
    let request = Request::new("rust-1", Duration::from_secs(3));

    // (a) Held by its holderIdentity: a claim is refused, snapshots name go-1 with its
    // leaseTransitions as the generation (client-go wrote no generation annotation).
    let err = store.claim_lease(&key, &request).await.unwrap_err();
    assert!(err.is_held(), "{err}");
    let info = &store.leases(std::slice::from_ref(&key)).await.unwrap()[&key];
    assert_eq!(info.holder, "go-1");
    assert_eq!(info.generation, Generation(4));
    assert_eq!(info.metadata, None);
    let group = store.lease_group("election", "prod").await.unwrap();
    assert_eq!(group[&key].holder, "go-1");

    // client-go renews (a conditional update of renewTime) 2 s in: the lease stays held 3 s
    // past that renewal as this process observed it, though the first record is older.
    sleep(Duration::from_secs(2)).await;
    let mut renewed = created.clone();
    if let Some(spec) = renewed.spec.as_mut() {
        spec.renew_time = Some(MicroTime(now_micros()));
    }
    let renewed = leases
        .replace(object, &PostParams::default(), &renewed)
        .await
        .unwrap();
    let renewed_at = Instant::now();
    sleep(Duration::from_millis(1500)).await;
    assert!(
        store
            .claim_lease(&key, &request)
            .await
            .unwrap_err()
            .is_held(),
        "a renewed client-go lease must stay held"
    );

    // (c) client-go's stale write loses: its update must carry the resourceVersion it read.
    let mut stale = created.clone();
    if let Some(spec) = stale.spec.as_mut() {
        spec.holder_identity = Some("go-2".into());
    }
    let conflict = leases
        .replace(object, &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, kube::Error::Api(ref s) if s.code == 409),
        "{conflict}"
    );

    // Unchanged for its full duration: expired; our claim takes it over.
    let info = loop {
        match store.claim_lease(&key, &request).await {
            Ok(info) => break info,
            Err(e) if e.is_held() => {}
            Err(e) => panic!("claim failed: {e}"),
        }
        assert!(renewed_at.elapsed() < PATIENCE, "never expired");
        sleep(Duration::from_millis(200)).await;
    };
    assert!(renewed_at.elapsed() >= Duration::from_secs(3));
    assert_eq!(info.holder, "rust-1");
    assert!(info.generation > Generation(4));

    // (b) What client-go reads: our identity, whole seconds, both times, one more transition.
    let ours = leases.get(object).await.unwrap();
    let record = LeaderElectionRecord::from_lease(&ours);
    assert_eq!(record.holder(), Some("rust-1"));
    assert_eq!(record.lease_duration_seconds, Some(3));
    assert_eq!(record.lease_transitions, Some(5));
    let acquired = record.acquire_time.expect("acquireTime");
    let renewed_time = record.renew_time.expect("renewTime");
    assert!(acquired > renewed.spec.unwrap().renew_time.unwrap().0);
    assert!(renewed_time >= acquired);
    assert!(
        ours.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_CLAIM))
    );
    assert_eq!(
        ours.metadata.labels.as_ref().unwrap()[LABEL_MANAGED_BY],
        "lease-rs"
    );
    // Renewals change renewTime (client-go restarts its observed expiry on every change).
    sleep(Duration::from_millis(10)).await;
    store.extend_lease(&key, &request).await.unwrap();
    let again = LeaderElectionRecord::from_lease(&leases.get(object).await.unwrap());
    assert!(again.renew_time > record.renew_time);
    assert_eq!(again.acquire_time, record.acquire_time);
    assert_eq!(again.lease_transitions, Some(5));

    // A revoke is client-go's release: empty holder, transitions kept.
    store.revoke_lease(&key, "rust-1").await.unwrap();
    let released = LeaderElectionRecord::from_lease(&leases.get(object).await.unwrap());
    assert_eq!(released.holder_identity.as_deref(), Some(""));
    assert_eq!(released.lease_transitions, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn client_go_shaped_lease_changes_wake_the_watch() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "clientgo-watch")
        .await
        .unwrap();
    let leases = Api::<Lease>::namespaced(client(&config), &ns.name);
    let object = "watched.controller.lock";
    let key = Key::new("election", "prod", "watched");
    let created = leases
        .create(
            &PostParams::default(),
            &client_go_lease(object, "go-1", 15, 1),
        )
        .await
        .unwrap();
    let mut store = store_for(&config, &ns.name, &key, object);
    let mut changes = store.change_notifier().expect("a watch");
    // Wait for the initial list to be reported, then for client-go's release to arrive.
    timeout(PATIENCE, changes.changed()).await.unwrap().unwrap();
    changes.borrow_and_update();
    // The bound object is in the synced cache: the snapshot names its holder without a read.
    assert_eq!(store.leases(&[]).await.unwrap()[&key].holder, "go-1");
    let mut released = created;
    released.spec = Some(LeaseSpec::from(LeaderElectionRecord {
        holder_identity: Some(String::new()),
        lease_duration_seconds: Some(1),
        acquire_time: Some(now_micros()),
        renew_time: Some(now_micros()),
        lease_transitions: Some(1),
        ..LeaderElectionRecord::default()
    }));
    leases
        .replace(object, &PostParams::default(), &released)
        .await
        .unwrap();
    timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("the watch reports client-go's release")
        .unwrap();
    // Released by client-go: free for us at once, with a greater generation.
    let info = store
        .claim_lease(&key, &Request::new("rust-1", Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(info.generation > Generation(1));
}

#[tokio::test]
async fn bad_bindings_are_validation_errors_before_any_request() {
    // A client that fails every request: validation must not get that far.
    let (service, _handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let client = kube::Client::new(service, "default");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let (k1, k2, k3) = (
        Key::new("n", "m", "one"),
        Key::new("n", "m", "two"),
        Key::new("n", "m", "three"),
    );
    let options = StoreOptions::default()
        .object_for(k1.clone(), "Not_A_Name")
        .object_for(k2.clone(), "shared")
        .object_for(k3.clone(), "shared");
    let mut store = LeaseObjectStore::with_options(client, "ns", clock, options);
    let request = Request::new("h", Duration::from_secs(1));
    for key in [&k1, &k2, &k3] {
        let err = store.claim_lease(key, &request).await.unwrap_err();
        assert!(err.is_validation(), "{key}: {err}");
        assert!(
            store
                .leases(std::slice::from_ref(key))
                .await
                .unwrap_err()
                .is_validation()
        );
    }
    assert!(
        store
            .claim_lease(&k1, &request)
            .await
            .unwrap_err()
            .to_string()
            .contains("Not_A_Name")
    );
    assert!(
        store
            .revoke_lease(&k2, "h")
            .await
            .unwrap_err()
            .to_string()
            .contains("several keys")
    );
}

// ---------------------------------------------------------------------------------------------
// A real client-go candidate.

/// The client-go candidate binary: `LEASE_CLIENTGO_BIN`, else built (once, cached) by
/// `tests/clientgo/build.sh`.
fn clientgo_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("LEASE_CLIENTGO_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clientgo/build.sh");
    let out = Command::new("sh")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}): it builds client-go's leader-election candidate from Debian's \
         kubernetes source package (needs apt-get with deb-src, as `cargo xtask k8s install` \
         sets up); or set LEASE_CLIENTGO_BIN",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().expect("the binary's path").trim())
}

/// What the test saw, in order.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<(Instant, String)>>>);

impl Timeline {
    fn push(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push((Instant::now(), what.into()));
    }
    fn find(&self, what: &str) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, w)| w == what)
            .map(|(t, _)| *t)
    }
    fn last(&self, what: &str) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, w)| w == what)
            .map(|(t, _)| *t)
    }
    async fn wait(&self, what: &str) -> Instant {
        let started = Instant::now();
        loop {
            if let Some(t) = self.find(what) {
                return t;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "never saw {what:?}:\n{}",
                self.dump()
            );
            sleep(Duration::from_millis(20)).await;
        }
    }
    fn events(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().clone()
    }
    fn dump(&self) -> String {
        let events = self.events();
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

/// A running client-go candidate; its stdout lines go to the timeline as `go: <line>`.
struct GoCandidate {
    child: Child,
}

impl GoCandidate {
    fn start(
        bin: &PathBuf,
        kubeconfig: &str,
        namespace: &str,
        object: &str,
        id: &str,
        timeline: &Timeline,
    ) -> GoCandidate {
        let mut child = Command::new(bin)
            .args(["-kubeconfig", kubeconfig, "-id", id])
            .args([
                "-lease-lock-name",
                object,
                "-lease-lock-namespace",
                namespace,
            ])
            .args(["-lease-duration", "3s", "-renew-deadline", "2s"])
            .args(["-retry-period", "500ms", "-v", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout");
        let timeline = timeline.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                timeline.push(format!("go: {line}"));
            }
        });
        GoCandidate { child }
    }

    /// Asks it to stop (stdin closes: it cancels its context, so releases the lease).
    fn stop(&mut self) {
        drop(self.child.stdin.take());
    }
}

impl Drop for GoCandidate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Who led when, from the timeline: `(who, from, to)`. client-go leads from its `STARTED`
/// line until its `STOPPED` line or the moment the test killed or stopped it (its context is
/// cancelled then, so its work has stopped), whichever is first; the elector from its
/// `on_started_leading` to its `on_stopped_leading` callback.
fn terms(timeline: &Timeline, end: Instant) -> Vec<(String, Instant, Instant)> {
    let mut out = Vec::new();
    let mut open: Vec<(String, Instant)> = Vec::new();
    for (t, what) in timeline.events() {
        let (who, starts) = if let Some(id) = what.strip_prefix("go: STARTED ") {
            (id.to_owned(), true)
        } else if let Some(id) = what.strip_prefix("go: STOPPED ") {
            (id.to_owned(), false)
        } else if let Some(id) = what.strip_prefix("halt ") {
            (id.to_owned(), false)
        } else if let Some(id) = what.strip_prefix("rust started ") {
            (id.to_owned(), true)
        } else if let Some(id) = what.strip_prefix("rust stopped ") {
            (id.to_owned(), false)
        } else {
            continue;
        };
        if starts {
            open.push((who, t));
        } else if let Some(i) = open.iter().position(|(w, _)| *w == who) {
            let (who, from) = open.remove(i);
            out.push((who, from, t));
        }
    }
    out.extend(open.into_iter().map(|(who, from)| (who, from, end)));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn rust_and_client_go_candidates_never_both_lead() {
    let config = admin_config().await;
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let bin = clientgo_binary();
    let ns = NamespaceGuard::create(&config, "clientgo-interop")
        .await
        .unwrap();
    let object = "shared-controller-lock";
    let timeline = Timeline::default();

    // The Rust candidate: a manager over a LeaseObjectStore bound to the shared object.
    let election = ElectionConfig::new("election", "interop", "controller", "rust-b").with_timing(
        Duration::from_secs(3),
        Duration::from_secs(2),
        Duration::from_millis(500),
    );
    let key = Key::new(&*election.namespace, &*election.model, &*election.lease);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let store = LeaseObjectStore::with_options(
        client(&config),
        &*ns.name,
        Arc::clone(&clock),
        StoreOptions::default().object_for(key, object),
    );
    let manager = Manager::start(
        ManagerConfig::new(store, Arc::clone(&clock))
            .with_default_secretary(Arc::new(DefaultSecretary)),
    )
    .unwrap();
    let (t1, t2, t3) = (timeline.clone(), timeline.clone(), timeline.clone());
    let callbacks = Callbacks::new()
        .on_started_leading(move |_| t1.push("rust started rust-b"))
        .on_stopped_leading(move || t2.push("rust stopped rust-b"))
        .on_new_leader(move |leader| t3.push(format!("rust sees {leader}")));
    let elector = LeaderElector::new(&manager, Arc::clone(&clock), election, callbacks).unwrap();

    // The Lease object's holder, polled throughout.
    let leases = Api::<Lease>::namespaced(client(&config), &ns.name);
    let holders = Arc::new(Mutex::new(Vec::<String>::new()));
    let poller = tokio::spawn({
        let (leases, holders) = (leases.clone(), Arc::clone(&holders));
        async move {
            loop {
                if let Ok(Some(lease)) = leases.get_opt(object).await {
                    let holder = LeaderElectionRecord::from_lease(&lease)
                        .holder_identity
                        .unwrap_or_default();
                    let mut seen = holders.lock().unwrap();
                    if seen.last() != Some(&holder) {
                        seen.push(holder);
                    }
                }
                sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // 1. client-go leads first; the Rust candidate follows it.
    let mut go_a = GoCandidate::start(&bin, &kubeconfig, &ns.name, object, "go-a", &timeline);
    timeline.wait("go: STARTED go-a").await;
    let rust_lock = tokio::spawn({
        let elector = elector.clone();
        async move { elector.lock().await }
    });
    let mut state = elector.leadership();
    timeout(
        PATIENCE,
        state.wait_for(|l| {
            *l == Leadership::Following {
                leader: "go-a".into(),
            }
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("rust never followed go-a:\n{}", timeline.dump()))
    .unwrap();
    timeline.wait("rust sees go-a").await;
    sleep(Duration::from_secs(7)).await;
    assert!(!elector.is_leader(), "{}", timeline.dump());
    let before = LeaderElectionRecord::from_lease(&leases.get(object).await.unwrap());
    assert_eq!(before.holder(), Some("go-a"));

    // 2. client-go is killed (no release): Rust takes over once the record stops changing.
    timeline.push("halt go-a");
    go_a.child.kill().unwrap();
    let guard = timeout(PATIENCE, rust_lock)
        .await
        .unwrap_or_else(|_| panic!("rust never took over:\n{}", timeline.dump()))
        .unwrap()
        .unwrap();
    let took = LeaderElectionRecord::from_lease(&leases.get(object).await.unwrap());
    assert_eq!(took.holder(), Some("rust-b"));
    // client-go's counter: one more; our generation: in the annotation, beside the counter.
    assert_eq!(
        took.lease_transitions,
        before.lease_transitions.map(|t| t + 1)
    );
    let first = guard.generation();
    assert_eq!(
        generation_annotation(&leases.get(object).await.unwrap()),
        Some((first.get(), took.lease_transitions.unwrap()))
    );

    // 3. A new client-go candidate follows Rust.
    let mut go_c = GoCandidate::start(&bin, &kubeconfig, &ns.name, object, "go-c", &timeline);
    timeline.wait("go: LEADER rust-b").await;
    sleep(Duration::from_secs(7)).await;
    assert!(
        timeline.find("go: STARTED go-c").is_none(),
        "client-go took a lease Rust renews:\n{}",
        timeline.dump()
    );
    assert!(guard.is_leading());

    // 4. Rust releases: client-go takes over, and Rust, contending again, follows it. (Rust
    // contends only once client-go has taken over: a Rust candidate woken by the release would
    // usually win the race against client-go's 500 ms polling.)
    assert!(guard.release().await);
    timeline.wait("go: STARTED go-c").await;
    // client-go took over keeping our annotation and counting one more transition: a store
    // that never saw our claim reads the generation as one more than ours, not as the
    // counter (which would go backwards) nor as ours (which would not increase).
    let go_c_record = leases.get(object).await.unwrap();
    assert_eq!(
        LeaderElectionRecord::from_lease(&go_c_record).lease_transitions,
        took.lease_transitions.map(|t| t + 1)
    );
    assert_eq!(
        generation_annotation(&go_c_record),
        Some((first.get(), took.lease_transitions.unwrap()))
    );
    let mut reader = store_for(
        &config,
        &ns.name,
        &Key::new("election", "interop", "controller"),
        object,
    );
    let seen = reader
        .leases(&[Key::new("election", "interop", "controller")])
        .await
        .unwrap();
    let go_c_term = seen
        .values()
        .next()
        .unwrap_or_else(|| panic!("go-c's term not seen:\n{}", timeline.dump()));
    assert_eq!(go_c_term.holder, "go-c");
    assert_eq!(go_c_term.generation, Generation(first.get() + 1));
    let rust_lock = tokio::spawn({
        let elector = elector.clone();
        async move { elector.lock().await }
    });
    timeline.wait("rust sees go-c").await;
    timeout(
        PATIENCE,
        state.wait_for(|l| {
            *l == Leadership::Following {
                leader: "go-c".into(),
            }
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("rust never followed go-c:\n{}", timeline.dump()))
    .unwrap();
    sleep(Duration::from_secs(4)).await;
    assert!(!elector.is_leader(), "{}", timeline.dump());

    // 5. client-go stops gracefully (releases): Rust takes over at once.
    timeline.push("halt go-c");
    go_c.stop();
    let guard = timeout(PATIENCE, rust_lock)
        .await
        .unwrap_or_else(|_| panic!("rust never took over again:\n{}", timeline.dump()))
        .unwrap()
        .unwrap();
    timeline.wait("go: EXIT go-c").await;
    let last = LeaderElectionRecord::from_lease(&leases.get(object).await.unwrap());
    assert_eq!(last.holder(), Some("rust-b"));
    assert!(last.lease_transitions > took.lease_transitions);
    // And our next term is above client-go's.
    assert!(guard.generation() > go_c_term.generation);
    poller.abort();

    // Never two leaders: no two terms overlap.
    let terms = terms(&timeline, Instant::now());
    let dump = timeline.dump();
    println!("{dump}");
    assert_eq!(terms.len(), 4, "{terms:?}\n{dump}");
    for (i, (who, from, to)) in terms.iter().enumerate() {
        for (other, from2, to2) in &terms[i + 1..] {
            assert!(
                to <= from2 || to2 <= from,
                "{who} and {other} both led:\n{dump}"
            );
        }
    }
    // Each saw the other as the leader; the object named each holder in turn.
    assert!(timeline.last("go: LEADER rust-b").is_some());
    assert!(timeline.find("rust sees go-a").is_some() && timeline.find("rust sees go-c").is_some());
    let holders = holders.lock().unwrap().clone();
    for who in ["go-a", "rust-b", "go-c"] {
        assert!(holders.iter().any(|h| h == who), "{holders:?}");
    }
    drop(guard);
    manager.stop().await;
}
