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

use std::time::Duration;

use lease_core::{Key, Timestamp};
use proptest::prelude::*;
use tokio::sync::oneshot;

use super::task::Effect;
use harness::{Caller, Harness};

mod ahead;
mod harness;

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
