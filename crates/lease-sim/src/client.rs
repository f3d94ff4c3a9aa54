//! The clients a simulated process runs, each logging the windows in which it may act as
//! holder, on true time, as the torture workers do:
//!
//! - a claim (raw claimer, resource lock) that started at `s` on the process's clock with
//!   duration `d` and returned at true `r` lets its client act from `r` until the process's
//!   clock reads `s + d` less the client's drift margin; a release cuts it before the revoke;
//! - a leader (elector, leaser holder) acts from when `lock()` / `acquire_lease` returned until
//!   it sees its lost token, or until it decides to stop (logged before it releases).
//!
//! A paused process acts on nothing, so the checker cuts every window at the first pause of its
//! process inside it; a leader that finds, after a pause, that it still leads opens a new window
//! (so a stale "still leading" after a pause is caught).

use std::sync::Arc;
use std::time::Duration;

use lease_core::{
    CancellationToken, Claimer, Clock, Leaser as _, LeaserError, PathKey, Request, Revoker,
};
use lease_manager::{
    Callbacks, ElectionConfig, ElectionError, LeaderElector, ManagerLeaser, ResourceKey,
    ResourceLockError, ResourceLocks,
};

use crate::clock::DriftClock;
use crate::world::{Call, Window, World};

/// What a client task needs.
#[derive(Clone)]
pub struct Ctx {
    /// The run.
    pub world: Arc<World>,
    /// Its process's clock.
    pub clock: DriftClock,
    /// Its process.
    pub process: usize,
    /// Fires when the run ends: the client stops starting new work.
    pub stop: CancellationToken,
    /// A name unique in the run.
    pub name: String,
    /// The lease (number) it contends for.
    pub lease: usize,
}

impl Ctx {
    fn now(&self) -> u64 {
        self.world.now()
    }

    /// Opens a window; `notice` is a term's renew deadline on the process's clock (zero for a
    /// claim's window, see [`Window::notice`]).
    fn open(
        &self,
        lease: &str,
        holder: &str,
        generation: u64,
        notice: Duration,
        end: u64,
    ) -> usize {
        let start = self.now();
        let term = !notice.is_zero();
        let notice = if term {
            // On true time, for a clock running up to the configured error slow, plus a second
            // for the store call that tells the client.
            let slow = 1.0 - (self.world.config.drift_ppm as f64 / 1e6).clamp(0.0, 0.9);
            (notice.as_secs_f64() / slow * 1e9) as u64 + 1_000_000_000
        } else {
            0
        };
        let p = self.process;
        self.world.log(|| {
            format!("p{p} {holder} acts on {lease} with generation {generation} until {end}")
        });
        self.world.record(|r| {
            r.windows.push(Window {
                lease: lease.to_owned(),
                holder: holder.to_owned(),
                generation,
                process: p,
                term,
                start,
                end,
                notice,
                command: false,
            });
            r.windows.len() - 1
        })
    }

    fn close(&self, windows: &[usize]) {
        let at = self.now();
        let p = self.process;
        self.world
            .log(|| format!("p{p} stops acting: windows {windows:?}"));
        self.world.record(|r| {
            for &w in windows {
                if let Some(w) = r.windows.get_mut(w) {
                    w.end = w.end.min(at);
                }
            }
        });
    }

    pub(crate) fn call(&self, what: &'static str) -> usize {
        self.call_for(what, None)
    }

    /// A call that claims or renews the holding of `holder` on `lease` (`namespace/lease`).
    pub(crate) fn call_for(&self, what: &'static str, holding: Option<(&str, &str)>) -> usize {
        let start = self.now();
        let process = self.process;
        self.world.record(|r| {
            r.calls.push(Call {
                what,
                process,
                start,
                end: None,
                holding: holding.map(|(l, h)| (l.to_owned(), h.to_owned())),
                first_op: r.ops.len(),
                end_op: usize::MAX,
            });
            r.calls.len() - 1
        })
    }

    pub(crate) fn answered(&self, call: usize) {
        let at = self.now();
        self.world.record(|r| {
            let ops = r.ops.len();
            if let Some(c) = r.calls.get_mut(call) {
                c.end = Some(at);
                c.end_op = ops;
            }
        });
    }

    fn pauses(&self) -> usize {
        self.world
            .record(|r| r.pauses.get(&self.process).map_or(0, Vec::len))
    }

    /// Sleeps `d` on the process's clock; false when the run ended meanwhile.
    pub(crate) async fn sleep(&self, d: Duration) -> bool {
        let until = self.clock.now().saturating_add(d);
        tokio::select! {
            biased;
            () = self.stop.cancelled() => false,
            () = self.clock.sleep_until(until) => true,
        }
    }

