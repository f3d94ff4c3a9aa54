//! The `metrics` feature: after a scenario on the fake clock, the exported counters, gauges and
//! histograms read back from a `metrics-util` debugging recorder installed for this thread
//! only (each test runs on a current-thread runtime, so the worker and every spawned task
//! record into it).

mod common;

use std::sync::Arc;

use common::*;
use lease_core::{DefaultSecretary, Facades as _, Leaser as _, PathKey};
use lease_manager::{
    Callbacks, ElectionConfig, Jitter, LeaderElector, Leadership, LeaserConfig, Manager,
    ManagerConfig, ManagerLeaser, RetryPolicy, metric,
};
use lease_testkit::{FakeClock, InMemoryStore};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// One snapshot of the recorder (taking it resets the recorder's values, so each test takes
/// exactly one, at the end).
struct Readings(Vec<(CompositeKey, DebugValue)>);

impl Readings {
    fn take(snapshotter: &Snapshotter) -> Readings {
        Readings(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| (key, value))
                .collect(),
        )
    }

    /// The value of `name` with exactly `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        want.sort();
        self.0.iter().find_map(|(key, value)| {
            let mut have: Vec<(String, String)> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            have.sort();
            (key.key().name() == name && have == want).then_some(value)
        })
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.find(name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            None => 0,
            Some(other) => panic!("{name} {labels:?} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(name, labels) {
            Some(DebugValue::Gauge(v)) => v.into_inner(),
            other => panic!("{name} {labels:?} is not a recorded gauge: {other:?}"),
        }
    }

    fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        match self.find(name, labels) {
            Some(DebugValue::Histogram(values)) => values.len(),
            None => 0,
            Some(other) => panic!("{name} {labels:?} is not a histogram: {other:?}"),
        }
    }
}

#[tokio::test]
async fn manager_counters_gauges_and_latencies_after_a_scenario() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let clock = FakeClock::new();
    let store = ScriptStore::new(&clock);
    // Ops in order: claim a, extend a, claim b (Timeout), its retry (Timeout), claim c,
    // revoke c.
    store.fail_ops([
        None,
        None,
        Some(Fail::Timeout),
        Some(Fail::Timeout),
        None,
        None,
    ]);
    let config = config(store.take_store(), &clock).with_retry(RetryPolicy {
        attempts: 2,
        jitter: Jitter::None,
        ..RetryPolicy::default()
    });
    let manager = Manager::start(config).unwrap();
    let claimer = manager.claimer(NS, MODEL).unwrap();
    let revoker = manager.revoker(NS, MODEL).unwrap();

    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    claimer.claim("a", req("h1", secs(10))).await.unwrap();
    let denied = claimer.claim("a", req("h2", secs(10))).await.unwrap_err();
    assert!(denied.is_claim_denied(), "{denied}");

    let flaky = {
        let claimer = Arc::clone(&claimer);
        tokio::spawn(async move { claimer.claim("b", req("h1", secs(10))).await })
    };
    until("the retry is scheduled", || manager.report().retries == 1).await;
    clock.wait_advance(secs(1), 1).await;
    let timed_out = flaky.await.unwrap().unwrap_err();
    assert!(timed_out.is_timeout(), "{timed_out}");

    claimer.claim("c", req("h1", secs(10))).await.unwrap();
    revoker.revoke("c", "h1").await.unwrap();
    // One more round trip, so the worker has exported its gauges after the revoke.
    manager.reader(NS, MODEL).unwrap().leases().await.unwrap();

    let report = manager.report();
    let m = Readings::take(&snapshotter);
    let ns = ("namespace", NS);
    let claims = |outcome| m.counter(metric::CLAIMS_TOTAL, &[ns, ("outcome", outcome)]);
    assert_eq!(claims("claimed"), 2, "a and c");
    assert_eq!(claims("extended"), 1);
    assert_eq!(claims("denied"), 1);
    assert_eq!(claims("timeout"), 1);
    assert_eq!(claims("error"), 0);
    assert_eq!(m.counter(metric::RETRIES_TOTAL, &[ns]), 1);
    assert_eq!(m.counter(metric::TIMEOUTS_TOTAL, &[ns]), 1);
    assert_eq!(m.counter(metric::REVOKES_TOTAL, &[ns]), 1);
    assert_eq!(m.counter(metric::STORE_ERRORS_TOTAL, &[]), 0);

    // The unlabelled report agrees with the labelled metrics.
    assert_eq!(
        (
            report.claims,
            report.extends,
            report.denials,
            report.retries
        ),
        (2, 1, 1, 1)
    );
    // Every store call was timed, by call.
    let applies = m.histogram_count(metric::STORE_LATENCY_SECONDS, &[("call", "apply")]);
    assert_eq!(applies, store.applies());
    assert_eq!(applies, 6);
    let reads = m.histogram_count(metric::STORE_LATENCY_SECONDS, &[("call", "leases")]);
    let groups = m.histogram_count(metric::STORE_LATENCY_SECONDS, &[("call", "lease_group")]);
    assert_eq!((reads, groups), (1, 1), "the re-read of b, the group read");
    assert_eq!(applies + reads + groups, report.store_calls as usize);

    // a is held; c was revoked; b was never held.
    assert_eq!(m.gauge(metric::LEASES_HELD, &[]), 1.0);
    assert_eq!(m.gauge(metric::LEASES_KNOWN, &[]), 1.0);
    assert_eq!(m.gauge(metric::WAITERS, &[]), 0.0);
}

