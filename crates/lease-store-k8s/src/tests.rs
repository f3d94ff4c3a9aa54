//! Request-shape tests: a `tower_test` mock service plays the API server (as in kube-rs), and
//! each test asserts the method, path, query and body of every request the stores make, then
//! answers with canned responses. No cluster is contacted and no test sleeps for expiry: a
//! hand-driven clock moves the observed time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use kube::client::Body;
use lease_core::{Generation, Key, Request, Store, Timestamp};
use lease_testkit::FakeClock;
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::naming::{ANNOTATION_KEY, LABEL_LEASE, LABEL_MANAGED_BY, object_name};
use crate::{ConfigMapStore, LeaseObjectStore, OwnerPod, StoreOptions};

mod client_go;
mod configmap;
mod fencing;
mod reads;
mod watch;
mod watch_resync;
mod writes;

type Handle = tower_test::mock::Handle<http::Request<Body>, http::Response<Body>>;
type Responder = tower_test::mock::SendResponse<http::Response<Body>>;

const NS: &str = "lease-ns";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/lease-ns/leases";
const CONFIGMAPS: &str = "/api/v1/namespaces/lease-ns/configmaps";

/// The testkit's fake clock, started at an odd instant (as Juju's fake clock is): it moves only
/// when a test advances it.
fn test_clock() -> Arc<FakeClock> {
    Arc::new(FakeClock::starting_at(Timestamp::from_nanos(
        1_000_000 * 1_000_000_000 + 5,
    )))
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

/// One line of a watch stream: an event of `kind` carrying `object`.
fn watch_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    line
}
