//! Bad input, driven as a process: each gives one line on stderr (`lease: error: …`) and the
//! documented exit code, never a panic or a backtrace.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn usage_errors_exit_2_with_one_line() {
    let dir = tempdir();
    let d = dir.path();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--store", "redis://x", "list"],
            "unknown store \"redis://x\"",
        ),
        (&["--store", "sqlite:", "list"], "needs a path"),
        (&["--store", "k8s:Not_A_Namespace", "list"], "DNS-1123"),
        (
            &["show", "-l", "x", "--object", "my-lock"],
            "--object my-lock needs the Kubernetes store",
        ),
        (
            &[
                "--store",
                "k8s",
                "show",
                "-l",
                "x",
                "--object",
                "Not_An_Object",
            ],
            "invalid object name \"Not_An_Object\"",
        ),
        (
            &["claim", "--lease", "a b"],
            "invalid lease \"a b\": contains whitespace",
        ),
        (&["claim", "--lease", "a.b"], "invalid lease"),
        (&["claim", "--lease", ""], "invalid lease"),
        (&["claim", "-l", "x", "-n", "ns#1"], "invalid namespace"),
        (&["claim", "-l", "x", "-m", "m$"], "invalid model"),
        (&["claim", "-l", "x", "--holder", "h h"], "invalid holder"),
        (&["pin", "-l", "x", "--entity", "e.1"], "invalid entity"),
        (&["claim", "-l", "x", "--ttl", "0s"], "zero duration"),
        (&["claim", "-l", "x", "--ttl", "0"], "zero duration"),
        (&["claim", "-l", "x", "--ttl", "-5s"], "negative duration"),
        (
            &["claim", "-l", "x", "--ttl", "soon"],
            "unparseable duration",
        ),
        (
            &["run", "-l", "x", "--ttl", "-1s", "--", "true"],
            "negative duration",
        ),
        (
            &["run", "-l", "x", "--wait", "--timeout", "0ms", "--", "true"],
            "zero duration",
        ),
        (
            &["wait", "-l", "x", "--timeout", "forever"],
            "unparseable duration",
        ),
        (&["list", "--watch", "--interval", "0s"], "zero duration"),
        (&["run", "-l", "x"], "missing command after --"),
        (&["run", "-l", "x", "--"], "missing command after --"),
        (&["run", "-l", "x", "true"], "unexpected argument"),
        (&["run", "--", "true"], "--lease"),
        (&["claim", "-l", "x", "--metadata", "{oops"], "invalid JSON"),
        (&["demo", "--workers", "1"], "--workers"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = lease_args(d, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_one_error_line(&err, needle);
    }
    // No database was created by any of them.
    assert!(!d.join("leases.db").exists());
}

