//! Request-shape tests: a `tower_test` mock service plays the API server (as in kube-rs), and
//! each test asserts the method, path, query and body of every request the stores make, then
//! answers with canned responses. No cluster is contacted and no test sleeps for expiry: a
//! hand-driven clock moves the observed time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use kube::client::Body;
use lease_core::{Clock, Generation, Key, Request, Sleep, Store, Timestamp};
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::naming::{ANNOTATION_KEY, LABEL_LEASE, LABEL_MANAGED_BY, object_name};
use crate::{ConfigMapStore, LeaseStore, OwnerPod, StoreOptions};

mod fencing;
mod watch_resync;

type Handle = tower_test::mock::Handle<http::Request<Body>, http::Response<Body>>;
type Responder = tower_test::mock::SendResponse<http::Response<Body>>;

const NS: &str = "lease-ns";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/lease-ns/leases";
const CONFIGMAPS: &str = "/api/v1/namespaces/lease-ns/configmaps";

/// A clock that moves only when told to.
#[derive(Debug)]
struct TestClock(Mutex<Timestamp>);

impl TestClock {
    fn new() -> Arc<TestClock> {
        // An odd instant, as Juju's fake clock uses.
        Arc::new(TestClock(Mutex::new(Timestamp::from_nanos(
            1_000_000 * 1_000_000_000 + 5,
        ))))
    }
    fn advance(&self, d: Duration) {
        let mut now = self.0.lock().unwrap();
        *now = now.saturating_add(d);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        if self.now() >= deadline {
            Box::pin(std::future::ready(()))
        } else {
            Box::pin(std::future::pending())
        }
    }
}

fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// One request as the server saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The next request, or a panic naming what was expected.
async fn next(handle: &mut Handle, what: &str) -> (Seen, Responder) {
    let (request, respond) = timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request; expected {what}"))
        .unwrap_or_else(|| panic!("client gone; expected {what}"));
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    let query = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let seen = Seen {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query,
        body,
    };
    (seen, respond)
}

/// Asserts that the client makes no further request.
async fn assert_quiet(handle: &mut Handle) {
    match timeout(Duration::from_millis(100), handle.next_request()).await {
        Err(_) | Ok(None) => {}
        Ok(Some((request, _))) => {
            panic!("unexpected request {} {}", request.method(), request.uri())
        }
    }
}

fn reply(respond: Responder, code: u16, body: &Value) {
    let response = http::Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    respond.send_response(response);
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    })
}

/// The request body as the server would store it: with a resource version.
fn stored(body: &Value, rv: u64) -> Value {
    let mut object = body.clone();
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    object["metadata"]["namespace"] = json!(NS);
    object
}

fn key() -> Key {
    Key::new("application-leadership", "model-1", "mysql")
}

fn lease_path(key: &Key) -> String {
    format!("{LEASES}/{}", object_name(key))
}

/// A Lease held by `holder` as another process (or client-go) wrote it.
fn foreign_lease(key: &Key, rv: u64, holder: &str, secs: i64, transitions: i64) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {
            "name": object_name(key), "namespace": NS, "resourceVersion": rv.to_string(),
            "labels": {LABEL_MANAGED_BY: "lease-rs"},
            "annotations": {ANNOTATION_KEY: serde_json::to_string(key).unwrap()},
        },
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": secs,
            "acquireTime": "2020-01-01T00:00:00.000000Z", "renewTime": "2020-01-01T00:00:00.000000Z",
            "leaseTransitions": transitions,
        }
    })
}

/// Serves a claim of an absent lease (GET 404, POST) and returns the created object.
async fn serve_absent_claim(handle: &mut Handle, key: &Key, rv: u64) -> Value {
    let (seen, respond) = next(handle, "GET of the lease").await;
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.path, lease_path(key));
    reply(respond, 404, &status(404, "NotFound", "leases not found"));
    let (seen, respond) = next(handle, "POST creating the lease").await;
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, LEASES);
    assert!(seen.body["metadata"]["resourceVersion"].is_null());
    let object = stored(&seen.body, rv);
    reply(respond, 201, &object);
    object
}

