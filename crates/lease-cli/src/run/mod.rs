//! `lease run`: hold a lease while a command runs, and never let the command (its whole
//! process tree) outlive the lease.
//!
//! The parts, each in its own module:
//!
//! - [`claim`]: the claim, at once or with `--wait`, recognising this holder's own claim when
//!   the call's answer was lost;
//! - [`timing`]: the window and the deadlines (`--ttl`, `--renew-deadline`, `--kill-after`);
//! - [`tree`]: starting the shim that supervises the command's process tree (a process
//!   group, a subreaper, a catchable parent-death signal: [`crate::supervisor`]) and the
//!   sweeps that kill the tree when the shim itself was killed;
//! - [`renew`]: the renewals, on a thread of their own;
//! - [`watchdog`]: the clock, on a thread of its own: SIGTERM when the lease is lost, SIGKILL
//!   before the window ends;
//! - [`deadline`]: the kill deadline shared with the shim, which enforces it on its own when
//!   `lease run` is stopped or starved.
//!
//! The main thread claims, starts the shim (from the main thread: the shim's parent-death
//! signal fires when the thread that forked it ends), passes SIGTERM, SIGINT and SIGHUP on to
//! the command's group, and waits until the shim has exited and everything it left behind is
//! reaped. Only then is the lease released.

mod claim;
mod deadline;
mod renew;
mod timing;
mod tree;
mod watchdog;

use std::os::fd::AsRawFd as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lease_core::{Key, Request, Store};
use rustix::process::{Pid, Signal};
use tokio::signal::unix::{SignalKind, signal};

use crate::backend::{self, StoreSpec};
use crate::cli::RunArgs;
use crate::error::{CliError, EXIT_CANNOT_EXEC, EXIT_LOST, EXIT_STORE};
use crate::human::{default_holder, format_duration};

/// How long `lease run` waits, at most, for the release after the command is gone.
const RELEASE_WAIT: Duration = Duration::from_secs(15);

