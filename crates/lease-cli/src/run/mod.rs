//! `lease run`: hold a lease while a command runs, and never let the command (its whole
//! process tree) outlive the lease.
//!
//! The parts, each in its own module:
//!
//! - [`claim`]: the claim, at once or with `--wait`, recognising this holder's own claim when
//!   the call's answer was lost;
//! - [`timing`]: the window and the deadlines (`--ttl`, `--renew-deadline`, `--kill-after`);
//! - [`tree`]: starting the shim that supervises the command's process tree (a process
//!   group, a subreaper, a catchable parent-death signal: [`crate::supervisor`]) before the
//!   claim, the go that lets it start the command, and the sweeps that kill the tree when the
//!   shim itself was killed;
//! - [`renew`]: the renewals, on a thread of their own, started when the first one is due (a
//!   command that ends sooner, as most do, never costs the thread);
//! - [`watchdog`]: the clock, on a thread of its own: SIGTERM when the lease is lost, SIGKILL
//!   before the window ends;
//! - [`deadline`]: the kill deadline shared with the shim, which enforces it on its own when
//!   `lease run` is stopped or starved.
//!
//! The main thread opens the store, starts the shim (from the main thread: the shim's
//! parent-death signal fires when the thread that forked it ends), claims while the shim sets
//! itself up, sends the shim its go (the shim's start-up, ~1.5 ms, so overlaps the claim's I/O
//! instead of following it; without a go the shim exits and CMD never runs), passes SIGTERM,
//! SIGINT and SIGHUP on to the command's group, and waits until the shim has exited and
//! everything it left behind is reaped. Only then is the lease released.
//!
//! Each run is paid for by every job it wraps, so the main thread does its own store calls
//! where it can ([`Calls`]): the SQLite store runs a call inline when called outside a runtime,
//! and the main thread has nothing else to do while it claims (before the command starts) and
//! releases (after the tree is gone). A short command so costs two threads (main and
//! watchdog) and no hand-off between threads before or after it.

mod claim;
mod deadline;
mod inline;
mod renew;
mod timing;
mod tree;
mod watchdog;

use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lease_core::{Key, Request, Store};
use rustix::process::{Pid, Signal};
use tokio::runtime::Runtime;
use tokio::signal::unix::{SignalKind, signal};

use crate::backend::{self, StoreSpec};
use crate::cli::RunArgs;
use crate::error::{CliError, EXIT_CANNOT_EXEC, EXIT_LOST, EXIT_STORE};
use crate::human::{default_holder, format_duration};

/// How long `lease run` waits, at most, for the release after the command is gone.
const RELEASE_WAIT: Duration = Duration::from_secs(15);

/// Where `lease run` makes its own store calls (those of the renewal thread aside).
///
/// The SQLite store runs each call on a blocking thread of the runtime it is called from, and
/// inline, on the calling thread, when called outside any runtime: `lease run` calls it from
/// the main thread outside its runtime, so a claim and a release cost no thread and no
/// hand-off; each is bounded by the store's busy timeout. The other stores need the runtime.
#[derive(Clone, Copy)]
struct Calls<'a> {
    runtime: &'a Runtime,
    inline: bool,
}

impl Calls<'_> {
    fn new<'a>(spec: &StoreSpec, runtime: &'a Runtime) -> Calls<'a> {
        let inline = matches!(spec, StoreSpec::Sqlite(_) | StoreSpec::DefaultSqlite(_));
        Calls { runtime, inline }
    }

    /// Runs `call` inline or on the runtime.
    fn run<F: Future>(self, call: F) -> F::Output {
        if self.inline {
            inline::block_on(call)
        } else {
            self.runtime.block_on(call)
        }
    }

    /// Releases the lease (see [`release`]), giving up after `limit` where the call can be
    /// abandoned (an inline call is bounded by the store's busy timeout instead).
    fn release(self, store: &mut dyn Store, key: &Key, holder: &str, limit: Duration) {
        if self.inline {
            return inline::block_on(release(store, key, holder));
        }
        // The timeout is made inside the runtime, which its timer needs.
        let released = self
            .runtime
            .block_on(async { tokio::time::timeout(limit, release(store, key, holder)).await });
        if released.is_err() {
            eprintln!(
                "lease: warning: releasing lease {key}: no answer in time (it expires on its own)"
            );
        }
    }
}

