//! Request shapes of claims and extensions on the mock API: the requests each makes, and how
//! conflicts, races, refusals, server errors and slow requests map to the contract's errors.

use super::*;

#[tokio::test]
async fn claim_of_an_absent_lease_gets_then_creates() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let start = clock.now();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let request =
        Request::new("unit-0", Duration::from_millis(1500)).with_metadata(json!({"pid": 42}));

    let server = async {
        let (seen, respond) = next(&mut handle, "GET").await;
        assert_eq!(seen.method, Method::GET);
        assert_eq!(seen.path, lease_path(&key));
        reply(respond, 404, &status(404, "NotFound", "not found"));

        let (seen, respond) = next(&mut handle, "POST").await;
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.path, LEASES);
        assert_eq!(
            seen.query.get("fieldManager").map(String::as_str),
            Some("lease-rs")
        );
        let body = &seen.body;
        assert_eq!(body["kind"], "Lease");
        assert_eq!(body["metadata"]["name"], object_name(&key));
        assert!(body["metadata"]["resourceVersion"].is_null(), "{body}");
        assert_eq!(body["metadata"]["labels"][LABEL_MANAGED_BY], "lease-rs");
        assert_eq!(body["metadata"]["labels"][LABEL_LEASE], "mysql");
        assert_eq!(
            body["metadata"]["labels"]["lease-rs/namespace"],
            "application-leadership"
        );
        assert_eq!(body["metadata"]["labels"]["lease-rs/model"], "model-1");
        let exact: Key = serde_json::from_str(
            body["metadata"]["annotations"][ANNOTATION_KEY]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(exact, key);
        let claim: Value = serde_json::from_str(
            body["metadata"]["annotations"]["lease-rs/claim"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claim["durationNanos"], 1_500_000_000u64);
        assert_eq!(claim["metadata"], json!({"pid": 42}));
        let spec = &body["spec"];
        assert_eq!(spec["holderIdentity"], "unit-0");
        // 1.5 s rounds up to 2 whole seconds.
        assert_eq!(spec["leaseDurationSeconds"], 2);
        assert_eq!(spec["leaseTransitions"], 1);
        let generation: Value = serde_json::from_str(
            body["metadata"]["annotations"]["lease-rs/generation"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(generation["leaseTransitions"], 1);
        assert!(generation["generation"].as_u64().unwrap() > 1_600_000_000_000_000);
        assert!(spec["acquireTime"].is_string());
        assert!(spec["renewTime"].is_string());
        reply(respond, 201, &stored(body, 7));
    };
    let floor = crate::generation::wall_clock_generation();
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    let info = result.unwrap();
    assert_eq!(info.holder, "unit-0");
    // A new object's generation starts from the wall clock (it may have been deleted).
    assert!(info.generation.get() >= floor, "{info:?}");
    assert_eq!(
        info.expiry,
        start.saturating_add(Duration::from_millis(1500))
    );
    assert_eq!(info.metadata, Some(json!({"pid": 42})));
    assert!(!info.pinned);
    drop(store);
    assert_quiet(&mut handle).await;
}

#[tokio::test]
async fn renewal_is_exactly_one_put_and_no_get() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let request = Request::new("unit-0", Duration::from_secs(15));
    let (claimed, _) = tokio::join!(
        store.claim_lease(&key, &request),
        serve_absent_claim(&mut handle, &key, 10)
    );
    let claimed = claimed.unwrap().generation;

    for (round, rv) in [(1u64, 11u64), (2, 12), (3, 13)] {
        clock.advance(Duration::from_secs(5));
        let start = clock.now();
        let server = async {
            let (seen, respond) = next(&mut handle, "PUT renewing").await;
            assert_eq!(seen.method, Method::PUT, "round {round}");
            assert_eq!(seen.path, lease_path(&key));
            // Conditional on the version of our previous write.
            assert_eq!(
                seen.body["metadata"]["resourceVersion"],
                (rv - 1).to_string()
            );
            assert_eq!(seen.body["spec"]["holderIdentity"], "unit-0");
            assert_eq!(seen.body["spec"]["leaseTransitions"], 1);
            assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 15);
            reply(respond, 200, &stored(&seen.body, rv));
        };
        let (result, ()) = tokio::join!(store.extend_lease(&key, &request), server);
        let info = result.unwrap();
        assert_eq!(info.expiry, start.saturating_add(Duration::from_secs(15)));
        assert_eq!(info.generation, claimed);
        assert_quiet(&mut handle).await;
    }
}

