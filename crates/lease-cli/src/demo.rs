//! `lease demo`: a leader election among worker processes on a fresh SQLite database, a
//! SIGKILLed leader and the near-instant takeover (the store sees the death), then (not with
//! `--short`) a leader stopped with SIGSTOP and the takeover at its expiry, and a check of the
//! workers' logs that no two ever led at once; and `__demo-worker`, one of those workers.
//!
//! Each worker claims the lease `demo/demo#demo` through a manager with a short ttl, renews it
//! every third of the ttl while leading, and otherwise waits with `wait_until_expired`. Every
//! successful claim or renewal is logged with its *guaranteed window* on the host's shared
//! boot clock (`CLOCK_BOOTTIME`): from the moment the call returned to the call's start plus
//! the ttl, the span in which the worker may act as leader. The check: windows of different
//! workers never overlap, and generations strictly increase from one acquisition to the next.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use lease_core::{Clock, Facades as _, Generation, Key, Request, Store, Timestamp};
use lease_store_sqlite::SqliteStore;
use rustix::process::{Pid, Signal};

use crate::backend;
use crate::cli::{DemoArgs, DemoWorkerArgs};
use crate::commands::out;
use crate::demo_check::{Window, cut_at_deaths, parse_log, verify};
use crate::error::{CliError, EXIT_HELD, EXIT_OK, EXIT_STORE, EXIT_USAGE, chain};
use crate::human::format_duration;

const NAMESPACE: &str = "demo";
const MODEL: &str = "demo";
const LEASE: &str = "demo";
/// How often the demo looks at the lease for its live view.
const POLL: Duration = Duration::from_millis(25);
/// The shortest `--ttl`: shorter, a worker renewing every third of it cannot keep up.
const MIN_TTL: Duration = Duration::from_millis(100);
/// The longest `--ttl`: the demo waits up to three ttls for each takeover, and a demo that
/// takes hours shows nothing more.
const MAX_TTL: Duration = Duration::from_secs(60);

/// The demo's ttl: `--ttl`, or its default.
///
/// # Errors
///
/// A usage error when `--ttl` is outside [`MIN_TTL`]..=[`MAX_TTL`].
fn demo_ttl(args: &DemoArgs) -> Result<Duration, CliError> {
    let ttl = args.ttl.unwrap_or(if args.short {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(2)
    });
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(CliError::new(
            EXIT_USAGE,
            format!(
                "invalid --ttl {} for the demo: must be between {} and {} (see lease demo --help)",
                format_duration(ttl),
                format_duration(MIN_TTL),
                format_duration(MAX_TTL)
            ),
        ));
    }
    Ok(ttl)
}

/// The instant `d` from now, saturating far in the future instead of overflowing.
fn after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365)))
        .unwrap_or(now)
}

fn key() -> Key {
    Key::new(NAMESPACE, MODEL, LEASE)
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> CliError {
    CliError::store(format!("{what} {}: {e}", path.display()))
}

struct Worker {
    id: u32,
    child: Child,
    log: PathBuf,
    alive: bool,
}

impl Worker {
    fn holder(&self) -> String {
        holder_name(self.id)
    }
    fn pid(&self) -> Option<Pid> {
        i32::try_from(self.child.id()).ok().and_then(Pid::from_raw)
    }
}

fn holder_name(id: u32) -> String {
    format!("worker-{id}")
}

/// The live view: one status line, redrawn in place on a terminal; elsewhere printed when
/// the leader changes and once a second.
struct View {
    tty: bool,
    last: String,
    printed: Option<tokio::time::Instant>,
}

impl View {
    fn show(&mut self, line: &str, key_part: &str) {
        if self.tty {
            out(&format!("\r\x1b[K  {line}"));
        } else if key_part != self.last
            || self
                .printed
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            out(&format!("  {line}\n"));
            self.printed = Some(tokio::time::Instant::now());
        }
        self.last = key_part.to_owned();
    }
    fn event(&mut self, line: &str) {
        if self.tty {
            out(&format!("\r\x1b[K{line}\n"));
            self.last.clear();
        } else {
            out(&format!("{line}\n"));
        }
    }
}

