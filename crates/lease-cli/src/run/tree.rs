//! The command's process tree, from `lease run`'s side: starting the shim that supervises it
//! ([`crate::supervisor`]), and the sweeps that kill what is left of the tree when the shim
//! itself was killed.
//!
//! The shim is started *before* the claim and waits for a go ([`WaitingShim`]), so that its
//! start-up (exec, loading, its set-up) overlaps the claim's I/O instead of following it. The
//! go travels on a socket (a `SOCK_SEQPACKET` pair) that is the shim's standard input
//! (`--go-on-stdin`): one message, `NANOS FENCE` (the first kill deadline and the lease's
//! generation, known only after the claim), carrying two descriptors: our standard input, which
//! the shim puts back as its own (CMD's), and the holder session's lock (SQLite), which exists
//! only once a claim has committed and which the tree must hold. Then our end closes. Without a
//! go (the claim failed or was refused, or came back too late, any early return, or `lease run`
//! died), our end closes with nothing sent and the shim exits without starting CMD; `lease run`
//! kills and reaps it (it has no child then). Descriptors passed this way need no fd number
//! shared across an exec, which safe code could not close in the shim.
//!
//! `lease run` is a subreaper too, as the second line of defence: if the shim itself is killed,
//! its descendants come back to `lease run`, which sweeps them.

use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use lease_core::Timestamp;

use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
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

/// The shim, started and waiting for its go. Dropped without [`WaitingShim::go`], it closes
/// the go socket with nothing sent (the shim then exits without starting CMD), SIGKILLs the
/// shim (a backstop for a stopped one: it has no child before the go) and reaps it.
pub(crate) struct WaitingShim {
    child: Option<Child>,
    go: Option<OwnedFd>,
    group: Pid,
}

impl WaitingShim {
    /// Spawns `command` (the shim's, with its other arguments and environment set) on `cmd`,
    /// in a new process group, with a go socket as its standard input.
    ///
    /// # Errors
    ///
    /// When the socket cannot be made or the shim cannot be started.
    pub(crate) fn spawn(
        mut command: Command,
        cmd: &[std::ffi::OsString],
    ) -> std::io::Result<WaitingShim> {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let spawned = command
            .arg("--go-on-stdin")
            .arg("--")
            .args(cmd)
            .stdin(std::process::Stdio::from(theirs))
            .process_group(0)
            .spawn();
        // Only the shim may hold its end: when it dies, a go is a broken pipe.
        drop(command);
        let mut child = spawned?;
        let Some(group) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("the shim has no valid pid"));
        };
        Ok(WaitingShim {
            child: Some(child),
            go: Some(ours),
            group,
        })
    }

    /// The shim's pid, the id of the command's process group.
    pub(crate) fn group(&self) -> Pid {
        self.group
    }

    /// Tells the shim to start CMD, within the window ending at `deadline`, with `fence` as
    /// `LEASE_FENCE`, our standard input as CMD's, and `session_lock` (the holder session's
    /// lock) for the tree to hold; returns the shim, from now on CMD's supervisor.
    ///
    /// # Errors
    ///
    /// When the go cannot be sent (the shim is gone: a broken pipe, `EPIPE`, sent without
    /// SIGPIPE); the shim is then killed and reaped, and CMD never starts.
    pub(crate) fn go(
        mut self,
        deadline: Timestamp,
        fence: &str,
        session_lock: Option<BorrowedFd<'_>>,
    ) -> std::io::Result<Child> {
        let message = format!("{} {fence}\n", deadline.as_nanos());
        let Some(socket) = self.go.take() else {
            return Err(std::io::Error::other("the go was sent already"));
        };
        let mut fds = vec![rustix::stdio::stdin()];
        fds.extend(session_lock);
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(std::io::Error::other("the go's descriptors do not fit"));
        }
        let iov = [std::io::IoSlice::new(message.as_bytes())];
        let sent = rustix::net::sendmsg(&socket, &iov, &mut control, SendFlags::NOSIGNAL)?;
        if sent != message.len() {
            return Err(std::io::Error::other("the go was cut short"));
        }
        drop(socket);
        self.child
            .take()
            .ok_or_else(|| std::io::Error::other("the shim is gone"))
    }
}

impl Drop for WaitingShim {
    fn drop(&mut self) {
        drop(self.go.take());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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
