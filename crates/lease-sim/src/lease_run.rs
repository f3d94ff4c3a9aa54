//! A simulated `lease run`: the command (a process tree that may ignore SIGTERM and ends at
//! SIGKILL), the shim beside it, and `lease run` itself: its claim, its renewals and its
//! watchdog, which drives lease-run-policy's [`Supervisor`], the very state machine the real
//! watchdog drives, on the process's own clock.
//!
//! What runs where, as in the real command:
//!
//! - `lease run` is the simulated process: its renewals and its watchdog read the process's
//!   drifting clock, its store calls go through the fault layer, and a pause stops both (the
//!   watchdog hears nothing, and decides nothing, until the process runs again);
//! - the shim and the command are other processes of the same host: they read the same clock
//!   (`CLOCK_BOOTTIME` is one clock for the host; here the same drifting reading) but are not
//!   stopped by the process's pauses. The shim knows the first kill deadline and reads the
//!   deadline "file" (the instant the watchdog last moved it to) whenever the one it knows has
//!   come, and kills the tree if it has not moved, exactly as `crate::supervisor::deadline` of
//!   lease-cli does. The shim's own pauses are not simulated: a stopped shim and a command
//!   that runs on are outside what any supervisor can enforce (the command's own process could
//!   be stopped as well);
//! - a crash of `lease run` (kill -9) ends the command at once: the shim's parent-death signal
//!   kills the tree, and on SQLite the tree holds the holder session's lock, so the lease is
//!   not freed before the tree is gone. The checker cuts the command's window at the crash.
//!
//! The command's running interval, on true time, is the window the checker checks: it must
//! lie inside the lease's guaranteed window (the store must hold the lease under its
//! generation, unexpired, throughout) and overlap no other holder's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lease_core::{CancellationToken, Clock, Key, Request, Store, Timestamp};
use lease_run_policy::{Effect, Event, Supervisor, Timing};
use tokio::sync::{Notify, mpsc};

use crate::client::Ctx;
use crate::clock::{DriftClock, Gate};
use crate::store::SimStore;
use crate::world::{Window, World};

/// The pause after a renewal that failed transiently, at most (lease-cli's `RETRY_PAUSE`).
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The simulated command's process tree, on true time (ns).
#[derive(Debug)]
struct Tree {
    /// When it ends by itself.
    natural_end: u64,
    /// Whether it exits on SIGTERM (after `term_delay`) or ignores it.
    handles_term: bool,
    /// How long it takes to exit after SIGTERM, when it does.
    term_delay: u64,
    /// The first SIGTERM.
    termed: Option<u64>,
    /// The first SIGKILL.
    killed: Option<u64>,
}

impl Tree {
    /// When the tree is gone, as things stand.
    fn end(&self) -> u64 {
        let mut end = self.natural_end;
        if let (true, Some(t)) = (self.handles_term, self.termed) {
            end = end.min(t.saturating_add(self.term_delay));
        }
        if let Some(k) = self.killed {
            end = end.min(k);
        }
        end
    }
}

/// What the parts of one run share (all polled on the simulation's one thread).
struct Shared {
    world: Arc<World>,
    tree: Mutex<Tree>,
    /// Wakes the tree when a signal arrives.
    signalled: Notify,
    /// Fires once the tree is gone.
    gone: CancellationToken,
    /// The kill deadline file: `None` until the first renewal moved it.
    deadline_file: Mutex<Option<Timestamp>>,
    /// Set once the supervisor gave the lease up: renewals stop.
    lost: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// SIGTERM (`kill` false) or SIGKILL to the tree, now.
    fn signal(&self, kill: bool) {
        let now = self.world.now();
        {
            let mut tree = lock(&self.tree);
            let slot = if kill {
                &mut tree.killed
            } else {
                &mut tree.termed
            };
            slot.get_or_insert(now);
        }
        self.signalled.notify_one();
    }
}

/// Sleeps until `at` on `clock`; never returns for `Timestamp::MAX` (nothing to wake for).
async fn sleep_until(clock: &DriftClock, at: Timestamp) {
    if at == Timestamp::MAX {
        std::future::pending::<()>().await;
    }
    clock.sleep_until(at).await;
}

