//! The command's process tree: the `__exec-child` shim that supervises it, and the sweeps that
//! kill every process of it.
//!
//! # The shim
//!
//! `lease run` starts its own binary again as `lease __exec-child --parent PID -- CMD…`, in a
//! new process group (`CommandExt::process_group`, no `unsafe`). The shim stays for CMD's whole
//! life, as a tiny supervisor:
//!
//! - it is the leader of CMD's process group (CMD inherits the group), so `lease run` signals
//!   the whole tree with one `kill(-pgid)`; the shim ignores SIGTERM, SIGINT and SIGHUP, which
//!   are meant for CMD;
//! - it is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a descendant whose parent dies (a
//!   double-forked daemon, even in its own session) is re-parented to the shim, not to init, so
//!   with a subreaper "no child left" means "no descendant left";
//! - its parent-death signal is SIGUSR1, which it catches (SIGKILL could not be caught, and the
//!   shim has work to do): when `lease run` dies, even by SIGKILL, the kernel signals the shim,
//!   which kills the tree. The signal is armed before CMD starts, and the shim checks that its
//!   parent is still `PID` after arming it: if `lease run` died first, the shim was re-parented
//!   and does not start CMD. (The kernel fires the signal when the *thread* that forked the
//!   shim ends, so `lease run` spawns it from its main thread.)
//! - it enforces the lease's window on its own: `lease run` shares the kill deadline with it
//!   through a file ([`deadline`](super::deadline)), moved after each renewal; if the deadline
//!   comes and has not moved (`lease run` stopped or starved), the shim kills the tree. It also
//!   checks the deadline right before starting CMD;
//! - when CMD's main process exits, the shim kills what CMD left behind, so nothing of the tree
//!   outlives the release of the lease; it then exits with CMD's status (its exit code, or
//!   128+N for signal N), once it has no child left. Its exit means "the tree is gone".
//!
//! A kill of the tree ("sweep") SIGKILLs every process of the group and every child of the
//! sweeper, and repeats as children die until none is left: killing a process re-parents its
//! children to the subreaper, so the tree is taken apart level by level. Each target is
//! signalled through a pidfd opened *before* re-checking that it still belongs to the tree, so
//! a recycled pid is never signalled.
//!
//! `lease run` is a subreaper too, as the second line of defence: if the shim itself is killed,
//! its descendants come back to `lease run`, which sweeps them.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lease_core::Timestamp;
use rustix::process::{Pid, Signal, WaitOptions};
use tokio::signal::unix::{SignalKind, signal};

use crate::backend;
use crate::error::{EXIT_CANNOT_EXEC, EXIT_LOST, EXIT_STORE, EXIT_USAGE};

/// What `/proc/PID/stat` says of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    pid: i32,
    zombie: bool,
    ppid: i32,
    pgrp: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: parse after the last ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat {
        pid,
        zombie: state == "Z" || state == "X",
        ppid,
        pgrp,
    })
}

fn all_processes() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// Which processes a sweep kills.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Targets {
    /// The sweeper (never a target).
    pub(crate) me: i32,
    /// Members of this process group are targets.
    pub(crate) group: i32,
    /// Children of the sweeper are targets, except those in this group (`lease run`'s own
    /// process group: processes it started itself, such as a kubeconfig credential plugin).
    pub(crate) spare_children_in: Option<i32>,
    /// Never a target either (the exited shim, left unreaped on purpose).
    pub(crate) spare: Option<i32>,
}

impl Targets {
    fn matches(&self, s: &Stat) -> bool {
        s.pid != self.me
            && Some(s.pid) != self.spare
            && (s.pgrp == self.group
                || (s.ppid == self.me && Some(s.pgrp) != self.spare_children_in))
    }
}

