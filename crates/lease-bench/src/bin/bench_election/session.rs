//! The orchestrator's view of candidates: the processes it started on one store, what they
//! reported, and what it did to them (SIGSTOP, SIGCONT, SIGKILL).

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lease_bench::Res;
use lease_bench::k8s::Verbs;
use serde_json::Value;

use crate::{Backend, EVENT_PATIENCE, EXIT_PATIENCE, now_ns};

/// One event a candidate printed (or the orchestrator noted about it: `killed`, `exit`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Ev {
    pub(crate) who: String,
    pub(crate) kind: String,
    /// `CLOCK_BOOTTIME`, nanoseconds.
    pub(crate) t: u64,
    pub(crate) seen: u64,
    pub(crate) generation: u64,
    pub(crate) ok: bool,
    pub(crate) verbs: Verbs,
    pub(crate) what: String,
}

pub(crate) fn parse_event(who: &str, line: &str) -> Option<Ev> {
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

pub(crate) type Log = Arc<Mutex<Vec<Ev>>>;

pub(crate) fn push(log: &Log, ev: Ev) {
    log.lock().unwrap_or_else(PoisonError::into_inner).push(ev);
}

pub(crate) struct Proc {
    pub(crate) who: String,
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) done: bool,
}

/// Candidate processes on one store, and everything they reported.
pub(crate) struct Session {
    pub(crate) backend: Backend,
    pub(crate) exe: PathBuf,
    pub(crate) log: Log,
    pub(crate) procs: Vec<Proc>,
}

impl Session {
    pub(crate) fn new(backend: &Backend, exe: &Path) -> Session {
        Session {
            backend: backend.clone(),
            exe: exe.to_owned(),
            log: Log::default(),
            procs: Vec::new(),
        }
    }

    /// Starts a candidate for `lease` named `who`; returns its index.
    pub(crate) fn spawn(&mut self, lease: &str, who: &str) -> Res<usize> {
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

    pub(crate) fn who(&self, i: usize) -> &str {
        &self.procs[i].who
    }

    pub(crate) fn send(&mut self, i: usize, command: &str) -> Res<()> {
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
    pub(crate) fn mark(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(crate) fn events(&self) -> Vec<Ev> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn find(&self, from: usize, pred: impl Fn(&Ev) -> bool) -> Option<Ev> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().skip(from).find(|e| pred(e)).cloned()
    }

    /// Waits for the first event of `kind` from `who` (any candidate if `None`) at or after
    /// `from`; fails if it does not come within `patience` or `who` exits first.
    pub(crate) async fn wait(
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
    pub(crate) async fn tally(&mut self, i: usize) -> Res<(Verbs, u64)> {
        let from = self.mark();
        self.send(i, "tally")?;
        let who = self.who(i).to_owned();
        let ev = self.wait(from, Some(&who), "tally", EVENT_PATIENCE).await?;
        Ok((ev.verbs, ev.t))
    }

    /// Stops candidate `i` with SIGSTOP (`pause`) or continues it with SIGCONT; returns when
    /// (just before the signal).
    pub(crate) fn signal(&mut self, i: usize, stop: bool) -> Res<u64> {
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
    pub(crate) fn kill(&mut self, i: usize) -> u64 {
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
    pub(crate) async fn shutdown(&mut self) {
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
