//! The Kubernetes scenario: [`LeaderElector`](lease_manager::LeaderElector) candidates as separate
//! processes on a real kube-apiserver (the `KUBECONFIG` they inherit), each with its own manager
//! and [`LeaseObjectStore`](lease_store_k8s::LeaseObjectStore). With [`Backend::Postgres`] the same
//! phases (but deletions) run over `lease-store-postgres`, the outages crashing and stopping the
//! PostgreSQL server, and the main phase also SIGKILLs candidates at random.
//!
//! - **Main phase**: a few candidates contend for one lease while the orchestrator stops
//!   kube-apiserver, and later etcd, for longer than the renew deadline and starts them again
//!   (through `cargo xtask k8s stop-one/start-one`, given as `--server-ctl`), and SIGKILLs the
//!   leader once. The leader must see its lost token fire before anyone else leads, and someone
//!   must lead again after the server returns.
//! - **Bursts**: five candidates started at the same instant on a fresh lease, and on a stale
//!   lease whose holder was SIGKILLed: exactly one leader at every instant from the first.
//! - **Deletions**: three candidates contend while the orchestrator deletes the Lease object
//!   under the leader at random moments ([`DELETIONS`] times, see `k8s/deletions.rs`), as
//!   `kubectl delete`, a Helm reinstall or a namespace clean-up would: still never two leaders
//!   at once, generations still increasing with terms, and someone leads again after each
//!   deletion.
//!
//! A candidate logs [`Event::Lead`] when `lock()` returns, and [`Event::Lost`] when it sees its
//! lost token fire (with the start of the last renewal it saw), or [`Event::Stop`] before it
//! releases at the end; the orchestrator logs kills and outages. See [`crate::check`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::check::{K8sVerdict, Term, TermEnd, check_terms, terms};
use crate::event::{self, Event, EventLog};
use crate::proc::{kill9, wait_timeout};
use crate::{now, secs};

mod candidate;
mod deletions;
mod kills;
pub use candidate::{CandidateArgs, POSTGRES_URL_ENV, candidate};
pub use deletions::DELETIONS;
use deletions::deletion_phase;

/// The store the candidates elect their leader over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `lease-store-k8s` on the cluster of `KUBECONFIG`.
    Kubernetes,
    /// `lease-store-postgres` on the server of [`POSTGRES_URL_ENV`]; outages stop and start it
    /// (`cargo xtask pg stop [--kill]`, `cargo xtask pg start`); no deletion phase.
    Postgres,
}

impl Backend {
    /// How an outage stops the server: crashed (`kill`) or asked to stop.
    pub fn stop_how(self, kill: bool) -> &'static str {
        match (self, kill) {
            (Backend::Kubernetes, true) => "kill -9",
            (Backend::Kubernetes, false) => "SIGTERM",
            (Backend::Postgres, true) => "crash: `pg_ctl stop -m immediate`",
            (Backend::Postgres, false) => "`pg_ctl stop -m fast`",
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Kubernetes => "k8s",
            Backend::Postgres => "postgres",
        }
    }
}

/// The manager namespace and model of the election leases.
const NAMESPACE: &str = "torture";
const MODEL: &str = "k8s";

/// Leader-election timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `lease_duration`.
    pub lease_duration: Duration,
    /// `renew_deadline`.
    pub renew_deadline: Duration,
    /// `retry_period`.
    pub retry_period: Duration,
    /// The store's per-request timeout.
    pub request_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
            request_timeout: Duration::from_secs(1),
        }
    }
}