/// SIGKILLs every live process `targets` names; returns how many matched (zombies included,
/// which are only waiting to be reaped).
pub(crate) fn kill_targets(targets: Targets) -> usize {
    let found: Vec<Stat> = all_processes()
        .into_iter()
        .filter(|s| targets.matches(s))
        .collect();
    for s in &found {
        if !s.zombie {
            kill_checked(s.pid, |now| targets.matches(now));
        }
    }
    found.len()
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

/// SIGKILLs `pid` through a pidfd, if it still is what `still` accepts once the pidfd is open
/// (so a pid recycled in between is not signalled).
fn kill_checked(pid: i32, still: impl Fn(&Stat) -> bool) {
    let Some(p) = Pid::from_raw(pid) else { return };
    match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => {
            if stat(pid).is_some_and(|s| still(&s)) {
                let _ = rustix::process::pidfd_send_signal(&fd, Signal::KILL);
            }
        }
        // Kernels before 5.3 have no pidfds: signal by pid after the same check.
        Err(rustix::io::Errno::NOSYS) => {
            if stat(pid).is_some_and(|s| still(&s)) {
                let _ = rustix::process::kill_process(p, Signal::KILL);
            }
        }
        Err(_) => {}
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

/// `lease __exec-child`: the shim. Returns its exit code: CMD's status, or a `lease` code
/// when CMD could not be started.
pub(crate) fn shim(parent: i32, deadline_file: Option<&Path>, command: &[OsString]) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lease: error: cannot start the command's supervisor: {e}");
            return EXIT_STORE;
        }
    };
    runtime.block_on(supervise(parent, deadline_file, command))
}

async fn supervise(parent: i32, deadline_file: Option<&Path>, command: &[OsString]) -> u8 {
    // The handlers first: from here on, the signals `lease run` sends the group leave the shim
    // alone, and a kill request is caught.
    let (Ok(mut terms), Ok(mut ints), Ok(mut hups), Ok(mut kills)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        eprintln!("lease: error: cannot catch signals in the command's supervisor");
        return EXIT_STORE;
    };
    // The argument is a flag: any pid sets the attribute, `None` clears it.
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        eprintln!("lease: error: cannot become the subreaper of the command's processes: {e}");
        return EXIT_STORE;
    }
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::USR1)) {
        eprintln!("lease: error: cannot set the parent-death signal: {e}");
        return EXIT_STORE;
    }
    // If `lease run` died before the signal was armed, we were re-parented: do not run CMD.
    let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if ppid != Some(parent) {
        eprintln!("lease: error: lease run (pid {parent}) is gone; not starting the command");
        return EXIT_LOST;
    }
    let Some((program, rest)) = command.split_first() else {
        eprintln!("lease: error: missing command after --");
        return EXIT_USAGE;
    };
    // The window, checked once more right before CMD starts.
    let clock = backend::clock();
    let mut deadline = match deadline_file.map(super::deadline::read) {
        None => Timestamp::MAX,
        Some(Some(at)) if clock.now() < at => at,
        Some(_) => {
            eprintln!("lease: error: the lease's window has ended; not starting the command");
            return EXIT_LOST;
        }
    };
    let mut expired = false;
    let child = match std::process::Command::new(program).args(rest).spawn() {
        Ok(child) => child,
        Err(err) => {
            eprintln!(
                "lease: error: cannot run {:?}: {err}",
                program.to_string_lossy()
            );
            return if err.kind() == io::ErrorKind::PermissionDenied {
                126
            } else {
                EXIT_CANNOT_EXEC
            };
        }
    };
    let main_pid = i32::try_from(child.id()).unwrap_or(0);
    // The reaper owns every wait of this process (std's handle is not used to wait).
    drop(child);
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let targets = Targets {
        me,
        group: rustix::process::getpgrp().as_raw_nonzero().get(),
        spare_children_in: None,
        spare: None,
    };
    let sweeping = Arc::new(AtomicBool::new(false));
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    let reaper_sweeping = sweeping.clone();
    std::thread::spawn(move || {
        let _ = done_tx.send(reap_all(main_pid, targets, &reaper_sweeping));
    });
    loop {
        tokio::select! {
            status = &mut done => match status {
                Ok(status) => return status.map_or(EXIT_STORE, status_code),
                // The reaper is gone without an answer (it panicked): the shim's exit must
                // still mean "the tree is gone", so take it apart here.
                Err(_) => {
                    sweeping.store(true, Ordering::SeqCst);
                    return reap_all(main_pid, targets, &sweeping).map_or(EXIT_STORE, status_code);
                }
            },
            Some(()) = kills.recv() => {
                // The parent-death signal, unless CMD signalled its own group with SIGUSR1:
                // only a parent that is really gone counts.
                let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
                if ppid != Some(parent) && !sweeping.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "lease: error: lease run (pid {parent}) died; killing the command's \
                         processes"
                    );
                }
                if ppid != Some(parent) {
                    kill_targets(targets);
                }
            }
            () = clock.sleep_until(deadline), if !expired => {
                match deadline_file.and_then(super::deadline::read) {
                    Some(at) if clock.now() < at => deadline = at,
                    _ => {
                        // `lease run` did not renew in time and did not stop the tree (it is
                        // stopped or starved): the window is about to end.
                        expired = true;
                        eprintln!(
                            "lease: error: lease run (pid {parent}) did not renew the lease in \
                             time; killing the command's processes before the lease expires"
                        );
                        sweeping.store(true, Ordering::SeqCst);
                        kill_targets(targets);
                    }
                }
            }
            // Meant for CMD: `lease run` signals the whole group, the shim included.
            Some(()) = terms.recv() => {}
            Some(()) = ints.recv() => {}
            Some(()) = hups.recv() => {}
        }
    }
}

