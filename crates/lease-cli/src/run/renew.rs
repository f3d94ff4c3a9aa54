//! The renewals of `lease run`, on a thread and runtime of their own: a store call may block
//! its thread (SQLite waits for a busy write lock) or hang until the client's timeout
//! (Kubernetes); neither may delay the watchdog, nor the passing on of signals. `lease run`
//! starts the thread when the first renewal is due ([`Renewal::first_due`]): most commands
//! end before, and never pay for it.
//!
//! Each renewal is bounded by the time left in the window (a later answer is worth nothing).
//! The thread reports each success (with the call's *start*) and each refusal to the watchdog,
//! stops renewing once the watchdog gave the lease up, and releases the lease only when told
//! that the command's tree is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use lease_core::{Generation, Key, Request, Store, Timestamp};

use super::timing::Timing;
use super::watchdog::Event;
use crate::backend;
use crate::error::chain;

/// The pause after a renewal that failed transiently, at most.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long the final release may take.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the renewals are about.
#[derive(Clone)]
pub(crate) struct Renewal {
    pub(crate) key: Key,
    pub(crate) holder: String,
    pub(crate) generation: Generation,
    pub(crate) timing: Timing,
    pub(crate) window_start: Timestamp,
}

impl Renewal {
    /// When the first renewal is due: the renewal thread need not run before.
    pub(crate) fn first_due(&self) -> Timestamp {
        self.window_start.saturating_add(self.timing.renew_every())
    }
}

/// The running renewal thread.
pub(crate) struct Renewer {
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Renewer {
    /// Starts renewing on a new thread, which owns `store` from now on.
    ///
    /// # Errors
    ///
    /// When the thread's runtime cannot be built.
    pub(crate) fn start(
        store: Box<dyn Store>,
        renewal: Renewal,
        events: Sender<Event>,
        lost: Arc<AtomicBool>,
    ) -> std::io::Result<Renewer> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            runtime.block_on(renew(store, renewal, events, lost, stop_rx));
            let _ = done_tx.send(());
        });
        Ok(Renewer { stop, done })
    }

    /// Tells the thread that the tree is gone, and waits (at most `limit`) for it to release
    /// the lease. A release that does not come in time is abandoned: the lease then expires.
    pub(crate) async fn finish(self, limit: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(limit, self.done).await;
    }
}

async fn renew(
    mut store: Box<dyn Store>,
    r: Renewal,
    events: Sender<Event>,
    lost: Arc<AtomicBool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let clock = backend::clock();
    let request = Request::new(r.holder.clone(), r.timing.ttl());
    let mut last_ok = r.window_start;
    let mut next = r.first_due();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            () = clock.sleep_until(next) => {}
        }
        if lost.load(Ordering::SeqCst) {
            break;
        }
        let started = clock.now();
        let budget = r
            .timing
            .window_end(last_ok)
            .saturating_duration_since(started);
        if budget.is_zero() {
            break;
        }
        let answer = tokio::select! {
            biased;
            _ = stop.changed() => break,
            a = tokio::time::timeout(budget, store.extend_lease(&r.key, &request)) => a,
        };
        let key = &r.key;
        match answer {
            Ok(Ok(info)) if info.holder == r.holder && info.generation == r.generation => {
                last_ok = started;
                let _ = events.send(Event::Renewed(started));
                next = started.saturating_add(r.timing.renew_every());
                continue;
            }
            Ok(Ok(info)) => {
                let _ = events.send(Event::Lost(format!(
                    "it was taken over by {} (generation {})",
                    info.holder, info.generation
                )));
                break;
            }
            Ok(Err(e)) if e.is_invalid() || e.is_not_held() || e.is_held() => {
                let _ = events.send(Event::Lost(
                    "it was revoked, expired or taken by another holder".to_owned(),
                ));
                break;
            }
            Ok(Err(e)) => eprintln!("lease: warning: renewing lease {key}: {}", chain(&e)),
            Err(_) => eprintln!("lease: warning: renewing lease {key}: no answer in time"),
        }
        next = clock
            .now()
            .saturating_add(RETRY_PAUSE.min(r.timing.renew_every()));
    }
    // Never release while the command may still run: wait for the tree to be gone.
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    match tokio::time::timeout(RELEASE_TIMEOUT, store.revoke_lease(&r.key, &r.holder)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_invalid() || e.is_not_held() => {}
        Ok(Err(e)) => eprintln!(
            "lease: warning: releasing lease {}: {} (it expires on its own)",
            r.key,
            chain(&e)
        ),
        Err(_) => eprintln!(
            "lease: warning: releasing lease {}: no answer in time (it expires on its own)",
            r.key
        ),
    }
}
