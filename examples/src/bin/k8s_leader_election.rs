//! Leader election on Kubernetes with a graceful handover, through the `lease` facade.
//!
//! Two candidates (as two pods would be) contend for one `coordination.k8s.io/v1` Lease object,
//! named after the lease. The leader renews with one write per renewal; the follower watches
//! the object and does not poll. When the leader shuts down it releases the lease, and the
//! follower takes over within a fraction of a second instead of waiting out the lease duration.
//! Leadership changes are recorded as Kubernetes Events, as client-go does, and the Lease reads
//! as an ordinary client-go lock record. `lease::Election` wires the store, the manager, the
//! one shared clock and the Events; `lease_manager::LeaderElector` is underneath for programs
//! that need more control.
//!
//! Needs a Kubernetes API server: `KUBECONFIG` names it (`cargo xtask k8s up`, then
//! `eval "$(cargo xtask k8s env)"`). The Lease is created in the kubeconfig's default
//! namespace.
//!
//! Run: `cargo run -p lease-examples --bin k8s_leader_election`

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use lease::{Election, Leadership};
use lease_store_k8s::LeaderElectionRecord;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await?;
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let name = format!("example-controller-{run:x}");
    // Short timings so the example is quick; the defaults are client-go's 15 s, 10 s, 2 s.
    let timing = (
        Duration::from_secs(6),
        Duration::from_secs(4),
        Duration::from_secs(1),
    );
    let candidate = |identity: &str| {
        Election::kubernetes(client.clone(), &name)
            .identity(identity)
            .timing(timing.0, timing.1, timing.2)
            .start()
    };
    let a = candidate("pod-a")?;
    let b = candidate("pod-b")?;

    let term_a = a.lead().await?;
    println!("pod-a leads (generation {})", term_a.generation());
    // A liveness probe handler would call this.
    term_a.health_check().check()?;

    // pod-b waits for leadership in the background.
    let mut b_state = b.leadership();
    let b_lock = tokio::spawn(async move {
        let term = b.lead().await;
        (b, term)
    });
    b_state
        .wait_for(|s| matches!(s, Leadership::Following { .. }))
        .await?;
    let leases: kube::Api<Lease> = kube::Api::default_namespaced(client.clone());
    let record = LeaderElectionRecord::from_lease(&leases.get(&name).await?);
    assert_eq!(record.holder(), Some("pod-a"));
    println!(
        "Lease {name}: holder {:?}, {:?}, transitions {:?}",
        record.holder(),
        record.lease_duration(),
        record.lease_transitions
    );

    // pod-a does its work while its lost token has not fired...
    tokio::select! {
        () = term_a.lost().cancelled() => return Err("pod-a lost leadership".into()),
        () = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    // ...then shuts down gracefully: stop working, then release.
    let generation_a = term_a.generation();
    let released = Instant::now();
    assert!(term_a.release().await, "the lease was revoked");
    let (b, term_b) = b_lock.await?;
    let term_b = term_b?;
    let handover = released.elapsed();
    println!(
        "pod-b leads after a handover of {handover:?} (generation {})",
        term_b.generation()
    );
    assert!(term_b.generation() > generation_a);
    // The follower was woken by its watch, not by the 6 s lease running out.
    assert!(handover < Duration::from_secs(3), "{handover:?}");
    let record = LeaderElectionRecord::from_lease(&leases.get(&name).await?);
    assert_eq!(record.holder(), Some("pod-b"));

    assert!(term_b.release().await);
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