/// `lease run`, on `runtime`, which it enters only where it needs it (see [`Calls`]).
pub(crate) fn run(spec: &StoreSpec, args: RunArgs, runtime: &Runtime) -> Result<u8, CliError> {
    let timing = timing::new(args.ttl, args.renew_deadline, args.kill_after)?;
    let key = args.lease.key();
    let pid = std::process::id();
    let holder = args.holder.clone().unwrap_or_else(|| default_holder(pid));
    let program = args.command[0].to_string_lossy().into_owned();
    let request = Request::new(holder.clone(), timing.ttl())
        .with_metadata(serde_json::json!({"pid": pid, "command": program}));
    let clock = backend::clock();
    // What starting CMD needs, before the lease is taken.
    let exe = std::env::current_exe().map_err(|e| {
        CliError::store(format!(
            "cannot find the lease executable to start CMD: {e}"
        ))
    })?;
    let calls = Calls::new(spec, runtime);
    let (mut store, session) = calls.run(backend::open_with_session(spec))?;

    // The shim starts now and waits for a go (see `tree`): its start-up overlaps the claim.
    // The shim enforces the window too: the first deadline (set once claimed), then those
    // renewals move through this file.
    let mut deadline =
        deadline::DeadlineFile::new(&std::env::temp_dir(), lease_core::Timestamp::ZERO);
    let mut command = tree::shim_command(&exe);
    command
        .arg("--parent")
        .arg(pid.to_string())
        .arg("--deadline-file")
        .arg(deadline.path())
        .env("LEASE_HOLDER", &holder);
    let spawned = tree::WaitingShim::spawn(command, &args.command);
    // Dropped before its go (any early return below), it stops and reaps the shim.
    let waiting_shim = spawned
        .map_err(|e| CliError::new(EXIT_CANNOT_EXEC, format!("cannot start {program:?}: {e}")))?;
    let group = waiting_shim.group();

    let waiting = claim::Waiting {
        wait: args.wait,
        timeout: args.timeout,
        deadline: claim::wait_deadline(args.timeout),
    };
    let claimed = loop {
        // The first attempt on this thread where it can be; anything but a claim goes on (to
        // retries, waiting, messages) on the runtime.
        let first = calls.inline.then(|| {
            let mut ambiguous_since = None;
            let attempt = inline::block_on(claim::try_claim(
                store.as_mut(),
                clock.as_ref(),
                &key,
                &request,
                &mut ambiguous_since,
            ));
            claim::First {
                attempt,
                ambiguous_since,
            }
        });
        let claimed = match first {
            Some(claim::First {
                attempt: claim::Attempt::Claimed(claimed),
                ..
            }) => claimed,
            first => runtime.block_on(claim::acquire(
                spec,
                store.as_mut(),
                &key,
                &request,
                &waiting,
                first,
            ))?,
        };
        // A claim that came back too late would be given up at once: do not start the command
        // (with --wait, give it back and try again).
        let now = clock.now();
        if now < timing.lost_at(claimed.window_start) {
            break claimed;
        }
        calls.release(store.as_mut(), &key, &holder, RELEASE_WAIT);
        let text = format!(
            "claimed lease {key}, but the store answered {} after the claim started, past \
             --renew-deadline {}: not starting {program:?}",
            format_duration(now.saturating_duration_since(claimed.window_start)),
            format_duration(timing.renew_deadline())
        );
        if !args.wait {
            return Err(CliError::store(text));
        }
        eprintln!("lease: warning: {text} yet; trying again");
    };
    let generation = claimed.info.generation;
    // How long the release may take once the tree is gone.
    let release_limit = RELEASE_WAIT.min(timing.ttl().max(Duration::from_secs(1)));

    // The second line of defence: descendants of a shim that died come back to us. (The
    // argument is a flag: any pid sets the attribute, `None` clears it.)
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    // Catch the signals to pass on before CMD exists, so none is missed.
    let (mut terms, mut ints, mut hups) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::hangup()).ok(),
        )
    };
    deadline.set_first(timing.kill_at(claimed.window_start, None));
    // The holder session's lock goes to the whole tree (see `session_lock`): the lease is not
    // freed early while any process of the command holds it, even after our own death.
    let session_lock = match session_lock(session.as_ref()) {
        Ok(fd) => fd,
        Err(e) => {
            calls.release(store.as_mut(), &key, &holder, release_limit);
            return Err(CliError::store(format!(
                "cannot pass the lease's holder session to {program:?}: {e}"
            )));
        }
    };
    // The go: the shim checks the window once more, then starts CMD. A shim that is gone
    // (killed before the go) is a broken pipe here: the command cannot be started.
    let went = waiting_shim.go(
        deadline.first(),
        &generation.to_string(),
        session_lock.as_ref().map(AsFd::as_fd),
    );
    // The shim has its copy; ours would only keep the session alive in later children.
    drop(session_lock);
    let mut shim = match went {
        Ok(child) => child,
        Err(e) => {
            calls.release(store.as_mut(), &key, &holder, release_limit);
            return Err(CliError::new(
                EXIT_CANNOT_EXEC,
                format!("cannot start {program:?}: its supervisor is gone ({e})"),
            ));
        }
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
    // Notes the shim's exit without reaping it (so its pid, the group's id, cannot be reused
    // while signals may still be sent to the group), then sweeps what is left.
    let mut gone = {
        let _entered = runtime.enter();
        tree::watch_exit(group)
    };

    let renewal = renew::Renewal {
        key: key.clone(),
        holder: holder.clone(),
        generation,
        timing,
        window_start: claimed.window_start,
    };
    let mut first_renewal = Some(clock.sleep_until(renewal.first_due()));
    let mut store = Some(store);
    let mut renewer = None;
    let exited = runtime.block_on(async {
        loop {
            let forward = |sig: Signal| {
                let _ = rustix::process::kill_process_group(group, sig);
            };
            tokio::select! {
                exited = &mut gone => break exited.unwrap_or(false),
                Some(()) = recv(&mut terms) => forward(Signal::TERM),
                Some(()) = recv(&mut ints) => forward(Signal::INT),
                Some(()) = recv(&mut hups) => forward(Signal::HUP),
                () = due(&mut first_renewal) => {
                    first_renewal = None;
                    let Some(store) = store.take() else { continue };
                    renewer = start_renewer(store, &renewal, &watchdog, &lost, group, &program);
                }
            }
        }
    });
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
    match (renewer, store) {
        (Some(r), _) => runtime.block_on(r.finish(release_limit)),
        (None, Some(mut store)) => calls.release(store.as_mut(), &key, &holder, release_limit),
        // The renewals could not start: the lease expires on its own.
        (None, None) => {}
    }
    if verdict.is_some() {
        return Ok(EXIT_LOST);
    }
    let status = status.map_err(|e| CliError::store(format!("waiting for {program:?}: {e}")))?;
    Ok(exit_code(status))
}

