//! The watch: followers learn of changes through one watch stream, not by polling.

use super::*;

#[tokio::test]
async fn followers_learn_of_changes_through_one_watch() {
    let (client, mut handle) = mock();
    let clock = test_clock();
    let mut store = LeaseObjectStore::new(client, NS, clock.clone());
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
