//! Property tests of the worker's state machine, driven directly (no tokio, no store, no
//! clock): random sequences of requests, store results (with faults), timers, time steps,
//! callers that give up, other processes' claims, and a shutdown at the end, against a small
//! model of a store's contract.
//!
//! Invariants checked:
//! - every caller that is still there is answered exactly once (a oneshot cannot be answered
//!   twice; here: never left unanswered once the machine has shut down);
//! - a token window never says "held" unless the store holds the lease for that holder and
//!   generation at that instant (a window lies inside an own guaranteed window);
//! - a revoke's window is cleared before the revoke goes to the store;
//! - a claim answered "held" is held in the store, with that generation, when answered.
//!
//! Requests either reach the machine's queue directly or, as through the shell's channel,
//! wait in an inbox that the harness hands over when the machine idles or, while an `apply` is
//! in flight, to [`Machine::plan_ahead`] (the store then applies that batch right after the
//! one in flight, as a store that starts batches ahead does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Error, Generation, Info, Key, Op, Outcome, Request, Result, Timestamp};
use proptest::prelude::*;
use tokio::sync::oneshot;
use tracing::Span;

use super::command::{Command, Envelope};
use super::machine::Machine;
use super::pending::Work;
use super::recorder::Recorder;
use super::state::Settings;
use super::task::{Effect, Returned};
use crate::config::{Jitter, RetryPolicy};
use crate::metric::report::Counters;
use crate::window::{Slot, SlotTable};

const KEYS: u8 = 3;
const HOLDERS: [&str; 2] = ["a", "b"];
/// Another process's holder: it claims only leases that have expired.
const OTHER: &str = "other";

/// What the model store does with one op.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// `Timeout`, without effect.
    TimeoutBefore,
    /// `Timeout`, after the op took effect.
    TimeoutAfter,
    /// A spurious `Invalid` (a conflicting write, say), without effect.
    Invalid,
    /// A failure of the store itself, without effect.
    Broken,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::None),
        1 => Just(Fault::TimeoutBefore),
        1 => Just(Fault::TimeoutAfter),
        1 => Just(Fault::Invalid),
        1 => Just(Fault::Broken),
    ]
}

#[derive(Debug, Clone)]
enum Event {
    Claim {
        key: u8,
        holder: u8,
        secs: u8,
    },
    Revoke {
        key: u8,
        holder: u8,
    },
    Check {
        key: u8,
        holder: u8,
        force_read: bool,
    },
    Wait {
        key: u8,
    },
    /// The caller of the `n`th request gives up.
    GiveUp {
        n: u8,
    },
    Advance {
        millis: u16,
    },
    /// Another process claims `key` if it is free.
    Other {
        key: u8,
        secs: u8,
    },
    /// The machine takes one step; the store answers with these faults, and its reads fail
    /// if `reads_fail`; with `ahead`, requests waiting in the inbox while an `apply` is in
    /// flight are planned ahead when the machine allows.
    Step {
        faults: Vec<Fault>,
        reads_fail: bool,
        ahead: bool,
    },
    /// Shutdown's grace period ends during the store calls of the next step: they are
    /// abandoned, and the machine stops (later events are ignored).
    Abandon,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0..KEYS, 0..2u8, 1..5u8).prop_map(|(key, holder, secs)| Event::Claim { key, holder, secs }),
        2 => (0..KEYS, 0..2u8).prop_map(|(key, holder)| Event::Revoke { key, holder }),
        2 => (0..KEYS, 0..2u8, any::<bool>())
            .prop_map(|(key, holder, force_read)| Event::Check { key, holder, force_read }),
        1 => (0..KEYS).prop_map(|key| Event::Wait { key }),
        1 => any::<u8>().prop_map(|n| Event::GiveUp { n }),
        3 => (0..3000u16).prop_map(|millis| Event::Advance { millis }),
        1 => (0..KEYS, 1..5u8).prop_map(|(key, secs)| Event::Other { key, secs }),
        8 => (prop::collection::vec(fault(), 1..6), prop::bool::weighted(0.2), any::<bool>())
            .prop_map(|(faults, reads_fail, ahead)| Event::Step { faults, reads_fail, ahead }),
        1 => Just(Event::Abandon),
    ]
}

