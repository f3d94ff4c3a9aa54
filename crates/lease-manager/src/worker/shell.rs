//! The worker's async shell: the `select!` loop that turns channel messages, timers, store
//! change notices and shutdown into [`Machine`] events, and makes the store calls the machine
//! asks for ([`Effect`]s), each guarded by the shutdown grace period, handing their results
//! back; and sends the answers the machine held from the last call once the next one has
//! started, or before it waits. Every decision is the machine's.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{CancellationToken, Clock, Error, Op, Sleep, StartedApply, Store, Timestamp};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::command::Envelope;
use super::machine::Machine;
use super::pending::Work;
use super::recorder::Recorder;
use super::state::Settings;
use super::task::{Effect, Returned};
use crate::metric::report::Counters;
use crate::window::SlotTable;

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
        let (out, latency) = self.run_timed(fut).await?;
        recorder.store_latency(call, latency);
        Some(out)
    }

    /// Runs one store call: its output and how long it took; `None` when it was abandoned.
    async fn run_timed<T>(&mut self, fut: impl Future<Output = T>) -> Option<(T, Duration)> {
        let start = self.clock.now();
        let mut fut = std::pin::pin!(fut);
        if self.deadline.is_none() {
            tokio::select! {
                biased;
                out = &mut fut => {
                    return Some((out, self.clock.now().saturating_duration_since(start)));
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
            out = fut => Some((out, self.clock.now().saturating_duration_since(start))),
            () = sleep => {
                self.abandoned = true;
                None
            }
        }
    }
}

/// The store call of the batch the machine planned ahead: started on the store
/// ([`Store::start_apply`]), or its ops, when the store could not start it, to apply once the
/// machine asks for its results ([`Effect::Ahead`]).
enum AheadCall {
    Started(StartedApply),
    NotStarted(Vec<Op>),
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
    /// Whether the store starts batches ahead ([`Store::start_apply`]); false once it said it
    /// cannot.
    pipelined: bool,
    /// The batch planned ahead of the results of the `apply` in flight.
    ahead: Option<AheadCall>,
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
    pub(crate) counters: Arc<Counters>,
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
            counters,
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
        let machine = Machine::new(settings, Recorder::new(counters), slots, seed, clock.now());
        Worker {
            store,
            clock,
            rx,
            change_rx,
            shutdown,
            done,
            guard,
            machine,
            pipelined: true,
            ahead: None,
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The task: serve until shutdown or until every handle is gone, then finish.
    pub(crate) async fn run(mut self) {
        let mut sleep: Option<(Timestamp, Sleep)> = None;
        loop {
            if self.machine.between_tasks() {
                self.machine.update_gauges();
                if self.shutdown.is_cancelled() || self.guard.abandoned {
                    break;
                }
            }
            let deadline = match self.machine.poll(self.now()) {
                Effect::Idle(deadline) => deadline,
                Effect::Ended => continue,
                effect => {
                    let returned = self.store_call(effect).await;
                    self.machine.returned(returned, self.now());
                    continue;
                }
            };
            if self.machine.holds_answers() {
                // Requests that came while the store worked are taken now, as the biased
                // `select!` below would, so the held answers go out once the store has their
                // batch (`call`). Shutdown first, as there.
                if !self.shutdown.is_cancelled() {
                    let batch = self.take_waiting_requests();
                    if !batch.is_empty() {
                        sleep = None;
                        self.machine.arrived(batch, self.now());
                        continue;
                    }
                }
                self.machine.take_answers().send(self.machine.recorder());
            }
            let sleep_fut = match &mut sleep {
                Some((d, s)) if *d == deadline => s,
                _ => {
                    // Idle until the maximum instant is idle for ever (see `State::next`): a
                    // clock reading it would end that sleep at once, and the loop would spin.
                    let s: lease_core::Sleep = if deadline == Timestamp::MAX {
                        Box::pin(std::future::pending())
                    } else {
                        self.clock.sleep_until(deadline)
                    };
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
                        let mut batch =
                            Vec::with_capacity(1 + self.rx.len().min(self.machine.max_batch()));
                        batch.push(first);
                        self.take_more_requests(&mut batch);
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
                    self.machine.arrived(batch, self.now());
                }
                Wake::Timer => sleep = None,
                Wake::Changed => self.machine.change_noticed(self.change_rx.is_some()),
            }
        }
        drop(sleep);
        self.finish();
    }

    /// The requests waiting in the channel, up to a batch, as the machine's work.
    fn take_waiting_requests(&mut self) -> Vec<Work> {
        let mut batch = Vec::with_capacity(self.rx.len().min(self.machine.max_batch()));
        self.take_more_requests(&mut batch);
        batch.into_iter().map(Work::from_envelope).collect()
    }

    /// Adds requests waiting in the channel to `batch`, up to a batch.
    fn take_more_requests(&mut self, batch: &mut Vec<Envelope>) {
        while batch.len() < self.machine.max_batch() {
            match self.rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
    }

    /// Answers everyone `Aborted` and closes the channel.
    fn finish(mut self) {
        tracing::debug!("lease manager stopping");
        self.rx.close();
        let now = self.now();
        self.machine.finish(now);
        while let Ok(env) = self.rx.try_recv() {
            env.command.fail(Error::Aborted);
        }
        self.done.cancel();
    }

    /// Makes the store call `effect` asks for: a batch is started on the store when it can
    /// start batches ahead ([`Worker::apply_pipelined`]), the batch planned ahead is awaited
    /// where it was started, anything else is one guarded call ([`Worker::call`]).
    async fn store_call(&mut self, effect: Effect) -> Option<Returned> {
        match effect {
            Effect::Ahead => match self.ahead.take() {
                Some(AheadCall::Started(results)) => self.apply_pipelined(results).await,
                Some(AheadCall::NotStarted(ops)) => self.call(Effect::Apply(ops)).await,
                // Unreachable: the machine plans ahead only through the shell.
                None => Some(Returned::Applied(Vec::new())),
            },
            Effect::Apply(ops) if self.pipelined => match self.store.start_apply(ops) {
                Ok(results) => self.apply_pipelined(results).await,
                Err(ops) => {
                    self.pipelined = false;
                    self.call(Effect::Apply(ops)).await
                }
            },
            effect => self.call(effect).await,
        }
    }

    /// Waits for a batch started on the store (`results`), guarded, after sending the answers
    /// held from the last call. Meanwhile it takes the requests that come: once half as many
    /// have come as callers were just answered (those callers' next requests, most likely), or
    /// a whole batch, and the machine can plan ahead, the next batch is planned and started at
    /// once, so the store goes on to it as soon as this one commits. Requests taken but not
    /// planned by then are queued in the machine. Half, not all: waiting for the last callers
    /// left the store idle more often than a smaller batch costs (interleaved runs, 16 and 256
    /// claimers, BENCHMARKS.md).
    async fn apply_pipelined(&mut self, results: StartedApply) -> Option<Returned> {
        let answers = self.machine.take_answers();
        let max = self.machine.max_batch();
        let want = answers.len().div_ceil(2).clamp(1, max);
        answers.send(self.machine.recorder());
        let mut taken: Vec<Work> = Vec::new();
        let mut open = true;
        let clock = Arc::clone(&self.clock);
        let mut call = std::pin::pin!(self.guard.run_timed(results));
        let out = loop {
            let take = open
                && self.ahead.is_none()
                && !self.shutdown.is_cancelled()
                && self.machine.can_plan_ahead(clock.now());
            tokio::select! {
                biased;
                out = &mut call => break out,
                msg = self.rx.recv(), if take => {
                    let Some(first) = msg else {
                        open = false;
                        continue;
                    };
                    taken.push(Work::from_envelope(first));
                    while taken.len() < max {
                        match self.rx.try_recv() {
                            Ok(env) => taken.push(Work::from_envelope(env)),
                            Err(_) => break,
                        }
                    }
                    if taken.len() < want {
                        // The callers still to come are runnable tasks of this runtime: let
                        // them run before looking again, rather than being woken by each one.
                        tokio::task::yield_now().await;
                    } else {
                        let now = clock.now();
                        if let Some(ops) = self.machine.plan_ahead(std::mem::take(&mut taken), now) {
                            self.ahead = Some(match self.store.start_apply(ops) {
                                Ok(results) => AheadCall::Started(results),
                                Err(ops) => AheadCall::NotStarted(ops),
                            });
                        }
                    }
                }
            }
        };
        if !taken.is_empty() {
            self.machine.queue_work(taken);
        }
        let (results, latency) = out?;
        self.machine.recorder().store_latency("apply", latency);
        Some(Returned::Applied(results))
    }

    /// Makes the store call the machine asked for, guarded; `None` when it was abandoned. The
    /// answers the machine held from the last call are sent once this one has started (its
    /// future polled once: a blocking store's work is then on its thread), so the callers
    /// they wake run beside the store instead of before it.
    async fn call(&mut self, effect: Effect) -> Option<Returned> {
        let answers = self.machine.take_answers();
        let recorder = self.machine.recorder();
        let guard = &mut self.guard;
        let store = &mut self.store;
        let call = async move {
            match effect {
                Effect::Apply(ops) => guard
                    .run("apply", recorder, store.apply(ops))
                    .await
                    .map(Returned::Applied),
                Effect::Read(keys) => guard
                    .run("leases", recorder, store.leases(&keys))
                    .await
                    .map(Returned::Read),
                Effect::Poll => guard
                    .run("poll_changes", recorder, store.poll_changes())
                    .await
                    .map(Returned::Polled),
                Effect::Pin { key, entity, span } => guard
                    .run("pin_lease", recorder, store.pin_lease(&key, &entity))
                    .instrument(span)
                    .await
                    .map(Returned::Done),
                Effect::Unpin { key, entity, span } => guard
                    .run("unpin_lease", recorder, store.unpin_lease(&key, &entity))
                    .instrument(span)
                    .await
                    .map(Returned::Done),
                Effect::Pinned { span } => guard
                    .run("pinned", recorder, store.pinned())
                    .instrument(span)
                    .await
                    .map(Returned::Pins),
                Effect::LeaseGroup {
                    namespace,
                    model,
                    span,
                } => guard
                    .run(
                        "lease_group",
                        recorder,
                        store.lease_group(&namespace, &model),
                    )
                    .instrument(span)
                    .await
                    .map(Returned::Group),
                Effect::Ended | Effect::Idle(_) | Effect::Ahead => None,
            }
        };
        let mut call = std::pin::pin!(call);
        let started = poll_once(&mut call.as_mut()).await;
        answers.send(recorder);
        match started {
            Some(out) => out,
            None => call.await,
        }
    }
}

/// Polls `fut` once, in the caller's task: its output if it was ready at once.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *fut).poll(cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        })
    })
    .await
}
