//! Request shapes of group reads, revokes, pins and validation on the mock API, and how expiry
//! is judged on the observed clock.

use super::*;

#[tokio::test]
async fn lease_group_is_one_label_selected_list() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let mine = Key::new("ns", "m/1", "a");
    let other_model = Key::new("ns", "m/2", "b");
    let free = Key::new("ns", "m/1", "c");
    let server = async {
        let (seen, respond) = next(&mut handle, "LIST").await;
        assert_eq!(seen.method, Method::GET);
        assert_eq!(seen.path, LEASES);
        let selector = seen.query.get("labelSelector").expect("a label selector");
        assert_eq!(selector, &crate::naming::group_selector("ns", "m/1"));
        assert!(selector.contains("lease-rs/model=h-"), "{selector}");
        // A (theoretical) label collision lists another model's object too; the exact-key
        // annotation filters it out.
        let mut revoked = foreign_lease(&free, 5, "", 1, 3);
        revoked["spec"]["holderIdentity"] = json!("");
        let list = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
            "metadata": {"resourceVersion": "9"},
            "items": [
                foreign_lease(&mine, 4, "unit-0", 15, 1),
                foreign_lease(&other_model, 6, "unit-1", 15, 1),
                revoked,
            ],
        });
        reply(respond, 200, &list);
    };
    let (result, ()) = tokio::join!(store.lease_group("ns", "m/1"), server);
    let group = result.unwrap();
    assert_eq!(group.keys().collect::<Vec<_>>(), vec![&mine]);
    assert_eq!(group[&mine].holder, "unit-0");
    assert_eq!(group[&mine].generation, Generation(1));
    assert_quiet(&mut handle).await;
}

#[tokio::test]
async fn revoke_clears_the_holder_and_keeps_transitions() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let request = Request::new("unit-0", Duration::from_secs(15));
    // The object exists with 4 earlier transitions.
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        let mut revoked = foreign_lease(&key, 20, "", 1, 4);
        revoked["spec"]["holderIdentity"] = json!("");
        reply(respond, 200, &revoked);
        let (seen, respond) = next(&mut handle, "PUT claiming").await;
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.body["metadata"]["resourceVersion"], "20");
        assert_eq!(seen.body["spec"]["leaseTransitions"], 5);
        reply(respond, 200, &stored(&seen.body, 21));
    };
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    let first = result.unwrap().generation;
    assert!(first > Generation(4));

    let server = async {
        let (seen, respond) = next(&mut handle, "PUT revoking").await;
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.path, lease_path(&key));
        assert_eq!(seen.body["metadata"]["resourceVersion"], "21");
        assert_eq!(seen.body["spec"]["holderIdentity"], "");
        assert_eq!(seen.body["spec"]["leaseTransitions"], 5);
        assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 1);
        assert!(seen.body["metadata"]["annotations"]["lease-rs/claim"].is_null());
        reply(respond, 200, &stored(&seen.body, 22));
    };
    let (result, ()) = tokio::join!(store.revoke_lease(&key, "unit-0"), server);
    result.unwrap();

    // The next claim, by the same holder, is a new generation; decided on the cache.
    let server = async {
        let (seen, respond) = next(&mut handle, "PUT reclaiming").await;
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.body["metadata"]["resourceVersion"], "22");
        assert_eq!(seen.body["spec"]["leaseTransitions"], 6);
        reply(respond, 200, &stored(&seen.body, 23));
    };
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    assert!(result.unwrap().generation > first);
    assert_quiet(&mut handle).await;
}

#[tokio::test]
async fn garbage_objects_are_not_held() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let mut garbage = foreign_lease(&key, 30, "unit-0", -5, -3);
    garbage["metadata"]["annotations"]["lease-rs/pins"] = json!("[not json");
    garbage["metadata"]["annotations"]["lease-rs/claim"] = json!("{}");
    let mut missing = garbage.clone();
    missing["spec"] = json!({"holderIdentity": "unit-0"});
    missing["metadata"]["resourceVersion"] = json!("31");

    for object in [garbage, missing] {
        let server = async {
            let (seen, respond) = next(&mut handle, "GET").await;
            assert_eq!(seen.method, Method::GET);
            reply(respond, 200, &object);
        };
        let (result, ()) = tokio::join!(store.leases(std::slice::from_ref(&key)), server);
        assert!(result.unwrap().is_empty(), "{object}");

        // Not even "held by us": its named holder's extend is refused after a fresh read.
        let server = async {
            let (seen, respond) = next(&mut handle, "GET confirming").await;
            assert_eq!(seen.method, Method::GET);
            reply(respond, 200, &object);
        };
        let request = Request::new("unit-0", Duration::from_secs(15));
        let (result, ()) = tokio::join!(store.extend_lease(&key, &request), server);
        assert!(result.unwrap_err().is_invalid());
    }

    // And it is claimable at once, with a sane generation.
    let server = async {
        let (seen, respond) = next(&mut handle, "PUT").await;
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.body["metadata"]["resourceVersion"], "31");
        assert_eq!(seen.body["spec"]["leaseTransitions"], 1);
        assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 15);
        reply(respond, 200, &stored(&seen.body, 32));
    };
    let request = Request::new("unit-1", Duration::from_secs(15));
    let floor = crate::generation::wall_clock_generation();
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    let info = result.unwrap();
    assert_eq!(info.holder, "unit-1");
    assert!(info.generation.get() >= floor, "{info:?}");
}

