//! `lease run` stops its command, the whole process tree, inside the lease's guaranteed window:
//! renewals stalled by another process holding the SQLite write lock past the ttl, a command
//! that ignores SIGTERM and spreads (a grandchild, a double-forked daemon), and a second
//! holder waiting with `--wait`. Every process of the first tree logs signs of life; none may
//! come after the second command started.

mod common;
mod run_support;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use run_support::*;

/// Holds the database's write lock (`BEGIN IMMEDIATE`) from another connection for `hold`, as a
/// stalled or busy writer would; returns once the lock is taken.
fn stall_writes(db: &std::path::Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let db = db.to_owned();
    let (taken, wait) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        taken.send(()).unwrap();
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").unwrap();
    });
    wait.recv_timeout(PATIENCE)
        .expect("could not take the write lock");
    handle
}

/// Runs `lease ARGS` in `d` while another connection holds the database's write lock, from
/// before it starts until `hold` after it has opened the database (its claim, which comes
/// next, then waits for the lock), and returns its exit code, stdout and stderr.
///
/// Measured from the open rather than from the start, the claim's wait does not depend on how
/// long a loaded host takes to start `lease run`; `hold` stays under the store's 1 s busy
/// timeout, so the claim waits rather than fails.
fn run_with_a_late_claim(
    d: &std::path::Path,
    args: &[&str],
    hold: Duration,
) -> (i32, String, String) {
    let db = d.join("leases.db");
    let (release, released) = std::sync::mpsc::channel::<()>();
    let stall = {
        let db = db.clone();
        let (taken, wait) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            taken.send(()).unwrap();
            let _ = released.recv();
            conn.execute_batch("COMMIT").unwrap();
        });
        wait.recv_timeout(PATIENCE)
            .expect("could not take the write lock");
        handle
    };
    let mut cmd = lease(d);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let fds = format!("/proc/{}/fd", child.id());
    let opened = || {
        std::fs::read_dir(&fds).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|target| target == db))
        })
    };
    assert!(
        eventually(PATIENCE, || opened()
            || matches!(child.try_wait(), Ok(Some(_)))),
        "lease run never opened the database"
    );
    std::thread::sleep(hold);
    release.send(()).unwrap();
    stall.join().unwrap();
    decode(&wait_output(child, PATIENCE))
}

#[test]
fn stalled_renewals_stop_the_whole_tree_before_the_next_holder_starts() {
    let dir = tempdir();
    let d = dir.path();
    let _cleanup = Cleanup(d);
    let script = stubborn_tree(d);
    let mut first = lease(d);
    first
        .args(["run", "-l", "job", "--holder", "first", "--ttl", "3s"])
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        // A file, not a pipe: a surviving process of the tree would hold a pipe open.
        .stderr(std::fs::File::create(d.join("first.err")).unwrap());
    let first = spawn_until_ready(first, d, "the first command never started");
    // Renewals can no longer write: the lease expires 3 s after the last one started.
    let stall = stall_writes(&d.join("leases.db"), Duration::from_millis(4500));
    let mut second = lease(d);
    second
        .args(["run", "-l", "job", "--holder", "second", "--wait"])
        .args(["--timeout", "25s", "--", "sh", "-c", &second_holder(d)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let second = second.spawn().unwrap();
    stall.join().unwrap();

    let (code, out, err) = decode(&wait_output(second, PATIENCE));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "second-ran");
    assert_first_tree_gone_before_second(d);
    let code = wait_code(first, PATIENCE);
    let err = std::fs::read_to_string(d.join("first.err")).unwrap();
    assert_eq!(code, 3, "the first run must report the lost lease: {err}");
    assert!(err.contains("lost lease"), "{err}");
}

#[test]
fn a_stopped_lease_run_cannot_keep_its_command_past_the_window() {
    let dir = tempdir();
    let d = dir.path();
    let _cleanup = Cleanup(d);
    let script = stubborn_tree(d);
    let mut first = lease(d);
    first
        .args(["run", "-l", "job", "--holder", "first", "--ttl", "2s"])
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("first.err")).unwrap());
    let first = spawn_until_ready(first, d, "the first command never started");
    // A paused supervisor (SIGSTOP, or Ctrl-Z: the command is in another process group and
    // does not stop with it) renews nothing; the command must still be gone when the lease
    // expires.
    let pid = first.id().to_string();
    let kill = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    kill("-STOP");
    let (code, out, err) = lease_args(
        d,
        &[
            "run",
            "-l",
            "job",
            "--holder",
            "second",
            "--wait",
            "--timeout",
            "25s",
            "--",
            "sh",
            "-c",
            &second_holder(d),
        ],
    );
    kill("-CONT");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "second-ran");
    assert_first_tree_gone_before_second(d);
    let code = wait_code(first, PATIENCE);
    let err = std::fs::read_to_string(d.join("first.err")).unwrap();
    assert_eq!(code, 3, "the first run must report the lost lease: {err}");
}

#[test]
fn a_claim_that_comes_back_too_late_does_not_start_the_command() {
    let dir = tempdir();
    let d = dir.path();
    // Create the database; the claim then waits for another connection's write lock.
    let (code, _, err) = lease_args(d, &["list"]);
    assert_eq!(code, 0, "{err}");
    let marker = d.join("ran");
    let touch = format!("touch {}", path_str(&marker));
    // Renew deadline 300 ms: the claim, answered some 700 ms after it started, is given up.
    let (code, _, err) = run_with_a_late_claim(
        d,
        &[
            "run",
            "-l",
            "job",
            "--ttl",
            "3s",
            "--renew-deadline",
            "300ms",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        Duration::from_millis(700),
    );
    assert_eq!(code, 4, "{err}");
    assert_one_error_line(&err, "not starting");
    assert!(
        !marker.exists(),
        "the command ran on a claim that came back too late"
    );
    // And the lease was given back.
    let (_, out, _) = lease_args(d, &["show", "-l", "job", "--json"]);
    assert_eq!(json(&out)["held"], false);
}

#[test]
fn with_wait_a_claim_that_comes_back_too_late_is_given_back_and_tried_again() {
    let dir = tempdir();
    let d = dir.path();
    let (code, _, err) = lease_args(d, &["list"]);
    assert_eq!(code, 0, "{err}");
    // The command then runs under the same renew deadline: 300 ms (renewals every 150 ms)
    // leaves a loaded host room, where 100 ms lost the lease to a late renewal now and then.
    let (code, out, err) = run_with_a_late_claim(
        d,
        &[
            "run",
            "-l",
            "job",
            "--wait",
            "--ttl",
            "3s",
            "--renew-deadline",
            "300ms",
            "--",
            "sh",
            "-c",
            "echo $LEASE_FENCE",
        ],
        Duration::from_millis(700),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("trying again"), "{err}");
    // The late claim was generation 1, given back; the command ran under a later one.
    let fence: u64 = out.trim().parse().unwrap();
    assert!(fence >= 2, "{out}");
}
