//! Death-aware leases through `lease run` on SQLite: the command's tree inherits the holder
//! session's lock, so a SIGKILLed `lease run` (and shim) does not free the lease while its
//! command or a grandchild still runs; once the last of them is gone, the next `lease run`
//! gets the lease at once, long before its expiry.

mod common;
mod run_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use run_support::*;

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// `lease run -l job -- true`: its exit code (0: it got the lease; 1: held).
fn try_run(d: &std::path::Path) -> i32 {
    let out = lease(d)
        .args(["run", "-l", "job", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    out.code().unwrap_or(-1)
}

/// Starts `lease run -l job --ttl 120s -- sh -c SCRIPT` in `d` and waits until the script has
/// touched `d/ready`.
fn run_holding(d: &std::path::Path, script: &str) -> std::process::Child {
    let mut run = lease(d);
    run.args([
        "run", "-l", "job", "--ttl", "120s", "--", "sh", "-c", script,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    spawn_until_ready(run, d, "never started")
}

#[test]
fn the_lease_outlives_a_sigkilled_lease_run_until_its_last_process_is_gone() {
    let dir = tempdir();
    let d = dir.path();
    let _cleanup = Cleanup(d);
    let p = path_str(d);
    // The command records its shim (its parent), itself and a grandchild. It ignores SIGHUP
    // (inherited by the grandchild): its process group, orphaned with a stopped member when
    // `lease run` dies below, gets one from the kernel.
    let script = format!(
        "trap '' HUP\n\
         echo $PPID > {p}/shim\n\
         sleep 300 & echo $! > {p}/grandchild\n\
         echo $$ > {p}/command\n\
         touch {p}/ready\n\
         wait\n"
    );
    let mut run = run_holding(d, &script);
    let read = |name: &str| -> u32 {
        std::fs::read_to_string(d.join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (shim, command, grandchild) = (read("shim"), read("command"), read("grandchild"));
    // Leave only the command and its grandchild, holding the inherited session lock: stop
    // `lease run` and the shim (neither can then kill the tree), SIGKILL the shim (its
    // children go to the stopped `lease run`, a subreaper), then `lease run` (they go to init).
    // Killing `lease run` first would orphan a group with the stopped shim in it, and the
    // kernel's SIGCONT would let the shim kill the tree.
    let stat = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = |pid: u32| {
        stat(pid)
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
    };
    let supervisor = run.id();
    for pid in [supervisor, shim] {
        signal(pid, "-STOP");
        // A stop takes effect asynchronously: wait for it.
        assert!(
            eventually(PATIENCE, || state(pid) == Some('T')),
            "{pid} never stopped"
        );
    }
    signal(shim, "-KILL");
    assert!(
        eventually(PATIENCE, || process_gone(shim)),
        "the shim lives"
    );
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(
        !process_gone(command) && !process_gone(grandchild),
        "command {} grandchild {}",
        stat(command),
        stat(grandchild)
    );
    assert_eq!(try_run(d), 1, "the lease was freed while its command runs");
    signal(command, "-KILL");
    assert!(eventually(PATIENCE, || process_gone(command)));
    assert!(!process_gone(grandchild));
    assert_eq!(try_run(d), 1, "the lease was freed while a grandchild runs");
    signal(grandchild, "-KILL");
    assert!(eventually(PATIENCE, || process_gone(grandchild)));
    let start = Instant::now();
    assert_eq!(try_run(d), 0, "the lease of a dead tree was not freed");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?} of a 120 s lease",
        start.elapsed()
    );
}

/// `lease wait` (a manager's waiter) hears of the holder's death through the store's change
/// notifier, with no poll: it returns within moments of the holder's tree dying, long before
/// the 120 s expiry.
#[test]
fn a_waiter_wakes_when_the_holders_tree_dies() {
    let dir = tempdir();
    let d = dir.path();
    let _cleanup = Cleanup(d);
    let p = path_str(d);
    let script = format!("echo $$ > {p}/command\ntouch {p}/ready\nexec sleep 300\n");
    let mut run = run_holding(d, &script);
    let mut wait = lease(d)
        .args(["wait", "-l", "job", "--timeout", "100s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Give the waiter time to find the lease held (and start watching its holder).
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        wait.try_wait().unwrap().is_none(),
        "the waiter returned while the lease is held"
    );
    let killed = Instant::now();
    run.kill().unwrap(); // its shim then kills the tree
    run.wait().unwrap();
    let code = wait_code(wait, Duration::from_secs(60));
    assert_eq!(code, 0, "lease wait failed");
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "woken after {took:?} of a 120 s lease"
    );
    eprintln!("lease wait returned {took:?} after the kill");
}