struct Demo {
    workers: Vec<Worker>,
    observer: SqliteStore,
    clock: std::sync::Arc<dyn Clock>,
    view: View,
    /// Since when the current leader (holder, generation) has led, as the demo first saw it.
    since: Option<(String, Generation, Timestamp)>,
    /// Each killed worker and when it was known dead (reaped): it can act no more after that,
    /// so its guaranteed windows end there. SQLite frees a dead holder's lease at once.
    deaths: Vec<(u32, Timestamp)>,
    /// Where the deaths are written, one `dead ID NANOS` line each, for an outside check.
    deaths_log: PathBuf,
}

impl Demo {
    async fn leader(&mut self) -> Option<(String, Generation, Timestamp)> {
        let key = key();
        let map = self
            .observer
            .leases(std::slice::from_ref(&key))
            .await
            .ok()?;
        map.get(&key)
            .map(|i| (i.holder.clone(), i.generation, i.expiry))
    }

    fn alive(&self) -> usize {
        self.workers.iter().filter(|w| w.alive).count()
    }

    /// Polls the lease and redraws the view for `length`.
    async fn watch(&mut self, length: Duration) {
        let end = after(length);
        while tokio::time::Instant::now() < end {
            self.tick().await;
            tokio::time::sleep(POLL).await;
        }
    }

    async fn tick(&mut self) -> Option<(String, Generation)> {
        let now = self.clock.now();
        let leader = self.leader().await;
        match &leader {
            Some((holder, generation, expiry)) => {
                if self
                    .since
                    .as_ref()
                    .is_none_or(|(h, g, _)| h != holder || g != generation)
                {
                    self.since = Some((holder.clone(), *generation, now));
                }
                let since = self.since.as_ref().map_or(now, |s| s.2);
                let worker = self.workers.iter().find(|w| w.holder() == *holder);
                let pid = worker.map_or(0, |w| w.child.id());
                let line = if worker.is_some_and(|w| !w.alive) {
                    format!(
                        "leader {holder} (pid {pid}) is dead; its lease runs out in {}  workers alive {}",
                        format_duration(expiry.saturating_duration_since(now)),
                        self.alive()
                    )
                } else {
                    format!(
                        "leader {holder} (pid {pid})  generation {generation}  leading for {}  workers alive {}",
                        format_duration(now.saturating_duration_since(since)),
                        self.alive()
                    )
                };
                self.view.show(&line, &format!("{holder}/{generation}"));
            }
            None => self.view.show(
                &format!("no leader  workers alive {}", self.alive()),
                "none",
            ),
        }
        leader.map(|(holder, generation, _)| (holder, generation))
    }

    /// Waits up to `limit` for a leader other than `old`; returns it.
    async fn await_leader(
        &mut self,
        old: Option<&(String, Generation)>,
        limit: Duration,
    ) -> Option<(String, Generation)> {
        let end = after(limit);
        while tokio::time::Instant::now() < end {
            if let Some(leader) = self.tick().await
                && old.is_none_or(|o| o.0 != leader.0 && leader.1 > o.1)
            {
                return Some(leader);
            }
            tokio::time::sleep(POLL).await;
        }
        None
    }

