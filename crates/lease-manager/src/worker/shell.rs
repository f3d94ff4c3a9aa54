//! The worker's async shell: the `select!` loop that turns channel messages, timers, store
//! change notices and shutdown into [`Machine`] events, and the store calls the machine plans,
//! each guarded by the shutdown grace period. Every decision is the machine's.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{CancellationToken, Clock, Error, Key, Sleep, Store, Timestamp};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::Settings;
use super::command::{Command, Envelope, Work};
use super::decide::{Plan, read_keys};
use super::machine::{Machine, Next};
use super::queue::InFlight;
use super::recorder::Recorder;
use crate::report::Metrics;
use crate::view::SlotTable;

/// Runs store calls until shutdown has been asked for, then gives the call in flight until
/// the end of the grace period before abandoning it.
struct Guard {
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    grace: Duration,
    /// Set once shutdown was noticed during a store call: the end of the grace period.
    deadline: Option<Timestamp>,
    /// A store call was abandoned at the end of the grace period.
    abandoned: bool,
}

impl Guard {
    /// Runs one store call (`call` names it for metrics), recording its latency; `None` when
    /// it was abandoned.
    async fn run<T>(
        &mut self,
        call: &'static str,
        recorder: &Recorder,
        fut: impl Future<Output = T>,
    ) -> Option<T> {
        let start = self.clock.now();
        let mut fut = std::pin::pin!(fut);
        if self.deadline.is_none() {
            tokio::select! {
                biased;
                out = &mut fut => {
                    recorder.store_latency(call, self.clock.now().saturating_duration_since(start));
                    return Some(out);
                }
                () = self.shutdown.cancelled() => {}
            }
        }
        let until = *self
            .deadline
            .get_or_insert_with(|| self.clock.now().saturating_add(self.grace));
        let sleep = self.clock.sleep_until(until);
        tokio::select! {
            biased;
            out = fut => {
                recorder.store_latency(call, self.clock.now().saturating_duration_since(start));
                Some(out)
            }
            () = sleep => {
                self.abandoned = true;
                None
            }
        }
    }
}

/// What woke the worker.
enum Wake {
    Shutdown,
    Closed,
    Batch(Vec<Envelope>),
    Timer,
    Changed,
}

async fn changed(rx: &mut Option<watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The worker task: the store, the channel and the machine; [`Worker::run`] is its body.
pub(crate) struct Worker {
    store: Box<dyn Store>,
    clock: Arc<dyn Clock>,
    rx: mpsc::Receiver<Envelope>,
    change_rx: Option<watch::Receiver<u64>>,
    shutdown: CancellationToken,
    done: CancellationToken,
    guard: Guard,
    machine: Machine,
}

/// What a worker is made of: its store, clock and channel, the manager's lifecycle tokens, and
/// what it shares with the handles.
pub(crate) struct Parts {
    pub(crate) store: Box<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rx: mpsc::Receiver<Envelope>,
    /// Cancelled when the manager is asked to stop.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled by the worker once it has answered everyone and stopped.
    pub(crate) done: CancellationToken,
    pub(crate) settings: Settings,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) slots: Arc<SlotTable>,
    /// The seed of the retry jitter (`None`: random).
    pub(crate) seed: Option<u64>,
}

