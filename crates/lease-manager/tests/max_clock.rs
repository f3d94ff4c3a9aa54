//! A clock that reads `Timestamp::MAX` (a fake clock set there, or a broken clock source):
//! the worker idles instead of spinning on timers that can never move past "now", keeps
//! serving requests, and never says "held" at the end of time.
//!
//! The spin is measured as the worker's clock reads during a short real pause (on a
//! multi-thread runtime, so a spinning worker cannot starve the test): a spinning worker reads
//! the clock millions of times a second, an idle one not at all. The bound is generous.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lease_core::{Clock, DefaultSecretary, Request, Sleep, Timestamp, Token as _};
use lease_manager::{Manager, ManagerConfig};
use lease_testkit::{FakeClock, InMemoryStore};

/// The fake clock, counting how often the worker reads it or sleeps on it.
#[derive(Debug)]
struct CountingClock {
    clock: FakeClock,
    uses: AtomicU64,
}

impl Clock for CountingClock {
    fn now(&self) -> Timestamp {
        self.uses.fetch_add(1, Ordering::Relaxed);
        self.clock.now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        self.uses.fetch_add(1, Ordering::Relaxed);
        Clock::sleep_until(&self.clock, deadline)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_clock_reads_the_maximum_idles_and_never_says_held() {
    let fake = FakeClock::new();
    let clock = Arc::new(CountingClock {
        clock: fake.clone(),
        uses: AtomicU64::new(0),
    });
    let manager = Manager::start(
        ManagerConfig::new(InMemoryStore::new(fake.as_clock()), clock.clone())
            .with_default_secretary(Arc::new(DefaultSecretary))
            .with_refresh_interval(Duration::from_secs(1)),
    )
    .unwrap();
    let claimer = lease_core::Facades::claimer(&manager, "ns", "m").unwrap();
    claimer
        .claim("a", Request::new("me", Duration::from_secs(30)))
        .await
        .unwrap();
    let token = manager.token("ns", "m", "a", "me").unwrap();
    token.check().await.unwrap();

    fake.set(Timestamp::MAX);
    // Whatever the worker does on noticing the jump (its timers are due once) ...
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... it then idles: next to no clock reads over a real pause.
    let before = clock.uses.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let uses = clock.uses.load(Ordering::Relaxed) - before;
    assert!(
        uses < 1_000,
        "the worker read its clock {uses} times in 300 ms while idle at the maximum instant"
    );

    // It still serves, and nothing is held at the end of time (every expiry saturates there).
    assert!(
        token.check().await.is_err(),
        "a token says held at Timestamp::MAX"
    );
    let late = claimer
        .claim("b", Request::new("me", Duration::from_secs(30)))
        .await;
    let late_token = manager.token("ns", "m", "b", "me").unwrap();
    assert!(
        late_token.check().await.is_err(),
        "a claim made at Timestamp::MAX ({late:?}) is said to be held"
    );
    manager.stop().await;
}