/// Reaps every child until none is left; once CMD's main process (`main_pid`) has exited, or a
/// kill was requested, kills the rest of the tree after each reap. Returns CMD's status.
fn reap_all(
    main_pid: i32,
    targets: Targets,
    sweeping: &AtomicBool,
) -> Option<rustix::process::WaitStatus> {
    let mut status = None;
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, st))) => {
                if pid.as_raw_nonzero().get() == main_pid {
                    status = Some(st);
                    sweeping.store(true, Ordering::SeqCst);
                    // CMD left nothing behind (the common case): no child means no descendant,
                    // so skip the sweep's scan of every process on the host.
                    if let Err(rustix::io::Errno::CHILD) =
                        rustix::process::waitpid(None, WaitOptions::NOHANG)
                    {
                        return status;
                    }
                }
            }
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            // ECHILD: as a subreaper, no child means no descendant.
            Err(_) => return status,
        }
        if sweeping.load(Ordering::SeqCst) {
            kill_targets(targets);
        }
    }
}

/// The shell's convention: the exit code, or 128+N for signal N.
fn status_code(status: rustix::process::WaitStatus) -> u8 {
    if let Some(code) = status.exit_status() {
        return u8::try_from(code & 0xff).unwrap_or(EXIT_STORE);
    }
    match status.terminating_signal() {
        Some(sig) => u8::try_from((128 + sig) & 0xff).unwrap_or(EXIT_STORE),
        None => EXIT_STORE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parses_odd_command_names() {
        let me = stat(rustix::process::getpid().as_raw_nonzero().get()).unwrap();
        assert!(!me.zombie);
        assert_eq!(
            me.ppid,
            rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get())
        );
        assert_eq!(me.pgrp, rustix::process::getpgrp().as_raw_nonzero().get());
    }

    #[test]
    fn targets_spare_the_sweeper_and_its_own_group() {
        let t = Targets {
            me: 10,
            group: 20,
            spare_children_in: Some(5),
            spare: Some(40),
        };
        let s = |pid, ppid, pgrp| Stat {
            pid,
            zombie: false,
            ppid,
            pgrp,
        };
        assert!(!t.matches(&s(10, 1, 20)));
        assert!(t.matches(&s(21, 99, 20)), "a group member");
        assert!(t.matches(&s(30, 10, 30)), "a child in its own session");
        assert!(
            !t.matches(&s(31, 10, 5)),
            "a child in the sweeper's own group"
        );
        assert!(!t.matches(&s(32, 99, 32)), "unrelated");
        assert!(!t.matches(&s(40, 10, 20)), "spared");
    }
}
