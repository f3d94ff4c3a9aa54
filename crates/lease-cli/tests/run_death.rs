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
    let mut run = lease(d)
        .args([
            "run", "-l", "job", "--ttl", "120s", "--", "sh", "-c", &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(PATIENCE, || d.join("ready").exists()),
        "never started"
    );
    let read = |name: &str| -> u32 {
        std::fs::read_to_string(d.join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (shim, command, grandchild) = (read("shim"), read("command"), read("grandchild"));
    // Stop the shim so it cannot kill the tree, SIGKILL `lease run`, then the shim: only the
    // command and its grandchild are left, holding the inherited session lock.
    let stat = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = |pid: u32| {
        stat(pid)
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
    };
    signal(shim, "-STOP");
    // A stop takes effect asynchronously: wait for it, or the shim could still kill the tree.
    assert!(
        eventually(PATIENCE, || state(shim) == Some('T')),
        "the shim never stopped"
    );
    run.kill().unwrap();
    run.wait().unwrap();
    signal(shim, "-KILL");
    assert!(
        eventually(PATIENCE, || process_gone(shim)),
        "the shim lives"
    );
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