/// One process's `lease run` invocations, one after the other, each under a holder name of its
/// own (a new `lease run` has a new pid), until the run ends.
pub async fn lease_run(ctx: Ctx, mut store: SimStore) {
    let d = ctx.world.config.claim_duration;
    let key = Key::new("run", "m", format!("lease-{}", ctx.lease));
    let lease = format!("run/lease-{}", ctx.lease);
    // `--kill-after`, drawn per process below the ttl (the timing caps it by the window).
    let kill_after = ctx.random(d * 9 / 10);
    let Ok(timing) = Timing::new(d, None, Some(kill_after)) else {
        return;
    };
    // The shim's clock: the host's, which the process's pauses do not stop.
    let shim_clock = ctx.clock.with_gate(Arc::new(Gate::default()));
    let mut n = 0u32;
    while !ctx.stop.is_cancelled() {
        n += 1;
        let holder = format!("{}-run{n}", ctx.name);
        let run = Run {
            ctx: &ctx,
            key: &key,
            lease: &lease,
            holder: &holder,
            timing,
            shim_clock: &shim_clock,
        };
        run.once(&mut store).await;
        if !ctx.sleep(ctx.random(d)).await {
            return;
        }
    }
}

/// One `lease run` invocation.
struct Run<'a> {
    ctx: &'a Ctx,
    key: &'a Key,
    lease: &'a str,
    holder: &'a str,
    timing: Timing,
    shim_clock: &'a DriftClock,
}

