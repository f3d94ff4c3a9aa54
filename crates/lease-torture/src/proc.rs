//! Process control without `unsafe`: SIGKILL and reap a child, wait with a time limit, and make
//! a worker die with its orchestrator.

use std::io;
use std::process::{Child, ExitStatus};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::now;

/// Asks the kernel to SIGKILL this process when its parent dies, so that no worker outlives
/// its orchestrator. Best effort.
pub fn die_with_parent() {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
}

/// Sends SIGKILL to `child` and reaps it; returns the instant (ns on `CLOCK_BOOTTIME`) at which
/// it was confirmed dead, an upper bound of when it last acted.
///
/// # Errors
///
/// When waiting for it fails.
pub fn kill9(child: &mut Child) -> io::Result<u64> {
    if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
        // It may have exited already; the wait below reaps it either way.
        let _ = rustix::process::kill_process(pid, Signal::KILL);
    }
    child.wait()?;
    Ok(now())
}

/// Waits up to `timeout` for `child` to exit.
///
/// # Errors
///
/// When polling it fails.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if started.elapsed() >= timeout {
            return Ok(None);
        }
        sleep(Duration::from_millis(20));
    }
}

/// Sleeps (the thread) until `deadline` (ns on `CLOCK_BOOTTIME`).
pub fn sleep_until(deadline: u64) {
    let now = now();
    if deadline > now {
        sleep(Duration::from_nanos(deadline - now));
    }
}