    pub(crate) fn random(&self, max: Duration) -> Duration {
        let ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(self.world.rng(|r| r.u64(0..ns)))
    }

    /// The true instant at which a guarantee of `d` from `start_own` ends for this client,
    /// less its drift margin.
    fn guarantee_end(&self, start_own: lease_core::Timestamp, d: Duration) -> u64 {
        let margin = self.world.config.client_margin_ppm.clamp(0, 999_999) as u128;
        let kept = d.as_nanos() * (1_000_000 - margin) / 1_000_000;
        let kept = Duration::from_nanos(u64::try_from(kept).unwrap_or(u64::MAX));
        self.clock
            .true_at(start_own.saturating_add(kept))
            .as_nanos()
    }

    /// While leading: wakes every `step`, reopens the window after a pause, and returns when
    /// the lost token fires (true), the hold ends or the run ends (false).
    async fn lead(
        &self,
        lease: &str,
        holder: &str,
        generation: u64,
        lost: &CancellationToken,
        hold: Duration,
        notice: Duration,
    ) -> bool {
        let step = Duration::from_millis(500);
        let until = self.clock.now().saturating_add(hold);
        let mut window = self.open(lease, holder, generation, notice, u64::MAX);
        let mut pauses = self.pauses();
        loop {
            let wake = self.clock.now().saturating_add(step).min(until);
            tokio::select! {
                biased;
                () = lost.cancelled() => {
                    self.close(&[window]);
                    return true;
                }
                () = self.stop.cancelled() => {
                    self.close(&[window]);
                    return false;
                }
                () = self.clock.sleep_until(wake) => {}
            }
            if self.clock.now() >= until {
                self.close(&[window]);
                return false;
            }
            let now_pauses = self.pauses();
            if now_pauses != pauses {
                pauses = now_pauses;
                self.close(&[window]);
                if lost.is_cancelled() {
                    return true;
                }
                window = self.open(lease, holder, generation, notice, u64::MAX);
            }
        }
    }
}

/// A candidate: lock, lead for a while, release (or lose it), again.
///
/// With `relock` it calls `lock()` again at once from its lost token, as a program's
/// lost-leadership handler does: when the lease was lost, and also when it gives the term up
/// itself (the release runs in a task of its own, the relock starts as soon as the release has
/// ended the term, while its revoke is still on the way).
pub async fn elector(ctx: Ctx, elector: Arc<LeaderElector>, relock: bool) {
    let lease = format!("elect/lease-{}", ctx.lease);
    let (duration, renew_deadline, _) = ctx.world.config.election;
    // The task's own name, not the elector's identity: two tasks on one elector must never
    // both lead one term.
    let holder = ctx.name.clone();
    while !ctx.stop.is_cancelled() {
        let guard = match elector.lock().await {
            Ok(guard) => guard,
            Err(ElectionError::AlreadyLeading { .. }) => {
                // The other task on this elector leads.
                if !ctx.sleep(ctx.random(duration)).await {
                    return;
                }
                continue;
            }
            Err(ElectionError::Lease(e)) if e.is_aborted() => return,
            Err(_) => {
                if !ctx.sleep(ctx.random(duration)).await {
                    return;
                }
                continue;
            }
        };
        let generation = guard.generation().get();
        let lost = guard.lost().clone();
        let hold = ctx.random(duration * 4);
        let was_lost = ctx
            .lead(&lease, &holder, generation, &lost, hold, renew_deadline)
            .await;
        if was_lost {
            drop(guard);
            if relock {
                continue;
            }
        } else if relock {
            tokio::spawn(guard.release());
            lost.cancelled().await;
            continue;
        } else {
            let _ = guard.release().await;
        }
        if !ctx.sleep(ctx.random(duration)).await {
            return;
        }
    }
}

/// Claims through the facade, extends (a claim by the holder) a few times, then revokes.
pub async fn claimer(ctx: Ctx, claimer: Arc<dyn Claimer>, revoker: Arc<dyn Revoker>) {
    let lease = format!("claim/lease-{}", ctx.lease);
    let name = format!("lease-{}", ctx.lease);
    let d = ctx.world.config.claim_duration;
    let holder = ctx.name.clone();
    let mut held: Vec<usize> = Vec::new();
    while !ctx.stop.is_cancelled() {
        let start_own = ctx.clock.now();
        let call = ctx.call_for("claim", Some((&lease, &holder)));
        let result = claimer.claim(&name, Request::new(&*holder, d)).await;
        ctx.answered(call);
        match result {
            Ok(info) => {
                let end = ctx.guarantee_end(start_own, d);
                held.push(ctx.open(&lease, &holder, info.generation.get(), Duration::ZERO, end));
                let keep = ctx.world.rng(|r| r.f64() < 0.6);
                if !ctx.sleep(ctx.random(d)).await {
                    return;
                }
                if keep {
                    continue;
                }
                ctx.close(&held);
                held.clear();
                let call = ctx.call("revoke");
                let _ = revoker.revoke(&name, &holder).await;
                ctx.answered(call);
            }
            Err(e) if e.is_aborted() => return,
            Err(_) => {}
        }
        if !ctx.sleep(ctx.random(d)).await {
            return;
        }
    }
}