/// How to run the Kubernetes scenario.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// Folder for the logs (emptied first).
    pub dir: PathBuf,
    /// The `lease-torture` binary to start candidates from.
    pub exe: PathBuf,
    /// The store.
    pub backend: Backend,
    /// `cargo xtask`'s binary, which stops and starts the server's processes (`k8s stop-one
    /// NAME`, `k8s start-one NAME`); `None` skips the outages.
    pub server_ctl: Option<PathBuf>,
    /// The Kubernetes namespace of the Lease objects.
    pub namespace: String,
    /// Candidates of the main phase.
    pub candidates: u32,
    /// Server processes to stop and restart in the main phase, in order: `kube-apiserver` or
    /// `etcd`, with `:kill` to SIGKILL it (a crash) rather than SIGTERM it.
    pub outages: Vec<String>,
    /// How long each stays down.
    pub outage_length: Duration,
    /// Whether to SIGKILL the leader once in the main phase.
    pub kill_leader: bool,
    /// Candidates of the main phase SIGKILLed at random moments after that (leader or not),
    /// each replaced by a new process.
    pub random_kills: u32,
    /// How long to let the main phase run quietly before, between and after its events.
    pub quiet: Duration,
    /// Burst rounds (each: a fresh lease and a stale one).
    pub burst_rounds: u32,
    /// Candidates started together in a burst.
    pub burst_size: u32,
    /// Timing.
    pub timing: Timing,
}

/// One outage of the main phase.
#[derive(Debug, Clone)]
pub struct Outage {
    /// `kube-apiserver` or `etcd`, and how it was stopped.
    pub what: String,
    /// From the stop command to the server being ready again (s).
    pub down_for: f64,
    /// From the server going down to the leader seeing its lost token (s); `None` when nobody
    /// led at that moment.
    pub lost_after_down: Option<f64>,
    /// From the server going down to someone leading again (s).
    pub regained_after_down: Option<f64>,
    /// From the orchestrator seeing the server ready again to someone leading (s); negative
    /// when a leader was elected before the restart command had returned.
    pub regained_after_up: Option<f64>,
}

/// One burst.
#[derive(Debug, Clone)]
pub struct Burst {
    /// `fresh` or `stale`.
    pub kind: &'static str,
    /// The lease.
    pub lease: String,
    /// From the common start instant to the first leader (s).
    pub first_leader_after_start: Option<f64>,
    /// Stale bursts: from the kill of the old holder to the first new leader (s).
    pub takeover_after_kill: Option<f64>,
    /// Terms among the burst's candidates (1 when one leader held throughout).
    pub terms: usize,
}

/// What a run did and what the checker found.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The parameters.
    pub args: RunArgs,
    /// The checker's verdict over every lease of the run.
    pub verdict: K8sVerdict,
    /// The main phase's outages.
    pub outages: Vec<Outage>,
    /// The main phase's leader kill: from the kill to the next leader (s).
    pub takeover_after_leader_kill: Option<f64>,
    /// The random kills that hit the leader: from each kill to the next leader (s).
    pub takeovers_after_random_kills: Vec<f64>,
    /// The bursts.
    pub bursts: Vec<Burst>,
    /// The deletion phase: from each deletion of the Lease object to the next leader (s).
    pub deletions: Vec<f64>,
    /// Candidates SIGKILLed on purpose.
    pub kills: u32,
    /// Candidate processes started.
    pub processes: u32,
    /// Failures besides the verdict's violations: crashes, no leader, not regained, several
    /// terms in a burst (must be empty).
    pub problems: Vec<String>,
    /// Wall time (s).
    pub elapsed: f64,
}

impl Summary {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.verdict.violations() == 0 && self.problems.is_empty() && self.verdict.terms > 0
    }
}

struct Candidate {
    identity: String,
    child: Child,
}

struct Run {
    args: RunArgs,
    orchestrator: EventLog,
    running: Vec<Candidate>,
    processes: u32,
    kills: u32,
    takeovers: Vec<f64>,
    problems: Vec<String>,
}

