//! Properties of the supervisor over any event sequence and any renewal pattern, its driver
//! honouring the wake-ups it asks for (time never jumps past one):
//!
//! - SIGKILL is asked for no later than `S + ttl - margin`, `S` the start of the last renewal
//!   that succeeded before the lease was lost, and while no kill was asked for, the next
//!   wake-up asked for is no later than that either;
//! - SIGTERM comes before SIGKILL, each at most once;
//! - nothing follows `Finished`.

use std::time::Duration;

use lease_core::Timestamp;
use lease_run_policy::{Effect, Event, Supervisor, Timing};
use proptest::prelude::*;

/// One step of a driver: how far time moves (capped by the wake-up asked for), and what is
/// heard then.
#[derive(Debug, Clone)]
enum Step {
    Tick,
    /// A renewal that started this long before now (capped: never before the previous one).
    Renewed(u64),
    Refused,
    TreeGone,
}

fn step() -> impl Strategy<Value = (u64, Step)> {
    (
        0u64..20_000,
        prop_oneof![
            4 => Just(Step::Tick),
            6 => (0u64..20_000).prop_map(Step::Renewed),
            1 => Just(Step::Refused),
            1 => Just(Step::TreeGone),
        ],
    )
}

fn timing() -> impl Strategy<Value = Timing> {
    (
        100u64..30_000,
        1u64..100,
        0u64..100,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(ttl_ms, rd_pct, ka_pct, default_rd, default_ka)| {
            let ttl = Duration::from_millis(ttl_ms);
            // Inside what Timing accepts: a renew deadline below 0.9 ttl, a kill-after below ttl.
            let rd = (!default_rd).then(|| (ttl * 89 / 100) * u32::try_from(rd_pct).unwrap() / 100);
            let rd = rd.filter(|d| !d.is_zero());
            let ka = (!default_ka).then(|| ttl * u32::try_from(ka_pct).unwrap() / 100);
            Timing::new(ttl, rd, ka).expect("a timing inside the bounds")
        })
}

proptest! {
    #[test]
    fn the_kill_comes_in_time_after_the_term_and_nothing_after_the_end(
        timing in timing(),
        start_ns in 0u64..1_000_000_000_000,
        steps in prop::collection::vec(step(), 0..60),
    ) {
        let start = Timestamp::from_nanos(start_ns);
        let mut machine = Supervisor::new(timing, start);
        let mut now = start;
        let mut wake = Timestamp::MAX;
        // The start of the last renewal that succeeded before the loss, as the driver saw it.
        let mut last_ok = start;
        let mut lost = false;
        let (mut termed, mut killed, mut finished) = (false, false, false);
        let mut previous_start = start;
        let latest = |s: Timestamp| timing.window_end(s).saturating_sub(timing.margin());
        let mut events = vec![(0, Step::Tick)];
        events.extend(steps);
        for (advance, step) in events {
            now = now.saturating_add(Duration::from_millis(advance)).min(wake.max(now));
            let event = match step {
                Step::Tick => Event::Tick,
                Step::Renewed(back) => {
                    let s = now.saturating_sub(Duration::from_millis(back)).max(previous_start);
                    previous_start = s;
                    if !lost && s > last_ok {
                        last_ok = s;
                    }
                    Event::Renewed(s)
                }
                Step::Refused => Event::Refused("refused".to_owned()),
                Step::TreeGone => Event::TreeGone,
            };
            let effects = machine.handle(now, event);
            if finished {
                prop_assert!(effects.is_empty(), "{effects:?} after Finished");
                continue;
            }
            wake = Timestamp::MAX;
            for (i, e) in effects.iter().enumerate() {
                match e {
                    Effect::Terminate(_) => {
                        prop_assert!(!termed && !killed, "a second SIGTERM, or after SIGKILL");
                        termed = true;
                        lost = true;
                    }
                    Effect::Kill { .. } => {
                        prop_assert!(termed, "SIGKILL without SIGTERM first");
                        prop_assert!(!killed, "a second SIGKILL");
                        prop_assert!(now <= latest(last_ok), "SIGKILL at {now}, after {}", latest(last_ok));
                        killed = true;
                    }
                    Effect::MoveDeadline(at) => {
                        prop_assert!(*at <= latest(last_ok));
                        prop_assert!(!lost);
                    }
                    Effect::WakeAt(at) => wake = *at,
                    Effect::Finished(_) => {
                        prop_assert_eq!(i + 1, effects.len(), "effects after Finished");
                        finished = true;
                    }
                }
            }
            if !killed && !finished {
                prop_assert!(wake <= latest(last_ok), "woken at {wake}, after {}", latest(last_ok));
            }
        }
    }
}
