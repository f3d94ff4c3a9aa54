//! [`FakeClock`]: a [`Clock`] that only moves when a test tells it to, and that can say how many
//! sleepers are waiting on it (Juju's `testclock` with its `WaitAdvance` helper).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lease_core::{Clock, Sleep, Timestamp};
use tokio::sync::Notify;

/// Where every [`FakeClock`] starts unless told otherwise: 1,000,000 s and 5 ns after its epoch,
/// so code that assumes time starts at zero, or at a round number, breaks in tests.
pub const FAKE_CLOCK_START: Timestamp = Timestamp::from_nanos(1_000_000 * 1_000_000_000 + 5);

/// How long [`FakeClock::wait_for_sleepers`] waits, in real time, before it gives up.
pub const WAIT_FOR_SLEEPERS_TIMEOUT: Duration = Duration::from_secs(10);

/// The clock's shared state.
struct State {
    now: Timestamp,
    next_id: u64,
    /// Pending sleepers by (deadline, registration order), each with the waker of its last
    /// poll (none before its first poll).
    sleepers: BTreeMap<(Timestamp, u64), Option<Waker>>,
}

struct Shared {
    state: Mutex<State>,
    /// Notified whenever the number of sleepers may have changed.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held (a failing assertion in a test) leaves consistent
        // state behind: every critical section below is a few map operations.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fake [`Clock`] for tests: time stands still until [`FakeClock::advance`] or
/// [`FakeClock::set`] moves it, and then every sleeper whose deadline has been reached wakes, in
/// deadline order.
///
/// Clones share one timeline, so a test keeps one clone and gives another (or
/// [`FakeClock::as_clock`]) to the code under test. The clock starts at [`FAKE_CLOCK_START`], a
/// deliberately odd instant.
///
/// Its sleep futures need no tokio timer: they work on any executor (tokio's `current_thread`
/// and `multi_thread` runtimes, with time paused or not, or none at all).
///
/// ```
/// use std::time::Duration;
/// use lease_core::Clock;
/// use lease_testkit::FakeClock;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let clock = FakeClock::new();
/// let deadline = clock.now().saturating_add(Duration::from_secs(30));
/// let sleeper = tokio::spawn(clock.sleep_until(deadline));
///
/// // Wait until the task is asleep, then move time past its deadline.
/// clock.wait_advance(Duration::from_secs(30), 1).await;
/// sleeper.await.unwrap();
/// assert_eq!(clock.sleepers(), 0);
/// # }
/// ```
#[derive(Clone)]
pub struct FakeClock {
    shared: Arc<Shared>,
}

impl FakeClock {
    /// A clock at [`FAKE_CLOCK_START`].
    pub fn new() -> FakeClock {
        FakeClock::starting_at(FAKE_CLOCK_START)
    }