/// Events of a busy machine: requests come faster than time passes, so batches are often
/// planned ahead.
fn busy_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (0..KEYS, 0..2u8, 1..5u8).prop_map(|(key, holder, secs)| Event::Claim { key, holder, secs }),
        3 => (0..KEYS, 0..2u8).prop_map(|(key, holder)| Event::Revoke { key, holder }),
        1 => (0..KEYS, 0..2u8, any::<bool>())
            .prop_map(|(key, holder, force_read)| Event::Check { key, holder, force_read }),
        1 => (0..KEYS).prop_map(|key| Event::Wait { key }),
        1 => any::<u8>().prop_map(|n| Event::GiveUp { n }),
        2 => (0..200u16).prop_map(|millis| Event::Advance { millis }),
        1 => (0..KEYS, 1..5u8).prop_map(|(key, secs)| Event::Other { key, secs }),
        6 => (prop::collection::vec(fault(), 1..6), prop::bool::weighted(0.1))
            .prop_map(|(faults, reads_fail)| Event::Step { faults, reads_fail, ahead: true }),
    ]
}

fn key(k: u8) -> Key {
    Key::new("ns", "m", format!("l{k}"))
}

/// A store that keeps the contract of `lease_core::Store`.
#[derive(Debug, Default)]
struct Model {
    leases: BTreeMap<Key, Info>,
    generation: u64,
}

impl Model {
    fn valid(&self, key: &Key, now: Timestamp) -> Option<&Info> {
        self.leases.get(key).filter(|i| i.pinned || now < i.expiry)
    }