    fn kill(&mut self, holder: &str) -> Option<u32> {
        let worker = self
            .workers
            .iter_mut()
            .find(|w| w.alive && w.holder() == holder)?;
        if let Some(pid) = worker.pid() {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        let _ = worker.child.wait();
        worker.alive = false;
        let (id, pid) = (worker.id, worker.child.id());
        let dead_by = self.clock.now();
        self.deaths.push((id, dead_by));
        let line = format!("dead {id} {}\n", dead_by.as_nanos());
        if let Err(e) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.deaths_log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))
        {
            eprintln!(
                "lease: warning: cannot record a death in {}: {e}",
                self.deaths_log.display()
            );
        }
        Some(pid)
    }

    /// Sends `signal` to the live worker `holder`; its pid.
    fn signal(&mut self, holder: &str, signal: Signal) -> Option<u32> {
        let worker = self
            .workers
            .iter()
            .find(|w| w.alive && w.holder() == holder)?;
        if let Some(pid) = worker.pid() {
            let _ = rustix::process::kill_process(pid, signal);
        }
        Some(worker.child.id())
    }

    fn stop_all(&mut self) {
        for w in &mut self.workers {
            if w.alive {
                if let Some(pid) = w.pid() {
                    let _ = rustix::process::kill_process(pid, Signal::KILL);
                }
                let _ = w.child.wait();
                w.alive = false;
            }
        }
    }

    fn windows(&self) -> Result<Vec<Window>, CliError> {
        let mut all = Vec::new();
        for w in &self.workers {
            let text = match fs::read_to_string(&w.log) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(io_error("reading", &w.log, &e)),
            };
            all.extend(parse_log(w.id, &text));
        }
        Ok(cut_at_deaths(all, &self.deaths))
    }

    /// The acquisition of `generation` by `holder`, from its log.
    fn acquisition(&self, holder: &str, generation: Generation) -> Option<Window> {
        let worker = self.workers.iter().find(|w| w.holder() == holder)?;
        let text = fs::read_to_string(&worker.log).ok()?;
        parse_log(worker.id, &text)
            .into_iter()
            .find(|w| w.acquire && w.generation == generation.get())
    }

    fn last_window(&self, holder: &str) -> Option<Window> {
        let worker = self.workers.iter().find(|w| w.holder() == holder)?;
        let text = fs::read_to_string(&worker.log).ok()?;
        parse_log(worker.id, &text)
            .into_iter()
            .max_by_key(|w| w.end)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `lease demo`.
pub(crate) async fn demo(args: DemoArgs) -> Result<u8, CliError> {
    let started = tokio::time::Instant::now();
    // Checked before anything is created or started.
    let ttl = demo_ttl(&args)?;
    let kills = if args.short { 1 } else { 2 };
    let (watch_first, watch_after) = if args.short {
        (Duration::from_millis(1200), Duration::from_millis(600))
    } else {
        (Duration::from_secs(3), Duration::from_millis(1500))
    };

    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, &e))?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("lease-demo-")
                .tempdir()
                .map_err(|e| CliError::store(format!("creating a temporary directory: {e}")))?;
            temp.path().to_path_buf()
        }
    };
    let db = dir.join("demo.db");
    // Create the database (and its schema) once, before the workers race to open it.
    let observer = SqliteStore::builder(&db).clock(backend::clock()).open()?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::store(format!("cannot find the lease executable: {e}")))?;

    out(&format!(
        "lease demo: {} workers elect a leader for lease {} (ttl {}) on {}\n",
        args.workers,
        key(),
        format_duration(ttl),
        db.display()
    ));
    let mut demo = Demo {
        workers: Vec::new(),
        observer,
        clock: backend::clock(),
        view: View {
            tty: std::io::stdout().is_terminal(),
            last: String::new(),
            printed: None,
        },
        since: None,
        deaths: Vec::new(),
        deaths_log: dir.join("deaths"),
    };
    for id in 1..=args.workers {
        let log = dir.join(format!("worker-{id}.log"));
        let err_path = dir.join(format!("worker-{id}.err"));
        let err = File::create(&err_path).map_err(|e| io_error("creating", &err_path, &e))?;
        let child = std::process::Command::new(&exe)
            .arg("__demo-worker")
            .arg("--db")
            .arg(&db)
            .arg("--id")
            .arg(id.to_string())
            .arg("--ttl")
            .arg(format!("{}ms", ttl.as_millis()))
            .arg("--log")
            .arg(&log)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| CliError::store(format!("starting worker {id}: {e}")))?;
        demo.workers.push(Worker {
            id,
            child,
            log,
            alive: true,
        });
    }
    let pids: Vec<String> = demo
        .workers
        .iter()
        .map(|w| format!("{} (pid {})", w.holder(), w.child.id()))
        .collect();
    out(&format!("started {}\n", pids.join(", ")));

    let patience = ttl.saturating_mul(3).saturating_add(Duration::from_secs(5));
    let Some(mut leader) = demo.await_leader(None, patience).await else {
        demo.stop_all();
        return Err(CliError::new(
            EXIT_HELD,
            format!(
                "no worker became leader within {} (see the worker-N.err files in {})",
                format_duration(patience),
                dir.display()
            ),
        ));
    };
    demo.view.event(&format!(
        "elected: {} with generation {}",
        leader.0, leader.1
    ));
    demo.watch(watch_first).await;

    let mut failovers = Vec::new();
    let mut stop_takeovers = Vec::new();
    let mut leaders = vec![leader.0.clone()];
    for round in 0..kills {
        // Take the leader as it stands now (it renews, it may even have changed).
        if let Some(current) = demo.tick().await {
            leader = current;
        }
        let killed_at = demo.clock.now();
        // The full demo's last round stops the leader instead: alive but silent, it keeps the
        // lease until its expiry.
        let stop = !args.short && round + 1 == kills;
        let found = if stop {
            let Some(pid) = demo.signal(&leader.0, Signal::STOP) else {
                break;
            };
            demo.view.event(&format!(
                "kill -STOP {} (pid {pid}), the leader with generation {}: alive but silent, it \
                 keeps the lease until its expiry",
                leader.0, leader.1
            ));
            // Continued after the takeover, or after two ttls without one (stopped inside a
            // transaction, it would hold the database's write lock).
            let mut found = demo
                .await_leader(Some(&leader), ttl.saturating_mul(2))
                .await;
            demo.signal(&leader.0, Signal::CONT);
            if found.is_none() {
                found = demo.await_leader(Some(&leader), patience).await;
            }
            found
        } else {
            let Some(pid) = demo.kill(&leader.0) else {
                break;
            };
            demo.view.event(&format!(
                "kill -9 {} (pid {pid}), the leader with generation {}",
                leader.0, leader.1
            ));
            demo.await_leader(Some(&leader), patience).await
        };
        let Some(next) = found else {
            demo.stop_all();
            return Err(CliError::new(
                EXIT_HELD,
                format!(
                    "no takeover within {} of killing {}",
                    format_duration(patience),
                    leader.0
                ),
            ));
        };
        let acquired = demo
            .acquisition(&next.0, next.1)
            .map_or_else(|| demo.clock.now(), |w| w.start);
        let failover = acquired.saturating_duration_since(killed_at);
        let after = match demo.last_window(&leader.0) {
            Some(w) if acquired < w.end => format!(
                ", {} before the old leader's guaranteed window would have ended",
                format_duration(w.end.saturating_duration_since(acquired))
            ),
            Some(w) => format!(
                ", {} after the old leader's guaranteed window ended",
                format_duration(acquired.saturating_duration_since(w.end))
            ),
            None => String::new(),
        };
        if stop {
            demo.view.event(&format!(
                "takeover: {} leads with generation {}, {} after the SIGSTOP{after} (at the \
                 expiry; the stopped leader was then continued, and its next renewal is refused)",
                next.0,
                next.1,
                format_duration(failover)
            ));
            stop_takeovers.push(failover);
        } else {
            demo.view.event(&format!(
                "takeover: {} leads with generation {}, {} after the kill{after} (the store \
                 saw the leader's death)",
                next.0,
                next.1,
                format_duration(failover)
            ));
            failovers.push(failover);
        }
        leaders.push(next.0.clone());
        leader = next;
        let length = if round + 1 == kills {
            watch_after
        } else {
            watch_first / 2
        };
        demo.watch(length).await;
    }
    demo.stop_all();
    if demo.view.tty {
        out("\r\x1b[K");
    }

    let windows = demo.windows()?;
    let verdict = verify(&windows);
    let generations: Vec<String> = verdict
        .acquisitions
        .iter()
        .map(|w| format!("{} ({})", w.generation, holder_name(w.worker)))
        .collect();
    let mut summary = String::from("\nsummary\n");
    summary.push_str(&format!(
        "  workers          {} processes, lease ttl {}\n",
        args.workers,
        format_duration(ttl)
    ));
    summary.push_str(&format!("  leaders          {}\n", leaders.join(" -> ")));
    summary.push_str(&format!(
        "  acquisitions     {}: generations {}\n",
        verdict.acquisitions.len(),
        generations.join(", ")
    ));
    summary.push_str(&format!("  renewals         {}\n", verdict.renewals));
    let fo: Vec<String> = failovers.iter().map(|d| format_duration(*d)).collect();
    summary.push_str(&format!(
        "  failover         {} after kill -9 (ttl {}: a dead leader's lease is free at once)\n",
        fo.join(", "),
        format_duration(ttl)
    ));
    if !stop_takeovers.is_empty() {
        let st: Vec<String> = stop_takeovers.iter().map(|d| format_duration(*d)).collect();
        summary.push_str(&format!(
            "  after SIGSTOP    {} (a stopped leader keeps its lease until its expiry)\n",
            st.join(", ")
        ));
    }
    summary.push_str(&format!(
        "  generations      {}\n",
        if verdict.generation_faults.is_empty() {
            "strictly increasing: OK".to_owned()
        } else {
            format!("NOT strictly increasing: {:?}", verdict.generation_faults)
        }
    ));
    summary.push_str(&format!(
        "  overlap check    {} guaranteed windows from {} logs: {}\n",
        windows.len(),
        demo.workers.len(),
        if verdict.overlaps.is_empty() {
            "no two workers ever led at once: OK".to_owned()
        } else {
            format!(
                "{} OVERLAPS: {:?}",
                verdict.overlaps.len(),
                verdict.overlaps
            )
        }
    ));
    summary.push_str(&format!(
        "  took             {}\n",
        format_duration(started.elapsed())
    ));
    out(&summary);
    if args.dir.is_some() {
        out(&format!("logs kept in {}\n", dir.display()));
    }
    if verdict.ok() && verdict.acquisitions.len() > kills {
        Ok(EXIT_OK)
    } else {
        Err(CliError::new(
            EXIT_HELD,
            "the demo's check failed: see the summary above",
        ))
    }
}

