//! The harness: a model store keeping `lease_core::Store`'s contract, and the [`Harness`] that
//! drives the machine with events, answers its store calls from the model and checks the
//! invariants between events (and as answers are sent).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Error, Generation, Info, Key, Op, Outcome, Request, Result, Timestamp};
use tokio::sync::oneshot;
use tracing::Span;

use super::super::command::{Command, Envelope};
use super::super::machine::Machine;
use super::super::pending::Work;
use super::super::recorder::Recorder;
use super::super::state::Settings;
use super::super::task::{Effect, Returned};
use super::{Event, Fault, HOLDERS, KEYS, OTHER, key};
use crate::config::{Jitter, RetryPolicy};
use crate::metric::report::Counters;
use crate::window::{Slot, SlotTable};

/// A store that keeps the contract of `lease_core::Store`.
#[derive(Debug, Default)]
pub(super) struct Model {
    pub(super) leases: BTreeMap<Key, Info>,
    pub(super) generation: u64,
}

impl Model {
    pub(super) fn valid(&self, key: &Key, now: Timestamp) -> Option<&Info> {
        self.leases.get(key).filter(|i| i.pinned || now < i.expiry)
    }

    pub(super) fn claim(&mut self, key: &Key, request: &Request, now: Timestamp) -> Result<Info> {
        match self.valid(key, now) {
            Some(i) if i.holder != request.holder => Err(Error::Held),
            Some(_) => Err(Error::Invalid),
            None => {
                self.generation += 1;
                let info = Info {
                    holder: request.holder.clone(),
                    expiry: now.saturating_add(request.duration),
                    generation: Generation(self.generation),
                    metadata: None,
                    pinned: false,
                };
                self.leases.insert(key.clone(), info.clone());
                Ok(info)
            }
        }
    }

    pub(super) fn apply(&mut self, op: &Op, now: Timestamp, fault: Fault) -> Result<Outcome> {
        match fault {
            Fault::TimeoutBefore => return Err(Error::Timeout),
            Fault::Invalid => return Err(Error::Invalid),
            Fault::Broken => return Err(Error::store_msg("broken")),
            Fault::None | Fault::TimeoutAfter => {}
        }
        let out = match op {
            Op::Claim { key, request } => self.claim(key, request, now).map(Outcome::Claimed),
            Op::Extend { key, request } => match self.valid(key, now) {
                Some(i) if i.holder == request.holder => {
                    let mut info = i.clone();
                    info.expiry = info.expiry.max(now.saturating_add(request.duration));
                    self.leases.insert(key.clone(), info.clone());
                    Ok(Outcome::Extended(info))
                }
                _ => Err(Error::Invalid),
            },
            Op::Revoke { key, holder } => match self.valid(key, now) {
                Some(i) if i.holder == *holder => {
                    self.leases.remove(key);
                    Ok(Outcome::Revoked)
                }
                Some(_) => Err(Error::NotHeld),
                None => Err(Error::Invalid),
            },
        };
        match fault {
            Fault::TimeoutAfter => Err(Error::Timeout),
            _ => out,
        }
    }

    pub(super) fn read(&self, keys: &[Key], now: Timestamp) -> BTreeMap<Key, Info> {
        keys.iter()
            .filter_map(|k| self.valid(k, now).map(|i| (k.clone(), i.clone())))
            .collect()
    }
}

/// A caller's end of a request, and what it was told.
pub(super) enum Caller {
    Claim(Key, &'static str, oneshot::Receiver<Result<Info>>),
    Unit(oneshot::Receiver<Result<()>>),
    Check(oneshot::Receiver<Result<Generation>>),
    Gone,
    Answered,
}

pub(super) struct Harness {
    pub(super) machine: Machine,
    pub(super) model: Model,
    pub(super) now: Timestamp,
    pub(super) callers: Vec<Caller>,
    /// Every key's token slot (kept alive, as a token would).
    pub(super) slots: Vec<(Key, Arc<Slot>)>,
    pub(super) counters: Arc<Counters>,
    /// A store call was abandoned: the shell would stop the machine now.
    pub(super) stopped: bool,
    /// Answers seen: claims that got a holding, `ClaimDenied`s, `Timeout`s.
    pub(super) held: u64,
    pub(super) denied: u64,
    pub(super) timeouts: u64,
    /// The shell's channel, when requests go through one (else they are queued directly).
    pub(super) inbox: Option<Vec<Envelope>>,
    /// The results of the batch planned ahead, applied by the model right after the batch
    /// that was in flight when it was planned.
    pub(super) ahead: Option<Vec<Result<Outcome>>>,
    /// Batches planned ahead so far.
    pub(super) planned_ahead: u64,
}

impl Harness {
    /// A harness whose requests wait in a channel, as the shell's do.
    pub(super) fn with_inbox(attempts: u32, seed: u64) -> Harness {
        Harness {
            inbox: Some(Vec::new()),
            ..Harness::new(attempts, seed)
        }
    }

