//! The demo's hold on its worker processes: starting them, the live view of who leads (read
//! through an observer store), kill -9 and SIGSTOP of a leader, and their logged windows.

use std::fs::{self, File};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use lease_core::{Clock, Generation, Store, Timestamp};
use lease_store_sqlite::SqliteStore;
use rustix::process::{Pid, Signal};

use super::check::{Window, cut_at_deaths, parse_log};
use super::{POLL, after, io_error, key};
use crate::backend;
use crate::commands::out;
use crate::error::CliError;
use crate::human::format_duration;

/// One worker process of the demo.
pub(super) struct Worker {
    /// Its number, from 1; its holder name is `worker-ID`.
    id: u32,
    pub(super) child: Child,
    /// Where it logs its guaranteed windows.
    log: PathBuf,
    /// False once the demo killed and reaped it.
    alive: bool,
}

impl Worker {
    /// Starts worker `id` (`lease __demo-worker`, this executable `exe`) on the database `db`
    /// with `ttl`; it logs its windows to `dir/worker-ID.log` and its errors to
    /// `dir/worker-ID.err`, and dies with this process.
    pub(super) fn spawn(
        exe: &Path,
        dir: &Path,
        db: &Path,
        id: u32,
        ttl: Duration,
    ) -> Result<Worker, CliError> {
        let log = dir.join(format!("worker-{id}.log"));
        let err_path = dir.join(format!("worker-{id}.err"));
        let err = File::create(&err_path).map_err(|e| io_error("creating", &err_path, &e))?;
        let child = std::process::Command::new(exe)
            .arg("__demo-worker")
            .arg("--db")
            .arg(db)
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
        Ok(Worker {
            id,
            child,
            log,
            alive: true,
        })
    }

    pub(super) fn holder(&self) -> String {
        holder_name(self.id)
    }
    fn pid(&self) -> Option<Pid> {
        i32::try_from(self.child.id()).ok().and_then(Pid::from_raw)
    }
}

/// The holder name worker `id` claims the lease as.
pub(super) fn holder_name(id: u32) -> String {
    format!("worker-{id}")
}

/// The live view: one status line, redrawn in place on a terminal; elsewhere printed when
/// the leader changes and once a second.
pub(super) struct View {
    pub(super) tty: bool,
    last: String,
    printed: Option<tokio::time::Instant>,
}

impl View {
    /// Shows the status `line`; `key_part` (the leader and generation) is what counts as a change.
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
    /// Prints `line` as an event of its own, above the status line.
    pub(super) fn event(&mut self, line: &str) {
        if self.tty {
            out(&format!("\r\x1b[K{line}\n"));
            self.last.clear();
        } else {
            out(&format!("{line}\n"));
        }
    }
}

/// The running demo: its workers, what it has seen of the lease, and the deaths it caused.
pub(super) struct Demo {
    pub(super) workers: Vec<Worker>,
    observer: SqliteStore,
    pub(super) clock: std::sync::Arc<dyn Clock>,
    pub(super) view: View,
    /// Since when the current leader (holder, generation) has led, as the demo first saw it.
    since: Option<(String, Generation, Timestamp)>,
    /// Each killed worker and an instant by which it had stopped acting for good (see
    /// [`stop_and_kill`]): its guaranteed windows end there. SQLite frees a dead holder's lease
    /// at once, but no earlier than that instant.
    deaths: Vec<(u32, Timestamp)>,
    /// Where the deaths are written, one `dead ID NANOS` line each, for an outside check.
    deaths_log: PathBuf,
}

impl Demo {
    /// The demo before its workers start: it watches the lease through `observer` and writes
    /// each death to `deaths_log`.
    pub(super) fn new(observer: SqliteStore, deaths_log: PathBuf) -> Demo {
        Demo {
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
            deaths_log,
        }
    }

