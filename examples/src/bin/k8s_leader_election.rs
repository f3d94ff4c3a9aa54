//! Leader election on Kubernetes with a graceful handover.
//!
//! Two candidates (as two pods would be) each run a manager over a [`LeaseStore`] on the same
//! `coordination.k8s.io/v1` Lease object. The leader renews with one write per renewal; the
//! follower watches the object and does not poll. When the leader shuts down it releases the
//! lease, and the follower takes over within a fraction of a second instead of waiting out the
//! lease duration. Leadership changes are recorded as Kubernetes Events, as client-go does, and
//! the Lease reads as an ordinary client-go lock record.
//!
//! Needs a Kubernetes API server: `KUBECONFIG` names it (`cargo xtask k8s up`, then
//! `eval "$(cargo xtask k8s env)"`). The Lease is created in the kubeconfig's default
//! namespace.
//!
//! Run: `cargo run -p lease-examples --bin k8s_leader_election`

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use lease_core::{Clock, DefaultSecretary, Key, SystemClock};
use lease_manager::{Callbacks, ElectionConfig, LeaderElector, Leadership, Manager, ManagerConfig};
use lease_store_k8s::{EventRecorder, LeaseStore, LockRecord, StoreOptions};

/// One candidate: its manager (over its own store and watch) and its elector.
struct Candidate {
    manager: Manager,
    elector: LeaderElector,
}

fn candidate(
    client: &kube::Client,
    namespace: &str,
    object: &str,
    identity: &str,
) -> Result<Candidate, Box<dyn std::error::Error>> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let config = ElectionConfig::new("election", "example", "controller", identity)
        // Short timings so the example is quick; client-go's defaults are 15 s, 10 s, 2 s.
        .with_timing(
            Duration::from_secs(6),
            Duration::from_secs(4),
            Duration::from_secs(1),
        )
        .with_name(format!("controller-{identity}"));
    // The Lease object's name, so client-go candidates could share it.
    let key = Key::new(&*config.namespace, &*config.model, &*config.lease);
    let options = StoreOptions::default().object_for(key, object);
    let store = LeaseStore::with_options(client.clone(), namespace, Arc::clone(&clock), options);
    let manager = Manager::start(
        ManagerConfig::new(store, Arc::clone(&clock))
            .with_default_secretary(Arc::new(DefaultSecretary)),
    )?;
    let events = EventRecorder::new(client.clone(), namespace, object, identity);
    let who = identity.to_owned();
    let callbacks = Callbacks::new()
        .on_started_leading(events.on_started_leading())
        .on_stopped_leading(events.on_stopped_leading())
        .on_new_leader(move |leader| println!("{who} sees {leader} as the leader"));
    let elector = LeaderElector::new(&manager, clock, config, callbacks)?;
    Ok(Candidate { manager, elector })
}

async fn holder_of(api: &kube::Api<Lease>, object: &str) -> Result<LockRecord, kube::Error> {
    Ok(LockRecord::from_lease(&api.get(object).await?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await?;
    let namespace = client.default_namespace().to_owned();
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let object = format!("example-controller-{run:x}");
    let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), &namespace);

    let a = candidate(&client, &namespace, &object, "pod-a")?;
    let b = candidate(&client, &namespace, &object, "pod-b")?;

    let guard_a = a.elector.lock().await?;
    println!("pod-a leads (generation {})", guard_a.generation());

    // pod-b waits for leadership in the background.
    let b_lock = {
        let elector = b.elector.clone();
        tokio::spawn(async move { elector.lock().await })
    };
    let mut b_state = b.elector.leadership();
    b_state
        .wait_for(|s| matches!(s, Leadership::Following { .. }))
        .await?;
    let record = holder_of(&leases, &object).await?;
    assert_eq!(record.holder(), Some("pod-a"));
    println!(
        "Lease {namespace}/{object}: holder {:?}, {:?}, transitions {:?}",
        record.holder(),
        record.lease_duration(),
        record.lease_transitions
    );

    // pod-a does its work while its lost token has not fired...
    tokio::select! {
        () = guard_a.lost().cancelled() => return Err("pod-a lost leadership".into()),
        () = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    // ...then shuts down gracefully: stop working, then release.
    let released = Instant::now();
    assert!(guard_a.release().await, "the lease was revoked");
    let guard_b = b_lock.await??;
    let handover = released.elapsed();
    println!(
        "pod-b leads after a handover of {handover:?} (generation {})",
        guard_b.generation()
    );
    assert!(guard_b.generation() > guard_a_generation(&record));
    // The follower was woken by its watch, not by the 6 s lease running out.
    assert!(handover < Duration::from_secs(3), "{handover:?}");
    assert_eq!(holder_of(&leases, &object).await?.holder(), Some("pod-b"));

    assert!(guard_b.release().await);
    a.manager.stop().await;
    b.manager.stop().await;
    Ok(())
}

/// pod-a's generation as the Lease recorded it (`leaseTransitions` is the fencing generation on
/// objects this crate writes).
fn guard_a_generation(record: &LockRecord) -> lease_core::Generation {
    lease_core::Generation(
        record
            .lease_transitions
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0),
    )
}
