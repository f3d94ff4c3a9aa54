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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Error, Generation, Info, Key, Op, Outcome, Request, Result, Timestamp};
use proptest::prelude::*;
use tokio::sync::oneshot;
use tracing::Span;

use super::command::{Command, Envelope};
use super::machine::Machine;
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
    /// if `reads_fail`.
    Step {
        faults: Vec<Fault>,
        reads_fail: bool,
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
        8 => (prop::collection::vec(fault(), 1..6), prop::bool::weighted(0.2))
            .prop_map(|(faults, reads_fail)| Event::Step { faults, reads_fail }),
        1 => Just(Event::Abandon),
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
    Claim(Key, oneshot::Receiver<Result<Info>>),
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
}

impl Harness {
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
        }
    }

    fn send(&mut self, command: Command) {
        self.machine.enqueue(Envelope {
            command,
            span: Span::none(),
        });
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
                self.callers.push(Caller::Claim(key(k), rx));
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
            Event::Step { faults, reads_fail } => {
                self.step(&faults, reads_fail);
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
        let mut busy = false;
        for _ in 0..10_000 {
            let effect = self.machine.poll(self.now);
            // As the shell: the answers held from the last call go out once the next call has
            // started, or before the worker idles, at the same instant.
            self.machine.take_answers().send(self.machine.recorder());
            match effect {
                Effect::Idle(_) => {
                    assert!(self.machine.between_tasks());
                    return busy;
                }
                Effect::Ended => {
                    assert!(self.machine.between_tasks());
                    return true;
                }
                _ => {}
            }
            busy = true;
            let returned = self.answer(effect, faults, reads_fail);
            self.machine.returned(Some(returned), self.now);
            if self.machine.between_tasks() {
                // The shell polls again at once, sending these answers before anything else
                // happens.
                self.machine.take_answers().send(self.machine.recorder());
                return true;
            }
        }
        panic!("a task that never ends");
    }

    /// A task whose store calls are all abandoned (as the shell's guard does at the end of
    /// the grace period), after which the shell stops the machine.
    fn abandon(&mut self) {
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
                Caller::Claim(key, rx) => match rx.try_recv() {
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
        events in prop::collection::vec(event(), 1..120),
    ) {
        let mut h = Harness::new(attempts, seed);
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
        events in prop::collection::vec(event(), 1..80),
    ) {
        let mut h = Harness::new(3, seed);
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
    let Some(Caller::Claim(_, rx)) = h.callers.last_mut() else {
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