#[tokio::test]
async fn expiry_is_judged_on_the_observed_clock() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let request = Request::new("newcomer", Duration::from_secs(15));
    // renewTime says 2020: with observed time, that does not matter. Never seen before, the
    // record counts as just observed.
    let held = foreign_lease(&key, 40, "old-holder", 15, 7);
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        reply(respond, 200, &held);
    };
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    assert!(result.unwrap_err().is_held());

    clock.advance(Duration::from_secs(14));
    // Unchanged after 14 s: the cache says held, confirmed by a read (same version).
    let server = async {
        let (seen, respond) = next(&mut handle, "GET").await;
        assert_eq!(seen.method, Method::GET);
        reply(respond, 200, &held);
    };
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    assert!(result.unwrap_err().is_held());

    clock.advance(Duration::from_secs(1));
    // 15 s unchanged: expired. Decided on the cache, written conditionally: no read.
    let server = async {
        let (seen, respond) = next(&mut handle, "PUT").await;
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.body["metadata"]["resourceVersion"], "40");
        assert_eq!(seen.body["spec"]["holderIdentity"], "newcomer");
        assert_eq!(seen.body["spec"]["leaseTransitions"], 8);
        reply(respond, 200, &stored(&seen.body, 41));
    };
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    assert!(result.unwrap().generation > Generation(7));
    assert_quiet(&mut handle).await;
}

#[tokio::test]
async fn a_renewal_seen_restarts_the_observed_expiry() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        reply(respond, 200, &foreign_lease(&key, 40, "holder", 15, 1));
    };
    let (result, ()) = tokio::join!(store.leases(std::slice::from_ref(&key)), server);
    let first = result.unwrap()[&key].clone();

    clock.advance(Duration::from_secs(10));
    let mut renewed = foreign_lease(&key, 41, "holder", 15, 1);
    renewed["spec"]["renewTime"] = json!("2020-01-01T00:00:10.000000Z");
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        reply(respond, 200, &renewed);
    };
    let (result, ()) = tokio::join!(store.leases(std::slice::from_ref(&key)), server);
    let second = result.unwrap()[&key].clone();
    assert_eq!(
        second.expiry,
        first.expiry.saturating_add(Duration::from_secs(10))
    );

    // A pin changes the object but not the record: the expiry stays.
    clock.advance(Duration::from_secs(1));
    let mut pinned = renewed.clone();
    pinned["metadata"]["resourceVersion"] = json!("42");
    pinned["metadata"]["annotations"]["lease-rs/pins"] = json!("[\"someone\"]");
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        reply(respond, 200, &pinned);
    };
    let (result, ()) = tokio::join!(store.leases(std::slice::from_ref(&key)), server);
    let third = result.unwrap()[&key].clone();
    assert_eq!(third.expiry, second.expiry);
    assert!(third.pinned);
}

#[tokio::test]
async fn pin_of_an_absent_lease_creates_it_unheld() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let key = key();
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        reply(respond, 404, &status(404, "NotFound", "not found"));
        let (seen, respond) = next(&mut handle, "POST").await;
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.body["spec"]["holderIdentity"], "");
        assert!(seen.body["spec"]["leaseDurationSeconds"].is_null());
        assert_eq!(
            seen.body["metadata"]["annotations"]["lease-rs/pins"],
            "[\"machine-0\"]"
        );
        reply(respond, 201, &stored(&seen.body, 50));
    };
    let (result, ()) = tokio::join!(store.pin_lease(&key, "machine-0"), server);
    result.unwrap();
    // Pinned objects are listed by `pinned`.
    let server = async {
        let (seen, respond) = next(&mut handle, "LIST").await;
        assert_eq!(
            seen.query.get("labelSelector").map(String::as_str),
            Some("app.kubernetes.io/managed-by=lease-rs")
        );
        let object = foreign_lease(&key, 50, "", 1, 0);
        let mut object = object;
        object["metadata"]["annotations"]["lease-rs/pins"] = json!("[\"machine-0\"]");
        reply(
            respond,
            200,
            &json!({"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
                    "metadata": {"resourceVersion": "50"}, "items": [object]}),
        );
    };
    let (result, ()) = tokio::join!(store.pinned(), server);
    assert_eq!(result.unwrap()[&key], vec!["machine-0".to_owned()]);
}

#[tokio::test]
async fn validation_happens_before_any_request() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let bad = Key::new("ns", "model 1", "l");
    let err = store
        .claim_lease(&bad, &Request::new("h", Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(err.is_validation());
    let err = store
        .claim_lease(&key(), &Request::new("h", Duration::ZERO))
        .await
        .unwrap_err();
    assert!(err.is_validation());
    assert!(
        store
            .lease_group("a.b", "m")
            .await
            .unwrap_err()
            .is_validation()
    );
    assert!(
        store
            .revoke_lease(&key(), "h h")
            .await
            .unwrap_err()
            .is_validation()
    );
    assert_quiet(&mut handle).await;
}