impl Worker {
    pub(crate) fn new(parts: Parts) -> Worker {
        let Parts {
            mut store,
            clock,
            rx,
            shutdown,
            done,
            settings,
            metrics,
            slots,
            seed,
        } = parts;
        let change_rx = store.change_notifier();
        let guard = Guard {
            clock: Arc::clone(&clock),
            shutdown: shutdown.clone(),
            grace: settings.shutdown_grace,
            deadline: None,
            abandoned: false,
        };
        let machine = Machine::new(settings, Recorder::new(metrics), slots, seed, clock.now());
        Worker {
            store,
            clock,
            rx,
            change_rx,
            shutdown,
            done,
            guard,
            machine,
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The task: serve until shutdown or until every handle is gone, then finish.
    pub(crate) async fn run(mut self) {
        let mut sleep: Option<(Timestamp, Sleep)> = None;
        loop {
            self.machine.update_gauges();
            if self.shutdown.is_cancelled() || self.guard.abandoned {
                break;
            }
            let deadline = match self.machine.next(self.now()) {
                Next::Batch(batch) => {
                    self.serve(batch).await;
                    continue;
                }
                Next::Timers => {
                    self.on_timers().await;
                    continue;
                }
                Next::Refresh => {
                    self.refresh().await;
                    continue;
                }
                Next::Sleep(deadline) => deadline,
            };
            let sleep_fut = match &mut sleep {
                Some((d, s)) if *d == deadline => s,
                _ => {
                    let s = self.clock.sleep_until(deadline);
                    &mut sleep.insert((deadline, s)).1
                }
            };
            // Biased: shutdown first, then requests, timers and change notices, in that order,
            // so a run is the same for the same inputs.
            let wake = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => Wake::Shutdown,
                msg = self.rx.recv() => match msg {
                    Some(first) => {
                        let mut batch = vec![first];
                        while batch.len() < self.machine.settings.max_batch {
                            match self.rx.try_recv() {
                                Ok(m) => batch.push(m),
                                Err(_) => break,
                            }
                        }
                        Wake::Batch(batch)
                    }
                    None => Wake::Closed,
                },
                () = sleep_fut => Wake::Timer,
                ok = changed(&mut self.change_rx) => {
                    if !ok {
                        self.change_rx = None;
                    }
                    Wake::Changed
                }
            };
            match wake {
                Wake::Shutdown | Wake::Closed => break,
                Wake::Batch(batch) => {
                    // No timer while busy: one sleeper at most, and only when idle.
                    sleep = None;
                    let batch = batch.into_iter().map(Work::from_envelope).collect();
                    self.serve(batch).await;
                }
                Wake::Timer => sleep = None,
                Wake::Changed => self.machine.change_noticed(self.change_rx.is_some()),
            }
        }
        drop(sleep);
        self.finish();
    }

    /// Answers everyone `Aborted` and closes the channel.
    fn finish(mut self) {
        tracing::debug!("lease manager stopping");
        self.rx.close();
        self.machine.finish();
        while let Ok(env) = self.rx.try_recv() {
            env.command.fail(Error::Aborted);
        }
        self.done.cancel();
    }

    /// A timer fired: retries are queued, waiters' expiries confirmed, and the refresh and
    /// housekeeping done when due.
    async fn on_timers(&mut self) {
        let expiring = self.machine.timers_due(self.now());
        if !expiring.is_empty() && !self.reread(&expiring).await {
            // Could not confirm: try again after a refresh interval.
            self.machine.expiry_unconfirmed(expiring, self.now());
        }
        let now = self.now();
        if self.machine.refresh_due(now) {
            self.refresh().await;
        }
        self.machine.housekeeping_due(now);
    }

    /// Asks the store whether others changed it and, if so, re-reads what the machine says.
    async fn refresh(&mut self) {
        if !self.machine.has_interest() {
            return;
        }
        let recorder = &self.machine.recorder;
        let Some(polled) = self
            .guard
            .run("poll_changes", recorder, self.store.poll_changes())
            .await
        else {
            return;
        };
        let Some(keys) = self.machine.polled(polled, self.now()) else {
            return;
        };
        let mut read_all = true;
        for chunk in keys.chunks(1024) {
            read_all &= self.reread(chunk).await;
        }
        self.machine.refreshed(read_all);
    }

    /// Reads `keys` into the machine; whether the read succeeded.
    async fn reread(&mut self, keys: &[Key]) -> bool {
        let recorder = &self.machine.recorder;
        match self
            .guard
            .run("leases", recorder, self.store.leases(keys))
            .await
        {
            None => false,
            Some(read) => self.machine.reread(keys, read, self.now()),
        }
    }

    /// Serves one batch: claims, extends and revokes go to the store as one `apply`; checks
    /// and waits that need the store share one `leases` read; the rest follow one by one.
    async fn serve(&mut self, batch: Vec<Work>) {
        let Plan {
            apply,
            reads,
            singles,
        } = self.machine.plan(batch, self.now());
        if !apply.ops.is_empty() {
            self.apply(apply).await;
        }
        if !reads.is_empty() {
            self.read(reads).await;
        }
        for (command, span) in singles {
            self.single(command).instrument(span).await;
        }
    }

    /// Applies a batch's ops, re-reads what their results leave in doubt, and lets the machine
    /// decide the rest.
    async fn apply(&mut self, InFlight { ops, pendings }: InFlight) {
        let recorder = &self.machine.recorder;
        recorder.batch(ops.len());
        let results = self
            .guard
            .run("apply", recorder, self.store.apply(ops))
            .await;
        let reread = self.machine.applied(pendings, results, self.now());
        let fresh = reread.is_empty() || self.reread(&reread).await;
        self.machine.reread_done(fresh, self.now());
    }

    /// Checks and waits that need the store: one read for all of them.
    async fn read(&mut self, reads: Vec<(Command, tracing::Span)>) {
        let keys = read_keys(&reads);
        let recorder = &self.machine.recorder;
        let read = self
            .guard
            .run("leases", recorder, self.store.leases(&keys))
            .await;
        self.machine.reads_answered(reads, &keys, read, self.now());
    }

    /// Pins, unpins and group reads, one store call each.
    async fn single(&mut self, command: Command) {
        let recorder = &self.machine.recorder;
        match command {
            Command::Pin { key, entity, reply } => {
                let out = self
                    .guard
                    .run("pin_lease", recorder, self.store.pin_lease(&key, &entity))
                    .await;
                let result = self.machine.settle(out, "pinning");
                if result.is_ok() {
                    self.machine.pinned(&key);
                }
                let _ = reply.send(result);
            }
            Command::Unpin { key, entity, reply } => {
                let out = self
                    .guard
                    .run(
                        "unpin_lease",
                        recorder,
                        self.store.unpin_lease(&key, &entity),
                    )
                    .await;
                let result = self.machine.settle(out, "unpinning");
                // Other entities may still pin it: ask the store, then reschedule expiry. If
                // that read fails, the waiters (whose pinned lease had no expiry timer) would
                // wait forever: read again a refresh interval later.
                if result.is_ok()
                    && self.machine.unpinned(&key)
                    && !self.reread(std::slice::from_ref(&key)).await
                {
                    self.machine.expiry_unconfirmed(vec![key], self.now());
                }
                let _ = reply.send(result);
            }
            Command::Pinned {
                namespace,
                model,
                reply,
            } => {
                let out = self
                    .guard
                    .run("pinned", recorder, self.store.pinned())
                    .await;
                let result = self.machine.settle(out, "reading pins").map(|all| {
                    all.into_iter()
                        .filter(|(k, _)| k.namespace == namespace && k.model == model)
                        .collect()
                });
                let _ = reply.send(result);
            }
            Command::LeaseGroup {
                namespace,
                model,
                reply,
            } => {
                let out = self
                    .guard
                    .run(
                        "lease_group",
                        recorder,
                        self.store.lease_group(&namespace, &model),
                    )
                    .await;
                let result = self.machine.settle(out, "reading a lease group");
                if let Ok(group) = &result {
                    self.machine
                        .group_read(&namespace, &model, group, self.now());
                }
                let _ = reply.send(result);
            }
            other => other.fail(Error::Aborted),
        }
    }
}
