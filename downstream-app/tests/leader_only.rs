//! The service's leader-only behaviour, tested with `lease-testkit` alone: the fake clock moves
//! only when a test says so, leases live in an in-memory store, and no server or real time is
//! involved. Each test shows one of the testkit's doubles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use downstream_app::{ExportJob, ExportOutcome, Exporter, LEASE, Outbox, Reporter, Tick};
use lease_core::{
    CancellationToken, DefaultSecretary, Error, Generation, Leaser as _, LeaserExt as _,
};
use lease_manager::{Manager, ManagerConfig};
use lease_testkit::{FakeClock, FakeLeaser, FakeManager, InMemoryStore, MockStore};
use tokio::sync::Semaphore;

const INTERVAL: Duration = Duration::from_secs(10);

fn reporter(
    manager: &dyn lease_core::Facades,
    identity: &str,
    clock: &FakeClock,
    outbox: &Arc<Outbox>,
) -> Reporter {
    Reporter::new(
        manager,
        "reports",
        "prod",
        identity,
        clock.as_clock(),
        Arc::clone(outbox),
        INTERVAL,
    )
    .expect("the fake manager accepts the namespace")
}

/// The fake facades (`FakeManager`): only the leader publishes; a follower takes over once the
/// leader's lease expires on the fake clock, and the outbox refuses the old leader after that.
#[tokio::test]
async fn only_the_leader_publishes_and_a_follower_takes_over_after_expiry() {
    let clock = FakeClock::new();
    let manager = FakeManager::new(clock.clone());
    let outbox = Arc::new(Outbox::new());
    let a = reporter(&manager, "copy-a", &clock, &outbox);
    let b = reporter(&manager, "copy-b", &clock, &outbox);

    let first = a.tick().await.unwrap();
    let Tick::Published { generation, n: 1 } = first else {
        panic!("copy-a should lead: {first:?}");
    };
    assert_eq!(
        b.tick().await.unwrap(),
        Tick::Standby {
            leader: Some("copy-a".into())
        }
    );
    // A renewal keeps the generation.
    clock.advance(INTERVAL);
    assert_eq!(
        a.tick().await.unwrap(),
        Tick::Published { generation, n: 2 }
    );

    // copy-a stops ticking (say it hangs) for the whole lease: copy-b takes over.
    clock.advance(INTERVAL * 3);
    let Tick::Published {
        generation: next, ..
    } = b.tick().await.unwrap()
    else {
        panic!("copy-b should lead once copy-a's lease expired");
    };
    assert!(next > generation);
    assert_eq!(
        a.tick().await.unwrap(),
        Tick::Standby {
            leader: Some("copy-b".into())
        }
    );

    // Had copy-a published with its old generation, the outbox would have refused it.
    let stale = outbox.publish(generation, "late report from copy-a".into());
    assert_eq!(stale.unwrap_err().highest, next);
    let generations: Vec<Generation> = outbox.reports().into_iter().map(|(g, _)| g).collect();
    assert_eq!(generations, [generation, generation, next]);
}

/// `FakeClock::wait_advance`: the run loop ticks once per interval, exactly when the clock
/// says, and steps down on shutdown so another copy leads at once.
#[tokio::test]
async fn run_ticks_on_the_clock_and_steps_down_on_shutdown() {
    let clock = FakeClock::new();
    let manager = FakeManager::new(clock.clone());
    let outbox = Arc::new(Outbox::new());
    let a = Arc::new(reporter(&manager, "copy-a", &clock, &outbox));
    let shutdown = CancellationToken::new();
    let run = {
        let (a, shutdown) = (Arc::clone(&a), shutdown.clone());
        tokio::spawn(async move { a.run(shutdown).await })
    };

    // Each interval: the loop is asleep on the clock (one sleeper), the test moves time.
    for _ in 0..3 {
        clock.wait_advance(INTERVAL, 1).await;
    }
    clock.wait_for_sleepers(1).await;
    assert_eq!(outbox.reports().len(), 4, "one report per tick, none early");
    shutdown.cancel();
    let ticks = run.await.unwrap().unwrap();
    assert_eq!(ticks.len(), 4);
    assert!(ticks.iter().all(|t| matches!(t, Tick::Published { .. })));

    // copy-a revoked on the way out: copy-b leads without waiting for expiry.
    let b = reporter(&manager, "copy-b", &clock, &outbox);
    assert!(matches!(b.tick().await.unwrap(), Tick::Published { .. }));
}

