//! Request-shape tests of the fencing generation across deletion and re-creation of the
//! object, client-go takeovers and hand edits (see [`crate::generation`]), on the mock API.

use super::*;
use crate::generation::wall_clock_generation;
use crate::naming::ANNOTATION_GENERATION;

/// The generation our write of `body` recorded in its annotation.
fn annotated(body: &Value) -> (u64, u32) {
    let text = body["metadata"]["annotations"][ANNOTATION_GENERATION]
        .as_str()
        .unwrap_or_else(|| panic!("no generation annotation: {body}"));
    let v: Value = serde_json::from_str(text).unwrap();
    (
        v["generation"].as_u64().unwrap(),
        u32::try_from(v["leaseTransitions"].as_u64().unwrap()).unwrap(),
    )
}

/// Waits until the wall clock is past generation `g` (a microsecond at most).
fn wall_clock_past(g: u64) {
    while wall_clock_generation() <= g {
        std::hint::spin_loop();
    }
}

#[tokio::test]
async fn a_deleted_and_recreated_lease_never_goes_backwards() {
    let key = key();
    let request = Request::new("unit-0", Duration::from_secs(15));

    // Process A claims: the new object's generation starts from the wall clock, in the
    // annotation, while leaseTransitions stays client-go's small counter.
    let (client, mut handle) = mock();
    let mut a = LeaseObjectStore::new(client, NS, test_clock());
    let before = wall_clock_generation();
    let (result, _) = tokio::join!(
        a.claim_lease(&key, &request),
        serve_absent_claim(&mut handle, &key, 10)
    );
    let first = result.unwrap().generation;
    assert!(
        first.get() >= before,
        "{first} below the wall clock {before}"
    );

    // The object is deleted (kubectl, Helm) while A is paused. Process B, which never saw it,
    // creates it again: its first claim is above A's.
    wall_clock_past(first.get());
    let (client, mut handle_b) = mock();
    let mut b = LeaseObjectStore::new(client, NS, test_clock());
    let server = async {
        let object = serve_absent_claim(&mut handle_b, &key, 3).await;
        assert_eq!(object["spec"]["leaseTransitions"], 1);
        let (g, t) = annotated(&object);
        assert_eq!(t, 1);
        g
    };
    let (result, written) = tokio::join!(b.claim_lease(&key, &request), server);
    let second = result.unwrap().generation;
    assert_eq!(second.get(), written);
    assert!(second > first, "{second} after {first}");
}

#[tokio::test]
async fn a_process_that_saw_a_higher_generation_stays_above_it_after_deletion() {
    // A Lease written by a host whose clock ran eleven days ahead: its generation is above
    // our wall clock. After the object is deleted, our claim still goes above it because this
    // process saw it, whatever our clock says.
    let key = key();
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let ahead = wall_clock_generation() + 1_000_000_000_000;
    let mut object = foreign_lease(&key, 40, "other", 15, 9);
    object["metadata"]["annotations"][ANNOTATION_GENERATION] =
        json!(crate::generation::annotation(ahead, 9));
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        reply(respond, 200, &object);
    };
    let (result, ()) = tokio::join!(store.leases(std::slice::from_ref(&key)), server);
    assert_eq!(result.unwrap()[&key].generation, Generation(ahead));

    // Deleted: the next GET finds nothing, and the claim creates it above `ahead`.
    let server = async {
        let (seen, respond) = next(&mut handle, "GET").await;
        assert_eq!(seen.method, Method::GET);
        reply(respond, 404, &status(404, "NotFound", "gone"));
    };
    let (result, ()) = tokio::join!(store.leases(std::slice::from_ref(&key)), server);
    assert!(result.unwrap().is_empty());
    clock.advance(Duration::from_secs(60));
    let request = Request::new("me", Duration::from_secs(15));
    let (result, object) = tokio::join!(
        store.claim_lease(&key, &request),
        serve_absent_claim(&mut handle, &key, 41)
    );
    let info = result.unwrap();
    assert_eq!(info.generation, Generation(ahead + 1));
    assert_eq!(annotated(&object), (ahead + 1, 1));
    assert_quiet(&mut handle).await;
}