    pub(super) fn new(attempts: u32, seed: u64) -> Harness {
        let table = Arc::new(SlotTable::default());
        let slots = (0..KEYS)
            .map(|k| (key(k), table.slot_for(&key(k))))
            .collect();
        let settings = Settings {
            max_sleep: Duration::from_secs(10),
            retry: RetryPolicy {
                attempts,
                initial_delay: Duration::from_millis(50),
                multiplier: 2.0,
                max_delay: Duration::from_secs(1),
                jitter: Jitter::Full,
            },
            refresh_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            max_batch: 4,
        };
        let now = Timestamp::from_nanos(1_000_000_000);
        let counters = Arc::new(Counters::new());
        let recorder = Recorder::new(Arc::clone(&counters));
        Harness {
            machine: Machine::new(settings, recorder, table, Some(seed), now),
            model: Model::default(),
            now,
            callers: Vec::new(),
            slots,
            counters,
            stopped: false,
            held: 0,
            denied: 0,
            timeouts: 0,
            inbox: None,
            ahead: None,
            planned_ahead: 0,
        }
    }

    pub(super) fn send(&mut self, command: Command) {
        let envelope = Envelope {
            command,
            span: Span::none(),
        };
        match &mut self.inbox {
            Some(inbox) => inbox.push(envelope),
            None => self.machine.enqueue(envelope),
        }
    }

    /// Up to a batch of the requests waiting in the inbox, oldest first.
    pub(super) fn take_inbox(&mut self) -> Vec<Work> {
        self.take_inbox_part(usize::MAX)
    }

    /// Up to `most` (and a batch) of the requests waiting in the inbox, oldest first.
    pub(super) fn take_inbox_part(&mut self, most: usize) -> Vec<Work> {
        let Some(inbox) = &mut self.inbox else {
            return Vec::new();
        };
        let n = inbox.len().min(self.machine.max_batch()).min(most);
        inbox.drain(..n).map(Work::from_envelope).collect()
    }

    pub(super) fn event(&mut self, event: Event) {
        if self.stopped {
            return;
        }
        match event {
            Event::Claim {
                key: k,
                holder,
                secs,
            } => {
                let (reply, rx) = oneshot::channel();
                self.callers
                    .push(Caller::Claim(key(k), HOLDERS[holder as usize], rx));
                self.send(Command::Claim {
                    key: key(k),
                    request: Request::new(
                        HOLDERS[holder as usize],
                        Duration::from_secs(secs.into()),
                    ),
                    started: self.now,
                    reply,
                });
            }
            Event::Revoke { key: k, holder } => {
                let (reply, rx) = oneshot::channel();
                self.callers.push(Caller::Unit(rx));
                self.send(Command::Revoke {
                    key: key(k),
                    holder: HOLDERS[holder as usize].into(),
                    reply,
                });
            }
            Event::Check {
                key: k,
                holder,
                force_read,
            } => {
                let (reply, rx) = oneshot::channel();
                self.callers.push(Caller::Check(rx));
                self.send(Command::Check {
                    key: key(k),
                    holder: HOLDERS[holder as usize].into(),
                    force_read,
                    reply,
                });
            }
            Event::Wait { key: k } => {
                let (reply, rx) = oneshot::channel();
                self.callers.push(Caller::Unit(rx));
                self.send(Command::Wait { key: key(k), reply });
            }
            Event::GiveUp { n } => {
                if !self.callers.is_empty() {
                    let i = n as usize % self.callers.len();
                    if !matches!(self.callers[i], Caller::Answered) {
                        self.callers[i] = Caller::Gone;
                    }
                }
            }
            Event::Advance { millis } => {
                self.now = self
                    .now
                    .saturating_add(Duration::from_millis(millis.into()));
            }
            Event::Other { key: k, secs } => {
                let request = Request::new(OTHER, Duration::from_secs(secs.into()));
                if self.model.claim(&key(k), &request, self.now).is_ok() {
                    self.machine.change_noticed(true);
                }
            }
            Event::Step {
                faults,
                reads_fail,
                ahead,
            } => {
                self.step_with(&faults, reads_fail, ahead);
            }
            Event::Abandon => self.abandon(),
        }
    }