/// The real manager over the `InMemoryStore`, on the fake clock: the same behaviour through
/// the worker that production uses.
#[tokio::test]
async fn the_real_manager_over_the_in_memory_store() {
    let clock = FakeClock::new();
    let manager = Manager::start(
        ManagerConfig::new(InMemoryStore::new(clock.as_clock()), clock.as_clock())
            .with_secretary("reports", Arc::new(DefaultSecretary)),
    )
    .unwrap();
    let outbox = Arc::new(Outbox::new());
    let a = reporter(&manager, "copy-a", &clock, &outbox);
    let b = reporter(&manager, "copy-b", &clock, &outbox);

    assert!(matches!(
        a.tick().await.unwrap(),
        Tick::Published { n: 1, .. }
    ));
    assert!(matches!(b.tick().await.unwrap(), Tick::Standby { .. }));
    clock.advance(INTERVAL * 3);
    assert!(matches!(
        b.tick().await.unwrap(),
        Tick::Published { n: 1, .. }
    ));
    let report = manager.report();
    assert_eq!((report.claims, report.denials), (2, 1));
    manager.stop().await;
    assert!(a.tick().await.unwrap_err().is_aborted());
}

/// `MockStore`: a failing store is an error for the service, never leadership, and nothing is
/// published.
#[tokio::test]
async fn a_failing_store_publishes_nothing() {
    let clock = FakeClock::new();
    let mut store = MockStore::new();
    store.expect_change_notifier().returning(|| None);
    store.expect_apply().times(1).returning(|ops| {
        ops.iter()
            .map(|_| Err(Error::store_msg("disk full")))
            .collect()
    });
    let manager = Manager::start(
        ManagerConfig::new(store, clock.as_clock())
            .with_secretary("reports", Arc::new(DefaultSecretary)),
    )
    .unwrap();
    let outbox = Arc::new(Outbox::new());
    let a = reporter(&manager, "copy-a", &clock, &outbox);

    let err = a.tick().await.unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(!err.is_claim_denied());
    assert!(outbox.reports().is_empty());
    manager.stop().await;
}

/// `FakeLeaser`: an export runs under its lease, with its metadata, and releases it.
#[tokio::test]
async fn an_export_holds_its_lease_with_metadata_and_releases_it() {
    let leaser = FakeLeaser::new(FakeClock::new());
    let exporter = Exporter::new(Arc::new(leaser.clone()), "exporter-1");
    let key = Exporter::key("orders").unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));

    let outcome = exporter
        .export("orders", 3, |chunk| {
            let (leaser, key, seen) = (leaser.clone(), key.clone(), Arc::clone(&seen));
            async move {
                let info = leaser.lease_info::<ExportJob>(&key).await.unwrap().unwrap();
                seen.lock().unwrap().push((chunk, info.metadata.unwrap()));
            }
        })
        .await
        .unwrap();

    assert_eq!(outcome, ExportOutcome::Done { chunks: 3 });
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|(_, job)| job.dataset == "orders" && job.exporter == "exporter-1")
    );
    assert!(!leaser.is_held(&key), "released at the end");
}

/// `FakeLeaser::lose`: the export stops at once when its lease is lost, after exactly the
/// chunks that were done.
#[tokio::test]
async fn an_export_stops_when_its_lease_is_lost() {
    let leaser = FakeLeaser::new(FakeClock::new());
    let exporter = Exporter::new(Arc::new(leaser.clone()), "exporter-1");
    let key = Exporter::key("orders").unwrap();
    let go = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let export = {
        let (go, done) = (Arc::clone(&go), Arc::clone(&done));
        tokio::spawn(async move {
            exporter
                .export("orders", 10, |_| {
                    let (go, done) = (Arc::clone(&go), Arc::clone(&done));
                    async move {
                        go.acquire().await.unwrap().forget();
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .await
        })
    };

    go.add_permits(2);
    while done.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    assert!(leaser.lose(&key).await, "the export held the lease");
    let outcome = export.await.unwrap().unwrap();
    assert_eq!(outcome, ExportOutcome::Lost { chunks: 2 });
    assert_eq!(done.load(Ordering::SeqCst), 2, "no chunk after the loss");
}

/// A second exporter finds the dataset busy.
#[tokio::test]
async fn a_busy_dataset_is_left_alone() {
    let leaser = FakeLeaser::new(FakeClock::new());
    let key = Exporter::key("orders").unwrap();
    let (_guard, _lost) = leaser
        .acquire_lease(&key, Duration::from_secs(30), None)
        .await
        .unwrap();
    let exporter = Exporter::new(Arc::new(leaser.clone()), "exporter-2");
    let outcome = exporter
        .export("orders", 3, |_| async {
            panic!("must not export a busy dataset")
        })
        .await
        .unwrap();
    assert_eq!(outcome, ExportOutcome::Busy);
    assert_eq!(LEASE, "reporter");
}