/// `lease __demo-worker`.
pub(crate) async fn worker(args: DemoWorkerArgs) -> Result<u8, CliError> {
    // Die with the demo, whatever kills it.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if ppid != Some(args.parent) {
        return Ok(EXIT_OK);
    }
    let clock = backend::clock();
    let store = SqliteStore::builder(&args.db).clock(clock.clone()).open()?;
    let manager = backend::start_manager(Box::new(store), Some(Duration::from_millis(20)))?;
    let claimer = manager
        .claimer(NAMESPACE, MODEL)
        .map_err(|e| CliError::lease("", &e))?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|e| io_error("opening", &args.log, &e))?;
    let holder = holder_name(args.id);
    let cancel = lease_core::CancellationToken::new();
    let mut leading: Option<Generation> = None;
    let mut logged = BTreeMap::new();
    loop {
        let t0 = clock.now();
        match claimer
            .claim(LEASE, Request::new(holder.clone(), args.ttl))
            .await
        {
            Ok(info) => {
                let t1 = clock.now();
                let end = t0.saturating_add(args.ttl);
                if t1 < end && info.holder == holder {
                    let kind = if leading == Some(info.generation) {
                        "renew"
                    } else {
                        "acquire"
                    };
                    // One write per line, so a kill never leaves half a line behind.
                    let line = format!(
                        "{kind} {} {} {}\n",
                        info.generation,
                        t1.as_nanos(),
                        end.as_nanos()
                    );
                    log.write_all(line.as_bytes())
                        .map_err(|e| io_error("writing", &args.log, &e))?;
                    *logged.entry(kind).or_insert(0u64) += 1;
                    leading = Some(info.generation);
                } else {
                    leading = None;
                }
                clock.sleep_until(t0.saturating_add(args.ttl / 3)).await;
            }
            Err(e) if e.is_claim_denied() => {
                leading = None;
                if let Err(e) = claimer.wait_until_expired(LEASE, &cancel).await {
                    eprintln!("worker {}: waiting: {}", args.id, chain(&e));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err(e) => {
                eprintln!("worker {}: claiming: {}", args.id, chain(&e));
                if e.is_aborted() {
                    return Ok(EXIT_STORE);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(worker: u32, acquire: bool, generation: u64, start: u64, end: u64) -> Window {
        Window {
            worker,
            acquire,
            generation,
            start: Timestamp::from_nanos(start),
            end: Timestamp::from_nanos(end),
        }
    }

    #[test]
    fn logs_parse_and_a_clean_history_passes() {
        let one = parse_log(1, "acquire 1 10 20\nrenew 1 15 25\ngarbage\nrenew 1 1");
        assert_eq!(one, vec![w(1, true, 1, 10, 20), w(1, false, 1, 15, 25)]);
        let mut all = one;
        all.extend(parse_log(2, "acquire 2 25 35\n"));
        let verdict = verify(&all);
        assert!(verdict.ok(), "{verdict:?}");
        assert_eq!(verdict.acquisitions.len(), 2);
        assert_eq!(verdict.renewals, 1);
    }

    fn args(ttl: Option<Duration>, short: bool) -> DemoArgs {
        DemoArgs {
            workers: 3,
            ttl,
            short,
            dir: None,
        }
    }

    #[test]
    fn the_ttl_must_fit_a_demo() {
        assert_eq!(
            demo_ttl(&args(None, false)).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(demo_ttl(&args(None, true)).unwrap(), Duration::from_secs(1));
        for ok in [MIN_TTL, Duration::from_secs(5), MAX_TTL] {
            assert_eq!(demo_ttl(&args(Some(ok), false)).unwrap(), ok);
        }
        for bad in [
            Duration::from_nanos(1),
            Duration::from_millis(99),
            MAX_TTL + Duration::from_nanos(1),
            Duration::from_secs(3600 * 24 * 365 * 5),
            Duration::MAX,
        ] {
            let err = demo_ttl(&args(Some(bad), true)).unwrap_err();
            assert_eq!(err.code, EXIT_USAGE);
            assert!(
                err.message.contains("must be between 100ms and 1m"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn deadlines_saturate() {
        let now = tokio::time::Instant::now();
        assert!(after(Duration::MAX) > now);
        assert!(after(Duration::from_secs(1)) > now);
    }

    #[test]
    fn a_killed_workers_windows_end_at_its_death() {
        let windows = vec![w(1, true, 1, 10, 20), w(2, true, 2, 14, 30)];
        assert_eq!(verify(&windows).overlaps.len(), 1);
        let cut = cut_at_deaths(windows, &[(1, Timestamp::from_nanos(13))]);
        assert_eq!(cut[0].end, Timestamp::from_nanos(13));
        assert!(verify(&cut).overlaps.is_empty());
        // Dying after the other's start is still an overlap.
        let late = cut_at_deaths(
            vec![w(1, true, 1, 10, 20), w(2, true, 2, 14, 30)],
            &[(1, Timestamp::from_nanos(15))],
        );
        assert_eq!(verify(&late).overlaps.len(), 1);
    }

    #[test]
    fn overlaps_and_stale_generations_are_caught() {
        let verdict = verify(&[w(1, true, 1, 10, 20), w(2, true, 2, 19, 30)]);
        assert_eq!(verdict.overlaps.len(), 1);
        let verdict = verify(&[w(1, true, 2, 10, 20), w(2, true, 2, 20, 30)]);
        assert_eq!(verdict.generation_faults.len(), 1);
        assert!(verdict.overlaps.is_empty());
    }
}
