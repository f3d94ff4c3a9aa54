//! The leader-and-follower scenario of `bench_election`: requests per minute (Kubernetes),
//! handovers after a release, and takeovers after SIGSTOP and SIGKILL of the leader.

use std::path::Path;
use std::time::Duration;

use kube::Client;
use lease_bench::Res;
use lease_bench::k8s::apiserver_metrics::scrape;
use lease_bench::k8s::{Verbs, delta, total};

use crate::session::{Ev, Session};
use crate::terms::{generation_problems, intervals, max_simultaneous};
use crate::{
    Backend, EVENT_PATIENCE, KILL_AFTER_RENEWAL, LEASE_DURATION, RETRY_PERIOD, SETTLE,
    SETTLE_JITTER, STARTUP_PATIENCE, now_ns, random_below, span,
};

/// One measured window of the requests scenario.
#[derive(Debug, Default, Clone)]
pub(crate) struct Window {
    /// Between the two scrapes of the server's metrics.
    pub(crate) server_span: Duration,
    /// `apiserver_request_total{resource="leases"}` deltas: every client of the server.
    pub(crate) server: Verbs,
    /// Between the leader's two tallies (which enclose the scrapes).
    pub(crate) client_span: Duration,
    /// What the leader's and the follower's own clients sent.
    pub(crate) leader: Verbs,
    pub(crate) follower: Verbs,
    /// Renewals the leader started between its tallies.
    pub(crate) renewals: usize,
    /// `apiserver_longrunning_gauge{resource="leases",verb="WATCH"}` (server-wide).
    pub(crate) open_watches: i64,
}

