//! The shim: the tiny supervisor `lease run` starts its command under, and that outlives
//! `lease run` long enough to kill the command's whole process tree.
//!
//! `lease run` starts it as `lease-run-shim --parent PID --deadline-file FILE --go-on-stdin --
//! CMD…` (the small binary beside `lease`, built from this module alone), or, when that binary
//! is missing, as `lease __exec-child …` with the same arguments (the same code, inside
//! `lease`), in a new process group (`CommandExt::process_group`, no `unsafe`).
//!
//! It is started *before* the lease is claimed, so that its start-up overlaps the claim: it
//! sets itself up (the handlers, the subreaper, the parent-death signal, the parent check
//! below), then waits for a go on its standard input, a socket ([`wait_for_go`]). The go
//! carries what is known only after the claim: the first kill deadline, the generation for
//! `LEASE_FENCE`, and, as descriptors, `lease run`'s standard input (put back as the shim's,
//! so CMD's) and the holder session's lock. When the socket closes without a go (the lease
//! was not claimed, or `lease run` died), the shim exits without starting CMD. (Without
//! `--go-on-stdin`, `--deadline NANOS` gives the first deadline and CMD starts at once.)
//!
//! The shim stays for CMD's whole life:
//!
//! - it is the leader of CMD's process group (CMD inherits the group), so `lease run` signals
//!   the whole tree with one `kill(-pgid)`; the shim catches and ignores SIGTERM, SIGINT and
//!   SIGHUP, which are meant for CMD (caught, not ignored: CMD starts with the default
//!   dispositions);
//! - it is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a descendant whose parent dies (a
//!   double-forked daemon, even in its own session) is re-parented to the shim, not to init, so
//!   with a subreaper "no child left" means "no descendant left";
//! - its parent-death signal is SIGUSR1, which it catches (SIGKILL could not be caught, and the
//!   shim has work to do): when `lease run` dies, even by SIGKILL, the kernel signals the shim,
//!   which kills the tree. The signal is armed before CMD starts, and the shim checks that its
//!   parent is still `PID` after arming it: if `lease run` died first, the shim was re-parented
//!   and does not start CMD; it checks again after the go. (The kernel fires the signal when
//!   the *thread* that forked the shim ends, so `lease run` spawns it from its main thread.)
//! - it enforces the lease's window on its own: `lease run` gives it the kill deadline
//!   (in the go) and moves it after each renewal through a file ([`deadline`]); if the
//!   deadline comes and the file has not moved it (`lease run` stopped or starved), the shim
//!   kills the tree. It also checks the deadline right before starting CMD;
//! - when CMD's main process exits, the shim kills what CMD left behind, so nothing of the tree
//!   outlives the release of the lease; it then exits with CMD's status (its exit code, or
//!   128+N for signal N), once it has no child left. Its exit means "the tree is gone".
//!
//! A kill of the tree ("sweep", [`sweep`]) SIGKILLs every process of the group and every child
//! of the sweeper, and repeats as children die until none is left: killing a process
//! re-parents its children to the subreaper, so the tree is taken apart level by level. Each
//! target is signalled through a pidfd opened *before* re-checking that it still belongs to the
//! tree, so a recycled pid is never signalled.
//!
//! It has one thread, which waits for a signal (a byte on a socket: SIGUSR1, or SIGCHLD when
//! a child exits) or the deadline, whichever comes first, rather than an async runtime or threads of
//! its own, and it parses its few arguments by hand: it is started once per `lease run`, and
//! its start-up is part of what every run costs.

pub(crate) mod deadline;
pub(crate) mod sweep;

use std::ffi::OsString;
use std::io::{self, Read as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lease_core::{Clock, SystemClock, Timestamp};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
use rustix::process::{Signal, WaitOptions};

use self::sweep::{Targets, kill_targets};

/// Bad usage: an unknown option or store, an invalid name or duration, a missing command.
pub(crate) const EXIT_USAGE: u8 = 2;
/// `run`: the lease was lost while the command ran (it was sent SIGTERM, then SIGKILL).
pub(crate) const EXIT_LOST: u8 = 3;
/// The store failed: an unwritable or damaged database, an unreachable or forbidden
/// Kubernetes API.
pub(crate) const EXIT_STORE: u8 = 4;
/// `run`: the command could not be executed (not found, not executable), as in shells.
pub(crate) const EXIT_CANNOT_EXEC: u8 = 127;

/// The shim's arguments.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    /// The pid of the `lease run` that started the shim.
    parent: i32,
    /// The instant (ns on `CLOCK_BOOTTIME`) at which the tree must be killed unless the
    /// deadline file moved it.
    deadline: Option<Timestamp>,
    /// The file through which `lease run` moves the deadline (read when the deadline comes;
    /// without `--deadline`, also before CMD starts).
    deadline_file: Option<PathBuf>,
    /// Whether standard input is the go socket (see [`wait_for_go`]): CMD starts only after
    /// a go on it, which carries the first deadline, `LEASE_FENCE`, CMD's standard input and
    /// the holder session's lock.
    go_on_stdin: bool,
    /// The command to run.
    command: Vec<OsString>,
}