    /// The lease's holder, generation and expiry as the store has them now.
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
    pub(super) async fn watch(&mut self, length: Duration) {
        let end = after(length);
        while tokio::time::Instant::now() < end {
            self.tick().await;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Reads the lease once and redraws the view; the leader and its generation.
    pub(super) async fn tick(&mut self) -> Option<(String, Generation)> {
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
    pub(super) async fn await_leader(
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

    /// Stops, SIGKILLs and reaps the live worker `holder` and records its death; its pid.
    pub(super) fn kill(&mut self, holder: &str) -> Option<u32> {
        let index = self
            .workers
            .iter()
            .position(|w| w.alive && w.holder() == holder)?;
        self.put_down(index);
        Some(self.workers[index].child.id())
    }

    /// Ends the live worker `index` with [`stop_and_kill`] and records the instant it returns
    /// as the worker's death, in `deaths` and in the deaths log.
    fn put_down(&mut self, index: usize) {
        let clock = self.clock.clone();
        let worker = &mut self.workers[index];
        let dead_by = stop_and_kill(&mut worker.child, &*clock);
        worker.alive = false;
        let id = worker.id;
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
    }

    /// Sends `signal` to the live worker `holder`; its pid.
    pub(super) fn signal(&mut self, holder: &str, signal: Signal) -> Option<u32> {
        let worker = self
            .workers
            .iter()
            .find(|w| w.alive && w.holder() == holder)?;
        if let Some(pid) = worker.pid() {
            let _ = rustix::process::kill_process(pid, signal);
        }
        Some(worker.child.id())
    }

    /// Ends every live worker, recording each death: a worker still running while another is
    /// put down may take the lease over, and its window then must not count as overlapping the
    /// window of the one that died.
    pub(super) fn stop_all(&mut self) {
        for index in 0..self.workers.len() {
            if self.workers[index].alive {
                self.put_down(index);
            }
        }
    }

    /// Every worker's logged guaranteed windows, each killed worker's cut at its death.
    pub(super) fn windows(&self) -> Result<Vec<Window>, CliError> {
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
    pub(super) fn acquisition(&self, holder: &str, generation: Generation) -> Option<Window> {
        let worker = self.workers.iter().find(|w| w.holder() == holder)?;
        let text = fs::read_to_string(&worker.log).ok()?;
        parse_log(worker.id, &text)
            .into_iter()
            .find(|w| w.acquire && w.generation == generation.get())
    }

    /// The last guaranteed window `holder` logged.
    pub(super) fn last_window(&self, holder: &str) -> Option<Window> {
        let worker = self.workers.iter().find(|w| w.holder() == holder)?;
        let text = fs::read_to_string(&worker.log).ok()?;
        parse_log(worker.id, &text)
            .into_iter()
            .max_by_key(|w| w.end)
    }
}

/// How long [`stop_and_kill`] waits for a SIGSTOP to take effect before it kills anyway.
const STOP_PATIENCE: Duration = Duration::from_secs(5);

/// Ends `child` and reaps it; the instant by which it had stopped acting for good, on `clock`.
///
/// The child is stopped first (SIGSTOP), and the instant is read once the kernel reports it
/// stopped, which it does only when every thread has stopped: from then on the child runs none
/// of its code. Stopped, it still holds its store session's flock, so no other worker can take
/// its lease before that instant; the SIGKILL that follows frees it. The instant is therefore
/// exact for the check: an instant read after the reap would be too late (another worker may
/// take over as soon as the kernel has torn the child down, before the reap returns, which the
/// check would count as an overlap), and one read before the SIGKILL too early (a running child
/// acts until the signal is delivered). Should the stop not show in [`STOP_PATIENCE`] (a child
/// stuck in the kernel), the instant is read after the reap: late, so an overlap may be
/// reported that was not one, but a real one is never missed. A child that had already exited
/// is reaped, and the instant read then.
pub(super) fn stop_and_kill(child: &mut Child, clock: &dyn Clock) -> Timestamp {
    use rustix::process::{WaitId, WaitIdOptions, waitid};
    let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        let _ = child.kill();
        let _ = child.wait();
        return clock.now();
    };
    let stopped = rustix::process::kill_process(pid, Signal::STOP).is_ok() && {
        // NOWAIT leaves an exited child for `wait` below to reap.
        let options = WaitIdOptions::STOPPED
            | WaitIdOptions::EXITED
            | WaitIdOptions::NOWAIT
            | WaitIdOptions::NOHANG;
        let start = std::time::Instant::now();
        loop {
            match waitid(WaitId::Pid(pid), options) {
                Ok(Some(_)) => break true,
                Ok(None) if start.elapsed() < STOP_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(None) | Err(_) => break false,
            }
        }
    };
    let stopped_by = stopped.then(|| clock.now());
    let _ = rustix::process::kill_process(pid, Signal::KILL);
    let _ = child.wait();
    stopped_by.unwrap_or_else(|| clock.now())
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> Child {
        std::process::Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_child_is_stopped_then_killed_and_reaped() {
        use std::os::unix::process::ExitStatusExt as _;
        let clock = backend::clock();
        let mut child = sleeper();
        let before = clock.now();
        let stopped = stop_and_kill(&mut child, &*clock);
        let after = clock.now();
        assert!(
            before <= stopped && stopped <= after,
            "{before:?} {stopped:?} {after:?}"
        );
        // Reaped, killed by the SIGKILL (a stopped child dies of it all the same).
        let status = child.try_wait().unwrap().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    #[test]
    fn a_child_that_already_exited_is_reaped_without_waiting_for_a_stop() {
        let clock = backend::clock();
        let mut child = std::process::Command::new("true")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        // Exited but not reaped (a zombie): waited for without reaping it.
        let exited = rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
        );
        assert!(matches!(exited, Ok(Some(_))), "{exited:?}");
        let start = std::time::Instant::now();
        let before = clock.now();
        let dead = stop_and_kill(&mut child, &*clock);
        assert!(before <= dead);
        assert!(start.elapsed() < STOP_PATIENCE, "{:?}", start.elapsed());
        assert!(child.try_wait().unwrap().unwrap().success());
    }
}