#[test]
fn help_documents_the_exit_codes() {
    let dir = tempdir();
    let (code, out, _) = lease_args(dir.path(), &["--help"]);
    assert_eq!(code, 0);
    for line in ["Exit codes:", "0 ", "1 ", "2 ", "3 ", "4 ", "127"] {
        assert!(out.contains(line), "{line:?} missing from --help");
    }
    for cmd in [
        "run", "claim", "extend", "revoke", "pin", "unpin", "wait", "show", "list", "demo",
    ] {
        assert!(out.contains(cmd), "{cmd} missing from --help");
    }
    assert!(!out.contains("__exec-child") && !out.contains("__demo-worker"));
    let (code, out, _) = lease_args(dir.path(), &["run", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("LEASE_FENCE") && out.contains("parent-death"));
}

#[test]
fn unusable_databases_exit_4() {
    let dir = tempdir();
    let d = dir.path();
    let missing = format!("sqlite:{}/no/such/dir/x.db", path_str(d));
    let (code, _, err) = lease_args(d, &["--store", &missing, "list"]);
    assert_eq!(code, 4);
    assert_one_error_line(&err, "does not exist");

    let ro = d.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let store = format!("sqlite:{}/x.db", path_str(&ro));
    for args in [
        vec!["--store", store.as_str(), "claim", "-l", "x"],
        vec!["--store", store.as_str(), "run", "-l", "x", "--", "true"],
    ] {
        let (code, _, err) = lease_args(d, &args);
        assert_eq!(code, 4, "{args:?}");
        assert_one_error_line(&err, "read-only");
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();

    let junk = d.join("junk.db");
    std::fs::write(
        &junk,
        b"this is not a database, just some text that is long enough",
    )
    .unwrap();
    let store = format!("sqlite:{}", path_str(&junk));
    let (code, _, err) = lease_args(d, &["--store", &store, "show", "-l", "x"]);
    assert_eq!(code, 4);
    assert_one_error_line(&err, "not a lease database");
}

fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: {server}\n  name: c\n\
             contexts:\n- context:\n    cluster: c\n    user: u\n    namespace: team-a\n  name: x\n\
             current-context: x\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn an_unreachable_kubernetes_api_exits_4() {
    let dir = tempdir();
    let d = dir.path();
    // A port nobody listens on: bind, then close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = kubeconfig(d, &format!("http://127.0.0.1:{port}"));
    for args in [
        vec!["--store", "k8s", "list"],
        vec!["--store", "k8s:team-b", "claim", "-l", "x"],
        vec!["--store", "k8s", "run", "-l", "x", "--", "true"],
    ] {
        let mut cmd = lease(d);
        cmd.env("KUBECONFIG", &config).args(&args);
        let (code, _, err) = run(cmd);
        assert_eq!(code, 4, "{args:?}: {err}");
        assert_one_error_line(&err, "cannot reach the Kubernetes API");
    }
    let mut cmd = lease(d);
    cmd.env("KUBECONFIG", d.join("missing-kubeconfig"))
        .args(["--store", "k8s", "list"]);
    let (code, _, err) = run(cmd);
    assert_eq!(code, 4);
    assert_one_error_line(&err, "cannot load a Kubernetes configuration");
}

/// A fake API server that refuses every request with 403 Forbidden.
fn forbidding_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and any body (Content-Length) of one request.
                loop {
                    let Ok(n) = stream.read(&mut chunk) else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= head_end + 4 + length {
                            break;
                        }
                    }
                }
                let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"u\" cannot do this","reason":"Forbidden","details":{},"code":403}"#;
                let response = format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_forbidden_kubernetes_api_exits_4() {
    let dir = tempdir();
    let d = dir.path();
    let config = kubeconfig(d, &forbidding_server());
    for args in [
        vec!["--store", "k8s", "list"],
        vec!["--store", "k8s", "claim", "-l", "x", "--holder", "h"],
        vec!["--store", "k8s:team-c", "run", "-l", "x", "--", "true"],
    ] {
        let mut cmd = lease(d);
        cmd.env("KUBECONFIG", &config).args(&args);
        let (code, _, err) = run(cmd);
        assert_eq!(code, 4, "{args:?}: {err}");
        assert_one_error_line(&err, "permission denied");
    }
}

/// Durations past any sensible range, as humantime and bare numbers spell them.
const HUGE_DURATIONS: &[&str] = &[
    "300000000000y",
    "584942417355y",
    "18446744073709551615s",
    "99999999999999999999999",
    "11y",
];

/// Asserts the usage exit code and one error line that is not the panic hook's.
fn assert_usage_error(args: &[String], code: i32, out: &str, err: &str, needle: &str) {
    assert!(
        !err.contains("internal error"),
        "{}: a panic: {err}",
        shown(args)
    );
    assert_eq!(code, 2, "{}: {err}", shown(args));
    assert!(out.is_empty(), "{}: {out}", shown(args));
    assert_one_error_line(err, needle);
}

