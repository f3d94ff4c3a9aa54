//! Interoperation with client-go on the mock API: bound keys that use client-go's objects, and
//! events recorded on the Lease.

use super::*;

const EVENTS: &str = "/api/v1/namespaces/lease-ns/events";

/// A Lease as client-go writes it: no labels, no annotations.
fn client_go_lease(name: &str, rv: u64, holder: &str, secs: i64, transitions: i64) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": rv.to_string()},
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": secs,
            "acquireTime": "2020-01-01T00:00:00.000000Z", "renewTime": "2020-01-01T00:00:00.000000Z",
            "leaseTransitions": transitions,
        }
    })
}

#[tokio::test]
async fn a_bound_key_uses_the_named_object_and_respects_client_go_holders() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let key = key();
    let options = StoreOptions::default().object_for(key.clone(), "my-controller-lock");
    let mut store = LeaseObjectStore::with_options(client, NS, clock.clone(), options);
    let path = format!("{LEASES}/my-controller-lock");
    let request = Request::new("rust-1", Duration::from_secs(15));

    // Held by client-go's go-1: refused after one read of the named object.
    let server = async {
        let (seen, respond) = next(&mut handle, "GET").await;
        assert_eq!(seen.method, Method::GET);
        assert_eq!(seen.path, path);
        reply(
            respond,
            200,
            &client_go_lease("my-controller-lock", 7, "go-1", 15, 3),
        );
    };
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    assert!(result.unwrap_err().is_held());

    // Unchanged for 15 s as observed here: expired; the claim is one conditional PUT on the
    // named object, with client-go's fields and one more transition.
    clock.advance(Duration::from_secs(15));
    let server = async {
        let (seen, respond) = next(&mut handle, "PUT").await;
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.path, path);
        let body = &seen.body;
        assert_eq!(body["metadata"]["name"], "my-controller-lock");
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert_eq!(body["metadata"]["labels"][LABEL_MANAGED_BY], "lease-rs");
        assert_eq!(body["spec"]["holderIdentity"], "rust-1");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(body["spec"]["leaseTransitions"], 4);
        assert_ne!(body["spec"]["acquireTime"], "2020-01-01T00:00:00.000000Z");
        assert!(body["spec"]["renewTime"].is_string());
        reply(respond, 200, &stored(body, 8));
    };
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    let info = result.unwrap();
    assert!(info.generation > Generation(3));
    assert_eq!(info.holder, "rust-1");
    assert_quiet(&mut handle).await;
}

#[tokio::test]
async fn events_are_core_v1_events_on_the_lease() {
    let (client, mut handle) = mock();
    let recorder = crate::EventRecorder::new(client, NS, "my-controller-lock", "pod-a");
    assert!(recorder.is_enabled());
    let server = async {
        let (seen, respond) = next(&mut handle, "POST event").await;
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.path, EVENTS);
        let body = &seen.body;
        assert_eq!(body["kind"], "Event");
        assert!(
            body["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("my-controller-lock.")
        );
        assert_eq!(body["reason"], "LeaderElection");
        assert_eq!(body["message"], "pod-a became leader");
        assert_eq!(body["type"], "Normal");
        assert_eq!(body["involvedObject"]["kind"], "Lease");
        assert_eq!(
            body["involvedObject"]["apiVersion"],
            "coordination.k8s.io/v1"
        );
        assert_eq!(body["involvedObject"]["name"], "my-controller-lock");
        assert_eq!(body["involvedObject"]["namespace"], NS);
        assert_eq!(body["source"]["component"], "lease-rs");
        assert_eq!(body["reportingInstance"], "pod-a");
        assert_eq!(body["count"], 1);
        reply(respond, 201, &stored(body, 3));
    };
    let (result, ()) = tokio::join!(recorder.record(crate::BECAME_LEADER), server);
    assert_eq!(
        result.unwrap().unwrap().message.as_deref(),
        Some("pod-a became leader")
    );

    // In the background, in order.
    let started = recorder.on_started_leading();
    let stopped = recorder.on_stopped_leading();
    started(Generation(1));
    stopped();
    for want in ["pod-a became leader", "pod-a stopped leading"] {
        let (seen, respond) = next(&mut handle, want).await;
        assert_eq!(seen.body["message"], want);
        reply(respond, 201, &stored(&seen.body, 4));
    }
    // Refused: an error naming the permission, not a panic.
    let server = async {
        let (_, respond) = next(&mut handle, "POST event").await;
        reply(
            respond,
            403,
            &status(403, "Forbidden", "events is forbidden"),
        );
    };
    let (result, ()) = tokio::join!(recorder.record("x"), server);
    assert!(matches!(
        result.unwrap_err(),
        crate::K8sStoreError::Permission {
            verb: "create",
            resource: "events",
            ..
        }
    ));

    // Switched off: no request.
    let off = recorder.clone().enabled(false);
    assert!(off.record(crate::STOPPED_LEADING).await.unwrap().is_none());
    off.on_started_leading()(Generation(2));
    assert_quiet(&mut handle).await;
}