    /// A clock at `start`.
    pub fn starting_at(start: Timestamp) -> FakeClock {
        FakeClock {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    now: start,
                    next_id: 0,
                    sleepers: BTreeMap::new(),
                }),
                changed: Notify::new(),
            }),
        }
    }

    /// The current instant (the same as [`Clock::now`], without importing the trait).
    pub fn now(&self) -> Timestamp {
        self.shared.lock().now
    }

    /// Moves time forward by `d` and wakes every sleeper whose deadline has been reached, in
    /// deadline order (sleepers with equal deadlines in the order they were created).
    pub fn advance(&self, d: Duration) {
        let target = self.now().saturating_add(d);
        self.move_to(target);
    }

    /// Moves time forward to `t` and wakes sleepers as [`FakeClock::advance`] does. Setting the
    /// current instant again is allowed and does nothing.
    ///
    /// # Panics
    ///
    /// When `t` is earlier than the current instant: a clock never goes backwards.
    pub fn set(&self, t: Timestamp) {
        let now = self.now();
        assert!(
            t >= now,
            "FakeClock::set: cannot move the clock backwards from {now} to {t}"
        );
        self.move_to(t);
    }

    fn move_to(&self, target: Timestamp) {
        let wakers = {
            let mut state = self.shared.lock();
            if target > state.now {
                state.now = target;
            }
            let now = state.now;
            // Everything with a deadline <= now, in (deadline, id) order.
            let later = state
                .sleepers
                .split_off(&(now.saturating_add(Duration::from_nanos(1)), 0));
            let due = std::mem::replace(&mut state.sleepers, later);
            if now == Timestamp::MAX {
                // split_off at MAX + 1 ns saturates to MAX: everything is due.
                let rest = std::mem::take(&mut state.sleepers);
                due.into_iter().chain(rest).collect::<Vec<_>>()
            } else {
                due.into_iter().collect::<Vec<_>>()
            }
        };
        let woke_any = !wakers.is_empty();
        for (_, waker) in wakers {
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        if woke_any {
            self.shared.changed.notify_waiters();
        }
    }

    /// The number of pending sleep futures: created by [`Clock::sleep_until`] with a deadline
    /// still in the future, and neither completed nor dropped.
    pub fn sleepers(&self) -> usize {
        self.shared.lock().sleepers.len()
    }

    /// The earliest deadline of a pending sleeper that is still in the future, if any: where a
    /// simulator that drives time from event to event moves the clock next.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let state = self.shared.lock();
        let now = state.now;
        state
            .sleepers
            .range((now.saturating_add(Duration::from_nanos(1)), 0)..)
            .next()
            .map(|(&(deadline, _), _)| deadline)
            .filter(|&deadline| deadline > now)
    }

    /// Waits until exactly `n` sleepers are pending (see [`FakeClock::sleepers`]), letting the
    /// runtime run other tasks meanwhile. This is how a test knows the code under test has set
    /// its timers before it moves time: Juju's `WaitAdvance`.
    ///
    /// The wait is bounded by [`WAIT_FOR_SLEEPERS_TIMEOUT`] of *real* time (measured on a
    /// helper thread, not tokio's timer, so it also works with tokio's time paused).
    ///
    /// # Panics
    ///
    /// When the count is not `n` within the timeout; the message says how many sleepers were
    /// expected and how many there were.
    pub async fn wait_for_sleepers(&self, n: usize) {
        if let Err(message) = self
            .try_wait_for_sleepers(n, WAIT_FOR_SLEEPERS_TIMEOUT)
            .await
        {
            panic!("{message}");
        }
    }

    /// [`FakeClock::wait_for_sleepers`] with a caller-chosen real-time `timeout`, returning
    /// instead of panicking when the count is not reached.
    ///
    /// # Errors
    ///
    /// A message saying how many sleepers were expected and how many there were, when the
    /// count is not `n` within `timeout`.
    pub async fn try_wait_for_sleepers(&self, n: usize, timeout: Duration) -> Result<(), String> {
        // A helper thread raises `expired` and wakes us after `timeout`, unless we finish
        // first: dropping `_cancel` ends its wait at once.
        let expired = Arc::new(AtomicBool::new(false));
        let (_cancel, cancelled) = mpsc::channel::<()>();
        {
            let expired = Arc::clone(&expired);
            let shared = Arc::clone(&self.shared);
            std::thread::spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(timeout) {
                    expired.store(true, Ordering::SeqCst);
                    shared.changed.notify_waiters();
                }
            });
        }
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            // Register interest before looking, so a change between the look and the await
            // is not lost.
            notified.as_mut().enable();
            let count = self.sleepers();
            if count == n {
                return Ok(());
            }
            if expired.load(Ordering::SeqCst) {
                return Err(format!(
                    "FakeClock: expected {n} sleeper(s), found {count} after waiting {timeout:?}"
                ));
            }
            notified.await;
        }
    }

    /// Waits until exactly `n` sleepers are pending, then advances time by `d`.
    ///
    /// # Panics
    ///
    /// As [`FakeClock::wait_for_sleepers`].
    pub async fn wait_advance(&self, d: Duration, n: usize) {
        self.wait_for_sleepers(n).await;
        self.advance(d);
    }

    /// This clock as the shared trait object stores and managers take.
    pub fn as_clock(&self) -> Arc<dyn Clock> {
        Arc::new(self.clone())
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        FakeClock::new()
    }
}

impl fmt::Debug for FakeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("FakeClock")
            .field("now", &state.now)
            .field("sleepers", &state.sleepers.len())
            .finish()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        FakeClock::now(self)
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let id = {
            let mut state = self.shared.lock();
            if state.now >= deadline {
                None
            } else {
                let id = state.next_id;
                state.next_id += 1;
                state.sleepers.insert((deadline, id), None);
                Some(id)
            }
        };
        if id.is_some() {
            self.shared.changed.notify_waiters();
        }
        Box::pin(FakeSleep {
            shared: Arc::clone(&self.shared),
            deadline,
            id,
        })
    }
}