impl Run<'_> {
    async fn once(&self, store: &mut SimStore) {
        let ctx = self.ctx;
        let start = ctx.clock.now();
        let call = ctx.call_for("lease run claim", Some((self.lease, self.holder)));
        let claimed = store
            .claim_lease(self.key, &Request::new(self.holder, self.timing.ttl()))
            .await;
        ctx.answered(call);
        let info = match claimed {
            Ok(info) if info.holder == self.holder => info,
            _ => return,
        };
        let machine = Supervisor::new(self.timing, start);
        // A claim that came back too late would be given up at once: no command.
        if ctx.clock.now() >= self.timing.lost_at(start) {
            self.release(store).await;
            return;
        }
        let generation = info.generation.get();
        let now = ctx.world.now();
        let ttl_ns = u64::try_from(self.timing.ttl().as_nanos()).unwrap_or(u64::MAX);
        let kill_after_ns = u64::try_from(self.timing.kill_after().as_nanos()).unwrap_or(0);
        let (runs_for, handles_term, term_delay) = ctx.world.rng(|r| {
            (
                r.u64(0..ttl_ns.saturating_mul(4).max(1)),
                r.bool(),
                r.u64(0..kill_after_ns.saturating_mul(2).max(1)),
            )
        });
        let shared = Shared {
            world: Arc::clone(&ctx.world),
            tree: Mutex::new(Tree {
                natural_end: now.saturating_add(runs_for),
                handles_term,
                term_delay,
                termed: None,
                killed: None,
            }),
            signalled: Notify::new(),
            gone: CancellationToken::new(),
            deadline_file: Mutex::new(None),
            lost: AtomicBool::new(false),
        };
        let p = ctx.process;
        let holder = self.holder;
        let lease = self.lease;
        ctx.world.log(|| {
            format!(
                "p{p} {holder} runs its command on {lease} with generation {generation} \
                 (SIGTERM {}, runs {runs_for} ns)",
                if handles_term { "ends it" } else { "ignored" }
            )
        });
        let window = ctx.world.record(|r| {
            r.windows.push(Window {
                lease: lease.to_owned(),
                holder: holder.to_owned(),
                generation,
                process: p,
                term: false,
                start: now,
                end: u64::MAX,
                notice: 0,
                command: true,
            });
            r.windows.len() - 1
        });
        let (events, heard) = mpsc::unbounded_channel();
        let first_deadline = machine.first_deadline();
        tokio::join!(
            self.tree(&shared, window, events.clone()),
            self.shim(&shared, first_deadline),
            self.watchdog(&shared, machine, heard),
            self.renew(&shared, store, start, generation, events),
        );
        self.release(store).await;
    }

    /// The command's tree: ends by itself, on SIGTERM (unless it ignores it) or at SIGKILL.
    async fn tree(&self, shared: &Shared, window: usize, events: mpsc::UnboundedSender<Event>) {
        let world = &self.ctx.world;
        loop {
            let end = lock(&shared.tree).end();
            if world.now() >= end {
                world.record(|r| {
                    if let Some(w) = r.windows.get_mut(window) {
                        w.end = w.end.min(end);
                    }
                });
                let p = self.ctx.process;
                let holder = self.holder;
                world.log(|| format!("p{p} {holder}: the command's tree is gone"));
                shared.gone.cancel();
                // `lease run`'s reaper notices (when the process runs).
                let _ = events.send(Event::TreeGone);
                return;
            }
            tokio::select! {
                biased;
                () = shared.signalled.notified() => {}
                () = Clock::sleep_until(&world.truth, Timestamp::from_nanos(end)) => {}
            }
        }
    }

    /// The shim: SIGKILL to the tree when the deadline it knows has come and the file has not
    /// moved it.
    async fn shim(&self, shared: &Shared, first: Timestamp) {
        let mut known = first;
        loop {
            tokio::select! {
                biased;
                () = shared.gone.cancelled() => return,
                () = sleep_until(self.shim_clock, known) => {}
            }
            match *lock(&shared.deadline_file) {
                Some(moved) if moved > known => {
                    known = moved;
                    continue;
                }
                _ => {}
            }
            let p = self.ctx.process;
            let holder = self.holder;
            self.ctx
                .world
                .log(|| format!("p{p} {holder}: the shim's deadline came: SIGKILL"));
            shared.signal(true);
            return;
        }
    }

    /// `lease run`'s watchdog: the supervisor's machine on the process's clock.
    async fn watchdog(
        &self,
        shared: &Shared,
        mut machine: Supervisor,
        mut heard: mpsc::UnboundedReceiver<Event>,
    ) {
        let ctx = self.ctx;
        let p = ctx.process;
        let holder = self.holder;
        let mut event = Event::Tick;
        loop {
            let mut wake = Timestamp::MAX;
            for effect in machine.handle(ctx.clock.now(), event) {
                match effect {
                    Effect::Terminate(loss) => {
                        shared.lost.store(true, Ordering::SeqCst);
                        ctx.world
                            .log(|| format!("p{p} {holder}: lost ({loss:?}): SIGTERM"));
                        shared.signal(false);
                    }
                    Effect::Kill { window_left } => {
                        shared.lost.store(true, Ordering::SeqCst);
                        ctx.world.log(|| {
                            format!(
                                "p{p} {holder}: SIGKILL, {window_left:?} before the window ends"
                            )
                        });
                        shared.signal(true);
                    }
                    Effect::MoveDeadline(at) => *lock(&shared.deadline_file) = Some(at),
                    Effect::WakeAt(at) => wake = at,
                    Effect::Finished(verdict) => {
                        ctx.world
                            .log(|| format!("p{p} {holder}: lease run ends: {verdict:?}"));
                        return;
                    }
                }
            }
            event = tokio::select! {
                biased;
                e = heard.recv() => e.unwrap_or(Event::TreeGone),
                () = sleep_until(&ctx.clock, wake) => Event::Tick,
            };
            // A stopped process hears nothing until it runs again.
            ctx.clock.gate().pass(&ctx.world.truth).await;
        }
    }

    /// The renewals: every `renew_every`, each bounded by the current window; a success or a
    /// refusal goes to the watchdog.
    async fn renew(
        &self,
        shared: &Shared,
        store: &mut SimStore,
        start: Timestamp,
        generation: u64,
        events: mpsc::UnboundedSender<Event>,
    ) {
        let ctx = self.ctx;
        let timing = self.timing;
        let request = Request::new(self.holder, timing.ttl());
        let mut last_ok = start;
        let mut next = last_ok.saturating_add(timing.renew_every());
        loop {
            tokio::select! {
                biased;
                () = shared.gone.cancelled() => return,
                () = ctx.clock.sleep_until(next) => {}
            }
            if shared.lost.load(Ordering::SeqCst) {
                return;
            }
            let started = ctx.clock.now();
            let budget = timing.window_end(last_ok);
            if started >= budget {
                return;
            }
            let call = ctx.call_for("lease run renew", Some((self.lease, self.holder)));
            let answer = tokio::select! {
                biased;
                () = shared.gone.cancelled() => None,
                r = store.extend_lease(self.key, &request) => Some(Some(r)),
                () = ctx.clock.sleep_until(budget) => Some(None),
            };
            ctx.answered(call);
            let Some(answer) = answer else {
                return;
            };
            match answer {
                Some(Ok(info))
                    if info.holder == self.holder && info.generation.get() == generation =>
                {
                    last_ok = started;
                    let _ = events.send(Event::Renewed(started));
                    next = started.saturating_add(timing.renew_every());
                    continue;
                }
                Some(Ok(info)) => {
                    let _ = events.send(Event::Refused(format!(
                        "taken over by {} (generation {})",
                        info.holder, info.generation
                    )));
                    return;
                }
                Some(Err(e)) if e.is_invalid() || e.is_not_held() || e.is_held() => {
                    let _ = events.send(Event::Refused(format!("{:?}", e.kind())));
                    return;
                }
                Some(Err(_)) | None => {}
            }
            next = ctx
                .clock
                .now()
                .saturating_add(RETRY_PAUSE.min(timing.renew_every()));
        }
    }

    /// Gives the lease back (after the tree is gone); a failure leaves it to expire.
    async fn release(&self, store: &mut SimStore) {
        let call = self.ctx.call("lease run release");
        let _ = store.revoke_lease(self.key, self.holder).await;
        self.ctx.answered(call);
    }
}