    pub(super) fn read(&self, keys: &[Key], fail: bool) -> Result<BTreeMap<Key, Info>> {
        if fail {
            Err(Error::store_msg("read failed"))
        } else {
            Ok(self.model.read(keys, self.now))
        }
    }

    /// The store's answer to `effect`, made at `now` with `faults` on the ops.
    pub(super) fn answer(
        &mut self,
        effect: Effect,
        faults: &[Fault],
        reads_fail: bool,
    ) -> Returned {
        let now = self.now;
        match effect {
            Effect::Apply(ops) => {
                for op in &ops {
                    if let Op::Revoke { key, holder } = op {
                        assert_eq!(
                            self.slot(key).held(holder, || now),
                            None,
                            "a revoke of {key} by {holder} was sent with its window open"
                        );
                    }
                }
                Returned::Applied(
                    ops.iter()
                        .enumerate()
                        .map(|(i, op)| self.model.apply(op, now, faults[i % faults.len()]))
                        .collect(),
                )
            }
            Effect::Read(keys) => Returned::Read(self.read(&keys, reads_fail)),
            Effect::Poll => Returned::Polled(Ok(true)),
            other => panic!("no pins or group reads are sent: {other:?}"),
        }
    }

    /// The machine runs one task (or starts none); `false` when it had nothing to do.
    pub(super) fn step(&mut self, faults: &[Fault], reads_fail: bool) -> bool {
        self.step_with(faults, reads_fail, true)
    }

    /// [`Harness::step`], planning ahead only if `ahead`.
    pub(super) fn step_with(&mut self, faults: &[Fault], reads_fail: bool, ahead: bool) -> bool {
        let mut busy = false;
        for _ in 0..10_000 {
            let effect = self.machine.poll(self.now);
            // As the shell: the answers held from the last call go out once the next call has
            // started, or before the worker idles, at the same instant. They are checked as
            // they are sent: within this step, a batch planned ahead may yet revoke a holding
            // just answered (by a request that came after the claim), and a caller's answer
            // is only true as of when it was given.
            self.send_answers();
            match effect {
                Effect::Idle(_) => {
                    assert!(self.machine.between_tasks());
                    // As the shell: requests waiting in the channel are taken when idle; when
                    // planning ahead, only the first half of them, as if the rest came while
                    // the store applied those.
                    let half = self.inbox.as_ref().map_or(0, |i| i.len().div_ceil(2));
                    let batch = if ahead {
                        self.take_inbox_part(half)
                    } else {
                        self.take_inbox()
                    };
                    if !batch.is_empty() {
                        self.machine.arrived(batch, self.now);
                        busy = true;
                        continue;
                    }
                    return busy;
                }
                Effect::Ended => {
                    assert!(self.machine.between_tasks());
                    return true;
                }
                _ => {}
            }
            busy = true;
            let in_flight_apply = matches!(effect, Effect::Apply(_) | Effect::Ahead);
            let returned = match effect {
                Effect::Ahead => Returned::Applied(
                    self.ahead
                        .take()
                        .expect("the machine awaits a batch it planned ahead"),
                ),
                effect => self.answer(effect, faults, reads_fail),
            };
            if ahead && in_flight_apply && self.machine.can_plan_ahead(self.now) {
                // The apply is in flight (the model applied it already): the requests that
                // came meanwhile are planned ahead, and the store applies them next.
                let batch = self.take_inbox();
                if !batch.is_empty()
                    && let Some(ops) = self.machine.plan_ahead(batch, self.now)
                {
                    self.planned_ahead += 1;
                    let Returned::Applied(results) =
                        self.answer(Effect::Apply(ops), faults, reads_fail)
                    else {
                        unreachable!("an apply returns applied results");
                    };
                    self.ahead = Some(results);
                }
            }
            self.machine.returned(Some(returned), self.now);
            if self.machine.between_tasks() {
                // The shell polls again at once, sending these answers before anything else
                // happens.
                self.send_answers();
                return true;
            }
        }
        panic!("a task that never ends");
    }

    /// Sends the answers the machine holds, and checks the invariants as the callers get them.
    pub(super) fn send_answers(&mut self) {
        self.machine.take_answers().send(self.machine.recorder());
        self.check();
    }