/// The future behind [`FakeClock`]'s [`Clock::sleep_until`].
struct FakeSleep {
    shared: Arc<Shared>,
    deadline: Timestamp,
    /// Its registration, while it is pending; `None` once complete.
    id: Option<u64>,
}

impl Future for FakeSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(id) = self.id else {
            return Poll::Ready(());
        };
        let mut state = self.shared.lock();
        if state.now >= self.deadline {
            // `advance` has already removed the entry; this is for safety only.
            let removed = state.sleepers.remove(&(self.deadline, id)).is_some();
            drop(state);
            self.id = None;
            if removed {
                self.shared.changed.notify_waiters();
            }
            return Poll::Ready(());
        }
        if let Some(slot) = state.sleepers.get_mut(&(self.deadline, id)) {
            match slot {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }
}

impl Drop for FakeSleep {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let removed = self
                .shared
                .lock()
                .sleepers
                .remove(&(self.deadline, id))
                .is_some();
            if removed {
                self.shared.changed.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicUsize;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn next_deadline_is_the_earliest_future_sleeper() {
        let clock = FakeClock::new();
        assert_eq!(clock.next_deadline(), None);
        let start = clock.now();
        let late = Clock::sleep_until(&clock, start.saturating_add(Duration::from_secs(5)));
        let early = Clock::sleep_until(&clock, start.saturating_add(Duration::from_secs(2)));
        assert_eq!(
            clock.next_deadline(),
            Some(start.saturating_add(Duration::from_secs(2)))
        );
        drop(early);
        assert_eq!(
            clock.next_deadline(),
            Some(start.saturating_add(Duration::from_secs(5)))
        );
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.next_deadline(), None);
        drop(late);
    }

    #[test]
    fn starts_at_an_odd_instant() {
        let clock = FakeClock::new();
        assert_eq!(clock.now(), FAKE_CLOCK_START);
        assert_eq!(clock.now().as_nanos() % 1_000_000_000, 5);
        let clock = FakeClock::starting_at(Timestamp::from_nanos(42));
        assert_eq!(Clock::now(&clock), Timestamp::from_nanos(42));
    }

    #[test]
    fn advance_and_set_move_time_forward_and_clones_share_it() {
        let clock = FakeClock::new();
        let other = clock.clone();
        clock.advance(secs(3));
        assert_eq!(other.now(), FAKE_CLOCK_START.saturating_add(secs(3)));
        let t = FAKE_CLOCK_START.saturating_add(secs(10));
        other.set(t);
        assert_eq!(clock.now(), t);
        clock.set(t); // setting the same instant is fine
        assert_eq!(clock.as_clock().now(), t);
    }

    #[test]
    #[should_panic(expected = "cannot move the clock backwards")]
    fn set_backwards_panics() {
        let clock = FakeClock::new();
        clock.set(Timestamp::from_nanos(1));
    }

    #[tokio::test]
    async fn sleep_in_the_past_completes_at_once_without_registering() {
        let clock = FakeClock::new();
        let sleep = clock.sleep_until(clock.now());
        assert_eq!(clock.sleepers(), 0);
        sleep.await;
        clock.sleep_until(Timestamp::ZERO).await;
    }

    #[tokio::test]
    async fn sleepers_are_counted_exactly_and_dropping_deregisters() {
        let clock = FakeClock::new();
        let a = clock.sleep_until(clock.now().saturating_add(secs(1)));
        let b = clock.sleep_until(clock.now().saturating_add(secs(2)));
        assert_eq!(clock.sleepers(), 2);
        drop(a);
        assert_eq!(clock.sleepers(), 1);
        clock.advance(secs(2));
        assert_eq!(clock.sleepers(), 0);
        b.await;
        assert_eq!(clock.sleepers(), 0);
    }

