//! Issue 7's benchmark: lease-manager's [`LeaderElector`] on a real Kubernetes API server
//! ([`LeaseStore`]) and on SQLite ([`SqliteStore`]), with client-go's default timings (lease
//! 15 s, renew deadline 10 s, retry period 2 s), printed as markdown.
//!
//! Every candidate is its own **process**: the benchmark re-executes itself
//! (`--candidate --k8s NAMESPACE | --sqlite FILE --lease L --identity I`), and each candidate runs
//! a [`Manager`] over its own store (its own kube client and watch; or its own connection to one
//! shared SQLite file) and a [`LeaderElector`]. A candidate reads commands on stdin (`lock`,
//! `unlock`, `tally`; end of input: release if leading, stop, exit) and prints events on stdout as
//! JSON lines, each stamped with [`SystemClock`] (`CLOCK_BOOTTIME`, one clock for every process
//! of the host): `ready`, `became` (the claim returned; with the fencing generation), `renewed`
//! (the start of a successful renewal, read from the elector's lock record every 5 ms),
//! `following`, `unlocking` (about to call [`LeaderElector::unlock`]), `stopped` (its
//! `on_stopped_leading` callback: the lost token has fired), `released` (the revoke returned),
//! `tally` (the lease requests its client sent, by verb). The orchestrator reads them and
//! measures:
//!
//! 1. **Requests per minute** (Kubernetes only): a leader alone for a window (30 s by default),
//!    then the same leader with a follower for another window; `apiserver_request_total
//!    {resource="leases"}` deltas by verb, scraped from the server's `/metrics` around each
//!    window. The metrics do not say which client sent a request, so the follower's server-side
//!    figure is the second window minus the first (rate-scaled); each candidate also counts the
//!    lease requests its own client sends (a tower layer), which attributes them exactly and shows
//!    how much of the server's count came from other programs (the API server's own lease).
//! 2. **Handover after release**: the leader calls `unlock()`; the follower, waiting in `lock()`
//!    (the manager's `wait_until_expired`), claims. From `unlocking` to the follower's `became`.
//!    Then the old leader calls `lock()` again and becomes the follower; repeated.
//! 3. **Takeover after SIGSTOP, then after SIGKILL**: 300 ms after a logged renewal the leader
//!    is stopped with SIGSTOP; from the start of that renewal (what the holder's guarantee
//!    counts from) to the follower's `became`, which must wait for the expiry on every store (a
//!    stopped holder is alive). The stopped leader is continued, finds its term over and
//!    follows; then the new leader is killed with SIGKILL the same way: on SQLite the store
//!    sees the death and the follower takes over at once, elsewhere the lease must expire.
//! 4. **Candidates started together**: 5 processes started, and once all are ready, `lock` is
//!    written to their stdins back to back (the start barrier), on a fresh lease and on a stale
//!    one (its holder vanished: on Kubernetes, a Lease our store claimed for `dead-holder`, then
//!    rewritten with `renewTime` and `acquireTime` an hour old; on SQLite, a row claimed by
//!    `dead-holder` for 100 ms that has expired), several trials each. Leadership intervals
//!    (`became` to `stopped`, or to the SIGKILL) of all candidates must never overlap.
//!
//! ```text
//! cargo xtask k8s up && eval "$(cargo xtask k8s env)"
//! cargo run --release -p lease-store-k8s --example bench_election -- \
//!     [--window SECS] [--trials N] [--only k8s|sqlite]
//! ```
//!
//! Defaults: 30 s windows, 5 trials; about 4 minutes in all (the SIGSTOP takeovers, the
//! Kubernetes SIGKILL takeover and the stale Kubernetes lease wait out 15 s leases). Every run works in a new Kubernetes namespace
//! (`bench-election-…`, left behind; `cargo xtask k8s down` removes it) and a new SQLite file in
//! the temporary directory (removed at the end).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp as WallTime};
use kube::api::PostParams;
use kube::client::{Body, ClientBuilder};
use kube::{Api, Client, Config};
use lease_core::{Clock, DefaultSecretary, Key, Request, Store, SystemClock, Timestamp};
use lease_manager::{
    Callbacks, ElectionConfig, LeaderElector, Leadership, LeadershipGuard, Manager, ManagerConfig,
};
use lease_store_k8s::{LeaseStore, naming};
use lease_store_sqlite::SqliteStore;
use serde_json::{Value, json};
use tower::util::MapRequestLayer;

#[path = "support/apiserver_metrics.rs"]
mod apiserver_metrics;

use apiserver_metrics::{delta, scrape};

/// The manager namespace and model of every lease here.
const NAMESPACE: &str = "election";
const MODEL: &str = "bench";
/// client-go's defaults.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Issue 7's targets.
const HANDOVER_TARGET: Duration = Duration::from_millis(100);
const TAKEOVER_SLACK: Duration = Duration::from_millis(100);
/// Candidates per burst.
const BURST: usize = 5;
/// How long a burst is watched after its first leader.
const BURST_OBSERVE: Duration = Duration::from_secs(2);
/// How far apart the stale-lease trials on Kubernetes start (they overlap in time, each on its
/// own Lease, because each waits out a full lease duration).
const STALE_STAGGER: Duration = Duration::from_secs(3);
/// The pause before each handover, once the new follower follows, and its random spread (more
/// than two SQLite refresh intervals).
const SETTLE: Duration = Duration::from_secs(1);
const SETTLE_JITTER: Duration = Duration::from_millis(250);
/// The takeover target on SQLite, from the SIGKILL: the store frees a dead holder's lease at
/// once and the follower is woken by the death.
const SQLITE_DEATH_TAKEOVER: Duration = Duration::from_millis(50);

/// How long the leader lives after a logged renewal before it is killed.
const KILL_AFTER_RENEWAL: Duration = Duration::from_millis(300);
/// Generous bounds for things that should take a second or two.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);
const EVENT_PATIENCE: Duration = Duration::from_secs(30);
/// How long candidates may take to exit once their stdin is closed.
const EXIT_PATIENCE: Duration = Duration::from_secs(10);

