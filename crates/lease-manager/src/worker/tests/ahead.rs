//! The batch planned ahead of the results of the `apply` in flight ([`Machine::plan_ahead`]),
//! staged step by step.
//!
//! [`Machine::plan_ahead`]: super::super::machine::Machine::plan_ahead

use std::time::Duration;

use lease_core::Error;
use tokio::sync::oneshot;
use tracing::Span;

use super::super::command::{Command, Envelope};
use super::super::pending::Work;
use super::super::task::{Effect, Returned};
use super::harness::{Caller, Harness};
use super::{Event, Fault, key};

/// Sends a claim of key 0 by the first holder, lets the machine take it from the inbox and
/// returns the `apply` it starts (in flight until the test answers it).
fn claim_in_flight(h: &mut Harness) -> Effect {
    h.event(Event::Claim {
        key: 0,
        holder: 0,
        secs: 4,
    });
    assert!(matches!(h.machine.poll(h.now), Effect::Idle(_)));
    let first = h.take_inbox();
    h.machine.arrived(first, h.now);
    h.machine.poll(h.now)
}

/// While a batch's `apply` is in flight, requests that came meanwhile are planned ahead only
/// when they touch none of its keys and are claims, extends or revokes: a claim of a key in
/// flight, and a check, wait for the batches after; the batch ahead is the next task, after
/// the one in flight has ended.
#[test]
fn a_batch_planned_ahead_leaves_the_keys_in_flight_and_other_commands_for_later() {
    let mut h = Harness::with_inbox(3, 5);
    let effect = claim_in_flight(&mut h);
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
    let effect = claim_in_flight(&mut h);
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
    let effect = claim_in_flight(&mut h);
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