impl Run {
    fn spawn(
        &mut self,
        identity: &str,
        lease: &str,
        start_at: Option<u64>,
        stop_file: &Path,
    ) -> Result<(), String> {
        let t = self.args.timing;
        let mut command = Command::new(&self.args.exe);
        command
            .arg("k8s-candidate")
            .args(["--backend", self.args.backend.name()])
            .args(["--identity", identity, "--lease", lease])
            .args(["--namespace", &self.args.namespace])
            .arg("--log")
            .arg(self.args.dir.join(format!("{identity}.jsonl")))
            .arg("--stop-file")
            .arg(stop_file)
            .args(["--until", &(now() + 600_000_000_000).to_string()])
            .args(["--lease-ms", &t.lease_duration.as_millis().to_string()])
            .args(["--renew-ms", &t.renew_deadline.as_millis().to_string()])
            .args(["--retry-ms", &t.retry_period.as_millis().to_string()])
            .args(["--request-ms", &t.request_timeout.as_millis().to_string()])
            .stdin(Stdio::null());
        if let Some(at) = start_at {
            command.args(["--start-at", &at.to_string()]);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.args.exe.display()))?;
        self.processes += 1;
        self.running.push(Candidate {
            identity: identity.to_owned(),
            child,
        });
        Ok(())
    }

    fn log(&mut self, event: &Event) -> Result<(), String> {
        self.orchestrator
            .write(event)
            .map_err(|e| format!("cannot write the orchestrator's log: {e}"))
    }

    fn kill(&mut self, identity: &str) -> Result<u64, String> {
        let i = self
            .running
            .iter()
            .position(|c| c.identity == identity)
            .ok_or_else(|| format!("no running candidate {identity}"))?;
        let mut c = self.running.remove(i);
        let at = kill9(&mut c.child).map_err(|e| format!("cannot kill {identity}: {e}"))?;
        self.kills += 1;
        self.log(&Event::Killed {
            holder: identity.to_owned(),
            at,
        })?;
        Ok(at)
    }

    /// Creates `stop_file`, and waits for the candidates started with it to exit. Returns the
    /// instant just before the stop file was created.
    fn stop_all(&mut self, stop_file: &Path) -> Result<u64, String> {
        let asked = now();
        fs::write(stop_file, b"stop\n")
            .map_err(|e| format!("cannot write {}: {e}", stop_file.display()))?;
        let running = std::mem::take(&mut self.running);
        for mut c in running {
            match wait_timeout(&mut c.child, Duration::from_secs(15)) {
                Ok(Some(status)) if status.success() => {}
                Ok(Some(status)) => self
                    .problems
                    .push(format!("candidate {} failed: {status}", c.identity)),
                Ok(None) | Err(_) => {
                    let at = kill9(&mut c.child).unwrap_or_else(|_| now());
                    self.log(&Event::Killed {
                        holder: c.identity.clone(),
                        at,
                    })?;
                    self.problems.push(format!(
                        "candidate {} did not stop within 15 s of being asked",
                        c.identity
                    ));
                }
            }
        }
        Ok(asked)
    }

    /// Candidates that exited on their own while they should be running.
    fn reap_crashed(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if let Ok(Some(status)) = self.running[i].child.try_wait() {
                let c = self.running.remove(i);
                self.problems
                    .push(format!("candidate {} exited early: {status}", c.identity));
            } else {
                i += 1;
            }
        }
    }

    fn terms(&self) -> Result<Vec<Term>, String> {
        let (events, _) =
            event::read_dir(&self.args.dir).map_err(|e| format!("cannot read the logs: {e}"))?;
        Ok(terms(&events))
    }

    /// Waits up to `timeout` for a term on `lease` that began after `after` and satisfies
    /// `pick`.
    fn wait_for_lead(
        &mut self,
        lease: &str,
        after: u64,
        timeout: Duration,
        pick: impl Fn(&Term) -> bool,
    ) -> Result<Option<Term>, String> {
        let deadline = now() + timeout.as_nanos() as u64;
        while now() < deadline {
            if let Some(t) = self
                .terms()?
                .into_iter()
                .find(|t| t.lease == lease && t.start > after && pick(t))
            {
                return Ok(Some(t));
            }
            self.reap_crashed();
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    fn server(&self, verb: &str, what: &str, kill: bool) -> Result<(), String> {
        let Some(ctl) = &self.args.server_ctl else {
            return Err("no --server-ctl".to_owned());
        };
        let mut command = Command::new(ctl);
        match self.args.backend {
            Backend::Kubernetes => command.args(["k8s", verb, what]),
            // One process to stop: `what` only names it in the report.
            Backend::Postgres => command.args(["pg", verb.trim_end_matches("-one")]),
        };
        let status = command
            .args(kill.then_some("--kill"))
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", ctl.display()))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{} {} {verb} {what}` failed: {status}",
                ctl.display(),
                self.args.backend.name()
            ))
        }
    }
}