impl Args {
    /// `--parent PID [--deadline NANOS] [--deadline-file FILE] [--go-on-stdin] -- CMD [ARGS]...`,
    /// as `lease run` writes them.
    fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Args, String> {
        let (mut parent, mut deadline, mut deadline_file) = (None, None, None);
        let mut go_on_stdin = false;
        loop {
            let Some(arg) = args.next() else {
                return Err("missing command after --".to_owned());
            };
            match arg.to_str() {
                Some("--") => break,
                Some("--parent") => {
                    let value = args.next().ok_or("--parent needs a pid")?;
                    let pid = value
                        .to_str()
                        .and_then(|v| v.parse::<i32>().ok())
                        .filter(|pid| *pid > 0)
                        .ok_or_else(|| format!("invalid --parent {value:?}"))?;
                    parent = Some(pid);
                }
                Some("--deadline") => {
                    let value = args.next().ok_or("--deadline needs an instant")?;
                    let at = value
                        .to_str()
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| format!("invalid --deadline {value:?}"))?;
                    deadline = Some(Timestamp::from_nanos(at));
                }
                Some("--deadline-file") => {
                    let value = args.next().ok_or("--deadline-file needs a path")?;
                    deadline_file = Some(PathBuf::from(value));
                }
                Some("--go-on-stdin") => go_on_stdin = true,
                _ => return Err(format!("unexpected argument {arg:?}")),
            }
        }
        let command: Vec<OsString> = args.collect();
        if command.is_empty() {
            return Err("missing command after --".to_owned());
        }
        Ok(Args {
            parent: parent.ok_or("missing --parent")?,
            deadline,
            deadline_file,
            go_on_stdin,
            command,
        })
    }
}

/// Runs the shim on its arguments (those after the program name, or after `__exec-child`).
/// Returns its exit code: CMD's status, or a `lease` code when CMD could not be started.
pub(crate) fn main(args: impl Iterator<Item = OsString>) -> u8 {
    match Args::parse(args) {
        Ok(args) => supervise(&args),
        Err(e) => {
            eprintln!("lease: error: the command's supervisor: {e}");
            EXIT_USAGE
        }
    }
}

