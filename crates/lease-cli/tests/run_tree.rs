//! `lease run` owns the command's whole process tree: background jobs and double-forked
//! daemons die with it when `lease run` is SIGKILLed, and when the command's main process
//! exits leaving them behind (nothing outlives the release of the lease).

mod common;
mod run_support;

use std::process::Stdio;

use common::*;
use run_support::*;

/// The shell of the issue (`sh -c 'sleep 300 & sleep 301 & wait'`), plus a double-forked
/// daemon in its own session, each recording its pid.
fn spreading_command(dir: &std::path::Path) -> String {
    let d = path_str(dir);
    format!(
        "echo $$ >> {d}/pids\n\
         sleep 300 & echo $! >> {d}/pids\n\
         sleep 301 & echo $! >> {d}/pids\n\
         (setsid sh -c 'echo $$ >> {d}/pids; exec sleep 302' &)\n\
         while [ $(wc -l < {d}/pids) -lt 4 ]; do sleep 0.01; done\n\
         touch {d}/ready\n\
         wait\n"
    )
}

#[test]
fn a_sigkilled_lease_run_leaves_no_process_of_the_tree() {
    let dir = tempdir();
    let d = dir.path();
    let _cleanup = Cleanup(d);
    let mut cmd = lease(d);
    cmd.args(["run", "-l", "job", "--", "sh", "-c", &spreading_command(d)])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawn_until_ready(cmd, d, "the command never started");
    let pids = tree_pids(d);
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(pids.iter().all(|&p| !process_gone(p)));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        eventually(PATIENCE, || pids.iter().all(|&p| process_gone(p))),
        "processes of the tree outlived `lease run`: {:?}",
        pids.iter()
            .filter(|&&p| !process_gone(p))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_sigkilled_lease_run_stops_a_tree_that_ignores_sigterm() {
    let dir = tempdir();
    let d = dir.path();
    let _cleanup = Cleanup(d);
    let mut cmd = lease(d);
    cmd.args(["run", "-l", "job", "--", "sh", "-c", &stubborn_tree(d)])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawn_until_ready(cmd, d, "the command never started");
    let pids = tree_pids(d);
    assert_eq!(pids.len(), 3, "{pids:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(PATIENCE, || pids.iter().all(|&p| process_gone(p))),
        "processes of the tree outlived `lease run`: {:?}",
        pids.iter()
            .filter(|&&p| !process_gone(p))
            .collect::<Vec<_>>()
    );
}

/// A command whose main process records its supervisor's command line, then exits at once
/// with status 4, leaving a background job and a daemon.
fn leaving_command(dir: &std::path::Path) -> String {
    let p = path_str(dir);
    format!(
        "tr '\\0' ' ' < /proc/$PPID/cmdline > {p}/supervisor\n\
         echo $$ >> {p}/pids\n\
         sleep 300 & echo $! >> {p}/pids\n\
         (setsid sh -c 'trap \"\" TERM; echo $$ >> {p}/pids; exec sleep 302' &)\n\
         while [ $(wc -l < {p}/pids) -lt 3 ]; do sleep 0.01; done\n\
         exit 4\n"
    )
}

#[test]
fn the_rest_of_the_tree_dies_when_the_command_exits() {
    let dir = tempdir();
    let d = dir.path();
    let _cleanup = Cleanup(d);
    let script = leaving_command(d);
    let (code, _, err) = lease_args(d, &["run", "-l", "job", "--", "sh", "-c", &script]);
    assert_eq!(code, 4, "{err}");
    // The small shim binary beside `lease` supervised it.
    let supervisor = std::fs::read_to_string(d.join("supervisor")).unwrap();
    assert!(
        supervisor.starts_with(env!("CARGO_BIN_EXE_lease-run-shim")),
        "{supervisor}"
    );
    let pids = tree_pids(d);
    assert_eq!(pids.len(), 3, "{pids:?}");
    // Already gone when `lease run` returns: it released the lease only after that.
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| !process_gone(p)).collect();
    assert!(
        alive.is_empty(),
        "processes outlived the command and the release of the lease: {alive:?}"
    );
}

#[test]
fn the_command_may_signal_its_own_group_with_sigusr1() {
    let dir = tempdir();
    let d = dir.path();
    let _cleanup = Cleanup(d);
    let p = path_str(d);
    // SIGUSR1 is the supervisor's parent-death signal; from CMD it must not kill the tree.
    let script = format!(
        "trap 'echo usr1 >> {p}/got' USR1\n\
         sh -c \"trap '' USR1; echo \\$\\$ >> {p}/pids; exec sleep 300\" &\n\
         while [ ! -s {p}/pids ]; do sleep 0.01; done\n\
         kill -USR1 0\n\
         sleep 0.3\n\
         kill -0 $(cat {p}/pids) && echo bg-alive\n\
         kill $(cat {p}/pids)\n"
    );
    let (code, out, err) = lease_args(d, &["run", "-l", "job", "--", "sh", "-c", &script]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "bg-alive", "{err}");
    assert_eq!(
        std::fs::read_to_string(d.join("got")).unwrap().trim(),
        "usr1"
    );
}

#[test]
fn without_the_shim_binary_lease_supervises_the_tree_itself() {
    let dir = tempdir();
    let d = dir.path();
    let _cleanup = Cleanup(d);
    // `lease` alone in a directory, without `lease-run-shim` beside it.
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let alone = bin.join("lease");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_lease"), &alone).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_lease"), &alone).unwrap();
    }
    let mut cmd = std::process::Command::new(&alone);
    cmd.env_remove("LEASE_STORE")
        .env_remove("LEASE_HOLDER")
        .env("LEASE_DB", d.join("leases.db"))
        .current_dir(d)
        .stdin(Stdio::null())
        .args(["run", "-l", "job", "--", "sh", "-c", &leaving_command(d)]);
    let (code, _, err) = run(cmd);
    assert_eq!(code, 4, "{err}");
    let supervisor = std::fs::read_to_string(d.join("supervisor")).unwrap();
    assert!(
        supervisor.starts_with(&format!("{} __exec-child --parent ", alone.display())),
        "{supervisor}"
    );
    let pids = tree_pids(d);
    assert_eq!(pids.len(), 3, "{pids:?}");
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| !process_gone(p)).collect();
    assert!(
        alive.is_empty(),
        "processes outlived the command and the release of the lease: {alive:?}"
    );
}