#[tokio::test]
async fn extend_only_ever_lengthens() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let long = Request::new("unit-0", Duration::from_secs(60));
    let (claimed, _) = tokio::join!(
        store.claim_lease(&key, &long),
        serve_absent_claim(&mut handle, &key, 10)
    );
    let claimed = claimed.unwrap();
    clock.advance(Duration::from_secs(10));
    let short = Request::new("unit-0", Duration::from_secs(1));
    let server = async {
        let (seen, respond) = next(&mut handle, "PUT").await;
        // 50 s are left: the short extend keeps them.
        assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 50);
        reply(respond, 200, &stored(&seen.body, 11));
    };
    let (result, ()) = tokio::join!(store.extend_lease(&key, &short), server);
    assert_eq!(result.unwrap().expiry, claimed.expiry);
}

#[tokio::test]
async fn conflict_on_renewal_rereads_and_reports() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let request = Request::new("unit-0", Duration::from_secs(15));
    let (claimed, _) = tokio::join!(
        store.claim_lease(&key, &request),
        serve_absent_claim(&mut handle, &key, 10)
    );
    claimed.unwrap();

    let server = async {
        let (seen, respond) = next(&mut handle, "PUT").await;
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.body["metadata"]["resourceVersion"], "10");
        reply(
            respond,
            409,
            &status(409, "Conflict", "the object has been modified"),
        );
        // The conflict is followed by a fresh read, which shows someone else holding it.
        let (seen, respond) = next(&mut handle, "GET after the conflict").await;
        assert_eq!(seen.method, Method::GET);
        assert_eq!(seen.path, lease_path(&key));
        reply(respond, 200, &foreign_lease(&key, 12, "unit-1", 15, 2));
    };
    let (result, ()) = tokio::join!(store.extend_lease(&key, &request), server);
    let err = result.unwrap_err();
    assert!(err.is_invalid(), "{err}");
    assert_quiet(&mut handle).await;
}

#[tokio::test]
async fn losing_a_create_race_reports_held() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let server = async {
        let (seen, respond) = next(&mut handle, "GET").await;
        assert_eq!(seen.method, Method::GET);
        reply(respond, 404, &status(404, "NotFound", "not found"));
        let (seen, respond) = next(&mut handle, "POST").await;
        assert_eq!(seen.method, Method::POST);
        reply(
            respond,
            409,
            &status(409, "AlreadyExists", "already exists"),
        );
        let (seen, respond) = next(&mut handle, "GET after losing").await;
        assert_eq!(seen.method, Method::GET);
        reply(respond, 200, &foreign_lease(&key, 3, "winner", 15, 1));
    };
    let request = Request::new("loser", Duration::from_secs(15));
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    let err = result.unwrap_err();
    assert!(err.is_held(), "{err}");
    assert_quiet(&mut handle).await;
}

#[tokio::test]
async fn forbidden_names_verb_resource_and_namespace() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        reply(respond, 404, &status(404, "NotFound", "not found"));
        let (seen, respond) = next(&mut handle, "POST").await;
        assert_eq!(seen.method, Method::POST);
        reply(
            respond,
            403,
            &status(
                403,
                "Forbidden",
                "leases.coordination.k8s.io is forbidden: User \"bob\" cannot create resource",
            ),
        );
    };
    let request = Request::new("h", Duration::from_secs(15));
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    let err = result.unwrap_err();
    assert_eq!(err.kind(), lease_core::ErrorKind::Store);
    let msg = err.to_string();
    assert!(
        msg.contains("cannot create leases in namespace \"lease-ns\""),
        "{msg}"
    );
    let source = std::error::Error::source(&err).expect("source kept");
    let k8s = source
        .downcast_ref::<crate::K8sStoreError>()
        .expect("a K8sStoreError");
    assert!(matches!(
        k8s,
        crate::K8sStoreError::Permission {
            verb: "create",
            resource: "leases",
            code: 403,
            ..
        }
    ));
}

#[tokio::test]
async fn server_errors_and_lost_connections_are_timeouts() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let request = Request::new("h", Duration::from_secs(15));
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        reply(
            respond,
            503,
            &status(503, "ServiceUnavailable", "etcd is down"),
        );
    };
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    let err = result.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.is_retryable());

    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        respond.send_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        ));
    };
    let (result, ()) = tokio::join!(store.leases(std::slice::from_ref(&key)), server);
    let err = result.unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[tokio::test]
async fn slow_requests_time_out() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let options = StoreOptions::default().request_timeout(Duration::from_millis(50));
    let mut store = LeaseObjectStore::with_options(client, NS, clock.clone(), options);
    let key = key();
    let server = async {
        // Take the request and never answer it.
        let (_, respond) = next(&mut handle, "GET").await;
        respond
    };
    let (result, _respond) = tokio::join!(store.leases(std::slice::from_ref(&key)), server);
    let err = result.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("timed out after 50ms"), "{err}");
}
