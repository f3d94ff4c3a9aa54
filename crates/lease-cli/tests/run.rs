//! `lease run`, driven as a process: exit status and environment, fail-fast and --wait, a
//! revoked lease stopping the command, and the command dying with a SIGKILLed `lease run`.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn run_passes_holder_and_fence_and_propagates_the_status() {
    let dir = tempdir();
    let d = dir.path();
    let script = r#"echo "holder=$LEASE_HOLDER fence=$LEASE_FENCE"; exit 7"#;
    let (code, out, err) = lease_args(
        d,
        &[
            "run", "-l", "job", "--holder", "me", "--", "sh", "-c", script,
        ],
    );
    assert_eq!(code, 7, "{err}");
    assert_eq!(out.trim(), "holder=me fence=1");
    // Released at the end; the next run gets the next fencing generation.
    let (_, out, _) = lease_args(d, &["show", "-l", "job", "--json"]);
    assert_eq!(json(&out)["held"], false);
    let (code, out, _) = lease_args(
        d,
        &[
            "run",
            "-l",
            "job",
            "--",
            "sh",
            "-c",
            "echo $LEASE_FENCE $LEASE_HOLDER",
        ],
    );
    assert_eq!(code, 0);
    let mut parts = out.split_whitespace();
    assert_eq!(parts.next(), Some("2"));
    // The default holder: host name and the pid of `lease run`.
    let holder = parts.next().unwrap();
    let (host, pid) = holder.rsplit_once(':').unwrap();
    assert!(!host.is_empty() && !host.contains('.'));
    assert!(pid.parse::<u32>().is_ok(), "{holder}");
    // Killed by a signal: 128 + N.
    let (code, _, _) = lease_args(d, &["run", "-l", "job", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(code, 137);
    // A command that cannot be run.
    let (code, _, err) = lease_args(d, &["run", "-l", "job", "--", "/nonexistent/command"]);
    assert_eq!(code, 127);
    assert_one_error_line(&err, "cannot run");
    let (_, out, _) = lease_args(d, &["show", "-l", "job", "--json"]);
    assert_eq!(json(&out)["held"], false);
}

#[test]
fn run_fails_fast_when_held_and_times_out_waiting() {
    let dir = tempdir();
    let d = dir.path();
    let (code, _, _) = lease_args(
        d,
        &["claim", "-l", "job", "--holder", "other", "--ttl", "60s"],
    );
    assert_eq!(code, 0);
    let marker = d.join("ran");
    let touch = format!("touch {}", path_str(&marker));
    let (code, _, err) = lease_args(d, &["run", "-l", "job", "--", "sh", "-c", &touch]);
    assert_eq!(code, 1);
    assert_one_error_line(&err, "held by other");
    let (code, _, err) = lease_args(
        d,
        &[
            "run",
            "-l",
            "job",
            "--wait",
            "--timeout",
            "300ms",
            "--",
            "sh",
            "-c",
            &touch,
        ],
    );
    assert_eq!(code, 1);
    assert_one_error_line(&err, "timed out");
    assert!(!marker.exists(), "the command ran without the lease");
}

#[test]
fn run_wait_takes_over_after_the_holder_exits() {
    let dir = tempdir();
    let d = dir.path();
    let ready = d.join("first-ready");
    let first_script = format!("touch {}; sleep 1; echo first-done", path_str(&ready));
    let mut first = lease(d);
    first
        .args([
            "run", "-l", "job", "--holder", "first", "--ttl", "30s", "--", "sh", "-c",
        ])
        .arg(&first_script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let first = first.spawn().unwrap();
    assert!(
        eventually(PATIENCE, || ready.exists()),
        "first run never started"
    );

    let started = Instant::now();
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
            "echo fence=$LEASE_FENCE",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "fence=2");
    let (code, out, _) = decode(&wait_output(first, PATIENCE));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "first-done");
    // Taken over on release, not at the 30 s expiry.
    assert!(started.elapsed() < Duration::from_secs(25));
}

