//! `lease run`: hold a lease while a command runs, and the `__exec-child` shim that makes the
//! command die with `lease run`.
//!
//! # Why a shim
//!
//! The command must not outlive `lease run` unprotected: if `lease run` dies (even by SIGKILL,
//! which it cannot catch), nobody renews the lease any more and another holder may take it
//! while the command still works. Linux's parent-death signal (`PR_SET_PDEATHSIG`) covers
//! that, but it must be set *in the child* between `fork` and `exec`, which in Rust needs
//! `CommandExt::pre_exec`, an `unsafe` function; this workspace forbids `unsafe`. So `lease run`
//! starts its own binary again as `lease __exec-child --parent PID -- CMD…`. The shim calls
//! rustix's safe `set_parent_process_death_signal(SIGKILL)` on itself, checks that its parent
//! is still `PID` (if `lease run` died before the signal was armed, the shim was re-parented
//! and exits instead), and then replaces itself with CMD through `CommandExt::exec` (safe). The
//! parent-death signal survives `exec`, so CMD runs with it armed, with the pid `lease run`
//! knows. (Linux clears it only for set-user-id or set-group-id programs and on capability
//! changes.)
//!
//! The kernel fires the signal when the *thread* that forked the child ends, so `lease run`
//! spawns from its main thread (a current-thread tokio runtime), which lives as long as the
//! process.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::ExitStatus;
use std::time::Duration;

use lease_core::{Info, Key, Manager as _, Request, Store, Timestamp};
use rustix::process::{Pid, Signal};
use tokio::signal::unix::{SignalKind, signal};

use crate::backend::{self, StoreSpec};
use crate::cli::RunArgs;
use crate::error::{CliError, EXIT_CANNOT_EXEC, EXIT_LOST, EXIT_STORE, chain};
use crate::human::{default_holder, format_duration};

/// How often a claim that failed transiently (a busy database, an API hiccup) is retried
/// before giving up, when not waiting.
const CLAIM_ATTEMPTS: u32 = 5;
/// The pause between such attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// `lease run`.
pub(crate) async fn run(spec: &StoreSpec, args: RunArgs) -> Result<u8, CliError> {
    let key = args.lease.key();
    let pid = std::process::id();
    let holder = args.holder.clone().unwrap_or_else(|| default_holder(pid));
    let program = args.command[0].to_string_lossy().into_owned();
    let request = Request::new(holder.clone(), args.ttl)
        .with_metadata(serde_json::json!({"pid": pid, "command": program}));
    let clock = backend::clock();
    let mut store = backend::open(spec).await?;

    let (info, mut window_end) = acquire(spec, store.as_mut(), &key, &request, &args).await?;
    let generation = info.generation;

    let exe = std::env::current_exe().map_err(|e| {
        CliError::store(format!(
            "cannot find the lease executable to start CMD: {e}"
        ))
    })?;
    // Catch the signals to pass on before CMD exists, so none is missed.
    let mut terms = signal(SignalKind::terminate()).ok();
    let mut ints = signal(SignalKind::interrupt()).ok();
    let mut hups = signal(SignalKind::hangup()).ok();
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("__exec-child")
        .arg("--parent")
        .arg(pid.to_string())
        .arg("--")
        .args(&args.command)
        .env("LEASE_HOLDER", &holder)
        .env("LEASE_FENCE", generation.to_string());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            release(store.as_mut(), &key, &holder).await;
            return Err(CliError::new(
                EXIT_CANNOT_EXEC,
                format!("cannot start {program:?}: {e}"),
            ));
        }
    };
    let child_pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);

    let renew_every = (args.ttl / 3).max(Duration::from_millis(10));
    let mut next_renew = clock.now().saturating_add(renew_every);
    let extend_request = Request::new(holder.clone(), args.ttl);

    let lost: String = loop {
        let forward = |sig: Signal| {
            if let Some(p) = child_pid {
                let _ = rustix::process::kill_process(p, sig);
            }
        };
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| CliError::store(format!("waiting for {program:?}: {e}")))?;
                release(store.as_mut(), &key, &holder).await;
                return Ok(exit_code(status));
            }
            () = clock.sleep_until(next_renew.min(window_end)) => {
                if clock.now() < next_renew {
                    // The window ended before a renewal succeeded.
                    break format!("could not renew it before it expired (ttl {})", format_duration(args.ttl));
                }
                let started = clock.now();
                match store.extend_lease(&key, &extend_request).await {
                    Ok(info) if info.holder == holder && info.generation == generation => {
                        window_end = window_end.max(started.saturating_add(args.ttl));
                        next_renew = started.saturating_add(renew_every);
                    }
                    Ok(info) => break format!("it was taken over by {} (generation {})", info.holder, info.generation),
                    Err(e) if e.is_invalid() || e.is_not_held() || e.is_held() => {
                        break "it was revoked, expired or taken by another holder".to_owned();
                    }
                    Err(e) => {
                        eprintln!("lease: warning: renewing lease {key}: {}", chain(&e));
                        next_renew = clock.now().saturating_add(RETRY_PAUSE.min(renew_every));
                    }
                }
                if clock.now() >= window_end {
                    break format!("could not renew it before it expired (ttl {})", format_duration(args.ttl));
                }
            }
            Some(()) = recv(&mut terms) => forward(Signal::TERM),
            Some(()) = recv(&mut ints) => forward(Signal::INT),
            Some(()) = recv(&mut hups) => forward(Signal::HUP),
        }
    };

    eprintln!(
        "lease: error: lost lease {key} (generation {generation}): {lost}; stopping {program:?} with SIGTERM"
    );
    if let Some(p) = child_pid {
        let _ = rustix::process::kill_process(p, Signal::TERM);
    }
    if tokio::time::timeout(args.kill_after, child.wait())
        .await
        .is_err()
    {
        eprintln!(
            "lease: error: {program:?} still running {} after SIGTERM; sending SIGKILL",
            format_duration(args.kill_after)
        );
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    Ok(EXIT_LOST)
}