/// Starts the renewal thread, which owns `store` from now on; when it cannot start, stops the
/// command now rather than at the deadline.
fn start_renewer(
    store: Box<dyn Store>,
    renewal: &renew::Renewal,
    watchdog: &watchdog::Watchdog,
    lost: &Arc<AtomicBool>,
    group: Pid,
    program: &str,
) -> Option<renew::Renewer> {
    match renew::Renewer::start(store, renewal.clone(), watchdog.sender(), lost.clone()) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("lease: error: cannot start the renewals: {e}; stopping {program:?}");
            let me = i32::try_from(std::process::id()).unwrap_or(0);
            tree::kill_descendants_and_group(group, me);
            None
        }
    }
}

/// Completes when `sleep` does; never when there is none.
async fn due(sleep: &mut Option<lease_core::Sleep>) {
    match sleep {
        Some(s) => s.await,
        None => std::future::pending().await,
    }
}

/// A descriptor of this process's holder session lock (SQLite), without close-on-exec, for the
/// shim to hold and the command to inherit; `None` for stores without sessions.
///
/// The rule: a death-aware lease is freed before its expiry only when every process holding
/// the session's lock is gone. `lease run` holds it, the shim gets this descriptor with its go
/// (the session exists only once the claim has committed), and CMD and every descendant
/// inherit it, so the lease is not freed early while any of them runs, even when
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