#[tokio::test]
async fn client_go_takeovers_between_ours_count_on() {
    // Our claim wrote generation g with leaseTransitions 5; client-go then took over twice
    // (it keeps our annotations and adds one to leaseTransitions each time) and holds it.
    let key = key();
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let g = wall_clock_generation() + 1_000_000_000;
    let mut object = foreign_lease(&key, 50, "go-2", 15, 7);
    object["metadata"]["annotations"][ANNOTATION_GENERATION] =
        json!(crate::generation::annotation(g, 5));
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        reply(respond, 200, &object);
    };
    let (result, ()) = tokio::join!(store.leases(std::slice::from_ref(&key)), server);
    let info = &result.unwrap()[&key];
    assert_eq!(info.holder, "go-2");
    assert_eq!(info.generation, Generation(g + 2));

    // Its claim runs out unrenewed; ours is one more, and client-go's counter one more too.
    clock.advance(Duration::from_secs(15));
    let server = async {
        let (seen, respond) = next(&mut handle, "PUT claiming").await;
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.body["spec"]["leaseTransitions"], 8);
        assert_eq!(annotated(&seen.body), (g + 3, 8));
        reply(respond, 200, &stored(&seen.body, 51));
    };
    let request = Request::new("rust-1", Duration::from_secs(15));
    let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
    assert_eq!(result.unwrap().generation, Generation(g + 3));

    // A renewal keeps both.
    let server = async {
        let (seen, respond) = next(&mut handle, "PUT renewing").await;
        assert_eq!(seen.body["spec"]["leaseTransitions"], 8);
        assert_eq!(annotated(&seen.body), (g + 3, 8));
        reply(respond, 200, &stored(&seen.body, 52));
    };
    let (result, ()) = tokio::join!(store.extend_lease(&key, &request), server);
    assert_eq!(result.unwrap().generation, Generation(g + 3));
    assert_quiet(&mut handle).await;
}

/// Hand edits that make a Lease's generation unreadable, with the lower bound it reads as.
fn unreadable_generations(key: &Key, g: u64) -> Vec<(&'static str, Value)> {
    let ours = |t: i64| {
        let mut o = foreign_lease(key, 60, "unit-0", 15, t);
        o["metadata"]["annotations"][ANNOTATION_GENERATION] =
            json!(crate::generation::annotation(g, 5));
        o
    };
    let mut garbage = ours(5);
    garbage["metadata"]["annotations"][ANNOTATION_GENERATION] = json!("{not json");
    let mut missing = ours(5);
    missing["spec"]
        .as_object_mut()
        .unwrap()
        .remove("leaseTransitions");
    vec![
        ("counter below the annotation's", ours(2)),
        ("negative counter", ours(-1)),
        ("missing counter", missing),
        ("garbage annotation", garbage),
    ]
}

#[tokio::test]
async fn an_unreadable_generation_is_never_lowered() {
    let key = key();
    let g = wall_clock_generation() + 1_000_000_000;
    for (what, object) in unreadable_generations(&key, g) {
        let (client, mut handle) = mock();
        let clock = test_clock();
        let mut store = LeaseObjectStore::new(client, NS, clock.clone());
        // Still held by the holder it names: nobody else gets it...
        let server = async {
            let (_, respond) = next(&mut handle, "GET").await;
            reply(respond, 200, &object);
        };
        let other = Request::new("unit-1", Duration::from_secs(15));
        let (result, ()) = tokio::join!(store.claim_lease(&key, &other), server);
        assert!(result.unwrap_err().is_held(), "{what}");
        // ...but its holder cannot extend it (that would keep a generation we cannot read,
        // and write it lower): refused after a fresh read, and nothing written.
        let server = async {
            let (seen, respond) = next(&mut handle, "GET confirming").await;
            assert_eq!(seen.method, Method::GET, "{what}");
            reply(respond, 200, &object);
        };
        let request = Request::new("unit-0", Duration::from_secs(15));
        let (result, ()) = tokio::join!(store.extend_lease(&key, &request), server);
        assert!(result.unwrap_err().is_invalid(), "{what}");
        assert_quiet(&mut handle).await;

        // Once it runs out, the next claim is above what the object still says and above the
        // wall clock; the counter starts again from a valid value.
        clock.advance(Duration::from_secs(15));
        let floor = wall_clock_generation();
        let server = async {
            let (seen, respond) = next(&mut handle, "PUT claiming").await;
            assert_eq!(seen.method, Method::PUT, "{what}");
            let t = seen.body["spec"]["leaseTransitions"].as_i64().unwrap();
            assert!(t >= 1, "{what}: {t}");
            let (written, counter) = annotated(&seen.body);
            assert_eq!(i64::from(counter), t, "{what}");
            reply(respond, 200, &stored(&seen.body, 61));
            written
        };
        let (result, written) = tokio::join!(store.claim_lease(&key, &other), server);
        let info = result.unwrap();
        assert_eq!(info.generation.get(), written, "{what}");
        assert!(info.generation.get() >= floor, "{what}: {info:?}");
        // Above what the object still says (a garbage annotation says nothing).
        if what != "garbage annotation" {
            assert!(info.generation.get() > g, "{what}: {info:?}");
        }
    }
}