async fn recv(signals: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signals {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Claims the lease: at once, or (with `--wait`) when it frees up, within `--timeout`.
async fn acquire(
    spec: &StoreSpec,
    store: &mut dyn Store,
    key: &Key,
    request: &Request,
    args: &RunArgs,
) -> Result<(Info, Timestamp), CliError> {
    let clock = backend::clock();
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut manager = None;
    let mut transient = 0;
    let result = loop {
        let started = clock.now();
        let err = match store.claim_lease(key, request).await {
            Ok(info) => break Ok((info, started.saturating_add(request.duration))),
            Err(e) => e,
        };
        if err.is_held() || err.is_invalid() {
            let holder = current_holder(store, key).await;
            if holder.as_ref().is_some_and(|(h, _)| *h == request.holder) {
                break Err(CliError::held(format!(
                    "lease {key} is already held by {} (this holder); refusing to hold it twice",
                    request.holder
                )));
            }
            if !args.wait {
                break Err(CliError::held(format!(
                    "lease {key} is {}",
                    describe(holder.as_ref())
                )));
            }
            if manager.is_none() {
                let waiter_store = backend::open(spec).await?;
                manager = Some(backend::start_manager(waiter_store, None)?);
            }
            let Some(m) = manager.as_ref() else {
                continue;
            };
            let claimer = m
                .claimer(&key.namespace, &key.model)
                .map_err(|e| CliError::lease("", &e))?;
            let cancel = lease_core::CancellationToken::new();
            let waiting = claimer.wait_until_expired(&key.lease, &cancel);
            let waited = match deadline {
                Some(d) => tokio::time::timeout_at(d, waiting).await.ok(),
                None => Some(waiting.await),
            };
            match waited {
                None => {
                    break Err(CliError::held(format!(
                        "timed out after {} waiting for lease {key}, {}",
                        format_duration(args.timeout.unwrap_or_default()),
                        describe(current_holder(store, key).await.as_ref())
                    )));
                }
                Some(Err(e)) => {
                    break Err(CliError::lease(&format!("waiting for lease {key}"), &e));
                }
                // Freed: claim again (a rival may win; then wait again). A short pause keeps a
                // store that still sees the old holder from spinning.
                Some(Ok(())) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        } else if err.is_timeout() && (args.wait || transient + 1 < CLAIM_ATTEMPTS) {
            transient += 1;
            if deadline.is_some_and(|d| tokio::time::Instant::now() + RETRY_PAUSE > d) {
                break Err(CliError::lease(&format!("claiming lease {key}"), &err));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        } else {
            break Err(CliError::lease(&format!("claiming lease {key}"), &err));
        }
    };
    if let Some(m) = manager {
        m.stop().await;
    }
    result
}

async fn current_holder(store: &mut dyn Store, key: &Key) -> Option<(String, Info)> {
    let map = store.leases(std::slice::from_ref(key)).await.ok()?;
    map.get(key).map(|i| (i.holder.clone(), i.clone()))
}

fn describe(holder: Option<&(String, Info)>) -> String {
    match holder {
        Some((h, info)) => format!(
            "held by {h} (generation {}, expires in {})",
            info.generation,
            format_duration(
                info.expiry
                    .saturating_duration_since(backend::clock().now())
            )
        ),
        None => "held by another holder".to_owned(),
    }
}

/// Releases the lease at the end; a failure is reported but does not change the exit code
/// (the lease then expires on its own).
async fn release(store: &mut dyn Store, key: &Key, holder: &str) {
    match store.revoke_lease(key, holder).await {
        Ok(()) => {}
        Err(e) if e.is_invalid() || e.is_not_held() => {}
        Err(e) => eprintln!(
            "lease: warning: releasing lease {key}: {} (it expires on its own)",
            chain(&e)
        ),
    }
}

/// The exit code of `lease run` for CMD's status: its code, or 128+N for signal N.
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(EXIT_STORE);
    }
    match status.signal() {
        Some(sig) => u8::try_from((128 + sig) & 0xff).unwrap_or(EXIT_STORE),
        None => EXIT_STORE,
    }
}

/// `lease __exec-child`: arm the parent-death signal, check the parent, exec CMD. Returns only
/// on failure, with the exit code.
pub(crate) fn exec_child(parent: i32, command: &[OsString]) -> u8 {
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        eprintln!("lease: error: cannot set the parent-death signal: {e}");
        return EXIT_STORE;
    }
    // If `lease run` died before the signal was armed, we were re-parented: do not run CMD.
    let ppid = rustix::process::getppid().map(Pid::as_raw_nonzero);
    if ppid.map(std::num::NonZeroI32::get) != Some(parent) {
        eprintln!("lease: error: lease run (pid {parent}) is gone; not starting the command");
        return EXIT_LOST;
    }
    let Some((program, rest)) = command.split_first() else {
        eprintln!("lease: error: missing command after --");
        return crate::error::EXIT_USAGE;
    };
    let err = std::process::Command::new(program).args(rest).exec();
    eprintln!(
        "lease: error: cannot run {:?}: {err}",
        program.to_string_lossy()
    );
    if err.kind() == std::io::ErrorKind::PermissionDenied {
        126
    } else {
        EXIT_CANNOT_EXEC
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