    /// A task whose store calls are all abandoned (as the shell's guard does at the end of
    /// the grace period), after which the shell stops the machine.
    pub(super) fn abandon(&mut self) {
        self.ahead = None;
        for _ in 0..10_000 {
            if let Effect::Idle(_) | Effect::Ended = self.machine.poll(self.now) {
                break;
            }
            self.machine.returned(None, self.now);
            if self.machine.between_tasks() {
                break;
            }
        }
        self.stopped = true;
    }

    pub(super) fn slot(&self, key: &Key) -> &Arc<Slot> {
        &self
            .slots
            .iter()
            .find(|(k, _)| k == key)
            .expect("every key has a slot")
            .1
    }

    /// The invariants that hold between any two events.
    pub(super) fn check(&mut self) {
        let now = self.now;
        for (key, slot) in &self.slots {
            for holder in HOLDERS {
                if let Some(generation) = slot.held(holder, || now) {
                    let store = self.model.valid(key, now);
                    assert!(
                        store.is_some_and(|i| i.holder == holder && i.generation == generation),
                        "the window says {holder} holds {key} (generation {generation}) at {now:?}; the store has {store:?}"
                    );
                    // And it ends by the store's expiry: it never outlives the holding.
                    if let Some(info) = store.filter(|i| !i.pinned) {
                        assert_eq!(
                            slot.held(holder, || info.expiry),
                            None,
                            "the window of {holder} on {key} outlives the store's expiry {:?}",
                            info.expiry
                        );
                    }
                }
            }
        }
        for caller in &mut self.callers {
            let answered = match caller {
                Caller::Claim(key, holder, rx) => match rx.try_recv() {
                    Ok(Ok(info)) => {
                        let store = self.model.valid(key, now);
                        assert!(
                            store.is_some_and(
                                |i| i.holder == info.holder && i.generation == info.generation
                            ),
                            "a claim of {key} was answered {info:?}; the store has {store:?}"
                        );
                        self.held += 1;
                        true
                    }
                    Ok(Err(e)) => {
                        if matches!(e, Error::ClaimDenied) {
                            let store = self.model.valid(key, now);
                            assert!(
                                store.is_none_or(|i| i.holder != *holder),
                                "a claim of {key} by {holder} was denied; the store has {store:?}"
                            );
                        }
                        self.denied += u64::from(matches!(e, Error::ClaimDenied));
                        self.timeouts += u64::from(e.is_timeout());
                        true
                    }
                    Err(oneshot::error::TryRecvError::Empty) => false,
                    Err(oneshot::error::TryRecvError::Closed) => {
                        panic!("a claim was dropped unanswered")
                    }
                },
                Caller::Unit(rx) => match rx.try_recv() {
                    Ok(answer) => {
                        self.timeouts += u64::from(answer.is_err_and(|e| e.is_timeout()));
                        true
                    }
                    Err(oneshot::error::TryRecvError::Empty) => false,
                    Err(oneshot::error::TryRecvError::Closed) => {
                        panic!("a request was dropped unanswered")
                    }
                },
                Caller::Check(rx) => match rx.try_recv() {
                    Ok(_) => true,
                    Err(oneshot::error::TryRecvError::Empty) => false,
                    Err(oneshot::error::TryRecvError::Closed) => {
                        panic!("a check was dropped unanswered")
                    }
                },
                Caller::Gone | Caller::Answered => false,
            };
            if answered {
                *caller = Caller::Answered;
            }
        }
    }

    /// Shuts down and checks that every caller still there has its answer.
    pub(super) fn finish(mut self) {
        self.machine.finish(self.now);
        // As the shell's finish: what is still in the channel is answered `Aborted`.
        for envelope in self.inbox.take().unwrap_or_default() {
            envelope.command.fail(Error::Aborted);
        }
        self.check();
        let unanswered = self
            .callers
            .iter()
            .filter(|c| !matches!(c, Caller::Gone | Caller::Answered))
            .count();
        assert_eq!(unanswered, 0, "callers left without an answer at shutdown");
        assert_eq!(self.machine.state.queue.len(), 0);
        // The recorder counted each outcome once, as the callers saw it.
        let report = self.counters.snapshot();
        assert_eq!(report.claims + report.extends, self.held);
        assert_eq!(report.denials, self.denied);
        assert_eq!(report.timeouts, self.timeouts);
        for (key, slot) in &self.slots {
            for holder in HOLDERS {
                assert_eq!(
                    slot.held(holder, || self.now),
                    None,
                    "{key} still held after shutdown"
                );
            }
        }
    }
}