#[tokio::test]
async fn claim_of_an_absent_lease_gets_then_creates() {
    let (client, mut handle) = mock();
    let clock = TestClock::new();
    let start = clock.now();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let options = StoreOptions::default().request_timeout(Duration::from_millis(50));
    let mut store = LeaseStore::with_options(client, NS, clock.clone(), options);
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

#[tokio::test]
async fn lease_group_is_one_label_selected_list() {
    let (client, mut handle) = mock();
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
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

fn watch_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    line
}

#[tokio::test]
async fn followers_learn_of_changes_through_one_watch() {
    let (client, mut handle) = mock();
    let clock = TestClock::new();
    let mut store = LeaseStore::new(client, NS, clock.clone());
    let key = key();
    let mut changes = store.change_notifier().expect("a notifier");
    let before = *changes.borrow();

    // The watcher lists, then watches from the list's version.
    let (seen, respond) = next(&mut handle, "initial LIST").await;
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.path, LEASES);
    assert!(!seen.query.contains_key("watch"));
    assert_eq!(
        seen.query.get("labelSelector").map(String::as_str),
        Some("app.kubernetes.io/managed-by=lease-rs")
    );
    reply(
        respond,
        200,
        &json!({"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
                "metadata": {"resourceVersion": "100"},
                "items": [foreign_lease(&key, 90, "leader", 15, 3)]}),
    );
    let (seen, respond) = next(&mut handle, "WATCH").await;
    assert_eq!(seen.query.get("watch").map(String::as_str), Some("true"));
    assert_eq!(
        seen.query.get("resourceVersion").map(String::as_str),
        Some("100")
    );
    // One renewal event, then the stream ends.
    let renewed = {
        let mut o = foreign_lease(&key, 101, "leader", 15, 3);
        o["spec"]["renewTime"] = json!("2020-01-01T00:00:02.000000Z");
        o
    };
    respond.send_response(
        http::Response::builder()
            .status(200)
            .body(Body::from(watch_line("MODIFIED", &renewed)))
            .unwrap(),
    );
    // The watcher resumes from the last version it saw.
    let (seen, respond) = next(&mut handle, "resumed WATCH").await;
    assert_eq!(seen.query.get("watch").map(String::as_str), Some("true"));
    assert_eq!(
        seen.query.get("resourceVersion").map(String::as_str),
        Some("101")
    );

    timeout(Duration::from_secs(5), changes.wait_for(|n| *n != before))
        .await
        .expect("the watch bumps the counter")
        .unwrap();
    assert!(store.watch_synced());
    // Answers from the watch's cache: no request.
    assert!(store.poll_changes().await.unwrap());
    assert!(!store.poll_changes().await.unwrap());
    let leases = store.leases(&[]).await.unwrap();
    assert_eq!(leases[&key].holder, "leader");
    let group = store.lease_group(&key.namespace, &key.model).await.unwrap();
    assert_eq!(group.len(), 1);
    assert_quiet(&mut handle).await;

    // 410 Gone: the watcher re-lists.
    let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "message": "too old resource version", "reason": "Expired", "code": 410});
    respond.send_response(
        http::Response::builder()
            .status(200)
            .body(Body::from(watch_line("ERROR", &gone)))
            .unwrap(),
    );
    let (seen, _respond) = next(&mut handle, "re-LIST after 410").await;
    assert_eq!(seen.method, Method::GET);
    assert!(!seen.query.contains_key("watch"), "{seen:?}");
    // While re-listing, snapshots no longer come from the cache.
    assert!(store.poll_changes().await.unwrap());
    drop(store);
}

#[tokio::test]
async fn configmap_lock_shape() {
    let (client, mut handle) = mock();
    let clock = TestClock::new();
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
    let clock = TestClock::new();
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
    let clock = TestClock::new();
    let key = key();
    let options = StoreOptions::default().object_for(key.clone(), "my-controller-lock");
    let mut store = LeaseStore::with_options(client, NS, clock.clone(), options);
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

#[tokio::test]
async fn configmap_lock_acquires_the_named_configmap_and_releases_it() {
    let (client, mut handle) = mock();
    let clock = TestClock::new();
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
        .with_clock(TestClock::new());
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