fn say(text: &str) {
    println!("lease-torture k8s: {text}");
}

/// Runs the scenario and checks it.
///
/// # Errors
///
/// When the folder or a process cannot be set up, or the server cannot be restarted.
pub fn run(args: RunArgs) -> Result<Summary, String> {
    let started = std::time::Instant::now();
    crate::fresh_dir(&args.dir)?;
    let orchestrator = EventLog::open(&args.dir.join("orchestrator.jsonl"))
        .map_err(|e| format!("cannot open the orchestrator's log: {e}"))?;
    let mut run = Run {
        args: args.clone(),
        orchestrator,
        running: Vec::new(),
        processes: 0,
        kills: 0,
        takeovers: Vec::new(),
        problems: Vec::new(),
    };
    let result = scenario(&mut run);
    // Whatever happened, no candidate outlives the run.
    for mut c in std::mem::take(&mut run.running) {
        let at = kill9(&mut c.child).unwrap_or_else(|_| now());
        let _ = run.log(&Event::Killed {
            holder: c.identity.clone(),
            at,
        });
    }
    let (outages, takeover_after_leader_kill, bursts, deletions) = result?;
    let (events, _) =
        event::read_dir(&args.dir).map_err(|e| format!("cannot read the logs: {e}"))?;
    let all = terms(&events);
    let verdict = check_terms(&all, args.timing.lease_duration.as_nanos() as u64);
    Ok(Summary {
        args,
        verdict,
        outages,
        takeover_after_leader_kill,
        takeovers_after_random_kills: run.takeovers,
        bursts,
        deletions,
        kills: run.kills,
        processes: run.processes,
        problems: run.problems,
        elapsed: started.elapsed().as_secs_f64(),
    })
}

type Phases = (Vec<Outage>, Option<f64>, Vec<Burst>, Vec<f64>);

fn scenario(run: &mut Run) -> Result<Phases, String> {
    let id = format!("{:x}", now() % 0xffff_ffff);
    let (outages, takeover) = main_phase(run, &id)?;
    let mut bursts = Vec::new();
    for round in 0..run.args.burst_rounds {
        bursts.push(fresh_burst(run, &id, round)?);
        bursts.push(stale_burst(run, &id, round)?);
    }
    let deletions = match run.args.backend {
        Backend::Kubernetes => deletion_phase(run, &id)?,
        Backend::Postgres => Vec::new(),
    };
    Ok((outages, takeover, bursts, deletions))
}

