//! Helpers shared by the process-level tests: a `lease` command bound to a test's own
//! database, bounded waits, and one-line error checks.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous: the tests run under load, and only a hang should fail them.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A `lease` command with a clean environment and `$LEASE_DB` in `dir`.
pub fn lease(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lease"));
    for var in [
        "LEASE_DB",
        "LEASE_STORE",
        "LEASE_HOLDER",
        "LEASE_FENCE",
        "LEASE_NAMESPACE",
        "LEASE_MODEL",
        "RUST_BACKTRACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LEASE_DB", dir.join("leases.db"));
    cmd.current_dir(dir);
    cmd.stdin(Stdio::null());
    cmd
}

/// Exit code, stdout, stderr.
pub fn run(mut cmd: Command) -> (i32, String, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn lease");
    let output = wait_output(child, PATIENCE);
    decode(&output)
}

/// Exit code, stdout and stderr of a finished process.
pub fn decode(output: &Output) -> (i32, String, String) {
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `lease ARGS` in `dir`.
pub fn lease_args(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = lease(dir);
    cmd.args(args);
    run(cmd)
}

/// Waits for `child` for at most `limit`, killing it (and failing) past that.
pub fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("wait for lease"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("lease (pid {pid}) did not finish within {limit:?}");
        }
    }
}

/// Polls `cond` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Spawns `cmd`, a `lease run` whose command touches `d/ready` once it runs, and waits (up to
/// [`PATIENCE`]) until it has; panics with `what` if it never does.
pub fn spawn_until_ready(mut cmd: Command, d: &Path, what: &str) -> Child {
    let child = cmd.spawn().unwrap();
    assert!(eventually(PATIENCE, || d.join("ready").exists()), "{what}");
    child
}

/// Asserts that `stderr` is exactly one line `lease: error: …` containing `needle`, with no
/// panic or backtrace.
pub fn assert_one_error_line(stderr: &str, needle: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got {stderr:?}"
    );
    assert!(
        lines[0].starts_with("lease: error: "),
        "not an error line: {stderr:?}"
    );
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Parses JSON output, failing the test with the text when it is not JSON.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// A fresh directory for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("lease-cli-test-")
        .tempdir()
        .expect("tempdir")
}

/// A path as a string, for command lines.
pub fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}
