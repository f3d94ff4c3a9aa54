//! `lease run`'s timing settings: those that cannot fit in the lease's window are refused with
//! one clear line naming the flag (exit 2) before anything is claimed or started, and extreme
//! durations never panic.

mod common;

use common::*;

#[test]
fn settings_that_cannot_fit_the_window_are_refused() {
    let dir = tempdir();
    let d = dir.path();
    let marker = d.join("ran");
    let touch = format!("touch {}", path_str(&marker));
    let cases: &[(&[&str], &str)] = &[
        (&["--ttl", "3s", "--kill-after", "3s"], "--kill-after"),
        (&["--ttl", "3s", "--kill-after", "10s"], "--kill-after"),
        (
            &["--ttl", "3s", "--renew-deadline", "3s"],
            "--renew-deadline",
        ),
        (
            &["--ttl", "3s", "--renew-deadline", "5s"],
            "--renew-deadline",
        ),
        (&["--ttl", "2ms"], "--ttl"),
        (&["--ttl", "300000000000y"], "--ttl"),
        (&["--kill-after", "300000000000y"], "--kill-after"),
        (&["--renew-deadline", "0s"], "zero duration"),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["run", "-l", "job"];
        args.extend_from_slice(flags);
        args.extend(["--", "sh", "-c", &touch]);
        let (code, out, err) = lease_args(d, &args);
        assert_eq!(code, 2, "{flags:?}: {err}");
        assert!(out.is_empty(), "{flags:?}: {out}");
        assert_one_error_line(&err, needle);
        assert!(!marker.exists(), "{flags:?}: the command ran");
    }
    // Nothing was claimed.
    let (_, out, _) = lease_args(d, &["show", "-l", "job", "--json"]);
    assert_eq!(json(&out)["held"], false);
}

#[test]
fn a_huge_timeout_does_not_panic() {
    let dir = tempdir();
    let d = dir.path();
    let (code, _, err) = lease_args(
        d,
        &["claim", "-l", "job", "--holder", "gone", "--ttl", "1s"],
    );
    assert_eq!(code, 0, "{err}");
    // Past the command line's 10-year limit: a usage error naming the flag, not a panic.
    let (code, _, err) = lease_args(
        d,
        &[
            "run",
            "-l",
            "job",
            "--wait",
            "--timeout",
            "300000000000y",
            "--",
            "true",
        ],
    );
    assert!(
        !err.contains("panic") && !err.contains("internal error"),
        "{err}"
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--timeout") && err.contains("10y"), "{err}");
    // The longest accepted timeout means "wait as long as it takes": the lease expires after
    // 1 s and the command runs.
    let (code, out, err) = lease_args(
        d,
        &[
            "run",
            "-l",
            "job",
            "--wait",
            "--timeout",
            "10y",
            "--",
            "sh",
            "-c",
            "echo $LEASE_FENCE",
        ],
    );
    assert!(
        !err.contains("panic") && !err.contains("internal error"),
        "{err}"
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "2");
}

#[test]
fn the_help_states_the_timing_rule() {
    let dir = tempdir();
    let (code, out, _) = lease_args(dir.path(), &["run", "--help"]);
    assert_eq!(code, 0);
    for needle in [
        "--renew-deadline",
        "--kill-after",
        "window",
        "SIGKILL",
        "process group",
    ] {
        assert!(out.contains(needle), "{needle:?} not in the help: {out}");
    }
}