/// `lease run`.
pub(crate) async fn run(spec: &StoreSpec, args: RunArgs) -> Result<u8, CliError> {
    let timing = timing::Timing::new(args.ttl, args.renew_deadline, args.kill_after)?;
    let key = args.lease.key();
    let pid = std::process::id();
    let holder = args.holder.clone().unwrap_or_else(|| default_holder(pid));
    let program = args.command[0].to_string_lossy().into_owned();
    let request = Request::new(holder.clone(), timing.ttl)
        .with_metadata(serde_json::json!({"pid": pid, "command": program}));
    let clock = backend::clock();
    // What starting CMD needs, before the lease is taken.
    let exe = std::env::current_exe().map_err(|e| {
        CliError::store(format!(
            "cannot find the lease executable to start CMD: {e}"
        ))
    })?;
    let (mut store, session) = backend::open_with_session(spec).await?;

    let deadline = claim::wait_deadline(args.timeout);
    let claimed = loop {
        let claimed = claim::acquire(
            spec,
            store.as_mut(),
            &key,
            &request,
            args.wait,
            args.timeout,
            deadline,
        )
        .await?;
        // A claim that came back too late would be given up at once: do not start the command
        // (with --wait, give it back and try again).
        let now = clock.now();
        if now < timing.lost_at(claimed.window_start) {
            break claimed;
        }
        release(store.as_mut(), &key, &holder).await;
        let text = format!(
            "claimed lease {key}, but the store answered {} after the claim started, past \
             --renew-deadline {}: not starting {program:?}",
            format_duration(now.saturating_duration_since(claimed.window_start)),
            format_duration(timing.renew_deadline)
        );
        if !args.wait {
            return Err(CliError::store(text));
        }
        eprintln!("lease: warning: {text} yet; trying again");
    };
    let generation = claimed.info.generation;

    // The second line of defence: descendants of a shim that died come back to us. (The
    // argument is a flag: any pid sets the attribute, `None` clears it.)
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    // Catch the signals to pass on before CMD exists, so none is missed.
    let mut terms = signal(SignalKind::terminate()).ok();
    let mut ints = signal(SignalKind::interrupt()).ok();
    let mut hups = signal(SignalKind::hangup()).ok();
    // The shim enforces the window too: this deadline, then those renewals move.
    let deadline = deadline::DeadlineFile::new(
        &std::env::temp_dir(),
        timing.kill_at(claimed.window_start, None),
    );
    // The holder session's lock goes to the whole tree (see `session_lock`): the lease is not
    // freed early while any process of the command holds it, even after our own death.
    let session_lock = match session_lock(session.as_ref()) {
        Ok(fd) => fd,
        Err(e) => {
            release(store.as_mut(), &key, &holder).await;
            return Err(CliError::store(format!(
                "cannot pass the lease's holder session to {program:?}: {e}"
            )));
        }
    };
    let mut command = tree::shim_command(&exe);
    if let Some(fd) = &session_lock {
        command.env("LEASE_SESSION_FD", fd.as_raw_fd().to_string());
    }
    let spawned = command
        .arg("--parent")
        .arg(pid.to_string())
        .arg("--deadline")
        .arg(deadline.first().as_nanos().to_string())
        .arg("--deadline-file")
        .arg(deadline.path())
        .arg("--")
        .args(&args.command)
        .env("LEASE_HOLDER", &holder)
        .env("LEASE_FENCE", generation.to_string())
        .process_group(0)
        .spawn();
    // The shim has its copy; ours would only keep the session alive in later children.
    drop(session_lock);
    let mut shim = match spawned {
        Ok(child) => child,
        Err(e) => {
            release(store.as_mut(), &key, &holder).await;
            return Err(CliError::new(
                EXIT_CANNOT_EXEC,
                format!("cannot start {program:?}: {e}"),
            ));
        }
    };
    let Some(group) = i32::try_from(shim.id()).ok().and_then(Pid::from_raw) else {
        return Err(CliError::store("the command's supervisor has no valid pid"));
    };

    let lost = Arc::new(AtomicBool::new(false));
    let watchdog = watchdog::Watchdog::start(
        timing,
        claimed.window_start,
        watchdog::Watched {
            group,
            me: i32::try_from(pid).unwrap_or(0),
            lease: format!("lease {key} (generation {generation})"),
            program: program.clone(),
            deadline,
        },
        lost.clone(),
    );

    // The reaper: notes the shim's exit without reaping it (so its pid, the group's id, cannot
    // be reused while signals may still be sent to the group), then sweeps what is left.
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let ended = loop {
            match rustix::process::waitid(
                rustix::process::WaitId::Pid(group),
                rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
            ) {
                Err(rustix::io::Errno::INTR) => {}
                Ok(status) => break Some(status),
                Err(_) => break None,
            }
        };
        let exited = ended.is_some();
        // Only once the shim is gone: sweeping kills its group. A shim that returned from
        // `main` has already taken the tree apart (it returns only once it has no child left,
        // and as a subreaper that means no descendant left), so the sweep, a scan of every
        // process on the host, is needed only when the shim itself was killed.
        if ended.is_some_and(|status| !status.is_some_and(|s| s.exited())) {
            tree::sweep_after_shim(group);
        }
        let _ = gone_tx.send(exited);
    });

    let renewer = renew::Renewer::start(
        store,
        renew::Renewal {
            key: key.clone(),
            holder: holder.clone(),
            generation,
            timing,
            window_start: claimed.window_start,
        },
        watchdog.sender(),
        lost,
    )
    .map_err(|e| CliError::store(format!("cannot start the renewals: {e}")));
    let renewer = match renewer {
        Ok(r) => Some(r),
        Err(e) => {
            // Nothing renews: stop the command now rather than at the deadline.
            eprintln!("lease: error: {e}; stopping {program:?}");
            tree::kill_descendants_and_group(group, i32::try_from(pid).unwrap_or(0));
            None
        }
    };

    let exited = loop {
        let forward = |sig: Signal| {
            let _ = rustix::process::kill_process_group(group, sig);
        };
        tokio::select! {
            exited = &mut gone => break exited.unwrap_or(false),
            Some(()) = recv(&mut terms) => forward(Signal::TERM),
            Some(()) = recv(&mut ints) => forward(Signal::INT),
            Some(()) = recv(&mut hups) => forward(Signal::HUP),
        }
    };
    let (verdict, status) = if exited {
        // The tree is gone: no more signals to the group; reap the shim (its status is CMD's).
        let verdict = watchdog.finish();
        (verdict, shim.wait())
    } else {
        // Watching the shim failed (it should not): keep the watchdog until it is really gone.
        let status = shim.wait();
        tree::sweep_after_shim(group);
        (watchdog.finish(), status)
    };
    if let Some(r) = renewer {
        r.finish(RELEASE_WAIT.min(timing.ttl.max(Duration::from_secs(1))))
            .await;
    }
    if verdict.is_some() {
        return Ok(EXIT_LOST);
    }
    let status = status.map_err(|e| CliError::store(format!("waiting for {program:?}: {e}")))?;
    Ok(exit_code(status))
}

/// A descriptor of this process's holder session lock (SQLite), without close-on-exec, for the
/// shim and the command to inherit; `None` for stores without sessions.
///
/// The rule: a death-aware lease is freed before its expiry only when every process holding
/// the session's lock is gone. `lease run` holds it, and the shim, CMD and every descendant
/// inherit this descriptor, so the lease is not freed early while any of them runs, even when
/// `lease run` was SIGKILLed. A process that closes all its descriptors (a daemon that
/// daemonises by the book) drops its share: it no longer keeps the lease, but it is still part
/// of the tree that `lease run` and the shim kill when the command exits, the lease is lost or
/// `lease run` dies; only if both `lease run` and the shim are SIGKILLed could such a daemon
/// outlive the lease's early free. A command that must close descriptors can keep the one
/// named by `$LEASE_SESSION_FD`.
fn session_lock(
    session: Option<&lease_store_sqlite::SessionHandle>,
) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    session.and_then(|s| s.inheritable_lock()).transpose()
}

async fn recv(signals: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signals {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Releases the lease; a failure is reported but does not change the exit code (the lease then
/// expires on its own).
async fn release(store: &mut dyn Store, key: &Key, holder: &str) {
    match store.revoke_lease(key, holder).await {
        Ok(()) => {}
        Err(e) if e.is_invalid() || e.is_not_held() => {}
        Err(e) => eprintln!(
            "lease: warning: releasing lease {key}: {} (it expires on its own)",
            crate::error::chain(&e)
        ),
    }
}

/// The exit code of `lease run` for the shim's status, which is CMD's: its code, or 128+N for
/// signal N (the shim reports a signal death of CMD as 128+N itself).
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(EXIT_STORE);
    }
    match status.signal() {
        Some(sig) => u8::try_from((128 + sig) & 0xff).unwrap_or(EXIT_STORE),
        None => EXIT_STORE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
