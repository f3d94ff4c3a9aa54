//! The command's process tree, from `lease run`'s side: starting the shim that supervises it
//! ([`crate::supervisor`]), and the sweeps that kill what is left of the tree when the shim
//! itself was killed.
//!
//! `lease run` is a subreaper too, as the second line of defence: if the shim itself is killed,
//! its descendants come back to `lease run`, which sweeps them.

use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitIdStatus, WaitOptions};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

use crate::supervisor::sweep::{Targets, all_processes, kill_checked, kill_targets};

/// The name of the shim's own binary, which `lease run` looks for beside itself.
pub(crate) const SHIM: &str = "lease-run-shim";

/// The command that starts the shim, before its arguments: the small `lease-run-shim` beside
/// `exe` (the running `lease`) when it is there, else `exe __exec-child`, the same code
/// inside `lease`. Either way the shim gets the same arguments.
pub(crate) fn shim_command(exe: &Path) -> Command {
    match shim_beside(exe) {
        Some(shim) => Command::new(shim),
        None => {
            let mut command = Command::new(exe);
            command.arg("__exec-child");
            command
        }
    }
}

fn shim_beside(exe: &Path) -> Option<PathBuf> {
    let shim = exe.parent()?.join(SHIM);
    shim.is_file().then_some(shim)
}

/// Watches for the exit of the shim `shim` without reaping it (so its pid, the group's id,
/// cannot be reused while signals may still be sent to the group), then, if the shim was
/// killed, sweeps what it left. The receiver hears `true` then, or `false` when the exit could
/// not be watched.
///
/// On the runtime, woken by SIGCHLD (no thread; the state is checked after the signal is
/// caught, so an exit before is not missed, and again at each SIGCHLD, whichever child it was
/// for); where the signal cannot be caught, on a thread of its own. Call it within the
/// runtime's context.
pub(crate) fn watch_exit(shim: Pid) -> oneshot::Receiver<bool> {
    let (tx, rx) = oneshot::channel();
    match signal(SignalKind::child()) {
        Ok(mut children) => {
            tokio::spawn(async move {
                let ended = loop {
                    match exit_of(shim, WaitIdOptions::NOHANG) {
                        Some(None) => {}
                        ended => break ended,
                    }
                    if children.recv().await.is_none() {
                        // No more signals (the runtime is going away): wait on a thread.
                        let wait = move || exit_of(shim, WaitIdOptions::empty());
                        break tokio::task::spawn_blocking(wait).await.ok().flatten();
                    }
                };
                if killed(ended) {
                    let _ = tokio::task::spawn_blocking(move || sweep_after_shim(shim)).await;
                }
                let _ = tx.send(ended.is_some());
            });
        }
        Err(_) => {
            std::thread::spawn(move || {
                let ended = exit_of(shim, WaitIdOptions::empty());
                if killed(ended) {
                    sweep_after_shim(shim);
                }
                let _ = tx.send(ended.is_some());
            });
        }
    }
    rx
}

/// What waiting for the shim's exit found: `None` when waiting failed.
type Ended = Option<Option<WaitIdStatus>>;

/// Whether the shim ended otherwise than by returning from `main`: a shim that returned has
/// already taken the tree apart (it returns only once it has no child left, and as a subreaper
/// that means no descendant left), so the sweep, a scan of every process on the host, is
/// needed only when the shim itself was killed.
fn killed(ended: Ended) -> bool {
    ended.is_some_and(|status| !status.is_some_and(|s| s.exited()))
}

/// `waitid` on `shim` for its exit, leaving it unreaped; `Some(None)` when `options` has
/// `NOHANG` and it has not exited.
fn exit_of(shim: Pid, options: WaitIdOptions) -> Ended {
    loop {
        match rustix::process::waitid(
            WaitId::Pid(shim),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | options,
        ) {
            Err(rustix::io::Errno::INTR) => {}
            Ok(status) => return Some(status),
            Err(_) => return None,
        }
    }
}

/// SIGKILLs `root`'s process group, then `root`'s descendants as `/proc` shows them now
/// (also those in other sessions, which the group kill misses; those re-parented to `me` in the
/// meantime still count).
pub(crate) fn kill_descendants_and_group(root: Pid, me: i32) {
    let procs = all_processes();
    let mut tree = vec![root.as_raw_nonzero().get()];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            procs
                .iter()
                .filter(|s| s.ppid == parent && !tree.contains(&s.pid))
                .map(|s| s.pid)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    let _ = rustix::process::kill_process_group(root, Signal::KILL);
    for &pid in &tree[1..] {
        kill_checked(pid, |now| now.ppid == me || tree.contains(&now.ppid));
    }
}

/// Sweeps from `lease run` after the shim exited: kills the rest of its group and the
/// descendants that came back to `lease run`, and reaps them, until none is left.
pub(crate) fn sweep_after_shim(shim: Pid) {
    let targets = Targets {
        me: rustix::process::getpid().as_raw_nonzero().get(),
        group: shim.as_raw_nonzero().get(),
        spare_children_in: Some(rustix::process::getpgrp().as_raw_nonzero().get()),
        spare: Some(shim.as_raw_nonzero().get()),
    };
    // Bounded, in case a process cannot die (stuck in the kernel): 20 s of 2 ms rounds.
    for _ in 0..10_000 {
        if kill_targets(targets) == 0 {
            return;
        }
        // Reap our children among them (SIGKILLed, they exit promptly); others are reaped by
        // their parents, or come back to us when those die.
        for s in all_processes().iter().filter(|s| targets.matches(s)) {
            if s.ppid == targets.me
                && let Some(p) = Pid::from_raw(s.pid)
            {
                let _ = rustix::process::waitpid(Some(p), WaitOptions::NOHANG);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
