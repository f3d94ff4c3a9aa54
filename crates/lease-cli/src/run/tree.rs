//! The command's process tree, from `lease run`'s side: starting the shim that supervises it
//! ([`crate::supervisor`]), and the sweeps that kill what is left of the tree when the shim
//! itself was killed.
//!
//! `lease run` is a subreaper too, as the second line of defence: if the shim itself is killed,
//! its descendants come back to `lease run`, which sweeps them.

use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::process::{Pid, Signal, WaitOptions};

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
