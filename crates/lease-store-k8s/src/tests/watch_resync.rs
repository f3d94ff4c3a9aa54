//! The watch reports itself synced again after an ordinary error (an API server restart, a
//! dropped connection), on the mock API: a follower then stops re-reading.

use super::*;

/// How the first watch fails.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// The server sends an `ERROR` event that is not `410 Gone` (an internal error).
    ErrorEvent,
    /// The watch request fails to connect (the server is restarting).
    Connection,
}

fn lease_list(key: &Key, rv: u64) -> Value {
    json!({"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
           "metadata": {"resourceVersion": rv.to_string()},
           "items": [foreign_lease(key, rv - 10, "leader", 15, 3)]})
}

/// Plays the API server: lists, fails the first watch as `failure` says, and keeps every
/// later watch open (holding its responder). Returns the number of lists served, once the
/// client is gone.
async fn serve(mut handle: Handle, key: Key, failure: Failure) -> usize {
    let mut lists = 0;
    let mut watches = 0;
    let mut open = Vec::new();
    let mut rv = 100;
    loop {
        let Some((request, respond)) = handle.next_request().await else {
            return lists;
        };
        let watching = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true"));
        assert_eq!(request.method(), Method::GET, "{}", request.uri());
        if !watching {
            lists += 1;
            rv += 1;
            reply(respond, 200, &lease_list(&key, rv));
            continue;
        }
        watches += 1;
        if watches > 1 {
            open.push(respond);
            continue;
        }
        match failure {
            Failure::ErrorEvent => {
                let error = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": "etcdserver: leader changed",
                                   "reason": "InternalError", "code": 500});
                respond.send_response(
                    http::Response::builder()
                        .status(200)
                        .body(Body::from(watch_line("ERROR", &error)))
                        .unwrap(),
                );
            }
            Failure::Connection => respond.send_error("connection refused"),
        }
    }
}

async fn resyncs_after(failure: Failure) {
    let (client, handle) = mock();
    let key = key();
    let server = tokio::spawn(serve(handle, key.clone(), failure));
    let mut store = LeaseObjectStore::new(client, NS, test_clock());
    let mut changes = store.change_notifier().expect("a notifier");

    // Synced once, then the error: the store says "changed" while it cannot follow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut saw_unsynced = false;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{failure:?}: the watch never reported synced again (unsynced seen: {saw_unsynced})"
        );
        let _ = timeout(Duration::from_millis(50), changes.changed()).await;
        let synced = store.watch_synced();
        saw_unsynced |= !synced && *changes.borrow() > 0;
        if saw_unsynced && synced {
            break;
        }
    }
    // Back to one quiet watch: after reporting the change once, polls say "no change".
    assert!(store.poll_changes().await.unwrap());
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!store.poll_changes().await.unwrap(), "{failure:?}");
    }
    // And the cache answers again.
    assert_eq!(store.leases(&[]).await.unwrap()[&key].holder, "leader");
    drop(store);
    let lists = timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        lists, 2,
        "{failure:?}: one list, and one more after the error"
    );
}

#[tokio::test]
async fn the_watch_is_synced_again_after_an_error_event() {
    resyncs_after(Failure::ErrorEvent).await;
}

#[tokio::test]
async fn the_watch_is_synced_again_after_a_failed_connection() {
    resyncs_after(Failure::Connection).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_is_synced_again_after_errors_on_a_multi_thread_runtime() {
    for _ in 0..3 {
        resyncs_after(Failure::ErrorEvent).await;
        resyncs_after(Failure::Connection).await;
    }
}