fn main_phase(run: &mut Run, id: &str) -> Result<(Vec<Outage>, Option<f64>), String> {
    let lease = format!("main-{id}");
    let stop = run.args.dir.join("stop-main");
    let quiet = run.args.quiet;
    let t0 = now();
    for i in 0..run.args.candidates {
        run.spawn(&format!("main-{i}"), &lease, None, &stop)?;
    }
    say(&format!(
        "main phase: {} candidates on lease {lease}",
        run.args.candidates
    ));
    if run
        .wait_for_lead(&lease, t0, Duration::from_secs(30), |_| true)?
        .is_none()
    {
        run.problems
            .push(format!("main phase: nobody led {lease} within 30 s"));
        run.stop_all(&stop)?;
        return Ok((Vec::new(), None));
    }
    std::thread::sleep(quiet);
    let mut outages = Vec::new();
    let outage_kinds = if run.args.server_ctl.is_some() {
        run.args.outages.clone()
    } else {
        Vec::new()
    };
    for spec in outage_kinds {
        // `NAME` (SIGTERM) or `NAME:kill` (SIGKILL, as a crash).
        let (what, kill) = match spec.strip_suffix(":kill") {
            Some(name) => (name.to_owned(), true),
            None => (spec.clone(), false),
        };
        say(&format!(
            "{} {what} for {:.1} s",
            if kill { "kill -9" } else { "stopping" },
            run.args.outage_length.as_secs_f64()
        ));
        // The server may stop answering as soon as it is told to stop.
        let down_at = now();
        run.server("stop-one", &what, kill)?;
        std::thread::sleep(run.args.outage_length);
        run.server("start-one", &what, false)?;
        let up_at = now();
        run.log(&Event::Outage {
            what: what.clone(),
            down_at,
            up_at,
        })?;
        let terms = run.terms()?;
        let leader = terms
            .iter()
            .find(|t| t.lease == lease && t.start <= down_at && t.end > down_at);
        let lost_after_down = leader.and_then(|t| match t.how {
            TermEnd::Lost { .. } if t.end <= up_at => Some(secs(t.end - down_at)),
            _ => None,
        });
        if let Some(t) = leader
            && lost_after_down.is_none()
        {
            run.problems.push(format!(
                "{what} down for {:.1} s: leader {} did not see its lost token while it was down",
                secs(up_at - down_at),
                t.holder
            ));
        }
        let regained = run.wait_for_lead(&lease, down_at, Duration::from_secs(60), |_| true)?;
        let regained_after_down = regained.as_ref().map(|t| secs(t.start - down_at));
        let regained_after_up = regained.as_ref().map(|t| secs(t.start) - secs(up_at));
        if regained.is_none() {
            run.problems.push(format!(
                "{what} restarted: nobody led {lease} again within 60 s"
            ));
        }
        say(&format!(
            "{what} was down {:.1} s; lost token {} after it went down; leader again {} after it was back",
            secs(up_at - down_at),
            lost_after_down.map_or("-".to_owned(), |s| format!("{s:.2} s")),
            regained_after_up.map_or("never".to_owned(), |s| format!("{s:.2} s"))
        ));
        outages.push(Outage {
            what: format!("{what} ({})", run.args.backend.stop_how(kill)),
            down_for: secs(up_at - down_at),
            lost_after_down,
            regained_after_down,
            regained_after_up,
        });
        std::thread::sleep(quiet);
    }
    let mut takeover = None;
    if run.args.kill_leader {
        let leader = run
            .terms()?
            .into_iter()
            .rev()
            .find(|t| t.lease == lease && t.how == TermEnd::Unknown);
        if let Some(leader) = leader {
            let killed_at = run.kill(&leader.holder)?;
            say(&format!("kill -9 the leader {}", leader.holder));
            run.spawn(&format!("{}-next", leader.holder), &lease, None, &stop)?;
            let next = run.wait_for_lead(&lease, killed_at, Duration::from_secs(30), |_| true)?;
            takeover = next.map(|t| secs(t.start - killed_at));
            match takeover {
                Some(s) => say(&format!("takeover {s:.2} s after the kill")),
                None => run
                    .problems
                    .push("nobody took over within 30 s of killing the leader".to_owned()),
            }
            std::thread::sleep(quiet);
        } else {
            run.problems
                .push("no leader to kill in the main phase".to_owned());
        }
    }
    kills::random_kills(run, &lease, &stop)?;
    run.reap_crashed();
    run.stop_all(&stop)?;
    Ok((outages, takeover))
}

/// Terms on `lease` among identities starting with `prefix`.
fn burst_terms(run: &Run, lease: &str, prefix: &str) -> Result<Vec<Term>, String> {
    Ok(run
        .terms()?
        .into_iter()
        .filter(|t| t.lease == lease && t.holder.starts_with(prefix))
        .collect())
}