    fn claim(&mut self, key: &Key, request: &Request, now: Timestamp) -> Result<Info> {
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

    fn apply(&mut self, op: &Op, now: Timestamp, fault: Fault) -> Result<Outcome> {
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

    fn read(&self, keys: &[Key], now: Timestamp) -> BTreeMap<Key, Info> {
        keys.iter()
            .filter_map(|k| self.valid(k, now).map(|i| (k.clone(), i.clone())))
            .collect()
    }
}

/// A caller's end of a request, and what it was told.
enum Caller {
    Claim(Key, &'static str, oneshot::Receiver<Result<Info>>),
    Unit(oneshot::Receiver<Result<()>>),
    Check(oneshot::Receiver<Result<Generation>>),
    Gone,
    Answered,
}

struct Harness {
    machine: Machine,
    model: Model,
    now: Timestamp,
    callers: Vec<Caller>,
    /// Every key's token slot (kept alive, as a token would).
    slots: Vec<(Key, Arc<Slot>)>,
    counters: Arc<Counters>,
    /// A store call was abandoned: the shell would stop the machine now.
    stopped: bool,
    /// Answers seen: claims that got a holding, `ClaimDenied`s, `Timeout`s.
    held: u64,
    denied: u64,
    timeouts: u64,
    /// The shell's channel, when requests go through one (else they are queued directly).
    inbox: Option<Vec<Envelope>>,
    /// The results of the batch planned ahead, applied by the model right after the batch
    /// that was in flight when it was planned.
    ahead: Option<Vec<Result<Outcome>>>,
    /// Batches planned ahead so far.
    planned_ahead: u64,
}

impl Harness {
    /// A harness whose requests wait in a channel, as the shell's do.
    fn with_inbox(attempts: u32, seed: u64) -> Harness {
        Harness {
            inbox: Some(Vec::new()),
            ..Harness::new(attempts, seed)
        }
    }

    fn new(attempts: u32, seed: u64) -> Harness {
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

    fn send(&mut self, command: Command) {
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
    fn take_inbox(&mut self) -> Vec<Work> {
        self.take_inbox_part(usize::MAX)
    }

    /// Up to `most` (and a batch) of the requests waiting in the inbox, oldest first.
    fn take_inbox_part(&mut self, most: usize) -> Vec<Work> {
        let Some(inbox) = &mut self.inbox else {
            return Vec::new();
        };
        let n = inbox.len().min(self.machine.max_batch()).min(most);
        inbox.drain(..n).map(Work::from_envelope).collect()
    }

    fn event(&mut self, event: Event) {
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

    fn read(&self, keys: &[Key], fail: bool) -> Result<BTreeMap<Key, Info>> {
        if fail {
            Err(Error::store_msg("read failed"))
        } else {
            Ok(self.model.read(keys, self.now))
        }
    }

    /// The store's answer to `effect`, made at `now` with `faults` on the ops.
    fn answer(&mut self, effect: Effect, faults: &[Fault], reads_fail: bool) -> Returned {
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
    fn step(&mut self, faults: &[Fault], reads_fail: bool) -> bool {
        self.step_with(faults, reads_fail, true)
    }

    /// [`Harness::step`], planning ahead only if `ahead`.
    fn step_with(&mut self, faults: &[Fault], reads_fail: bool, ahead: bool) -> bool {
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
    fn send_answers(&mut self) {
        self.machine.take_answers().send(self.machine.recorder());
        self.check();
    }

    /// A task whose store calls are all abandoned (as the shell's guard does at the end of
    /// the grace period), after which the shell stops the machine.
    fn abandon(&mut self) {
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

    fn slot(&self, key: &Key) -> &Arc<Slot> {
        &self
            .slots
            .iter()
            .find(|(k, _)| k == key)
            .expect("every key has a slot")
            .1
    }

    /// The invariants that hold between any two events.
    fn check(&mut self) {
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
    fn finish(mut self) {
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_machine_keeps_its_invariants(
        attempts in 1..4u32,
        seed in any::<u64>(),
        inbox in any::<bool>(),
        events in prop::collection::vec(event(), 1..120),
    ) {
        let mut h = if inbox {
            Harness::with_inbox(attempts, seed)
        } else {
            Harness::new(attempts, seed)
        };
        for event in events {
            h.event(event);
            h.check();
        }
        h.finish();
    }

    /// The same invariants when most batches are planned ahead of the results of the one in
    /// flight (requests come faster than time passes).
    #[test]
    fn the_machine_keeps_its_invariants_planning_ahead(
        attempts in 1..4u32,
        seed in any::<u64>(),
        events in prop::collection::vec(busy_event(), 1..160),
    ) {
        let mut h = Harness::with_inbox(attempts, seed);
        for event in events {
            h.event(event);
            h.check();
        }
        h.finish();
    }

    /// Once the store behaves and time passes, every request is answered without a
    /// shutdown: nothing is stuck in a queue, on a timer or as a waiter.
    #[test]
    fn every_request_is_answered_once_the_store_behaves(
        seed in any::<u64>(),
        inbox in any::<bool>(),
        events in prop::collection::vec(event(), 1..80),
    ) {
        let mut h = if inbox {
            Harness::with_inbox(3, seed)
        } else {
            Harness::new(3, seed)
        };
        for event in events {
            h.event(event);
            h.check();
        }
        if !h.stopped {
            for _ in 0..40 {
                h.now = h.now.saturating_add(Duration::from_secs(1));
                for _ in 0..1000 {
                    let busy = h.step(&[Fault::None], false);
                    h.check();
                    if !busy {
                        break;
                    }
                }
            }
            let waiting = h
                .callers
                .iter()
                .filter(|c| !matches!(c, Caller::Gone | Caller::Answered))
                .count();
            prop_assert_eq!(waiting, 0);
        }
        h.finish();
    }
}

/// A clock that reads `Timestamp::MAX` (a fake clock set there): every timer re-armed "an
/// interval from now" saturates to now, so a deadline at the maximum must count as never, or
/// the machine runs its timers (and a store poll, while it has interest) on every step, for
/// ever. Here it settles: a bounded number of store calls, then idle until "never", polled
/// again and again without another call; and no window says "held" at the end of time.
#[test]
fn a_clock_at_the_maximum_instant_settles_instead_of_spinning() {
    let mut h = Harness::new(3, 7);
    // Interest (a waiter and an own lease) makes each due timer a store poll.
    h.event(Event::Claim {
        key: 0,
        holder: 0,
        secs: 4,
    });
    h.event(Event::Wait { key: 1 });
    h.event(Event::Other { key: 1, secs: 4 });
    assert!(h.step(&[Fault::None], false));
    h.check();
    h.now = Timestamp::MAX;
    let mut calls = 0;
    let mut idle = None;
    for _ in 0..100 {
        match h.machine.poll(h.now) {
            Effect::Idle(deadline) => {
                idle = Some(deadline);
                break;
            }
            Effect::Ended => {}
            effect => {
                calls += 1;
                let returned = h.answer(effect, &[Fault::None], false);
                h.machine.returned(Some(returned), h.now);
                h.machine.take_answers().send(h.machine.recorder());
            }
        }
        h.check();
    }
    assert!(
        calls <= 10,
        "{calls} store calls at the maximum instant before settling"
    );
    assert_eq!(
        idle,
        Some(Timestamp::MAX),
        "the machine never went idle (until never) at the maximum instant"
    );
    for _ in 0..100 {
        assert!(
            matches!(h.machine.poll(h.now), Effect::Idle(Timestamp::MAX)),
            "an idle machine at the maximum instant found work again"
        );
    }
    h.check();
    h.finish();
}

/// A batch's answers are held when its store call returns, and go out only when taken (the
/// shell takes them once the next call has started, or before it idles); what the results
/// decide besides the answers, the holder's token window, is published at once.
#[test]
fn a_batchs_answers_are_held_until_taken_and_its_windows_are_published_at_once() {
    let mut h = Harness::new(3, 11);
    h.event(Event::Claim {
        key: 0,
        holder: 0,
        secs: 4,
    });
    let effect = h.machine.poll(h.now);
    assert!(matches!(effect, Effect::Apply(_)), "{effect:?}");
    let returned = h.answer(effect, &[Fault::None], false);
    h.machine.returned(Some(returned), h.now);
    assert!(h.machine.holds_answers());
    let Some(Caller::Claim(_, _, rx)) = h.callers.last_mut() else {
        panic!("the claim's caller is not the last");
    };
    assert!(
        matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
        "the claim was answered before its answer was taken"
    );
    let now = h.now;
    assert!(
        h.slot(&key(0)).held(HOLDERS[0], || now).is_some(),
        "the holder's token window was not published when the batch returned"
    );
    h.machine.take_answers().send(h.machine.recorder());
    assert!(!h.machine.holds_answers());
    h.check();
    assert_eq!(h.held, 1, "the claim was not answered once taken");
    h.finish();
}

/// While a batch's `apply` is in flight, requests that came meanwhile are planned ahead only
/// when they touch none of its keys and are claims, extends or revokes: a claim of a key in
/// flight, and a check, wait for the batches after; the batch ahead is the next task, after
/// the one in flight has ended.
#[test]
fn a_batch_planned_ahead_leaves_the_keys_in_flight_and_other_commands_for_later() {
    let mut h = Harness::with_inbox(3, 5);
    h.event(Event::Claim {
        key: 0,
        holder: 0,
        secs: 4,
    });
    assert!(matches!(h.machine.poll(h.now), Effect::Idle(_)));
    let first = h.take_inbox();
    h.machine.arrived(first, h.now);
    let effect = h.machine.poll(h.now);
    assert!(
        matches!(effect, Effect::Apply(ref ops) if ops.len() == 1),
        "{effect:?}"
    );
    // Came while the first batch is in flight: a claim of its key, one of another key, a check.
    h.event(Event::Claim {
        key: 0,
        holder: 1,
        secs: 4,
    });
    h.event(Event::Claim {
        key: 1,
        holder: 1,
        secs: 4,
    });
    h.event(Event::Check {
        key: 2,
        holder: 0,
        force_read: false,
    });
    assert!(h.machine.can_plan_ahead(h.now));
    let batch = h.take_inbox();
    let ahead = h
        .machine
        .plan_ahead(batch, h.now)
        .expect("the claim of another key is planned ahead");
    assert_eq!(ahead.len(), 1, "{ahead:?}");
    assert_eq!(ahead[0].key(), &key(1));
    assert!(
        !h.machine.can_plan_ahead(h.now),
        "a second batch was allowed ahead"
    );
    assert_eq!(
        h.machine.state.queue.len(),
        2,
        "the other two were not queued"
    );
    // The store applies the first batch, then the one ahead.
    let returned = h.answer(effect, &[Fault::None], false);
    let Returned::Applied(ahead_results) = h.answer(Effect::Apply(ahead), &[Fault::None], false)
    else {
        unreachable!("an apply returns applied results");
    };
    h.machine.returned(Some(returned), h.now);
    assert!(
        !h.machine.between_tasks(),
        "the batch ahead is still under way"
    );
    assert!(matches!(h.machine.poll(h.now), Effect::Ahead));
    h.machine.take_answers().send(h.machine.recorder());
    h.machine
        .returned(Some(Returned::Applied(ahead_results)), h.now);
    h.machine.take_answers().send(h.machine.recorder());
    h.check();
    assert_eq!(h.held, 2, "both claims of free keys got their holdings");
    // The queued claim and check are served next.
    assert!(h.step(&[Fault::None], false));
    h.check();
    assert_eq!(
        h.denied, 1,
        "the claim of the key that was in flight was denied"
    );
    h.finish();
}

/// Nothing is planned ahead while the machine has something else due: queued work, a
/// reported change, a timer; nor while the apply in flight is not its task's last step.
#[test]
fn nothing_is_planned_ahead_while_something_else_is_due() {
    let mut h = Harness::with_inbox(3, 9);
    h.event(Event::Claim {
        key: 0,
        holder: 0,
        secs: 4,
    });
    assert!(matches!(h.machine.poll(h.now), Effect::Idle(_)));
    let first = h.take_inbox();
    h.machine.arrived(first, h.now);
    let effect = h.machine.poll(h.now);
    assert!(matches!(effect, Effect::Apply(_)), "{effect:?}");
    assert!(h.machine.can_plan_ahead(h.now));
    h.machine.change_noticed(true);
    assert!(
        !h.machine.can_plan_ahead(h.now),
        "planned ahead of a reported change's refresh"
    );
    h.machine.change_noticed(false);
    assert!(h.machine.can_plan_ahead(h.now));
    h.machine.queue_work(vec![Work::from_envelope(Envelope {
        command: Command::Wait {
            key: key(2),
            reply: oneshot::channel().0,
        },
        span: Span::none(),
    })]);
    assert!(
        !h.machine.can_plan_ahead(h.now),
        "planned ahead of queued work"
    );
    let returned = h.answer(effect, &[Fault::None], false);
    h.machine.returned(Some(returned), h.now);
    h.machine.take_answers().send(h.machine.recorder());
    assert!(h.step(&[Fault::None], false));
    // A timer due (the refresh, with an own lease to refresh) while an apply is in flight.
    h.now = h.now.saturating_add(Duration::from_secs(2));
    h.event(Event::Claim {
        key: 1,
        holder: 0,
        secs: 4,
    });
    let batch = h.take_inbox();
    h.machine.arrived(batch, h.now);
    let effect = h.machine.poll(h.now);
    assert!(matches!(effect, Effect::Apply(_)), "{effect:?}");
    assert!(
        !h.machine.can_plan_ahead(h.now),
        "planned ahead of a due refresh"
    );
    let returned = h.answer(effect, &[Fault::None], false);
    h.machine.returned(Some(returned), h.now);
    h.machine.take_answers().send(h.machine.recorder());
    assert!(
        matches!(h.machine.poll(h.now), Effect::Poll),
        "the refresh was not due after all"
    );
    h.finish();
}

/// Shutdown while a batch planned ahead is under way answers its callers `Aborted`.
#[test]
fn shutdown_answers_a_batch_planned_ahead_aborted() {
    let mut h = Harness::with_inbox(3, 13);
    h.event(Event::Claim {
        key: 0,
        holder: 0,
        secs: 4,
    });
    assert!(matches!(h.machine.poll(h.now), Effect::Idle(_)));
    let first = h.take_inbox();
    h.machine.arrived(first, h.now);
    let effect = h.machine.poll(h.now);
    h.event(Event::Claim {
        key: 1,
        holder: 0,
        secs: 4,
    });
    let batch = h.take_inbox();
    assert!(h.machine.plan_ahead(batch, h.now).is_some());
    let returned = h.answer(effect, &[Fault::None], false);
    h.machine.returned(Some(returned), h.now);
    // The shell stops here (its grace period ended while it awaited the batch ahead).
    h.machine.finish(h.now);
    let Some(Caller::Claim(_, _, rx)) = h.callers.last_mut() else {
        panic!("the second claim's caller is not the last");
    };
    assert!(
        matches!(rx.try_recv(), Ok(Err(Error::Aborted))),
        "the claim planned ahead was not answered Aborted"
    );
    *h.callers.last_mut().expect("a caller") = Caller::Answered;
    h.check();
    assert_eq!(h.held, 1);
}