fn supervise(args: &Args) -> u8 {
    let (parent, deadline_file) = (args.parent, args.deadline_file.as_deref());
    // The handlers first: from here on, the signals `lease run` sends the group leave the shim
    // alone, and a kill request or a child's exit wakes it (a byte on `wake`).
    let caught = Arc::new(AtomicBool::new(false));
    let handled = [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]
    .into_iter()
    .all(|sig| signal_hook::flag::register(sig, Arc::clone(&caught)).is_ok());
    let Some(wake) = handled.then(wake_on_signals).and_then(Result::ok) else {
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
    if !parent_is(parent) {
        eprintln!("lease: error: lease run (pid {parent}) is gone; not starting the command");
        return EXIT_LOST;
    }
    let Some((program, rest)) = args.command.split_first() else {
        eprintln!("lease: error: missing command after --");
        return EXIT_USAGE;
    };
    // Set up, wait for the go (the lease is being claimed meanwhile).
    let (mut first_deadline, mut fence, mut session) = (args.deadline, None, None);
    if args.go_on_stdin {
        let go = wait_for_go();
        if !parent_is(parent) {
            eprintln!("lease: error: lease run (pid {parent}) is gone; not starting the command");
            return EXIT_LOST;
        }
        // No go: the lease was not claimed (`lease run` says why, if anything is to say).
        let Some(go) = go else { return EXIT_LOST };
        // CMD's standard input in place of the go socket (which this closes).
        if let Err(e) = rustix::stdio::dup2_stdin(&go.stdin) {
            eprintln!("lease: error: cannot restore the command's standard input: {e}");
            return EXIT_STORE;
        }
        first_deadline = Some(go.deadline);
        fence = Some(go.fence);
        session = go.session;
    }
    // The window, checked once more right before CMD starts.
    let clock = SystemClock::new();
    let first = match (first_deadline, deadline_file) {
        (Some(at), _) => Some(at),
        (None, Some(file)) => Some(deadline::read(file).unwrap_or(Timestamp::ZERO)),
        (None, None) => None,
    };
    let mut deadline = match first {
        None => Timestamp::MAX,
        Some(at) if clock.now() < at => at,
        Some(_) => {
            eprintln!("lease: error: the lease's window has ended; not starting the command");
            return EXIT_LOST;
        }
    };
    let mut command = std::process::Command::new(program);
    command.args(rest);
    if let Some(fence) = &fence {
        command.env("LEASE_FENCE", fence);
    }
    // Received without close-on-exec: CMD inherits it (and the shim holds it until it exits).
    if let Some(session) = &session {
        command.env("LEASE_SESSION_FD", session.as_raw_fd().to_string());
    }
    let child = match command.spawn() {
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
    // This thread owns every wait of this process (std's handle is not used to wait).
    drop(child);
    let targets = Targets {
        me: rustix::process::getpid().as_raw_nonzero().get(),
        group: rustix::process::getpgrp().as_raw_nonzero().get(),
        spare_children_in: None,
        spare: None,
    };
    // Until CMD's main process exits, a kill is requested (the parent died) or the deadline
    // passes, wait for a signal or the deadline; from then on, take the tree apart.
    let mut status = None;
    loop {
        match reap_exited(main_pid, &mut status) {
            Reaped::NoChildLeft => return status.map_or(EXIT_STORE, status_code),
            Reaped::SomeLeft if status.is_some() => break,
            Reaped::SomeLeft => {}
        }
        // The timeout runs on CLOCK_MONOTONIC, which stops during suspend while the
        // deadline's clock does not: the deadline is judged on its clock on waking.
        sleep_until_woken(&wake, deadline.saturating_duration_since(clock.now()));
        if !parent_is(parent) {
            // The parent-death signal, unless CMD signalled its own group with SIGUSR1: only a
            // parent that is really gone counts.
            eprintln!(
                "lease: error: lease run (pid {parent}) died; killing the command's processes"
            );
            break;
        }
        if clock.now() < deadline {
            continue;
        }
        match deadline_file.and_then(deadline::read) {
            Some(at) if clock.now() < at => deadline = at,
            _ => {
                // `lease run` did not renew in time and did not stop the tree (it is stopped
                // or starved): the window is about to end.
                eprintln!(
                    "lease: error: lease run (pid {parent}) did not renew the lease in time; \
                     killing the command's processes before the lease expires"
                );
                break;
            }
        }
    }
    kill_targets(targets);
    take_apart(main_pid, targets, status).map_or(EXIT_STORE, status_code)
}

/// The go from `lease run`: the lease is claimed, CMD may start.
#[derive(Debug)]
struct Go {
    /// The first kill deadline (ns on `CLOCK_BOOTTIME`).
    deadline: Timestamp,
    /// The lease's generation, CMD's `LEASE_FENCE`.
    fence: String,
    /// `lease run`'s standard input, CMD's.
    stdin: OwnedFd,
    /// The holder session's lock (SQLite), for the tree to hold.
    session: Option<OwnedFd>,
}

/// Waits for the go on standard input (a `SOCK_SEQPACKET` socket): one message, `NANOS FENCE`
/// and a newline, carrying CMD's standard input and, for SQLite, the holder session's lock.
/// `None` when the socket closes without one (`lease run` did not get the lease, or died), or
/// the message is not a go.
fn wait_for_go() -> Option<Go> {
    let mut message = [0_u8; 128];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        let mut iov = [io::IoSliceMut::new(&mut message)];
        match rustix::net::recvmsg(
            rustix::stdio::stdin(),
            &mut iov,
            &mut control,
            RecvFlags::empty(),
        ) {
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
            Ok(received) => break received,
        }
    };
    // Owned from here on: closed on every way out.
    let mut fds = Vec::new();
    for item in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = item {
            fds.extend(rights);
        }
    }
    let cut = ReturnFlags::TRUNC | ReturnFlags::CTRUNC;
    if received.flags.intersects(cut) {
        return None;
    }
    let (deadline, fence) = parse_go(message.get(..received.bytes)?)?;
    let mut fds = fds.into_iter();
    let stdin = fds.next()?;
    let session = fds.next();
    Some(Go {
        deadline,
        fence,
        stdin,
        session,
    })
}

/// Parses a go message (a whole line, ending with a newline): the first deadline and the fence.
fn parse_go(message: &[u8]) -> Option<(Timestamp, String)> {
    let line = std::str::from_utf8(message).ok()?.strip_suffix('\n')?;
    let (deadline, fence) = line.split_once(' ')?;
    let deadline = Timestamp::from_nanos(deadline.parse::<u64>().ok()?);
    let fence =
        (!fence.is_empty() && fence.bytes().all(|b| b.is_ascii_digit())).then_some(fence)?;
    Some((deadline, fence.to_owned()))
}