#[test]
fn run_wait_takes_over_an_expired_lease() {
    let dir = tempdir();
    let d = dir.path();
    let (code, _, _) = lease_args(
        d,
        &["claim", "-l", "job", "--holder", "gone", "--ttl", "1s"],
    );
    assert_eq!(code, 0);
    let (code, out, err) = lease_args(
        d,
        &[
            "run",
            "-l",
            "job",
            "--wait",
            "--",
            "sh",
            "-c",
            "echo $LEASE_FENCE",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "2");
}

/// A revoke from outside is noticed at the next renewal, which the store refuses: the command
/// gets SIGTERM (and may exit cleanly), and `lease run` reports the lost lease.
///
/// Nothing here depends on how fast a loaded host runs: the ttl leaves a renewal seconds to
/// succeed (a renewal that takes longer than --renew-deadline would give the lease up, which
/// is right, but not what this test is about), the renewal is observed in the store rather
/// than assumed after a sleep, and the command has seconds between SIGTERM and the SIGKILL
/// that comes before the window ends.
#[test]
fn a_revoked_lease_stops_the_command() {
    let dir = tempdir();
    let d = dir.path();
    let ready = d.join("ready");
    let got = d.join("got-term");
    let script = format!(
        r#"trap "echo got-term > {}; exit 0" TERM; touch {}; while :; do sleep 0.05; done"#,
        path_str(&got),
        path_str(&ready)
    );
    let mut cmd = lease(d);
    // Renewals every 3 s (a third of the ttl), each with 6 s to succeed.
    cmd.args([
        "run", "-l", "job", "--holder", "runner", "--ttl", "9s", "--", "sh", "-c",
    ])
    .arg(&script)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if !eventually(PATIENCE, || {
        ready.exists() || matches!(child.try_wait(), Ok(Some(_)))
    }) {
        let _ = child.kill();
    }
    if !ready.exists() {
        let (code, _, err) = decode(&wait_output(child, PATIENCE));
        panic!("command never started: exit {code}, {err}");
    }
    // Renewals keep it held: the expiry moves on, same holder, same generation.
    let show = || json(&lease_args(d, &["show", "-l", "job", "--json"]).1);
    let first = show();
    assert_eq!(first["holder"], "runner", "{first}");
    let expiry = first["expiry_ns"].as_u64().unwrap();
    let mut last = first.clone();
    let renewed = eventually(PATIENCE, || {
        last = show();
        last["holder"] != "runner" || last["expiry_ns"].as_u64().unwrap_or(0) > expiry
    });
    assert!(renewed, "never renewed: {last}");
    assert_eq!(last["holder"], "runner", "{last}");
    assert_eq!(last["generation"], first["generation"], "{last}");

    let (code, _, err) = lease_args(d, &["revoke", "-l", "job", "--holder", "runner"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = decode(&wait_output(child, PATIENCE));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("lease: error: lost lease default/default#job"),
        "{err}"
    );
    assert!(err.contains("revoked"), "lost for another reason: {err}");
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), "got-term");
}

#[test]
fn a_command_ignoring_sigterm_gets_sigkill() {
    let dir = tempdir();
    let d = dir.path();
    let ready = d.join("ready");
    let script = format!(
        r#"trap "" TERM; touch {}; while :; do sleep 0.05; done"#,
        path_str(&ready)
    );
    let mut cmd = lease(d);
    cmd.args([
        "run",
        "-l",
        "job",
        "--holder",
        "stubborn",
        "--ttl",
        "5s",
        "--kill-after",
        "500ms",
        "--",
        "sh",
        "-c",
    ])
    .arg(&script)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    assert!(eventually(PATIENCE, || ready.exists()));
    let (code, _, _) = lease_args(d, &["revoke", "-l", "job", "--holder", "stubborn"]);
    assert_eq!(code, 0);
    let (code, _, err) = decode(&wait_output(child, PATIENCE));
    assert_eq!(code, 3);
    assert!(err.contains("SIGKILL"), "{err}");
}

#[test]
fn the_command_dies_with_a_sigkilled_lease_run() {
    let dir = tempdir();
    let d = dir.path();
    let pid_file = d.join("pid");
    // `exec` keeps the pid: the process that must die is the one that wrote it.
    let script = format!(
        "echo $$ > {}.tmp; mv {0}.tmp {0}; exec sleep 120",
        path_str(&pid_file)
    );
    let mut cmd = lease(d);
    cmd.args(["run", "-l", "job", "--", "sh", "-c"])
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    assert!(
        eventually(PATIENCE, || pid_file.exists()),
        "command never started"
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!process_gone(pid));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        eventually(PATIENCE, || process_gone(pid)),
        "the command (pid {pid}) outlived `lease run`"
    );
}

#[test]
fn signals_to_lease_run_reach_the_command() {
    let dir = tempdir();
    let d = dir.path();
    let ready = d.join("ready");
    let got = d.join("got");
    let script = format!(
        r#"trap "echo term > {}; exit 5" TERM; touch {}; while :; do sleep 0.05; done"#,
        path_str(&got),
        path_str(&ready)
    );
    let mut cmd = lease(d);
    cmd.args(["run", "-l", "job", "--", "sh", "-c"])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    assert!(eventually(PATIENCE, || ready.exists()));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, _, _) = decode(&wait_output(child, PATIENCE));
    assert_eq!(code, 5);
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), "term");
    let (_, out, _) = lease_args(d, &["show", "-l", "job", "--json"]);
    assert_eq!(
        json(&out)["held"],
        false,
        "released after the command ended"
    );
}
