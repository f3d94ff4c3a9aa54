//! Running a future to completion on the calling thread, outside any runtime: for the SQLite
//! store's calls, which then run inline (see `Calls` in the parent module). A future that waits
//! for something only a runtime provides (a timer, a socket) would wait forever here: only
//! calls known to need none come here.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

/// Wakes the thread that polls.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread until it is ready, parking between polls.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_future_woken_from_another_thread_completes() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.send(7).unwrap();
        });
        assert_eq!(block_on(rx), Ok(7));
        sender.join().unwrap();
    }

    #[test]
    fn sqlite_calls_complete_outside_a_runtime() {
        use lease_core::{Key, Request, Store as _};
        let dir = tempfile::tempdir().unwrap();
        let mut store = lease_store_sqlite::SqliteStore::open(dir.path().join("l.db")).unwrap();
        let key = Key::new("default", "default", "job");
        let info = block_on(
            store.claim_lease(&key, &Request::new("me", std::time::Duration::from_secs(5))),
        )
        .unwrap();
        assert_eq!(info.holder, "me");
        block_on(store.revoke_lease(&key, "me")).unwrap();
    }
}
