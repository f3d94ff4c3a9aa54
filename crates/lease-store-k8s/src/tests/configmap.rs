//! ConfigMap locks on the mock API: the object's shape, locks without expiry, acquiring and
//! releasing a named ConfigMap.

use super::*;

#[tokio::test]
async fn configmap_lock_shape() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let labels = BTreeMap::from([("app".to_owned(), "backup".to_owned())]);
    let mut store = ConfigMapStore::builder(client, NS, clock.clone())
        .owner(Some(OwnerPod::new("pod-a", "uid-a")))
        .labels(labels)
        .build();
    assert_eq!(store.owner(), Some(&OwnerPod::new("pod-a", "uid-a")));
    let key = key();
    let request = Request::new("pod-a", Duration::from_secs(30));
    let server = async {
        let (seen, respond) = next(&mut handle, "GET").await;
        assert_eq!(seen.method, Method::GET);
        assert_eq!(seen.path, format!("{CONFIGMAPS}/{}", object_name(&key)));
        reply(respond, 404, &status(404, "NotFound", "not found"));
        let (seen, respond) = next(&mut handle, "POST").await;
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.path, CONFIGMAPS);
        let body = &seen.body;
        assert_eq!(body["kind"], "ConfigMap");
        assert_eq!(body["metadata"]["labels"]["app"], "backup");
        assert_eq!(body["metadata"]["labels"][LABEL_MANAGED_BY], "lease-rs");
        let owner = &body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Pod");
        assert_eq!(owner["apiVersion"], "v1");
        assert_eq!(owner["name"], "pod-a");
        assert_eq!(owner["uid"], "uid-a");
        assert_eq!(body["data"]["holderIdentity"], "pod-a");
        assert_eq!(body["data"]["leaseDurationSeconds"], "30");
        let expiry: k8s_openapi::jiff::Timestamp =
            body["data"]["expiry"].as_str().unwrap().parse().unwrap();
        let renew: k8s_openapi::jiff::Timestamp =
            body["data"]["renewTime"].as_str().unwrap().parse().unwrap();
        assert_eq!(renew.duration_until(expiry).as_secs(), 30);
        let generation: u64 = body["data"]["leaseTransitions"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            generation > 1_600_000_000_000,
            "starts from the wall clock: {generation}"
        );
        reply(respond, 201, &stored(body, 5));
    };
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    let info = result.unwrap();
    assert_eq!(info.holder, "pod-a");

    // Renewal: one PUT.
    let server = async {
        let (seen, respond) = next(&mut handle, "PUT").await;
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.body["metadata"]["resourceVersion"], "5");
        reply(respond, 200, &stored(&seen.body, 6));
    };
    let (result, ()) = tokio::join!(store.extend_lease(&key, &request), server);
    result.unwrap();
    assert_quiet(&mut handle).await;
}

#[tokio::test]
async fn configmap_lock_without_expiry() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = ConfigMapStore::builder(client, NS, clock.clone())
        .owner(None)
        .without_expiry()
        .build();
    let key = key();
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        reply(respond, 404, &status(404, "NotFound", "not found"));
        let (seen, respond) = next(&mut handle, "POST").await;
        assert_eq!(seen.body["data"]["expiry"], "never");
        assert!(seen.body["data"]["leaseDurationSeconds"].is_null());
        assert!(seen.body["metadata"]["ownerReferences"].is_null());
        let created = stored(&seen.body, 5);
        reply(respond, 201, &created);
        created
    };
    let request = Request::new("pod-a", Duration::from_secs(1));
    let (result, created) = tokio::join!(store.claim_lease(&key, &request), server);
    let info = result.unwrap();
    assert_eq!(info.expiry, Timestamp::MAX);
    // A year later it is still held: the cache says so, and a read confirms before `Held`.
    clock.advance(Duration::from_secs(365 * 24 * 3600));
    let server = async {
        let (seen, respond) = next(&mut handle, "GET confirming").await;
        assert_eq!(seen.method, Method::GET);
        reply(respond, 200, &created);
    };
    let request = Request::new("pod-b", Duration::from_secs(1));
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    assert!(result.unwrap_err().is_held());
    assert_quiet(&mut handle).await;
}

#[tokio::test]
async fn configmap_lock_acquires_the_named_configmap_and_releases_it() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let lock = crate::ConfigMapLock::new(client, "nightly-backup", Some(Duration::from_secs(30)))
        .with_namespace(NS)
        .with_identity("pod-a")
        .with_owner(Some(OwnerPod::new("pod-a", "uid-a")))
        .with_labels(BTreeMap::from([("app".to_owned(), "backup".to_owned())]))
        .with_clock(clock.clone());
    assert_eq!(lock.name(), "nightly-backup");
    assert_eq!(lock.timeout(), Some(Duration::from_secs(30)));
    assert_eq!(lock.data()["leaseDurationSeconds"], "30");
    let path = format!("{CONFIGMAPS}/nightly-backup");
    let server = async {
        let (seen, respond) = next(&mut handle, "GET").await;
        assert_eq!(seen.method, Method::GET);
        assert_eq!(seen.path, path);
        reply(respond, 404, &status(404, "NotFound", "not found"));
        let (seen, respond) = next(&mut handle, "POST").await;
        assert_eq!(seen.method, Method::POST);
        let body = &seen.body;
        assert_eq!(body["metadata"]["name"], "nightly-backup");
        assert_eq!(body["metadata"]["labels"]["app"], "backup");
        assert_eq!(body["metadata"]["ownerReferences"][0]["name"], "pod-a");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-a");
        for (field, value) in lock.data() {
            assert_eq!(body["data"][&field], value.as_str(), "{field}");
        }
        reply(respond, 201, &stored(body, 5));
    };
    let (result, ()) = tokio::join!(lock.acquire(), server);
    let generation = result.unwrap();
    assert!(generation.get() > 1);

    // Release: one PUT clearing the holder.
    let server = async {
        let (seen, respond) = next(&mut handle, "PUT").await;
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.path, path);
        assert_eq!(seen.body["data"]["holderIdentity"], "");
        assert_eq!(seen.body["metadata"]["resourceVersion"], "5");
        reply(respond, 200, &stored(&seen.body, 6));
    };
    let (result, ()) = tokio::join!(lock.release(), server);
    result.unwrap();
    assert_quiet(&mut handle).await;
}

#[tokio::test]
async fn configmap_lock_release_of_a_lock_held_by_another_fails() {
    let (client, mut handle) = mock();
    let lock = crate::ConfigMapLock::new(client, "nightly-backup", None)
        .with_namespace(NS)
        .with_identity("pod-a")
        .with_owner(None)
        .with_clock(test_clock());
    assert_eq!(lock.data()["expiry"], "never");
    let theirs = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "nightly-backup", "namespace": NS, "resourceVersion": "9"},
        "data": {"holderIdentity": "pod-b", "expiry": "never", "leaseTransitions": "12"}
    });
    let server = async {
        // The revoke's read, then the read naming the holder.
        for what in ["GET for the revoke", "GET naming the holder"] {
            let (seen, respond) = next(&mut handle, what).await;
            assert_eq!(seen.method, Method::GET);
            reply(respond, 200, &theirs);
        }
    };
    let (result, ()) = tokio::join!(lock.release(), server);
    match result.unwrap_err() {
        crate::ConfigMapLockError::NotOurs {
            holder, identity, ..
        } => {
            assert_eq!(holder.as_deref(), Some("pod-b"));
            assert_eq!(identity, "pod-a");
        }
        other => panic!("{other:?}"),
    }
    assert_quiet(&mut handle).await;
}