fn together(run: &mut Run, lease: &str, prefix: &str, stop: &Path) -> Result<u64, String> {
    // Enough time for every process to set up its client before the common instant.
    let start_at = now() + 2_000_000_000;
    for i in 0..run.args.burst_size {
        run.spawn(&format!("{prefix}{i}"), lease, Some(start_at), stop)?;
    }
    Ok(start_at)
}

fn finish_burst(
    run: &mut Run,
    kind: &'static str,
    lease: &str,
    prefix: &str,
    start_at: u64,
    killed_at: Option<u64>,
    stop: &Path,
) -> Result<Burst, String> {
    let first = run.wait_for_lead(lease, start_at, Duration::from_secs(30), |t| {
        t.holder.starts_with(prefix)
    })?;
    if first.is_some() {
        // Hold a while with renewals: the leader must stay the only one.
        std::thread::sleep(run.args.timing.lease_duration);
    } else {
        run.problems
            .push(format!("{kind} burst on {lease}: nobody led within 30 s"));
    }
    run.reap_crashed();
    let asked = run.stop_all(stop)?;
    // Exactly one leader at every instant from the first to the stop: one term, still on when
    // the candidates were asked to stop. (Terms begun after that, when the stopping leader
    // released, are the end of the run.)
    let terms: Vec<Term> = burst_terms(run, lease, prefix)?
        .into_iter()
        .filter(|t| t.start < asked)
        .collect();
    if terms.len() > 1 || terms.iter().any(|t| t.end < asked) {
        run.problems.push(format!(
            "{kind} burst on {lease}: {} term(s) before the stop, the last ending {:.3} s before \
             it (leadership changed hands or lapsed on a healthy server: an instant without a \
             leader)",
            terms.len(),
            terms
                .last()
                .map_or(0.0, |t| secs(asked.saturating_sub(t.end)))
        ));
    }
    let burst = Burst {
        kind,
        lease: lease.to_owned(),
        first_leader_after_start: first
            .as_ref()
            .map(|t| secs(t.start.saturating_sub(start_at))),
        takeover_after_kill: killed_at
            .and_then(|k| first.as_ref().map(|t| secs(t.start.saturating_sub(k)))),
        terms: terms.len(),
    };
    say(&format!(
        "{kind} burst: {} candidates at once on {lease}: first leader {} after the start{}, {} term(s)",
        run.args.burst_size,
        burst
            .first_leader_after_start
            .map_or("never".to_owned(), |s| format!("{s:.3} s")),
        burst
            .takeover_after_kill
            .map_or(String::new(), |s| format!(", {s:.2} s after the kill")),
        burst.terms
    ));
    Ok(burst)
}

fn fresh_burst(run: &mut Run, id: &str, round: u32) -> Result<Burst, String> {
    let lease = format!("fresh-{id}-{round}");
    let prefix = format!("fresh{round}-");
    let stop = run.args.dir.join(format!("stop-fresh-{round}"));
    let start_at = together(run, &lease, &prefix, &stop)?;
    finish_burst(run, "fresh", &lease, &prefix, start_at, None, &stop)
}

fn stale_burst(run: &mut Run, id: &str, round: u32) -> Result<Burst, String> {
    let lease = format!("stale-{id}-{round}");
    let prefix = format!("stale{round}-");
    let stop = run.args.dir.join(format!("stop-stale-{round}"));
    let vanisher = format!("vanisher{round}");
    let t0 = now();
    run.spawn(&vanisher, &lease, None, &stop)?;
    let killed_at = match run.wait_for_lead(&lease, t0, Duration::from_secs(30), |_| true)? {
        Some(_) => {
            // Let it renew once or twice, then make it vanish.
            std::thread::sleep(run.args.timing.retry_period * 2);
            Some(run.kill(&vanisher)?)
        }
        None => {
            run.problems.push(format!(
                "stale burst on {lease}: the first holder never led"
            ));
            None
        }
    };
    let start_at = together(run, &lease, &prefix, &stop)?;
    finish_burst(run, "stale", &lease, &prefix, start_at, killed_at, &stop)
}