/// Holds a lease through `ManagerLeaser` until it is lost or the client gives it back.
pub async fn leaser(ctx: Ctx, leaser: ManagerLeaser) {
    let Ok(key) = PathKey::system([format!("lease-{}", ctx.lease)]) else {
        return;
    };
    let lease = format!("leaser/{key}");
    let d = ctx.world.config.claim_duration;
    // ManagerLeaser gives a lease up when its renewals have failed for this long.
    let give_up = d - d / 6;
    while !ctx.stop.is_cancelled() {
        let call = ctx.call("acquire_lease");
        let result = leaser.acquire_lease(&key, d, None).await;
        ctx.answered(call);
        match result {
            Ok((guard, lost)) => {
                let generation = guard.generation().get();
                let hold = ctx.random(d * 6);
                let was_lost = ctx
                    .lead(&lease, &ctx.name, generation, &lost, hold, give_up)
                    .await;
                if !was_lost {
                    let call = ctx.call("release");
                    let _ = guard.release().await;
                    ctx.answered(call);
                }
            }
            Err(LeaserError::Lease(e)) if e.is_aborted() => return,
            Err(_) => {}
        }
        if !ctx.sleep(ctx.random(d)).await {
            return;
        }
    }
}

/// Transactions: lock a resource, renew it a few times, release it.
pub async fn resource_lock(ctx: Ctx, locks: ResourceLocks) {
    let key = ResourceKey::new("apps", "Deployment", "sim", format!("r{}", ctx.lease));
    let lease = format!("locks/{}", lease_manager::lease_name(&key));
    let d = ctx.world.config.claim_duration;
    let mut txn_no = 0u32;
    while !ctx.stop.is_cancelled() {
        txn_no += 1;
        let txn = format!("{}-t{txn_no}", ctx.name);
        let start_own = ctx.clock.now();
        let call = ctx.call("acquire");
        let result = locks.acquire(&key, &txn, d).await;
        ctx.answered(call);
        match result {
            Ok(lock) => {
                let generation = lock.generation.get();
                let end = ctx.guarantee_end(start_own, d);
                let mut held = vec![ctx.open(&lease, &txn, generation, Duration::ZERO, end)];
                let renewals = ctx.world.rng(|r| r.u32(0..4));
                for _ in 0..renewals {
                    if !ctx.sleep(ctx.random(d / 2)).await {
                        return;
                    }
                    let start_own = ctx.clock.now();
                    let call = ctx.call_for("renew", Some((&lease, &txn)));
                    let renewed = locks.renew(&lock.lease_name, &txn, d).await;
                    ctx.answered(call);
                    match renewed {
                        Ok(g) => {
                            let end = ctx.guarantee_end(start_own, d);
                            held.push(ctx.open(&lease, &txn, g.get(), Duration::ZERO, end));
                        }
                        Err(_) => break,
                    }
                }
                ctx.close(&held);
                let call = ctx.call("release");
                let _ = locks.release(&lock.lease_name, &txn).await;
                ctx.answered(call);
            }
            Err(ResourceLockError::Op(e)) if e.source.is_aborted() => return,
            Err(_) => {}
        }
        if !ctx.sleep(ctx.random(d)).await {
            return;
        }
    }
}

/// A new elector for `ctx`'s lease.
///
/// # Errors
///
/// When the configuration is refused (a bug in the simulator).
pub fn new_elector(
    ctx: &Ctx,
    manager: &lease_manager::Manager,
) -> Result<Arc<LeaderElector>, ElectionError> {
    let (d, rd, rp) = ctx.world.config.election;
    let config = ElectionConfig::new("elect", "m", format!("lease-{}", ctx.lease), &*ctx.name)
        .with_timing(d, rd, rp);
    let clock: Arc<dyn Clock> = Arc::new(ctx.clock.clone());
    LeaderElector::new(manager, clock, config, Callbacks::new()).map(Arc::new)
}
