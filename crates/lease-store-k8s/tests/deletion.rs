//! Lock objects deleted under their holders, on a real API server (`kubectl delete`, a Helm
//! reinstall, a namespace clean-up, the garbage collector after a ConfigMap lock's owner pod):
//! the generation of every later claim is above the deleted object's, so a paused holder that
//! resumes is rejected by [`Fence`]; and a claimant that saw the holder does not re-create the
//! object while that holder's claim may still run.
//!
//! Ignored by default (they need a server): `cargo xtask k8s up`, then
//! `eval "$(cargo xtask k8s env)"` and `cargo nextest run -p lease-store-k8s --run-ignored all`.

mod common;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use lease_core::{Key, Request, Store};
use lease_manager::Fence;
use lease_store_k8s::naming::{ANNOTATION_KEY, LABEL_MANAGED_BY, object_name};
use lease_store_k8s::{ConfigMapStore, LeaseObjectStore};
use lease_testkit::FakeClock;

use common::{NamespaceGuard, admin_config, client};

fn req(holder: &str) -> Request {
    Request::new(holder, Duration::from_secs(30))
}

async fn delete_lease(leases: &Api<Lease>, name: &str) {
    leases
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting Lease {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn a_lease_deleted_under_a_paused_holder_never_lowers_the_generation() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "deleted-lease")
        .await
        .unwrap();
    let leases = Api::<Lease>::namespaced(client(&config), &ns.name);
    let key = Key::new("deletion", "model-1", "lease");
    let name = object_name(&key);
    let fence = Fence::new();

    // a claims and writes through the fence; c, another process, sees a's claim.
    let a_clock = FakeClock::new();
    let mut a = LeaseObjectStore::new(client(&config), ns.name.clone(), a_clock.as_clock());
    let first = a.claim_lease(&key, &req("a")).await.unwrap().generation;
    fence.admit(first).unwrap();
    let c_clock = FakeClock::new();
    let mut c = LeaseObjectStore::new(client(&config), ns.name.clone(), c_clock.as_clock());
    assert_eq!(
        c.leases(std::slice::from_ref(&key)).await.unwrap()[&key].holder,
        "a"
    );

    // a pauses (SIGSTOP); someone deletes the Lease.
    delete_lease(&leases, &name).await;

    // c saw a's claim: it does not re-create the object while a's claim may still run (a
    // does not know yet and keeps acting)...
    let err = c.claim_lease(&key, &req("c")).await.unwrap_err();
    assert!(err.is_held(), "{err}");
    c_clock.advance(Duration::from_secs(29));
    assert!(c.claim_lease(&key, &req("c")).await.unwrap_err().is_held());
    // ...and takes it once a's claim has run out on c's clock, above a's generation.
    c_clock.advance(Duration::from_secs(1));
    let second = c.claim_lease(&key, &req("c")).await.unwrap().generation;
    assert!(second > first, "{second} after {first}");
    fence.admit(second).unwrap();

    // a resumes: its writes are refused by the fence, and it cannot renew.
    let stale = fence.admit(first).unwrap_err();
    assert_eq!(stale.highest, second);
    assert!(a.extend_lease(&key, &req("a")).await.is_err());

    // Deleted again; b, a process that never saw the object, re-creates it at once (it cannot
    // know): still above every earlier generation.
    delete_lease(&leases, &name).await;
    let mut b = LeaseObjectStore::new(
        client(&config),
        ns.name.clone(),
        FakeClock::new().as_clock(),
    );
    let third = b.claim_lease(&key, &req("b")).await.unwrap().generation;
    assert!(third > second, "{third} after {second}");
    fence.admit(third).unwrap();
    assert!(fence.admit(second).is_err());

    // Deleted again and re-created by a Helm chart's manifest (no generation annotation,
    // leaseTransitions 0): the next claim is still above.
    delete_lease(&leases, &name).await;
    let mut manifest = Lease::default();
    manifest.metadata.name = Some(name.clone());
    manifest.metadata.labels = Some([(LABEL_MANAGED_BY.to_owned(), "lease-rs".to_owned())].into());
    manifest.metadata.annotations = Some(
        [(
            ANNOTATION_KEY.to_owned(),
            serde_json::to_string(&key).unwrap(),
        )]
        .into(),
    );
    manifest.spec = Some(LeaseSpec {
        lease_transitions: Some(0),
        ..LeaseSpec::default()
    });
    leases
        .create(&PostParams::default(), &manifest)
        .await
        .unwrap();
    let mut d = LeaseObjectStore::new(
        client(&config),
        ns.name.clone(),
        FakeClock::new().as_clock(),
    );
    let fourth = d.claim_lease(&key, &req("d")).await.unwrap().generation;
    assert!(fourth > third, "{fourth} after {third}");
    fence.admit(fourth).unwrap();

    // What client-go reads stays valid: a small non-negative leaseTransitions.
    let spec = leases.get(&name).await.unwrap().spec.unwrap();
    assert_eq!(spec.lease_transitions, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn a_configmap_deleted_under_its_holder_never_lowers_the_generation() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "deleted-cm").await.unwrap();
    let configmaps = Api::<ConfigMap>::namespaced(client(&config), &ns.name);
    let key = Key::new("deletion", "model-1", "configmap");
    let name = object_name(&key);
    let fence = Fence::new();
    let store = |clock: &FakeClock| {
        ConfigMapStore::builder(client(&config), ns.name.clone(), clock.as_clock())
            .owner(None)
            .build()
    };
    let mut a = store(&FakeClock::new());
    let first = a.claim_lease(&key, &req("a")).await.unwrap().generation;
    fence.admit(first).unwrap();
    // The owner pod is deleted; the garbage collector deletes the ConfigMap with it.
    configmaps
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let mut b = store(&FakeClock::new());
    let second = b.claim_lease(&key, &req("b")).await.unwrap().generation;
    assert!(second > first, "{second} after {first}");
    fence.admit(second).unwrap();
    assert!(fence.admit(first).is_err());
    assert!(a.extend_lease(&key, &req("a")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a Kubernetes API server: cargo xtask k8s up"]
async fn racing_claims_on_a_deleted_lease_make_one_holder_above_the_old_generation() {
    let config = admin_config().await;
    let ns = NamespaceGuard::create(&config, "deleted-race")
        .await
        .unwrap();
    let leases = Api::<Lease>::namespaced(client(&config), &ns.name);
    let key = Key::new("deletion", "model-1", "race");
    let name = object_name(&key);
    let mut first = LeaseObjectStore::new(
        client(&config),
        ns.name.clone(),
        FakeClock::new().as_clock(),
    );
    let mut previous = first
        .claim_lease(&key, &req("first"))
        .await
        .unwrap()
        .generation;
    for round in 0..10 {
        delete_lease(&leases, &name).await;
        // Four processes that never saw the object race to create it.
        let racers: Vec<_> = (0..4)
            .map(|i| {
                let config = config.clone();
                let ns = ns.name.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    let mut store =
                        LeaseObjectStore::new(client(&config), ns, FakeClock::new().as_clock());
                    (
                        i,
                        store.claim_lease(&key, &req(&format!("racer-{i}"))).await,
                    )
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                (i, Ok(info)) => winners.push((i, info)),
                (_, Err(e)) => assert!(e.is_held(), "round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let (i, info) = &winners[0];
        assert_eq!(info.holder, format!("racer-{i}"));
        assert!(
            info.generation > previous,
            "round {round}: {} after {previous}",
            info.generation
        );
        previous = info.generation;
    }
}