/// Whether the shim's parent is still `parent` (`lease run`).
fn parent_is(parent: i32) -> bool {
    rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) == Some(parent)
}

/// A socket that receives a byte at each SIGUSR1 (the parent-death signal) and SIGCHLD (a
/// child exited), so that one thread can wait for both, and for a deadline.
fn wake_on_signals() -> io::Result<UnixStream> {
    let (wake, notify) = UnixStream::pair()?;
    for sig in [signal_hook::consts::SIGUSR1, signal_hook::consts::SIGCHLD] {
        signal_hook::low_level::pipe::register(sig, notify.try_clone()?)?;
    }
    Ok(wake)
}

/// Waits until `wake` has bytes (which it takes), at most `limit`. An interruption or an
/// error wakes the caller as a byte would: it checks everything again. Bytes left unread (more
/// than one read takes) only wake it once more.
fn sleep_until_woken(wake: &UnixStream, limit: Duration) {
    // A zero timeout would mean none.
    let _ = wake.set_read_timeout(Some(limit.max(Duration::from_micros(1))));
    let mut buf = [0_u8; 64];
    let _ = (&*wake).read(&mut buf);
}

/// What [`reap_exited`] left.
enum Reaped {
    /// No child at all: as a subreaper, no descendant either.
    NoChildLeft,
    /// Children that have not exited yet.
    SomeLeft,
}

/// Reaps every child that has exited, without waiting; CMD's status goes to `status`.
fn reap_exited(main_pid: i32, status: &mut Option<rustix::process::WaitStatus>) -> Reaped {
    loop {
        match rustix::process::waitpid(None, WaitOptions::NOHANG) {
            Ok(Some((pid, st))) => {
                if pid.as_raw_nonzero().get() == main_pid {
                    *status = Some(st);
                }
            }
            Ok(None) => return Reaped::SomeLeft,
            Err(rustix::io::Errno::INTR) => {}
            // ECHILD, or an error that waiting again would not cure.
            Err(_) => return Reaped::NoChildLeft,
        }
    }
}

/// Reaps every child until none is left, killing the rest of the tree after each reap: what
/// CMD left behind, or the whole tree on a kill request. Returns CMD's status (`status` when
/// it was reaped already).
fn take_apart(
    main_pid: i32,
    targets: Targets,
    mut status: Option<rustix::process::WaitStatus>,
) -> Option<rustix::process::WaitStatus> {
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, st))) => {
                if pid.as_raw_nonzero().get() == main_pid {
                    status = Some(st);
                }
            }
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            // ECHILD: as a subreaper, no child means no descendant.
            Err(_) => return status,
        }
        kill_targets(targets);
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

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn arguments_are_those_lease_run_writes() {
        assert_eq!(
            parse(&[
                "--parent",
                "42",
                "--deadline",
                "9000",
                "--deadline-file",
                "/d",
                "--",
                "sh",
                "-c",
                "x"
            ]),
            Ok(Args {
                parent: 42,
                deadline: Some(Timestamp::from_nanos(9000)),
                deadline_file: Some(PathBuf::from("/d")),
                go_on_stdin: false,
                command: ["sh", "-c", "x"].map(OsString::from).to_vec(),
            })
        );
        // Everything after -- is the command's, options included.
        assert_eq!(
            parse(&["--parent", "7", "--", "true", "--parent"]).map(|a| a.command.len()),
            Ok(2)
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for args in [
            &["--", "true"][..],
            &["--parent", "0", "--", "true"],
            &["--parent", "x", "--", "true"],
            &["--parent"],
            &["--parent", "7"],
            &["--parent", "7", "--"],
            &["--parent", "7", "--other", "--", "true"],
            &["--parent", "7", "true"],
            &["--parent", "7", "--deadline", "-1", "--", "true"],
            &["--parent", "7", "--deadline", "--", "true"],
            &["--parent", "7", "--go-on-stdin", "1", "--", "true"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn a_go_is_one_whole_line() {
        assert_eq!(
            parse_go(b"9000 17\n"),
            Some((Timestamp::from_nanos(9000), "17".to_owned()))
        );
        for message in [
            &b""[..],
            b"9000 17",
            b"9000\n",
            b"9000 \n",
            b"x 17\n",
            b"9000 1 7\n",
            b"-1 17\n",
            b"9000 17\nmore",
        ] {
            assert_eq!(parse_go(message), None, "{message:?}");
        }
    }
}
