//! `lease run` starts the shim before the claim, and the shim starts the command only on a
//! go sent once the lease is claimed: without one (the lease is held, `lease run` dies while it
//! waits, the shim dies before the go), the command never runs and no process is left behind.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// The pids of the live shims started by `lease run` `parent` (their command line has
/// `--parent PARENT`).
fn shims_of(parent: u32) -> Vec<u32> {
    let parent = parent.to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| {
                let args: Vec<&[u8]> = line.split(|&b| b == 0).collect();
                args.windows(2)
                    .any(|w| w[0] == b"--parent" && w[1] == parent.as_bytes())
            })
        })
        .filter(|&pid| !process_gone(pid))
        .collect()
}

/// Starts a first holder of `job` in `d`, whose command runs until `d/stop` exists.
fn hold(d: &Path) -> Child {
    let p = path_str(d);
    let script = format!("touch {p}/ready; while [ ! -e {p}/stop ]; do sleep 0.02; done");
    let mut holder = lease(d);
    holder
        .args(["run", "-l", "job", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    spawn_until_ready(holder, d, "the holder never started")
}

/// Ends the first holder and waits for it (it releases the lease).
fn stop(d: &Path, holder: Child) {
    std::fs::write(d.join("stop"), "").unwrap();
    let (code, _, err) = decode(&wait_output(holder, PATIENCE));
    assert_eq!(code, 0, "{err}");
}

/// `lease run --wait -l job -- touch d/marker`, waiting behind the holder; returns it once
/// its shim is up (started before the claim, waiting for the go).
fn waiting_run(d: &Path) -> (Child, u32) {
    let marker = path_str(&d.join("marker"));
    let run = lease(d)
        .args(["run", "--wait", "-l", "job", "--", "touch", &marker])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = run.id();
    let mut shims = Vec::new();
    assert!(
        eventually(PATIENCE, || {
            shims = shims_of(pid);
            !shims.is_empty()
        }),
        "no shim waits while lease run waits for the lease"
    );
    assert_eq!(shims.len(), 1, "{shims:?}");
    (run, shims[0])
}

#[test]
fn a_held_lease_runs_nothing_and_leaves_no_shim() {
    let dir = tempdir();
    let d = dir.path();
    let holder = hold(d);
    let marker = d.join("marker");
    let run = lease(d)
        .args(["run", "-l", "job", "--", "touch", &path_str(&marker)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = run.id();
    let (code, out, err) = decode(&wait_output(run, PATIENCE));
    assert_eq!(code, 1, "{out} {err}");
    // Only `lease run`'s own message: the shim, stopped without a go, says nothing.
    assert_one_error_line(&err, "job");
    assert!(!marker.exists(), "the command ran without the lease");
    // Reaped before `lease run` returned.
    assert_eq!(
        shims_of(pid),
        Vec::<u32>::new(),
        "a shim outlived lease run"
    );
    stop(d, holder);
    assert!(!marker.exists(), "the command ran without the lease");
}

#[test]
fn a_sigkilled_waiting_lease_run_takes_its_waiting_shim_with_it() {
    let dir = tempdir();
    let d = dir.path();
    let holder = hold(d);
    let (mut run, shim) = waiting_run(d);
    // Stopped, it sends no go: the shim just waits.
    signal(run.id(), "-STOP");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !process_gone(shim),
        "the shim gave up while lease run was stopped"
    );
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    assert!(
        eventually(PATIENCE, || process_gone(shim)),
        "the shim outlived lease run"
    );
    // The lease becomes free: nothing may start the command now.
    stop(d, holder);
    let (code, _, err) = lease_args(d, &["run", "-l", "job", "--", "true"]);
    assert_eq!(code, 0, "{err}");
    assert!(!d.join("marker").exists(), "the command ran without a go");
}

#[test]
fn a_shim_killed_before_the_go_fails_the_run_and_frees_the_lease() {
    let dir = tempdir();
    let d = dir.path();
    let holder = hold(d);
    let (run, shim) = waiting_run(d);
    signal(shim, "-KILL");
    // The lease comes free; lease run claims it, finds its shim gone, and gives it back.
    stop(d, holder);
    let (code, _, err) = decode(&wait_output(run, PATIENCE));
    assert_eq!(code, 127, "{err}");
    assert_one_error_line(&err, "supervisor is gone");
    assert!(!d.join("marker").exists(), "the command ran without a shim");
    let (code, _, err) = lease_args(d, &["run", "-l", "job", "--", "true"]);
    assert_eq!(code, 0, "the lease was not given back: {err}");
}