#[tokio::test]
async fn configmaps_seed_and_refuse_to_extend_an_unreadable_generation() {
    let key = key();
    let path = format!("{CONFIGMAPS}/{}", object_name(&key));
    let held = |generation: Value| {
        let mut object = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": object_name(&key), "namespace": NS, "resourceVersion": "70",
                         "annotations": {ANNOTATION_KEY: serde_json::to_string(&key).unwrap()}},
            "data": {"holderIdentity": "pod-a", "leaseDurationSeconds": "30",
                     "leaseTransitions": generation},
        });
        if generation.is_null() {
            object["data"]
                .as_object_mut()
                .unwrap()
                .remove("leaseTransitions");
        }
        object
    };
    for (what, object) in [
        ("negative", held(json!("-3"))),
        ("garbage", held(json!("many"))),
        ("missing", held(Value::Null)),
    ] {
        let (client, mut handle) = mock();
        let clock = test_clock();
        let mut store = ConfigMapStore::builder(client, NS, clock.clone())
            .owner(None)
            .build();
        let server = async {
            let (seen, respond) = next(&mut handle, "GET").await;
            assert_eq!(seen.path, path);
            reply(respond, 200, &object);
        };
        let (result, ()) = tokio::join!(store.leases(std::slice::from_ref(&key)), server);
        assert_eq!(result.unwrap()[&key].holder, "pod-a", "{what}");
        let server = async {
            let (_, respond) = next(&mut handle, "GET confirming").await;
            reply(respond, 200, &object);
        };
        let request = Request::new("pod-a", Duration::from_secs(30));
        let (result, ()) = tokio::join!(store.extend_lease(&key, &request), server);
        assert!(result.unwrap_err().is_invalid(), "{what}");

        clock.advance(Duration::from_secs(30));
        let floor = wall_clock_generation();
        let server = async {
            let (seen, respond) = next(&mut handle, "PUT claiming").await;
            assert_eq!(seen.method, Method::PUT);
            reply(respond, 200, &stored(&seen.body, 71));
        };
        let request = Request::new("pod-b", Duration::from_secs(30));
        let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
        assert!(result.unwrap().generation.get() >= floor, "{what}");
    }
}

#[tokio::test]
async fn a_deleted_configmap_is_recreated_above_the_old_generation() {
    let key = key();
    let request = Request::new("pod-a", Duration::from_secs(30));
    let (client, mut handle) = mock();
    let mut a = ConfigMapStore::builder(client, NS, test_clock())
        .owner(None)
        .build();
    let (result, ()) = tokio::join!(
        a.claim_lease(&key, &request),
        serve_configmap_create(&mut handle)
    );
    let first = result.unwrap().generation;
    // The owner pod is deleted and the garbage collector deletes the ConfigMap with it.
    wall_clock_past(first.get());
    let (client, mut handle) = mock();
    let mut b = ConfigMapStore::builder(client, NS, test_clock())
        .owner(None)
        .build();
    let (result, ()) = tokio::join!(
        b.claim_lease(&key, &request),
        serve_configmap_create(&mut handle)
    );
    assert!(result.unwrap().generation > first);
}

/// Serves a claim of an absent ConfigMap (GET 404, POST).
async fn serve_configmap_create(handle: &mut Handle) {
    let (seen, respond) = next(handle, "GET").await;
    assert_eq!(seen.method, Method::GET);
    reply(respond, 404, &status(404, "NotFound", "not found"));
    let (seen, respond) = next(handle, "POST").await;
    assert_eq!(seen.method, Method::POST);
    reply(respond, 201, &stored(&seen.body, 5));
}

#[tokio::test]
async fn a_claimant_that_saw_the_holder_does_not_recreate_a_deleted_lease_under_it() {
    let key = key();
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
    let request = Request::new("follower", Duration::from_secs(15));
    // The follower sees the leader's claim.
    let held = foreign_lease(&key, 80, "leader", 15, 2);
    let server = async {
        let (_, respond) = next(&mut handle, "GET").await;
        reply(respond, 200, &held);
    };
    let (result, ()) = tokio::join!(store.leases(std::slice::from_ref(&key)), server);
    assert_eq!(result.unwrap()[&key].holder, "leader");

    // Someone deletes the Lease; the leader does not know yet and keeps acting until its claim
    // runs out. The follower's claim is refused (confirmed absent by a read), not a create.
    clock.advance(Duration::from_secs(5));
    for _ in 0..2 {
        let server = async {
            let (seen, respond) = next(&mut handle, "GET").await;
            assert_eq!(seen.method, Method::GET);
            reply(respond, 404, &status(404, "NotFound", "gone"));
        };
        let (result, ()) = tokio::join!(store.claim_lease(&key, &request), server);
        let err = result.unwrap_err();
        assert!(err.is_held(), "{err}");
        assert_quiet(&mut handle).await;
        clock.advance(Duration::from_secs(9));
    }
    // 18 s after it was seen, the leader's 15 s claim has run out: created, above it.
    let (result, _) = tokio::join!(
        store.claim_lease(&key, &request),
        serve_absent_claim(&mut handle, &key, 81)
    );
    assert!(result.unwrap().generation > Generation(2));
}