#[tokio::test]
async fn stopping_the_manager_takes_its_leases_off_the_gauges() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let clock = FakeClock::new();
    let manager = start(InMemoryStore::new(clock.as_clock()), &clock);
    let claimer = manager.claimer(NS, MODEL).unwrap();
    for lease in ["a", "b", "c"] {
        claimer.claim(lease, req("h1", secs(10))).await.unwrap();
    }
    manager.stop().await;

    let m = Readings::take(&snapshotter);
    let ns = ("namespace", NS);
    assert_eq!(
        m.counter(metric::CLAIMS_TOTAL, &[ns, ("outcome", "claimed")]),
        3
    );
    assert_eq!(m.gauge(metric::LEASES_HELD, &[]), 0.0);
    assert_eq!(m.gauge(metric::LEASES_KNOWN, &[]), 0.0);
}

#[tokio::test]
async fn leadership_per_elector_through_a_handover() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let clock = FakeClock::new();
    let manager = Manager::start(
        ManagerConfig::new(InMemoryStore::new(clock.as_clock()), clock.as_clock())
            .with_default_secretary(Arc::new(DefaultSecretary)),
    )
    .unwrap();
    let elector = |identity: &str| {
        let config = ElectionConfig::new("election", "prod", "controller", identity)
            .with_name(format!("controller-{identity}"));
        LeaderElector::new(&manager, clock.as_clock(), config, Callbacks::new()).unwrap()
    };
    let a = elector("pod-a");
    let b = elector("pod-b");

    let guard_a = a.lock().await.unwrap();
    let b_task = {
        let b = b.clone();
        tokio::spawn(async move { b.lock().await })
    };
    until("pod-b follows", || {
        matches!(*b.leadership().borrow(), Leadership::Following { .. })
    })
    .await;
    assert!(guard_a.release().await);
    let guard_b = b_task.await.unwrap().unwrap();
    assert!(guard_b.is_leading());

    let m = Readings::take(&snapshotter);
    let a_label = ("elector", "controller-pod-a");
    let b_label = ("elector", "controller-pod-b");
    assert_eq!(m.gauge(metric::LEADER, &[a_label]), 0.0);
    assert_eq!(m.gauge(metric::LEADER, &[b_label]), 1.0);
    let changes = |e, t| m.counter(metric::LEADERSHIP_CHANGES_TOTAL, &[e, ("transition", t)]);
    assert_eq!(
        (changes(a_label, "started"), changes(a_label, "stopped")),
        (1, 1)
    );
    assert_eq!(
        (changes(b_label, "started"), changes(b_label, "stopped")),
        (1, 0)
    );
    // Two claims (one per term), one denial of pod-b while pod-a led.
    let ns = ("namespace", "election");
    assert_eq!(
        m.counter(metric::CLAIMS_TOTAL, &[ns, ("outcome", "claimed")]),
        2
    );
    assert!(m.counter(metric::CLAIMS_TOTAL, &[ns, ("outcome", "denied")]) >= 1);
    drop(guard_b);
}

#[tokio::test]
async fn leaser_leases_held_and_lost() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let clock = FakeClock::new();
    let manager = start(InMemoryStore::new(clock.as_clock()), &clock);
    let leaser = ManagerLeaser::new(
        &manager,
        clock.as_clock(),
        LeaserConfig::new("leaser", "prod", "runner-a"),
    )
    .unwrap();
    let k1 = PathKey::system(["jobs", "one"]).unwrap();
    let k2 = PathKey::system(["jobs", "two"]).unwrap();
    let (g1, _lost1) = leaser.acquire_lease(&k1, secs(30), None).await.unwrap();
    let (_g2, lost2) = leaser.acquire_lease(&k2, secs(30), None).await.unwrap();
    g1.release().await.unwrap();

    // The manager stops: k2's next renewal is refused, and the lease is lost.
    manager.stop().await;
    clock.advance(secs(10));
    until("k2 is lost", || lost2.is_cancelled()).await;

    let m = Readings::take(&snapshotter);
    let ns = ("namespace", "leaser");
    assert_eq!(m.gauge(metric::LEASER_LEASES_HELD, &[ns]), 0.0);
    assert_eq!(m.counter(metric::LEASER_LOST_TOTAL, &[ns]), 1);
    assert_eq!(
        m.counter(metric::CLAIMS_TOTAL, &[ns, ("outcome", "claimed")]),
        2
    );
    assert_eq!(m.counter(metric::REVOKES_TOTAL, &[ns]), 1);
}
