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