    #[tokio::test]
    async fn advance_wakes_only_due_sleepers_in_deadline_order() {
        let clock = FakeClock::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        let start = clock.now();
        let mut tasks = Vec::new();
        // Registered out of deadline order on purpose.
        for s in [3u64, 1, 2, 10] {
            let c = clock.clone();
            let order = Arc::clone(&order);
            tasks.push(tokio::spawn(async move {
                c.sleep_until(start.saturating_add(secs(s))).await;
                order.lock().unwrap().push(s);
            }));
        }
        clock.wait_for_sleepers(4).await;
        clock.advance(secs(3));
        clock.wait_for_sleepers(1).await;
        for task in tasks.drain(..3) {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![1, 2, 3]);
        // The 10 s sleeper is still asleep, just before its deadline.
        clock.advance(secs(7) - Duration::from_nanos(1));
        assert_eq!(clock.sleepers(), 1);
        clock.advance(Duration::from_nanos(1));
        tasks.pop().unwrap().await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec![1, 2, 3, 10]);
    }

    #[tokio::test]
    async fn wake_order_is_deadline_order_within_one_advance() {
        // Each sleeper records when its waker is called, not when its task runs.
        struct Recorder(Arc<Mutex<Vec<u64>>>, u64);
        impl std::task::Wake for Recorder {
            fn wake(self: Arc<Self>) {
                self.0.lock().unwrap().push(self.1);
            }
        }
        let clock = FakeClock::new();
        let woken = Arc::new(Mutex::new(Vec::new()));
        let start = clock.now();
        let mut sleeps = Vec::new();
        for s in [5u64, 2, 4, 1, 3] {
            let mut sleep = clock.sleep_until(start.saturating_add(secs(s)));
            let waker = Waker::from(Arc::new(Recorder(Arc::clone(&woken), s)));
            let mut cx = Context::from_waker(&waker);
            assert!(sleep.as_mut().poll(&mut cx).is_pending());
            sleeps.push(sleep);
        }
        clock.advance(secs(5));
        assert_eq!(*woken.lock().unwrap(), vec![1, 2, 3, 4, 5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn works_on_a_multi_thread_runtime() {
        let clock = FakeClock::new();
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 1..=4u64 {
            let sleep = clock.sleep_until(clock.now().saturating_add(secs(i)));
            let done = Arc::clone(&done);
            tasks.push(tokio::spawn(async move {
                sleep.await;
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        clock.wait_advance(secs(4), 4).await;
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_sleepers_works_with_paused_tokio_time() {
        let clock = FakeClock::new();
        let c = clock.clone();
        let task = tokio::spawn(async move {
            // Some tokio-timed work first, then a sleep on the fake clock.
            tokio::time::sleep(Duration::from_secs(60)).await;
            c.sleep_until(c.now().saturating_add(secs(5))).await;
        });
        clock.wait_advance(secs(5), 1).await;
        task.await.unwrap();
    }

    #[tokio::test]
    async fn wait_for_sleepers_times_out_with_a_clear_message() {
        let clock = FakeClock::new();
        let _one = clock.sleep_until(clock.now().saturating_add(secs(1)));
        let err = clock
            .try_wait_for_sleepers(2, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "FakeClock: expected 2 sleeper(s), found 1 after waiting 50ms"
        );
    }

    #[tokio::test]
    async fn wait_for_sleepers_waits_for_a_spawned_task_to_register() {
        let clock = FakeClock::new();
        let c = clock.clone();
        let task = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            c.sleep_until(c.now().saturating_add(secs(1))).await;
            c.now()
        });
        clock.wait_for_sleepers(1).await;
        assert_eq!(clock.sleepers(), 1);
        clock.advance(secs(1));
        assert_eq!(
            task.await.unwrap(),
            FAKE_CLOCK_START.saturating_add(secs(1))
        );
    }

    #[tokio::test]
    async fn wait_for_sleepers_zero_waits_for_sleepers_to_go_away() {
        let clock = FakeClock::new();
        let sleep = clock.sleep_until(clock.now().saturating_add(secs(1)));
        let task = tokio::spawn(async move {
            tokio::task::yield_now().await;
            drop(sleep);
        });
        clock.wait_for_sleepers(0).await;
        task.await.unwrap();
    }

    #[test]
    fn debug_shows_time_and_sleepers() {
        let clock = FakeClock::starting_at(Timestamp::from_nanos(1_000_000_007));
        let _s = clock.sleep_until(Timestamp::MAX);
        assert_eq!(
            format!("{clock:?}"),
            "FakeClock { now: Timestamp(1000000007), sleepers: 1 }"
        );
    }

    #[test]
    fn advancing_to_the_end_of_time_wakes_everything() {
        let clock = FakeClock::new();
        let _s = clock.sleep_until(Timestamp::MAX);
        assert_eq!(clock.sleepers(), 1);
        clock.set(Timestamp::MAX);
        assert_eq!(clock.sleepers(), 0);
    }
}