/// An argument list for messages, with long arguments cut.
fn shown(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.len() > 40 {
                format!("{}…({} bytes)", &a[..20], a.len())
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn huge_durations_are_usage_errors_for_every_duration_flag_but_runs() {
    let dir = tempdir();
    let d = dir.path();
    for huge in HUGE_DURATIONS {
        let cases: Vec<Vec<&str>> = vec![
            vec!["claim", "-l", "x", "--ttl", huge],
            vec!["extend", "-l", "x", "--holder", "h", "--ttl", huge],
            vec!["wait", "-l", "x", "--timeout", huge],
            vec!["list", "--watch", "--interval", huge],
            vec!["demo", "--short", "--ttl", huge],
            vec![
                "__demo-worker",
                "--db",
                "x.db",
                "--id",
                "1",
                "--ttl",
                huge,
                "--log",
                "x.log",
                "--parent",
                "1",
            ],
        ];
        for args in cases {
            let (code, out, err) = lease_args(d, &args);
            assert_usage_error(&strings(&args), code, &out, &err, "too long: at most 10y");
        }
    }
    // Nothing was created: the errors came before any I/O.
    assert!(!d.join("leases.db").exists());
    assert!(!d.join("x.db").exists());
}

#[test]
fn a_demo_ttl_outside_its_range_is_a_usage_error_before_anything_starts() {
    let dir = tempdir();
    let d = dir.path();
    let logs = d.join("demo");
    let logs = path_str(&logs);
    for ttl in ["5y", "2h", "61s", "99ms", "1ns"] {
        let args = ["demo", "--short", "--ttl", ttl, "--dir", &logs];
        let (code, out, err) = lease_args(d, &args);
        assert_usage_error(
            &strings(&args),
            code,
            &out,
            &err,
            "for the demo: must be between 100ms and 1m",
        );
        assert!(!d.join("demo").exists(), "--ttl {ttl}: the demo started");
    }
}

#[test]
fn names_over_the_limit_are_usage_errors_naming_field_length_and_limit() {
    let dir = tempdir();
    let d = dir.path();
    for len in [1025, 70_000] {
        let long = "n".repeat(len);
        let l = long.as_str();
        let reason = format!("is {len} bytes long, over the limit of 1024 bytes for a name");
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["claim", "-l", l], "invalid lease"),
            (vec!["claim", "--lease", l, "--ttl", "1s"], "invalid lease"),
            (vec!["claim", "-l", "x", "-n", l], "invalid namespace"),
            (vec!["claim", "-l", "x", "--model", l], "invalid model"),
            (vec!["claim", "-l", "x", "--holder", l], "invalid holder"),
            (vec!["extend", "-l", "x", "--holder", l], "invalid holder"),
            (vec!["revoke", "-l", l, "--holder", "h"], "invalid lease"),
            (vec!["revoke", "-l", "x", "--holder", l], "invalid holder"),
            (vec!["pin", "-l", "x", "--entity", l], "invalid entity"),
            (vec!["unpin", "-l", "x", "--entity", l], "invalid entity"),
            (vec!["unpin", "-l", l, "--entity", "e"], "invalid lease"),
            (vec!["wait", "-l", l], "invalid lease"),
            (vec!["show", "-l", l], "invalid lease"),
            (vec!["show", "-l", "x", "-m", l], "invalid model"),
            (vec!["list", "-n", l], "invalid namespace"),
            (vec!["list", "--model", l], "invalid model"),
            (vec!["run", "-l", l, "--", "true"], "invalid lease"),
            (
                vec!["run", "-l", "x", "--holder", l, "--", "true"],
                "invalid holder",
            ),
        ];
        for (args, needle) in cases {
            let (code, out, err) = lease_args(d, &args);
            let args = strings(&args);
            assert_usage_error(&args, code, &out, &err, needle);
            assert!(err.contains(&reason), "{}: {err}", shown(&args));
            // The value is quoted, but only its start: the line stays short.
            assert!(err.len() < 400, "{}: {} bytes", shown(&args), err.len());
        }
        // The same from the environment.
        for (var, args, needle) in [
            (
                "LEASE_NAMESPACE",
                vec!["show", "-l", "x"],
                "invalid namespace",
            ),
            ("LEASE_MODEL", vec!["show", "-l", "x"], "invalid model"),
            ("LEASE_HOLDER", vec!["revoke", "-l", "x"], "invalid holder"),
        ] {
            let mut cmd = lease(d);
            cmd.env(var, l).args(&args);
            let (code, out, err) = run(cmd);
            let args = strings(&args);
            assert_usage_error(&args, code, &out, &err, needle);
            assert!(err.contains(&reason), "{var}: {err}");
        }
    }
    // Names at the limit are fine.
    let at = "a".repeat(1024);
    let (code, out, err) = lease_args(
        d,
        &["claim", "-l", &at, "-n", &at, "-m", &at, "--holder", &at],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&at));
    // None of the refused calls reached the store.
    let (code, out, _) = lease_args(d, &["list", "--json", "-n", &at]);
    assert_eq!(code, 0);
    assert_eq!(json(&out).as_array().map(Vec::len), Some(1), "{out}");
}