type Res<T> = Result<T, String>;

/// Lease requests by verb (`GET`, `LIST`, `WATCH`, `POST`, `PUT`, ...).
type Verbs = BTreeMap<String, u64>;

// ---------------------------------------------------------------------------------------------
// Stores and their command-line form.

/// Which store a candidate runs on.
#[derive(Debug, Clone)]
enum Backend {
    K8s { namespace: String },
    Sqlite { path: PathBuf },
}

impl Backend {
    fn args(&self) -> Vec<String> {
        match self {
            Backend::K8s { namespace } => vec!["--k8s".to_owned(), namespace.clone()],
            Backend::Sqlite { path } => vec!["--sqlite".to_owned(), path.display().to_string()],
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Backend::K8s { .. } => "Kubernetes",
            Backend::Sqlite { .. } => "SQLite",
        }
    }

    fn is_k8s(&self) -> bool {
        matches!(self, Backend::K8s { .. })
    }
}

fn key(lease: &str) -> Key {
    Key::new(NAMESPACE, MODEL, lease)
}

fn now_ns() -> u64 {
    SystemClock::new().now().as_nanos()
}

/// A pseudo-random duration in `[0, below)`, from the clock's low bits and a mixer (no
/// dependency for it; good enough to randomise a phase).
fn random_below(below: Duration) -> Duration {
    let mut x = now_ns() ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let nanos = u64::try_from(below.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(x % nanos)
}

fn span(from: u64, to: u64) -> Duration {
    Duration::from_nanos(to.saturating_sub(from))
}

// ---------------------------------------------------------------------------------------------
// Counting lease requests on a client (the candidate's own).

#[derive(Debug, Default)]
struct Tally(Mutex<Verbs>);

impl Tally {
    fn record(&self, request: &http::Request<Body>) {
        let uri = request.uri();
        let Some((_, rest)) = uri.path().split_once("/leases") else {
            return;
        };
        let collection = rest.is_empty() || rest == "/";
        let watching = uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let verb = match (request.method().as_str(), collection) {
            ("GET", true) if watching => "WATCH",
            ("GET", true) => "LIST",
            (other, _) => other,
        };
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(verb.to_owned())
            .or_default() += 1;
    }

    fn snapshot(&self) -> Verbs {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn counted_client(config: &Config, tally: &Arc<Tally>) -> Res<Client> {
    let tally = Arc::clone(tally);
    let layer = MapRequestLayer::new(move |request: http::Request<Body>| {
        tally.record(&request);
        request
    });
    Ok(ClientBuilder::try_from(config.clone())
        .map_err(|e| format!("cannot build a client: {e}"))?
        .with_layer(&layer)
        .build())
}

// ---------------------------------------------------------------------------------------------
// The candidate process.

struct CandidateArgs {
    backend: Backend,
    lease: String,
    identity: String,
}

fn parse_candidate(args: &[String]) -> Res<CandidateArgs> {
    let mut backend = None;
    let mut lease = None;
    let mut identity = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        match flag.as_str() {
            "--k8s" => backend = Some(Backend::K8s { namespace: value }),
            "--sqlite" => {
                backend = Some(Backend::Sqlite {
                    path: PathBuf::from(value),
                });
            }
            "--lease" => lease = Some(value),
            "--identity" => identity = Some(value),
            other => return Err(format!("unknown candidate argument {other:?}")),
        }
    }
    Ok(CandidateArgs {
        backend: backend.ok_or("--k8s or --sqlite is required")?,
        lease: lease.ok_or("--lease is required")?,
        identity: identity.ok_or("--identity is required")?,
    })
}

/// Prints one event line and flushes it at once.
fn emit(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

async fn candidate(args: CandidateArgs) -> Res<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let tally = Arc::new(Tally::default());
    let config = match &args.backend {
        Backend::K8s { namespace } => {
            let kube_config = Config::infer()
                .await
                .map_err(|e| format!("cannot read the kubeconfig: {e}"))?;
            let store = LeaseStore::new(
                counted_client(&kube_config, &tally)?,
                namespace.clone(),
                Arc::clone(&clock),
            );
            ManagerConfig::new(store, Arc::clone(&clock))
        }
        Backend::Sqlite { path } => {
            let store = SqliteStore::builder(path.clone())
                .clock(Arc::clone(&clock))
                .open()
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            ManagerConfig::new(store, Arc::clone(&clock))
        }
    };
    let manager = Manager::start(config.with_default_secretary(Arc::new(DefaultSecretary)))
        .map_err(|e| format!("cannot start the manager: {e}"))?;
    let callbacks = {
        let (c1, c2) = (Arc::clone(&clock), Arc::clone(&clock));
        Callbacks::new()
            .on_started_leading(move |generation| {
                emit(&json!({"ev": "became", "t": c1.now().as_nanos(), "gen": generation.get()}));
            })
            .on_stopped_leading(move || emit(&json!({"ev": "stopped", "t": c2.now().as_nanos()})))
    };
    let election = ElectionConfig::new(NAMESPACE, MODEL, &*args.lease, &*args.identity)
        .with_timing(LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD);
    let elector = LeaderElector::new(&manager, Arc::clone(&clock), election, callbacks)
        .map_err(|e| format!("cannot create the elector: {e}"))?;
    let observer = tokio::spawn(observe(elector.clone(), Arc::clone(&clock)));

    // Commands from stdin; its end (the orchestrator closed it or died) ends the candidate.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    emit(&json!({"ev": "ready", "t": clock.now().as_nanos()}));

    let guard: Arc<Mutex<Option<LeadershipGuard>>> = Arc::default();
    let mut locking: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(command) = rx.recv().await {
        match command.trim() {
            "lock" => {
                if locking.as_ref().is_none_or(|h| h.is_finished()) {
                    let elector = elector.clone();
                    let guard = Arc::clone(&guard);
                    locking = Some(tokio::spawn(async move {
                        match elector.lock().await {
                            Ok(g) => {
                                *guard.lock().unwrap_or_else(PoisonError::into_inner) = Some(g)
                            }
                            Err(e) => emit(&json!({"ev": "error", "what": format!("lock: {e}")})),
                        }
                    }));
                }
            }
            "unlock" => unlock(&elector, &*clock, &guard).await,
            "tally" => emit(&json!({
                "ev": "tally",
                "t": clock.now().as_nanos(),
                "verbs": tally.snapshot(),
            })),
            other => emit(&json!({"ev": "error", "what": format!("unknown command {other:?}")})),
        }
    }
    if let Some(h) = locking {
        h.abort();
        let _ = h.await;
    }
    if elector.is_leader() {
        unlock(&elector, &*clock, &guard).await;
    }
    observer.abort();
    manager.stop().await;
    Ok(())
}

/// Gives leadership up with [`LeaderElector::unlock`], reporting before and after.
async fn unlock(
    elector: &LeaderElector,
    clock: &dyn Clock,
    guard: &Mutex<Option<LeadershipGuard>>,
) {
    emit(&json!({"ev": "unlocking", "t": clock.now().as_nanos()}));
    let revoked = elector.unlock().await;
    emit(&json!({"ev": "released", "t": clock.now().as_nanos(), "ok": revoked}));
    // The term has ended, so dropping its guard does nothing more.
    drop(guard.lock().unwrap_or_else(PoisonError::into_inner).take());
}

/// Reports successful renewals (the start of each, from the lock record) and whom this
/// candidate follows. Runs until aborted.
async fn observe(elector: LeaderElector, clock: Arc<dyn Clock>) {
    let mut state = elector.leadership();
    let mut last: Option<Timestamp> = None;
    loop {
        if let Some(record) = elector.lock_record()
            && record.renew_time != record.acquire_time
            && last != Some(record.renew_time)
        {
            last = Some(record.renew_time);
            emit(&json!({
                "ev": "renewed",
                "t": record.renew_time.as_nanos(),
                "seen": clock.now().as_nanos(),
            }));
        }
        if state.has_changed().unwrap_or(false) {
            let now = state.borrow_and_update().clone();
            if let Leadership::Following { leader } = now {
                emit(&json!({"ev": "following", "t": clock.now().as_nanos(), "leader": leader}));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The orchestrator's view of candidates.

/// One event a candidate printed (or the orchestrator noted about it: `killed`, `exit`).
#[derive(Debug, Clone, Default)]
struct Ev {
    who: String,
    kind: String,
    /// `CLOCK_BOOTTIME`, nanoseconds.
    t: u64,
    seen: u64,
    generation: u64,
    ok: bool,
    verbs: Verbs,
    what: String,
}

fn parse_event(who: &str, line: &str) -> Option<Ev> {
    let v: Value = serde_json::from_str(line).ok()?;
    let number = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Ev {
        who: who.to_owned(),
        kind: v.get("ev")?.as_str()?.to_owned(),
        t: number("t"),
        seen: number("seen"),
        generation: number("gen"),
        ok: v.get("ok").and_then(Value::as_bool).unwrap_or(false),
        verbs: v
            .get("verbs")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default(),
        what: v
            .get("what")
            .or_else(|| v.get("leader"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

type Log = Arc<Mutex<Vec<Ev>>>;

fn push(log: &Log, ev: Ev) {
    log.lock().unwrap_or_else(PoisonError::into_inner).push(ev);
}

struct Proc {
    who: String,
    child: Child,
    stdin: Option<ChildStdin>,
    done: bool,
}

/// Candidate processes on one store, and everything they reported.
struct Session {
    backend: Backend,
    exe: PathBuf,
    log: Log,
    procs: Vec<Proc>,
}

impl Session {
    fn new(backend: &Backend, exe: &Path) -> Session {
        Session {
            backend: backend.clone(),
            exe: exe.to_owned(),
            log: Log::default(),
            procs: Vec::new(),
        }
    }

    /// Starts a candidate for `lease` named `who`; returns its index.
    fn spawn(&mut self, lease: &str, who: &str) -> Res<usize> {
        let mut child = Command::new(&self.exe)
            .arg("--candidate")
            .args(self.backend.args())
            .args(["--lease", lease, "--identity", who])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start candidate {who}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let stdin = child.stdin.take();
        let log = Arc::clone(&self.log);
        let name = who.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match parse_event(&name, &line) {
                    Some(ev) => {
                        if ev.kind == "error" {
                            eprintln!("bench_election: candidate {name}: {}", ev.what);
                        }
                        push(&log, ev);
                    }
                    None => eprintln!("bench_election: candidate {name} printed {line:?}"),
                }
            }
            push(
                &log,
                Ev {
                    who: name,
                    kind: "exit".to_owned(),
                    t: now_ns(),
                    ..Ev::default()
                },
            );
        });
        self.procs.push(Proc {
            who: who.to_owned(),
            child,
            stdin,
            done: false,
        });
        Ok(self.procs.len() - 1)
    }

    fn who(&self, i: usize) -> &str {
        &self.procs[i].who
    }

    fn send(&mut self, i: usize, command: &str) -> Res<()> {
        let proc = &mut self.procs[i];
        let stdin = proc
            .stdin
            .as_mut()
            .ok_or_else(|| format!("candidate {} has no stdin", proc.who))?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot write to candidate {}: {e}", proc.who))
    }

    /// Where the log ends now: events from here on happened after this call.
    fn mark(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn events(&self) -> Vec<Ev> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn find(&self, from: usize, pred: impl Fn(&Ev) -> bool) -> Option<Ev> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().skip(from).find(|e| pred(e)).cloned()
    }

    /// Waits for the first event of `kind` from `who` (any candidate if `None`) at or after
    /// `from`; fails if it does not come within `patience` or `who` exits first.
    async fn wait(
        &self,
        from: usize,
        who: Option<&str>,
        kind: &str,
        patience: Duration,
    ) -> Res<Ev> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(ev) = self.find(from, |e| e.kind == kind && who.is_none_or(|w| e.who == w))
            {
                return Ok(ev);
            }
            if let Some(w) = who
                && self
                    .find(from, |e| {
                        e.who == w && (e.kind == "exit" || e.kind == "killed")
                    })
                    .is_some()
            {
                return Err(format!(
                    "candidate {w} exited while the benchmark waited for its {kind:?} event"
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "no {kind:?} event from {} within {patience:?}",
                    who.unwrap_or("any candidate")
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Asks candidate `i` for its request tally; returns it and when the candidate took it.
    async fn tally(&mut self, i: usize) -> Res<(Verbs, u64)> {
        let from = self.mark();
        self.send(i, "tally")?;
        let who = self.who(i).to_owned();
        let ev = self.wait(from, Some(&who), "tally", EVENT_PATIENCE).await?;
        Ok((ev.verbs, ev.t))
    }

    /// Stops candidate `i` with SIGSTOP (`pause`) or continues it with SIGCONT; returns when
    /// (just before the signal).
    fn signal(&mut self, i: usize, stop: bool) -> Res<u64> {
        let t = now_ns();
        let proc = &self.procs[i];
        push(
            &self.log,
            Ev {
                who: proc.who.clone(),
                kind: if stop { "paused" } else { "resumed" }.to_owned(),
                t,
                ..Ev::default()
            },
        );
        let pid = rustix::process::Pid::from_child(&proc.child);
        let signal = if stop {
            rustix::process::Signal::STOP
        } else {
            rustix::process::Signal::CONT
        };
        rustix::process::kill_process(pid, signal)
            .map_err(|e| format!("cannot signal candidate {}: {e}", proc.who))?;
        Ok(t)
    }

    /// Kills candidate `i` with SIGKILL; returns when (just before the signal).
    fn kill(&mut self, i: usize) -> u64 {
        let t = now_ns();
        let proc = &mut self.procs[i];
        push(
            &self.log,
            Ev {
                who: proc.who.clone(),
                kind: "killed".to_owned(),
                t,
                ..Ev::default()
            },
        );
        let _ = proc.child.kill();
        let _ = proc.child.wait();
        proc.done = true;
        t
    }

    /// Closes every candidate's stdin (a leader releases, then each exits), waits for them,
    /// and kills those still running after [`EXIT_PATIENCE`].
    async fn shutdown(&mut self) {
        for proc in &mut self.procs {
            proc.stdin = None;
        }
        let deadline = tokio::time::Instant::now() + EXIT_PATIENCE;
        loop {
            let mut running = 0;
            for proc in &mut self.procs {
                if !proc.done {
                    if matches!(proc.child.try_wait(), Ok(Some(_)) | Err(_)) {
                        proc.done = true;
                    } else {
                        running += 1;
                    }
                }
            }
            if running == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for i in 0..self.procs.len() {
            if !self.procs[i].done {
                eprintln!(
                    "bench_election: candidate {} did not exit in time; killing it",
                    self.procs[i].who
                );
                self.kill(i);
            }
        }
        // Let the readers see the pipes close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for proc in &mut self.procs {
            if !proc.done {
                let _ = proc.child.kill();
                let _ = proc.child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutual exclusion from the event logs.

#[derive(Debug, Clone)]
struct Interval {
    who: String,
    start: u64,
    end: u64,
    generation: u64,
}

/// Every candidate's leadership intervals: from `became` to its next `stopped`, `killed` or
/// `exit` (whichever comes first); still open at the end of the log: until "forever".
fn intervals(events: &[Ev]) -> Vec<Interval> {
    let mut open: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    for ev in events {
        match ev.kind.as_str() {
            "became" => {
                open.insert(&ev.who, (ev.t, ev.generation));
            }
            // A stopped process cannot act: its interval ends at the SIGSTOP, and what it says
            // after SIGCONT (its lost token firing) only confirms the end.
            "stopped" | "killed" | "exit" | "paused" => {
                if let Some((start, generation)) = open.remove(ev.who.as_str()) {
                    out.push(Interval {
                        who: ev.who.clone(),
                        start,
                        end: ev.t,
                        generation,
                    });
                }
            }
            _ => {}
        }
    }
    for (who, (start, generation)) in open {
        out.push(Interval {
            who: who.to_owned(),
            start,
            end: u64::MAX,
            generation,
        });
    }
    out.sort_by_key(|i| i.start);
    out
}

/// The most intervals that hold at one instant (an interval that ends at `t` does not overlap
/// one that starts at `t`).
fn max_simultaneous(intervals: &[Interval]) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for i in intervals {
        edges.push((i.start, 1));
        edges.push((i.end, -1));
    }
    // Ends (-1) sort before starts (+1) at the same instant.
    edges.sort_unstable();
    let mut now = 0i64;
    let mut max = 0i64;
    for (_, d) in edges {
        now += i64::from(d);
        max = max.max(now);
    }
    usize::try_from(max).unwrap_or(0)
}

/// Problems with the fencing generations: they must increase from term to term.
fn generation_problems(intervals: &[Interval]) -> Vec<String> {
    let mut problems = Vec::new();
    for pair in intervals.windows(2) {
        if pair[1].generation <= pair[0].generation {
            problems.push(format!(
                "generation {} of {} after generation {} of {}",
                pair[1].generation, pair[1].who, pair[0].generation, pair[0].who
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Counting on the server.

fn total(verbs: &Verbs) -> u64 {
    verbs.values().sum()
}

/// `PUT 30.0 · GET 0.0`: verbs per minute over `window`, always naming PUT and GET.
fn per_minute(verbs: &BTreeMap<String, f64>) -> String {
    let mut parts = Vec::new();
    for verb in ["PUT", "GET"] {
        parts.push(format!(
            "{verb} {:.1}",
            verbs.get(verb).copied().unwrap_or(0.0)
        ));
    }
    for (verb, n) in verbs {
        if verb != "PUT" && verb != "GET" {
            parts.push(format!("{verb} {n:.1}"));
        }
    }
    parts.join(" · ")
}

fn rate(verbs: &Verbs, window: Duration) -> BTreeMap<String, f64> {
    let scale = 60.0 / window.as_secs_f64();
    verbs
        .iter()
        .map(|(v, &n)| (v.clone(), n as f64 * scale))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Scenario: leader and follower (requests per minute, handovers, takeover after SIGKILL).

/// One measured window of the requests scenario.
#[derive(Debug, Default, Clone)]
struct Window {
    /// Between the two scrapes of the server's metrics.
    server_span: Duration,
    /// `apiserver_request_total{resource="leases"}` deltas: every client of the server.
    server: Verbs,
    /// Between the leader's two tallies (which enclose the scrapes).
    client_span: Duration,
    /// What the leader's and the follower's own clients sent.
    leader: Verbs,
    follower: Verbs,
    /// Renewals the leader started between its tallies.
    renewals: usize,
    /// `apiserver_longrunning_gauge{resource="leases",verb="WATCH"}` (server-wide).
    open_watches: i64,
}

impl Window {
    /// Lease requests the server counted beyond the candidates' own.
    fn foreign(&self) -> u64 {
        total(&self.server).saturating_sub(total(&self.leader) + total(&self.follower))
    }
}

#[derive(Debug, Default)]
struct Requests {
    alone: Window,
    both: Window,
}

#[derive(Debug, Clone, Copy)]
struct Handover {
    /// `unlocking` (leader) to `became` (follower).
    total: Duration,
    /// `unlocking` to `released` (the revoke returned) on the leader.
    revoke: Duration,
    revoked: bool,
}

#[derive(Debug, Clone, Copy)]
struct Takeover {
    /// From the start of the killed leader's last successful renewal.
    from_renewal: Duration,
    /// From when the leader saw that renewal succeed.
    from_renewal_seen: Duration,
    /// From the SIGKILL.
    from_kill: Duration,
}

#[derive(Debug, Default)]
struct PairResult {
    requests: Option<Requests>,
    handovers: Vec<Handover>,
    takeover: Option<Takeover>,
    /// After SIGSTOP of the leader: `from_kill` is from the stop.
    stop_takeover: Option<Takeover>,
    terms: usize,
    max_leaders: usize,
    problems: Vec<String>,
}

fn renewals_between(events: &[Ev], who: &str, from: u64, to: u64) -> usize {
    events
        .iter()
        .filter(|e| e.who == who && e.kind == "renewed" && e.t >= from && e.t < to)
        .count()
}

/// Measures one window of `length`: the server's metrics around it, the candidates' tallies
/// around that.
async fn measure(
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
async fn takeover(
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

async fn pair(
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

// ---------------------------------------------------------------------------------------------
// Scenario: candidates started together.

#[derive(Debug, Clone)]
struct BurstTrial {
    /// From the start barrier to the first `became`.
    first_leader: Duration,
    /// `became` events while the trial was watched (before shutdown).
    leaders_elected: usize,
    /// Most simultaneous leaders over the whole trial, shutdown included.
    max_leaders: usize,
    problems: Vec<String>,
}

/// Makes `lease` stale: held by `dead-holder`, who is gone.
async fn make_stale(backend: &Backend, kube: Option<&Client>, lease: &str) -> Res<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    match backend {
        Backend::K8s { namespace } => {
            let client = kube.ok_or("no kube client")?.clone();
            // Claimed through the store (so the object is what a candidate would have
            // written), then renewTime and acquireTime moved an hour back.
            let mut store = LeaseStore::new(client.clone(), namespace.clone(), clock);
            store
                .claim_lease(&key(lease), &Request::new("dead-holder", LEASE_DURATION))
                .await
                .map_err(|e| format!("cannot claim the stale lease {lease}: {e}"))?;
            drop(store);
            let api: Api<Lease> = Api::namespaced(client, namespace);
            let name = naming::object_name(&key(lease));
            let mut object = api
                .get(&name)
                .await
                .map_err(|e| format!("cannot read Lease {name}: {e}"))?;
            let old = WallTime::now()
                .checked_sub(SignedDuration::from_hours(1))
                .map_err(|e| e.to_string())?;
            object.metadata.managed_fields = None;
            let spec = object.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(MicroTime(old));
            spec.acquire_time = Some(MicroTime(old));
            api.replace(&name, &PostParams::default(), &object)
                .await
                .map_err(|e| format!("cannot age Lease {name}: {e}"))?;
        }
        Backend::Sqlite { path } => {
            let mut store = SqliteStore::builder(path.clone())
                .clock(clock)
                .open()
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            store
                .claim_lease(
                    &key(lease),
                    &Request::new("dead-holder", Duration::from_millis(100)),
                )
                .await
                .map_err(|e| format!("cannot claim the stale lease {lease}: {e}"))?;
            drop(store);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

async fn burst(
    backend: &Backend,
    exe: &Path,
    kube: Option<&Client>,
    tag: &str,
    stale: bool,
) -> Res<BurstTrial> {
    let lease = format!("burst-{tag}");
    if stale {
        make_stale(backend, kube, &lease).await?;
    }
    let mut s = Session::new(backend, exe);
    let mut names = Vec::new();
    for j in 0..BURST {
        let who = format!("{tag}-c{j}");
        s.spawn(&lease, &who)?;
        names.push(who);
    }
    for who in &names {
        s.wait(0, Some(who), "ready", STARTUP_PATIENCE).await?;
    }
    // The start barrier: `lock` to every candidate, back to back.
    let from = s.mark();
    let go = now_ns();
    for i in 0..BURST {
        s.send(i, "lock")?;
    }
    let patience = if stale {
        LEASE_DURATION + EVENT_PATIENCE
    } else {
        EVENT_PATIENCE
    };
    let first = s.wait(from, None, "became", patience).await?;
    tokio::time::sleep(BURST_OBSERVE).await;
    let watched_until = s.mark();
    s.shutdown().await;
    let events = s.events();
    let elected = events[from..watched_until]
        .iter()
        .filter(|e| e.kind == "became")
        .count();
    let terms = intervals(&events);
    let mut problems = generation_problems(&terms);
    for ev in &events {
        if ev.kind == "error" {
            problems.push(format!("candidate {}: {}", ev.who, ev.what));
        }
    }
    Ok(BurstTrial {
        first_leader: span(go, first.t),
        leaders_elected: elected,
        max_leaders: max_simultaneous(&terms),
        problems,
    })
}

async fn bursts(
    backend: &Backend,
    exe: &Path,
    kube: Option<&Client>,
    trials: usize,
    stale: bool,
) -> Res<Vec<BurstTrial>> {
    let kind = if stale { "stale" } else { "fresh" };
    eprintln!(
        "bench_election: {}: {BURST} candidates at once on a {kind} lease, {trials} trials...",
        backend.label()
    );
    if stale && backend.is_k8s() {
        // Each waits out a full lease duration; overlap them, each on its own Lease.
        let runs = (0..trials).map(|i| async move {
            tokio::time::sleep(STALE_STAGGER * u32::try_from(i).unwrap_or(0)).await;
            burst(backend, exe, kube, &format!("{kind}{i}"), stale).await
        });
        return futures::future::join_all(runs).await.into_iter().collect();
    }
    let mut out = Vec::new();
    for i in 0..trials {
        out.push(burst(backend, exe, kube, &format!("{kind}{i}"), stale).await?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The report.

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        return secs(d);
    }
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    if v.is_empty() {
        Duration::ZERO
    } else {
        v[v.len() / 2]
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

struct Run {
    backend: Backend,
    pair: PairResult,
    fresh: Vec<BurstTrial>,
    stale: Vec<BurstTrial>,
}

fn writes(verbs: &Verbs) -> u64 {
    verbs
        .iter()
        .filter(|(v, _)| matches!(v.as_str(), "PUT" | "POST" | "PATCH"))
        .map(|(_, n)| n)
        .sum()
}

fn per_renewal(verbs: &Verbs, renewals: usize) -> String {
    if renewals == 0 {
        return "—".to_owned();
    }
    let n = renewals as f64;
    format!(
        "{:.2} writes, {:.2} other",
        writes(verbs) as f64 / n,
        (total(verbs) - writes(verbs)) as f64 / n
    )
}

fn requests_section(out: &mut String, r: &Requests) {
    let (a, b) = (&r.alone, &r.both);
    let _ = writeln!(out, "### API requests per minute (Kubernetes)\n");
    // The follower on the server: the second window's rate minus the first's.
    let alone_rate = rate(&a.server, a.server_span);
    let both_rate = rate(&b.server, b.server_span);
    let mut follower_server: BTreeMap<String, f64> = BTreeMap::new();
    for verb in alone_rate.keys().chain(both_rate.keys()) {
        let v = both_rate.get(verb).copied().unwrap_or(0.0)
            - alone_rate.get(verb).copied().unwrap_or(0.0);
        // Rounding noise of the two rates is not a request (and must not print as "-0.0").
        let v = if v.abs() < 0.05 { 0.0 } else { v };
        follower_server.insert(verb.clone(), v);
    }
    let quiet = a.foreign() == 0 && b.foreign() == 0;
    let mark = if quiet { "" } else { " †" };
    // Renewal boundaries can put one renewal's write on either side of a tally.
    let leader_ok = |w: &Window| {
        writes(&w.leader).abs_diff(w.renewals as u64) <= 1
            && total(&w.leader) == writes(&w.leader)
            && w.renewals > 0
    };
    let _ = writeln!(
        out,
        "| role | its own client (per min) | per renewal | server, `apiserver_request_total` (per min) | lease watches open on the server | target | met |\n\
         | --- | --- | --- | --- | --- | --- | --- |"
    );
    let _ = writeln!(
        out,
        "| leader, alone | {} | {} | {}{mark} (everything the server counted) | {} | 1 write per renewal, no reads | {} |",
        per_minute(&rate(&a.leader, a.client_span)),
        per_renewal(&a.leader, a.renewals),
        per_minute(&alone_rate),
        a.open_watches,
        verdict(leader_ok(a)),
    );
    let _ = writeln!(
        out,
        "| leader, with a follower | {} | {} | {}{mark} (everything) | {} | 1 write per renewal, no reads | {} |",
        per_minute(&rate(&b.leader, b.client_span)),
        per_renewal(&b.leader, b.renewals),
        per_minute(&both_rate),
        b.open_watches,
        verdict(leader_ok(b)),
    );
    let _ = writeln!(
        out,
        "| follower | {} | — | {}{mark} (second window minus the first) | {:+} (second window minus the first) | no polling (one watch) | {} |",
        per_minute(&rate(&b.follower, b.client_span)),
        per_minute(&follower_server),
        b.open_watches - a.open_watches,
        verdict(total(&b.follower) == 0),
    );
    let _ = writeln!(
        out,
        "\nMethod: a leader alone for {:.1} s, then the same leader with a follower for {:.1} s \
         (the follower started 3 s before its window, so its start-up list and watch are \
         outside it), scaled to a minute. The server's `apiserver_request_total{{resource=\"leases\"}}` \
         (summed over codes, by verb) is scraped from `/metrics` around each window; it does \
         not say which client sent a request, so the follower's server-side figure is the \
         second window's rate minus the first's. Each candidate also counts the lease requests \
         its own kube client sends (a tower layer), which attributes them exactly: the \
         `met` column is decided on those counts. Renewals: the leader's successful renewals \
         between its two counts. Watches: `apiserver_longrunning_gauge{{resource=\"leases\",verb=\"WATCH\"}}`, \
         server-wide (a watch enters the request total only when it ends).",
        a.server_span.as_secs_f64(),
        b.server_span.as_secs_f64(),
    );
    if quiet {
        let _ = writeln!(
            out,
            "\nThe server counted no lease request beyond the candidates' own in either \
             window, so the server-side figures attribute exactly."
        );
    } else {
        let _ = writeln!(
            out,
            "\n† Other clients used the server during the windows: it counted {} and {} lease \
             requests beyond the candidates' own ({:.1} and {:.1} per minute), so the \
             server-side figures include them and the follower's difference is not meaningful; \
             the client-side counts stand. Run on a quiet server for a clean server-side \
             attribution.",
            a.foreign(),
            b.foreign(),
            a.foreign() as f64 * 60.0 / a.server_span.as_secs_f64(),
            b.foreign() as f64 * 60.0 / b.server_span.as_secs_f64(),
        );
    }
    let _ = writeln!(
        out,
        "\nMeasured elsewhere: client-go's leader 30 `GET` + 30 `PUT` and follower 20 `GET` per \
         minute; kube-lease-manager 2 requests per renewal; kubert 1 `PATCH` per renewal but \
         18–26 conflicting writes per 100 s under contention.\n"
    );
}

fn report(runs: &[Run], version: Option<&str>, window: Duration, trials: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## leader election\n");
    let server = version.map_or_else(String::new, |v| {
        format!(" Kubernetes: a local kube-apiserver {v} (etcd on the same machine).")
    });
    let _ = writeln!(
        out,
        "lease-manager's `LeaderElector` with client-go's default timings (lease {} s, renew \
         deadline {} s, retry period {} s), every candidate a separate process with its own \
         `Manager` and store: `LeaseStore` (its own client and watch; expiry judged by observed \
         time, the default) or `SqliteStore` (its own connection to one file; refresh interval \
         100 ms, the default).{server} Times are `CLOCK_BOOTTIME` stamps the processes print \
         themselves.\n",
        LEASE_DURATION.as_secs(),
        RENEW_DEADLINE.as_secs(),
        RETRY_PERIOD.as_secs()
    );

    // Handover.
    let _ = writeln!(out, "### Handover after the leader releases\n");
    let _ = writeln!(
        out,
        "| store | handovers | min | median | max | leader's revoke (median) | target | met |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for run in runs {
        let h = &run.pair.handovers;
        let totals: Vec<Duration> = h.iter().map(|x| x.total).collect();
        let max = totals.iter().max().copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | ≤ {} | {} |",
            run.backend.label(),
            h.len(),
            ms(totals.iter().min().copied().unwrap_or_default()),
            ms(median(totals.clone())),
            ms(max),
            ms(median(h.iter().map(|x| x.revoke).collect())),
            ms(HANDOVER_TARGET),
            verdict(!h.is_empty() && max <= HANDOVER_TARGET && h.iter().all(|x| x.revoked)),
        );
    }
    let _ = writeln!(
        out,
        "\nFrom the leader's call of `unlock()` to the follower's claim returning, the old \
         leader then calling `lock()` again to follow, {} s plus a random 0–{} ms after it \
         started following. The follower waits in the manager's `wait_until_expired`: on \
         Kubernetes its store's watch reports the release at once; on SQLite a file-change \
         event on the database (confirmed with `PRAGMA data_version`) does, with the manager's \
         100 ms poll of the file as the fallback. Measured elsewhere on the same kind of server: client-go 1.20 0.4–2.2 s; kube-leader-election \
         2.4–5.5 s; kube-lease-manager, kubert and kube-coordinate ignore a release and wait out \
         the lease (5–28 s).\n",
        SETTLE.as_secs(),
        SETTLE_JITTER.as_millis()
    );

    // Takeover.
    let _ = writeln!(out, "### Takeover after the leader is killed (SIGKILL)\n");
    let _ = writeln!(
        out,
        "| store | from the start of its last renewal | from that renewal's success (seen ≤ 5 ms late) | from the kill | target | met |\n\
         | --- | --- | --- | --- | --- | --- |"
    );
    let target = LEASE_DURATION + TAKEOVER_SLACK;
    for run in runs {
        if let Some(t) = run.pair.takeover {
            // SQLite sees the holder's death (its session lock goes with its last process):
            // the target is counted from the kill. Elsewhere the lease must expire.
            let (target_text, met) = if run.backend.is_k8s() {
                (
                    format!("≤ {} from the renewal", secs(target)),
                    t.from_renewal <= target,
                )
            } else {
                (
                    format!("≤ {} ms from the kill", SQLITE_DEATH_TAKEOVER.as_millis()),
                    t.from_kill <= SQLITE_DEATH_TAKEOVER,
                )
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                run.backend.label(),
                secs(t.from_renewal),
                secs(t.from_renewal_seen),
                secs(t.from_kill),
                target_text,
                verdict(met),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nOne kill per store, {} ms after a logged renewal (so none was in flight), counted to \
         the follower's claim returning. Measured elsewhere: kubert 15.0 s, kube-lease-manager \
         15.4–15.8 s, kube-leader-election 16.1–16.3 s, client-go 19.1–19.2 s, kube-coordinate \
         21–30 s.\n",
        KILL_AFTER_RENEWAL.as_millis()
    );
    let _ = writeln!(
        out,
        "\n### Takeover after the leader is stopped (SIGSTOP)\n\n\
         | store | from the start of its last renewal | from that renewal's success (seen ≤ 5 ms late) | from the stop | target | met |\n\
         | --- | --- | --- | --- | --- | --- |"
    );
    for run in runs {
        if let Some(t) = run.pair.stop_takeover {
            // A stopped holder is alive: no store may free its lease before it expires.
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | ≥ {} from the renewal (it must expire) | {} |",
                run.backend.label(),
                secs(t.from_renewal),
                secs(t.from_renewal_seen),
                secs(t.from_kill),
                secs(LEASE_DURATION),
                verdict(t.from_renewal >= LEASE_DURATION),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nOne stop per store, {} ms after a logged renewal, counted to the follower's claim \
         returning; the stopped leader is then continued, sees its term over, and follows.",
        KILL_AFTER_RENEWAL.as_millis()
    );

    // Requests.
    for run in runs {
        if let Some(r) = &run.pair.requests {
            requests_section(&mut out, r);
        }
    }

    // Bursts.
    let _ = writeln!(out, "### {BURST} candidates started at once\n");
    let _ = writeln!(
        out,
        "| store | lease | trials | max simultaneous leaders | leaders elected per trial | time to first leader (min / median / max) | target | met |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for run in runs {
        for (kind, trials) in [("fresh", &run.fresh), ("stale", &run.stale)] {
            if trials.is_empty() {
                continue;
            }
            let max = trials.iter().map(|t| t.max_leaders).max().unwrap_or(0);
            let elected: Vec<String> = trials
                .iter()
                .map(|t| t.leaders_elected.to_string())
                .collect();
            let firsts: Vec<Duration> = trials.iter().map(|t| t.first_leader).collect();
            let ok = max == 1
                && trials
                    .iter()
                    .all(|t| t.leaders_elected == 1 && t.problems.is_empty());
            let _ = writeln!(
                out,
                "| {} | {kind} | {} | {max} | {} | {} / {} / {} | exactly 1 leader at every instant | {} |",
                run.backend.label(),
                trials.len(),
                elected.join(", "),
                ms(firsts.iter().min().copied().unwrap_or_default()),
                ms(median(firsts.clone())),
                ms(firsts.iter().max().copied().unwrap_or_default()),
                verdict(ok),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nAll {BURST} processes are started and ready (manager and store up) before the start \
         barrier: `lock` written to their stdins back to back. Each trial is watched for {} s \
         after its first leader, then every candidate's stdin is closed (a leader releases, the \
         others may take over, all exit); leadership intervals (`became` to `stopped`, of all \
         candidates, shutdown included) are swept for overlaps, and fencing generations must \
         increase from term to term. Stale lease: on Kubernetes a Lease held by `dead-holder` \
         with `renewTime` an hour old; candidates judge expiry by observed time (the default, \
         as client-go), so they wait a full {} s from first seeing it, which their watches do \
         at start-up, just before the barrier (trials start {} s apart \
         and overlap, each on its own Lease); on SQLite an expired row of `dead-holder`, which \
         is free at once. Measured elsewhere: kube-leader-election and kube-coordinate both let \
         several candidates lead at once.\n",
        BURST_OBSERVE.as_secs(),
        LEASE_DURATION.as_secs(),
        STALE_STAGGER.as_secs(),
    );

    // Anything odd.
    for run in runs {
        let label = run.backend.label();
        if run.pair.max_leaders > 1 {
            let _ = writeln!(
                out,
                "Note: {label}, leader/follower scenario: {} leaders at once.\n",
                run.pair.max_leaders
            );
        }
        for p in &run.pair.problems {
            let _ = writeln!(out, "Note: {label}, leader/follower scenario: {p}.\n");
        }
        for t in run.fresh.iter().chain(&run.stale) {
            for p in &t.problems {
                let _ = writeln!(out, "Note: {label}, burst: {p}.\n");
            }
        }
        let _ = writeln!(
            out,
            "{label}: the leader/follower scenario had {} terms, at most {} leader(s) at once.\n",
            run.pair.terms, run.pair.max_leaders
        );
    }
    let _ = writeln!(
        out,
        "Trials: {trials} handovers, {trials} bursts per kind; request windows {} s.",
        window.as_secs()
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Orchestration.

struct Args {
    window: Duration,
    trials: usize,
    k8s: bool,
    sqlite: bool,
}

fn parse_args(args: &[String]) -> Res<Args> {
    let mut out = Args {
        window: Duration::from_secs(30),
        trials: 5,
        k8s: true,
        sqlite: true,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{flag} {value:?} is not a positive number"))
        };
        match flag.as_str() {
            "--window" => out.window = Duration::from_secs(number()?),
            "--trials" => out.trials = usize::try_from(number()?).map_err(|e| e.to_string())?,
            "--only" => match value.as_str() {
                "k8s" => out.sqlite = false,
                "sqlite" => out.k8s = false,
                other => return Err(format!("--only {other:?}: expected k8s or sqlite")),
            },
            other => {
                return Err(format!(
                    "unknown argument {other:?} (known: --window, --trials, --only)"
                ));
            }
        }
    }
    Ok(out)
}

async fn run_backend(
    backend: &Backend,
    exe: &Path,
    kube: Option<&Client>,
    args: &Args,
) -> Res<Run> {
    let pair = pair(backend, exe, kube, args.window, args.trials).await?;
    let fresh = bursts(backend, exe, kube, args.trials, false).await?;
    let stale = bursts(backend, exe, kube, args.trials, true).await?;
    Ok(Run {
        backend: backend.clone(),
        pair,
        fresh,
        stale,
    })
}

async fn orchestrate(args: Args) -> Res<String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    let mut version = None;
    if args.k8s {
        if std::env::var_os("KUBECONFIG").is_none_or(|v| v.is_empty()) {
            return Err("KUBECONFIG is not set: run `cargo xtask k8s up`, then \
                        `eval \"$(cargo xtask k8s env)\"` (or `cargo xtask bench bench_election`), \
                        or pass `--only sqlite`"
                .to_owned());
        }
        let config = Config::infer()
            .await
            .map_err(|e| format!("cannot read the kubeconfig: {e}"))?;
        let admin = Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
        let v = admin
            .apiserver_version()
            .await
            .map_or_else(|e| format!("unknown ({e})"), |v| v.git_version);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let namespace = format!(
            "bench-election-{:x}-{}",
            secs % 0x100_0000,
            std::process::id()
        );
        let mut object = Namespace::default();
        object.metadata.name = Some(namespace.clone());
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| format!("cannot create namespace {namespace}: {e}"))?;
        eprintln!("bench_election: namespace {namespace} on kube-apiserver {v}");
        version = Some(v);
        let backend = Backend::K8s { namespace };
        runs.push(run_backend(&backend, &exe, Some(&admin), &args).await?);
    }
    if args.sqlite {
        let path = std::env::temp_dir().join(format!("bench-election-{}.db", std::process::id()));
        let backend = Backend::Sqlite { path: path.clone() };
        let result = run_backend(&backend, &exe, None, &args).await;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        runs.push(result?);
    }
    eprintln!(
        "bench_election: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(report(&runs, version.as_deref(), args.window, args.trials))
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "--candidate") {
        let result = match parse_candidate(&argv[1..]) {
            Ok(args) => candidate(args).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            eprintln!("bench_election candidate: {e}");
            std::process::exit(1);
        }
        return;
    }
    let result = match parse_args(&argv) {
        Ok(args) => orchestrate(args).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(markdown) => print!("{markdown}"),
        Err(e) => {
            eprintln!("bench_election: {e}");
            std::process::exit(1);
        }
    }
}