impl Window {
    /// Lease requests the server counted beyond the candidates' own.
    pub(crate) fn foreign(&self) -> u64 {
        total(&self.server).saturating_sub(total(&self.leader) + total(&self.follower))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Requests {
    pub(crate) alone: Window,
    pub(crate) both: Window,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Handover {
    /// `unlocking` (leader) to `became` (follower).
    pub(crate) total: Duration,
    /// `unlocking` to `released` (the revoke returned) on the leader.
    pub(crate) revoke: Duration,
    pub(crate) revoked: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Takeover {
    /// From the start of the killed leader's last successful renewal.
    pub(crate) from_renewal: Duration,
    /// From when the leader saw that renewal succeed.
    pub(crate) from_renewal_seen: Duration,
    /// From the SIGKILL.
    pub(crate) from_kill: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct PairResult {
    pub(crate) requests: Option<Requests>,
    pub(crate) handovers: Vec<Handover>,
    pub(crate) takeover: Option<Takeover>,
    /// After SIGSTOP of the leader: `from_kill` is from the stop.
    pub(crate) stop_takeover: Option<Takeover>,
    pub(crate) terms: usize,
    pub(crate) max_leaders: usize,
    pub(crate) problems: Vec<String>,
}

pub(crate) fn renewals_between(events: &[Ev], who: &str, from: u64, to: u64) -> usize {
    events
        .iter()
        .filter(|e| e.who == who && e.kind == "renewed" && e.t >= from && e.t < to)
        .count()
}

/// Measures one window of `length`: the server's metrics around it, the candidates' tallies
/// around that.
pub(crate) async fn measure(
    s: &mut Session,
    admin: &Client,
    leader: usize,
    follower: Option<usize>,
    length: Duration,
) -> Res<Window> {
    let (leader0, lt0) = s.tally(leader).await?;
    let follower0 = match follower {
        Some(f) => Some(s.tally(f).await?.0),
        None => None,
    };
    let m0 = scrape(admin).await?;
    let t0 = now_ns();
    tokio::time::sleep(length).await;
    let m1 = scrape(admin).await?;
    let t1 = now_ns();
    let follower = match (follower, follower0) {
        (Some(f), Some(before)) => delta(&before, &s.tally(f).await?.0),
        _ => Verbs::new(),
    };
    let (leader1, lt1) = s.tally(leader).await?;
    let who = s.who(leader).to_owned();
    Ok(Window {
        server_span: span(t0, t1),
        server: delta(&m0.requests, &m1.requests),
        client_span: span(lt0, lt1),
        leader: delta(&leader0, &leader1),
        follower,
        renewals: renewals_between(&s.events(), &who, lt0, lt1),
        open_watches: m0.open_watches.min(m1.open_watches),
    })
}

/// Waits for a renewal of `leader`, lets [`KILL_AFTER_RENEWAL`] pass (so none is in flight),
/// then does `act` to it (a SIGSTOP or a SIGKILL, returning when) and times `follower`'s
/// takeover.
pub(crate) async fn takeover(
    s: &mut Session,
    leader: usize,
    follower: usize,
    act: impl FnOnce(&mut Session, usize) -> Res<u64>,
) -> Res<Takeover> {
    let (lw, fw) = (s.who(leader).to_owned(), s.who(follower).to_owned());
    let from = s.mark();
    s.wait(
        from,
        Some(&lw),
        "renewed",
        RETRY_PERIOD * 2 + EVENT_PATIENCE,
    )
    .await?;
    tokio::time::sleep(KILL_AFTER_RENEWAL).await;
    let last = s
        .events()
        .into_iter()
        .rev()
        .find(|e| e.who == lw && e.kind == "renewed")
        .ok_or("the leader's renewal vanished from the log")?;
    let acted = act(s, leader)?;
    let became = s
        .wait(from, Some(&fw), "became", LEASE_DURATION + EVENT_PATIENCE)
        .await?;
    Ok(Takeover {
        from_renewal: span(last.t, became.t),
        from_renewal_seen: span(last.seen, became.t),
        from_kill: span(acted, became.t),
    })
}

pub(crate) async fn pair(
    backend: &Backend,
    exe: &Path,
    admin: Option<&Client>,
    window: Duration,
    handovers: usize,
) -> Res<PairResult> {
    let label = backend.label();
    let lease = "pair";
    let mut s = Session::new(backend, exe);
    let mut result = PairResult::default();
    let a = s.spawn(lease, "cand-a")?;
    s.wait(0, Some("cand-a"), "ready", STARTUP_PATIENCE).await?;
    let from = s.mark();
    s.send(a, "lock")?;
    s.wait(from, Some("cand-a"), "became", EVENT_PATIENCE)
        .await?;

    let mut alone = Window::default();
    if let Some(admin) = admin {
        eprintln!(
            "bench_election: {label}: leader alone for {} s...",
            window.as_secs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        alone = measure(&mut s, admin, a, None, window).await?;
    }

    let b = s.spawn(lease, "cand-b")?;
    s.wait(0, Some("cand-b"), "ready", STARTUP_PATIENCE).await?;
    let from = s.mark();
    s.send(b, "lock")?;
    s.wait(from, Some("cand-b"), "following", EVENT_PATIENCE)
        .await?;
    if let Some(admin) = admin {
        eprintln!(
            "bench_election: {label}: leader and follower for {} s...",
            window.as_secs()
        );
        // The follower's start-up (its watch's list, its first look at the lease) is not part
        // of the steady state measured.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let both = measure(&mut s, admin, a, Some(b), window).await?;
        result.requests = Some(Requests { alone, both });
    } else {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    eprintln!("bench_election: {label}: {handovers} handovers...");
    let (mut leader, mut follower) = (a, b);
    for _ in 0..handovers {
        let (lw, fw) = (s.who(leader).to_owned(), s.who(follower).to_owned());
        let from = s.mark();
        s.send(leader, "unlock")?;
        let unlocking = s.wait(from, Some(&lw), "unlocking", EVENT_PATIENCE).await?;
        let became = s
            .wait(from, Some(&fw), "became", LEASE_DURATION + EVENT_PATIENCE)
            .await?;
        let released = s.wait(from, Some(&lw), "released", EVENT_PATIENCE).await?;
        result.handovers.push(Handover {
            total: span(unlocking.t, became.t),
            revoke: span(unlocking.t, released.t),
            revoked: released.ok,
        });
        // The old leader becomes the follower, and settles into its wait.
        let from = s.mark();
        s.send(leader, "lock")?;
        s.wait(from, Some(&lw), "following", EVENT_PATIENCE).await?;
        // A random phase: a fixed pause could line the release up with the follower's
        // refresh timer (its fallback when a change event is missed, every 100 ms).
        tokio::time::sleep(SETTLE + random_below(SETTLE_JITTER)).await;
        std::mem::swap(&mut leader, &mut follower);
    }

    eprintln!(
        "bench_election: {label}: SIGSTOP the leader, wait for the takeover at expiry (~{} s)...",
        LEASE_DURATION.as_secs()
    );
    result.stop_takeover =
        Some(takeover(&mut s, leader, follower, |s, i| s.signal(i, true)).await?);
    let lw = s.who(leader).to_owned();
    // Continued, the old leader finds its term over (its lost token fires), then follows.
    let from = s.mark();
    s.signal(leader, false)?;
    s.wait(from, Some(&lw), "stopped", EVENT_PATIENCE).await?;
    s.send(leader, "lock")?;
    s.wait(from, Some(&lw), "following", EVENT_PATIENCE).await?;
    tokio::time::sleep(SETTLE + random_below(SETTLE_JITTER)).await;
    std::mem::swap(&mut leader, &mut follower);

    eprintln!(
        "bench_election: {label}: SIGKILL the leader, wait for the takeover (~{} s)...",
        LEASE_DURATION.as_secs()
    );
    result.takeover = Some(takeover(&mut s, leader, follower, |s, i| Ok(s.kill(i))).await?);
    // A moment as the only leader, then the end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.shutdown().await;

    let events = s.events();
    let terms = intervals(&events);
    result.terms = terms.len();
    result.max_leaders = max_simultaneous(&terms);
    result.problems = generation_problems(&terms);
    for ev in &events {
        if ev.kind == "error" {
            result
                .problems
                .push(format!("candidate {}: {}", ev.who, ev.what));
        }
    }
    Ok(result)
}