#[test]
fn metadata_over_the_limit_is_a_usage_error() {
    let dir = tempdir();
    let d = dir.path();
    let big = format!("{{\"blob\":\"{}\"}}", "m".repeat(70_000));
    let args = ["claim", "-l", "x", "--metadata", &big];
    let (code, out, err) = lease_args(d, &args);
    assert_usage_error(
        &strings(&args),
        code,
        &out,
        &err,
        "invalid metadata \"{\\\"blob\\\":\\\"mmm",
    );
    assert!(
        err.contains("over the limit of 65536 bytes of JSON"),
        "{err}"
    );
    assert!(err.len() < 400, "{err}");
    assert!(
        !d.join("leases.db").exists(),
        "checked after opening the store"
    );
}

/// A lease whose name and holder are longer than 65535 characters, as an older version (or
/// another tool, or a hand edit) may have left in the database: `lease list` still prints an
/// aligned table.
#[test]
fn list_prints_names_longer_than_any_format_width() {
    let dir = tempdir();
    let d = dir.path();
    let (code, _, err) = lease_args(d, &["claim", "-l", "seed", "--holder", "h", "--ttl", "1h"]);
    assert_eq!(code, 0, "{err}");
    let long_lease = "L".repeat(70_000);
    let long_holder = "H".repeat(66_000);
    let db = rusqlite::Connection::open(d.join("leases.db")).unwrap();
    db.execute(
        "INSERT INTO generation (namespace, model, name, last) VALUES ('default', 'default', ?1, 1)",
        [&long_lease],
    )
    .unwrap();
    db.execute(
        "INSERT INTO lease (namespace, model, name, holder, boot, expiry, generation, metadata, \
         expiry_bound) \
         SELECT namespace, model, ?1, ?2, boot, expiry, 1, metadata, expiry_bound FROM lease \
         WHERE name = 'seed'",
        [&long_lease, &long_holder],
    )
    .unwrap();
    db.execute(
        "INSERT INTO pin (namespace, model, name, entity) VALUES ('default', 'default', ?1, ?2)",
        [&long_lease, &"E\u{1b}[2J".to_owned()],
    )
    .unwrap();
    drop(db);

    let (code, out, err) = lease_args(d, &["list"]);
    assert!(!err.contains("internal error"), "a panic: {err}");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{}", &out[..out.len().min(300)]);
    // Aligned: every column starts where its header does, in characters.
    let col = |line: &str, text: &str| line.find(text).map(|i| line[..i].chars().count());
    let holder_col = col(lines[0], "HOLDER").unwrap();
    let long_row = lines.iter().find(|l| l.starts_with("default")).unwrap();
    let seed_row = lines.iter().find(|l| l.contains(" seed ")).unwrap();
    assert_eq!(col(long_row, &long_holder), Some(holder_col));
    assert_eq!(col(seed_row, " h ").map(|c| c + 1), Some(holder_col));
    assert!(long_row.contains(&long_lease));
    // A control character from the store is escaped, not sent to the terminal.
    assert!(
        long_row.ends_with("E\\u{1b}[2J"),
        "{}",
        &long_row[long_row.len() - 40..]
    );
    assert!(!out.contains('\u{1b}'));

    let (code, out, err) = lease_args(d, &["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out).as_array().map(Vec::len), Some(2));
}
